"""The scene generator: files, annotations, determinism, block independence, and
that what the annotations say is audible/visible really is in the samples/pixels."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import numpy as np
import pytest

from avparse.core.scene import TrueEvent
from avparse.train.synth import (
    MANIFEST, MEDIA_DIR, SYNTH_CLASSES, SYNTH_FILES, PlannedEvent, SynthConfig, SynthError, WriteConfig,
    annotation_files, clip_scene, isolated_audio, isolated_frames, make_scene, split_indices, synth_preset, write_clip,
    write_dataset,
)
from avparse.train.synth_audio import AUDIO_SIGNATURES
from avparse.train.synth_video import VISUAL_SIGNATURES

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe not installed")

SMALL = SynthConfig(duration=3, width=64, height=48, fps=12)


def _ffprobe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def _decode_audio(path, sr):
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(sr), "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    info = write_dataset(out, 3, 5, SMALL, write=WriteConfig(val_fraction=1 / 3, test_fraction=1 / 3))
    return out, info


@needs_ffmpeg
def test_clips_are_real_media_read_by_ffmpeg_and_opencv(small_set):
    cv2 = pytest.importorskip("cv2")
    out, info = small_set
    assert len(info.names) == 3
    for name in info.names:
        path = out / MEDIA_DIR / f"{name}.mp4"
        meta = _ffprobe(path)
        streams = {s["codec_type"]: s for s in meta["streams"]}
        v, a = streams["video"], streams["audio"]
        assert v["codec_name"] == "h264" and (v["width"], v["height"]) == (64, 48)
        assert int(v["nb_frames"]) == SMALL.n_frames
        assert a["codec_name"] == "aac" and int(a["sample_rate"]) == 16000 and a["channels"] == 1
        assert abs(float(meta["format"]["duration"]) - 3.0) < 0.05

        scene = clip_scene(5, info.names.index(name), SMALL)
        cap = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f[..., ::-1])
        cap.release()
        assert len(frames) == SMALL.n_frames and frames[0].shape == (48, 64, 3)
        # the file holds the scene's rendered frames (up to H.264 4:2:0 coding loss)
        err = [np.abs(f.astype(int) - scene.render_frame(i)).mean() for i, f in enumerate(frames)]
        assert max(err) < 12
        # and its rendered samples (AAC: correlation, not bit equality)
        x, ref = _decode_audio(path, 16000), scene.render_audio(0, scene.n_samples)
        assert abs(x.size - ref.size) < 1600
        n = min(x.size, ref.size)
        assert np.corrcoef(x[:n], ref[:n])[0, 1] > 0.95


def test_annotations_parse_in_llp_format(small_set):
    llp = pytest.importorskip("avparse.train.llp")
    out, info = small_set
    T = SMALL.duration
    full_ids, full = llp.read_weak(out / SYNTH_FILES["full"], SYNTH_CLASSES)
    assert full_ids == info.names
    dense_a = llp.read_dense(out / SYNTH_FILES["full_audio"], full_ids, SYNTH_CLASSES, num_snippets=T)
    dense_v = llp.read_dense(out / SYNTH_FILES["full_visual"], full_ids, SYNTH_CLASSES, num_snippets=T)
    for i, name in enumerate(full_ids):
        sc = clip_scene(5, i, SMALL)
        assert np.array_equal(dense_a[i], sc.dense("audio")) and np.array_equal(dense_v[i], sc.dense("visual"))
        # weak labels = union of the dense labels of both modalities
        assert np.array_equal(full[i], ((dense_a[i] | dense_v[i]).max(axis=1)))
    seen = []
    for split in ("train", "val", "test"):
        ids, weak = llp.read_weak(out / SYNTH_FILES[split], SYNTH_CLASSES)
        seen += ids
        assert np.array_equal(weak, full[[full_ids.index(i) for i in ids]])
    assert sorted(seen) == sorted(full_ids)
    # eval dense files hold val + test only, like AVVP_eval_*.csv
    evals = set(llp.read_weak(out / SYNTH_FILES["val"], SYNTH_CLASSES)[0]) | \
        set(llp.read_weak(out / SYNTH_FILES["test"], SYNTH_CLASSES)[0])
    for role in ("audio", "visual"):
        rows = (out / SYNTH_FILES[role]).read_text().splitlines()
        assert rows[0] == "filename\tonset\toffset\tevent_labels"
        assert {r.split("\t")[0] for r in rows[1:]} <= evals
    man = json.loads((out / MANIFEST).read_text())
    assert man["classes"] == list(SYNTH_CLASSES) and man["videos"] == 3


@needs_ffmpeg
def test_same_seed_same_files(small_set, tmp_path):
    out, info = small_set
    again = write_dataset(tmp_path, 3, 5, SMALL, write=WriteConfig(val_fraction=1 / 3, test_fraction=1 / 3))
    assert again.names == info.names
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
    for f in sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()):
        assert md5(out / f) == md5(tmp_path / f), f"{f} differs between two runs with the same seed"
    other = [clip_scene(6, i, SMALL) for i in range(3)]
    assert annotation_files(other, split_indices(3, 6)) != annotation_files(
        [clip_scene(5, i, SMALL) for i in range(3)], split_indices(3, 5))


def test_ground_truth_over_a_batch():
    cfg = synth_preset("independent")
    kinds, events_per_scene, lengths = set(), [], []
    both_differ = overlapping = 0
    for i in range(120):
        sc = clip_scene(11, i, cfg)
        gt = sc.ground_truth()
        assert all(isinstance(e, TrueEvent) and e.modality in ("audio", "visual") for e in gt)
        events_per_scene.append(len(sc.events))
        for e in gt:
            assert e.onset == int(e.onset) and e.offset == int(e.offset)  # whole seconds, like LLP
            assert 0 <= e.onset < e.offset <= 10 and 1 <= e.offset - e.onset <= 10
            lengths.append(e.offset - e.onset)
        for e in sc.events:
            kinds.add("both" if e.audio and e.visual else "audio" if e.audio else "visual")
            both_differ += bool(e.audio and e.visual and e.audio != e.visual)
        assert set(sc.weak_labels()) == {e.label for e in gt}
        iv = sorted((e.onset, e.offset) for e in gt)
        overlapping += any(b[0] < a[1] for a, b in zip(iv, iv[1:]))
    assert set(events_per_scene) == {1, 2, 3}
    assert kinds == {"audio", "visual", "both"}
    assert both_differ > 5 and overlapping > 20
    assert min(lengths) == 1 and max(lengths) == 10


def test_llp_layout_has_llp_statistics_and_class_tendencies():
    """The default scenes reproduce LLP's annotation statistics within the documented tolerances
    (measured on the published files: shares 34.9 / 4.6 / 60.6 %, IoU 0.827, 6.16 s, 3.57 events
    and 1.81 classes per clip), and a class's modality depends on the class."""
    from avparse.train.synth_stats import annotation_stats, synth_annotations, within

    st = annotation_stats(*synth_annotations(1500, 3, SynthConfig()))
    llp = {"share_audio_only": 34.9, "share_visual_only": 4.6, "share_both": 60.6, "iou_both": 0.827,
           "mean_interval_s": 6.16, "events_per_video": 3.57, "classes_per_video": 1.81}
    kinds = {"share_audio_only": "shares", "share_visual_only": "shares", "share_both": "shares"}
    for key, ref in llp.items():
        assert within(kinds.get(key, key), ref, st[key]), (key, st[key], ref)
    per = st["per_class"]
    assert per["siren"]["audio"] > 55 and per["horn"]["audio"] > 55      # mostly heard only
    assert per["engine"]["visual"] > 20 and per["siren"]["visual"] == 0  # often seen only / never
    assert max(c["both"] for c in per.values()) > 70
    # the independent preset is far from LLP on the same measures (the stress test)
    ind = annotation_stats(*synth_annotations(600, 3, synth_preset("independent")))
    assert not within("shares", 4.6, ind["share_visual_only"]) and not within("iou_both", 0.827, ind["iou_both"])


