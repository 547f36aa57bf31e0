"""`avparse bundle`: rebuild the bundled demo model from scratch, in one command.

    avparse bundle [--out core/assets/demo.pt] [--work runs/bundle] [--quick] [--jobs 2]
    avparse bundle --ablations [--work runs/bundle] [--preset llp|independent]   # Table 2 variants

Steps (train/bundle.py): pretrain the lite extractors on isolated generated
snippets -> `avparse synth` a scene set (train/val/test, LLP's statistics) ->
`avparse extract` with the pretrained extractors -> `avparse pack` ->
`avparse train --recipe teacher` (a teacher that cannot leak, then the full
HAN; weak labels only) -> `avparse evaluate` on the test split -> the
checkpoint (HAN + extractors) -> the test clips once more through the live
runtime (causal, no lookahead) -> the tracker calibrated on generated 60 s
scenes of its own (avparse calibrate). Figures go to demo_metrics.json beside the
checkpoint (--metrics). A rerun with the same --work reuses finished steps.
See docs/bundled_model.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from avparse.tools.common import UserError, run_main
from avparse.tools.harness.machine import cpu_seconds, load, machine
from avparse.tools.harness.report import write_json


def default_out() -> Path:
    """core/assets/demo.pt of the installed avparse.core (the source tree for an editable install)."""
    from importlib.resources import files

    return Path(str(files("avparse.core"))) / "assets" / "demo.pt"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avparse bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, metavar="CKPT", help="checkpoint to write (default: core/assets/demo.pt)")
    p.add_argument("--work", default="runs/bundle", metavar="DIR",
                   help="work folder for scenes, features, runs (default runs/bundle; reused by a rerun)")
    p.add_argument("--metrics", default=None, metavar="JSON",
                   help="where the figures go (default: demo_metrics.json beside --out)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run of the same steps on tiny sizes")
    p.add_argument("--jobs", type=int, default=None, help="processes for rendering, encoding and extraction (default 2)")
    p.add_argument("--videos", type=int, default=None, help="generated clips (default 600; split 70/10/20)")
    p.add_argument("--no-live", action="store_true", help="skip the live-runtime evaluation")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip the tracker's calibration (avparse calibrate on generated 60 s scenes)")
    p.add_argument("--ablations", action="store_true",
                   help="train the Table 2 variants and the denoising recipes on --work's packed features (same "
                        "seed) and print the table (runs the recipe's earlier steps first if they are missing)")
    p.add_argument("--preset", choices=("llp", "independent"), default="llp",
                   help="scenes: llp (default: LLP's statistics) or independent (modality independent of the class; "
                        "its scenes and features go to WORK/independent, the extractors are shared)")
    p.add_argument("--ablations-json", default=None, metavar="JSON",
                   help="where the ablation rows go (default: WORK/ablations.json, WORK/independent/ablations.json)")
    return p


def config_from_args(args):
    from avparse.train.bundle import BundleConfig, quick_config
    from avparse.train.synth_plan import synth_preset

    cfg = quick_config() if args.quick else BundleConfig()
    if args.preset != "llp":
        cfg = replace(cfg, synth=synth_preset(args.preset, duration=cfg.synth.duration))
    if args.jobs is not None:
        if args.jobs < 1:
            raise UserError("--jobs must be at least 1")
        cfg = replace(cfg, jobs=args.jobs, write=replace(cfg.write, jobs=args.jobs),
                      pretrain=replace(cfg.pretrain, jobs=args.jobs))
    if args.videos is not None:
        if args.videos < 10:
            raise UserError("--videos must be at least 10 (train, val and test all need clips)")
        cfg = replace(cfg, videos=args.videos)
    return cfg


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def main(argv=None) -> int:
    return run_main(build_parser, _run, argv)


def _run(args) -> int:
    from avparse.core.checkpoint import CheckpointError
    from avparse.train.dataset import FeatureError
    from avparse.train.synth import SynthError

    cfg = config_from_args(args)
    out = Path(args.out) if args.out else default_out()
    work = Path(args.work)
    if args.ablations:
        return _ablations(cfg, work, out, args)
    t_all = time.perf_counter()
    cpu0 = cpu_seconds()
    load0 = load()
    try:
        from avparse.train.bundle import build_bundle

        res = build_bundle(cfg, work, out, log=_log)
    except (SynthError, FeatureError, CheckpointError, RuntimeError, OSError, ValueError) as e:
        raise UserError(f"bundle: {e}") from None
    offline_s = time.perf_counter() - t_all
    from avparse.train.evaluate import format_table

    _log(f"checkpoint {out} ({res.size_bytes / 2**20:.1f} MiB), kept round {res.best_epoch}"
         + (f" ({res.best_step} optimiser steps)" if res.best_step else ""))
    print("offline, test split (whole clips):")
    print(format_table(res.scores))
    if res.leak:
        print(f"single-modality leak: {res.leak['leak']:.1f} % (audio-only pairs predicted visible "
              f"{res.leak['leak_a2v']:.1f} %, visual-only pairs predicted audible {res.leak['leak_v2a']:.1f} %)")
    live = None
    if not args.no_live:
        t0 = time.perf_counter()
        live = live_eval_bundle(out, work, cfg)
        res.seconds["live_eval"] = time.perf_counter() - t0
        print("live runtime, test split (causal, lookahead 0, hop 1 s):")
        print(format_table(live["scores"]))
    calibration = None
    if not args.no_calibrate:   # the tracker's decision rules, on scenes of their own (tools/harness/calibration.py)
        from avparse.tools.harness.calibration import (
            BundleCalibration, calibrate_bundle, calibration_summary, quick_calibration,
        )

        t0 = time.perf_counter()
        try:
            cal = calibrate_bundle(out, work, quick_calibration() if args.quick else BundleCalibration(), log=_log)
        except (SynthError, CheckpointError, OSError, ValueError) as e:
            raise UserError(f"bundle: calibration: {e}") from None
        res.seconds["calibration"] = time.perf_counter() - t0
        calibration = calibration_summary(cal)
    total = time.perf_counter() - t_all
    metrics = {
        "checkpoint": out.name,
        "size_bytes": out.stat().st_size,   # the file as it ends (the calibration step adds its rules)
        "command": "avparse bundle" + (" --quick" if args.quick else ""),
        "wall_seconds": {"total": round(total, 1), "without_live_eval": round(offline_s, 1),
                         **{k: round(v, 1) for k, v in res.seconds.items()}},
        "cpu_seconds": round(cpu_seconds() - cpu0, 1),
        "machine": {**machine(), "load_at_start": load0},
        "test_videos": len(res.test_ids),
        "offline": {"mode": "offline (whole 10 s clips, features from avparse extract)", "scores": res.scores,
                    "leak": res.leak},
        "live": live,
        "calibration": calibration,
        "val_scores_best_epoch": res.val_scores,
        "best_epoch": res.best_epoch,
        "best_step": res.best_step,
        "teacher_stats": res.teacher_stats,
        "pretrain_val_accuracy": res.pretrain_accuracy,
        "config": cfg.to_dict(),
    }
    print(scores_table(metrics))
    mpath = write_json(Path(args.metrics) if args.metrics else out.with_name(out.stem + "_metrics.json"), metrics)
    _log(f"total wall time {total / 60:.1f} min, CPU time {metrics['cpu_seconds'] / 60:.1f} min; figures: {mpath}")
    return 0


def live_eval_bundle(ckpt: Path, work: Path, cfg) -> dict:
    """The bundle's test clips through the live runtime (causal)."""
    from avparse.train.bundle import scenes_dir
    from avparse.train.synth import MEDIA_DIR, SYNTH_CLASSES
    from avparse.tools.harness.live_eval import LiveEvalConfig, live_scores, load_clips

    synth = scenes_dir(cfg, work) / "synth"
    clips = load_clips(synth / MEDIA_DIR, synth, "test", SYNTH_CLASSES, num_snippets=cfg.synth.duration)
    last = [0.0]

    def progress(i, n):
        if time.perf_counter() - last[0] > 30 or i == n:
            last[0] = time.perf_counter()
            _log(f"live: {i}/{n} clips")

    return live_scores(ckpt, clips, LiveEvalConfig(num_snippets=cfg.synth.duration, threads=1), progress=progress)


