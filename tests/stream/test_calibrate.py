"""The calibration search on recorded predictions with a known best rule: it finds it, the
latency bound holds, per-class thresholds only when held-out folds want them, and its figures
are those of the real Tracker."""

from __future__ import annotations

import numpy as np
import pytest

from avparse.stream.calibrate import CalibrateConfig, Recording, calibrate, figures, subsample, tracker_events
from avparse.stream.eventscore import Interval
from avparse.stream.grid import SnippetGrid
from avparse.stream.tracker import SnippetProbs, TrackerConfig

pytest.importorskip("sed_eval")
CLASSES = ("a", "b")
GRID = SnippetGrid()   # hop 1, 1 s snippets
SMALL = CalibrateConfig(on=(0.5, 0.7, 0.9), off_ratio=(1.0, 0.4), min_on=(0.0, 2.0), min_off=(0.0, 2.0),
                        gate=("none",), gate_threshold=(0.5,), median=(1,), switch=(0.5,), rounds=2)


def recording(k: int, *, seconds=30, inside=0.95, dip=0.4, blip=0.6, blip_len=1, blips_b=None, inside_a=None,
              hop=1.0) -> Recording:
    """Class a and b events (the same interval audible and visible) at probability ``inside`` with one
    cell at ``dip`` in the middle, and ``blip_len``-cell spurious blips at ``blip`` elsewhere."""
    rng = np.random.default_rng(k)
    n = int(seconds / hop)
    p = np.full((n, 2), 0.05)
    truth = []
    for c, label in enumerate(CLASSES):
        start = int(rng.integers(1, 6))
        for _ in range(2):
            length = int(rng.integers(4, 8))
            lo, hi = start, min(start + length, seconds - 1)
            cells = [i for i in range(n) if lo <= i * hop + (1 - hop) / 2 and i * hop + (1 + hop) / 2 <= hi]
            p[cells, c] = inside if not (c == 0 and inside_a) else inside_a
            p[cells[len(cells) // 2], c] = dip
            truth += [Interval(label, "audio", lo, hi), Interval(label, "visual", lo, hi)]
            gap_at = hi + 2
            if gap_at + blip_len < n * hop:
                i0 = int(gap_at / hop)
                p[i0:i0 + int(blip_len / hop), c] = blip if not (c == 1 and blips_b) else blips_b
            start = hi + 5
    probs = []
    for i in range(n):
        fp = np.stack([p[i], p[i]]).astype(np.float32)
        probs.append(SnippetProbs(f"r{k}", i, i * hop, fp, np.ones(2, np.float32), decided_at=i * hop + 1.0))
    return Recording(f"r{k}", probs, truth, float(seconds))


def test_finds_the_rule_that_removes_blips_and_bridges_dips():
    recs = [recording(k) for k in range(10)]
    rules = calibrate(recs, CLASSES, hop=1.0, config=SMALL)
    bare = figures(recs, CLASSES, TrackerConfig(), grid=GRID)
    cal = figures(recs, CLASSES, TrackerConfig(rules=rules), grid=GRID)
    for m in ("audio", "visual", "audiovisual"):
        assert bare[m]["f1"] < 0.5 and cal[m]["f1"] == pytest.approx(1.0), (m, bare[m], cal[m])
        r = getattr(rules, m)
        assert min(r.on) > 0.6 and max(r.off) < 0.4 or r.min_off >= 2.0   # above the blips, through the dips
        # what the search believed is what the real Tracker does
        assert rules.info["search"][m]["f1"] == pytest.approx(cal[m]["f1"], abs=1e-4)
    assert cal["all"]["spurious_per_min"] == 0.0 and bare["all"]["spurious_per_min"] > 5
    assert cal["latency"]["audio+visual"]["p50"] == pytest.approx(1.0)


def test_the_latency_bound_holds():
    """One-cell blips at the true events' level: only min_on (2 cells: 1 s later) tells them apart.
    With the default bound at hop 1 (1.1 s) it is not allowed; with a loose bound it is chosen."""
    recs = [recording(k, blip=0.95) for k in range(8)]
    strict = calibrate(recs, CLASSES, hop=1.0, config=SMALL)
    loose = calibrate(recs, CLASSES, hop=1.0, config=CalibrateConfig(**{**SMALL.__dict__, "max_latency": ((1.0, 5.0),)}))
    fs, fl = (figures(recs, CLASSES, TrackerConfig(rules=r), grid=GRID) for r in (strict, loose))
    assert strict.audio.min_on == 0.0 and fs["latency"]["audio+visual"]["p50"] <= 1.1
    assert loose.audio.min_on == 2.0 and fl["audio"]["f1"] > fs["audio"]["f1"]
    assert fl["latency"]["audio+visual"]["p50"] == pytest.approx(2.0)


def test_a_bound_no_rule_can_keep_becomes_the_bare_rules_latency():
    """A model whose onsets come later than the bound with every threshold (here: the bound 0.5 s at
    hop 1, where every decision waits for its 1 s snippet): the search does not freeze at the bare
    rule (no candidate would be feasible), it keeps the bare rule's own latency and still finds the
    rule that removes the blips and bridges the dips."""
    recs = [recording(k) for k in range(10)]
    cfg = CalibrateConfig(**{**SMALL.__dict__, "max_latency": ((1.0, 0.5),)})
    rules = calibrate(recs, CLASSES, hop=1.0, config=cfg)
    bare = figures(recs, CLASSES, TrackerConfig(), grid=GRID)
    cal = figures(recs, CLASSES, TrackerConfig(rules=rules), grid=GRID)
    assert rules.info["latency_bound"] == pytest.approx(1.0) and rules.info["latency_bound_set"] == 0.5
    assert "cannot be kept" in rules.info["latency_bound_note"]
    for m in ("audio", "visual", "audiovisual"):
        assert bare[m]["f1"] < 0.5 and cal[m]["f1"] == pytest.approx(1.0), (m, bare[m], cal[m])
    assert cal["latency"]["audio+visual"]["p50"] <= bare["latency"]["audio+visual"]["p50"]
    # a bound some rule keeps is kept as set, with no note
    ok = calibrate(recs, CLASSES, hop=1.0, config=SMALL)
    assert ok.info["latency_bound"] == pytest.approx(1.1) and ok.info["latency_bound_note"] == ""


def test_per_class_thresholds_only_when_held_out_clips_want_them():
    # class a's events sit at 0.7 (a 0.9 threshold misses them), class b's blips at 0.8 (a 0.7 one
    # keeps them): no single threshold serves both, and every fold shows it
    recs = [recording(k, inside_a=0.75, blips_b=0.8) for k in range(10)]
    rules = calibrate(recs, CLASSES, hop=1.0, config=SMALL)
    assert rules.info["search"]["audio"]["per_class"] is True
    assert rules.audio.on[0] < rules.audio.on[1]
    assert figures(recs, CLASSES, TrackerConfig(rules=rules), grid=GRID)["audio"]["f1"] == pytest.approx(1.0)
    # with nothing to separate, one threshold for all
    plain = calibrate([recording(k) for k in range(10)], CLASSES, hop=1.0, config=SMALL)
    assert plain.info["search"]["audio"]["per_class"] is False and len(set(plain.audio.on)) == 1


def test_rules_survive_a_checkpoint_round_trip_and_decide_the_same(tmp_path):
    from avparse.stream.decision import calibration_record, checkpoint_rules

    recs = [recording(k) for k in range(4)]
    rules = calibrate(recs, CLASSES, hop=1.0, config=SMALL)
    back = checkpoint_rules(calibration_record([rules]), 1.0)
    assert back == rules
    assert tracker_events(recs, CLASSES, TrackerConfig(rules=back), grid=GRID) == \
        tracker_events(recs, CLASSES, TrackerConfig(rules=rules), grid=GRID)


def test_subsample_takes_the_coarser_grid():
    rec = recording(0, hop=0.25, seconds=30)
    sub = subsample([rec], 1.0)[0]
    assert [p.index for p in sub.probs] == list(range(30))
    assert [p.t0 for p in sub.probs] == [float(i) for i in range(30)]
    assert all(a.frame_prob is b.frame_prob for a, b in zip(sub.probs, rec.probs[::4]))


def test_nothing_to_calibrate_on_is_an_error():
    with pytest.raises(ValueError):
        calibrate([], CLASSES, hop=1.0)
    empty = recording(0)
    empty.truth = []
    with pytest.raises(ValueError, match="no true events"):
        calibrate([empty], CLASSES, hop=1.0, config=SMALL)
