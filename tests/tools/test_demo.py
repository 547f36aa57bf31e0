"""`avparse demo`: the window under Xvfb (screenshot checked for the timeline and its
colours, `q` ends it), the headless recording (frames, duration, audio in sync with
the scene, overlay, events file equal to what a ZeroMQ subscriber received), Ctrl-C,
and the pieces: chained scenes, the overlay's state, the recorder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avparse.core.events import Event
from avparse.core.media import iter_frames, probe, read_audio
from avparse.tools.demo_app.drawing import COLORS, Overlay
from avparse.tools.demo_app.state import OverlayConfig, OverlayState, with_audiovisual
from avparse.tools.demo_app.recorder import Recorder, RecorderConfig
from avparse.stream import wire
from avparse.stream.types import AudioChunk, VideoFrame
from avparse.tools import demo
from avparse.tools.demo_app.scenes import ChainedScene

REPO = Path(__file__).resolve().parents[2]
ALWAYS_ON = "siren"     # the test model is sure of this class in both modalities all the time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("avparse: error:"), err
    return err[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A lite-profile checkpoint on the synth classes: random lite extractors, a small HAN whose
    classifier is sure of ALWAYS_ON, sure of the absence of most classes, unsure of two."""
    from avparse.core.checkpoint import save_checkpoint
    from avparse.core.extractors import build_extractor
    from avparse.core.han import HANConfig, build_han
    from avparse.core.profiles import get_profile
    from avparse.train.synth import SYNTH_CLASSES

    p = get_profile("lite")
    torch.manual_seed(0)
    han = build_han(HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim, num_classes=len(SYNTH_CLASSES),
                              frames_per_snippet=p.frames_per_snippet, d_model=16, dim_feedforward=16, dropout=0.0))
    with torch.no_grad():
        han.fc_prob.weight.mul_(0.1)
        han.fc_prob.bias.fill_(-6.0)
        han.fc_prob.bias[SYNTH_CLASSES.index(ALWAYS_ON)] = 6.0
        han.fc_prob.bias[SYNTH_CLASSES.index("drum")] = 0.0
        han.fc_prob.bias[SYNTH_CLASSES.index("bell")] = 0.0
    ext = build_extractor(p, weights="random")
    path = tmp_path_factory.mktemp("ckpt") / "demo_test.pt"
    save_checkpoint(path, han, classes=SYNTH_CLASSES, profile=p,
                    extractor_state={k: v.detach().cpu() for k, v in ext.state_dict().items()})
    return path


def near(pixel, color, tol=40) -> bool:
    return int(np.abs(np.asarray(pixel, int) - np.asarray(color, int)).max()) <= tol


def region_has(img, box, color, tol=40, min_pixels=6) -> bool:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    r = img[y0:y1, x0:x1].astype(int)
    return int((np.abs(r - np.asarray(color, int)).max(axis=2) <= tol).sum()) >= min_pixels


