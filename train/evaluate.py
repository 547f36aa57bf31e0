"""The paper's evaluation on a feature split: predictions, decision rule, ten numbers.

As YapengTian/AVVP-ECCV20 main_avvp.py ``eval()``: snippet probability >= 0.5
gated by the video-level (MMIL-pooled) probability >= 0.5
(:func:`avparse.core.metrics.binarize`), then segment- and event-level F1 of
audio, visual and audio-visual events, Type@AV and Event@AV
(:func:`avparse.core.metrics.dataset_scores`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avparse.core.metrics import DEFAULT_THRESHOLD, SUMMARY_KEYS, binarize, dataset_scores
from avparse.train.dataset import DataConfig, FeatureError, FeatureSplit, open_split

# The ten numbers of the paper's Table 1, in its order: (key, level, event type).
TABLE_ROWS = (
    ("audio", "seg_a", "evt_a"),
    ("visual", "seg_v", "evt_v"),
    ("audio-visual", "seg_av", "evt_av"),
    ("Type@AV", "seg_type", "evt_type"),
    ("Event@AV", "seg_event", "evt_event"),
)


def predict_split(model, split: FeatureSplit, *, batch_size: int = 64, device="cpu",
                  check: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """frame_prob [N,T,2,C] and global_prob [N,C] of every video of ``split``."""
    was_training = model.training
    model.eval()
    fps, gps = [], []
    try:
        with torch.inference_mode():
            for s in range(0, len(split), batch_size):
                idx = np.arange(s, min(s + batch_size, len(split)))
                arrays = split.batch(idx)
                if check:
                    split.check_finite(idx, arrays)
                a, v2, v3 = (torch.from_numpy(x).to(device, non_blocking=True) for x in arrays)
                out = model(a, v2, v3)
                fps.append(out.frame_prob.float().cpu().numpy())
                gps.append(out.global_prob.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(fps), np.concatenate(gps)


def score_split(model, split: FeatureSplit, *, threshold: float = DEFAULT_THRESHOLD, batch_size: int = 64,
                device="cpu") -> dict[str, float]:
    """The paper's ten numbers (percent) of ``model`` on a split with dense annotations."""
    if not split.has_dense:
        raise FeatureError(split.source, None, "this split has no dense audio/visual annotations to score against")
    frame_prob, global_prob = predict_split(model, split, batch_size=batch_size, device=device)
    pred_a, pred_v = binarize(frame_prob, global_prob, threshold=threshold)
    return dataset_scores(pred_a, pred_v, split.gt_audio, split.gt_visual)


def evaluate_checkpoint(checkpoint, data: DataConfig, split: str = "test", *, threshold: float = DEFAULT_THRESHOLD,
                        batch_size: int = 64, device="cpu") -> dict:
    """Load a checkpoint and score it on ``split`` of ``data``; returns a JSON-ready dict."""
    from dataclasses import replace

    from avparse.core.checkpoint import load_model

    loaded = load_model(checkpoint, device=device)
    data = replace(data, profile=data.profile or loaded.profile,
                   classes=data.classes or tuple(loaded.classes))
    s = open_split(data, split)
    try:
        loaded.profile.check_compatible(s.profile)
    except ValueError as e:
        raise FeatureError(s.source, None, f"features do not fit the checkpoint: {e}") from None
    if tuple(s.classes) != tuple(loaded.classes):
        raise FeatureError(s.source, None, f"the split's {len(s.classes)} classes are not the checkpoint's "
                           f"{len(loaded.classes)} classes")
    scores = score_split(loaded.model, s, threshold=threshold, batch_size=batch_size, device=device)
    return {
        "checkpoint": str(Path(checkpoint)),
        "split": split,
        "videos": len(s),
        "threshold": threshold,
        "scores": {k: scores[k] for k in SUMMARY_KEYS},
    }


def format_table(scores: dict[str, float]) -> str:
    """The ten numbers as the paper's table: rows audio .. Event@AV, columns segment, event level."""
    lines = [f"{'event type':<14} {'segment':>8} {'event':>8}"]
    for name, seg, evt in TABLE_ROWS:
        lines.append(f"{name:<14} {scores[seg]:8.1f} {scores[evt]:8.1f}")
    return "\n".join(lines)
