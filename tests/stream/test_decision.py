"""The tracker's decision rules: per-class and per-modality thresholds, the HMM forward filter, the
causal median, the modality gate, rules in checkpoints, and nothing published taken back."""

from __future__ import annotations

import numpy as np
import pytest

from avparse.stream.decision import (
    CALIBRATION_FORMAT, DecisionBank, DecisionRules, ModalityRule, Smoother, calibration_record, calibrations,
    checkpoint_rules, select_rules,
)
from avparse.stream.tracker import SnippetProbs, Tracker, TrackerConfig

CLASSES = ("Speech", "Dog")


def probs(audio, visual=None, *, a1=None, glob=None, a_prob=None, v_prob=None, hop=1.0, stream="s"):
    """SnippetProbs: class 0 from the sequences, class 1 audio from ``a1`` (else 0)."""
    n = len(audio)
    visual = [0.0] * n if visual is None else visual
    a1 = [0.0] * n if a1 is None else a1
    out = []
    for k in range(n):
        fp = np.zeros((2, 2), np.float32)
        fp[0, 0], fp[1, 0], fp[0, 1] = audio[k], visual[k], a1[k]
        g = np.array([1.0 if glob is None else glob[k], 1.0], np.float32)
        ap = None if a_prob is None else np.array([a_prob[k], 1.0], np.float32)
        vp = None if v_prob is None else np.array([v_prob[k], 1.0], np.float32)
        out.append(SnippetProbs(stream, k, k * hop, fp, g, ap, vp, decided_at=k * hop + 1.0))
    return out


def run(tracker, items):
    out = []
    for p in items:
        out += tracker.push(p)
    return out + tracker.flush()


def brief(events, modality="audio", label="Speech"):
    return [(e.kind, e.media_time) for e in events if e.modality == modality and e.label == label]


def rules(audio=None, visual=None, av=None, *, hop=1.0):
    bare = ModalityRule.uniform(len(CLASSES))
    return DecisionRules(hop=hop, classes=CLASSES, audio=audio or bare, visual=visual or bare, audiovisual=av or bare)


def test_uniform_rules_are_the_scalar_config():
    rng = np.random.default_rng(3)
    seqs = [rng.random(40).round(2) for _ in range(3)]
    for kw in ({}, {"on_threshold": 0.7, "off_threshold": 0.3}, {"min_on": 2.0, "min_off": 2.0},
               {"video_gate": True}):
        cfg = TrackerConfig(**kw)
        r = DecisionRules.uniform(CLASSES, on=cfg.on_threshold, off=cfg.off_threshold, min_on=cfg.min_on,
                                  min_off=cfg.min_off, gate="global" if cfg.video_gate else "none")
        items = probs(seqs[0], seqs[1], a1=seqs[2], glob=list(rng.random(40)))
        assert run(Tracker(cfg, classes=CLASSES), items) == run(Tracker(TrackerConfig(rules=r), classes=CLASSES), items)


def test_per_class_thresholds():
    a = [0.1, 0.6, 0.6, 0.1]
    r = rules(audio=ModalityRule(on=(0.7, 0.5), off=(0.7, 0.5)))
    ev = run(Tracker(TrackerConfig(rules=r), classes=CLASSES), probs(a, a1=a))
    assert brief(ev, label="Speech") == []                       # 0.6 < 0.7
    assert brief(ev, label="Dog") == [("onset", 1.0), ("offset", 3.0)]


def test_per_modality_durations():
    seq = [0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1]
    r = rules(audio=ModalityRule.uniform(2, min_off=2.0))
    ev = run(Tracker(TrackerConfig(rules=r), classes=CLASSES), probs(seq, seq))
    assert brief(ev, "audio") == [("onset", 0.0), ("offset", 5.0)]          # the gap is bridged
    assert brief(ev, "visual") == [("onset", 0.0), ("offset", 2.0), ("onset", 3.0), ("offset", 5.0)]


