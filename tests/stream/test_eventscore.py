"""Event-level scores: sed_eval's collar-based event metrics, spurious events per minute, onset
latency, and the array matcher of the calibration search checked against sed_eval."""

from __future__ import annotations

import numpy as np
import pytest

from avparse.core.events import Event
from avparse.stream.eventscore import (
    Interval, count_matches, detections, intervals_from_matrix, onset_latency, score_events, with_audiovisual,
)

sed_eval = pytest.importorskip("sed_eval")
dcase_util = pytest.importorskip("dcase_util")


def test_a_hand_made_example():
    truth = {"f": with_audiovisual([Interval("dog", "audio", 2.0, 6.0), Interval("dog", "visual", 4.0, 9.0),
                                    Interval("car", "audio", 10.0, 12.0)])}
    det = {"f": [Interval("dog", "audio", 2.0, 5.0, 3.0),        # onset and offset within 1 s: a hit
                 Interval("dog", "visual", 5.5, 9.0, 6.5),       # onset 1.5 s late: a miss and a spurious event
                 Interval("car", "audio", 10.0, 14.0, 11.0),     # offset 2 s late: a miss and a spurious event
                 Interval("car", "audio", 20.0, 21.0, 21.0),     # nothing there: spurious
                 Interval("dog", "audiovisual", 4.0, 6.0, 5.0)]}  # the overlap of dog's audio and visual truth
    s = score_events(truth, det, ("dog", "car"), seconds={"f": 60.0})
    assert (s["audio"]["tp"], s["audio"]["fp"], s["audio"]["fn"]) == (1, 2, 1)
    assert (s["visual"]["tp"], s["visual"]["fp"], s["visual"]["fn"]) == (0, 1, 1)
    assert (s["audiovisual"]["tp"], s["audiovisual"]["fn"]) == (1, 0)
    assert s["audio"]["precision"] == pytest.approx(1 / 3) and s["audio"]["recall"] == pytest.approx(0.5)
    assert s["audio"]["f1"] == pytest.approx(0.4)
    assert s["audio"]["spurious_per_min"] == pytest.approx(2.0) and s["all"]["spurious_per_min"] == pytest.approx(3.0)
    lat = s["latency"]
    # onsets alone: dog audio (+1.0), car audio (10 -> decided 11: +1.0), dog AV (+1.0); dog visual is 1.5 s off
    assert lat["audio"]["n"] == 2 and lat["audio"]["p50"] == pytest.approx(1.0)
    assert lat["visual"]["n"] == 0 and lat["audiovisual"]["n"] == 1 and lat["audio+visual"]["n"] == 2


def test_audiovisual_truth_is_the_overlap_of_each_class():
    t = with_audiovisual([Interval("a", "audio", 0, 5), Interval("a", "visual", 3, 8), Interval("a", "visual", 9, 10),
                          Interval("b", "audio", 0, 5), Interval("a", "audiovisual", 0, 1)])
    assert [(x.label, x.onset, x.offset) for x in t if x.modality == "audiovisual"] == [("a", 3, 5)]


def test_intervals_from_a_dense_matrix_and_detections_from_events():
    m = np.array([[0, 1, 1, 0, 1], [1, 1, 1, 1, 1]])
    iv = intervals_from_matrix(m, ("a", "b"), "visual")
    assert [(x.label, x.onset, x.offset) for x in iv] == [("a", 1, 3), ("a", 4, 5), ("b", 0, 5)]
    ev = [Event("onset", "s", "a", "audio", 1.0, 0.9, 2.0), Event("onset", "s", "b", "visual", 2.0, 0.9, 3.0),
          Event("offset", "s", "a", "audio", 4.0, 0.1, 5.0, reason="ended", onset_time=1.0)]
    assert detections(ev) == [Interval("a", "audio", 1.0, 4.0, 2.0)]
    assert detections(ev, end=10.0)[-1] == Interval("b", "visual", 2.0, 10.0, 3.0)


def _sed_eval_tp(ref, est, collar):
    m = sed_eval.sound_event.EventBasedMetrics(["x"], t_collar=float(collar), percentage_of_length=0.0)
    m.evaluate(dcase_util.containers.MetaDataContainer(
                   [{"file": "f", "event_label": "x", "onset": a, "offset": b} for a, b in ref]),
               dcase_util.containers.MetaDataContainer(
                   [{"file": "f", "event_label": "x", "onset": a, "offset": b} for a, b in est]))
    return int(m.overall["Ntp"])


def test_the_array_matcher_counts_what_sed_eval_counts():
    """Random events on a 0.25 s grid, crowded enough that one detection often fits several true
    events (the maximum matching matters): the same true positives as sed_eval, every time."""
    rng = np.random.default_rng(0)
    conflicts = 0
    for trial in range(300):
        def events(n):
            on = rng.integers(0, 40, n) * 0.25
            return [(a, a + rng.integers(1, 12) * 0.25) for a in on]
        ref, est = events(rng.integers(0, 6)), events(rng.integers(0, 6))
        r, e = np.array(ref, float).reshape(-1, 2), np.array(est, float).reshape(-1, 2)
        got = count_matches(r[:, 0], r[:, 1], e[:, 0], e[:, 1], collar=1.0)
        assert got == _sed_eval_tp(ref, est, 1.0), (ref, est)
        if len(r) and len(e):
            hit = (np.abs(r[:, :1] - e[:, 0]) <= 1) & (np.abs(r[:, 1:] - e[:, 1]) <= 1)
            conflicts += bool((hit.sum(0) > 1).any() or (hit.sum(1) > 1).any())
    assert conflicts > 20   # the bipartite path was exercised


def test_onset_latency_matches_one_to_one():
    truth = {"f": [Interval("a", "audio", 0.0, 5.0), Interval("a", "audio", 1.0, 2.0)]}
    det = {"f": [Interval("a", "audio", 0.5, 5.0, 1.5)]}
    lat = onset_latency(truth, det)
    assert lat["audio"]["n"] == 1 and lat["audio"]["p50"] in (pytest.approx(1.5), pytest.approx(0.5))
