"""The FFmpeg decoder on the real LLP clip and on files that FFmpeg generates here."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from avparse.core import media
from avparse.core.media import MediaError

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """Small generated files: A/V, video only, audio only, late audio, VFR, broken."""
    d = tmp_path_factory.mktemp("media")
    f = {}
    f["av"] = d / "av.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=25", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=44100", "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-ac", "2", "-c:a", "aac", "-movflags", "+faststart", str(f["av"]))
    f["video_only"] = d / "video_only.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "1", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(f["video_only"]))
    f["audio_only"] = d / "audio_only.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-t", "1", str(f["audio_only"]))
    # audio starts 0.5 s after the video: media time must keep the offset
    f["late_audio"] = d / "late_audio.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-itsoffset", "0.5", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=16000:duration=1", "-t", "1.5", "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", str(f["late_audio"]))
    # variable frame rate: 10 fps for 1 s, then one frame every 0.3 s
    f["vfr"] = d / "vfr.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "2", "-vf",
           "setpts='if(lt(N,10),N*0.1,1+(N-10)*0.3)/TB'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(f["vfr"]))
    f["garbage"] = d / "garbage.mp4"
    f["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    f["empty"] = d / "empty.mp4"
    f["empty"].write_bytes(b"")
    # cut the faststart file short: header intact, media data missing
    data = f["av"].read_bytes()
    f["truncated"] = d / "truncated.mp4"
    f["truncated"].write_bytes(data[: len(data) // 2])
    # cut a plain mp4 (moov at the end) short: no header at all
    f["no_moov"] = d / "no_moov.mp4"
    plain = d / "plain.mp4"
    ffmpeg("-i", str(f["av"]), "-c", "copy", str(plain))
    f["no_moov"].write_bytes(plain.read_bytes()[: len(data) // 2])
    return f


def test_probe_llp_clip(llp_clip):
    info = media.probe(llp_clip)
    assert info.has_audio and info.has_video
    assert (info.width, info.height) == (320, 240)
    assert info.sample_rate == 44100 and info.channels == 2
    assert info.fps == pytest.approx(29.92, abs=0.01)
    assert info.duration == pytest.approx(10.0, abs=0.1)


def test_read_audio_llp_clip(llp_clip):
    x = media.read_audio(llp_clip, 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) / 16000 == pytest.approx(10.0, abs=0.05)
    assert np.abs(x).max() > 0.01  # not silence


def test_iter_frames_llp_clip_real_pts(llp_clip):
    out = list(media.iter_frames(llp_clip))
    pts = np.array([t for t, _ in out])
    assert 298 <= len(out) <= 301
    assert out[0][1].shape == (240, 320, 3) and out[0][1].dtype == np.uint8
    assert np.all(np.diff(pts) > 0)
    assert np.median(np.diff(pts)) == pytest.approx(12 / 359, abs=1e-4)  # r_frame_rate 359/12
    # the same timestamps as ffprobe reports, frame for frame
    ref = ffprobe_pts(llp_clip)
    np.testing.assert_allclose(pts, ref[: len(pts)], atol=1e-3)


def test_iter_frames_resampled_and_scaled(llp_clip):
    out = list(media.iter_frames(llp_clip, fps=8, size=(112, 96)))
    assert len(out) == pytest.approx(80, abs=1)
    assert all(img.shape == (96, 112, 3) for _, img in out)
    np.testing.assert_allclose([t for t, _ in out], np.arange(len(out)) / 8, atol=1e-6)


def ffprobe_pts(path) -> np.ndarray:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=pts_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return np.array([float(s.strip(",")) for s in out.split()])


def test_variable_frame_rate_keeps_real_pts(gen):
    pts = np.array([t for t, _ in media.iter_frames(gen["vfr"])])
    np.testing.assert_allclose(pts[:11], np.arange(11) * 0.1, atol=2e-3)   # 10 fps part
    gaps = np.diff(pts[10:])
    assert len(gaps) >= 2 and np.all(gaps > 0.15)                           # the slow part stays slow
    np.testing.assert_allclose(pts, ffprobe_pts(gen["vfr"]), atol=1e-3)


def test_generated_av_audio_is_the_tone_and_downmixed(gen):
    info = media.probe(gen["av"])
    assert info.channels == 2 and info.sample_rate == 44100
    x = media.read_audio(gen["av"], 16000)
    assert len(x) / 16000 == pytest.approx(2.0, abs=0.05)
    assert dominant_hz(x[4000:20000], 16000) == pytest.approx(440, abs=2)


def test_late_audio_is_padded_to_media_time(gen):
    x = media.read_audio(gen["late_audio"], 16000)
    assert np.abs(x[: int(0.45 * 16000)]).max() < 1e-3      # silence before the audio starts
    assert np.abs(x[int(0.55 * 16000): int(1.0 * 16000)]).max() > 0.1


def test_iter_av_merges_in_time_order(gen):
    items = list(media.iter_av(gen["av"], sample_rate=16000, block=320, size=(32, 32)))
    audio = [(t, x) for k, t, x in items if k == "audio"]
    video = [(t, x) for k, t, x in items if k == "video"]
    assert len(video) == 50
    assert sum(len(x) for _, x in audio) / 16000 == pytest.approx(2.0, abs=0.05)
    for seq in (audio, video):
        ts = [t for t, _ in seq]
        assert ts == sorted(ts)
    # capture order: an audio block as soon as its last sample is in, a frame at its pts
    done = [t + len(x) / 16000 if k == "audio" else t for k, t, x in items]
    assert done == sorted(done)


def test_iter_audio_blocks_are_contiguous(gen):
    blocks = list(media.iter_audio(gen["audio_only"], 16000, 1000))
    for (t0, x0), (t1, _) in zip(blocks, blocks[1:]):
        assert t1 == pytest.approx(t0 + len(x0) / 16000)
    assert all(len(x) == 1000 for _, x in blocks[:-1])


@pytest.mark.parametrize("name,call,needle", [
    ("video_only", "audio", "no audio track"),
    ("audio_only", "video", "no video track"),
    ("garbage", "probe", "not a media file"),
    ("empty", "probe", "empty file"),
    ("no_moov", "probe", "truncated or corrupt"),
    ("truncated", "audio", "truncated or corrupt"),
    ("truncated", "video", "truncated or corrupt"),
])
def test_errors_are_clear(gen, name, call, needle):
    fn = {"probe": media.probe,
          "audio": lambda p: media.read_audio(p, 16000),
          "video": lambda p: list(media.iter_frames(p))}[call]
    with pytest.raises(MediaError) as e:
        fn(gen[name])
    msg = str(e.value)
    assert needle in msg and str(gen[name]) in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        media.probe(tmp_path / "nope.mp4")


def test_truncated_decodes_what_is_there_when_not_strict(gen):
    frames = list(media.iter_frames(gen["truncated"], strict=False))
    assert 0 < len(frames) < 50