def test_hmm_forward_filter():
    """switch s: from a settled state one snippet must reach p >= 1 - s to switch; weaker evidence
    has to come twice in a row; the output is P(on | snippets so far)."""
    sm = Smoother(np.array([1]), np.array([0.1]))
    post = [float(sm.push(np.array([p]))[0]) for p in (0.5, 0.05, 0.05, 0.8, 0.05, 0.8, 0.8, 0.95)]
    prior, want = 0.5, []
    for p in (0.5, 0.05, 0.05, 0.8, 0.05, 0.8, 0.8, 0.95):   # the forward recursion, written out
        x = prior * p / (prior * p + (1 - prior) * (1 - p))
        want.append(x)
        prior = x * 0.9 + (1 - x) * 0.1
    np.testing.assert_allclose(post, want, rtol=1e-9)
    assert post[3] < 0.5 and post[4] < 0.5     # one 0.8 after a settled off: still off
    assert post[6] >= 0.5                      # two in a row: on
    r = rules(audio=ModalityRule.uniform(2, switch=0.1))
    ev = run(Tracker(TrackerConfig(rules=r), classes=CLASSES), probs([0.05, 0.05, 0.8, 0.05, 0.05, 0.95, 0.05]))
    assert brief(ev) == [("onset", 5.0), ("offset", 6.0)]   # the lone 0.8 blip is gone, the strong one kept


def test_causal_median_uses_only_the_past():
    sm = Smoother(np.array([3]), np.array([0.5]))
    out = [float(sm.push(np.array([x]))[0]) for x in (0.9, 0.1, 0.1, 0.9, 0.9, 0.1)]
    assert out == [0.9, 0.5, 0.1, 0.1, 0.9, 0.9]   # medians of the last (up to) 3 values


def test_modality_gate_uses_the_modality_s_own_video_level_probability():
    a = [0.9, 0.9, 0.9]
    r = rules(audio=ModalityRule.uniform(2, gate="modality"), visual=ModalityRule.uniform(2, gate="global"))
    items = probs(a, a, glob=[1.0, 1.0, 1.0], a_prob=[0.2, 0.7, 0.7], v_prob=[0.2, 0.2, 0.2])
    ev = run(Tracker(TrackerConfig(rules=r), classes=CLASSES), items)
    assert brief(ev, "audio") == [("onset", 1.0), ("offset", 3.0)]   # a_prob opens the gate at snippet 1
    assert brief(ev, "visual") == [("onset", 0.0), ("offset", 3.0)]  # the global gate stays open


def test_nothing_published_is_taken_back():
    """Per key: onsets and offsets alternate, each offset closes the onset before it, decided_at never
    goes back, and an event's media time is never after the moment it was decided."""
    rng = np.random.default_rng(7)
    r = rules(audio=ModalityRule(on=(0.6, 0.4), off=(0.3, 0.2), min_on=2.0, min_off=2.0, gate="modality",
                                 median=3, switch=0.2),
              visual=ModalityRule.uniform(2, on=0.5, off=0.2, switch=0.05))
    items = probs(list(rng.random(200)), list(rng.random(200)), a1=list(rng.random(200)),
                  a_prob=list(rng.random(200)), v_prob=list(rng.random(200)))
    ev = run(Tracker(TrackerConfig(rules=r), classes=CLASSES), items)
    assert len(ev) > 20
    state, last = {}, -1.0
    for e in ev:
        assert e.decided_at >= last - 1e-9 and e.media_time <= e.decided_at + 1e-9
        last = e.decided_at
        if e.kind == "onset":
            assert e.key not in state
            state[e.key] = e.media_time
        else:
            assert state.pop(e.key) == e.onset_time
    assert not state


