"""Reading the LLP annotation files: the real ones in ../shared/llp and broken copies."""

from __future__ import annotations

import numpy as np
import pytest

from avparse.core.labels import LLP_CLASSES
from avparse.train import llp
from avparse.train.llp import LLPFormatError

CLS = LLP_CLASSES


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------- the real files


@pytest.mark.parametrize("split,n", [("train", 10000), ("val", 649), ("test", 1200)])
def test_real_weak_files(llp_dir, split, n):
    ids, labels = llp.read_weak(llp_dir / llp.LLP_FILES[split])
    assert len(ids) == n == len(set(ids)) and labels.shape == (n, 25) and labels.dtype == np.uint8
    assert labels.sum(axis=1).min() >= 1  # every LLP video has at least one label
    if split == "train":  # first data row: "BjCEufrlXm4_20_30\tSpeech,Dog"
        assert ids[0] == "BjCEufrlXm4_20_30"
        assert {CLS[i] for i in np.flatnonzero(labels[0])} == {"Speech", "Dog"}


def test_real_dense_files(llp_dir):
    rows_a = llp.read_dense_rows(llp_dir / llp.LLP_FILES["audio"])
    rows_v = llp.read_dense_rows(llp_dir / llp.LLP_FILES["visual"])
    assert (len(rows_a), len(rows_v)) == (4131, 2495)
    # dense rows belong to val or test videos, except 14 audio / 11 visual rows
    # whose filenames are in no split (typos such as "19jWnmYnlD8_30_400"):
    # the original matches filenames exactly, so they never count
    val, _ = llp.read_weak(llp_dir / llp.LLP_FILES["val"])
    test, _ = llp.read_weak(llp_dir / llp.LLP_FILES["test"])
    names = set(val) | set(test)
    assert sum(r.filename not in names for r in rows_a) == 14
    assert sum(r.filename not in names for r in rows_v) == 11
    assert "19jWnmYnlD8_30_400" not in names and "19jWnmYnlD8_30_40" in names
    # the published audio file has six rows with offset <= onset (they mark nothing)
    assert sum(r.offset <= r.onset for r in rows_a) == 6
    assert sum(r.offset <= r.onset for r in rows_v) == 0


def test_real_test_split_matrices(llp_dir):
    ids, weak, gt_a, gt_v = llp.load_split(llp_dir, "test")
    assert gt_a.shape == gt_v.shape == (1200, 25, 10)
    # first row of AVVP_eval_audio.csv: "4YdbENYcIyE_23_33  0  4  Baby_cry_infant_cry"
    # -> snippets 0..3 set, offset exclusive (main_avvp.py: GT_a[idx, x1:x2] = 1)
    n, c = ids.index("4YdbENYcIyE_23_33"), CLS.index("Baby_cry_infant_cry")
    assert gt_a[n, c, :5].tolist() == [1, 1, 1, 1, 0]
    assert gt_v[n, c].tolist() == [1] * 10  # visual row 0..10
    # the matrices agree with a direct slice of every row of the test videos
    pos = {v: i for i, v in enumerate(ids)}
    want = np.zeros_like(gt_a)
    for r in llp.read_dense_rows(llp_dir / llp.LLP_FILES["audio"]):
        if r.filename in pos:
            want[pos[r.filename], CLS.index(r.label), r.onset:r.offset] = 1
    np.testing.assert_array_equal(gt_a, want)
    assert 0 < gt_a.sum() < gt_a.size and 0 < gt_v.sum() < gt_v.size
    train = llp.load_split(llp_dir, "train")
    assert train[2] is None and len(train[0]) == 10000


def test_feature_stem():
    # original dataloader: np.load(dir + row[0][:11] + '.npy')
    assert llp.feature_stem("BjCEufrlXm4_20_30") == "BjCEufrlXm4"
    assert llp.feature_stem("4O9rI-FpqLg_10_20") == "4O9rI-FpqLg"
    assert llp.feature_stem("-a_b-c_d_e0_10_20") == "-a_b-c_d_e0"
    assert llp.feature_stem("synth_000012") == "synth_000012"  # not an LLP name: whole


# ---------------------------------------------------------------- semantics on small files


def test_dense_semantics(tmp_path):
    p = write(tmp_path, "d.csv", "filename\tonset\toffset\tevent_labels\n"
              "v1\t0\t2\tDog\n"      # snippets 0,1
              "v1\t1\t4\tDog\n"      # overlapping row: OR -> 0..3
              "v1\t9\t10\tCar\n"     # one snippet at the end
              "v1\t5\t5\tCat\n"      # offset == onset: nothing (as the original's empty slice)
              "v1\t9\t0\tCello\n"    # offset < onset: nothing
              "v9\t0\t10\tDog\n"     # not in ids: skipped
              "\n")
    gt = llp.read_dense(p, ["v0", "v1"])
    assert gt.shape == (2, 25, 10) and gt.dtype == np.uint8
    assert gt[0].sum() == 0
    assert gt[1, CLS.index("Dog")].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert gt[1, CLS.index("Car")].tolist() == [0] * 9 + [1]
    assert gt[1].sum() == 5
    assert len(llp.read_dense_rows(p)) == 6


def test_weak_custom_vocabulary_and_whitespace(tmp_path):
    p = write(tmp_path, "w.csv", "filename\tevent_labels\na_0_10\tb, a\nb_0_10\tc\n")
    ids, lab = llp.read_weak(p, classes=("a", "b", "c"))
    assert ids == ["a_0_10", "b_0_10"]
    assert lab.tolist() == [[1, 1, 0], [0, 0, 1]]


@pytest.mark.parametrize("text,line,words", [
    ("filename\tevent_labels\nv1\tDog\nv2\tUnicorn\n", 3, "unknown event label 'Unicorn'"),
    ("filename\tevent_labels\nv1\tDog,,Cat\n", 2, "empty event label"),
    ("filename\tevent_labels\nv1\tDog\tCat\n", 2, "expected 2 tab-separated fields"),
    ("filename\tevent_labels\nv1\tDog\nv1\tCat\n", 3, "listed twice (first on line 2)"),
    ("filename,event_labels\nv1,Dog\n", 1, "header"),
    ("", 1, "empty file"),
])
def test_weak_errors_name_file_and_line(tmp_path, text, line, words):
    p = write(tmp_path, "bad.csv", text)
    with pytest.raises(LLPFormatError) as e:
        llp.read_weak(p)
    assert e.value.line == line and e.value.file == str(p)
    assert str(e.value).startswith(f"{p}:{line}: ") and words in str(e.value)


@pytest.mark.parametrize("row,words", [
    ("v1\t0\t4\tdog", "unknown event label 'dog'"),
    ("v1\t0.5\t4\tDog", "whole seconds"),
    ("v1\t0\t11\tDog", "offset 11 is outside 0..10"),
    ("v1\t-1\t4\tDog", "onset -1 is outside"),
    ("v1\t0\tDog", "expected 4 tab-separated fields"),
    ("\t0\t4\tDog", "empty filename"),
])
def test_dense_errors_name_file_and_line(tmp_path, row, words):
    p = write(tmp_path, "bad.csv", f"filename\tonset\toffset\tevent_labels\nv0\t0\t1\tCar\n{row}\n")
    with pytest.raises(LLPFormatError) as e:
        llp.read_dense(p, ["v0", "v1"])
    assert e.value.line == 3 and str(e.value).startswith(f"{p}:3: ") and words in str(e.value)
