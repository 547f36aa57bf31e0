"""Timing and percentiles for every benchmark: repeated timed calls, device synchronisation, and
the summaries (spread: n, mean, p10-p99; nearest-rank quantiles; least-squares slope).

Benchmarks are commands that print figures (DESIGN rule 13): nothing here asserts a speed.
"""

from __future__ import annotations

import math
import statistics
import time


def sync_of(device):
    """The call that waits for ``device`` (``torch.cuda.synchronize`` on a GPU), else None."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None


def times(fn, reps: int, warmup: int = 0, sync=None) -> list[float]:
    """Seconds of ``reps`` calls of ``fn`` after ``warmup`` untimed ones; ``sync()`` (when given)
    after each call, inside the timing, so that a GPU's queued work counts."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append(time.perf_counter() - t)
    return out


def median_ms(fn, reps: int, warmup: int = 0, sync=None) -> float:
    """Median milliseconds of ``times(fn, reps, warmup, sync)``."""
    return 1000 * statistics.median(times(fn, reps, warmup, sync))


def spread(xs, scale: float = 1.0) -> dict:
    """n, mean, p10, p50, p90, p95, p99, min, max of ``xs`` (times ``scale``), linearly
    interpolated; None and non-finite values are left out; empty -> {"n": 0}."""
    v = sorted(float(x) * scale for x in xs if x is not None and math.isfinite(x))
    if not v:
        return {"n": 0}

    def q(p):
        if len(v) == 1:
            return v[0]
        k = p * (len(v) - 1)
        lo = int(math.floor(k))
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (k - lo)

    return {"n": len(v), "mean": sum(v) / len(v), "p10": q(0.10), "p50": q(0.50), "p90": q(0.90),
            "p95": q(0.95), "p99": q(0.99), "min": v[0], "max": v[-1]}


def nearest_rank(xs, q: float) -> float:
    """The ``q`` quantile of ``xs`` by nearest rank (an element of ``xs``); nan when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def slope(xs, ys) -> float:
    """Least-squares slope of ys over xs (0.0 with fewer than 3 points)."""
    n = len(xs)
    if n < 3:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
