"""Faults while running, with real parts where they run here (FFmpeg sending UDP on loopback,
OpenCV reading it, ZeroMQ sockets, `avparse run` as a process).

Covered elsewhere (not repeated): a camera URL that never answers retries with back-off and a
stream that ends for good is reported (tests/stream/test_sources.py), a microphone reader that
falls behind leaves an exact counted gap (overflow; test_sources.py), a source that fails closes
its stream with "source-lost" while the others go on (tests/stream/test_pipeline.py), a slow
subscriber sees a gap and a publisher restart is detected and resynchronised
(tests/stream/test_client.py), emit never blocks on a subscriber that never reads
(tests/stream/test_publisher.py).

Over 500 lines on purpose: the fault scenarios that need real parts share their helpers here (an
FFmpeg UDP sender, a paced audio stand-in, the tiny model), one scenario per test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from avparse.core.events import Event  # noqa: E402
from avparse.stream import wire  # noqa: E402
from avparse.stream.client import Gap, Restart, Subscriber  # noqa: E402
from avparse.stream.publisher import Publisher, PublisherConfig  # noqa: E402
from tests.reliability.conftest import free_port, needs_ffmpeg  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


def udp_sender(port: int, seconds: float = 30, fps: int = 15) -> subprocess.Popen:
    """FFmpeg playing a test pattern in real time as MPEG-TS to 127.0.0.1:port (a network camera)."""
    return subprocess.Popen(
        ["ffmpeg", "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", f"testsrc=size=160x120:rate={fps}",
         "-t", str(seconds), "-c:v", "mpeg2video", "-g", str(fps), "-f", "mpegts",
         f"udp://127.0.0.1:{port}?pkt_size=1316"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGCONT)
        except ProcessLookupError:
            pass
        p.kill()
    p.wait()


def read_for(src, seconds: float, pause=None):
    """Frames of ``src`` (opened) read in a thread for ``seconds`` wall seconds, with arrival times;
    ``pause(t_since_start)`` is called from the main thread every 50 ms."""
    from avparse.stream.types import EndOfStream, VideoFrame

    got, ended = [], []
    t0 = time.monotonic()

    def reader():
        for c in src.read():
            if isinstance(c, VideoFrame):
                got.append((time.monotonic() - t0, c.t))
            elif isinstance(c, EndOfStream):
                ended.append(c.reason)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    while time.monotonic() - t0 < seconds:
        if pause:
            pause(time.monotonic() - t0)
        time.sleep(0.05)
    src.close()
    th.join(10)
    return got, ended


# ------------------------------------------------------------------------- camera stops, comes back
@needs_ffmpeg
@pytest.mark.slow
def test_network_camera_that_stalls_then_resumes_keeps_one_stream():
    """The sender is frozen (SIGSTOP) for 2 s, shorter than the read timeout: the source waits,
    then frames flow again on the same capture; media time keeps going forward."""
    from avparse.stream.sources import CameraSource, RealClock

    port = udp_port()
    sender = udp_sender(port)
    said = []
    src = CameraSource(f"udp://127.0.0.1:{port}", clock=RealClock(), retries=3, backoff=0.2, open_timeout=5,
                       read_timeout=4, notify=said.append)
    try:
        src.open()
        state = {}

        def pause(t):
            if t > 2.0 and "stopped" not in state:
                sender.send_signal(signal.SIGSTOP)
                state["stopped"] = t
            elif "stopped" in state and t > state["stopped"] + 2.0 and "resumed" not in state:
                sender.send_signal(signal.SIGCONT)
                state["resumed"] = t

        got, ended = read_for(src, 7.0, pause)
    finally:
        _stop(sender)
    arrivals = np.array([a for a, _ in got])
    ts = np.array([t for _, t in got])
    before = arrivals[arrivals < state["stopped"]]
    after = arrivals[arrivals > state["resumed"] + 0.5]
    assert len(before) > 5 and len(after) > 5, (len(before), len(after), said)
    assert np.all(np.diff(ts) > 0), "media time must keep increasing"
    assert np.max(np.diff(arrivals)) > 1.5, "the stall was seen"
    assert ended == ["stopped"] and src.counters["reconnects"] == 0, (ended, said)


@needs_ffmpeg
@pytest.mark.slow
def test_network_camera_that_drops_and_reconnects():
    """The sender dies; a new one starts on the same address 2 s later: the source reports the
    loss, reconnects, and frames continue with media time going forward."""
    from avparse.stream.sources import CameraSource, RealClock

    port = udp_port()
    senders = [udp_sender(port)]
    said = []
    src = CameraSource(f"udp://127.0.0.1:{port}", clock=RealClock(), retries=8, backoff=0.3, max_backoff=1.0,
                       open_timeout=3, read_timeout=1.0, notify=said.append)
    try:
        src.open()
        state = {}

        def drop(t):
            if t > 2.0 and "killed" not in state:
                senders[0].kill()
                state["killed"] = t
            elif "killed" in state and t > state["killed"] + 2.0 and "restarted" not in state:
                senders.append(udp_sender(port))
                state["restarted"] = t

        got, ended = read_for(src, 10.0, drop)
    finally:
        for s in senders:
            _stop(s)
    arrivals = np.array([a for a, _ in got])
    ts = np.array([t for _, t in got])
    assert (arrivals < state["killed"]).sum() > 5, said
    assert (arrivals > state["restarted"]).sum() > 5, ("no frames after the sender came back", said)
    assert np.all(np.diff(ts) > 0)
    assert src.counters["reconnects"] >= 1 and any("lost" in s for s in said), (src.counters, said)
    assert ended == ["stopped"]


class _PacedAudio:
    """A microphone stand-in: silence in 40 ms blocks paced on the real clock (stream 'cam')."""

    name = "cam"
    kinds = ("audio",)

    def __init__(self, seconds):
        self.seconds = seconds
        self._stop = threading.Event()

    def open(self):
        pass

    def close(self):
        self._stop.set()

    def read(self):
        from avparse.stream.types import AudioChunk, EndOfStream

        t0 = time.monotonic()
        n = 0
        while n * 0.04 < self.seconds and not self._stop.is_set():
            due = t0 + (n + 1) * 0.04
            time.sleep(max(0.0, due - time.monotonic()))
            yield AudioChunk("cam", n * 0.04, np.zeros(640, np.float32), 16000, wall_time=time.monotonic())
            n += 1
        yield EndOfStream("cam", n * 0.04, "stopped" if self._stop.is_set() else "end-of-stream")


@needs_ffmpeg
@pytest.mark.slow
def test_runtime_goes_on_through_a_camera_stall(tiny_model):
    """Camera (real UDP capture) + microphone stand-in in one stream: while the camera is frozen
    for 3 s the runtime keeps making snippets on the audio clock (with repeated frames, counted);
    afterwards the camera's frames are used again."""
    from avparse.stream.clock import RealClock
    from avparse.stream.pipeline import EventLog, Runtime, pipeline_config
    from avparse.stream.sources import CameraSource

    loaded, ext = tiny_model
    port = udp_port()
    sender = udp_sender(port)
    clock = RealClock()
    cam = CameraSource(f"udp://127.0.0.1:{port}", name="cam", clock=clock, retries=3, open_timeout=5,
                       read_timeout=6, notify=lambda s: None)
    rt = Runtime(pipeline_config(profile=loaded.profile, max_batch=4), loaded, ext, [cam, _PacedAudio(9.0)],
                 clock=clock)
    log = EventLog()
    rt.add_sink(log)
    snapshots = []

    def audio_chunks():
        return rt.stats()["streams"].get("cam", {}).get("audio_chunks", 0)

    def wait_audio(n, limit=30.0):
        # Phases are measured in media time (40 ms audio chunks), not wall time: on a loaded
        # machine the audio stand-in itself falls behind the wall clock.
        end = time.monotonic() + limit
        while audio_chunks() < n and time.monotonic() < end:
            time.sleep(0.05)

    def driver():
        wait_audio(62)  # 2.5 s of audio
        snapshots.append(dict(rt.stats()["streams"]["cam"]))
        sender.send_signal(signal.SIGSTOP)
        wait_audio(snapshots[0]["audio_chunks"] + 75)  # a 3 s stall of the camera
        snapshots.append(dict(rt.stats()["streams"]["cam"]))
        sender.send_signal(signal.SIGCONT)

    th = threading.Thread(target=driver, daemon=True)
    try:
        th.start()
        st = rt.run()
    finally:
        _stop(sender)
        th.join(5)
    s = st["streams"]["cam"]
    during = snapshots[1]["snippets"] - snapshots[0]["snippets"]
    assert during >= 2, f"snippets went on during the stall: {snapshots}"
    assert snapshots[1]["missing_frames"] + snapshots[1]["video_timeouts"] > \
        snapshots[0]["missing_frames"] + snapshots[0]["video_timeouts"], snapshots
    assert s["frames"] > snapshots[1]["frames"] + 10, "camera frames came again after the stall"
    assert s["snippets"] >= 7 and not [f for f in st["faults"] if "failed" in f], st["faults"]


