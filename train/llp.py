"""Reading the LLP annotation files (tab-separated, one header row).

Weak files (``AVVP_train.csv``, ``AVVP_val_pd.csv``, ``AVVP_test_pd.csv``):
``filename<TAB>event_labels``, labels comma-separated. Dense files
(``AVVP_eval_audio.csv``, ``AVVP_eval_visual.csv``, covering val and test):
``filename<TAB>onset<TAB>offset<TAB>event_labels``, one event per row, onset and
offset in whole seconds.

Conventions follow the paper's code (YapengTian/AVVP-ECCV20):

* a dense row marks snippets ``onset .. offset-1`` (``GT[idx, onset:offset] = 1``
  in ``main_avvp.py`` ``eval()``, the offset is exclusive); rows of one class may
  overlap and are OR-ed;
* a dense row with ``offset <= onset`` marks nothing (an empty slice in the
  original). The published audio file has six such rows (five ``onset ==
  offset``, one ``9 -> 0``); they are read, counted as rows, and contribute no
  snippet, exactly as in the original;
* dense rows are matched to videos by exact filename; 14 audio and 11 visual
  rows of the published files name videos that are in no split (typos such as
  ``19jWnmYnlD8_30_400``) and so never count, as in the original;
* filenames are ``<youtube id>_<start>_<end>``; the original dataloader names
  feature files after the first 11 characters (the YouTube id):
  ``feats/<kind>/<id>.npy`` (``dataloader.py``: ``row[0][:11] + '.npy'``), see
  ``feature_stem``.

Anything else that is not as above (wrong header, wrong number of fields, a
label outside the vocabulary, a non-integer or out-of-range time, a repeated
filename in a weak file) raises ``LLPFormatError`` naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avparse.core.labels import LLP_CLASSES, class_index

LLP_FILES = dict(
    train="AVVP_train.csv",
    val="AVVP_val_pd.csv",
    test="AVVP_test_pd.csv",
    audio="AVVP_eval_audio.csv",
    visual="AVVP_eval_visual.csv",
)
WEAK_HEADER = ("filename", "event_labels")
DENSE_HEADER = ("filename", "onset", "offset", "event_labels")
# Snippets per LLP video: 10 s at one snippet per second.
LLP_SNIPPETS = 10

_LLP_NAME = re.compile(r"^(?P<id>[A-Za-z0-9_-]{11})_(?P<start>\d+)_(?P<end>\d+)$")


class LLPFormatError(ValueError):
    """A malformed LLP annotation file: ``file:line: message``."""

    def __init__(self, file, line: int, message: str):
        self.file = str(file)
        self.line = int(line)
        self.message = message
        super().__init__(f"{self.file}:{self.line}: {message}")


@dataclass(frozen=True)
class DenseRow:
    """One dense annotation row: an event of one class in one modality."""

    filename: str  # video name, "<youtube id>_<start>_<end>"
    onset: int     # first snippet (seconds, inclusive)
    offset: int    # end snippet (seconds, exclusive); <= onset marks nothing
    label: str     # class name
    line: int      # 1-based line number in the file (the header is line 1)


def _rows(path: Path, header: tuple[str, ...]):
    """(line number, fields) of the data rows; checks the header and field counts."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LLPFormatError(path, 0, f"not UTF-8 text ({e.reason})") from None
    lines = text.splitlines()
    if not lines:
        raise LLPFormatError(path, 1, f"empty file: expected the header {'<TAB>'.join(header)}")
    got = tuple(f.strip() for f in lines[0].split("\t"))
    if got != header:
        raise LLPFormatError(path, 1, f"header is {'<TAB>'.join(got)!r}, expected {'<TAB>'.join(header)!r} "
                                      "(tab-separated)")
    for i, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue  # blank lines (e.g. a trailing one) carry nothing
        fields = [f.strip() for f in raw.split("\t")]
        if len(fields) != len(header):
            raise LLPFormatError(path, i, f"expected {len(header)} tab-separated fields "
                                          f"({', '.join(header)}), got {len(fields)}")
        if not fields[0]:
            raise LLPFormatError(path, i, "empty filename")
        yield i, fields


