"""LLP-layout and packed feature stores: same data either way, every bad input a clear error."""

import json
import shutil

import numpy as np
import pytest

from avparse.core.profiles import LITE, PAPER
from avparse.train.dataset import DataConfig, FeatureError, LayoutSplit, PackedSplit, open_split
from avparse.train.featgen import PlantedSpec, write_planted_layout
from avparse.train.llp import LLP_FILES, LLPFormatError
from avparse.train.pack import pack_split

CLASSES = ("alpha", "beta", "gamma")


@pytest.fixture()
def layout(tmp_path):
    d = write_planted_layout(tmp_path / "llp", PlantedSpec(CLASSES, LITE), n_train=12, n_val=6, n_test=4, seed=3)
    return d


def _cfg(d, **kw):
    return DataConfig(str(d), profile=LITE, classes=CLASSES, **kw)


def test_layout_reads_the_llp_naming_and_shapes(layout):
    s = open_split(_cfg(layout), "val")
    assert isinstance(s, LayoutSplit) and len(s) == 6
    vid = s.ids[0]
    assert len(vid.split("_")[0]) == 11 and vid.endswith("_0_10")
    # files are named by the YouTube id, as the paper's dataloader (row[0][:11])
    assert s.feature_file("v2d", 0).endswith(f"res152/{vid[:11]}.npy")
    a, v2, v3 = s.batch([0, 2])
    assert a.shape == (2, 10, LITE.audio_dim) and a.dtype == np.float32
    assert v2.shape == (2, 10 * LITE.frames_per_snippet, LITE.v2d_dim)
    assert v3.shape == (2, 10, LITE.v3d_dim)
    assert np.array_equal(a[1], np.load(layout / "vggish" / f"{s.ids[2][:11]}.npy"))
    assert s.has_dense and s.gt_audio.shape == (6, 3, 10)
    # weak labels are the union of the dense audio and visual truth (how the generator plants them)
    assert np.array_equal(s.labels, (s.gt_audio.max(2) | s.gt_visual.max(2)))
    assert not open_split(_cfg(layout), "train").has_dense


def test_pack_gives_the_same_arrays_memory_mapped(layout, tmp_path):
    out = tmp_path / "store"
    for split in ("train", "val", "test"):
        idx_path = pack_split(_cfg(layout), split, out)
        assert idx_path == out / f"{split}.json" and (out / f"{split}.bin").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.{e}" for s in ("train", "val", "test")
                                                           for e in ("bin", "json"))
    for split in ("train", "val"):
        lay = open_split(_cfg(layout), split)
        packed = open_split(DataConfig(str(out)), split)
        assert isinstance(packed, PackedSplit)
        assert all(isinstance(packed.arrays[m], np.memmap) for m in ("audio", "v2d", "v3d"))
        assert packed.ids == lay.ids and packed.classes == CLASSES and packed.profile == LITE
        assert np.array_equal(packed.labels, lay.labels)
        idx = np.arange(len(lay))[::-1].copy()
        for x, y in zip(packed.batch(idx), lay.batch(idx)):
            assert np.array_equal(x, y)
        for x, y in zip(packed.batch(np.arange(2, 5)), lay.batch(np.arange(2, 5))):  # contiguous slice path
            assert np.array_equal(x, y)
        if split == "val":
            assert np.array_equal(packed.gt_audio, lay.gt_audio) and np.array_equal(packed.gt_visual, lay.gt_visual)
    meta = json.loads((out / "train.json").read_text())
    assert meta["format"] == "avparse-packed-features" and meta["profile"]["name"] == "lite"
    PackedSplit(out / "val.json", verify=True)


def test_missing_feature_file_names_file_and_video(layout, tmp_path):
    s = open_split(_cfg(layout), "train")
    vid = s.ids[4]
    (layout / "r2plus1d_18" / f"{vid[:11]}.npy").unlink()
    for call in (lambda: open_split(_cfg(layout), "train"), lambda: pack_split(_cfg(layout), "train", tmp_path / "o")):
        with pytest.raises(FeatureError) as e:
            call()
        assert vid in str(e.value) and "r2plus1d_18" in str(e.value) and "no v3d features" in str(e.value)
    assert not (tmp_path / "o" / "train.json").exists() and not (tmp_path / "o" / "train.bin").exists()


