"""Write the packed feature store: one memory-mapped file per split.

``pack_split`` reads a split in the LLP layout (CSV labels, three .npy files
per video), checks every file (present, right shape, finite values, known
classes) and writes ``OUT/<split>.bin`` with every array of the split
contiguous, plus the index ``OUT/<split>.json`` (see
:mod:`avparse.train.dataset`). Both are written under temporary names and
renamed at the end, so a store either is complete or is not there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from avparse.core.labels import LLP_CLASSES
from avparse.core.profiles import PAPER, FeatureProfile
from avparse.train.dataset import (
    ALIGN,
    FEATURES,
    PACK_FORMAT,
    PACK_VERSION,
    DataConfig,
    FeatureError,
    LayoutSplit,
    _shapes,
    feature_root,
    read_split_labels,
)


class PackedWriter:
    """Create ``OUT/<split>.bin/.json`` and fill its arrays in place.

    ``writer.arrays[name]`` are writable memory maps: audio, v2d, v3d
    (float32), labels (uint8 [N,C]) and, with ``dense=True``, gt_audio and
    gt_visual (uint8 [N,C,T]). ``close()`` flushes and publishes the store.
    """

    def __init__(self, out_dir, split: str, ids, *, classes, profile: FeatureProfile,
                 num_snippets: int = 10, dense: bool = False, source: str = ""):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.split, self.ids = split, list(ids)
        self.classes, self.profile, self.num_snippets = tuple(classes), profile, num_snippets
        n, c, t = len(self.ids), len(self.classes), num_snippets
        specs = {m: ((n, *s), "float32") for m, s in _shapes(profile, t).items()}
        specs["labels"] = ((n, c), "uint8")
        if dense:
            specs["gt_audio"] = ((n, c, t), "uint8")
            specs["gt_visual"] = ((n, c, t), "uint8")
        off, layout = 0, {}
        for name, (shape, dtype) in specs.items():
            layout[name] = {"offset": off, "shape": list(shape), "dtype": dtype}
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            off += -(-nbytes // ALIGN) * ALIGN
        self.layout, self.size, self.source = layout, off, source
        self.bin_path = self.out_dir / f"{split}.bin"
        self.json_path = self.out_dir / f"{split}.json"
        self.tmp_bin = self.out_dir / f".{split}.bin.partial"
        with open(self.tmp_bin, "wb") as f:
            f.truncate(max(off, 1))
        self.arrays = {
            name: np.memmap(self.tmp_bin, dtype=s["dtype"], mode="r+", offset=s["offset"], shape=tuple(s["shape"]))
            for name, s in layout.items() if int(np.prod(s["shape"])) > 0
        }

    def close(self) -> Path:
        for a in self.arrays.values():
            a.flush()
        self.arrays = {}
        os.replace(self.tmp_bin, self.bin_path)
        meta = {
            "format": PACK_FORMAT,
            "version": PACK_VERSION,
            "split": self.split,
            "num_videos": len(self.ids),
            "num_snippets": self.num_snippets,
            "classes": list(self.classes),
            "profile": self.profile.to_dict(),
            "source": self.source,
            "arrays": self.layout,
            "ids": self.ids,
        }
        tmp = self.out_dir / f".{self.split}.json.partial"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.json_path)
        return self.json_path

    def abort(self) -> None:
        self.arrays = {}
        try:
            self.tmp_bin.unlink()
        except FileNotFoundError:
            pass


def pack_split(cfg: DataConfig, split: str, out_dir, *,
               progress: Callable[[int, int], None] | None = None) -> Path:
    """Pack one split of an LLP layout into ``out_dir``; returns the index path.

    Every video is checked (files present, shapes of ``cfg.profile``, finite
    values); the first problem raises FeatureError naming file and video.
    """
    src = Path(cfg.data_dir)
    root = feature_root(src)
    if root is None:
        raise FeatureError(src, None, "not an LLP feature layout (vggish/, res152/, r2plus1d_18/ folders missing)")
    profile = cfg.profile or PAPER
    ids, labels, gt_a, gt_v, csv_path = read_split_labels(cfg, split)
    split_src = LayoutSplit(root, split, ids, labels, gt_a, gt_v, profile=profile,
                            classes=tuple(cfg.classes or LLP_CLASSES), num_snippets=cfg.num_snippets,
                            csv_path=csv_path)
    w = PackedWriter(out_dir, split, ids, classes=split_src.classes, profile=profile,
                     num_snippets=cfg.num_snippets, dense=gt_a is not None, source=str(root))
    try:
        w.arrays["labels"][:] = labels
        if gt_a is not None:
            w.arrays["gt_audio"][:] = gt_a
            w.arrays["gt_visual"][:] = gt_v
        for i in range(len(ids)):
            for m, a in zip(FEATURES, split_src.load(i)):
                w.arrays[m][i] = a
            if progress is not None:
                progress(i + 1, len(ids))
    except BaseException:
        w.abort()
        raise
    return w.close()

