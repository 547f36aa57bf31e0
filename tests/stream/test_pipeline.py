"""The runtime: several streams, live equals offline, stop and lost sources close events."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from avparse.core.han import HANOutput
from avparse.stream.clock import RealClock, VirtualClock
from avparse.stream.offline import parse_source
from avparse.stream.pipeline import EventLog, Runtime, pipeline_config
from avparse.stream.tracker import TrackerConfig
from avparse.stream.types import AudioChunk, EndOfStream, StageObserver, VideoFrame

SR = 800          # audio rate of these tests (samples per 1 s snippet)
BLOCK = 16        # 20 ms blocks
CLASSES = ("Beep", "Light")


class ToyExtractor:
    """audio feature: RMS of the snippet; v2d: mean brightness of each frame; v3d: zeros."""

    def __call__(self, audio, frames):
        a = torch.from_numpy(np.asarray(audio, np.float32))
        fr = torch.from_numpy(np.asarray(frames)).float() / 255.0
        rms = a.pow(2).mean(1, keepdim=True).sqrt()
        return SimpleNamespace(audio=rms, v2d=fr.mean(dim=(2, 3, 4))[..., None], v3d=torch.zeros(len(a), 1))


class ToyHAN(nn.Module):
    """A window model with HAN's output contract: class 0 audible when loud, class 1 visible when bright.
    A touch of cross-snippet context (the window mean) makes the window matter."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(30.0))

    def forward(self, audio, v2d, v3d):
        b, t, _ = audio.shape
        bright = v2d.reshape(b, t, -1).mean(-1)
        loud = audio[..., 0]
        ctx = 0.01 * (loud.mean(1, keepdim=True) + bright.mean(1, keepdim=True))
        pa = torch.sigmoid(self.scale * (loud - 0.2) + ctx)
        pv = torch.sigmoid(self.scale * (bright - 0.5) + ctx)
        zero = torch.zeros_like(pa)
        fp = torch.stack([torch.stack([pa, zero], -1), torch.stack([zero, pv], -1)], 2)  # [B, T, 2, 2]
        g = fp.amax(dim=(1, 2))
        return HANOutput(g, fp[:, :, 0].amax(1), fp[:, :, 1].amax(1), fp, fp, fp)


class ToySource:
    """A scene: a 440 Hz beep in [beep), bright frames in [light), else silence/dark.

    ``kinds`` picks what it yields (a file: both; a microphone: audio; a camera: video).
    ``pace``: None = as fast as possible, else real seconds per media second.
    ``fail_at``: raise after this media time (a source that dies). ``duration=None``: endless."""

    def __init__(self, name, duration=8.0, *, beep=(2.0, 5.0), light=(3.0, 6.0), fps=25.0,
                 kinds=("audio", "video"), pace=None, fail_at=None, eos=True):
        self.name, self.duration, self.beep, self.light, self.fps = name, duration, beep, light, fps
        self.kinds, self.pace, self.fail_at, self.eos = tuple(kinds), pace, fail_at, eos
        self.opened = self.closed = False

    def open(self):
        self.opened = True

    def close(self):
        self.closed = True

    def read(self):
        start = time.monotonic()
        n_blocks = int(self.duration * SR / BLOCK) if self.duration else 10**9
        frame = 0
        for b in range(n_blocks):
            t = b * BLOCK / SR
            if self.closed:
                return
            if self.fail_at is not None and t >= self.fail_at:
                raise OSError("device unplugged")
            while "video" in self.kinds and frame / self.fps <= t:
                ft = frame / self.fps
                on = self.light[0] <= ft < self.light[1]
                yield VideoFrame(self.name, ft, np.full((4, 4, 3), 230 if on else 20, np.uint8))
                frame += 1
            if "audio" in self.kinds:
                tt = t + np.arange(BLOCK) / SR
                on = (self.beep[0] <= tt) & (tt < self.beep[1])
                yield AudioChunk(self.name, t, (0.5 * np.sin(2 * np.pi * 440 * tt) * on).astype(np.float32), SR)
            if self.pace:
                ahead = start + (t + BLOCK / SR) * self.pace - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        if self.eos:
            yield EndOfStream(self.name, self.duration)


