"""Fixtures of the reliability suite: small generated media files (good, odd and broken), a tiny
lite-profile checkpoint with its random lite extractors bundled, and checks that an event list is
not garbage.

Everything is generated here (FFmpeg, torch) in a few seconds; nothing is downloaded.
"""

from __future__ import annotations

import math
import shutil
import socket
import struct
import subprocess

import numpy as np
import pytest

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def float_wav(path, x: np.ndarray, rate: int) -> None:
    """A mono IEEE-float WAV written byte by byte (NaN and inf samples survive, unlike most writers)."""
    raw = np.asarray(x, "<f4").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(raw)) + b"WAVEfmt " + fmt
                     + b"data" + struct.pack("<I", len(raw)) + raw)


@pytest.fixture(scope="session")
def media_files(tmp_path_factory):
    """name -> path of small generated files, each about 2 s."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    d = tmp_path_factory.mktemp("relmedia")
    f = {}
    f["av"] = d / "av.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=25", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=44100", "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-ac", "2", "-c:a", "aac", str(f["av"]))
    f["video_only"] = d / "video_only.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "2", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(f["video_only"]))
    f["audio_only"] = d / "audio_only.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-t", "2", "-c:a", "aac", str(f["audio_only"]))
    f["8k_mono"] = d / "8k_mono.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=8000", "-t", "2", "-ac", "1", str(f["8k_mono"]))
    f["96k_8ch"] = d / "96k_8ch.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=96000", "-t", "2", "-af",
           "pan=7.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0|c6=c0|c7=c0", "-c:a", "pcm_s24le", str(f["96k_8ch"]))
    f["4k"] = d / "4k.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=3840x2160:rate=8", "-f", "lavfi", "-i", "sine=sample_rate=16000",
           "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(f["4k"]))
    # variable frame rate: 10 fps for 1 s, then one frame every 0.3 s
    f["vfr"] = d / "vfr.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-f", "lavfi", "-i", "sine=sample_rate=16000",
           "-t", "2", "-vf", "setpts='if(lt(N,10),N*0.1,1+(N-10)*0.3)/TB'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", str(f["vfr"]))
    data = f["av"].read_bytes()
    f["truncated"] = d / "truncated.mp4"          # plain mp4: moov at the end, cut away
    f["truncated"].write_bytes(data[: len(data) // 2])
    f["corrupt"] = d / "corrupt.mp4"              # header intact, media data damaged
    b = bytearray(data)
    rng = np.random.default_rng(0)
    for i in rng.integers(len(b) // 4, len(b) * 3 // 4, 200):
        b[i] = int(rng.integers(0, 256))
    f["corrupt"].write_bytes(bytes(b))
    f["empty"] = d / "empty.mp4"
    f["empty"].write_bytes(b"")
    f["text"] = d / "notes.mp4"
    f["text"].write_text("these are my notes, not a video\n")
    # float audio with NaN and inf samples, and the same with zeros in their place (at the lite
    # profile's 16 kHz: a resampler would smear NaN over its filter length)
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * 2) / 16000)).astype(np.float32)
    clean = x.copy()
    x[3000:4000] = np.nan
    x[20000:20500] = np.inf
    clean[3000:4000] = 0.0
    clean[20000:20500] = 0.0
    f["nan"], f["nan_zeroed"] = d / "nan.wav", d / "nan_zeroed.wav"
    float_wav(f["nan"], x, 16000)
    float_wav(f["nan_zeroed"], clean, 16000)
    return f


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A lite-profile checkpoint: a small random HAN over the LLP classes with random lite
    extractors bundled (its events are arbitrary but deterministic)."""
    torch = pytest.importorskip("torch")
    from avparse.core.checkpoint import save_checkpoint
    from avparse.core.extractors import build_extractor
    from avparse.core.han import HANConfig, build_han
    from avparse.core.labels import LLP_CLASSES
    from avparse.core.profiles import get_profile

    p = get_profile("lite")
    torch.manual_seed(0)
    han = build_han(HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim,
                              frames_per_snippet=p.frames_per_snippet, d_model=16, dim_feedforward=16,
                              dropout=0.0))
    ext = build_extractor(p, weights="random")
    path = tmp_path_factory.mktemp("relckpt") / "tiny.pt"
    save_checkpoint(path, han, classes=LLP_CLASSES, profile=p,
                    extractor_state={k: v.detach().cpu() for k, v in ext.state_dict().items()})
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    """(LoadedModel, extractor) of tiny_ckpt, built once."""
    from avparse.core.checkpoint import load_model
    from avparse.core.extractors import build_extractor

    loaded = load_model(tiny_ckpt)
    return loaded, build_extractor(loaded.profile, weights=loaded.extractor_state)


def assert_sane_events(events, *, duration: float, classes) -> None:
    """Not garbage: every event encodes on the wire (finite times, score in [0, 1], known class),
    lies within the media, and onsets and offsets pair up."""
    from avparse.stream import wire

    head = dict(publisher="test", session="0" * 32, seq=1, tseq=1, wall_time=0.0)
    open_ = {}
    for e in events:
        wire.encode_event(e, **head)   # raises WireError for what a decoder would reject
        assert e.label in classes, e
        for t in (e.media_time, e.decided_at):
            assert math.isfinite(t) and -1e-6 <= t <= duration + 1.0 + 1e-6, e
        if e.kind == "onset":
            assert e.key not in open_, f"two onsets without an offset: {e}"
            open_[e.key] = e
        else:
            on = open_.pop(e.key)
            assert e.onset_time == on.media_time and e.media_time >= on.media_time, (on, e)
    assert not open_, f"onsets never closed: {list(open_)}"
