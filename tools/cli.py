"""The `avparse` command: dispatches to one module per subcommand.

Each subcommand lives in ``avparse.tools.<name>`` and offers
``main(argv=None) -> int``. A subcommand's module is imported only when it
runs, so `avparse --help` is instant and imports no torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# name -> (module, one-line help). Order is the order of `avparse --help`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "live demo window on a generated scene (or --camera/--mic)"),
    "run": ("run", "run the live pipeline and publish events over ZeroMQ"),
    "listen": ("listen", "subscribe to an event stream and print events"),
    "proxy": ("proxy", "forward many publishers to many subscribers (XSUB/XPUB)"),
    "keys": ("keys", "make CURVE key pairs for an encrypted event stream"),
    "parse": ("parse", "print the events of a media file"),
    "models": ("models", "list the named models (demo, llp), their files and what is cached"),
    "synth": ("synth", "write generated audio-visual scenes with dense ground truth"),
    "extract": ("extract", "extract features from media files (LLP layout or packed store)"),
    "pack": ("pack", "pack LLP-layout features into one memory-mapped file per split"),
    "train": ("train", "train HAN from video-level labels"),
    "evaluate": ("evaluate", "evaluate a checkpoint with the LLP protocol"),
    "calibrate": ("calibrate", "choose the tracker's thresholds and durations for event-level accuracy"),
    "bench": ("bench", "latency and throughput benchmarks"),
    "soak": ("soak", "bounded soak run: several streams and subscribers on loopback, memory and latency over time"),
    "bundle": ("bundle", "rebuild the bundled demo model from scratch (scenes, extractors, HAN)"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {
        name: (mod, text)
        for name, (mod, text) in SUBCOMMANDS.items()
        if importlib.util.find_spec(f"avparse.tools.{mod}") is not None
    }


def _usage(avail) -> str:
    width = max(len(n) for n in avail) if avail else 8
    lines = [
        "usage: avparse SUBCOMMAND [options]   (avparse SUBCOMMAND --help for its options)",
        "",
        "Live audio-visual event parsing: which classes are audible, visible, or both, every second.",
        "",
        "subcommands:",
    ]
    lines += [f"  {n:<{width}}  {t}" for n, (_, t) in avail.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    avail = _available()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(avail))
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from importlib.metadata import version

        print(f"avparse {version('avparse')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in avail:
        print(f"avparse: unknown subcommand {name!r}; try one of: {', '.join(avail)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"avparse.tools.{avail[name][0]}")
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print("avparse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