def _label(path, line, name, index) -> int:
    if name not in index:
        raise LLPFormatError(path, line, f"unknown event label {name!r} (not in the {len(index)}-class vocabulary)")
    return index[name]


def read_weak(csv_path, classes: tuple[str, ...] = LLP_CLASSES) -> tuple[list[str], np.ndarray]:
    """Video names and weak (video-level) labels of a weak file.

    Returns ``(ids, labels)``: the filenames in file order and a uint8 ``[N, C]``
    multi-hot matrix in the order of ``classes``.
    """
    path = Path(csv_path)
    index = class_index(tuple(classes))
    ids: list[str] = []
    seen: dict[str, int] = {}
    rows: list[list[int]] = []
    for line, (name, labels) in _rows(path, WEAK_HEADER):
        if name in seen:
            raise LLPFormatError(path, line, f"video {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = line
        parts = [p.strip() for p in labels.split(",")]
        if not labels or any(not p for p in parts):
            raise LLPFormatError(path, line, f"empty event label in {labels!r}")
        rows.append([_label(path, line, p, index) for p in parts])
        ids.append(name)
    out = np.zeros((len(ids), len(index)), dtype=np.uint8)
    for r, idx in enumerate(rows):
        out[r, idx] = 1
    return ids, out


def read_dense_rows(csv_path, classes: tuple[str, ...] = LLP_CLASSES, *,
                    num_snippets: int = LLP_SNIPPETS) -> list[DenseRow]:
    """Every row of a dense file, validated (times in ``0..num_snippets``)."""
    path = Path(csv_path)
    index = class_index(tuple(classes))
    out: list[DenseRow] = []
    for line, (name, on, off, label) in _rows(path, DENSE_HEADER):
        try:
            onset, offset = int(on), int(off)
        except ValueError:
            raise LLPFormatError(path, line, f"onset/offset must be whole seconds, got {on!r}, {off!r}") from None
        for what, v in (("onset", onset), ("offset", offset)):
            if not 0 <= v <= num_snippets:
                raise LLPFormatError(path, line, f"{what} {v} is outside 0..{num_snippets} seconds")
        _label(path, line, label, index)
        out.append(DenseRow(name, onset, offset, label, line))
    return out


def read_dense(csv_path, ids, classes: tuple[str, ...] = LLP_CLASSES,
               num_snippets: int = LLP_SNIPPETS) -> np.ndarray:
    """Snippet-level truth of the videos ``ids`` from a dense file.

    Returns uint8 ``[N, C, T]`` (N = len(ids), T = num_snippets) with
    ``out[n, c, onset:offset] = 1`` for every row of video ``ids[n]``; rows of
    other videos are skipped (the dense files hold val and test together), and
    a video without rows has an all-zero matrix.
    """
    pos = {name: i for i, name in enumerate(ids)}
    index = class_index(tuple(classes))
    out = np.zeros((len(pos), len(index), num_snippets), dtype=np.uint8)
    for r in read_dense_rows(csv_path, classes, num_snippets=num_snippets):
        n = pos.get(r.filename)
        if n is not None:
            out[n, index[r.label], r.onset:r.offset] = 1
    return out


def feature_stem(filename: str) -> str:
    """The name (without ``.npy``) of a video's feature files.

    For LLP names (``<11-character youtube id>_<start>_<end>``) this is the
    YouTube id, as the original dataloader's ``row[0][:11]``; any other name
    (e.g. generated datasets) is used whole.
    """
    m = _LLP_NAME.match(filename)
    return m.group("id") if m else filename


def load_split(llp_dir, split: str, classes: tuple[str, ...] = LLP_CLASSES, *,
               num_snippets: int = LLP_SNIPPETS):
    """Weak labels of a split and, for val/test, its dense audio and visual truth.

    Returns ``(ids, weak [N, C], gt_a [N, C, T] | None, gt_v [N, C, T] | None)``.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    d = Path(llp_dir)
    ids, weak = read_weak(d / LLP_FILES[split], classes)
    if split == "train":
        return ids, weak, None, None
    gt_a = read_dense(d / LLP_FILES["audio"], ids, classes, num_snippets)
    gt_v = read_dense(d / LLP_FILES["visual"], ids, classes, num_snippets)
    return ids, weak, gt_a, gt_v