def check_timeline(img, classes, *, w=1280, h=720, always_on=ALWAYS_ON):
    """The picture shows the timeline: background, the always-on class in its three lane
    colours next to 'now', the legend swatches, class labels, and an empty row elsewhere."""
    ov = Overlay(OverlayConfig(width=w, height=h), classes=classes)
    assert near(img[4, w // 2], COLORS["bg"]), "header background"
    assert near(img[int(ov.tl[1]) + 4, int(ov.tl[0]) + 40], COLORS["panel"]), "timeline panel"
    x = ov.plot_x1 - 30
    for mod in ("audio", "visual", "audiovisual"):
        y0, y1 = ov.lane_box(always_on, mod)
        assert region_has(img, (x - 10, y0, x + 10, y1), COLORS[mod]), f"{always_on} {mod} span near 'now'"
    empty = next(c for c in classes if c not in (always_on, "drum", "bell"))
    for mod in ("audio", "visual", "audiovisual"):
        y0, y1 = ov.lane_box(empty, mod)
        assert not region_has(img, (ov.plot_x0 + 5, y0 + 2, ov.plot_x1 - 5, y1 - 2), COLORS[mod], tol=25,
                              min_pixels=40), f"no {mod} span for {empty}"
    legend = (ov.plot_x0, ov.tl[1] + 4, ov.tl[2], ov.tl[1] + ov.tl_legend_h)
    for mod in ("audio", "visual", "audiovisual"):
        assert region_has(img, legend, COLORS[mod], min_pixels=30), f"legend swatch {mod}"
    for i in range(len(classes)):   # a class label: text-coloured pixels in its row's label column
        y = ov.rows_y0 + i * ov.row_h
        assert region_has(img, (ov.tl[0] + 8, y + 2, ov.plot_x0 - 20, y + ov.row_h - 2), COLORS["text"],
                          tol=60, min_pixels=8), f"label of row {i}"
    # the video panel shows a picture (not the panel colour everywhere)
    vx0, vy0, vx1, vy1 = ov.video
    patch = img[vy0 + 20:vy1 - 20, (vx0 + vx1) // 2 - 60:(vx0 + vx1) // 2 + 60].astype(int)
    assert patch.std() > 15, "video panel is blank"


# ---------------------------------------------------------------------------- pieces
def test_chained_scene_is_its_segments_end_to_end():
    sc = ChainedScene(3, segment=2, segments=5)
    seg0, seg1 = sc.segment(0), sc.segment(1)
    sr, fps = sc.sample_rate, sc.fps
    across = sc.render_audio(2 * sr - 100, 300)  # crosses the first boundary
    assert np.array_equal(across[:100], seg0.render_audio(2 * sr - 100, 100))
    assert np.array_equal(across[100:], seg1.render_audio(0, 200))
    assert np.array_equal(sc.render_frame(2 * fps + 5), seg1.render_frame(5))
    assert not np.array_equal(sc.render_frame(5), sc.render_frame(2 * fps + 5))
    truth = sc.truth_between(2.5, 3.5)
    assert truth and all(2 <= e.onset and e.offset <= 4 for e in truth)
    assert {(e.label, e.onset - 2) for e in truth} == {(e.label, e.onset) for e in seg1.ground_truth()}
    assert np.all(sc.render_audio(int(sc.duration * sr), 10) == 0)  # past the end: silence


def test_overlay_state_shows_what_was_known_then():
    st = OverlayState(OverlayConfig(), classes=("a", "b"))
    for i in range(100):   # 4 s of a 440 Hz tone at -9 dBFS
        t = i * 0.04
        x = (0.5 * np.sin(2 * np.pi * 440 * (np.arange(640) / 16000 + t))).astype(np.float32)
        st.audio(AudioChunk("s", t, x, 16000, wall_time=50 + t))
        if i == 30:   # known at media time 1.24
            st.emit(Event("onset", "s", "a", "audio", 0.0, 0.9, decided_at=1.0))
        if i == 80:   # known at 3.24
            st.emit(Event("offset", "s", "a", "audio", 2.0, 0.2, decided_at=3.0, reason="ended", onset_time=0.0))
    st.frame(VideoFrame("s", 1.0, np.zeros((8, 8, 3), np.uint8)))
    st.frame(VideoFrame("s", 2.0, np.ones((8, 8, 3), np.uint8)))
    early, mid, late = st.view(1.0, as_of=1.0, frame_at=True), st.view(2.5, as_of=2.5, frame_at=True), st.view(4.0)
    assert early.spans == [] and early.frame.max() == 0
    assert [(s.label, s.offset) for s in mid.spans] == [("a", None)] and mid.frame.max() == 1
    assert [(s.label, s.onset, s.offset) for s in late.spans] == [("a", 0.0, 2.0)]
    assert (early.events, mid.events, late.events) == (0, 1, 2)
    assert -11 < late.level_db < -7 and late.peak_db >= late.level_db


def test_audiovisual_truth_is_the_overlap():
    from avparse.core.scene import TrueEvent

    out = with_audiovisual([TrueEvent("x", "audio", 1, 5), TrueEvent("x", "visual", 3, 8), TrueEvent("y", "visual", 0, 2)])
    assert ("x", "audiovisual", 3.0, 5.0) in out and not any(m == "audiovisual" and l == "y" for l, m, _, _ in out)


def test_recorder_places_audio_by_media_time(tmp_path):
    out, ev = tmp_path / "r.mp4", tmp_path / "r.jsonl"
    rec = Recorder(RecorderConfig(path=str(out), width=64, height=48, fps=10, events_path=str(ev))).open()
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(8000) / 16000)).astype(np.float32)
    rec.write_audio(0.0, tone)              # 0.0-0.5 s
    rec.write_audio(1.0, tone)              # 1.0-1.5 s (0.5 s gap: silence)
    rec.write_audio(1.25, tone[:4000])      # overlaps what is there: dropped
    for k in range(20):
        rec.write_frame(np.full((48, 64, 3), k * 10, np.uint8))
    rec.pad_audio(rec.video_seconds)
    e = Event("onset", "s", "bell", "visual", 1.0, 0.7, decided_at=2.0)
    rec.emit(e)
    assert not out.exists()                 # written as .part until complete
    rec.close()
    info = probe(out)
    assert info.has_audio and info.has_video and abs(info.duration - 2.0) < 0.1
    a = read_audio(out, 16000)
    rms = [float(np.sqrt(np.mean(a[i * 1600:(i + 1) * 1600] ** 2))) for i in range(20)]
    assert min(rms[1:4]) > 0.2 and max(rms[6:9]) < 0.02 and min(rms[11:14]) > 0.2 and max(rms[16:19]) < 0.02
    assert [Event.from_dict(json.loads(x)) for x in ev.read_text().splitlines()] == [e]


def test_missing_bundled_model_is_one_line(capsys, monkeypatch, tmp_path):
    import dataclasses

    from avparse.core import registry

    monkeypatch.setitem(registry.MODELS, "demo", dataclasses.replace(registry.DEMO, bundled="no-such-model.pt"))
    rc = demo.main(["--headless", "--out", str(tmp_path / "x.mp4"), "--no-publish"])
    line = one_line_error(capsys, rc)
    assert "bundled demo model" in line and "avparse bundle" in line and "--model" in line


@pytest.mark.parametrize("argv, needle", [
    (["--size", "100x50"], "--size"),
    (["--model", "/nonexistent/m.pt"], "m.pt"),
    (["--scene", "1", "--camera", "0"], "--scene"),
    (["--out", "video.avi"], ".mp4"),
])
def test_bad_arguments_are_one_line(capsys, argv, needle, tmp_path):
    rc = demo.main(["--headless", "--no-publish"] + argv)
    assert needle in one_line_error(capsys, rc)


def test_busy_port_is_one_line(capsys, checkpoint, tmp_path):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUB)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    try:
        rc = demo.main(["--model", str(checkpoint), "--headless", "--out", str(tmp_path / "x.mp4"),
                        "--pub", f"tcp://127.0.0.1:{port}", "--snapshot", "none"])
        assert "in use" in one_line_error(capsys, rc)
    finally:
        s.close(0)
        ctx.term()
    assert not (tmp_path / "x.mp4").exists()


