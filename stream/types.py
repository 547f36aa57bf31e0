"""What flows between the live stages: timestamped chunks and snippets.

Every item carries its media time in seconds (the stream's own clock: for a
microphone, PortAudio's capture time relative to the stream start; for a file,
its presentation timestamps; for a scene, sample index / rate). Stages never
read the wall clock; the runtime stamps ``wall_time`` where it needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Protocol

import numpy as np

if TYPE_CHECKING:
    from avparse.core.events import Event

    from .tracker import SnippetProbs


@dataclass(frozen=True)
class AudioChunk:
    stream: str             # stream name
    t: float                # media time (s) of samples[0]
    samples: np.ndarray     # float32 mono [n], already at the profile's sample rate
    sample_rate: int        # samples per second of ``samples``
    wall_time: float = 0.0  # runtime clock when captured (for latency figures only)

    @property
    def end(self) -> float:
        return self.t + len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class VideoFrame:
    stream: str             # stream name
    t: float                # media time (s) of this frame (presentation time)
    image: np.ndarray       # uint8 RGB [H, W, 3] at the source's own size
    wall_time: float = 0.0  # runtime clock when captured (for latency figures only)


@dataclass(frozen=True)
class EndOfStream:
    stream: str
    t: float                # media time at which the source ended
    reason: str = "end-of-stream"  # "end-of-stream", "stopped", or "source-lost" when it failed
    error: str | None = None       # why it failed (one line), None when it did not


@dataclass
class Snippet:
    """One snippet of one stream: ``audio`` covers [t0, t0 + seconds)."""

    stream: str
    index: int              # snippet index on the stream's grid (t0 = index * hop)
    t0: float               # media time (s) of the snippet's start
    audio: np.ndarray       # float32 [samples_per_snippet] at the profile's rate
    frames: np.ndarray      # uint8 [frames_per_snippet, H, W, 3] RGB
    missing_frames: int = 0  # frame slots filled by repeating a neighbour
    missing_audio: int = 0   # audio samples filled with zeros (dropped blocks)
    wall_time: float = 0.0   # runtime clock when the snippet was complete
    info: dict = field(default_factory=dict)


Chunk = AudioChunk | VideoFrame | EndOfStream


class Source(Protocol):
    """A live or file source of one stream. ``read`` yields chunks in the
    order they are captured; a source that ends yields EndOfStream last."""

    name: str

    def open(self) -> None: ...

    def read(self) -> Iterator[Chunk]: ...

    def close(self) -> None: ...


class StageObserver:
    """Watches the items that pass between the stages of a Pipeline (``Pipeline.observe``),
    without changing them: a benchmark's probes, the demo's probability bars. Every hook runs on the
    pipeline's thread, so keep it quick; override the ones you need."""

    def snippet(self, snippet: Snippet) -> None:
        """A snippet leaves its assembler for batched inference."""

    def prediction(self, probs: SnippetProbs) -> None:
        """A snippet prediction (the stream, the snippet's time, its audio/visual probabilities) reaches
        the tracker."""

    def tracked(self, probs: SnippetProbs, events: list[Event]) -> None:
        """The tracker turned ``probs`` into ``events`` (often none)."""
