"""The Python API: avparse.load / Parser.parse / Parser.stream, and importing avparse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings

import pytest

import avparse
from avparse.core.events import Event, Segment


def test_import_avparse_is_light_and_has_a_version():
    code = ("import sys, avparse; print(avparse.__version__, 'torch' in sys.modules, 'numpy' in sys.modules, "
            "avparse.available_models())")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split(" ", 3)
    from importlib.metadata import version

    assert out[0] == version("avparse") == avparse.__version__
    assert out[1:3] == ["False", "False"]  # no torch, no numpy until a model is loaded
    assert "demo" in out[3] and "llp" in out[3]
    assert set(avparse.__all__) <= set(dir(avparse))
    with pytest.raises(AttributeError):
        avparse.nonexistent


@pytest.fixture(scope="module")
def demo():
    return avparse.load("demo", progress=None)


def test_parse_gives_typed_segments_matching_the_command(demo, llp_clip, capsys):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        segs = demo.parse(llp_clip)
    assert segs and all(isinstance(s, Segment) for s in segs)
    for s in segs:
        assert s.label in demo.classes and s.modality in ("audio", "visual", "audiovisual")
        assert 0.0 <= s.start < s.end <= 10.0 and (s.start, s.end) == (s.onset, s.offset) and 0 <= s.score <= 1
    # the honest notice: once, naming what the bundled model knows and the way out
    notes = [str(x.message) for x in w if issubclass(x.category, UserWarning)]
    assert len(notes) == 1 and "generated scenes" in notes[0] and "--model llp" in notes[0]
    # the command gives the same segments (one implementation)
    from avparse.stream.tracker import events_to_segments
    from avparse.tools.parse import main

    assert main([str(llp_clip), "--json"]) == 0
    events = [Event.from_dict(json.loads(line)) for line in capsys.readouterr().out.splitlines()]
    key = lambda s: (s.onset, s.offset, s.label, s.modality, round(s.score, 4))  # noqa: E731
    assert sorted(map(key, events_to_segments(events))) == sorted(map(key, segs))
    # both decide by the checkpoint's calibrated rules (the bundled model ships calibrated)
    assert demo.loaded.calibration is not None and demo.tracker_config(1.0).rules is not None


def test_stream_of_a_file_gives_the_offline_events(demo, llp_clip):
    offline = list(demo.events(llp_clip))
    live = demo.stream(file=llp_clip)
    got = list(live)
    assert [(e.kind, e.label, e.modality, e.media_time, e.reason) for e in got] == \
           [(e.kind, e.label, e.modality, e.media_time, e.reason) for e in offline]
    assert live.stats["snippets"] == 10 and live.error is None


def _avparse_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("avparse")]


def test_breaking_out_of_a_stream_stops_it(demo):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a generated scene gets no notice
        n = 0
        for event in demo.stream(scene=1, scene_duration=600):
            assert isinstance(event, Event) and event.stream == "scene"
            n += 1
            if n == 3:
                break
    # the iterator was dropped at the break: the runtime stopped, the source thread ended
    for _ in range(50):
        if not _avparse_threads():
            break
        threading.Event().wait(0.1)
    assert _avparse_threads() == []


def _unclosed(events):
    """(label, modality) of the onsets in ``events`` that no later offset closes."""
    open_ = set()
    for e in events:
        key = (e.label, e.modality)
        if e.kind == "onset":
            assert key not in open_, f"a second onset of {key} without an offset between"
            open_.add(key)
        else:
            assert key in open_, f"an offset of {key} without its onset"
            open_.discard(key)
    return open_


def test_a_with_block_stops_the_stream_and_keeps_its_stopped_offsets(demo):
    with demo.stream(scene=2, scene_duration=600, max_pending=1) as s:
        first = next(s)  # the runtime now waits on the full buffer: bounded, not growing
        assert first.kind == "onset"
    assert _avparse_threads() == []  # leaving the block stopped the runtime and its sources
    rest = list(s)                    # the events not read yet, then the offsets of what was still on
    assert rest and _unclosed([first] + rest) == set()
    stopped = [e for e in rest if e.kind == "offset" and e.reason == "stopped"]
    assert stopped and all(e.media_time < 600 for e in stopped)
    assert list(s) == [] and s.error is None  # finished; closing again is a no-op
    s.close()


def test_close_delivers_stopped_offsets_of_a_real_file_to_the_reader(demo, llp_clip):
    """The real LLP clip paced in real time: after a few events, close(); reading on gives an offset
    (reason "stopped", before the clip's end) for every class still on, as `avparse run` sends on Ctrl-C."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bundled model's real-input notice
        s = demo.stream(file=llp_clip, realtime=True)
    got = []
    for e in s:
        got.append(e)
        if sum(x.kind == "onset" for x in got) >= 2:
            break
    still_on = _unclosed(got)
    assert still_on  # the clip's classes are on from its first seconds
    s.close()
    assert _avparse_threads() == []
    rest = list(s)
    assert _unclosed(got + rest) == set()
    stopped = {(e.label, e.modality) for e in rest if e.kind == "offset" and e.reason == "stopped"}
    assert stopped and all(e.media_time < 10.0 for e in rest if e.kind == "offset" and e.reason == "stopped")
    assert all(e.reason != "end-of-stream" for e in rest if e.kind == "offset")  # stopped, not run to the end


def test_close_from_another_thread_ends_the_loop_with_the_stopped_offsets(demo):
    s = demo.stream(scene=7, scene_duration=600, realtime=True)
    got = []
    closer = None
    for e in s:  # the loop waits for events; another thread closes the stream
        got.append(e)
        if closer is None and e.kind == "onset":
            closer = threading.Timer(0.3, s.close)
            closer.start()
    closer.join()
    assert got and _unclosed(got) == set() and _avparse_threads() == []
    assert any(e.kind == "offset" and e.reason == "stopped" for e in got)
    assert max(e.media_time for e in got) < 60  # stopped early, not at the scene's end


def test_stream_errors_come_at_the_call(demo, tmp_path):
    with pytest.raises(Exception, match="no such media file|No such file|does not exist"):
        demo.stream(file=tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="one of camera"):
        demo.stream(file="a.mp4", scene=1)
    assert _avparse_threads() == []


def test_unknown_names_and_missing_files_are_one_line(tmp_path):
    from avparse.tools.api import ModelError

    with pytest.raises(ModelError, match="known model names: demo, llp"):
        avparse.load("whisper-base", progress=None)
    with pytest.raises(ModelError, match="no such checkpoint file"):
        avparse.load(tmp_path / "none.pt", progress=None)
    with pytest.raises(ModelError) as e:  # tests run offline: llp's files are not here
        avparse.load("llp", progress=None)
    msg = str(e.value)
    assert "AVVP-ECCV20-MMIL_Net-ef441b42.pt" in msg and "resnet152-394f9c45.pth" in msg and "offline" in msg
    assert "\n" not in msg
    with pytest.raises(ModelError, match="profile paper, paper-pca, not lite"):
        avparse.load("llp", profile="lite", progress=None)


def test_free_cpus_counts_other_processes_not_our_own():
    from avparse.tools.api import CpuSample, _allowed_cpus, free_cpus

    t0 = CpuSample(busy=0.0, total=200.0, own=0.0, wall=0.0)
    # over 1 s, 2 CPUs: 1.5 CPUs busy, 0.5 of them ours -> others 1.0 -> 1.0 free
    assert free_cpus(t0, CpuSample(busy=150.0, total=400.0, own=0.5, wall=1.0), ncpu=2) == min(1.0, _allowed_cpus())
    # all busy, all ours (our own threads, spinning or not) -> both free for us
    assert free_cpus(t0, CpuSample(busy=200.0, total=400.0, own=2.0, wall=1.0), ncpu=2) == min(2.0, _allowed_cpus())
    # all busy, none ours -> none free
    assert free_cpus(t0, CpuSample(busy=200.0, total=400.0, own=0.0, wall=1.0), ncpu=2) == 0.0
    assert free_cpus(None) is None


def test_threads_follow_a_competitor(monkeypatch):
    """A real competing process (a busy loop on every CPU this test may use) makes the picker choose one
    thread; AVPARSE_THREADS overrides; the runtime's tuner applies what it measures."""
    import subprocess

    import torch

    from avparse.tools.api import ThreadTuner, _allowed_cpus, pick_threads

    monkeypatch.setenv("AVPARSE_THREADS", "3")
    assert pick_threads() == 3
    monkeypatch.delenv("AVPARSE_THREADS")
    n = _allowed_cpus()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    before = torch.get_num_threads()
    try:
        threading.Event().wait(0.5)
        assert pick_threads(sample_seconds=0.5) == 1
        tuner = ThreadTuner(interval=0.3)
        threading.Event().wait(0.5)
        tuner.stats({})
        assert torch.get_num_threads() == 1
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        torch.set_num_threads(before)