def config(**kw):
    tracker = kw.pop("tracker", TrackerConfig())
    profile = SimpleNamespace(sample_rate=SR, snippet_seconds=1.0, frames_per_snippet=4, frame_size=4)
    return pipeline_config(profile=profile, tracker=tracker, **kw)


def brief(events):
    return sorted((e.stream, e.kind, e.label, e.modality, e.media_time, e.reason) for e in events)


EXPECTED = [
    ("a", "offset", "Beep", "audio", 5.0, "ended"),
    ("a", "offset", "Beep", "audiovisual", 5.0, "ended"),
    ("a", "offset", "Light", "audiovisual", 6.0, "ended"),
    ("a", "offset", "Light", "visual", 6.0, "ended"),
    ("a", "onset", "Beep", "audio", 2.0, ""),
    ("a", "onset", "Beep", "audiovisual", 3.0, ""),
    ("a", "onset", "Light", "audiovisual", 3.0, ""),
    ("a", "onset", "Light", "visual", 3.0, ""),
]


def test_offline_parse_finds_the_scene_events():
    events = parse_source(config(window=4), ToyHAN(), ToyExtractor(), ToySource("a"), classes=CLASSES)
    # audio-visual of a class: its audio and visual both on. The toy model puts each class in one
    # modality only, so there are no audio-visual events ... unless both probabilities say so:
    got = brief(events)
    assert ("a", "onset", "Beep", "audio", 2.0, "") in got and ("a", "offset", "Beep", "audio", 5.0, "ended") in got
    assert ("a", "onset", "Light", "visual", 3.0, "") in got and ("a", "offset", "Light", "visual", 6.0, "ended") in got
    assert not [e for e in events if e.modality == "audiovisual"]
    assert len(events) == 4


@pytest.mark.parametrize("clock", ["virtual", "real-paced"])
def test_live_equals_offline(clock):
    cfg = config(window=4, lookahead=1, max_batch=4, max_wait=0.05)
    offline = parse_source(cfg, ToyHAN(), ToyExtractor(), ToySource("a"), classes=CLASSES)
    if clock == "virtual":
        rt = Runtime(cfg, ToyHAN(), ToyExtractor(), [ToySource("a")], clock=VirtualClock(), classes=CLASSES)
    else:  # the same file paced at 4x real time, on the real clock
        rt = Runtime(cfg, ToyHAN(), ToyExtractor(), [ToySource("a", pace=0.25)], clock=RealClock(), classes=CLASSES)
    log = EventLog()
    rt.add_sink(log)
    st = rt.run()
    assert len(offline) == 4
    if clock == "virtual":
        assert log.events == offline  # exactly, scores and decision times included
    else:
        key = lambda e: (e.kind, e.label, e.modality, e.media_time, e.decided_at, e.reason, e.onset_time)
        assert [key(e) for e in log.events] == [key(e) for e in offline]
        np.testing.assert_allclose([e.score for e in log.events], [e.score for e in offline], atol=1e-5)
    assert st["snippets"] == 8 and st["events"] == 4
    assert log.stats_count >= 1 and log.last_stats["inference"]["predictions"] == 8


def test_observers_see_every_snippet_prediction_before_the_tracker():
    cfg = config(window=4, lookahead=1, max_batch=4, max_wait=0.05)
    rt = Runtime(cfg, ToyHAN(), ToyExtractor(), [ToySource("a")], clock=VirtualClock(), classes=CLASSES)
    seen = []

    class Watch(StageObserver):
        def prediction(self, p):
            seen.append((p.stream, p.index, p.frame_prob.copy()))

    rt.pipeline.observe(Watch())
    log = EventLog()
    rt.add_sink(log)
    st = rt.run()
    assert [i for _, i, _ in seen] == list(range(8)) and {s for s, _, _ in seen} == {"a"}
    assert st["inference"]["predictions"] == len(seen)
    beep = np.array([fp[0, 0] for _, _, fp in seen])   # audio probability of "Beep" per snippet
    # ToySource beeps in [2, 5): the listener sees what the tracker turned into that onset/offset pair
    assert (beep[2:5] > 0.5).all() and (np.delete(beep, [2, 3, 4]) < 0.5).all()
    assert ("a", "onset", "Beep", "audio", 2.0, "") in brief(log.events)


