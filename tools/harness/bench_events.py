"""`avparse bench events`: what a subscriber of `avparse run --fast` gets, event by event.

    avparse bench events [--model CKPT] [--scenes 20] [--seconds 60] [--seed 1000] [--hops 1,0.25]

Generated scenes the model never saw (``make_scene(seed + k)``, 60 s each, the
scenes of ``avparse run --scene SEED``) run as one stream each through the
runtime that ``avparse run --config scenes.toml --fast`` builds (scene sources,
virtual clock, the checkpoint's calibrated tracker as run uses it by default),
at each hop. Scored against the scenes' truth (audio-visual truth: where a
class's audio and visual truths overlap) with ``stream.eventscore``
(sed_eval's collar-based event metrics, collar 1 s): event precision, recall
and F1 per modality, spurious events per minute, median onset latency
(``decided_at`` of the matched onset minus the true onset: media time; compute
and transport add to it live, see ``avparse bench live``).

"before": the same predictions through the bare rule (threshold 0.5, no
hysteresis, durations or gate: the tracker without calibration), replayed over
the predictions the run recorded (the tracker is a deterministic function of
them; the calibrated replay is checked to equal the run's own events).
"tracker cost": one ``Tracker.push`` per snippet for 25 classes (LLP's) with a
rule that uses every feature (HMM filter, median, modality gate, hysteresis,
durations), and for the model's own rules.

Writes results.md / results.json into --out. ``--quick``: 2 scenes of 12 s at
hop 1 (the test suite's smoke run).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

from avparse.tools.common import UserError, fail

from .machine import load_text, machine


@dataclass(frozen=True)
class BenchEventsConfig:
    model: Path | None = None          # checkpoint (None: the bundled demo model)
    scenes: int = 20                   # generated scenes (one stream each)
    seconds: int = 60                  # seconds per scene
    seed: int = 1000                   # scene k is make_scene(seed + k): seeds the bundled model never saw
    hops: tuple[float, ...] = (1.0, 0.25)  # hops run end to end
    out: Path = Path("bench-events")   # folder for results.md and results.json
    threads: int | None = None         # torch CPU threads (None: torch's default)
    tracker_reps: int = 2000           # snippets pushed for the tracker cost
    quick: bool = False                # smoke mode: 2 scenes of 12 s at hop 1


def _quick(cfg: BenchEventsConfig) -> BenchEventsConfig:
    return replace(cfg, scenes=2, seconds=12, hops=(1.0,), tracker_reps=200)


def _Recorder(probs: dict):
    """A StageObserver keeping every prediction per stream."""
    from avparse.stream.types import StageObserver

    class Recorder(StageObserver):
        def prediction(self, p) -> None:
            probs[p.stream].append(p)

    return Recorder()


def run_scenes(loaded, extractor, cfg: BenchEventsConfig, hop: float):
    """(recordings, the run's events per scene, pipeline config, rules note, seconds, stats) of the scenes at
    ``hop``, through the runtime `run --fast` builds."""
    from avparse.stream.calibrate import Recording
    from avparse.stream.eventscore import Interval
    from avparse.stream.clock import VirtualClock
    from avparse.stream.pipeline import EventLog, Runtime, pipeline_config
    from avparse.tools.common import StreamSpec, TrackerOptions, build_sources, tracker_config
    from avparse.train.synth import SynthConfig, make_scene

    streams = [StreamSpec(name=f"scene{cfg.seed + k}", scene=cfg.seed + k, scene_duration=cfg.seconds)
               for k in range(cfg.scenes)]
    tracker, note = tracker_config(loaded, hop=hop, options=TrackerOptions())
    pcfg = pipeline_config(profile=loaded.profile, hop=hop, tracker=tracker)
    sources = build_sources(streams, loaded.profile, fast=True)
    rt = Runtime(pcfg, loaded, extractor, sources, clock=VirtualClock())
    probs: dict[str, list] = {s.name: [] for s in streams}
    rt.pipeline.observe(_Recorder(probs))
    log = EventLog()
    rt.add_sink(log)
    t0 = time.perf_counter()
    stats = rt.run()
    seconds = time.perf_counter() - t0
    recs, events = [], {}
    for s in streams:
        truth = [Interval(e.label, e.modality, e.onset, e.offset)
                 for e in make_scene(s.scene, SynthConfig(duration=cfg.seconds), name=s.name).ground_truth()]
        recs.append(Recording(s.name, sorted(probs[s.name], key=lambda p: p.index), truth, float(cfg.seconds)))
        events[s.name] = [e for e in log.events if e.stream == s.name]
    return recs, events, pcfg, note, seconds, stats


def tracker_cost(classes: int, reps: int, rules=None) -> dict:
    """Milliseconds per ``Tracker.push`` (p50, p90) for ``classes`` classes: random probabilities that
    cross the thresholds often, with ``rules`` (None: a rule using every feature of the decision)."""
    import numpy as np

    from avparse.stream.decision import DecisionRules, ModalityRule
    from avparse.stream.grid import SnippetGrid
    from avparse.stream.tracker import SnippetProbs, Tracker, TrackerConfig

    from .timing import spread

    names = tuple(f"class{i}" for i in range(classes)) if rules is None else rules.classes
    if rules is None:
        r = ModalityRule.uniform(classes, on=0.7, off=0.3, min_on=0.5, min_off=2.0, gate="modality", median=3,
                                 switch=0.2)
        rules = DecisionRules(hop=1.0, classes=names, audio=r, visual=r, audiovisual=r)
    rng = np.random.default_rng(0)
    C = len(names)
    ps = [SnippetProbs("s", i, float(i), rng.random((2, C)).astype(np.float32), rng.random(C).astype(np.float32),
                       rng.random(C).astype(np.float32), rng.random(C).astype(np.float32), decided_at=i + 1.0)
          for i in range(reps)]
    tr = Tracker(TrackerConfig(rules=rules), classes=names, grid=SnippetGrid(hop=rules.hop))
    for p in ps[:50]:   # warm-up
        tr.push(p)
    tr.reset()
    ts = []
    for p in ps:
        t = time.perf_counter()
        tr.push(p)
        ts.append(time.perf_counter() - t)
    s = spread(ts, 1000)
    return {"classes": C, "ms_p50": s["p50"], "ms_p90": s["p90"], "ms_mean": s["mean"], "n": s["n"]}


def bench(cfg: BenchEventsConfig, log=print) -> dict:
    from avparse.stream.calibrate import figures, tracker_events
    from avparse.stream.eventscore import detections, score_events, with_audiovisual
    from avparse.stream.tracker import TrackerConfig
    from avparse.tools.common import check_model, load_model_parts

    from .calibration import event_table

    check_model(str(cfg.model) if cfg.model else None)
    # threads: None keeps torch's default (0 for the shared loader), as the flag's help says
    resolved, loaded, extractor = load_model_parts({"model": str(cfg.model) if cfg.model else None,
                                                    "threads": 0 if cfg.threads is None else cfg.threads})
    path = resolved.path
    res: dict = {"checkpoint": str(path), "calibrated": loaded.calibration is not None, "machine": machine(),
                 "config": {"scenes": cfg.scenes, "seconds": cfg.seconds, "seed": cfg.seed, "hops": list(cfg.hops)},
                 "hops": {}}
    t_all = time.perf_counter()
    log(f"bench events: {path.name}, {cfg.scenes} scenes x {cfg.seconds} s (seeds {cfg.seed}..."
        f"{cfg.seed + cfg.scenes - 1}), hops {', '.join(f'{h:g}' for h in cfg.hops)} s; {load_text()}")
    for hop in cfg.hops:
        recs, events, pcfg, note, secs, stats = run_scenes(loaded, extractor, cfg, hop)
        truth = {r.name: with_audiovisual(r.truth) for r in recs}
        seconds = {r.name: r.seconds for r in recs}
        after = score_events(truth, {n: detections(ev) for n, ev in events.items()}, loaded.classes, seconds=seconds)
        replay = tracker_events(recs, loaded.classes, pcfg.tracker, grid=pcfg.grid)
        same = all(sorted(replay[n], key=repr) == sorted(detections(events[n]), key=repr) for n in events)
        before = figures(recs, loaded.classes, TrackerConfig(), grid=pcfg.grid)
        tstage = stats["stages"]["tracker"]
        res["hops"][str(hop)] = {
            "before": before, "after": after, "tracker": note, "replay_equals_run": same,
            "run_seconds": round(secs, 1), "snippets": stats["snippets"],
            "tracker_ms_per_call": 1000 * tstage["seconds"] / max(1, tstage["calls"]),
        }
        log(f"\nhop {hop:g} s: {cfg.scenes} scenes, {after['minutes']:.1f} min of media, run --fast path in "
            f"{secs:.0f} s; tracker: {note}; replay of the run's tracker equals its events: {'yes' if same else 'NO'}")
        log(event_table([("before: bare rule", before), ("after: " + ("calibrated" if loaded.calibration else
                                                                      "this checkpoint's default"), after)]))
    C = max(25, len(loaded.classes))
    cost = {"every_feature": tracker_cost(C, cfg.tracker_reps)}
    from avparse.tools.common import TrackerOptions, tracker_config

    own, _ = tracker_config(loaded, hop=cfg.hops[0], options=TrackerOptions())
    cost["model_rules"] = tracker_cost(len(loaded.classes), cfg.tracker_reps,
                                       rules=own.decision_rules(loaded.classes, hop=cfg.hops[0]))
    res["tracker_cost"] = cost
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    e = cost["every_feature"]
    log(f"\ntracker cost per snippet: {e['ms_p50']:.3f} ms p50 ({e['ms_p90']:.3f} p90) for {e['classes']} classes "
        f"x 3 modalities with every feature; {cost['model_rules']['ms_p50']:.3f} ms for this model's "
        f"{cost['model_rules']['classes']} classes and rules; {load_text()}")
    log(f"total {res['seconds']:.0f} s")
    return res


def markdown(res: dict) -> str:
    from .calibration import event_table

    m = res["machine"]
    lines = [f"# avparse bench events: {Path(res['checkpoint']).name}", "",
             f"{res['config']['scenes']} generated scenes x {res['config']['seconds']} s (seeds from "
             f"{res['config']['seed']}), the `run --fast` runtime; {m['cpu']}, {m['cores']} cores, load {m['load']}, "
             f"{m['date']}; {res['seconds']:.0f} s in all.", ""]
    for hop, h in res["hops"].items():
        lines += [f"## hop {float(hop):g} s", "", f"tracker: {h['tracker']}; run {h['run_seconds']:.0f} s", "",
                  event_table([("before: bare rule", h["before"]), ("after", h["after"])]), ""]
    c = res["tracker_cost"]
    lines += ["## tracker cost per snippet", "",
              f"- {c['every_feature']['classes']} classes, every feature: {c['every_feature']['ms_p50']:.3f} ms p50, "
              f"{c['every_feature']['ms_p90']:.3f} ms p90",
              f"- this model ({c['model_rules']['classes']} classes, its rules): {c['model_rules']['ms_p50']:.3f} ms p50", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    d = BenchEventsConfig()
    p = argparse.ArgumentParser(prog="avparse bench events", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", metavar="CKPT", help="checkpoint (default: the bundled demo model)")
    p.add_argument("--scenes", type=int, default=d.scenes, help=f"generated scenes ({d.scenes})")
    p.add_argument("--seconds", type=int, default=d.seconds, help=f"seconds per scene ({d.seconds})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"first scene seed ({d.seed})")
    p.add_argument("--hops", default=",".join(f"{h:g}" for h in d.hops), help="hops (s), comma-separated")
    p.add_argument("--out", default=str(d.out), help=f"results folder ({d.out})")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="smoke mode: 2 scenes of 12 s at hop 1")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from avparse.tools.calibrate import parse_hops

    from .report import write_results

    try:
        if args.scenes < 1 or not 1 <= args.seconds <= 3600 or args.seed < 0:
            raise UserError("--scenes must be >= 1, --seconds 1..3600 and --seed >= 0")
        cfg = BenchEventsConfig(model=Path(args.model) if args.model else None, scenes=args.scenes,
                                seconds=args.seconds, seed=args.seed, hops=parse_hops(args.hops), out=Path(args.out),
                                threads=args.threads)
        if args.quick:
            cfg = _quick(cfg)
        res = bench(cfg)
        j, m = write_results(cfg.out, res, markdown(res))
    except UserError as e:
        return fail(str(e), e.code)
    except OSError as e:
        return fail(f"cannot write the results: {e}")
    print(f"results: {m}, {j}")
    return 0
