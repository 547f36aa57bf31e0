"""`avparse calibrate CKPT --data DIR`: the tracker's decision rules for event-level accuracy.

    avparse calibrate core/assets/demo.pt --data runs/bundle/synth          # its val split, hops 1 and 0.25
    avparse calibrate best.pt --data LLP_MEDIA --labels LLP_CSVS            # LLP media + dense val annotations
    avparse calibrate CKPT --data DIR --hops 1 --out calibrated.pt --json cal.json

Runs the validation clips (--split, default val) through the live runtime at
each hop, keeps every snippet prediction, chooses per modality (and per class
where cross-validation says so) the on/off thresholds, minimum durations, gate
and smoothing that maximise collar-based event F1 within the onset-latency
bound (stream/calibrate.py), prints the validation figures of the bare rule
and of the calibrated one, and writes the rules into the checkpoint (in place,
or --out). `run`, `demo` and `parse` then use them by default. See
docs/calibration.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import UserError, run_main


def build_parser() -> argparse.ArgumentParser:
    from avparse.stream.calibrate import CalibrateConfig
    from avparse.tools.harness.calibration import CALIBRATED_HOPS
    from avparse.tools.harness.live_eval import LiveEvalConfig

    c, lv = CalibrateConfig(), LiveEvalConfig()
    hops = ",".join(f"{h:g}" for h in CALIBRATED_HOPS)
    bounds = " and ".join(f"{h:g}={b:g}" for h, b in c.max_latency)
    p = argparse.ArgumentParser(prog="avparse calibrate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Details: docs/calibration.md.")
    p.add_argument("checkpoint", metavar="CKPT", help="an avparse checkpoint (written in place unless --out)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="validation set with dense truth: an `avparse synth` folder (media/ + synth_*.csv), or "
                        "a folder of media files with --labels")
    p.add_argument("--labels", metavar="DIR", help="folder of the annotation CSVs when not in --data (LLP's)")
    p.add_argument("--media", metavar="DIR", help="folder of the clips' media files (default: DATA/media, else DATA)")
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="the split calibrated on (default val; never the split you report on)")
    p.add_argument("--clips", type=int, default=None, metavar="N", help="at most N clips of the split (default: all)")
    p.add_argument("--hops", default=None,
                   help=f"hops (s) to calibrate, comma-separated (default {hops}; a feature set: 1, its grid)")
    p.add_argument("--per-class", choices=("auto", "yes", "no"), default=c.per_class,
                   help="per-class on thresholds: auto (if two-fold cross-validation prefers them), yes, no")
    p.add_argument("--max-latency", action="append", default=None, metavar="HOP=S",
                   help=f"bound on the median onset latency (media seconds) at a hop, e.g. 1=1.1 (repeatable; "
                        f"defaults {bounds}; other hops, or a bound no rule can keep: no later than the bare rule)")
    p.add_argument("--out", metavar="CKPT", help="write the calibrated checkpoint here instead of in place")
    p.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    p.add_argument("--json", metavar="OUT", help="write the rules and all figures as JSON here")
    p.add_argument("--metrics", metavar="JSON",
                   help="a bundle's metrics file (core/assets/demo_metrics.json) to record the calibration and the "
                        "checkpoint's new size in")
    p.add_argument("--streams", type=int, default=lv.streams, help=f"clips run at once, one stream each ({lv.streams})")
    p.add_argument("--device", default=lv.device, help=f"torch device ({lv.device})")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return p


def parse_hops(text: str) -> tuple[float, ...]:
    try:
        hops = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--hops {text}: give seconds separated by commas, e.g. 1,0.25") from None
    if not hops or any(not (0 < h <= 1) or abs(round(1 / h) * h - 1) > 1e-6 for h in hops):
        raise UserError(f"--hops {text}: each hop must divide 1 s (1, 0.5, 0.25, ...)")
    return tuple(dict.fromkeys(hops))


def calibrate_config(args):
    from avparse.stream.calibrate import CalibrateConfig

    bounds = dict(CalibrateConfig().max_latency)
    for item in args.max_latency or ():
        try:
            h, s = item.split("=")
            bounds[float(h)] = float(s)
        except ValueError:
            raise UserError(f"--max-latency {item}: give HOP=SECONDS, e.g. 0.25=0.65") from None
    try:
        return CalibrateConfig(per_class=args.per_class, max_latency=tuple(sorted(bounds.items())))
    except ValueError as e:
        raise UserError(str(e)) from None


def main(argv=None) -> int:
    return run_main(build_parser, _run, argv)


def _run(args) -> int:
    from avparse.core.checkpoint import CheckpointError, load_model
    from avparse.tools.harness.calibration import (
        CALIBRATED_HOPS, calibrate_checkpoint, is_feature_set, load_validation_clips, record_features, update_metrics,
    )
    from avparse.tools.harness.report import write_json

    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise UserError(f"{ckpt}: no such checkpoint file")
    cfg = calibrate_config(args)
    if args.streams < 1 or args.threads < 1:
        raise UserError("--streams and --threads must be at least 1")
    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a folder; give a file name")
    if args.metrics and not Path(args.metrics).is_file():
        raise UserError(f"--metrics {args.metrics}: no such file (a bundle's demo_metrics.json)")
    try:
        loaded = load_model(ckpt)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    if loaded.meta.get("source") != "avparse":
        raise UserError(f"{ckpt}: an original MMIL_Net state dict cannot hold a calibration; save it as an "
                        "avparse checkpoint first")
    if args.clips is not None and args.clips < 1:
        raise UserError("--clips must be at least 1")
    clips = recordings = None
    features = is_feature_set(args.data)
    grid = (loaded.profile.snippet_seconds,)
    hops = parse_hops(args.hops) if args.hops else (grid if features else CALIBRATED_HOPS)
    try:
        if features:   # LLP features (or a packed store) with dense annotations: the 1 s grid only
            if hops != grid:
                raise UserError(f"{args.data} holds features, not media: only the {loaded.profile.snippet_seconds:g} s "
                                f"snippet grid exists there; pass --hops {loaded.profile.snippet_seconds:g}")
            recordings = record_features(loaded, args.data, labels=args.labels, split=args.split, limit=args.clips,
                                         streams=args.streams, device=args.device)
        else:
            clips = load_validation_clips(loaded, args.data, labels=args.labels, media=args.media,
                                          split=args.split, limit=args.clips)
    except ValueError as e:
        raise UserError(str(e)) from None
    n = len(clips) if clips is not None else len(recordings)
    print(f"avparse calibrate: {ckpt}, {n} {args.split} clips of {args.labels or args.data}"
          f"{' (stored features)' if recordings is not None else ''}, "
          f"hops {', '.join(f'{h:g}' for h in hops)} s", file=sys.stderr, flush=True)
    try:
        res = calibrate_checkpoint(ckpt, clips, hops=hops, config=cfg, out=args.out, streams=args.streams,
                                   device=args.device, threads=args.threads, write=not args.dry_run,
                                   log=lambda s: print(s, flush=True),
                                   source=f"{args.labels or args.data} ({args.split} split)", recordings=recordings)
    except (CheckpointError, ValueError, OSError) as e:
        raise UserError(f"calibrate: {e}") from None
    if args.json:
        try:
            write_json(args.json, res)
        except OSError as e:
            raise UserError(f"cannot write {args.json}: {e.strerror}") from None
    where = res.get("written")
    if args.metrics and where:
        try:
            update_metrics(args.metrics, where, res)
        except (OSError, ValueError) as e:
            raise UserError(f"--metrics {args.metrics}: {e}") from None
    print(f"avparse calibrate: {'wrote the rules into ' + where if where else 'dry run: nothing written'} "
          f"({res['seconds']['total']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
