"""The LLP evaluation protocol: segment- and event-level F1 of audio, visual and
audio-visual event parsing (numpy only).

Everything here reproduces the paper's evaluation code, YapengTian/AVVP-ECCV20
``utils/eval_metrics.py`` (``segment_level``, ``event_level``) as called by
``main_avvp.py``'s ``eval()``, value for value. The conventions, all taken from
that code:

* Inputs are binary ``[C, T]`` matrices per video (class x snippet). The
  audio-visual matrices are derived: ``pred_av = pred_a AND pred_v`` and
  ``gt_av = gt_a AND gt_v``.
* Per class, ``F1 = 2 TP / (2 TP + FN + FP)``; a class with nothing predicted and
  nothing annotated (in the modality scored) is skipped; a video's score is the
  mean over the remaining classes, and 1.0 when every class is skipped (nothing
  predicted, nothing annotated). A class with predictions and no truth, or truth
  and no predictions, scores 0.
* Segment level counts snippets. Event level counts events, the contiguous runs
  of 1s of one class: a predicted event is a TP if it overlaps SOME true event of
  the same class with IoU >= 0.5, else a FP; a true event is a FN if NO predicted
  event overlaps it with IoU >= 0.5. The original counts TPs from the predicted
  side and FNs from the true side rather than matching one-to-one; since the
  runs of one row are disjoint, an event can have at most one partner with
  IoU >= 0.5, so the two agree (kept in the original's form anyway).
* ``seg_event``/``evt_event`` ("Event@AV") pool audio and visual per class:
  ``TP = TP_a + TP_v``, likewise FP and FN, then the same F1, skip and mean.
* Dataset scores are means over videos, in percent; ``seg_type``/``evt_type``
  ("Type@AV") are ``(av + a + v) / 3`` of those means.

The paper's code hard-codes 25 classes and 10 snippets; here C and T are taken
from the inputs (with C=25, T=10 the results are identical).

``video_scores`` scores one video in plain Python (the reference: easy to read
against the original); ``per_video_scores``/``dataset_scores`` score ``[N, C, T]``
arrays at once, vectorised, with the same float operations in the same order so
the results agree bit for bit.
"""

from __future__ import annotations

import numpy as np

SEGMENT_KEYS = ("seg_a", "seg_v", "seg_av", "seg_event")
EVENT_KEYS = ("evt_a", "evt_v", "evt_av", "evt_event")
VIDEO_KEYS = SEGMENT_KEYS + EVENT_KEYS
SUMMARY_KEYS = SEGMENT_KEYS + ("seg_type",) + EVENT_KEYS + ("evt_type",)
# The paper's decision threshold for snippet and video probabilities (main_avvp.py eval()).
DEFAULT_THRESHOLD = 0.5


# --------------------------------------------------------------------------
# input handling