def test_rules_round_trip_and_refuse_nonsense():
    r = rules(audio=ModalityRule(on=(0.7, 0.5), off=(0.2, 0.5), min_off=2.0, gate="modality", switch=0.2), hop=0.25)
    d = r.to_dict()
    assert DecisionRules.from_dict(d) == r
    for bad in ({**d, "version": 99}, {**d, "audio": {**d["audio"], "on": [0.5]}},
                {**d, "audio": {**d["audio"], "off": [0.9, 0.5]}}, {**d, "audio": {**d["audio"], "gate": "x"}},
                {**d, "audio": {**d["audio"], "median": 2}}, {**d, "audio": {**d["audio"], "switch": 0.7}},
                {**d, "audio": {**d["audio"], "extra": 1}}, {k: v for k, v in d.items() if k != "visual"}):
        with pytest.raises(ValueError):
            DecisionRules.from_dict(bad)
    rec = calibration_record([r, rules(hop=1.0)], data="x")
    assert rec["format"] == CALIBRATION_FORMAT and [x.hop for x in calibrations(rec)] == [0.25, 1.0]
    with pytest.raises(ValueError):
        calibrations({**rec, "format": "other"})
    with pytest.raises(ValueError):
        calibrations({**rec, "rules": [r.to_dict(), r.to_dict()]})   # two rule sets for one hop
    assert calibrations(None) == [] and checkpoint_rules(None, 1.0) is None


def test_nearest_hop_and_moving_rules_to_another_hop():
    r1 = rules(audio=ModalityRule.uniform(2, switch=0.2, median=5), hop=1.0)
    r4 = rules(hop=0.25)
    assert select_rules([r1, r4], 1.0) is r1 and select_rules([r1, r4], 0.25) is r4
    assert select_rules([r1, r4], 0.5).hop == 0.5 and select_rules([r1], 0.5).hop == 0.5
    moved = r1.at_hop(0.5)
    # the switch keeps its rate per second: two half-second steps stay with (1 - s)^2 = 0.8
    assert (1 - moved.audio.switch) ** 2 == pytest.approx(0.8)
    assert moved.audio.median == 9        # 2 s of history either way: (5 - 1) cells of 1 s = 8 cells of 0.5 s
    assert moved.audio.min_off == r1.audio.min_off


def test_flags_override_calibrated_rules():
    r = rules(audio=ModalityRule(on=(0.7, 0.5), off=(0.2, 0.1), min_off=2.0, gate="modality"))
    c = TrackerConfig.from_options(rules=r)
    assert c.rules == r
    c = TrackerConfig.from_options(on=0.6, rules=r)
    assert c.rules.audio.on == (0.6, 0.6) and c.rules.audio.off == (0.6, 0.6) and c.rules.audio.min_off == 2.0
    c = TrackerConfig.from_options(off=0.3, min_off=0.0, video_gate=True, rules=r)
    assert c.rules.audio.off == (0.3, 0.3) and c.rules.audio.min_off == 0.0 and c.rules.visual.gate == "global"
    with pytest.raises(ValueError, match="classes"):
        Tracker(TrackerConfig(rules=r), classes=("a", "b", "c"))


def test_bank_many_columns_at_once():
    """The state machine on [K] columns: the same decisions as K separate ones."""
    rng = np.random.default_rng(1)
    x = rng.random((30, 6))
    on, off = np.array([0.5, 0.6, 0.7, 0.5, 0.6, 0.9]), np.array([0.5, 0.3, 0.2, 0.1, 0.6, 0.5])
    mon, moff = np.array([0, 0, 2, 3, 1, 0.0]), np.array([0, 2, 0, 3, 1, 4.0])
    bank = DecisionBank(on, off, mon, moff)
    together = [bank.step(x[t], t, t + 1.0) for t in range(30)]
    for j in range(6):
        b = DecisionBank(on[j:j + 1], off[j:j + 1], mon[j:j + 1], moff[j:j + 1])
        for t in range(30):
            o, f = b.step(x[t, j:j + 1], t, t + 1.0)
            assert (o[0], f[0]) == (together[t][0][j], together[t][1][j])
