"""`avparse extract` on real media files written by FFmpeg (lite profile, random weights)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from avparse.core.profiles import LITE
from avparse.train.extract import ExtractConfig, run_extract, snippet_windows

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def _ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    # H.264 + AAC stereo 44.1 kHz, 25 fps, 3.2 s
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=3.2", "-f", "lavfi",
            "-i", "sine=frequency=440:sample_rate=44100:duration=3.2", "-ac", "2", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", d / "good.mp4")
    # another container and codecs: Matroska, MPEG-4 part 2 video at 15 fps, mono 22.05 kHz PCM, 2.5 s
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x80:rate=15:duration=2.5", "-f", "lavfi",
            "-i", "sine=frequency=300:sample_rate=22050:duration=2.5", "-c:v", "mpeg4", "-c:a", "pcm_s16le",
            "-shortest", d / "other.mkv")
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=2", "-c:v", "libx264", "-an", d / "silent.mp4")
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.5", "-f", "lavfi",
            "-i", "sine=sample_rate=16000:duration=0.5", "-c:v", "libx264", "-c:a", "aac", "-shortest", d / "short.mp4")
    data = (d / "good.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 3])
    (d / "notes.mp4").write_text("this is not a video\n")
    return d


def test_snippet_windows_snippet_and_file_framing():
    t, starts = snippet_windows(160000 + 5, 81, LITE, "snippet")
    assert t == 10 and starts[1] == 16000
    t, starts = snippet_windows(160000, 81, LITE, "file")
    assert t == 10 and starts[1] == 96 * 160 and starts[-1] + 16000 <= 160000
    assert snippet_windows(16000 * 5, 30, LITE, "snippet")[0] == 3  # video-limited


def test_extract_layout_failures_by_name_and_resume(media, tmp_path):
    out = tmp_path / "feats"
    files = [media / n for n in ("good.mp4", "other.mkv", "silent.mp4", "short.mp4", "cut.mp4", "notes.mp4")]
    cfg = ExtractConfig(out_dir=str(out), profile="lite", weights="random", batch_snippets=2)
    seen = []
    rep = run_extract(files, cfg, on_file=lambda i, n, r: seen.append((i, n, r.id)))
    by = {r.id: r for r in rep.results}
    assert [s[2] for s in seen] == [f.stem for f in files] and seen[-1][:2] == (5, 6)
    assert by["good"].status == "done" and by["good"].snippets == 3
    assert by["other"].status == "done" and by["other"].snippets == 2
    assert "no audio track" in by["silent"].error
    assert "shorter than one snippet" in by["short"].error
    assert by["cut"].status == "failed" and by["cut"].error
    assert by["notes"].status == "failed" and "media" in by["notes"].error.lower()
    a = np.load(out / "vggish" / "good.npy")
    v2 = np.load(out / "res152" / "good.npy")
    v3 = np.load(out / "r2plus1d_18" / "good.npy")
    assert a.shape == (3, LITE.audio_dim) and v2.shape == (24, LITE.v2d_dim) and v3.shape == (3, LITE.v3d_dim)
    assert a.dtype == v2.dtype == v3.dtype == np.float32 and np.isfinite(v2).all()
    assert (out / "snippets.tsv").read_text() == "good\t3\nother\t2\n"
    prof = json.loads((out / "profile.json").read_text())
    assert prof["profile"]["name"] == "lite" and prof["profile"]["v2d_dim"] == LITE.v2d_dim
    assert not list(out.rglob("*.tmp*"))
    # resume: finished files are skipped; a file whose arrays are incomplete is redone
    (out / "r2plus1d_18" / "other.npy").unlink()
    rep2 = run_extract(files[:2], cfg)
    assert [r.status for r in rep2.results] == ["skipped", "done"]
    np.testing.assert_array_equal(np.load(out / "vggish" / "good.npy"), a)
    # another profile into the same folder is refused
    from avparse.train.extract import ExtractError

    with pytest.raises(ExtractError, match="another profile"):
        run_extract(files[:1], ExtractConfig(out_dir=str(out), profile="lite", weights="random", audio_framing="file"))


def test_cli_reports_failures_by_name_and_exits_nonzero(media, tmp_path, capsys):
    from avparse.tools.extract import main

    out = tmp_path / "f"
    rc = main([str(media / "other.mkv"), str(media / "silent.mp4"), "-o", str(out), "--profile", "lite",
               "--weights", "random", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "silent.mp4: no audio track" in cap.err and "Traceback" not in cap.err
    assert "1 extracted (2 snippets)" in cap.out
    assert (out / "vggish" / "other.npy").is_file()
    rc = main([str(media / "other.mkv"), "-o", str(out), "--profile", "lite", "--weights", "random", "--quiet"])
    assert rc == 0 and "1 already done" in capsys.readouterr().out


def test_cli_missing_weights_is_one_line(media, tmp_path, capsys, monkeypatch):
    from avparse.tools.extract import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    rc = main([str(media / "good.mp4"), "-o", str(tmp_path / "f"), "--profile", "paper"])
    err = capsys.readouterr().err
    assert rc == 2 and "vggish-10086976.pth" in err and len(err.strip().splitlines()) == 1


def test_llp_clip_gives_ten_snippets(llp_clip, tmp_path):
    rep = run_extract([llp_clip], ExtractConfig(out_dir=str(tmp_path), profile="lite", weights="random"))
    assert rep.results[0].status == "done" and rep.results[0].snippets == 10
    assert np.load(tmp_path / "res152" / "BjCEufrlXm4.npy").shape == (80, LITE.v2d_dim)
