"""`avparse parse`: print the onset/offset events of a media file.

    avparse parse FILE [--model CKPT] [--json] [pipeline and tracker options]

Offline parsing is the live pipeline fed as fast as the machine goes: the
file's audio and video are decoded together with their timestamps
(FileSource), assembled into snippets, run through the checkpoint's extractors
and HAN in sliding windows, and tracked into events, exactly as ``avparse
run`` would publish them for the same file. See docs/pipeline.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    UserError,
    add_tracker_args,
    check_device,
    check_media,
    checkpoint_extractor,
    fail,
    load_checkpoint,
    model_path,
    run_main,
    stream_name,
    tracker_config,
    tracker_options,
)


def build_parser() -> argparse.ArgumentParser:
    from avparse.stream.grid import SnippetGrid
    from avparse.stream.inference import InferenceConfig

    inf = InferenceConfig()
    p = argparse.ArgumentParser(prog="avparse parse", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("file", metavar="FILE", help="media file (any format FFmpeg reads) or URL")
    p.add_argument("--model", metavar="CKPT", help="checkpoint (default: the bundled demo model, if installed)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per event per line (the wire body of docs/eventstream.md)")
    p.add_argument("--stream", default=None, help="stream name in the events (default: the file's stem)")
    g = p.add_argument_group("pipeline")
    g.add_argument("--hop", type=float, default=SnippetGrid.hop, help="seconds between snippets (< 1: overlapping)")
    g.add_argument("--window", type=int, default=inf.window, help="snippets per HAN window")
    g.add_argument("--lookahead", type=int, default=inf.lookahead, help="1 s steps of future context")
    g.add_argument("--max-batch", type=int, default=inf.max_batch, help="snippets per extractor batch")
    g.add_argument("--max-wait", type=float, default=inf.max_wait,
                   help="media seconds a snippet may wait for a fuller batch (larger: faster offline parsing, "
                        "the same events up to float rounding of the scores)")
    g.add_argument("--device", default=inf.device, help="torch device")
    g.add_argument("--backend", default=inf.backend, help="extractor backend: eager, compile, tensorrt")
    g.add_argument("--extractor-weights", metavar="DIR", default=None,
                   help="folder with the published extractor weights (when the checkpoint bundles none)")
    g = p.add_argument_group("tracker (default: the checkpoint's calibrated rules, else the bare rule)")
    add_tracker_args(g)
    return p


def format_event(e) -> str:
    """One human-readable line per event."""
    what = f"{e.kind:<6}  {e.label:<28} {e.modality:<11}"
    tail = f"p={e.score:.2f}  decided at {e.decided_at:.2f} s"
    if e.kind == "offset":
        tail += f"  ({e.reason}, on since {e.onset_time:.2f} s)" if e.onset_time is not None else f"  ({e.reason})"
    return f"{e.media_time:8.2f} s  {what} {tail}"


def main(argv=None) -> int:
    return run_main(build_parser, _run, argv)


def _run(args) -> int:
    from avparse.core.media import MediaError
    from avparse.stream.offline import parse_source
    from avparse.stream.pipeline import pipeline_config
    from avparse.stream.sources import FileSource, SourceError

    from avparse.stream import wire

    path = model_path(args.model)
    check_device(args.device)
    check_media(args.file)
    stream = args.stream or stream_name(Path(args.file).stem)
    try:
        wire.check_stream_name(stream)
    except wire.WireError as e:
        raise UserError(f"--stream: {e}") from None
    options = tracker_options(args)
    loaded = load_checkpoint(path, device=args.device)
    tracker, _ = tracker_config(loaded, hop=args.hop, options=options)
    try:
        config = pipeline_config(profile=loaded.profile, hop=args.hop, window=args.window,
                                 lookahead=args.lookahead, max_batch=args.max_batch, max_wait=args.max_wait,
                                 device=args.device, backend=args.backend, tracker=tracker)
    except ValueError as e:
        raise UserError(f"pipeline options: {e}") from None
    extractor = checkpoint_extractor(loaded, backend=args.backend, device=args.device,
                                     weights=args.extractor_weights)
    source = FileSource(args.file, sample_rate=loaded.profile.sample_rate, name=stream)
    stats: dict = {}
    try:
        events = parse_source(config, loaded, extractor, source, stats=stats)
    except (MediaError, SourceError) as e:
        raise UserError(str(e)) from None
    end = stats.get("end") or {}
    fault = end.get("error")
    lines = wire.EventLines("avparse-parse")
    try:
        for e in events:
            print(lines.line(e) if args.json else format_event(e))
        sys.stdout.flush()
    except BrokenPipeError:  # `avparse parse FILE | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if fault:  # every event up to the damage is printed above; the run did not cover the whole file
        cause = fault
        if args.file not in cause:
            cause = f"{args.file}: {cause}"
        return fail(f"{cause}; stopped at {float(end.get('media_time', 0.0)):.1f} s of media: the events up to "
                    "there were printed (open ones closed as source-lost)", code=1)
    if not args.json and not events:
        print("no events", file=sys.stderr)
    return 0