def test_wrong_shape_names_file_and_video(layout, tmp_path):
    s = open_split(_cfg(layout), "val")
    vid = s.ids[1]
    np.save(layout / "vggish" / f"{vid[:11]}.npy", np.zeros((10, 7), np.float32))
    with pytest.raises(FeatureError) as e:
        open_split(_cfg(layout), "val").batch([0, 1])
    assert vid in str(e.value) and "[10, 7]" in str(e.value) and "vggish" in str(e.value)
    with pytest.raises(FeatureError, match=vid):
        pack_split(_cfg(layout), "val", tmp_path / "o")
    # the paper profile expects other sizes than these lite features: a clear error, not garbage
    with pytest.raises(FeatureError, match="expected \\[10, 128\\]|expected \\[80, 2048\\]|expected \\[10, 512\\]"):
        open_split(DataConfig(str(layout), profile=PAPER, classes=CLASSES), "train").batch([0])


def test_nan_names_file_and_video(layout, tmp_path):
    s = open_split(_cfg(layout), "train")
    vid = s.ids[7]
    p = layout / "res152" / f"{vid[:11]}.npy"
    a = np.load(p)
    a[3, 5] = np.nan
    np.save(p, a)
    with pytest.raises(FeatureError) as e:
        s.batch([6, 7])
    assert vid in str(e.value) and "NaN" in str(e.value) and str(p) in str(e.value)
    with pytest.raises(FeatureError, match=vid):
        pack_split(_cfg(layout), "train", tmp_path / "o")


def test_nan_in_a_packed_store_is_found_at_load_time(layout, tmp_path):
    out = tmp_path / "store"
    pack_split(_cfg(layout), "val", out)
    meta = json.loads((out / "val.json").read_text())
    spec = meta["arrays"]["v3d"]
    arr = np.memmap(out / "val.bin", dtype=spec["dtype"], mode="r+", offset=spec["offset"], shape=tuple(spec["shape"]))
    arr[4, 2, 1] = np.inf
    arr.flush()
    del arr
    s = PackedSplit(out / "val.json")
    with pytest.raises(FeatureError) as e:
        s.check_finite(np.arange(3, 6), s.batch(np.arange(3, 6)))
    assert meta["ids"][4] in str(e.value) and "val.bin" in str(e.value)
    with pytest.raises(FeatureError, match=meta["ids"][4]):
        s.verify()


def test_unknown_class_in_csv_is_refused(layout, tmp_path):
    p = layout / LLP_FILES["train"]
    lines = p.read_text().splitlines()
    vid = lines[3].split("\t")[0]
    lines[3] = f"{vid}\talpha,Unicorn"
    p.write_text("\n".join(lines) + "\n")
    for call in (lambda: open_split(_cfg(layout), "train"), lambda: pack_split(_cfg(layout), "train", tmp_path / "o")):
        with pytest.raises(LLPFormatError) as e:
            call()
        assert "Unicorn" in str(e.value) and str(p) in str(e.value) and ":4" in str(e.value)


def test_video_listed_without_features(layout):
    p = layout / LLP_FILES["test"]
    p.write_text(p.read_text() + "ZZZZZZZZZZZ_0_10\tbeta\n")
    with pytest.raises(FeatureError, match="ZZZZZZZZZZZ_0_10.*no audio features"):
        open_split(_cfg(layout), "test")


def test_packed_store_problems(layout, tmp_path):
    out = tmp_path / "store"
    pack_split(_cfg(layout), "train", out)
    with pytest.raises(FeatureError, match="feature profile mismatch"):
        open_split(DataConfig(str(out), profile=PAPER), "train")
    with pytest.raises(FeatureError, match="classes"):
        open_split(DataConfig(str(out), classes=("x", "y", "z")), "train")
    b = out / "train.bin"
    with open(b, "r+b") as f:
        f.truncate(b.stat().st_size // 2)
    with pytest.raises(FeatureError, match="truncated"):
        open_split(DataConfig(str(out)), "train")
    (out / "train.json").write_text('{"format": "something else"}')
    with pytest.raises(FeatureError, match="not an avparse packed-store"):
        open_split(DataConfig(str(out)), "train")
    with pytest.raises(FeatureError, match="neither a packed store"):
        open_split(DataConfig(str(tmp_path)), "val")


def test_layout_under_feats_with_csvs_in_the_parent(layout, tmp_path):
    # the paper repository's layout: data/AVVP_*.csv and data/feats/{vggish,res152,r2plus1d_18}
    data = tmp_path / "data"
    (data / "feats").mkdir(parents=True)
    for d in ("vggish", "res152", "r2plus1d_18"):
        shutil.move(str(layout / d), str(data / "feats" / d))
    for f in LLP_FILES.values():
        shutil.move(str(layout / f), str(data / f))
    s = open_split(_cfg(data), "val")
    assert len(s) == 6 and s.batch([0])[0].shape == (1, 10, LITE.audio_dim)
    s2 = open_split(DataConfig(str(data / "feats"), profile=LITE, classes=CLASSES), "val")
    assert s2.ids == s.ids
