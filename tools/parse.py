"""`avparse parse`: print the onset/offset events of a media file as they are decided.

    avparse parse FILE [--model NAME|CKPT] [--format text|json|tsv] [pipeline and tracker options]

Offline parsing is the live pipeline fed as fast as the machine goes: the
file's audio and video are decoded together with their timestamps
(FileSource), assembled into snippets, run through the model's extractors
and HAN in sliding windows, and tracked into events, exactly as ``avparse
run`` would publish them for the same file. Each event is printed when it is
decided, not at the end; on a terminal, files longer than a minute get a
progress line on stderr. See docs/pipeline.md.

``--format tsv`` writes the DCASE event list that sed_eval and dcase_util
read: one ``onset<TAB>offset<TAB>event_label`` line per closed segment of
one modality (``--modality``, default audio), written when the segment closes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .common import (
    UserError,
    add_model_flags,
    add_tracker_args,
    check_media,
    check_model,
    fail,
    load_model_parts,
    mirror_option,
    real_input_notice,
    run_main,
    stream_name,
    tracker_config,
    tracker_options,
)

FORMATS = ("text", "json", "tsv")
PROGRESS_MIN_SECONDS = 60.0  # files at least this long get a progress line (stderr on a terminal)


def build_parser() -> argparse.ArgumentParser:
    from avparse.stream.grid import SnippetGrid
    from avparse.stream.inference import InferenceConfig

    inf = InferenceConfig()
    p = argparse.ArgumentParser(prog="avparse parse", description=__doc__.split("\n\n")[0],
                                formatter_class=_Defaults)
    p.add_argument("file", metavar="FILE", help="media file (any format FFmpeg reads) or URL")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="text (default): one line per event; json: one event object per line (the wire body "
                        "of docs/eventstream.md); tsv: DCASE event list (onset, offset, event_label) of --modality")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument("--modality", choices=("audio", "visual", "audiovisual"), default="audio",
                   help="which modality --format tsv writes")
    p.add_argument("--stream", default=None, help="stream name in the events (default: the file's stem)")
    g = p.add_argument_group("model")
    add_model_flags(g)
    g.add_argument("--backend", default=inf.backend, help="extractor backend: eager, compile, tensorrt")
    g.add_argument("--extractor-weights", metavar="DIR", default=None,
                   help="folder searched first for the published extractor files (paper profiles)")
    g = p.add_argument_group("pipeline")
    g.add_argument("--hop", type=float, default=SnippetGrid.hop, help="seconds between snippets (< 1: overlapping)")
    g.add_argument("--window", type=int, default=inf.window, help="snippets per HAN window")
    g.add_argument("--lookahead", type=int, default=inf.lookahead, help="1 s steps of future context")
    g.add_argument("--max-batch", type=int, default=inf.max_batch, help="snippets per extractor batch")
    g.add_argument("--max-wait", type=float, default=inf.max_wait,
                   help="media seconds a snippet may wait for a fuller batch (larger: faster offline parsing, "
                        "the same events up to float rounding of the scores)")
    g = p.add_argument_group("tracker (default: the checkpoint's calibrated rules, else the bare rule)")
    add_tracker_args(g)
    return p


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it is None or False (not given: the help says what happens)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def format_event(e) -> str:
    """One human-readable line per event."""
    what = f"{e.kind:<6}  {e.label:<28} {e.modality:<11}"
    tail = f"p={e.score:.2f}  decided at {e.decided_at:.2f} s"
    if e.kind == "offset":
        tail += f"  ({e.reason}, on since {e.onset_time:.2f} s)" if e.onset_time is not None else f"  ({e.reason})"
    return f"{e.media_time:8.2f} s  {what} {tail}"


def tsv_line(e) -> str:
    """A DCASE event-list line (onset, offset, event_label) for an offset event."""
    return f"{e.onset_time:.3f}\t{e.media_time:.3f}\t{e.label}"


class Progress:
    """A progress line on a terminal: media seconds done of the file's, and the speed; redrawn in
    place at most twice a second, erased before an event line is printed to the same terminal."""

    def __init__(self, stream, total: float):
        self.stream, self.total = stream, total
        self.t0 = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, media_time: float) -> None:
        now = time.monotonic()
        if now - self.last < 0.5:
            return
        self.last = now
        speed = media_time / max(now - self.t0, 1e-6)
        pct = min(100.0, 100.0 * media_time / self.total)
        self.stream.write(f"\r  {media_time:7.1f} / {self.total:.1f} s of media ({pct:3.0f}%), "
                          f"{speed:.1f}x real time ")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()
            self.shown = False


def main(argv=None) -> int:
    return run_main(build_parser, _run, argv)


def _read_ahead(args, stream: str):
    """The file opened and read ahead (ReadAhead.start: probed and decoded in a thread) while the
    model loads, when the model is a registry name (its profile, hence the sample rate, is known
    without torch); None for a checkpoint path. A file FFmpeg cannot read is reported when the
    parse opens its source, as without the read-ahead."""
    from avparse.core import registry
    from avparse.core.profiles import PROFILES
    from avparse.stream.sources import FileSource, ReadAhead

    entry = registry.MODELS.get(args.model or registry.DEFAULT_MODEL)
    profile = PROFILES.get(args.profile or entry.profile) if entry is not None else None
    if profile is None:
        return None
    source = ReadAhead(FileSource(args.file, sample_rate=profile.sample_rate, name=stream))
    source.start()
    return source


def _run(args) -> int:
    from avparse.core.media import MediaError, probe
    from avparse.stream.offline import iter_source
    from avparse.stream.pipeline import pipeline_config
    from avparse.stream.sources import FileSource, SourceError

    from avparse.core.media import is_url
    from avparse.stream import wire

    fmt = "json" if args.json else (args.format or "text")
    check_model(args.model)
    mirror_option(args.mirror)
    check_media(args.file)
    url = is_url(args.file)
    stream = args.stream or stream_name(Path(args.file).stem)
    try:
        wire.check_stream_name(stream)
    except wire.WireError as e:
        raise UserError(f"--stream: {e}") from None
    options = tracker_options(args)
    early = _read_ahead(args, stream)  # FFmpeg decodes while torch and the model load
    try:
        res, loaded, extractor = load_model_parts(vars(args))
    except BaseException:
        if early is not None:
            early.close()
        raise
    if early is not None and early.sample_rate != loaded.profile.sample_rate:
        early.close()  # a profile other than the registry's (cannot happen for the registry's names)
        early = None
    device = args.device or "cpu"
    tracker, _ = tracker_config(loaded, hop=args.hop, options=options)
    try:
        config = pipeline_config(profile=loaded.profile, hop=args.hop, window=args.window,
                                 lookahead=args.lookahead, max_batch=args.max_batch, max_wait=args.max_wait,
                                 device=device, backend=args.backend, tracker=tracker)
    except ValueError as e:
        raise UserError(f"pipeline options: {e}") from None
    real_input_notice("avparse parse", res.entry, "file", loaded.classes)
    progress = None
    if sys.stderr.isatty() and not url:
        try:
            if early is not None:
                early.open()  # waits for the opening that started before the model loaded
            total = early.info.duration if early is not None else probe(args.file).duration
        except (MediaError, SourceError) as e:
            raise UserError(str(e)) from None
        if total >= PROGRESS_MIN_SECONDS:
            progress = Progress(sys.stderr, total)
    source = early or FileSource(args.file, sample_rate=loaded.profile.sample_rate, name=stream)
    stats: dict = {}
    printed = 0
    lines = wire.EventLines("avparse-parse")
    try:
        for e in iter_source(config, loaded, extractor, source, stats=stats, progress=progress):
            if fmt == "tsv":
                if e.kind != "offset" or e.modality != args.modality or e.onset_time is None:
                    continue
                line = tsv_line(e)
            else:
                line = lines.line(e) if fmt == "json" else format_event(e)
            if progress is not None:
                progress.clear()
            print(line, flush=True)
            printed += 1
    except (MediaError, SourceError) as e:
        raise UserError(str(e)) from None
    except BrokenPipeError:  # `avparse parse FILE | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if progress is not None:
            progress.clear()
    end = stats.get("end") or {}
    if end.get("error"):
        # every event up to the damage is printed above; the run did not cover the whole file
        cause = str(end["error"])
        if args.file not in cause:
            cause = f"{args.file}: {cause}"
        return fail(f"{cause}; stopped at {float(end.get('media_time', 0.0)):.1f} s of media: the events up to "
                    "there were printed (open ones closed as source-lost)", code=1)
    if fmt == "text" and not printed:
        print("no events", file=sys.stderr)
    return 0