def test_several_streams_share_batches():
    cfg = config(window=4, max_batch=3, max_wait=10.0)
    sources = [ToySource(n, beep=(1.0 + i, 3.0 + i)) for i, n in enumerate("abc")]
    rt = Runtime(cfg, ToyHAN(), ToyExtractor(), sources, clock=VirtualClock(), classes=CLASSES)
    log = EventLog()
    rt.add_sink(log)
    st = rt.run()
    for i, n in enumerate("abc"):
        ev = [(e.kind, e.media_time) for e in log.events if e.stream == n and e.modality == "audio"]
        assert ev == [("onset", 1.0 + i), ("offset", 3.0 + i)]
    assert st["inference"]["snippets"] == 24
    assert st["inference"]["max_batch_seen"] == 3 and st["inference"]["batches"] < 24
    assert set(st["streams"]) == {"a", "b", "c"} and st["queue"]["capacity"] == cfg.queue_size
    assert all(s.closed for s in sources)


def test_camera_plus_microphone_stream():
    cfg = config(window=4)
    mic = ToySource("room", kinds=("audio",))
    cam = ToySource("room", kinds=("video",))
    rt = Runtime(cfg, ToyHAN(), ToyExtractor(), [mic, cam], clock=VirtualClock(), classes=CLASSES)
    log = EventLog()
    rt.add_sink(log)
    rt.run()
    assert brief(log.events) == brief(parse_source(cfg, ToyHAN(), ToyExtractor(), ToySource("room"),
                                                   classes=CLASSES))


def test_stop_closes_open_events_with_reason():
    cfg = config(window=4, max_wait=0.0)
    src = ToySource("cam", duration=None, beep=(1.0, 1e9), light=(1e9, 1e9), pace=0.1)
    rt = Runtime(cfg, ToyHAN(), ToyExtractor(), [src], classes=CLASSES)
    log = EventLog()
    rt.add_sink(log)
    th = threading.Thread(target=rt.run)
    th.start()
    deadline = time.monotonic() + 20
    while not [e for e in log.events if e.kind == "onset"] and time.monotonic() < deadline:
        time.sleep(0.02)
    rt.stop("stopped")
    th.join(timeout=10)
    assert not th.is_alive()
    kinds = [(e.kind, e.label, e.modality, e.reason) for e in log.events]
    assert kinds == [("onset", "Beep", "audio", ""), ("offset", "Beep", "audio", "stopped")]
    off = log.events[-1]
    assert off.onset_time == 1.0 and off.media_time > 1.0
    assert src.closed and rt.stats()["running"] is False


def test_lost_source_closes_its_stream_and_others_go_on():
    cfg = config(window=4)
    bad = ToySource("bad", beep=(1.0, 9.0), light=(1e9, 1e9), fail_at=3.5)
    good = ToySource("good")
    rt = Runtime(cfg, ToyHAN(), ToyExtractor(), [bad, good], clock=VirtualClock(), classes=CLASSES)
    log = EventLog()
    rt.add_sink(log)
    st = rt.run()
    lost = [e for e in log.events if e.stream == "bad" and e.kind == "offset"]
    assert [(e.label, e.reason) for e in lost] == [("Beep", "source-lost")]
    assert 3.0 <= lost[0].media_time <= 4.0 and lost[0].onset_time == 1.0
    assert len([e for e in log.events if e.stream == "good"]) == 4
    assert len(st["faults"]) == 1 and "device unplugged" in st["faults"][0]