def _as_binary(x, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind in "ui":
        bad = a.size and (a.max() > 1 or a.min() < 0)
    else:
        bad = ((a != 0) & (a != 1)).any()
    if bad:
        raise ValueError(f"{name} must be binary (0/1 or bool); threshold probabilities first (see binarize)")
    return a.astype(bool)


def _inputs(pred_a, pred_v, gt_a, gt_v, ndim: int):
    arrs = [_as_binary(x, n, ndim) for x, n in
            ((pred_a, "pred_a"), (pred_v, "pred_v"), (gt_a, "gt_a"), (gt_v, "gt_v"))]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise ValueError(f"pred_a, pred_v, gt_a, gt_v must have one shape, got {[a.shape for a in arrs]}")
    return arrs


# --------------------------------------------------------------------------
# the decision rule


def binarize(frame_prob, global_prob, *, threshold: float = DEFAULT_THRESHOLD,
             video_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The paper's predictions from the model's probabilities.

    ``frame_prob`` is ``[N, T, 2, C]`` (index 0 audio, 1 visual), ``global_prob``
    ``[N, C]`` (the MMIL-pooled video-level probability). As in ``main_avvp.py``
    ``eval()``: a class is predicted in a snippet of a modality when its snippet
    probability is >= ``threshold`` AND its video-level probability is >=
    ``video_threshold`` (default: ``threshold``), the "filter out false positive
    events with predicted weak labels" step. The modality-level ``a_prob`` and
    ``v_prob`` are not used by the paper's evaluation, so they are not inputs.

    Returns ``pred_a, pred_v`` as uint8 ``[N, C, T]``.
    """
    fp = np.asarray(frame_prob)
    gp = np.asarray(global_prob)
    if fp.ndim != 4 or fp.shape[2] != 2:
        raise ValueError(f"frame_prob must be [N, T, 2, C], got shape {fp.shape}")
    if gp.shape != (fp.shape[0], fp.shape[3]):
        raise ValueError(f"global_prob must be [N, C] = {(fp.shape[0], fp.shape[3])}, got shape {gp.shape}")
    vt = threshold if video_threshold is None else video_threshold
    video = (gp >= vt)[:, :, None]                      # [N, C, 1]
    snip = np.transpose(fp >= threshold, (0, 2, 3, 1))  # [N, 2, C, T]
    pred_a = (snip[:, 0] & video).astype(np.uint8)
    pred_v = (snip[:, 1] & video).astype(np.uint8)
    return pred_a, pred_v


# --------------------------------------------------------------------------
# one video, plain Python (the reference)


def _runs(seq) -> list[tuple[int, int]]:
    """Contiguous runs of True as [start, end) pairs."""
    runs, start = [], None
    for i, v in enumerate(seq):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(seq)))
    return runs


def _iou_ok(p: tuple[int, int], g: tuple[int, int]) -> bool:
    inter = max(0, min(p[1], g[1]) - max(p[0], g[0]))
    union = (p[1] - p[0]) + (g[1] - g[0]) - inter
    return 2 * inter >= union  # IoU >= 0.5, exact in integers


def _event_counts(pred_row, gt_row) -> tuple[int, int, int]:
    ps, gs = _runs(pred_row), _runs(gt_row)
    tp = sum(1 for p in ps if any(_iou_ok(p, g) for g in gs))
    fn = sum(1 for g in gs if not any(_iou_ok(p, g) for p in ps))
    return tp, len(ps) - tp, fn


def _mean_f1(counts) -> float:
    """Mean per-class F1 over (tp, fp, fn) triples, skipping empty classes; 1.0 if all are."""
    f = [2 * tp / (2 * tp + fn + fp) for tp, fp, fn in counts if tp + fp != 0 or tp + fn != 0]
    return float(sum(f) / len(f)) if f else 1.0


def video_scores(pred_a, pred_v, gt_a, gt_v) -> dict[str, float]:
    """F1 scores of one video from binary ``[C, T]`` matrices.

    Returns seg_a, seg_v, seg_av, seg_event, evt_a, evt_v, evt_av, evt_event as
    fractions in [0, 1] (see the module docstring for the conventions).
    """
    pa, pv, ga, gv = _inputs(pred_a, pred_v, gt_a, gt_v, 2)
    pav, gav = pa & pv, ga & gv
    out = {}
    seg = {}
    for m, p, g in (("a", pa, ga), ("v", pv, gv), ("av", pav, gav)):
        tp = (p & g).sum(axis=1)
        seg[m] = [(int(t), int(pp - t), int(gg - t)) for t, pp, gg in zip(tp, p.sum(axis=1), g.sum(axis=1))]
        out[f"seg_{m}"] = _mean_f1(seg[m])
    out["seg_event"] = _mean_f1([tuple(x + y for x, y in zip(a, v)) for a, v in zip(seg["a"], seg["v"])])
    evt = {}
    for m, p, g in (("a", pa, ga), ("v", pv, gv), ("av", pav, gav)):
        evt[m] = [_event_counts(p[c], g[c]) for c in range(p.shape[0])]
        out[f"evt_{m}"] = _mean_f1(evt[m])
    out["evt_event"] = _mean_f1([tuple(x + y for x, y in zip(a, v)) for a, v in zip(evt["a"], evt["v"])])
    return {k: out[k] for k in VIDEO_KEYS}


def summarize(scores: list[dict]) -> dict[str, float]:
    """Dataset means in percent of per-video ``video_scores`` dicts, plus
    ``seg_type``/``evt_type`` (Type@AV), as ``main_avvp.py`` prints them."""
    if len(scores) == 0:
        raise ValueError("summarize needs at least one video's scores")
    return _summary({k: np.array([s[k] for s in scores], dtype=np.float64) for k in VIDEO_KEYS})


def _summary(per_video: dict[str, np.ndarray]) -> dict[str, float]:
    m = {k: 100 * np.mean(per_video[k]) for k in VIDEO_KEYS}
    out = {}
    for lvl in ("seg", "evt"):
        for k in ("a", "v", "av", "event"):
            out[f"{lvl}_{k}"] = float(m[f"{lvl}_{k}"])
        # main_avvp.py: (av + a + v) / 3., in that order
        out[f"{lvl}_type"] = float((m[f"{lvl}_av"] + m[f"{lvl}_a"] + m[f"{lvl}_v"]) / 3.0)
    return {k: out[k] for k in SUMMARY_KEYS}


# --------------------------------------------------------------------------
# many videos, vectorised


def _mean_f1_batch(tp, fp, fn) -> np.ndarray:
    """[N, C] counts -> [N] mean F1 over non-empty classes (1.0 where none).

    Sums over classes in class order (axis 0 of a [C, N] array is reduced row by
    row), as the original's Python ``sum`` does; skipped classes add an exact 0.0.
    """
    keep = (tp + fp != 0) | (tp + fn != 0)
    den = 2 * tp + fn + fp
    f = np.divide(2 * tp, den, out=np.zeros(tp.shape, dtype=np.float64), where=keep)
    s = np.ascontiguousarray(f.T).sum(axis=0)
    n = np.count_nonzero(keep, axis=1)
    return np.where(n == 0, 1.0, s / np.maximum(n, 1))


_POP16: np.ndarray | None = None


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (np.bitwise_count where numpy has it, numpy >= 2.0)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    global _POP16
    if _POP16 is None:
        _POP16 = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.int64)
    return sum(_POP16[(x >> np.uint64(s)) & np.uint64(0xFFFF)] for s in (0, 16, 32, 48))


def _codes(x: np.ndarray) -> np.ndarray:
    """Bool [..., T] (T <= 64) -> uint64 [...] with bit t set when x[..., t]."""
    code = np.zeros(x.shape[:-1], dtype=np.uint64)
    for t in range(x.shape[-1]):  # T column passes beat a reduction over a short axis
        code |= x[..., t].astype(np.uint64) << np.uint64(t)
    return code


def _batch_runs(x: np.ndarray):
    """Runs of True in the rows of ``x`` [M, T], padded to K = ceil(T/2) per row.

    Returns (start, end, valid) each [M, K] and the count per row [M].
    """
    m, t = x.shape
    k = (t + 1) // 2
    pad = np.zeros((m, t + 2), dtype=np.int8)
    pad[:, 1:-1] = x
    d = np.diff(pad, axis=1)
    rs, ps = np.nonzero(d == 1)   # row-major: rows ascending, positions ascending
    _, pe = np.nonzero(d == -1)   # the j-th end closes the j-th start
    count = np.bincount(rs, minlength=m)
    first = np.cumsum(count) - count
    rank = np.arange(rs.size) - first[rs]
    start = np.zeros((m, k), dtype=np.int16)
    end = np.zeros((m, k), dtype=np.int16)
    start[rs, rank] = ps
    end[rs, rank] = pe
    valid = np.arange(k)[None, :] < count[:, None]
    return start, end, valid, count


def _match_counts(p: np.ndarray, g: np.ndarray):
    """TP (matched predicted runs) and FN (unmatched true runs) of rows [M, T]."""
    ps, pe, pv, _ = _batch_runs(p)
    gs, ge, gv, _ = _batch_runs(g)
    inter = np.minimum(pe[:, :, None], ge[:, None, :]) - np.maximum(ps[:, :, None], gs[:, None, :])
    inter = np.maximum(inter, 0)
    union = (pe - ps)[:, :, None] + (ge - gs)[:, None, :] - inter
    match = (2 * inter >= union) & pv[:, :, None] & gv[:, None, :]  # IoU >= 0.5, exact
    return match.any(axis=2).sum(axis=1), (gv & ~match.any(axis=1)).sum(axis=1)


class _Rows:
    """One modality's [N, C, T] bool matrix with per-row counts (snippets, runs)."""

    def __init__(self, x: np.ndarray):
        self.x = x
        n, c, t = x.shape
        if t <= 64:
            self.code = _codes(x)                               # [N, C] bitmask
            self.on = _popcount(self.code)                      # snippets set
            self.runs = _popcount(self.code & ~(self.code << np.uint64(1)))  # run starts
        else:  # long rows: the same counts without bitmasks
            self.code = None
            self.on = x.sum(axis=2, dtype=np.int64)
            self.runs = (x & ~np.pad(x, ((0, 0), (0, 0), (1, 0)))[..., :t]).sum(axis=2, dtype=np.int64)

    def __and__(self, other: "_Rows") -> "_Rows":
        return _Rows(self.x & other.x)


def _counts(p: _Rows, g: _Rows):
    """Segment and event (TP, FP, FN), each three [N, C] int64 arrays."""
    if p.code is not None:
        seg_tp = _popcount(p.code & g.code)
        same = p.code == g.code
    else:
        seg_tp = (p.x & g.x).sum(axis=2, dtype=np.int64)
        same = (p.x == g.x).all(axis=2)
    seg = (seg_tp, p.on - seg_tp, g.on - seg_tp)
    # events: identical rows match every run; rows with runs on one side only are
    # all FPs or all FNs; only rows with different runs on both sides need matching
    tp = np.where(same, p.runs, 0)
    fn = np.where(p.runs == 0, g.runs, 0)
    idx = np.nonzero((p.runs > 0) & (g.runs > 0) & ~same)
    if idx[0].size:
        tp[idx], fn[idx] = _match_counts(p.x[idx], g.x[idx])
    return seg, (tp, p.runs - tp, fn)


def per_video_scores(pred_a, pred_v, gt_a, gt_v) -> dict[str, np.ndarray]:
    """``video_scores`` for every video of binary ``[N, C, T]`` arrays, vectorised:
    a dict of the same keys mapping to float64 ``[N]`` arrays."""
    pa, pv, ga, gv = (_Rows(x) for x in _inputs(pred_a, pred_v, gt_a, gt_v, 3))
    out = {}
    seg, evt = {}, {}
    for m, p, g in (("a", pa, ga), ("v", pv, gv), ("av", pa & pv, ga & gv)):
        seg[m], evt[m] = _counts(p, g)
        out[f"seg_{m}"] = _mean_f1_batch(*seg[m])
        out[f"evt_{m}"] = _mean_f1_batch(*evt[m])
    out["seg_event"] = _mean_f1_batch(*(x + y for x, y in zip(seg["a"], seg["v"])))
    out["evt_event"] = _mean_f1_batch(*(x + y for x, y in zip(evt["a"], evt["v"])))
    return {k: out[k] for k in VIDEO_KEYS}


def dataset_scores(pred_a, pred_v, gt_a, gt_v) -> dict[str, float]:
    """The dataset summary of binary ``[N, C, T]`` arrays: equal to
    ``summarize([video_scores(...) for each video])``, computed at once."""
    if np.shape(pred_a)[:1] == (0,):
        raise ValueError("dataset_scores needs at least one video")
    return _summary(per_video_scores(pred_a, pred_v, gt_a, gt_v))
