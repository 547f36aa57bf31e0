"""The paper's evaluation on a feature split: predictions, decision rule, ten numbers.

As YapengTian/AVVP-ECCV20 main_avvp.py ``eval()``: snippet probability >= 0.5
gated by the video-level (MMIL-pooled) probability >= 0.5
(:func:`avparse.core.metrics.binarize`), then segment- and event-level F1 of
audio, visual and audio-visual events, Type@AV and Event@AV
(:func:`avparse.core.metrics.dataset_scores`).

``gate="modality"`` is JoMoLD's rule instead (MCG-NJU/JoMoLD main.py ``eval()``):
audio snippets gated by the video-level AUDIO probability, visual snippets by
the VISUAL one. :func:`leak_scores` measures how often a class that is only
heard (only seen) is predicted in the other modality too.
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


GATES = ("global", "modality")


def predict_outputs(model, split: FeatureSplit, *, batch_size: int = 64, device="cpu", check: bool = True,
                    **forward_kw) -> dict[str, np.ndarray]:
    """frame_prob [N,T,2,C], global_prob, a_prob and v_prob [N,C] of every video of ``split``
    (``forward_kw`` go to the model's forward, e.g. ``cross_attention=False``)."""
    was_training = model.training
    model.eval()
    outs: dict[str, list] = {"frame_prob": [], "global_prob": [], "a_prob": [], "v_prob": []}
    try:
        with torch.inference_mode():
            for s in range(0, len(split), batch_size):
                idx = np.arange(s, min(s + batch_size, len(split)))
                arrays = split.batch(idx)
                if check:
                    split.check_finite(idx, arrays)
                a, v2, v3 = (torch.from_numpy(x).to(device, non_blocking=True) for x in arrays)
                out = model(a, v2, v3, **forward_kw)
                for k in outs:
                    outs[k].append(getattr(out, k).float().cpu().numpy())
    finally:
        model.train(was_training)
    return {k: np.concatenate(v) for k, v in outs.items()}


def predict_split(model, split: FeatureSplit, *, batch_size: int = 64, device="cpu",
                  check: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """frame_prob [N,T,2,C] and global_prob [N,C] of every video of ``split``."""
    o = predict_outputs(model, split, batch_size=batch_size, device=device, check=check)
    return o["frame_prob"], o["global_prob"]


def decide(outputs: dict, *, threshold: float = DEFAULT_THRESHOLD, gate: str = "global"
           ) -> tuple[np.ndarray, np.ndarray]:
    """pred_a, pred_v uint8 [N, C, T] from :func:`predict_outputs`' arrays: snippet probability >= threshold
    AND the video-level probability >= threshold, the video level being the MMIL-pooled one (``"global"``,
    the paper) or each modality's own (``"modality"``, JoMoLD)."""
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    fp = outputs["frame_prob"]
    if gate == "global":
        return binarize(fp, outputs["global_prob"], threshold=threshold)
    return binarize(fp, outputs["a_prob"], threshold=threshold)[0], binarize(fp, outputs["v_prob"], threshold=threshold)[1]


def leak_scores(pred_a, pred_v, gt_a, gt_v) -> dict[str, float]:
    """Single-modality leak, percent: of the (video, class) pairs annotated in one modality only, the share
    also predicted (in some snippet) in the other modality. ``leak`` pools both kinds; ``leak_a2v`` is the
    share of audio-only pairs predicted visible, ``leak_v2a`` of visual-only pairs predicted audible."""
    ga, gv = np.asarray(gt_a).any(axis=2), np.asarray(gt_v).any(axis=2)     # [N, C]
    pa, pv = np.asarray(pred_a).any(axis=2), np.asarray(pred_v).any(axis=2)
    a_only, v_only = ga & ~gv, gv & ~ga
    n_a, n_v = int(a_only.sum()), int(v_only.sum())
    l_a, l_v = int((a_only & pv).sum()), int((v_only & pa).sum())
    pct = lambda k, n: 100.0 * k / n if n else 0.0  # noqa: E731
    return {"leak": pct(l_a + l_v, n_a + n_v), "leak_a2v": pct(l_a, n_a), "leak_v2a": pct(l_v, n_v),
            "audio_only_pairs": n_a, "visual_only_pairs": n_v}


def score_split(model, split: FeatureSplit, *, threshold: float = DEFAULT_THRESHOLD, batch_size: int = 64,
                device="cpu", gate: str = "global", leak: bool = False) -> dict[str, float]:
    """The paper's ten numbers (percent) of ``model`` on a split with dense annotations (with ``leak``:
    and :func:`leak_scores`' figures); ``gate`` is the decision rule (:func:`decide`)."""
    if not split.has_dense:
        raise FeatureError(split.source, None, "this split has no dense audio/visual annotations to score against")
    outputs = predict_outputs(model, split, batch_size=batch_size, device=device)
    pred_a, pred_v = decide(outputs, threshold=threshold, gate=gate)
    scores = dataset_scores(pred_a, pred_v, split.gt_audio, split.gt_visual)
    if leak:
        scores.update(leak_scores(pred_a, pred_v, split.gt_audio, split.gt_visual))
    return scores


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
    gate = checkpoint_gate(loaded)
    scores = score_split(loaded.model, s, threshold=threshold, batch_size=batch_size, device=device, gate=gate,
                         leak=True)
    return {
        "checkpoint": str(Path(checkpoint)),
        "split": split,
        "videos": len(s),
        "threshold": threshold,
        "gate": gate,
        "scores": {k: scores[k] for k in SUMMARY_KEYS},
        "leak": {k: scores[k] for k in ("leak", "leak_a2v", "leak_v2a", "audio_only_pairs", "visual_only_pairs")},
    }


def checkpoint_gate(loaded) -> str:
    """The decision rule a checkpoint was trained and validated with ("global" unless its training said
    otherwise: JoMoLD's recipe keeps "modality")."""
    gate = (loaded.meta.get("extra") or {}).get("gate", "global")
    return gate if gate in GATES else "global"


def format_table(scores: dict[str, float]) -> str:
    """The ten numbers as the paper's table: rows audio .. Event@AV, columns segment, event level."""
    lines = [f"{'event type':<14} {'segment':>8} {'event':>8}"]
    for name, seg, evt in TABLE_ROWS:
        lines.append(f"{name:<14} {scores[seg]:8.1f} {scores[evt]:8.1f}")
    return "\n".join(lines)