def test_a_start_that_fails_leaves_no_files(capsys, checkpoint, tmp_path):
    bad = tmp_path / "notmedia.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    rc = demo.main(["--model", str(checkpoint), "--file", str(bad), "--headless", "--out", str(tmp_path / "o.mp4"),
                    "--no-publish"])
    assert "notmedia.mp4" in one_line_error(capsys, rc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notmedia.mp4"]


# ---------------------------------------------------------------------------- headless
@pytest.mark.slow
def test_headless_recording_matches_the_published_events(checkpoint, tmp_path, capsys):
    """4 s of generated scene: 40 frames at 10 fps, sound in sync with the scene, the overlay
    drawn, and the events file equal to the events a ZeroMQ subscriber received."""
    from avparse.stream.client import Subscriber
    from avparse.train.synth import SYNTH_CLASSES

    port = free_port()
    out = tmp_path / "demo.mp4"
    received, done = [], threading.Event()

    def listen():
        with Subscriber(f"tcp://127.0.0.1:{port}", handshake_timeout=0.2) as sub:
            while not done.is_set():
                m = sub.recv(timeout=0.1)
                if m is not None and getattr(m, "event", None) is not None:
                    received.append(m.event)

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    time.sleep(0.3)
    rc = demo.main(["--model", str(checkpoint), "--headless", "--out", str(out), "--duration", "4",
                    "--fps", "10", "--pub", f"tcp://127.0.0.1:{port}", "--snapshot", "none"])
    time.sleep(0.5)
    done.set()
    th.join(5)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    events_path = tmp_path / "demo.events.jsonl"
    logged = [Event.from_dict(wire.decode_body(x.encode())) for x in events_path.read_text().splitlines()]
    assert logged and logged == received
    onsets = {e.key for e in logged if e.kind == "onset"}
    assert {("scene", ALWAYS_ON, m) for m in ("audio", "visual", "audiovisual")} <= onsets
    assert {e.key for e in logged if e.kind == "offset"} == onsets          # every event closed
    assert all(e.reason == "stopped" and e.media_time == 4.0 for e in logged
               if e.kind == "offset" and e.label == ALWAYS_ON)
    printed = [x for x in captured.out.splitlines() if x.startswith("[scene]")]
    assert len(printed) == len(logged)                                       # and printed in the terminal

    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                        "stream=codec_type,nb_read_frames,duration,width,height", "-of", "json", str(out)],
                       capture_output=True, text=True, check=True)
    streams = {s["codec_type"]: s for s in json.loads(r.stdout)["streams"]}
    assert int(streams["video"]["nb_read_frames"]) == 40
    assert (streams["video"]["width"], streams["video"]["height"]) == (1280, 720)
    assert abs(float(streams["video"]["duration"]) - 4.0) < 0.05
    assert "audio" in streams and abs(float(streams["audio"]["duration"]) - 4.0) < 0.1

    # the sound is the scene's, in place
    scene = ChainedScene(0)
    want = scene.render_audio(0, 4 * 16000)
    got = read_audio(out, 16000)[:len(want)]
    c = float(np.corrcoef(want[1600:-1600], got[1600:len(want) - 1600])[0, 1])
    assert c > 0.8, f"recorded sound does not follow the scene (correlation {c:.2f})"

    # the overlay is drawn: the last frame shows the timeline with the always-on class
    frames = [img for _, img in iter_frames(out)]
    assert len(frames) == 40
    check_timeline(frames[-1], SYNTH_CLASSES)