def scores_table(metrics: dict) -> str:
    """Markdown table of a bundle's ten numbers, offline and live (from demo_metrics.json)."""
    from avparse.train.evaluate import TABLE_ROWS

    live = (metrics.get("live") or {}).get("scores")
    off = metrics["offline"]["scores"]
    head = "| event type | offline segment | offline event |" + (" live segment | live event |" if live else "")
    lines = [head, "|---|---:|---:|" + ("---:|---:|" if live else "")]
    for name, seg, evt in TABLE_ROWS:
        row = f"| {name} | {off[seg]:.1f} | {off[evt]:.1f} |"
        if live:
            row += f" {live[seg]:.1f} | {live[evt]:.1f} |"
        lines.append(row)
    return "\n".join(lines)


def ablation_table(rows: list[dict]) -> str:
    """Markdown table of the ablation rows: the ten numbers, segment then event level, and the leak."""
    keys = [("seg_a", "seg A"), ("seg_v", "seg V"), ("seg_av", "seg AV"), ("seg_type", "seg Type@AV"),
            ("seg_event", "seg Event@AV"), ("evt_a", "evt A"), ("evt_v", "evt V"), ("evt_av", "evt AV"),
            ("evt_type", "evt Type@AV"), ("evt_event", "evt Event@AV")]
    lines = ["| variant | " + " | ".join(k[1] for k in keys) + " | leak % | val seg Type@AV |",
             "|---" * (len(keys) + 3) + "|"]
    for r in rows:
        leak = r.get("leak", {}).get("leak")
        lines.append(f"| {r['name']} | " + " | ".join(f"{r['scores'][k]:.1f}" for k, _ in keys)
                     + f" | {'' if leak is None else f'{leak:.1f}'} | {r.get('val_seg_type', float('nan')):.1f} |")
    return "\n".join(lines)


def _ablations(cfg, work: Path, out: Path, args) -> int:
    from avparse.core.checkpoint import CheckpointError
    from avparse.train.bundle import prepare_features, run_ablations, scenes_dir
    from avparse.train.dataset import FeatureError
    from avparse.train.synth import SynthError

    t0 = time.perf_counter()
    load0 = load()
    try:
        feats = prepare_features(cfg, work, log=_log)
        sdir = scenes_dir(cfg, work)
        rows = run_ablations(cfg, feats.store, sdir / "ablations", log=_log)
    except (SynthError, FeatureError, CheckpointError, RuntimeError, OSError, ValueError) as e:
        raise UserError(f"bundle --ablations: {e}") from None
    path = Path(args.ablations_json) if args.ablations_json else sdir / "ablations.json"
    write_json(path, {"rows": rows, "seconds": time.perf_counter() - t0,
                      "machine": {**machine(), "load_at_start": load0}, "preset": args.preset,
                      "config": cfg.to_dict()})
    print(ablation_table(rows))
    _log(f"ablations: {path} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
