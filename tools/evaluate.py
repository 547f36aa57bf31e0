"""`avparse evaluate CHECKPOINT --split test`: the paper's ten numbers of a checkpoint.

Prints segment- and event-level F-scores of audio, visual and audio-visual
events, Type@AV and Event@AV as a table (the paper's protocol: snippet
probability >= 0.5 gated by the video-level prediction >= 0.5) and writes them
as JSON (--json OUT; default CHECKPOINT's name with .<split>.json; - for stdout).
With --live it also prints what a subscriber gets: collar-based event
precision, recall and F1 per modality (sed_eval), spurious events per minute
and the median onset latency, for the paper rule's events, the bare rule and
the checkpoint's calibrated rules (docs/calibration.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from avparse.tools.common import UserError, add_data_args, data_config, fail, user_errors


def build_parser() -> argparse.ArgumentParser:
    from avparse.tools.harness.live_eval import LiveEvalConfig

    d = LiveEvalConfig()
    p = argparse.ArgumentParser(prog="avparse evaluate", description="Evaluate a checkpoint with the LLP protocol.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="an avparse checkpoint (best.pt) or original MMIL_Net weights")
    p.add_argument("--split", choices=("val", "test"), default="test")
    add_data_args(p, data_required=False)
    p.add_argument("--json", metavar="OUT", help="where to write the scores (default CHECKPOINT.<split>.json; - = stdout)")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help=f"snippet and video decision threshold (paper: {d.threshold:g})")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=d.device)
    g = p.add_argument_group("live runtime (tools/harness/live_eval.py)")
    g.add_argument("--live", action="store_true",
                   help="score the split's media files through the live runtime (causal) instead of packed "
                        "features; annotations from --labels or --data (an `avparse synth` folder or LLP CSVs)")
    g.add_argument("--media", metavar="DIR", help="folder of the split's media files (default: LABELS/media)")
    g.add_argument("--lookahead", type=int, default=d.lookahead, help="1 s steps of future context for --live (0: causal)")
    g.add_argument("--streams", type=int, default=d.streams, help="clips run at once for --live")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.live:
        return _live(args)
    try:
        from avparse.core.checkpoint import load_model
        from avparse.train.evaluate import evaluate_checkpoint

        ckpt = Path(args.checkpoint)
        if not ckpt.is_file():
            raise UserError(f"{ckpt}: no such checkpoint file")
        data_dir = args.data
        if data_dir is None:
            extra = load_model(ckpt).meta.get("extra") or {}
            data_dir = extra.get("data_dir")
            if not data_dir:
                raise UserError(f"{ckpt} does not record its data folder; give --data DIR")
            if args.labels is None and extra.get("labels_dir"):
                args.labels = extra["labels_dir"]
        result = evaluate_checkpoint(ckpt, data_config(args, data_dir), args.split, threshold=args.threshold,
                                     batch_size=args.batch_size, device=args.device)
    except user_errors() as e:
        return fail(str(e))
    print(f"{result['split']}: {result['videos']} videos, {ckpt}")
    return _report(result, args, ckpt.with_name(f"{ckpt.stem}.{args.split}.json"))


def _report(result: dict, args, default_out: Path) -> int:
    """The ten numbers as a table, then as JSON to --json (``-``: stdout; default ``default_out``)."""
    from avparse.train.evaluate import format_table

    print(format_table(result["scores"]))
    leak = result.get("leak")
    if leak:
        print(f"single-modality leak {leak['leak']:.1f} %: of {leak['audio_only_pairs']} audio-only (video, class) "
              f"pairs {leak['leak_a2v']:.1f} % predicted visible, of {leak['visual_only_pairs']} visual-only "
              f"{leak['leak_v2a']:.1f} % predicted audible")
    if result.get("gate") == "modality":
        print("decision rule: each modality's snippets gated by its own video-level probability (JoMoLD)")
    text = json.dumps(result, indent=1)
    if args.json == "-":
        print(text)
        return 0
    out = Path(args.json) if args.json else default_out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    except OSError as e:
        return fail(f"cannot write {out}: {e.strerror}")
    print(f"scores: {out}")
    return 0


def _live(args) -> int:
    """--live: the split's clips through the live runtime, events -> dense matrices -> the ten numbers."""
    try:
        from avparse.core.checkpoint import load_model
        from avparse.tools.harness.calibration import event_table, live_event_scores
        from avparse.tools.harness.live_eval import LiveEvalConfig, live_scores, load_clips

        ckpt = Path(args.checkpoint)
        if not ckpt.is_file():
            raise UserError(f"{ckpt}: no such checkpoint file")
        labels = args.labels or args.data
        if not labels:
            raise UserError("--live needs the annotations: --labels DIR (or --data DIR of an `avparse synth` set)")
        media = Path(args.media) if args.media else Path(labels) / "media"
        loaded = load_model(ckpt, device=args.device)
        try:
            manifest = Path(labels) / "synth.json"  # a generated set knows its clips' length
            snippets = int(json.loads(manifest.read_text())["config"]["duration"]) if manifest.is_file() else 10
            cfg = LiveEvalConfig(lookahead=args.lookahead, threshold=args.threshold, streams=args.streams,
                                 device=args.device, num_snippets=snippets)
            clips = load_clips(media, labels, args.split, loaded.classes, num_snippets=cfg.num_snippets)
            probs, events = [[] for _ in clips], [[] for _ in clips]
            result = live_scores(ckpt, clips, cfg, loaded=loaded, on_prediction=lambda i, p: probs[i].append(p),
                                 on_events=lambda i, ev: events[i].extend(ev))
            paper = f"paper rule ({cfg.threshold:g}{', gated' if cfg.video_gate else ''}: the ten numbers' events)"
            result["events"] = live_event_scores(loaded, clips, probs, events, hop=cfg.hop, paper_rule=paper)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
    except user_errors() as e:
        return fail(str(e))
    print(f"{args.split}: {result['videos']} videos through the live runtime (lookahead {result['lookahead']}), {ckpt}")
    print("event level (sed_eval, collar 1 s on onsets and offsets; spurious: detections matching no true event):")
    print(event_table(list(result["events"].items())))
    return _report(result, args, ckpt.with_name(f"{ckpt.stem}.{args.split}.live.json"))


if __name__ == "__main__":
    sys.exit(main())