def test_a_failing_sink_is_counted_not_fatal():
    class Broken:
        def emit(self, e):
            raise RuntimeError("disk full")

        def stats(self, d):
            pass

    cfg = config(window=4)
    rt = Runtime(cfg, ToyHAN(), ToyExtractor(), [ToySource("a")], clock=VirtualClock(), classes=CLASSES)
    log = EventLog()
    rt.add_sink(Broken())
    rt.add_sink(log)
    st = rt.run()
    assert len(log.events) == 4 and st["sink_errors"] == 4


def test_open_errors_surface_at_start():
    class NoCamera(ToySource):
        def open(self):
            raise OSError("no camera at index 7")

    ok = ToySource("a")
    rt = Runtime(config(), ToyHAN(), ToyExtractor(), [ok, NoCamera("b")], classes=CLASSES)
    with pytest.raises(OSError, match="index 7"):
        rt.run()
    assert ok.closed


class ToyScene:
    """A scene (core.scene.Scene protocol) with a beep heard in [2, 5) and a light seen in [3, 6)."""

    sample_rate, fps, duration, width, height = SR, 10.0, 8.0, 4, 4
    classes = CLASSES

    def render_audio(self, start, count):
        t = (start + np.arange(count)) / SR
        return (0.5 * np.sin(2 * np.pi * 440 * t) * ((2 <= t) & (t < 5))).astype(np.float32)

    def render_frame(self, index):
        return np.full((4, 4, 3), 230 if 3 <= index / self.fps < 6 else 20, np.uint8)

    def ground_truth(self):
        from avparse.core.scene import TrueEvent

        return [TrueEvent("Beep", "audio", 2.0, 5.0), TrueEvent("Light", "visual", 3.0, 6.0)]


@pytest.mark.parametrize("paced", [False, True])
def test_scene_source_events_match_ground_truth(paced):
    from avparse.stream.sources import SceneSource, VirtualClock
    from avparse.stream.tracker import events_to_segments

    scene = ToyScene()
    src = SceneSource(scene, name="scene", paced=paced, clock=VirtualClock() if paced else None)
    cfg = config(window=4, lookahead=1)
    rt = Runtime(cfg, ToyHAN(), ToyExtractor(), [src], clock=VirtualClock(), classes=CLASSES)
    log = EventLog()
    rt.add_sink(log)
    rt.run()
    segs = events_to_segments(log.events)
    assert sorted((s.label, s.modality, s.onset, s.offset) for s in segs) == sorted(
        (g.label, g.modality, g.onset, g.offset) for g in scene.ground_truth())
    assert log.events == parse_source(cfg, ToyHAN(), ToyExtractor(), SceneSource(scene, name="scene"),
                                      classes=CLASSES)


