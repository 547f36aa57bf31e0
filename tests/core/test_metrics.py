"""The LLP metrics: hand-computed cases, the original's outputs, batch == loop.

How tests/core/data/eval_reference.npz was produced, once, outside the repo
(neither the original code nor the script is committed): the unmodified
``utils/eval_metrics.py`` of YapengTian/AVVP-ECCV20 at commit
fde56118f2c2e7c19188dfefa2569a37b70054fe was imported and, for each of 247
videos, called as ``main_avvp.py`` ``eval()`` calls it:
``segment_level(SO_a, SO_v, SO_a*SO_v, GT_a, GT_v, GT_a*GT_v)`` and
``event_level(...)`` with the same arguments (SO int, GT float64, [25, 10]).
The inputs: 240 random videos from numpy default_rng(20201) in six families
(dense random, a few random runs per class, all-0/all-1 matrices, truth with
flipped snippets as predictions, random snippets in 3 shared classes, one or
two of the four matrices emptied), then 7 hand-picked ones (all empty, all
full, one snippet, prediction only, truth only). Stored: ``inputs`` uint8
[247, 4, 25, packbits(10)] (pred_a, pred_v, gt_a, gt_v), ``keys`` and
``scores`` [247, 8], the original's returned floats (segment_level returns
f_a, f_v, f (Event@AV), f_av; event_level likewise), stored by key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avparse.core import metrics as M

DATA = Path(__file__).parent / "data" / "eval_reference.npz"


def z(c=2, t=10):
    return np.zeros((c, t), dtype=np.uint8)


def runs(c, t, spec):
    """spec: {class: [(start, end), ...]} -> [c, t] binary, end exclusive."""
    x = z(c, t)
    for k, rs in spec.items():
        for a, b in rs:
            x[k, a:b] = 1
    return x


def check(scores, **want):
    for k, v in want.items():
        assert scores[k] == pytest.approx(v, abs=1e-12), k


# ---------------------------------------------------------------- by hand


def test_empty_video_scores_one():
    # nothing predicted, nothing annotated: every class skipped -> 1.0 everywhere
    s = M.video_scores(z(), z(), z(), z())
    assert s == {k: 1.0 for k in M.VIDEO_KEYS}


def test_prediction_without_truth():
    # audio class 0 predicted on snippets 0..2, no truth at all.
    # seg_a: class 0 TP=0 FP=3 -> F=0; class 1 skipped -> 0.  visual: all empty -> 1.
    # av: pred_av = pred_a & pred_v = empty, gt_av empty -> 1.
    # seg_event pools a+v per class: class 0 TP=0 FP=3 -> 0.  Events alike (1 FP run).
    pa = runs(2, 10, {0: [(0, 3)]})
    s = M.video_scores(pa, z(), z(), z())
    check(s, seg_a=0, seg_v=1, seg_av=1, seg_event=0, evt_a=0, evt_v=1, evt_av=1, evt_event=0)


def test_truth_without_prediction():
    # visual class 1 annotated 5..9, nothing predicted: FN only -> 0 for v and pooled.
    gv = runs(2, 10, {1: [(5, 10)]})
    s = M.video_scores(z(), z(), z(), gv)
    check(s, seg_a=1, seg_v=0, seg_av=1, seg_event=0, evt_a=1, evt_v=0, evt_av=1, evt_event=0)


def test_partial_overlap_and_skip():
    # audio class 0: truth [0,4), prediction [2,6): seg TP=2 (2,3) FP=2 (4,5) FN=2 (0,1)
    #   -> F = 2*2/(2*2+2+2) = 0.5; event IoU = 2/6 < 0.5 -> TP=0 FP=1 FN=1 -> F=0.
    # audio class 1: truth = prediction = [5,10) -> 1 and 1.
    # seg_a = (0.5+1)/2 = 0.75, evt_a = (0+1)/2 = 0.5; visual and av all empty -> 1;
    # pooled equals audio here (visual adds nothing).
    pa = runs(2, 10, {0: [(2, 6)], 1: [(5, 10)]})
    ga = runs(2, 10, {0: [(0, 4)], 1: [(5, 10)]})
    s = M.video_scores(pa, z(), ga, z())
    check(s, seg_a=0.75, seg_v=1, seg_av=1, seg_event=0.75, evt_a=0.5, evt_v=1, evt_av=1, evt_event=0.5)


@pytest.mark.parametrize("pred,truth,evt,seg", [
    # IoU exactly 0.5: inter 2, union 4 -> match.  seg TP=2 FP=0 FN=2 -> 4/6
    ([(0, 2)], [(0, 4)], 1.0, 4 / 6),
    # inside, IoU 3/6 = 0.5 -> match.  seg TP=3 FN=3 -> 6/9
    ([(3, 6)], [(2, 8)], 1.0, 6 / 9),
    # IoU 2/5 < 0.5 -> TP=0 FP=1 FN=1 -> 0.  seg TP=2 FN=3 -> 4/7
    ([(0, 2)], [(0, 5)], 0.0, 4 / 7),
    # one-snippet events, equal -> 1; last snippet (run reaching T) -> 1
    ([(4, 5)], [(4, 5)], 1.0, 1.0),
    ([(9, 10)], [(9, 10)], 1.0, 1.0),
    # one-snippet events, neighbours: IoU 0 -> 0; seg TP=0 FP=1 FN=1 -> 0
    ([(5, 6)], [(4, 5)], 0.0, 0.0),
    # runs split by one gap: [0,3) [4,7) vs [0,7): IoUs 3/7 -> TP=0 FP=2 FN=1 -> 0
    #   seg TP=6 FP=0 FN=1 -> 12/13
    ([(0, 3), (4, 7)], [(0, 7)], 0.0, 12 / 13),
    # [0,3) matches [0,3) exactly, [4,7) is a FP: TP=1 FP=1 FN=0 -> 2/3; seg TP=3 FP=3 -> 6/9
    ([(0, 3), (4, 7)], [(0, 3)], 2 / 3, 6 / 9),
    # adjacent runs merge into one event: [0,2)+[2,4) = [0,4) vs [0,4) -> 1
    ([(0, 2), (2, 4)], [(0, 4)], 1.0, 1.0),
])
def test_event_matching(pred, truth, evt, seg):
    pa, ga = runs(1, 10, {0: pred}), runs(1, 10, {0: truth})
    s = M.video_scores(pa, z(1), ga, z(1))
    check(s, evt_a=evt, seg_a=seg, evt_event=evt, seg_event=seg)
    # the same with the modalities swapped scores the visual keys
    s = M.video_scores(z(1), pa, z(1), ga)
    check(s, evt_v=evt, seg_v=seg, evt_a=1, seg_a=1)


def test_audio_visual_is_and_and_event_pools():
    # class 0: pred_a [0,6), pred_v [3,10) -> pred_av [3,6); gt identical -> av = 1.
    pa, pv = runs(1, 10, {0: [(0, 6)]}), runs(1, 10, {0: [(3, 10)]})
    s = M.video_scores(pa, pv, pa, pv)
    check(s, seg_av=1, evt_av=1)
    # gt_v shifted to [0,3): gt_av empty while pred_av = [3,6) -> av = 0 (FP only)
    s = M.video_scores(pa, pv, pa, runs(1, 10, {0: [(0, 3)]}))
    check(s, seg_av=0, evt_av=0)
    # Event@AV pools counts, not scores: audio 3 runs all matched (TP=3),
    # visual 1 run with no truth (FP=1) -> evt_a=1, evt_v=0, but
    # evt_event = 2*3/(2*3 + 0 + 1) = 6/7 (not the mean 0.5).
    # seg: audio TP=3, visual FP=2 -> seg_event = 6/(6+2) = 0.75.
    pa = runs(1, 10, {0: [(0, 1), (3, 4), (6, 7)]})
    pv = runs(1, 10, {0: [(8, 10)]})
    s = M.video_scores(pa, pv, pa, z(1))
    check(s, evt_a=1, evt_v=0, evt_event=6 / 7, seg_a=1, seg_v=0, seg_event=0.75)


def test_summarize_means_percent_and_type():
    a = {k: 1.0 for k in M.VIDEO_KEYS}
    b = {k: 0.0 for k in M.VIDEO_KEYS}
    b.update(seg_a=0.5, evt_av=0.25)
    s = M.summarize([a, b])
    # seg_a = 100*(1+0.5)/2 = 75; seg_v = seg_av = 50; seg_type = (50+75+50)/3
    # evt_av = 100*(1+0.25)/2 = 62.5; evt_type = (62.5+50+50)/3
    check(s, seg_a=75, seg_v=50, seg_av=50, seg_event=50, seg_type=175 / 3,
          evt_a=50, evt_v=50, evt_av=62.5, evt_event=50, evt_type=162.5 / 3)
    assert set(s) == set(M.SUMMARY_KEYS)
    with pytest.raises(ValueError):
        M.summarize([])


def test_binarize_gates_snippets_by_video_probability():
    # N=1, T=3, C=2.  class 0: video 0.5 (>= 0.5, kept); class 1: video 0.49 (gated off).
    fp = np.zeros((1, 3, 2, 2))
    fp[0, :, 0, 0] = [0.5, 0.49, 0.9]   # audio class 0 -> 1 0 1
    fp[0, :, 1, 0] = [0.1, 0.6, 0.2]    # visual class 0 -> 0 1 0
    fp[0, :, 0, 1] = [0.9, 0.9, 0.9]    # audio class 1, but the video prob gates it -> 0 0 0
    gp = np.array([[0.5, 0.49]])
    pa, pv = M.binarize(fp, gp)
    assert pa.shape == pv.shape == (1, 2, 3)
    np.testing.assert_array_equal(pa[0], [[1, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(pv[0], [[0, 1, 0], [0, 0, 0]])
    pa, _ = M.binarize(fp, gp, threshold=0.95, video_threshold=0.4)
    assert pa.sum() == 0
    pa, _ = M.binarize(fp, gp, video_threshold=0.4)
    np.testing.assert_array_equal(pa[0], [[1, 0, 1], [1, 1, 1]])
    with pytest.raises(ValueError):
        M.binarize(fp[:, :, :1], gp)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="binary"):
        M.video_scores(z() + 0.5, z(), z(), z())
    with pytest.raises(ValueError, match="one shape"):
        M.video_scores(z(3), z(), z(), z())
    with pytest.raises(ValueError, match="dimensions"):
        M.dataset_scores(z(), z(), z(), z())


# ---------------------------------------------------------------- the original's outputs


def _reference():
    d = np.load(DATA)
    x = np.unpackbits(d["inputs"], axis=-1, count=10).astype(bool)
    return x, [str(k) for k in d["keys"]], d["scores"]


def test_video_scores_equal_original():
    x, keys, want = _reference()
    got = np.array([[M.video_scores(*v)[k] for k in keys] for v in x])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # the reference is not degenerate: it spans the range in every key
    assert (want.min(axis=0) == 0).all() and (want.max(axis=0) == 1).all()
    assert ((want > 0) & (want < 1)).sum(axis=0).min() > 50


def test_batch_equals_original_and_loop():
    x, keys, want = _reference()
    per = M.per_video_scores(x[:, 0], x[:, 1], x[:, 2], x[:, 3])
    np.testing.assert_allclose(np.stack([per[k] for k in keys], 1), want, rtol=0, atol=1e-12)
    loop = M.summarize([M.video_scores(*v) for v in x])
    batch = M.dataset_scores(x[:, 0], x[:, 1], x[:, 2], x[:, 3])
    assert set(batch) == set(loop)
    for k in loop:
        assert batch[k] == pytest.approx(loop[k], abs=1e-9), k


def test_batch_equals_loop_random_shapes():
    # other C and T than the paper's, sparse runs, ints as input
    rng = np.random.default_rng(7)
    # T > 64 takes the path without bitmasks
    for c, t in ((3, 1), (4, 7), (25, 10), (5, 16), (2, 64), (3, 70)):
        arrs = [(rng.random((40, c, t)) < rng.uniform(0.05, 0.6)).astype(np.int64) for _ in range(4)]
        arrs[1][:10] = 0
        arrs[2][5:15] = 0
        arrs[0][20:30] = arrs[2][20:30]  # identical prediction and truth rows
        per = M.per_video_scores(*arrs)
        for n in range(40):
            v = M.video_scores(*(a[n] for a in arrs))
            for k in M.VIDEO_KEYS:
                assert per[k][n] == pytest.approx(v[k], abs=1e-12), (c, t, n, k)


def test_popcount_fallback_without_bitwise_count(monkeypatch):
    # numpy < 2.0 has no bitwise_count: the lookup-table path must agree
    x = np.random.default_rng(3).integers(0, 2**63, 500, dtype=np.uint64)
    x[:3] = [0, 2**64 - 1, 1 << 63]
    want = np.array([bin(int(v)).count("1") for v in x])
    if hasattr(np, "bitwise_count"):
        monkeypatch.delattr(np, "bitwise_count")
    np.testing.assert_array_equal(M._popcount(x), want)