def test_llp_layout_intervals_are_well_formed():
    for duration in (10, 4, 25):
        cfg = SynthConfig(duration=duration)
        for i in range(60):
            sc = clip_scene(8, i, cfg)
            per = {}
            for e in sc.ground_truth():
                assert e.onset == int(e.onset) and e.offset == int(e.offset)
                assert 0 <= e.onset < e.offset <= duration
                per.setdefault((e.label, e.modality), []).append((e.onset, e.offset))
            for ivs in per.values():   # same class, same modality: never overlapping or touching
                ivs.sort()
                assert all(b[0] > a[1] for a, b in zip(ivs, ivs[1:]))
            assert set(sc.weak_labels()) == {e.label for e in sc.ground_truth()}


def test_presets():
    assert synth_preset("llp") == SynthConfig()
    ind = synth_preset("independent", duration=4)
    assert ind.layout == "independent" and ind.p_same_interval == 0.4 and ind.duration == 4
    with pytest.raises(SynthError, match="unknown scene preset"):
        synth_preset("nope")
    with pytest.raises(SynthError, match="layout"):
        SynthConfig(layout="nope")
    with pytest.raises(SynthError, match="class_modality"):
        SynthConfig(class_modality=((0.5, 0.6),) * len(SYNTH_CLASSES))


