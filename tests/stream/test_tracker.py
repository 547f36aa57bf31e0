"""The onset/offset tracker: hysteresis, minimum durations, the gate, audio-visual, flush."""

from __future__ import annotations

import numpy as np
import pytest

from avparse.core.events import Event
from avparse.stream.grid import SnippetGrid
from avparse.stream.tracker import (
    SnippetProbs, Tracker, TrackerConfig, events_to_matrices, events_to_segments, segments_to_matrix,
)

CLASSES = ("Speech", "Dog")


def probs(audio, visual=None, glob=None, *, stream="s", hop=1.0):
    """SnippetProbs for class 0 ("Speech") from per-snippet sequences; class 1 stays at 0."""
    visual = [0.0] * len(audio) if visual is None else visual
    glob = [1.0] * len(audio) if glob is None else glob
    out = []
    for k, (a, v, g) in enumerate(zip(audio, visual, glob)):
        fp = np.zeros((2, 2), np.float32)
        fp[0, 0], fp[1, 0] = a, v
        gp = np.array([g, 0.0], np.float32)
        out.append(SnippetProbs(stream, k, k * hop, fp, gp, decided_at=k * hop + 1.0))
    return out


def run(tracker, items, flush="end-of-stream"):
    out = []
    for p in items:
        out += tracker.push(p)
    if flush:
        out += tracker.flush(flush)
    return out


def brief(events, modality="audio"):
    return [(e.kind, e.media_time, e.reason) for e in events if e.modality == modality]


def test_basic_onset_offset_on_snippet_boundaries():
    tr = Tracker(TrackerConfig(), classes=CLASSES)
    ev = run(tr, probs([0.1, 0.7, 0.8, 0.2, 0.1]))
    assert brief(ev) == [("onset", 1.0, ""), ("offset", 3.0, "ended")]
    on, off = [e for e in ev if e.modality == "audio"]
    assert on.label == "Speech" and on.score == pytest.approx(0.7, abs=1e-6)
    assert on.decided_at == pytest.approx(2.0) and off.decided_at == pytest.approx(4.0)
    assert off.onset_time == 1.0
    assert brief(ev, "visual") == [] and brief(ev, "audiovisual") == []


def test_hysteresis_keeps_a_class_on_between_thresholds():
    seq = [0.1, 0.8, 0.45, 0.45, 0.2, 0.1]
    plain = run(Tracker(TrackerConfig(), classes=CLASSES), probs(seq))
    hyst = run(Tracker(TrackerConfig(on_threshold=0.6, off_threshold=0.3), classes=CLASSES), probs(seq))
    assert brief(plain) == [("onset", 1.0, ""), ("offset", 2.0, "ended")]
    assert brief(hyst) == [("onset", 1.0, ""), ("offset", 4.0, "ended")]
    with pytest.raises(ValueError):
        TrackerConfig(on_threshold=0.4, off_threshold=0.6)


def test_min_on_drops_short_bursts_and_delays_the_decision():
    seq = [0.9, 0.1, 0.1, 0.9, 0.9, 0.9, 0.1]
    ev = run(Tracker(TrackerConfig(min_on=2.0), classes=CLASSES), probs(seq))
    assert brief(ev) == [("onset", 3.0, ""), ("offset", 6.0, "ended")]
    on = [e for e in ev if e.modality == "audio"][0]
    assert on.decided_at == pytest.approx(5.0)  # known only once snippet 4 was seen


def test_min_off_bridges_short_gaps():
    seq = [0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1]
    no_min = run(Tracker(TrackerConfig(), classes=CLASSES), probs(seq))
    bridged = run(Tracker(TrackerConfig(min_off=2.0), classes=CLASSES), probs(seq))
    assert len(brief(no_min)) == 4
    assert brief(bridged) == [("onset", 0.0, ""), ("offset", 5.0, "ended")]
    off = [e for e in bridged if e.modality == "audio"][-1]
    assert off.decided_at == pytest.approx(7.0)


def test_video_level_gate():
    seq_a = [0.9, 0.9, 0.9, 0.1]
    glob = [0.3, 0.3, 0.7, 0.7]
    ungated = run(Tracker(TrackerConfig(), classes=CLASSES), probs(seq_a, glob=glob))
    gated = run(Tracker(TrackerConfig(video_gate=True), classes=CLASSES), probs(seq_a, glob=glob))
    assert brief(ungated) == [("onset", 0.0, ""), ("offset", 3.0, "ended")]
    assert brief(gated) == [("onset", 2.0, ""), ("offset", 3.0, "ended")]


