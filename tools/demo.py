"""`avparse demo`: watch avparse parse a scene live, in a window.

    avparse demo                                   a generated scene, the bundled model
    avparse demo --camera 0 --mic default --model llp
    avparse demo --headless --out demo.mp4 --duration 30

The window shows the video, the events active now (class and modality), a
scrolling timeline of the last seconds (one row per class; audio, visual and
audio-visual spans in their colours; the ground truth of a generated scene
faintly beneath), an audio level meter and the current latency. The same
events are published over ZeroMQ (tcp://127.0.0.1:5556, so `avparse listen
tcp://127.0.0.1:5556` in a second terminal sees them) and printed here.
Without a display, or with --headless, it writes the annotated video with its
sound (--out, default avparse-demo-<time>.mp4) and the events as JSON lines
(--events, default next to the video). `q` in the window or Ctrl-C ends it
cleanly: open events are closed, files finished, exit 0. See docs/demo.md.

The application itself (window, overlay state, drawing, recorder, chained
scenes) is the package ``avparse.tools.demo_app``.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path

from .common import (
    UserError,
    add_model_flags,
    add_tracker_args,
    check_model,
    mirror_option,
    run_main,
    stop_signals,
    tracker_options,
)


def build_parser() -> argparse.ArgumentParser:
    from avparse.stream.publisher import PublisherConfig

    from .demo_app.app import DemoConfig

    d, pub = DemoConfig(), PublisherConfig()
    p = argparse.ArgumentParser(prog="avparse demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Keys in the window: q or Esc quits. Details: docs/demo.md.")
    g = p.add_argument_group("what to watch (default: an endless generated scene)")
    g.add_argument("--scene", type=int, default=None, metavar="SEED", help=f"generated scene seed (default {d.scene})")
    g.add_argument("--scene-duration", type=int, default=d.scene_duration, metavar="S",
                   help="seconds of generated scene (0: endless, scenes chained until you quit)")
    g.add_argument("--camera", metavar="SPEC", help="camera index, device, video file or URL (OpenCV)")
    g.add_argument("--mic", metavar="DEVICE", help="microphone (PortAudio name or index; 'default')")
    g.add_argument("--file", metavar="PATH", help="a media file or URL with sound and picture (FFmpeg)")
    g = p.add_argument_group("model")
    add_model_flags(g)
    g.add_argument("--extractor-weights", metavar="DIR", default=None,
                   help="folder searched first for the published extractor files (paper profiles)")
    g.add_argument("--max-lag", type=float, default=None, metavar="S",
                   help=f"seconds input may wait before snippets are shed to stay live ({d.max_lag:g}; 0: never shed)")
    add_tracker_args(g)
    g = p.add_argument_group("output")
    g.add_argument("--headless", action="store_true", help="no window: write the annotated video (--out)")
    g.add_argument("--out", metavar="FILE.mp4", help="write the annotated video with its sound here")
    g.add_argument("--events", metavar="PATH", help="write the events as JSON lines (default: FILE.events.jsonl)")
    g.add_argument("--duration", type=float, default=d.duration, metavar="S",
                   help="stop after this many seconds of media (0: until q or Ctrl-C)")
    g.add_argument("--size", default=f"{d.width}x{d.height}", metavar="WxH", help=f"picture size ({d.width}x{d.height})")
    g.add_argument("--fps", type=float, default=d.fps, help=f"pictures per second drawn and written ({d.fps:g})")
    g.add_argument("--seconds", type=float, default=d.window_seconds,
                   help=f"seconds shown by the timeline ({d.window_seconds:g})")
    g.add_argument("--quiet", action="store_true", help="do not print the events in the terminal")
    g = p.add_argument_group("publishing")
    g.add_argument("--pub", default=None, metavar="EP", help=f"event endpoint to bind ({pub.pub})")
    g.add_argument("--snapshot", default=None, metavar="EP",
                   help=f"snapshot endpoint to bind ({pub.snapshot}; 'none' for no snapshot service)")
    g.add_argument("--no-publish", action="store_true", help="do not publish over ZeroMQ")
    return p


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m:
        raise UserError(f"--size {text!r}: give WIDTHxHEIGHT, e.g. 1280x720")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 640 or h < 360 or w % 2 or h % 2:
        raise UserError(f"--size {text}: width and height must be even and at least 640x360")
    return w, h


def main(argv=None) -> int:
    return run_main(build_parser, _run, argv)


def _run(args) -> int:
    from .demo_app.app import DemoConfig, run
    from .demo_app.window import display_available

    live = bool(args.camera or args.mic)
    if args.scene is not None and (live or args.file):
        raise UserError("--scene goes alone (not with --camera/--mic/--file)")
    if args.file and live:
        raise UserError("--file goes alone (not with --camera/--mic)")
    if args.duration < 0 or args.fps <= 0 or args.seconds <= 1:
        raise UserError("--duration must be >= 0, --fps > 0 and --seconds > 1")
    if args.scene_duration < 0:
        raise UserError("--scene-duration must be >= 0 (0: endless)")
    if args.max_lag is not None and not 0 <= args.max_lag < float("inf"):
        raise UserError(f"--max-lag must be finite seconds >= 0, got {args.max_lag}")
    if args.threads is not None and args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    check_model(args.model)
    mirror_option(args.mirror)
    width, height = parse_size(args.size)
    headless = args.headless or not display_available()
    out = args.out
    notice = None
    if headless and not out:
        out = time.strftime("avparse-demo-%Y%m%d-%H%M%S.mp4")
        why = "--headless" if args.headless else "no display ($DISPLAY is unset or unreachable)"
        notice = f"avparse demo: {why}: writing the annotated video to {out}" + ("" if args.duration else " until Ctrl-C")
    events = args.events or (str(Path(out).with_suffix("")) + ".events.jsonl" if out else None)
    if out and not out.lower().endswith((".mp4", ".m4v", ".mov")):
        raise UserError(f"--out {out}: give a .mp4 file name")
    tracker = tracker_options(args)
    cfg = DemoConfig(scene=args.scene if args.scene is not None else DemoConfig.scene,
                     scene_duration=args.scene_duration, camera=args.camera, mic=args.mic, file=args.file,
                     model=args.model, device=args.device or DemoConfig.device,
                     precision=args.precision or DemoConfig.precision, profile=args.profile,
                     offline=bool(args.offline), mirror=args.mirror, threads=args.threads,
                     max_lag=DemoConfig.max_lag if args.max_lag is None else (args.max_lag or None),
                     extractor_weights=args.extractor_weights, tracker=tracker,
                     headless=headless, out=out, events=events, duration=args.duration, width=width, height=height,
                     fps=args.fps, window_seconds=args.seconds, quiet=args.quiet, publish=not args.no_publish,
                     pub=args.pub, snapshot=args.snapshot)
    stopped = threading.Event()
    with stop_signals(lambda signum, frame: stopped.set()):
        return run(cfg, stopped=stopped, notice=notice)


if __name__ == "__main__":
    sys.exit(main())