def test_stats_command_prints_both_tables(tmp_path, capsys, llp_dir):
    from avparse.tools import synth as tool

    argv = ["--stats", "--videos", "200", "--json", str(tmp_path / "s.json"), "--llp", str(llp_dir)]
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    assert "audio-only pairs, %" in out and "per class" in out
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["generated"]["videos"] == 200 and data["preset"] == "llp"
    assert data["llp"]["videos"] == 1849 and abs(data["llp"]["share_audio_only"] - 34.9) < 0.1
    assert data["llp"]["rows_marking_nothing"] == 5   # of the six such rows, one names a video of no split
    assert tool.main(["--stats", "--llp", str(tmp_path / "none")]) != 0
    assert "AVVP_val_pd.csv" in capsys.readouterr().err


def test_long_scene_has_more_events_kept_apart():
    sc = make_scene(3, SynthConfig(duration=60))
    assert sc.n_samples == 60 * 16000 and sc.n_frames == 60 * 24
    assert len(sc.events) >= 6
    per = {}
    for e in sc.ground_truth():
        assert 0 <= e.onset < e.offset <= 60
        per.setdefault((e.label, e.modality), []).append((e.onset, e.offset))
    for ivs in per.values():  # same class, same modality: never overlapping or touching
        ivs.sort()
        assert all(b[0] > a[1] for a, b in zip(ivs, ivs[1:]))


