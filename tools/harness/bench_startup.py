"""`avparse bench startup`: what a command-line user waits for, idle and beside a competing process.

    avparse bench startup [--clip FILE] [--reps 3] [--competitor torch|busy] [--quick]

Three figures, each measured side by side in one run, "before" and "after"
interleaved, with the machine's load average printed with every line:

1. ``import avparse`` in a fresh interpreter (median of ``--reps``);
2. ``avparse parse CLIP`` wall time (the real LLP clip by default, the bundled
   model), before = ``--threads 0`` (torch's default: one thread per CPU),
   after = the default (threads picked from the CPUs other processes leave free);
3. the live runtime's analysis cost per snippet (extractors + HAN, the bundled
   model on the clip through the threaded Runtime), before and after;
4. the part of a parse that follows loading the model (decoding, snippets,
   events), before = the file opened then, after = read ahead (``ReadAhead``)
   from 2 s earlier, which stands in for the imports that ``avparse parse``
   overlaps with decoding.

Each of 2 and 3 runs once with no competitor ("alone": the machine as it is,
other users included) and once beside one competing CPU-bound process that
this command starts: ``torch`` (default), another torch process multiplying
matrices with torch's default threads, as when a training run shares the
machine; or ``busy``, one pure-Python loop (one CPU). The ratio beside/alone
is how much the competitor slows each variant. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from avparse.tools.common import UserError, run_main

from .machine import cpu_model, load

_CLIP = Path(__file__).resolve().parents[2].parent / "shared" / "media" / "BjCEufrlXm4.mp4"

COMPETITORS = {
    "torch": "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n",
    "busy": "x = 0\nwhile True:\n    x += 1\n",
}


@dataclass(frozen=True)
class StartupConfig:
    clip: Path = _CLIP            # the media file parsed (default: the real 10 s LLP clip)
    reps: int = 3                 # timed runs per variant (median)
    competitor: str = "torch"     # "torch" (a torch matmul loop, torch's default threads) or "busy" (one core)
    settle: float = 3.0           # seconds the competitor runs before the timed runs start
    quick: bool = False           # one run per variant, import and parse only


def build_parser() -> argparse.ArgumentParser:
    d = StartupConfig()
    p = argparse.ArgumentParser(prog="avparse bench startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", type=Path, default=d.clip, help="media file to parse (default: the LLP clip)")
    p.add_argument("--reps", type=int, default=d.reps, help="timed runs per variant (median)")
    p.add_argument("--competitor", choices=tuple(COMPETITORS), default=d.competitor,
                   help="the competing process: torch (matmul loop, default threads) or busy (one Python loop)")
    p.add_argument("--quick", action="store_true", help="one run per variant; no live-runtime section")
    return p


def main(argv=None) -> int:
    return run_main(build_parser, _run, argv)


def _load() -> str:
    la = load()
    return f"load {la[0]:.1f}" if la else "load ?"


class Competitor:
    """One CPU-bound process started here and stopped by us (its pid is ours to end)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", COMPETITORS[self.kind]], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _time_import() -> float:
    code = "import time; t = time.perf_counter(); import avparse; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip())


