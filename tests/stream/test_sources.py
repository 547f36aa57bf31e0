"""Sources with real parts: FFmpeg files, OpenCV on a file and on a loopback
stream that FFmpeg serves, PortAudio recording a PulseAudio null sink."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from avparse.core.media import MediaError
from avparse.core.scene import TrueEvent
from avparse.stream.clock import RealClock, VirtualClock
from avparse.stream.sources import (
    CameraError,
    CameraSource,
    FileSource,
    MicrophoneError,
    MicrophoneSource,
    SceneSource,
)
from avparse.stream.types import AudioChunk, EndOfStream, VideoFrame

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def split(items):
    audio = [c for c in items if isinstance(c, AudioChunk)]
    video = [c for c in items if isinstance(c, VideoFrame)]
    assert isinstance(items[-1], EndOfStream)
    assert not any(isinstance(c, EndOfStream) for c in items[:-1])
    return audio, video


def assert_contiguous(audio):
    for a, b in zip(audio, audio[1:]):
        assert b.t == pytest.approx(a.end, abs=1e-6)


def dominant_hz(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


# ----------------------------------------------------------------- FileSource
@needs_ffmpeg
def test_file_source_llp_clip_fast(llp_clip):
    src = FileSource(llp_clip, sample_rate=16000, paced=False, clock=VirtualClock(), block_seconds=0.05)
    src.open()
    items = list(src.read())
    audio, video = split(items)
    assert sum(len(a.samples) for a in audio) / 16000 == pytest.approx(10.0, abs=0.05)
    assert all(a.sample_rate == 16000 and a.samples.dtype == np.float32 for a in audio)
    assert_contiguous(audio)
    assert 298 <= len(video) <= 301
    vt = [f.t for f in video]
    assert np.all(np.diff(vt) > 0) and vt[0] == pytest.approx(0.0, abs=1e-3)
    assert video[0].image.shape == (240, 320, 3)
    # capture order: each audio block after the frames that precede its end
    done = [c.end if isinstance(c, AudioChunk) else c.t for c in items[:-1]]
    assert done == sorted(done)
    assert items[-1].reason == "end-of-stream" and items[-1].t == pytest.approx(10.0, abs=0.05)


@needs_ffmpeg
def _ffmpeg_children() -> list:
    import os

    me = str(os.getpid())
    out = subprocess.run(["ps", "-o", "pid=,ppid=,comm=", "-e"], capture_output=True, text=True).stdout.split("\n")
    return [x for x in out if x.split()[1:2] == [me] and "ffmpeg" in x]


def test_read_ahead_gives_the_same_chunks_bounded_and_stops_its_decoders(llp_clip, tmp_path):
    """ReadAhead(FileSource) on the real clip: the same chunks in the same order as FileSource read
    directly; opening and decoding run before read() is called (start), the buffer stays within its
    bound (one chunk over at most), close() mid-way ends FFmpeg, and a file FFmpeg cannot read is
    reported by open() as without the read-ahead."""
    from avparse.stream.sources import ReadAhead

    direct = list(FileSource(llp_clip, sample_rate=16000).read())
    ahead = ReadAhead(FileSource(llp_clip, sample_rate=16000), max_bytes=2_000_000)
    ahead.start()  # probes and decodes in its thread; returns at once
    ahead.open()   # waits for the opening; again (iter_source opens its source): nothing new
    ahead.open()
    deadline = time.monotonic() + 20
    while ahead._bytes < 1_500_000 and time.monotonic() < deadline:  # decoded before anyone reads
        time.sleep(0.02)
    assert 1_500_000 <= ahead._bytes <= 2_000_000 + 320 * 240 * 3
    assert ahead.kinds == frozenset({"audio", "video"}) and ahead.info.duration > 9
    got = list(ahead.read())
    assert len(got) == len(direct) and isinstance(got[-1], EndOfStream) and got[-1] == direct[-1]
    for a, b in zip(got[:-1], direct[:-1]):
        assert type(a) is type(b) and a.t == b.t
        assert np.array_equal(a.samples if isinstance(a, AudioChunk) else a.image,
                              b.samples if isinstance(b, AudioChunk) else b.image)
    ahead.close()
    # stopped mid-way: the decoders end, read() ends
    part = ReadAhead(FileSource(llp_clip, sample_rate=16000), max_bytes=1_000_000)
    part.open()
    it = part.read()
    next(it)
    assert _ffmpeg_children()
    part.close()
    assert len(list(it)) < len(direct) and not part._thread.is_alive()  # read() ends, the thread too
    for _ in range(50):
        if not _ffmpeg_children():
            break
        time.sleep(0.1)
    assert _ffmpeg_children() == []
    bad = tmp_path / "not-media.mp4"
    bad.write_bytes(b"\x00" * 4096)
    broken = ReadAhead(FileSource(bad, sample_rate=16000))
    broken.start()
    with pytest.raises(MediaError, match="not-media.mp4"):
        broken.open()
    with pytest.raises(MediaError):
        list(broken.read())


def test_file_source_paced_on_injected_clock(llp_clip):
    clock = VirtualClock(100.0)
    src = FileSource(llp_clip, sample_rate=16000, paced=True, clock=clock, block_seconds=0.04)
    audio, video = split(list(src.read()))
    assert clock.now() - 100.0 == pytest.approx(10.0, abs=0.05)     # slept ~10 s of virtual time
    for f in video:                                                  # each frame released at its time
        assert f.wall_time - 100.0 == pytest.approx(f.t, abs=1e-6)
    for a in audio:                                                  # stamped at its first sample
        assert a.wall_time - 100.0 == pytest.approx(a.t, abs=1e-6)


@needs_ffmpeg
def test_file_source_paced_real_time_and_stop(tmp_path):
    p = tmp_path / "two_seconds.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-f", "lavfi", "-i", "sine=frequency=300",
           "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(p))
    src = FileSource(p, sample_rate=16000, paced=True, clock=RealClock())
    items, t0, timer = [], None, None
    for c in src.read():
        t0 = t0 or time.monotonic()
        items.append(c)
        if isinstance(c, VideoFrame) and c.t >= 0.5 and timer is None:
            timer = threading.Timer(0.05, src.close)   # stop from another thread
            timer.start()
    elapsed = time.monotonic() - t0
    assert 0.4 < elapsed < 1.5                            # paced in real time, stopped early
    assert items[-1].reason == "stopped"
    assert max(c.t for c in items[:-1]) < 1.0


@needs_ffmpeg
def test_file_source_video_only_and_bad_file(tmp_path):
    v = tmp_path / "video_only.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(v))
    audio, video = split(list(FileSource(v, sample_rate=16000, clock=VirtualClock()).read()))
    assert not audio and len(video) == 10
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError, match="not a media file"):
        FileSource(bad, sample_rate=16000).open()


# ---------------------------------------------------------------- SceneSource
class ToneScene:
    """A tiny Scene: a 440 Hz tone at 22.05 kHz and frames whose pixels hold the frame index."""

    sample_rate = 22050
    fps = 12.5
    duration = 2.0
    width, height = 32, 24
    classes = ("Tone",)

    def render_audio(self, start, count):
        i = np.arange(start, start + count)
        x = 0.5 * np.sin(2 * np.pi * 440 * i / self.sample_rate)
        x[i >= int(self.duration * self.sample_rate)] = 0.0
        return x.astype(np.float32)

    def render_frame(self, index):
        return np.full((self.height, self.width, 3), index % 256, np.uint8)

    def ground_truth(self):
        return [TrueEvent("Tone", "audio", 0.0, 2.0)]


@pytest.mark.parametrize("paced", [False, True])
def test_scene_source_resampled_and_in_time(paced):
    clock = VirtualClock()
    src = SceneSource(ToneScene(), block_seconds=0.05, paced=paced, clock=clock, sample_rate=16000)
    src.open()
    audio, video = split(list(src.read()))
    x = np.concatenate([a.samples for a in audio])
    assert len(x) == 32000 and all(a.sample_rate == 16000 for a in audio)
    assert_contiguous(audio)
    assert dominant_hz(x[2000:30000], 16000) == pytest.approx(440, abs=1)
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    assert np.abs(x[800:-800] - ref[800:-800]).max() < 2e-3   # on the scene's time line, no seams
    assert [f.t for f in video] == pytest.approx([j / 12.5 for j in range(25)])
    assert [int(f.image[0, 0, 0]) for f in video] == list(range(25))
    if paced:
        assert clock.now() == pytest.approx(2.0, abs=1e-6)
    else:
        assert clock.now() == 0.0


def test_scene_source_rejects_a_non_scene():
    with pytest.raises(Exception, match="not a core.scene.Scene"):
        SceneSource(type("S", (), {"sample_rate": 16000, "fps": 8, "duration": 1.0})(), sample_rate=16000).open()


# ---------------------------------------------------------------- CameraSource
@needs_ffmpeg
def test_camera_on_a_file_uses_pos_msec(tmp_path, llp_clip):
    src = CameraSource(str(llp_clip), clock=VirtualClock())
    src.open()
    _, video = split(list(src.read()))
    assert 298 <= len(video) <= 301
    t = np.array([f.t for f in video])
    assert np.all(np.diff(t) > 0)
    assert np.median(np.diff(t)) == pytest.approx(12 / 359, abs=1e-3)
    assert src.counters["clock_stamped"] <= 1
    # RGB, not OpenCV's BGR
    red = tmp_path / "red.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=64x48:rate=5", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(red))
    _, frames = split(list(CameraSource(red, clock=VirtualClock()).read()))
    r, g, b = frames[0].image[24, 32].astype(int)
    assert r > 200 and g < 60 and b < 60


@needs_ffmpeg
@pytest.mark.parametrize("proto", ["udp", "http"])
def test_camera_on_a_loopback_stream(serve_stream, proto):
    served = serve_stream(proto, seconds=8, fps=15)
    src = CameraSource(served.url, clock=RealClock(), retries=6, backoff=0.2, open_timeout=5, read_timeout=3)
    src.open()
    frames = []
    for c in src.read():
        frames.append(c)
        if len(frames) == 30:
            src.close()
    assert frames[-1].reason == "stopped"
    video = [f for f in frames if isinstance(f, VideoFrame)]
    assert len(video) == 30 and video[0].image.shape == (120, 160, 3)
    dt = np.diff([f.t for f in video])
    assert np.all(dt > 0)
    assert np.median(dt) == pytest.approx(1 / 15, abs=0.01)     # the stream's timestamps, 15 fps


def test_camera_index_that_does_not_exist_lists_devices():
    with pytest.raises(CameraError, match=r"camera 97 does not open; video devices here: "):
        CameraSource(97).open()


def test_camera_missing_file(tmp_path):
    with pytest.raises(CameraError, match="no such file"):
        CameraSource(tmp_path / "nope.mp4").open()


def test_camera_url_that_does_not_answer_retries_with_backoff():
    from tests.stream.conftest import free_port  # noqa: E402 (helper of the fixtures)

    port = free_port()   # nothing listens there: connection refused
    said = []
    clock = VirtualClock()
    src = CameraSource(f"http://127.0.0.1:{port}/live.ts", clock=clock, retries=3, backoff=0.5,
                       open_timeout=1, notify=said.append)
    with pytest.raises(CameraError, match="did not answer after 3 tries"):
        src.open()
    assert len(said) == 2 and "retrying in 0.5 s" in said[0] and "retrying in 1.0 s" in said[1]
    assert clock.now() == pytest.approx(1.5)   # the back-off was slept on the injected clock


def test_camera_udp_url_without_a_sender_times_out_and_retries():
    from tests.stream.conftest import free_port  # noqa: E402

    said = []
    src = CameraSource(f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}", clock=VirtualClock(), retries=2,
                       backoff=0.1, open_timeout=0.5, notify=said.append)
    t0 = time.monotonic()
    with pytest.raises(CameraError, match="did not answer after 2 tries"):
        src.open()
    assert time.monotonic() - t0 < 6          # OpenCV's open timeout bounded each try
    assert len(said) == 1 and "no answer (attempt 1/2)" in said[0]


@needs_ffmpeg
def test_camera_stream_that_ends_reconnects_then_reports(serve_stream):
    served = serve_stream("http", seconds=1.5, fps=15)
    said = []
    src = CameraSource(served.url, clock=RealClock(), retries=2, backoff=0.05, open_timeout=1,
                       read_timeout=1, notify=said.append)
    src.open()
    items = list(src.read())
    assert isinstance(items[-1], EndOfStream) and items[-1].reason == "source-lost"
    assert "did not come back" in items[-1].error
    assert any("stream lost" in s for s in said) and any("retrying" in s for s in said)
    assert len(items) > 5 and src.counters["read_failures"] == 1


# ------------------------------------------------------------ MicrophoneSource
def play_tone(env, freq, seconds, rate=44100, amp=0.5):
    sig = (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype("<f4")
    p = subprocess.Popen(["pacat", "--playback", "--device=avtest", f"--rate={rate}", "--channels=1",
                          "--format=float32le", "--raw", "--latency-msec=20"], stdin=subprocess.PIPE, env=env)

    def feed():
        try:
            p.stdin.write(sig.tobytes())
            p.stdin.close()
        except BrokenPipeError:
            pass

    threading.Thread(target=feed, daemon=True).start()
    return p


@pytest.mark.parametrize("native_rate,channels,freq", [(48000, 2, 1000.0), (22050, 1, 700.0)])
def test_microphone_records_the_tone_through_portaudio(pulse_server, native_rate, channels, freq):
    mic = MicrophoneSource("pulse", sample_rate=16000, native_rate=native_rate, channels=channels,
                           block_seconds=0.02, clock=RealClock())
    mic.open()
    player = play_tone(pulse_server["env"], freq, 2.0)
    chunks = []
    try:
        for c in mic.read():
            chunks.append(c)
            if isinstance(c, AudioChunk) and c.end >= 1.5:
                mic.close()
    finally:
        player.kill()
        player.wait()
    assert chunks[-1].reason == "stopped"
    audio = [c for c in chunks if isinstance(c, AudioChunk)]
    assert all(a.sample_rate == 16000 for a in audio)
    assert mic.counters["gaps"] == 0 and mic.counters["dropped"] == 0
    assert_contiguous(audio)                                  # the sample-count time line
    assert audio[0].t == 0.0
    x = np.concatenate([a.samples for a in audio])
    tail = x[-8000:]                                          # the last 0.5 s: the tone is playing
    assert np.sqrt(np.mean(tail ** 2)) > 0.1
    assert dominant_hz(tail, 16000) == pytest.approx(freq, abs=4)
    walls = np.array([a.wall_time for a in audio])
    assert np.all(np.diff(walls) > -0.05)                     # capture times on the runtime clock


def test_microphone_that_does_not_exist_lists_inputs(pulse_server):
    with pytest.raises(MicrophoneError, match=r"microphone 'no such mic' not found; input devices here: .*'pulse'"):
        MicrophoneSource("no such mic", sample_rate=16000).open()
    with pytest.raises(MicrophoneError, match=r"microphone 999 does not exist"):
        MicrophoneSource(999, sample_rate=16000).open()


def test_microphone_reader_that_falls_behind_leaves_an_exact_counted_gap(pulse_server):
    mic = MicrophoneSource("pulse", sample_rate=16000, native_rate=48000, channels=1, block_seconds=0.02,
                           queue_blocks=4, clock=RealClock())
    mic.open()
    got = []
    stall_at = None
    for c in mic.read():
        got.append(c)
        if stall_at is None and isinstance(c, AudioChunk):
            stall_at = c.end
            time.sleep(0.6)                          # the reader stalls: PortAudio keeps capturing
        if isinstance(c, AudioChunk) and c.end > stall_at + 1.0:
            mic.close()
    audio = [c for c in got if isinstance(c, AudioChunk)]
    assert mic.counters["dropped"] > 0 and mic.counters["gaps"] >= 1
    jumps = [(a, b) for a, b in zip(audio, audio[1:]) if b.t - a.end > 1e-6]
    assert jumps, "the dropped blocks must show as a gap in media time"
    lost = sum(b.t - a.end for a, b in jumps)
    # the gap is exactly as long as the audio dropped (whole 20 ms blocks)
    assert lost == pytest.approx(mic.counters["dropped"] * 0.02, abs=0.005)
    assert all(b.t >= a.t for a, b in zip(audio, audio[1:]))


@needs_ffmpeg
def test_camera_on_a_file_paced_on_the_clock(llp_clip):
    clock = VirtualClock(50.0)
    src = CameraSource(llp_clip, clock=clock, paced=True)
    _, video = split(list(src.read()))
    assert clock.now() - 50.0 == pytest.approx(video[-1].t, abs=1e-3)
    for f in video:
        assert f.wall_time - 50.0 == pytest.approx(f.t, abs=1e-3)


def test_sources_pace_on_the_runtime_clock_and_expose_kinds():
    scene = ToneScene()
    scene.duration = 0.3
    src = SceneSource(scene, paced=True, clock=RealClock(), sample_rate=16000)   # the runtime's own clock
    assert src.kinds == {"audio", "video"}
    t0 = time.monotonic()
    audio, video = split(list(src.read()))
    assert 0.25 < time.monotonic() - t0 < 1.5          # paced with real sleeps
    assert sum(len(a.samples) for a in audio) == 4800 and len(video) == 4
    assert CameraSource(0).kinds == {"video"}
    assert MicrophoneSource(None, sample_rate=16000).kinds == {"audio"}