def test_camera_and_microphone_stream_with_real_parts(pulse_server, serve_stream):
    """One stream from two devices: OpenCV on a UDP stream FFmpeg serves on loopback, and PortAudio
    recording a PulseAudio null sink's monitor while a tone plays into the sink."""
    import subprocess

    from avparse.stream.sources import CameraSource, MicrophoneSource, RealClock

    served = serve_stream("udp", seconds=20, fps=15)
    clock = RealClock()
    mic = MicrophoneSource("pulse", sample_rate=16000, name="room", clock=RealClock(), block_seconds=0.02)
    cam = CameraSource(served.url, name="room", clock=RealClock(), retries=6, backoff=0.2, open_timeout=5,
                       read_timeout=3)
    profile = SimpleNamespace(sample_rate=16000, snippet_seconds=1.0, frames_per_snippet=4, frame_size=4)
    cfg = pipeline_config(profile=profile, window=4, max_wait=0.0, drop_when_full=True)
    rt = Runtime(cfg, ToyHAN(), ToyExtractor(), [mic, cam], clock=clock, classes=CLASSES)
    log = EventLog()
    rt.add_sink(log)
    th = threading.Thread(target=rt.run)
    rate, secs = 16000, 15.0
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(rate * secs)) / rate)).astype("<f4")
    player = None
    try:
        rt.start()  # both devices open here, before any thread
        th.start()
        time.sleep(1.5)  # some silence first
        player = subprocess.Popen(["pacat", "--playback", "--device=avtest", f"--rate={rate}", "--channels=1",
                                   "--format=float32le", "--raw", "--latency-msec=20"], stdin=subprocess.PIPE,
                                  env=pulse_server["env"])

        def feed():
            try:
                player.stdin.write(tone.tobytes())
                player.stdin.close()
            except (BrokenPipeError, ValueError):  # killed at the end of the test
                pass

        threading.Thread(target=feed, daemon=True).start()
        deadline = time.monotonic() + 20
        while not [e for e in log.events if e.label == "Beep" and e.kind == "onset"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        rt.stop("stopped")
        th.join(timeout=10)
        if player is not None:
            player.kill()
            player.wait()
    assert not th.is_alive()
    beep = [e for e in log.events if e.label == "Beep" and e.modality == "audio"]
    assert [e.kind for e in beep] == ["onset", "offset"] and beep[1].reason == "stopped"
    assert beep[0].media_time >= 1.0  # after the silence, on the microphone's time line
    st = rt.stats()
    room = st["streams"]["room"]
    assert room["snippets"] >= 3 and room["frames"] > 15
    assert room["snippets"] - room["black_snippets"] >= 1  # the camera's frames reached the snippets
    assert st["input_lag"]["max"] is not None and st["faults"] == []


def test_a_failing_stage_leaves_no_source_running():
    class BadExtractor:
        def __call__(self, audio, frames):
            raise RuntimeError("CUDA out of memory")

    src = ToySource("a", duration=None, pace=0.05)
    rt = Runtime(config(max_batch=1), ToyHAN(), BadExtractor(), [src], classes=CLASSES)
    with pytest.raises(RuntimeError, match="out of memory"):
        rt.run()
    assert src.closed and not any(th.is_alive() for th in rt._threads)


def test_shed_snippets_are_counted_not_analysed_and_events_bridge_them():
    from avparse.stream.pipeline import Pipeline

    pipe = Pipeline(config(window=4), ToyHAN(), ToyExtractor(), classes=CLASSES)
    pipe.add_stream("a")
    events = []
    for chunk in ToySource("a").read():
        if isinstance(chunk, EndOfStream):
            events += pipe.end_stream("a", chunk.reason)
            break
        shed = isinstance(chunk, AudioChunk) and 3.0 <= chunk.t < 4.0  # the runtime is behind for 1 s
        events += pipe.feed(chunk, shed=shed)
    st = pipe.stats()
    assert st["shed"] == {"a": 1} and st["snippets"] == 7 and st["inference"]["snippets"] == 7
    got = brief(events)  # the beep (2-5 s) stays one event across the shed snippet 3
    assert ("a", "onset", "Beep", "audio", 2.0, "") in got and ("a", "offset", "Beep", "audio", 5.0, "ended") in got
    assert sum(e.label == "Beep" for e in events) == 2


class SlowExtractor(ToyExtractor):
    """The toy extractor on a machine too slow for real time: 1.1 s of work per call."""

    def __call__(self, audio, frames):
        time.sleep(1.1)
        return super().__call__(audio, frames)


@pytest.mark.slow
def test_a_runtime_slower_than_real_time_says_so_once_with_its_real_time_factor():
    cfg = config(window=4, max_wait=0.0, max_lag=None)  # no shedding: the measurement alone
    rt = Runtime(cfg, ToyHAN(), SlowExtractor(), [ToySource("a", duration=7.0, pace=1.0)], clock=RealClock(),
                 classes=CLASSES)
    seen = []
    rt.on_notice = seen.append
    st = rt.run()
    assert len(seen) == 1 and "real-time factor 1." in seen[0] and "cannot keep up" in seen[0]
    assert "shedding is off" in seen[0]
    assert st["real_time_factor"] > 1.0 and st["drops"]["shed_snippets"] == 0
