"""`avparse bench`: benchmarks that print figures (medians, spreads, ratios).

Each suite lives in its own module ``avparse.tools.bench_<suite>`` with
``main(argv) -> int``: core (HAN inference, metrics), extract (feature
extractors per profile and backend), train (training throughput), live (end to
end latency and capacity of the live runtime).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

SUITES = {
    "core": "HAN inference per window batch and the LLP test-set metrics",
    "extract": "feature extractors per profile and backend, per snippet",
    "train": "training throughput against a plain reimplementation of the paper's step",
    "live": "per-stage costs, onset/offset latency at a subscriber, streams per machine",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    avail = {s: t for s, t in SUITES.items() if importlib.util.find_spec(f"avparse.tools.bench_{s}")}
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: avparse bench SUITE [options]   (avparse bench SUITE --help)\n\nsuites:")
        for s, t in avail.items():
            print(f"  {s:<8} {t}")
        return 0 if argv else 2
    suite, rest = argv[0], argv[1:]
    if suite not in avail:
        print(f"avparse: error: unknown benchmark suite {suite!r}; known: {', '.join(avail)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(f"avparse.tools.bench_{suite}").main(rest) or 0)