# --------------------------------------------------------------------------------- subscribers
def _onset(label, t, stream="cam1"):
    return Event("onset", stream, label, "audio", t, 0.9, t + 1)


def _offset(label, t, on, stream="cam1"):
    return Event("offset", stream, label, "audio", t, 0.2, t + 1, reason="ended", onset_time=on)


@pytest.mark.slow
def test_slow_subscriber_costs_the_publisher_nothing_and_sees_a_gap():
    """One subscriber that stops reading, one that keeps up, 30000 events: emit time per event
    and the publisher's memory stay flat; the fast one gets every event with no gap; the slow
    one, when it reads again, reports the gap and resynchronises through the snapshot."""
    cfg = PublisherConfig(pub=f"tcp://127.0.0.1:{free_port()}", snapshot=f"tcp://127.0.0.1:{free_port()}")
    p = Publisher(cfg).open()  # SNDHWM 10000: the slow one overflows it, the fast one never comes near
    fast_seqs, done = [], threading.Event()
    slow = None
    try:
        slow = Subscriber(cfg.pub, snapshot=cfg.snapshot, rcvhwm=100).open()

        def fast_reader():
            with Subscriber(cfg.pub, snapshot=cfg.snapshot) as sub:
                ready.set()
                while not done.is_set() or sub._sub.poll(300):
                    item = sub.recv(0.2)
                    if item is not None:
                        fast_seqs.append(item if isinstance(item, (Gap, Restart)) else item.seq)

        ready = threading.Event()
        th = threading.Thread(target=fast_reader, daemon=True)
        th.start()
        assert ready.wait(10)
        time.sleep(0.3)
        per_block, mem = [], [rss_mb()]
        n, block = 30000, 1000
        for b in range(n // block):
            t = time.perf_counter()
            for i in range(b * block, (b + 1) * block, 2):
                p.emit(_onset(f"c{i % 50}", float(i)))
                p.emit(_offset(f"c{i % 50}", float(i + 1), float(i)))
            per_block.append((time.perf_counter() - t) / block)
            mem.append(rss_mb())
            time.sleep(0.1)  # the fast reader (a Python thread) keeps up
        time.sleep(1.0)
        done.set()
        th.join(20)
        gaps = [x for x in fast_seqs if not isinstance(x, int)]
        assert not gaps, gaps
        assert len(fast_seqs) == n, len(fast_seqs)
        # flat: the last blocks cost about what the first did; memory bounded by the HWMs
        assert np.median(per_block[-5:]) < 3 * np.median(per_block[:5]) + 20e-6, per_block
        assert max(mem) - mem[1] < 60, mem
        # the slow subscriber reads again: a gap, then the snapshot's state (nothing open)
        items = []
        while (item := slow.recv(0.5)) is not None and len(items) < 2 * n:
            items.append(item)
        assert any(isinstance(x, Gap) for x in items), "the slow subscriber must see its loss"
        assert slow.counters["snapshots"] >= 2 and slow.open_events == []
    finally:
        done.set()
        if slow is not None:
            slow.close()
        p.close()


def test_subscriber_that_disconnects_and_reconnects_resynchronises_through_the_snapshot():
    cfg = PublisherConfig(pub=f"tcp://127.0.0.1:{free_port()}", snapshot=f"tcp://127.0.0.1:{free_port()}",
                          heartbeat_interval=0.2)
    p = Publisher(cfg).open()
    try:
        p.emit(_onset("Dog", 1.0))
        sub = Subscriber(cfg.pub, snapshot=cfg.snapshot).open()
        first = []
        while (item := sub.recv(0.5)) is not None:
            first.append(item)
        assert [m.event.label for m in first if m.from_snapshot] == ["Dog"]
        sub.close()  # gone: meanwhile Dog ends, Cat and Bird start, Bird ends
        p.emit(_offset("Dog", 2.0, 1.0))
        p.emit(_onset("Cat", 2.5))
        p.emit(_onset("Bird", 3.0))
        p.emit(_offset("Bird", 4.0, 3.0))
        sub = Subscriber(cfg.pub, snapshot=cfg.snapshot).open()
        p.emit(_offset("Cat", 5.0, 2.5))
        p.emit(_onset("Fox", 6.0))
        got = []
        while (item := sub.recv(0.5)) is not None:
            got.append(item)
        sub.close()
    finally:
        p.close()
    assert not [x for x in got if isinstance(x, (Gap, Restart))], got
    snap = [m.event.label for m in got if m.from_snapshot]
    live = [(m.type, m.event.label) for m in got if not m.from_snapshot]
    assert snap == ["Cat"], "exactly the events open at reconnection come from the snapshot"
    assert live == [("offset", "Cat"), ("onset", "Fox")], "then live, nothing twice, nothing missed"


# --------------------------------------------------------------------- runtime killed, restarted
@pytest.fixture(scope="module")
def synth_ckpt(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from avparse.core.checkpoint import save_checkpoint
    from avparse.core.han import HANConfig, build_han
    from avparse.core.profiles import LITE
    from avparse.train.synth import SYNTH_CLASSES

    torch.manual_seed(0)
    cfg = HANConfig(audio_dim=LITE.audio_dim, v2d_dim=LITE.v2d_dim, v3d_dim=LITE.v3d_dim,
                    frames_per_snippet=LITE.frames_per_snippet, d_model=16, dim_feedforward=16,
                    num_classes=len(SYNTH_CLASSES))
    path = tmp_path_factory.mktemp("killckpt") / "tiny.pt"
    save_checkpoint(path, build_han(cfg).eval(), classes=SYNTH_CLASSES, profile=LITE)
    return path


@pytest.mark.slow
def test_runtime_killed_and_restarted(synth_ckpt, tmp_path):
    """SIGKILL mid-run: every line of the event log is whole and decodes, and holds every event a
    subscriber received; the restarted runtime (same publisher name, same log) is seen by the
    subscriber as a Restart with a new session, and its events follow in the same log."""
    pub, snap, log = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", tmp_path / "ev.jsonl"
    cmd = [sys.executable, "-m", "avparse.tools.cli", "run", "--scene", "3", "--scene-duration", "120",
           "--model", str(synth_ckpt), "--on", "0.3", "--pub", pub, "--snapshot", snap, "--log", str(log),
           "--publisher-name", "door-runtime"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    got, restarts, stop = [], [], threading.Event()

    def reader():
        with Subscriber(pub, snapshot=snap, handshake_timeout=0.5) as sub:
            while not stop.is_set():
                item = sub.recv(0.2)
                if isinstance(item, Restart):
                    restarts.append(item)
                elif item is not None and not isinstance(item, Gap):
                    got.append(item)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run2 = None
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end and len([m for m in got if not m.from_snapshot]) < 4:
            assert run.poll() is None, run.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert len(got) >= 4, "no events within 90 s"
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        killed_at = len(got)
        lines = log.read_bytes().split(b"\n")
        assert lines[-1] == b"", "the log ends with a whole line"
        bodies = [wire.decode_body(x) for x in lines[:-1]]
        first_session = {b["session"] for b in bodies}
        assert len(first_session) == 1
        logged = {b["seq"] for b in bodies}
        received = {m.seq for m in got if not m.from_snapshot}
        assert received <= logged, "every event a subscriber saw is in the log"
        assert [b["seq"] for b in bodies] == sorted(logged)
        # restart: same name, same log
        run2 = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 90
        while time.monotonic() < end and not (restarts and len(got) > killed_at + 2):
            assert run2.poll() is None, run2.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        run2.send_signal(signal.SIGINT)
        assert run2.wait(30) == 0
    finally:
        stop.set()
        for r in (run, run2):
            if r is not None and r.poll() is None:
                r.kill()
        th.join(5)
    assert restarts and restarts[0].publisher == "door-runtime"
    assert restarts[0].old_session in first_session and restarts[0].new_session not in first_session
    bodies = [wire.decode_body(x) for x in log.read_bytes().splitlines()]
    sessions = [b["session"] for b in bodies]
    s1, s2 = next(iter(first_session)), restarts[0].new_session
    k = sessions.count(s1)
    assert k and sessions == [s1] * k + [s2] * (len(sessions) - k), "the old session's lines, then the new one's"
    second = [b for b in bodies if b["session"] == restarts[0].new_session]
    assert second and second[-1]["type"] == "offset", "SIGINT closed the new session's events"
    assert {m.seq for m in got if m.session == restarts[0].new_session and not m.from_snapshot} <= \
        {b["seq"] for b in second}


# ------------------------------------------------------------------------- microphone disappears
@pytest.fixture
def own_pulse(tmp_path):
    """A private PulseAudio server with a null sink that this test may kill (the stream suite's
    server is shared by the session)."""
    import shutil

    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.skip("pulseaudio/pactl are not installed")
    sock = tmp_path / "native"
    conf = tmp_path / "pa.conf"
    conf.write_text(f"load-module module-native-protocol-unix auth-anonymous=1 socket={sock}\n"
                    "load-module module-null-sink sink_name=avkill rate=48000 channels=2\n"
                    "set-default-sink avkill\nset-default-source avkill.monitor\n")
    (tmp_path / "runtime").mkdir()
    env = dict(os.environ, PULSE_RUNTIME_PATH=str(tmp_path / "runtime"), XDG_RUNTIME_DIR=str(tmp_path / "runtime"),
               HOME=str(tmp_path), PULSE_STATE_PATH=str(tmp_path / "state"))
    proc = subprocess.Popen(["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "-F", str(conf),
                             "--use-pid-file=no", "--disable-shm=yes"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    server = f"unix:{sock}"
    end = time.monotonic() + 15
    while time.monotonic() < end and proc.poll() is None:
        if subprocess.run(["pactl", "info"], env=dict(env, PULSE_SERVER=server), capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.skip("pulseaudio did not start")
    old = os.environ.get("PULSE_SERVER")
    os.environ["PULSE_SERVER"] = server
    from avparse.stream.source_mic import refresh_devices

    refresh_devices()
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if old is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = old
        refresh_devices()


def test_microphone_that_disappears_closes_its_stream_as_a_reported_fault(own_pulse, tiny_model):
    """The sound server dies under a recording microphone (the device is gone): the source ends
    with an error within seconds, the runtime closes the stream ("source-lost"), reports the
    fault, and returns instead of waiting forever."""
    from avparse.stream.clock import RealClock
    from avparse.stream.pipeline import EventLog, Runtime, pipeline_config
    from avparse.stream.sources import MicrophoneSource

    loaded, ext = tiny_model
    clock = RealClock()
    mic = MicrophoneSource("pulse", name="room", sample_rate=16000, block_seconds=0.02, clock=clock)
    rt = Runtime(pipeline_config(profile=loaded.profile, max_batch=2), loaded, ext, [mic], clock=clock)
    log = EventLog()
    rt.add_sink(log)
    killer = threading.Timer(2.0, own_pulse.kill)
    killer.start()
    watchdog = threading.Timer(30.0, rt.stop, args=("stopped",))
    watchdog.start()
    t0 = time.monotonic()
    try:
        st = rt.run()
    finally:
        killer.cancel()
        watchdog.cancel()
    assert time.monotonic() - t0 < 15, "the runtime noticed the lost device"
    assert any("room" in f and "stopped delivering" in f for f in st["faults"]), st["faults"]
    assert {e.reason for e in log.events if e.kind == "offset"} <= {"source-lost", "ended"}