# ---------------------------------------------------------------------------- subprocesses
def _demo_cmd(checkpoint, *extra):
    return [sys.executable, "-m", "avparse.tools.cli", "demo", "--model", str(checkpoint),
            "--pub", f"tcp://127.0.0.1:{free_port()}", "--snapshot", "none", *extra]


def _wait_for(pred, timeout, proc=None, what=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"demo exited ({proc.returncode}) before {what}:\n{err[-2000:]}")
        time.sleep(0.2)
    return False


def test_ctrl_c_ends_a_headless_run_cleanly(checkpoint, tmp_path, capsys):
    """SIGINT (Ctrl-C) once the run is live: open events closed ("stopped"), the video finished, exit 0."""
    out, events = tmp_path / "c.mp4", tmp_path / "c.events.jsonl"
    sent = []

    def interrupt():   # once an onset is logged the model runs and the run is live
        end = time.monotonic() + 90
        while time.monotonic() < end and not (events.exists() and '"onset"' in events.read_text()):
            time.sleep(0.1)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    th = threading.Thread(target=interrupt, daemon=True)
    th.start()
    rc = demo.main(["--model", str(checkpoint), "--headless", "--out", str(out), "--duration", "120",
                    "--size", "640x360", "--no-publish"])
    ended = time.monotonic()
    th.join(5)
    err = capsys.readouterr().err
    assert rc == 0 and sent and ended - sent[0] < 30, err
    logged = [Event.from_dict(json.loads(x)) for x in events.read_text().splitlines()]
    opened = [e for e in logged if e.kind == "onset"]
    closed = [e for e in logged if e.kind == "offset"]
    assert opened and {e.key for e in closed} == {e.key for e in opened}
    assert all(e.reason == "stopped" for e in closed if e.label == ALWAYS_ON)
    info = probe(out)      # finished, playable, with its sound
    assert info.has_video and info.has_audio and 0.5 < info.duration < 60
    assert not (tmp_path / "c.mp4.part").exists()


