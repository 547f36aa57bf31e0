"""Offline parsing: the live pipeline fed as fast as possible, in one thread.

``parse_source`` reads one source (a media file, a scene) to its end and pushes
every chunk through the same :class:`~avparse.stream.pipeline.Pipeline` (the
same assembler, batched inference and tracker) that the live Runtime drives,
on a virtual clock that follows the media time. Its events are the events the
Runtime publishes for the same input.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Sequence

from avparse.core.events import Event

from .clock import VirtualClock
from .pipeline import Pipeline, PipelineConfig, classes_of, no_audio_error, source_kinds
from .types import AudioChunk, EndOfStream


def parse_source(config: PipelineConfig, model, extractor, source, *, classes: Sequence[str] | None = None,
                 stats: dict | None = None) -> list[Event]:
    """Every event of ``source`` (opened and closed here), in the order the live runtime emits them.

    ``model``: a HAN or a LoadedModel. ``stats``: if a dict, filled with the pipeline's stats and,
    when the source sent one, ``stats["end"]`` = {"reason", "error", "media_time"} of its EndOfStream
    (an ``error`` is a fault mid-way: the events up to it are returned).
    """
    return list(iter_source(config, model, extractor, source, classes=classes, stats=stats))


def iter_source(config: PipelineConfig, model, extractor, source, *, classes: Sequence[str] | None = None,
                stats: dict | None = None, progress: Callable[[float], None] | None = None) -> Iterator[Event]:
    """``parse_source`` as a generator: each event as soon as it is decided. ``progress(media_time)``
    is called after every chunk (keep it cheap). Closing the generator early closes the source;
    ``stats`` is filled when the source is exhausted."""
    if hasattr(model, "model") and hasattr(model, "classes"):
        classes = classes if classes is not None else model.classes
        model = model.model
    if classes is None:
        classes = classes_of(model, None)
    clock = VirtualClock()
    pipe = Pipeline(config, model, extractor, classes=classes, timer=time.perf_counter)
    ended = False
    source.open()
    try:
        if "audio" not in source_kinds(source):
            raise no_audio_error(source.name, [source])
        pipe.add_stream(source.name, video="video" in source_kinds(source))
        for chunk in source.read():
            if isinstance(chunk, EndOfStream):
                # a source that failed mid-way loses the stream, as in the Runtime
                reason = "source-lost" if chunk.error is not None else chunk.reason
                yield from pipe.end_stream(chunk.stream, reason, clock.now())
                ended = True
                if stats is not None:
                    stats["end"] = {"reason": chunk.reason, "error": chunk.error, "media_time": chunk.t}
                break
            clock.advance(chunk.end if isinstance(chunk, AudioChunk) else chunk.t)
            yield from pipe.feed(chunk, clock.now())
            yield from pipe.poll(clock.now())
            if progress is not None:
                progress(clock.now())
    finally:
        source.close()
    if not ended:
        yield from pipe.end_stream(source.name, "end-of-stream", clock.now())
    if stats is not None:
        stats.update(pipe.stats())
