"""`avparse bench live`: what every stage costs, how late every event arrives, how many streams hold.

One run, side by side, after warm-up, medians with spreads (p10-p90, p95, p99):

1. stages, each alone: capture (rendering a generated scene, per media second)
   and snippet assembly (per snippet); extraction per profile and backend at
   batch sizes 1..many streams; HAN per window; tracking per prediction;
   publishing (the cost of ``emit`` and emit -> receipt at a subscriber on
   loopback);
2. end to end, per configuration (the baseline: eager, hop 1 s, lookahead 0;
   options: compiled extractors, hop 0.5/0.25 s, lookahead 1): the live
   runtime on K generated scenes paced in real time, a subscriber in another
   process on the real ZeroMQ stream, and for every ground-truth onset and
   offset the delay from the moment it happened in the media (the source's
   pacing maps media time to the monotonic clock) to the moment its message
   arrived: p50/p95/p99, missed and spurious events (same class, modality and
   kind within ``--tolerance`` s); every event's latency split into evidence,
   capture, batch wait, extraction, HAN, tracking + publishing, transport;
3. capacity: the real-time factor per stream and the largest number K of
   real-time streams before the decision lag grows without bound (sweep K);
4. options as ratios to the baseline; optionally (``--minutes``) a soak run
   checking that nothing is lost: every event emitted arrives, in order, with
   no gap in ``seq``.

Writes ``results.md``, ``results.json`` and PNG plots into ``--out``. Without a
trained model (``--model``, else the bundled demo model) it builds a checkpoint
with random weights: timings hold, ground-truth matching does not (it says so).
``--quick`` is the smoke mode the test suite runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from avparse.tools.common import UserError, fail, int_list

from . import machine as M
from .live_e2e import LiveOption, RunSpec
from .live_summary import realtime_verdict
from .live_report import capacity_summary, markdown, one_line, ratios, report, sp, targets
from .live_stages import (
    Extractors,
    load_or_build_model,
    stage_capture,
    stage_extraction,
    stage_han,
    stage_publish,
    stage_tracker,
)
from .report import plain, write_results

BASELINE = LiveOption("baseline", "eager", 1.0, 0)
OPTIONS = {
    "compile": LiveOption("compile", "compile", 1.0, 0),
    "hop0.5": LiveOption("hop0.5", "eager", 0.5, 0),
    "hop0.25": LiveOption("hop0.25", "eager", 0.25, 0),
    "lookahead1": LiveOption("lookahead1", "eager", 1.0, 1),
}


@dataclass(frozen=True)
class BenchLiveConfig:
    out: Path = Path("bench-live")       # folder for results.md, results.json and the plots
    model: Path | None = None            # checkpoint (None: the bundled demo model, else random weights)
    device: str = "cpu"                  # torch device of extractors and HAN
    threads: int | None = None           # torch CPU threads (None: torch's default)
    profiles: tuple[str, ...] = ()       # extractor profiles timed alone (empty: the model's)
    backends: tuple[str, ...] = ("eager", "compile")  # extractor backends timed alone
    batches: tuple[int, ...] = (1, 2, 4, 8, 16)  # batch sizes (snippets of that many streams) for extraction and HAN
    reps: int = 5                        # timed repetitions per stage figure (after warm-up)
    warmup: int = 2                      # untimed repetitions first
    streams: int = 1                     # K scenes of each end-to-end configuration
    seconds: int = 30                    # media seconds per scene of the end-to-end runs
    speed: float = 1.0                   # pacing of the end-to-end runs (1: real time)
    options: tuple[str, ...] = tuple(OPTIONS)  # configurations compared with the baseline
    sweep: tuple[int, ...] = ()          # K values of the capacity sweep (empty: 1, 2, 4, ... until one fails)
    max_streams: int = 16                # the doubling sweep stops here
    bisect: int = 2                      # runs bisecting between the last K that held and the first that did not
    prompt_lag: float = 1.0              # capacity also reports the largest K whose p95 decision lag is <= this (s)
    sweep_seconds: int = 20              # media seconds per scene of a sweep run
    minutes: float = 0.0                 # soak: at least this many minutes of scene time (0: no soak)
    soak_streams: int = 4                # soak: scenes at once
    soak_speed: float = 0.0              # soak: pacing (1 real time, >1 faster; 0: as fast as the pipeline goes)
    tolerance: float = 1.0               # seconds between a true and a detected onset/offset to match them
    seed: int = 0                        # scenes, random weights and inputs
    max_batch: int = 16                  # the runtime's snippets per extractor call at most
    subscriber: str = "process"          # the subscriber runs in a spawned "process" or a "thread"
    sections: tuple[str, ...] = ("stages", "e2e", "capacity", "soak")  # what to run
    plots: bool = True                   # write PNG plots
    quick: bool = False                  # smoke mode (seconds): small runs, one repetition


def _quick(cfg: BenchLiveConfig) -> BenchLiveConfig:
    # the baseline run (K=1, real time) is also the sweep's K=1 point
    return replace(cfg, backends=("eager",), batches=(1,), reps=1, warmup=1, streams=1, seconds=2, speed=1.0,
                   options=("lookahead1",), sweep=(1, 2), sweep_seconds=2, max_batch=4,
                   minutes=min(cfg.minutes, 0.1), soak_streams=2, soak_speed=0.0)


# ----------------------------------------------------------------- end to end


def _warm(loaded, extractors: Extractors, backend: str, cfg: BenchLiveConfig, batch_max: int) -> float:
    """Extractor at batch 1, 2 and the largest batch a run will see, and HAN at every window length."""
    import numpy as np
    import torch

    from avparse.train.synth import SynthConfig

    t = time.perf_counter()
    ext = extractors.get(backend)
    p, sc, c = ext.profile, SynthConfig(), loaded.config
    dev = next(loaded.model.parameters()).device
    sizes = sorted({1, 2, max(1, batch_max)}) if backend != "eager" else [1]
    with torch.inference_mode():
        for b in sizes:
            if (backend, b) in extractors.warmed:
                continue
            ext(np.zeros((b, p.samples_per_snippet), np.float32),
                np.zeros((b, p.frames_per_snippet, sc.height, sc.width, 3), np.uint8))
            extractors.warmed.add((backend, b))
        for T in range(1, 11):
            if ("han", T) in extractors.warmed:
                continue
            extractors.warmed.add(("han", T))
            loaded.model(torch.zeros(1, T, c.audio_dim, device=dev),
                         torch.zeros(1, T * c.frames_per_snippet, c.v2d_dim, device=dev),
                         torch.zeros(1, T, c.v3d_dim, device=dev))
    return time.perf_counter() - t


def e2e_run(loaded, extractors: Extractors, option: LiveOption, cfg: BenchLiveConfig, *, streams: int,
            seconds: int, speed: float, label: str = "") -> dict:
    from .live_e2e import run_live
    from .live_summary import summarize

    strides = max(1, int(round(1.0 / option.hop)))
    warm = _warm(loaded, extractors, option.backend, cfg, min(cfg.max_batch, streams * strides))
    spec = RunSpec(streams=streams, seconds=seconds, speed=speed, seed=cfg.seed, max_batch=cfg.max_batch,
                   subscriber=cfg.subscriber)
    load0 = M.load()
    raw = run_live(loaded, extractors.get(option.backend), option, spec, device=cfg.device)
    s = summarize(raw, tolerance=cfg.tolerance)
    s["warmup_seconds"] = round(warm, 2)
    s["load"] = [load0, M.load()]
    if speed > 0:
        ok, why = realtime_verdict(s)
        s["realtime"], s["realtime_why"] = ok, why
    print(f"  {label or option.name:<12} K={streams} {seconds}s x{speed:g}: " + one_line(s), flush=True)
    return s


def capacity(loaded, extractors: Extractors, cfg: BenchLiveConfig, baseline: dict | None) -> dict:
    runs = []
    ks = list(cfg.sweep) if cfg.sweep else []
    doubling = not ks
    k = 1
    while True:
        if doubling:
            if k > cfg.max_streams:
                break
        elif not ks:
            break
        else:
            k = ks.pop(0)
        if baseline is not None and baseline["streams"] == k and baseline["seconds"] == cfg.sweep_seconds \
                and baseline["speed"] == 1.0:
            s = baseline
        else:
            s = e2e_run(loaded, extractors, BASELINE, cfg, streams=k, seconds=cfg.sweep_seconds, speed=1.0,
                        label=f"sweep K={k}")
        runs.append(s)
        if doubling:
            if not s.get("realtime"):
                break
            k *= 2
    # between the last K that held and the first that did not: bisect (a few more runs)
    for _ in range(cfg.bisect if doubling else 0):
        ok = [r["streams"] for r in runs if r.get("realtime")]
        bad = [r["streams"] for r in runs if not r.get("realtime")]
        if not ok or not bad or min(bad) - max(ok) <= 1:
            break
        k = (max(ok) + min(bad)) // 2
        runs.append(e2e_run(loaded, extractors, BASELINE, cfg, streams=k, seconds=cfg.sweep_seconds, speed=1.0,
                            label=f"sweep K={k}"))
    return capacity_summary(runs, cfg.prompt_lag)


def soak(loaded, extractors: Extractors, cfg: BenchLiveConfig) -> dict:
    import math

    k = max(1, cfg.soak_streams)
    secs = max(2, int(math.ceil(cfg.minutes * 60 / k)))
    s = e2e_run(loaded, extractors, BASELINE, cfg, streams=k, seconds=secs, speed=cfg.soak_speed, label="soak")
    s["scene_minutes"] = k * secs / 60
    return s



# ----------------------------------------------------------------- main


def run(cfg: BenchLiveConfig) -> dict:
    import torch

    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(threads)  # the caller's setting (tests run in one process)


def _run(cfg: BenchLiveConfig) -> dict:
    cfg.out.mkdir(parents=True, exist_ok=True)
    from dataclasses import asdict

    res = {"machine": M.machine(), "config": plain(asdict(cfg))}
    print(f"bench live: {res['machine']['cores']} cores, {res['machine']['cpu']}, torch {res['machine']['torch']}, "
          f"load {res['machine']['load']}", flush=True)
    loaded, what = load_or_build_model(cfg)
    res["model"], res["profile"] = what, loaded.profile.name
    print(f"model: {what}; profile {loaded.profile.name}", flush=True)
    extractors = Extractors(loaded, cfg.device)
    if "stages" in cfg.sections:
        print("stages alone:", flush=True)
        hops = {1.0} | {OPTIONS[o].hop for o in cfg.options if o in OPTIONS}
        res["stages"] = {"capture": stage_capture(loaded, cfg, hops),
                         "extraction": stage_extraction(loaded, extractors, cfg),
                         "han": stage_han(loaded, cfg), "tracker": stage_tracker(loaded, cfg),
                         "publish": stage_publish(loaded, cfg)}
        pb = res["stages"]["publish"]
        print(f"  publishing: emit {sp(pb['emit_ms'], nd=3)} ms, emit -> receipt p50 {sp(pb['transport_ms'])} ms "
              f"p99 {sp(pb['transport_ms'], 'p99')} ms", flush=True)
    if "e2e" in cfg.sections:
        print("end to end:", flush=True)
        e2e = {}
        for opt in [BASELINE] + [OPTIONS[o] for o in cfg.options]:
            try:
                e2e[opt.name] = e2e_run(loaded, extractors, opt, cfg, streams=cfg.streams, seconds=cfg.seconds,
                                        speed=cfg.speed)
            except Exception as e:  # e.g. a backend that cannot compile here: reported, the rest goes on
                print(f"  {opt.name}: not run ({type(e).__name__}: {str(e).splitlines()[0][:200]})", flush=True)
                res.setdefault("errors", {})[opt.name] = str(e)[:500]
        res["e2e"] = e2e
        res["ratios"] = ratios(e2e)
    if "capacity" in cfg.sections:
        print("capacity:", flush=True)
        res["capacity"] = capacity(loaded, extractors, cfg, res.get("e2e", {}).get("baseline"))
        print(f"  largest real-time K: {res['capacity']['max_realtime_streams']}", flush=True)
    if "soak" in cfg.sections and cfg.minutes > 0:
        print("soak:", flush=True)
        res["soak"] = soak(loaded, extractors, cfg)
    res["targets"] = targets(res)
    res["load_end"] = M.load()
    if cfg.plots:
        from .plots import write_plots

        res["plots"] = [str(p) for p in write_plots(res, cfg.out)]
    write_results(cfg.out, res, markdown(res))
    print("\n" + markdown(res))
    print(f"wrote {cfg.out / 'results.md'}, {cfg.out / 'results.json'}"
          + (f" and {len(res.get('plots', []))} plots" if res.get("plots") else ""))
    return res


def build_parser() -> argparse.ArgumentParser:
    d = BenchLiveConfig()
    p = argparse.ArgumentParser(prog="avparse bench live", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=d.out, help="folder for results.md, results.json, plots (./bench-live)")
    p.add_argument("--model", type=Path, help="checkpoint (default: the bundled demo model; else random weights)")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--profiles", default="", help="extractor profiles timed alone (default: the model's)")
    p.add_argument("--backends", default=",".join(d.backends), help="extractor backends timed alone")
    p.add_argument("--batches", default=",".join(map(str, d.batches)), help="batch sizes of extraction and HAN")
    p.add_argument("--reps", type=int, default=d.reps, help="timed repetitions per stage figure")
    p.add_argument("--streams", type=int, default=d.streams, help="K scenes of each end-to-end configuration")
    p.add_argument("--seconds", type=int, default=d.seconds, help="media seconds per scene (end to end)")
    p.add_argument("--options", default=",".join(d.options),
                   help=f"configurations compared with the baseline (of {', '.join(OPTIONS)}; '' for none)")
    p.add_argument("--sweep", default="", help="K values of the capacity sweep (default: 1, 2, 4, ... until one fails)")
    p.add_argument("--max-streams", type=int, default=d.max_streams, help="the doubling sweep stops here")
    p.add_argument("--bisect", type=int, default=d.bisect,
                   help="runs bisecting between the last K that held and the first that did not (doubling sweep)")
    p.add_argument("--sweep-seconds", type=int, default=d.sweep_seconds, help="media seconds per scene of a sweep run")
    p.add_argument("--minutes", type=float, default=d.minutes,
                   help="soak: at least this many minutes of scene time, checking nothing is lost (0: skip)")
    p.add_argument("--soak-streams", type=int, default=d.soak_streams, help="soak: scenes at once")
    p.add_argument("--soak-speed", type=float, default=d.soak_speed,
                   help="soak: pacing (1 real time, >1 faster, 0 as fast as possible)")
    p.add_argument("--tolerance", type=float, default=d.tolerance, help="seconds to match a true onset/offset")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="the runtime's snippets per extractor call")
    p.add_argument("--subscriber", choices=("process", "thread"), default=d.subscriber)
    p.add_argument("--only", default="", help="sections to run: stages,e2e,capacity,soak (default: all)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quick", action="store_true", help="smoke mode: seconds, one repetition, tiny runs")
    p.add_argument("--report", metavar="DIR", type=Path,
                   help="measure nothing: write results.md and the plots again from DIR/results.json")
    return p


def config_from_args(a) -> BenchLiveConfig:
    opts = tuple(o for o in a.options.split(",") if o.strip())
    bad = [o for o in opts if o not in OPTIONS]
    if bad:
        raise UserError(f"unknown --options {', '.join(bad)}; known: {', '.join(OPTIONS)}")
    sections = tuple(s for s in a.only.split(",") if s.strip()) or BenchLiveConfig.sections
    bad = [s for s in sections if s not in BenchLiveConfig.sections]
    if bad:
        raise UserError(f"unknown --only sections {', '.join(bad)}; known: {', '.join(BenchLiveConfig.sections)}")
    if min(a.streams, a.seconds, a.reps, a.max_streams, a.sweep_seconds, a.soak_streams, a.max_batch) < 1:
        raise UserError("--streams, --seconds, --reps, --max-streams, --sweep-seconds, --soak-streams and "
                        "--max-batch must be >= 1")
    if a.minutes < 0 or a.soak_speed < 0 or a.tolerance < 0:
        raise UserError("--minutes, --soak-speed and --tolerance must be >= 0")
    if a.model is not None and not a.model.is_file():
        raise UserError(f"{a.model}: no such checkpoint file; pass --model with a checkpoint written by avparse train")
    cfg = BenchLiveConfig(
        out=a.out, model=a.model, device=a.device, threads=a.threads,
        profiles=tuple(x for x in a.profiles.split(",") if x.strip()),
        backends=tuple(x for x in a.backends.split(",") if x.strip()), batches=int_list(a.batches, "--batches"),
        reps=a.reps, streams=a.streams, seconds=a.seconds, options=opts,
        sweep=int_list(a.sweep, "--sweep") if a.sweep.strip() else (), max_streams=a.max_streams, bisect=max(0, a.bisect),
        sweep_seconds=a.sweep_seconds, minutes=a.minutes, soak_streams=a.soak_streams, soak_speed=a.soak_speed,
        tolerance=a.tolerance, max_batch=a.max_batch, subscriber=a.subscriber, sections=sections,
        plots=not a.no_plots, seed=a.seed, quick=a.quick)
    return _quick(cfg) if a.quick else cfg


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        if a.report is not None:
            report(a.report, plots=not a.no_plots)
            return 0
        cfg = config_from_args(a)
        run(cfg)
    except UserError as e:
        return fail(str(e), e.code)
    except OSError as e:
        return fail(f"cannot write the results: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
