"""`avparse bench`: benchmarks that print figures (medians, spreads, ratios).

Each suite lives in its own module ``avparse.tools.harness.bench_<suite>`` with
``main(argv) -> int``: core (HAN inference, metrics), extract (feature
extractors per profile and backend), train (training throughput), live (end to
end latency and capacity of the live runtime), startup (what a command-line
user waits for, alone and beside a competing process), events (what a subscriber gets:
event-level accuracy before/after calibration, tracker cost). ``avparse bench`` with no suite,
or ``avparse bench all [--quick]``, runs every suite in turn, each with its own
defaults (``--quick``: every suite's smoke mode), and ends with one line per
suite saying whether it ran.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

SUITES = {
    "core": "HAN inference per window batch and the LLP test-set metrics",
    "extract": "feature extractors per profile and backend, per snippet",
    "train": "training throughput against a plain reimplementation of the paper's step; --recipes: the recipes' costs",
    "live": "per-stage costs, onset/offset latency at a subscriber, streams per machine",
    "startup": "import avparse, `avparse parse` of the LLP clip, live cost per snippet: alone and beside a competitor",
    "events": "event F1, spurious events per minute and onset latency of run --fast on unseen scenes; tracker cost",
}


def run_all(avail: dict, rest: list) -> int:
    """Every available suite in turn; ``--quick`` is passed on to each (the only shared flag)."""
    unknown = [a for a in rest if a != "--quick"]
    if unknown:
        print(f"avparse: error: avparse bench all takes only --quick, got {' '.join(unknown)}; "
              "give one suite for its own options", file=sys.stderr)
        return 2
    results = {}
    for suite in avail:
        print(f"\n==== avparse bench {suite} {' '.join(rest)}".rstrip() + " ====", flush=True)
        try:
            results[suite] = int(importlib.import_module(f"avparse.tools.harness.bench_{suite}").main(list(rest)) or 0)
        except KeyboardInterrupt:
            raise
        except SystemExit as e:  # argparse refusing a flag
            results[suite] = e.code if isinstance(e.code, int) else 1
        except Exception as e:  # one suite failing does not hide the others' figures
            print(f"avparse: bench {suite} failed: {type(e).__name__}: {e}", file=sys.stderr)
            results[suite] = 1
    print("\n==== summary ====")
    for suite, rc in results.items():
        print(f"  {suite:<8} {'ok' if rc == 0 else f'FAILED (exit {rc})'}")
    return 0 if all(rc == 0 for rc in results.values()) else 1


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    avail = {s: t for s, t in SUITES.items() if importlib.util.find_spec(f"avparse.tools.harness.bench_{s}")}
    if argv and argv[0] in ("-h", "--help"):
        print("usage: avparse bench [SUITE | all] [options]   (avparse bench SUITE --help)\n\n"
              "No suite, or all: every suite in turn (options: --quick).\n\nsuites:")
        for s, t in avail.items():
            print(f"  {s:<8} {t}")
        return 0
    if not argv or argv[0] == "all" or argv[0] == "--quick":
        return run_all(avail, argv[1:] if argv and argv[0] == "all" else argv)
    suite, rest = argv[0], argv[1:]
    if suite not in avail:
        print(f"avparse: error: unknown benchmark suite {suite!r}; known: {', '.join(avail)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(f"avparse.tools.harness.bench_{suite}").main(rest) or 0)