def test_rendering_is_block_size_and_order_independent():
    sc = clip_scene(2, 4)
    sr = sc.sample_rate
    whole = sc.render_audio_direct(0, 2 * sr)
    small = np.concatenate([sc.render_audio_direct(s, sr // 100) for s in range(0, 2 * sr, sr // 100)])
    assert np.array_equal(whole, small)
    fresh = clip_scene(2, 4)  # cached tiles, odd block sizes
    sizes = np.random.default_rng(0).integers(1, 3000, 200)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    odd = np.concatenate([fresh.render_audio(int(s), int(n)) for s, n in zip(starts, sizes)])[: 2 * sr]
    assert np.array_equal(whole, odd)
    assert whole.dtype == np.float32 and np.abs(whole).max() <= 1.0 and whole.std() > 0
    # outside the scene: zeros
    assert not sc.render_audio(-100, 100).any() and not sc.render_audio(sc.n_samples, 50).any()
    edge = sc.render_audio(-10, 20)
    assert not edge[:10].any() and np.array_equal(edge[10:], whole[:10])
    frames = [sc.render_frame(i) for i in (30, 5, 30)]
    assert np.array_equal(frames[0], frames[2]) and frames[0].shape == (128, 128, 3) and frames[0].dtype == np.uint8
    assert np.array_equal(clip_scene(2, 4).render_frame(5), frames[1])


def _band_energy(x, sr, band):
    f = np.fft.rfftfreq(sr, 1 / sr)
    m = (f >= band[0]) & (f <= band[1])
    return np.array([np.sum(np.abs(np.fft.rfft(x[s * sr:(s + 1) * sr]))[m] ** 2) for s in range(x.size // sr)])


@pytest.mark.parametrize("label", SYNTH_CLASSES)
def test_annotated_sound_is_audible(label):
    """At the lowest default SNR (0 dB), each second inside the annotated interval holds more
    energy in the class's band than any second outside it."""
    cfg = SynthConfig(duration=6, distractor_rate=0.0, snr_db=(0.0, 0.0))
    sc = make_scene(1, cfg, events=[PlannedEvent(label, (2.0, 4.0), None)])
    e = _band_energy(sc.render_audio(0, sc.n_samples), sc.sample_rate, AUDIO_SIGNATURES[label][0])
    assert e[2:4].min() > 2.0 * np.r_[e[:2], e[4:]].max()


@pytest.mark.parametrize("label", SYNTH_CLASSES)
def test_annotated_sprite_is_visible(label):
    """The class sprite is drawn in every frame of its interval, in its colour, and in no other."""
    cfg = SynthConfig(duration=4, fps=8)
    with_ev = make_scene(4, cfg, events=[PlannedEvent(label, None, (1.0, 3.0))])
    without = make_scene(4, cfg, events=[])
    colour = np.asarray(VISUAL_SIGNATURES[label][1], float)
    for i in range(cfg.n_frames):
        a = with_ev.render_frame(i).astype(int)
        d = np.abs(a - without.render_frame(i)).max(axis=-1) > 30
        if 8 <= i < 24:
            assert d.sum() >= 60, f"frame {i}: sprite hardly visible ({d.sum()} px)"
            c = np.median(a[d], axis=0)
            assert c @ colour / (np.linalg.norm(c) * np.linalg.norm(colour)) > 0.95
        else:
            assert not d.any()


def test_isolated_snippets():
    cfg = SynthConfig()
    a = isolated_audio("whistle", 3, cfg)
    assert a.shape == (16000,) and a.dtype == np.float32
    assert np.array_equal(a, isolated_audio("whistle", 3, cfg))
    none = isolated_audio(None, 3, cfg)
    band = AUDIO_SIGNATURES["whistle"][0]
    assert _band_energy(a, 16000, band)[0] > 3 * _band_energy(none, 16000, band)[0]
    f = isolated_frames("drum", 3, cfg)
    assert f.shape == (8, 128, 128, 3) and f.dtype == np.uint8
    assert np.array_equal(f, isolated_frames("drum", 3, cfg))
    assert (np.abs(f.astype(int) - isolated_frames(None, 3, cfg)).max(axis=-1) > 30).sum() > 8 * 60
    assert not np.array_equal(f, isolated_frames("drum", 4, cfg))
    with pytest.raises(SynthError, match="unknown synth class"):
        isolated_audio("trumpet", 0, cfg)


def test_bad_config_is_a_clear_error():
    with pytest.raises(SynthError, match="width and height"):
        SynthConfig(width=15)
    with pytest.raises(SynthError, match="min_events"):
        SynthConfig(min_events=0)
    with pytest.raises(SynthError, match="videos"):
        write_dataset("/nonexistent-never", 0, 1)


@needs_ffmpeg
def test_cli_writes_a_set_and_fails_in_one_line(tmp_path, capsys):
    from avparse.tools import synth as tool

    rc = tool.main(["--out", str(tmp_path / "s"), "--videos", "2", "--seed", "3", "--duration", "2",
                    "--size", "32x32", "--fps", "8", "--quiet", "--snr-db", "3,9", "--clutter", "1"])
    assert rc == 0
    assert len(list((tmp_path / "s" / MEDIA_DIR).glob("*.mp4"))) == 2
    cfg = json.loads((tmp_path / "s" / MANIFEST).read_text())["config"]
    assert cfg["snr_db"] == [3.0, 9.0] and cfg["clutter"] == 1 and cfg["width"] == 32
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    for argv in (["--out", str(tmp_path / "file"), "--videos", "1"],
                 ["--out", str(tmp_path / "t"), "--videos", "0"],
                 ["--out", str(tmp_path / "t"), "--videos", "1", "--size", "17"]):
        assert tool.main(argv) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("avparse: error:"), err


def test_write_clip_without_ffmpeg_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SynthError, match="ffmpeg is not installed"):
        write_clip(make_scene(0, SMALL), tmp_path / "x.mp4")