@pytest.mark.parametrize("target", ["process", "group"])
def test_ctrl_c_in_a_terminal_leaves_a_playable_video(checkpoint, tmp_path, target):
    """The headless demo as a terminal runs it: its own process group (the terminal's foreground
    group), SIGINT once the run is live, either to avparse alone or to the whole group as Ctrl-C
    sends it (the ffmpeg encoder included, which then died before the file was finished: exit 2
    and no video). Either way: exit 0, a complete mp4 that decodes to its end, every event closed."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    out, events = tmp_path / "t.mp4", tmp_path / "t.events.jsonl"
    proc = subprocess.Popen(_demo_cmd(checkpoint, "--headless", "--out", str(out), "--size", "640x360", "--quiet"),
                            cwd=tmp_path, env=dict(os.environ, DISPLAY=""), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: events.exists() and '"onset"' in events.read_text(), 120, proc, "an onset"), \
            "no onset within 120 s"
        time.sleep(1.0)   # a second more of recording
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0 and "Traceback" not in err and "error" not in err, err
    assert f"wrote {out} (" in err
    assert not (tmp_path / "t.mp4.part").exists()
    info = probe(out)
    assert info.has_video and info.has_audio and info.duration > 1.0
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"], capture_output=True,
                             text=True, timeout=60)
    assert decoded.returncode == 0 and not decoded.stderr.strip(), decoded.stderr
    logged = [Event.from_dict(json.loads(x)) for x in events.read_text().splitlines()]
    opened = {e.key for e in logged if e.kind == "onset"}
    assert opened and {e.key for e in logged if e.kind == "offset"} == opened


@pytest.fixture
def xvfb(tmp_path):
    """A private X server (Xvfb on a display number it chooses itself)."""
    if shutil.which("Xvfb") is None or shutil.which("xwininfo") is None:
        pytest.skip("Xvfb/xwininfo are not installed (apt-get install xvfb x11-utils)")
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1400x900x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r) as f:
            display = ":" + f.readline().strip()
        if display == ":":
            pytest.skip("Xvfb did not start")
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _press_q(display) -> bool:
    """Type 'q' into the X server with the XTEST extension (the pointer is over the window)."""
    import ctypes

    try:
        x11, xtst = ctypes.CDLL("libX11.so.6"), ctypes.CDLL("libXtst.so.6")
    except OSError:
        return False
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XFlush.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
    xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
    d = x11.XOpenDisplay(display.encode())
    if not d:
        return False
    try:
        xtst.XTestFakeMotionEvent(d, 0, 640, 360, 0)
        code = x11.XKeysymToKeycode(d, ord("q"))
        xtst.XTestFakeKeyEvent(d, code, 1, 0)
        xtst.XTestFakeKeyEvent(d, code, 0, 0)
        x11.XFlush(d)
    finally:
        x11.XCloseDisplay(d)
    return True


@pytest.mark.slow
def test_window_under_xvfb_shows_the_timeline_and_q_quits(checkpoint, tmp_path, xvfb):
    import cv2

    from avparse.train.synth import SYNTH_CLASSES

    env = dict(os.environ, DISPLAY=xvfb, QT_QPA_PLATFORM="xcb")
    proc = subprocess.Popen(_demo_cmd(checkpoint, "--duration", "60"), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shot = tmp_path / "shot.png"
    try:
        def window():
            r = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True, text=True)
            return '"avparse demo"' in r.stdout and "1280x720+0+0" in r.stdout

        assert _wait_for(window, 90, proc, "its window opened"), "no 1280x720 'avparse demo' window"
        time.sleep(3.0)   # a few seconds of scene: the always-on class is decided
        problem = "no screenshot"
        for _ in range(10):   # a loaded machine may be slow to draw: look again for a while
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "x11grab", "-draw_mouse", "0", "-video_size",
                            "1400x900", "-i", xvfb, "-frames:v", "1", str(shot)], env=env, check=True, timeout=30)
            try:
                check_timeline(cv2.imread(str(shot))[..., ::-1][:720, :1280], SYNTH_CLASSES)
                problem = None
                break
            except AssertionError as e:
                problem = str(e)
                time.sleep(1.5)
        pressed = _press_q(xvfb)
        if not pressed:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert problem is None, f"the window does not show the timeline: {problem}"
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = [x for x in out.splitlines() if x.startswith("[scene]")]
    on = [x for x in lines if " onset " in x]
    off = [x for x in lines if " offset " in x]
    assert any(ALWAYS_ON in x for x in on) and len(off) == len(on)
    assert all("(stopped)" in x for x in off if ALWAYS_ON in x)


# ---------------------------------------------------------------------------- camera + microphone
def _stream_fixtures():
    """The PulseAudio null-sink fixture of the source tests (tests/stream/conftest.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_avparse_stream_fixtures", REPO / "tests" / "stream" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pulse_server = _stream_fixtures().pulse_server


@pytest.mark.slow
def test_camera_and_microphone_are_recorded_with_their_events(checkpoint, tmp_path, pulse_server):
    """`--camera FILE --mic DEVICE`: OpenCV capture and PortAudio (a PulseAudio null sink's
    monitor, playing a tone) on separate clocks, live; the recording has the tone and the picture."""
    cam = tmp_path / "cam.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15", "-t", "20",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(cam)], check=True)
    rate = 44100
    tone = (0.5 * np.sin(2 * np.pi * 700 * np.arange(rate * 60) / rate)).astype("<f4")
    player = subprocess.Popen(["pacat", "--playback", "--device=avtest", f"--rate={rate}", "--channels=1",
                               "--format=float32le", "--raw", "--latency-msec=20"], stdin=subprocess.PIPE,
                              env=pulse_server["env"])

    def feed():
        try:
            player.stdin.write(tone.tobytes())
            player.stdin.close()
        except (BrokenPipeError, ValueError):   # the player is killed at the end
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    out = tmp_path / "live.mp4"
    try:
        r = subprocess.run(_demo_cmd(checkpoint, "--camera", str(cam), "--mic", "pulse", "--headless", "--out", str(out),
                                     "--duration", "3", "--size", "640x360", "--fps", "10"),
                           cwd=tmp_path, env=pulse_server["env"], capture_output=True, text=True, timeout=120)
    finally:
        player.kill()
        player.wait()
        feeder.join(5)
    assert r.returncode == 0, r.stderr
    info = probe(out)
    assert info.has_video and info.has_audio and abs(info.duration - 3.0) < 0.2
    a = read_audio(out, 16000)
    assert float(np.sqrt(np.mean(a[8000:40000] ** 2))) > 0.1      # the microphone's tone
    frames = [img for _, img in iter_frames(out)]
    ov = Overlay(OverlayConfig(width=640, height=360), classes=("x",))
    vx0, vy0, vx1, vy1 = ov.video
    assert frames[-1][vy0 + 10:vy1 - 10, vx0 + 10:vx1 - 10].astype(int).std() > 30   # the camera's test card
    logged = [Event.from_dict(json.loads(x)) for x in (tmp_path / "live.events.jsonl").read_text().splitlines()]
    assert ("camera", ALWAYS_ON, "audiovisual") in {e.key for e in logged if e.kind == "onset"}