def test_audiovisual_is_both_at_once():
    a = [0.9, 0.9, 0.9, 0.9, 0.1, 0.1]
    v = [0.1, 0.1, 0.8, 0.8, 0.8, 0.1]
    ev = run(Tracker(TrackerConfig(), classes=CLASSES), probs(a, v))
    assert brief(ev, "audio") == [("onset", 0.0, ""), ("offset", 4.0, "ended")]
    assert brief(ev, "visual") == [("onset", 2.0, ""), ("offset", 5.0, "ended")]
    assert brief(ev, "audiovisual") == [("onset", 2.0, ""), ("offset", 4.0, "ended")]
    av_on = [e for e in ev if e.modality == "audiovisual"][0]
    assert av_on.score == pytest.approx(0.8, abs=1e-6)  # min of the two


def test_flush_closes_open_events_with_its_reason():
    tr = Tracker(TrackerConfig(min_off=3.0), classes=CLASSES)
    ev = run(tr, probs([0.1, 0.9, 0.9], [0.9, 0.9, 0.1]), flush=None)
    assert sorted(tr.open_events()) == [
        ("s", "Speech", "audio", 1.0), ("s", "Speech", "audiovisual", 1.0), ("s", "Speech", "visual", 0.0)]
    closed = tr.flush("stopped")
    assert {(e.modality, e.media_time, e.reason, e.onset_time) for e in closed} == {
        ("audio", 3.0, "stopped", 1.0),    # still on: ends at the end of the last cell
        ("visual", 2.0, "stopped", 0.0),   # already falling: ends where it fell
        ("audiovisual", 2.0, "stopped", 1.0),
    }
    assert all(e.kind == "offset" for e in closed)
    assert tr.open_events() == [] and tr.flush("stopped") == []
    assert len([e for e in ev if e.kind == "onset"]) == 3


def test_flush_one_stream_only_and_streams_are_independent():
    tr = Tracker(TrackerConfig(), classes=CLASSES)
    for p in probs([0.9, 0.9], stream="a") + probs([0.1, 0.9], stream="b"):
        tr.push(p)
    closed = tr.flush("source-lost", stream="a")
    assert {(e.stream, e.reason) for e in closed} == {("a", "source-lost")}
    assert [o[:3] for o in tr.open_events()] == [("b", "Speech", "audio")]


def test_overlapping_hop_cells():
    # hop 0.5 s: snippet k decides [k*0.5 + 0.25, k*0.5 + 0.75); snippet 0 from 0
    tr = Tracker(TrackerConfig(), classes=CLASSES, grid=SnippetGrid(hop=0.5))
    ev = run(tr, probs([0.1, 0.1, 0.9, 0.9, 0.1], hop=0.5))
    assert brief(ev) == [("onset", 1.25, ""), ("offset", 2.25, "ended")]


def test_segments_and_matrices_for_the_metrics():
    a = [0.9, 0.9, 0.1, 0.1, 0.9, 0.1]
    v = [0.1, 0.9, 0.9, 0.1, 0.1, 0.1]
    ev = run(Tracker(TrackerConfig(), classes=CLASSES), probs(a, v))
    segs = events_to_segments(ev)
    assert [(s.modality, s.onset, s.offset) for s in segs if s.modality == "audio"] == [
        ("audio", 0.0, 2.0), ("audio", 4.0, 5.0)]
    m = events_to_matrices(ev, CLASSES, 6)
    np.testing.assert_array_equal(m["audio"][0], [1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(m["visual"][0], [0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(m["audiovisual"][0], [0, 1, 0, 0, 0, 0])
    assert not m["audio"][1].any()
    # the same as thresholding the probabilities directly (the LLP evaluation)
    np.testing.assert_array_equal(m["audio"][0], (np.array(a) >= 0.5).astype(np.uint8))
    with pytest.raises(ValueError):
        segments_to_matrix(segs, ("Other",), 6, modality="audio")


def test_reset_forgets_state():
    tr = Tracker(TrackerConfig(), classes=CLASSES)
    run(tr, probs([0.9]), flush=None)
    tr.reset()
    assert tr.open_events() == [] and tr.flush() == []
    assert isinstance(run(tr, probs([0.9]))[0], Event)


def test_config_from_command_line_options():
    d = TrackerConfig()
    assert TrackerConfig.from_options() == d
    c = TrackerConfig.from_options(on=0.7, min_on=0.5)
    assert (c.on_threshold, c.off_threshold, c.min_on, c.min_off) == (0.7, 0.7, 0.5, d.min_off)
    assert TrackerConfig.from_options(on=0.7, off=0.4, video_gate=True).off_threshold == 0.4
    with pytest.raises(ValueError, match="must not exceed"):
        TrackerConfig.from_options(on=0.3, off=0.6)