def _time_parse(clip: Path, threads: str | None) -> float:
    cmd = [sys.executable, "-m", "avparse.tools.cli", "parse", str(clip)] + (["--threads", threads] if threads else [])
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise UserError(f"avparse parse failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return wall


_LIVE_CHILD = """
import json, sys, time
from avparse.tools import api
from avparse.stream.clock import VirtualClock
from avparse.stream.pipeline import Runtime
from avparse.stream.sources import FileSource
threads = None if sys.argv[2] == "auto" else int(sys.argv[2])
p = api.load("demo", threads=threads, progress=None)
import torch
src = FileSource(sys.argv[1], sample_rate=p.profile.sample_rate, name="x")
rt = Runtime(p.config(max_batch=1), p.loaded, p.extractor, [src], clock=VirtualClock())
if threads is None:
    rt.add_sink(api.ThreadTuner(interval=1.0))
st = rt.run()
inf = st["inference"]
print(json.dumps({"ms_per_snippet": 1000 * (inf["extract_seconds"] + inf["han_seconds"]) / max(1, inf["snippets"]),
                  "threads": torch.get_num_threads()}))
"""


def _live_cost(clip: Path, threads: str) -> tuple[float, int]:
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", _LIVE_CHILD, str(clip), threads],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"live runtime run failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return d["ms_per_snippet"], d["threads"]


_AHEAD_CHILD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from avparse.tools import api
from avparse.stream.offline import iter_source
from avparse.stream.sources import FileSource, ReadAhead
p = api.load("demo", progress=None)
cfg = p.config()
src = FileSource(sys.argv[1], sample_rate=p.profile.sample_rate)
if sys.argv[2] == "ahead":
    src = ReadAhead(src)
    src.open()
    time.sleep(2.0)  # the imports avparse parse overlaps with decoding (a sleep: it takes no CPU)
t = time.perf_counter()
n = len(list(iter_source(cfg, p.loaded, p.extractor, src)))
print(json.dumps({"seconds": time.perf_counter() - t, "events": n}))
"""


def _after_load(clip: Path, mode: str) -> float:
    r = subprocess.run([sys.executable, "-c", _AHEAD_CHILD, str(clip), mode], capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"parse run failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
    return json.loads(r.stdout.strip().splitlines()[-1])["seconds"]


def _median_line(name: str, values: list, unit: str, fmt: str = "%.2f") -> tuple[float, str]:
    m = statistics.median(values)
    spread = f" (runs: {', '.join(fmt % v for v in values)})" if len(values) > 1 else ""
    return m, f"  {name:<44} {fmt % m} {unit}{spread}  [{_load()}]"


def compare(cfg: StartupConfig, what: str, variants, measure, unit: str, fmt: str) -> dict:
    """Each variant ``(name, arg)`` measured ``cfg.reps`` times by ``measure(arg) -> (value, note)``,
    the variants interleaved (they see the same load), first alone, then beside the competitor;
    prints medians and the slowdown of each variant; returns {(condition, name): median}."""
    out: dict = {}
    for cond in ("alone", f"beside {cfg.competitor}"):
        with (Competitor(cfg.competitor) if cond != "alone" else contextlib.nullcontext()):
            if cond != "alone":
                time.sleep(cfg.settle)
            runs = {name: [] for name, _ in variants}
            notes = {name: set() for name, _ in variants}
            for _ in range(cfg.reps):
                for name, arg in variants:
                    value, note = measure(arg)
                    runs[name].append(value)
                    if note:
                        notes[name].add(note)
            for name, _ in variants:
                out[(cond, name)], line = _median_line(f"{what}, {cond}, {name}", runs[name], unit, fmt)
                print(line + (f"  {', '.join(sorted(notes[name]))}" if notes[name] else ""))
    for name, _ in variants:
        a, b = out[("alone", name)], out[(f"beside {cfg.competitor}", name)]
        print(f"  slowdown beside the competitor, {name}: {b / a:.2f}x")
    return out


def _run(args) -> int:
    cfg = StartupConfig(clip=args.clip, reps=1 if args.quick else max(1, args.reps), competitor=args.competitor,
                        quick=args.quick)
    if not cfg.clip.is_file():
        raise UserError(f"{cfg.clip}: no such media file (pass --clip)")
    import torch

    print(f"avparse bench startup: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"(default threads {torch.get_num_threads()}), {time.strftime('%Y-%m-%d %H:%M')}, clip {cfg.clip.name}")
    print("  (load = 1-minute load average when the line was printed; the machine may be shared)")
    imp = [_time_import() for _ in range(max(3, cfg.reps))]
    _, line = _median_line("import avparse (fresh interpreter)", [1000 * x for x in imp], "ms", "%.1f")
    print(line + "   target <= 300 ms")

    print(f"\navparse parse {cfg.clip.name} (bundled model), wall seconds; targets: <= 5 s alone, <= 10 s beside "
          "the competitor")
    compare(cfg, "parse", (("before: --threads 0 (torch default)", "0"), ("after: threads picked (default)", None)),
            lambda th: (_time_parse(cfg.clip, th), ""), "s", "%.2f")
    if cfg.quick:
        return 0
    print("\nlive runtime: extractors + HAN per snippet (bundled model, the clip, batch 1), ms; target: the "
          "competitor slows it by <= 2x")

    def live(th):
        ms, n = _live_cost(cfg.clip, th)
        return ms, f"threads at the end: {n}"

    compare(cfg, "live", (("before: torch default threads", "0"), ("after: picked and re-picked threads", "auto")),
            live, "ms", "%.1f")
    print("\nparse after the model is loaded (decoding, snippets, events), s: the file opened then, or read ahead "
          "while avparse parse imports (here a 2 s head start)")
    compare(cfg, "after load", (("before: decoded on demand", "plain"), ("after: read ahead", "ahead")),
            lambda mode: (_after_load(cfg.clip, mode), ""), "s", "%.2f")
    return 0
