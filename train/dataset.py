"""Feature datasets for training and evaluation: the LLP layout and the packed store.

Two on-disk forms hold the same thing, one split of snippet features:

LLP layout (the features published with the paper; YapengTian/AVVP-ECCV20,
main_avvp.py defaults ``data/feats/{vggish,res152,r2plus1d_18}/`` and
dataloader.py ``name = row[0][:11]; np.load(dir/name + '.npy')``)::

    DIR/AVVP_train.csv, AVVP_val_pd.csv, AVVP_test_pd.csv,
        AVVP_eval_audio.csv, AVVP_eval_visual.csv       (tab-separated LLP CSVs)
    DIR/vggish/<id>.npy        audio  [T, audio_dim]     (LLP: [10, 128])
    DIR/res152/<id>.npy        2D     [T*F, v2d_dim]     (LLP: [80, 2048])
    DIR/r2plus1d_18/<id>.npy   3D     [T, v3d_dim]       (LLP: [10, 512])

``<id>`` is the YouTube id of an LLP name (``BjCEufrlXm4`` of
``BjCEufrlXm4_20_30``, as the paper's code) and the whole CSV ``filename`` for
other names (:func:`avparse.train.llp.feature_stem`); the whole name is tried
too.
The feature folders may also sit in ``DIR/feats/`` (the paper's repository
layout), and the CSVs in another folder (``labels_dir``).

Packed store (written once by ``avparse pack``, see :mod:`avparse.train.pack`)::

    DIR/<split>.bin    one raw file per split: every array of the split, each
                       contiguous at a 4096-byte aligned offset
    DIR/<split>.json   the index: format, version, ids, classes, profile,
                       num_snippets and each array's offset, shape and dtype

An epoch over a packed split reads big slices of one memory-mapped file
instead of opening three small files per video.

Every problem with the input (a missing feature file, a wrong shape, NaN or
infinite values, a video without features, a truncated store) raises
:class:`FeatureError` naming the file and the video; nothing is skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avparse.core.labels import LLP_CLASSES
from avparse.core.profiles import PAPER, FeatureProfile

# modality -> folder of the LLP layout (paper's code: main_avvp.py --audio_dir/--video_dir/--st_dir)
FEATURE_DIRS: dict[str, str] = {"audio": "vggish", "v2d": "res152", "v3d": "r2plus1d_18"}
FEATURES = tuple(FEATURE_DIRS)
PACK_FORMAT = "avparse-packed-features"
PACK_VERSION = 1
ALIGN = 4096


class FeatureError(ValueError):
    """Bad feature input: names the file and (where known) the video."""

    def __init__(self, file, video: str | None, message: str):
        self.file = str(file)
        self.video = video
        self.message = message
        where = f"{self.file}" + (f" (video {video})" if video else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class DataConfig:
    data_dir: str                       # packed store folder, or LLP layout folder (features, maybe CSVs)
    labels_dir: str | None = None       # folder of the LLP CSVs when not beside the features
    profile: FeatureProfile | None = None  # expected feature sizes; None = the store's own (packed) or PAPER (layout)
    classes: tuple[str, ...] | None = None  # class vocabulary; None = the store's own (packed) or LLP_CLASSES (layout)
    num_snippets: int = 10              # snippets per video (LLP: 10 x 1 s)


def _shapes(profile: FeatureProfile, t: int) -> dict[str, tuple[int, int]]:
    return {
        "audio": (t, profile.audio_dim),
        "v2d": (t * profile.frames_per_snippet, profile.v2d_dim),
        "v3d": (t, profile.v3d_dim),
    }


class FeatureSplit:
    """One split in memory or memory-mapped: ids, weak labels, dense labels, features.

    ``batch(idx)`` returns float32 arrays (audio [B,T,A], v2d [B,T*F,D2],
    v3d [B,T,D3]) for the videos ``idx``. ``gt_audio``/``gt_visual`` are
    uint8 [N,C,T] for splits with dense annotations (val, test), else None.
    """

    source: str
    ids: list[str]
    labels: np.ndarray
    gt_audio: np.ndarray | None
    gt_visual: np.ndarray | None
    profile: FeatureProfile
    classes: tuple[str, ...]
    num_snippets: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_dense(self) -> bool:
        return self.gt_audio is not None and self.gt_visual is not None

    def batch(self, idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def feature_file(self, modality: str, i: int) -> str:
        """The file holding video ``i``'s features of ``modality`` (for messages)."""
        return self.source

    def check_finite(self, idx, arrays) -> None:
        """Raise FeatureError naming the first video of ``idx`` with NaN/inf features."""
        for m, a in zip(FEATURES, arrays):
            bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
            if bad.any():
                i = int(np.asarray(idx)[int(np.argmax(bad))])
                raise FeatureError(self.feature_file(m, i), self.ids[i], f"NaN or infinite values in the {m} features")


class LayoutSplit(FeatureSplit):
    """A split in the LLP layout: three .npy files per video, read per batch."""

    def __init__(self, feature_root: Path, split: str, ids, labels, gt_audio, gt_visual, *,
                 profile: FeatureProfile, classes, num_snippets: int, csv_path: Path):
        self.source = str(feature_root)
        self.split = split
        self.ids = list(ids)
        self.labels = labels
        self.gt_audio, self.gt_visual = gt_audio, gt_visual
        self.profile, self.classes, self.num_snippets = profile, tuple(classes), num_snippets
        self.shapes = _shapes(profile, num_snippets)
        self.files: dict[str, list[Path]] = {m: [] for m in FEATURES}
        from avparse.train.llp import feature_stem

        for vid in self.ids:
            stems = dict.fromkeys((feature_stem(vid), vid))  # YouTube id first (paper: row[0][:11]), then whole
            for m, d in FEATURE_DIRS.items():
                for stem in stems:
                    path = feature_root / d / f"{stem}.npy"
                    if path.is_file():
                        break
                else:
                    path = feature_root / d / f"{next(iter(stems))}.npy"
                    raise FeatureError(path, vid, f"no {m} features for this video of {csv_path.name} (expected "
                                       + " or ".join(f"{d}/{s}.npy" for s in stems) + ")")
                self.files[m].append(path)

    def feature_file(self, modality: str, i: int) -> str:
        return str(self.files[modality][i])

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read and check the three feature arrays of video ``i``."""
        out = []
        for m in FEATURES:
            path = self.files[m][i]
            try:
                a = np.load(path, allow_pickle=False)
            except Exception as e:  # corrupt or not an npy file
                raise FeatureError(path, self.ids[i], f"cannot read the {m} features: {e}") from None
            if a.shape != self.shapes[m]:
                raise FeatureError(path, self.ids[i], f"{m} features have shape {list(a.shape)}, "
                                   f"expected {list(self.shapes[m])} (profile {self.profile.name!r})")
            if not np.issubdtype(a.dtype, np.floating):
                raise FeatureError(path, self.ids[i], f"{m} features have dtype {a.dtype}, expected floats")
            a = a.astype(np.float32, copy=False)
            if not np.isfinite(a).all():
                raise FeatureError(path, self.ids[i], f"NaN or infinite values in the {m} features")
            out.append(a)
        return tuple(out)

    def batch(self, idx):
        rows = [self.load(int(i)) for i in idx]
        return tuple(np.stack([r[k] for r in rows]) for k in range(3))


class PackedSplit(FeatureSplit):
    """A split of a packed store: every array memory-mapped from one file."""

    def __init__(self, index_path: Path, *, verify: bool = False):
        self.index_path = Path(index_path)
        try:
            meta = json.loads(self.index_path.read_text())
        except (OSError, ValueError) as e:
            raise FeatureError(index_path, None, f"cannot read the packed-store index: {e}") from None
        if meta.get("format") != PACK_FORMAT:
            raise FeatureError(index_path, None, "not an avparse packed-store index (format field); run `avparse pack`")
        if meta.get("version") != PACK_VERSION:
            raise FeatureError(index_path, None, f"packed-store version {meta.get('version')} is not supported "
                               f"(this avparse reads version {PACK_VERSION}); pack the features again")
        self.meta = meta
        self.split = meta["split"]
        self.bin_path = self.index_path.with_suffix(".bin")
        self.source = str(self.bin_path)
        self.ids = list(meta["ids"])
        self.classes = tuple(meta["classes"])
        self.profile = FeatureProfile.from_dict(meta["profile"])
        self.num_snippets = int(meta["num_snippets"])
        if not self.bin_path.is_file():
            raise FeatureError(self.bin_path, None, "the packed features are missing (index without data); run `avparse pack`")
        size = self.bin_path.stat().st_size
        arrays = {}
        n, c, t = len(self.ids), len(self.classes), self.num_snippets
        expect = dict(_shapes(self.profile, t))
        expect = {m: (n, *s) for m, s in expect.items()}
        expect["labels"] = (n, c)
        for name, spec in meta["arrays"].items():
            shape, dtype, off = tuple(spec["shape"]), np.dtype(spec["dtype"]), int(spec["offset"])
            if name in expect and shape != expect[name]:
                raise FeatureError(self.bin_path, None, f"array {name} has shape {list(shape)}, expected "
                                   f"{list(expect[name])} from the index's profile and ids")
            if name.startswith("gt_") and shape != (n, c, t):
                raise FeatureError(self.bin_path, None, f"array {name} has shape {list(shape)}, expected {[n, c, t]}")
            nbytes = int(np.prod(shape)) * dtype.itemsize
            if off + nbytes > size:
                raise FeatureError(self.bin_path, None, f"truncated: array {name} needs bytes up to {off + nbytes} "
                                   f"but the file has {size}; pack the features again")
            arrays[name] = np.memmap(self.bin_path, dtype=dtype, mode="r", offset=off, shape=shape) if nbytes else \
                np.zeros(shape, dtype)
        for name in expect:
            if name not in arrays:
                raise FeatureError(self.bin_path, None, f"array {name} is missing from the packed store")
        self.arrays = arrays
        self.labels = np.asarray(arrays["labels"])
        self.gt_audio = np.asarray(arrays["gt_audio"]) if "gt_audio" in arrays else None
        self.gt_visual = np.asarray(arrays["gt_visual"]) if "gt_visual" in arrays else None
        if verify:
            self.verify()

    def verify(self, chunk: int = 256) -> None:
        """Scan every feature for NaN/inf (pack already did; this re-checks the file)."""
        for s in range(0, len(self), chunk):
            idx = np.arange(s, min(s + chunk, len(self)))
            self.check_finite(idx, [np.asarray(self.arrays[m][s:idx[-1] + 1]) for m in FEATURES])

    def batch(self, idx):
        idx = np.asarray(idx)
        if len(idx) and np.all(np.diff(idx) == 1):  # one contiguous slice
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            return tuple(np.array(self.arrays[m][sl]) for m in FEATURES)
        return tuple(np.ascontiguousarray(self.arrays[m][idx]) for m in FEATURES)


class FrameMeanSplit(FeatureSplit):
    """``split`` held in memory with each snippet's frames already averaged: ``batch`` gives
    v2d as [B, T, D2] (the frame means) instead of [B, T*F, D2].

    HAN averages a snippet's F frames before fc_v (core/han.py) and accepts the means
    directly, so training on this split is the same computation, bit for bit
    (tests/train/test_trainer.py), with 1/F of the 2D data: no [B, T*F, D2] gather from
    the memory map and no frame mean in each step. Built once, in one pass over ``split``
    (``nbytes`` bytes of memory: about 1.1 GB for LLP's 10,000 training videos)."""

    def __init__(self, split: FeatureSplit, *, chunk: int = 256):
        import torch

        self.base = split
        for k in ("source", "ids", "labels", "gt_audio", "gt_visual", "profile", "classes", "num_snippets"):
            setattr(self, k, getattr(split, k))
        n, t, p = len(split), split.num_snippets, split.profile
        f = p.frames_per_snippet
        self.arrays = (np.empty((n, t, p.audio_dim), np.float32), np.empty((n, t, p.v2d_dim), np.float32),
                       np.empty((n, t, p.v3d_dim), np.float32))
        for s in range(0, n, chunk):
            idx = np.arange(s, min(n, s + chunk))
            a, v2, v3 = split.batch(idx)
            self.arrays[0][s:idx[-1] + 1] = a
            # the same reduction as HAN.embed: torch's mean over the F frames of each snippet
            self.arrays[1][s:idx[-1] + 1] = torch.from_numpy(v2).view(len(idx), t, f, p.v2d_dim).mean(dim=2).numpy()
            self.arrays[2][s:idx[-1] + 1] = v3

    @staticmethod
    def nbytes(split: FeatureSplit) -> int:
        p = split.profile
        return 4 * len(split) * split.num_snippets * (p.audio_dim + p.v2d_dim + p.v3d_dim)

    def feature_file(self, modality: str, i: int) -> str:
        return self.base.feature_file(modality, i)

    def batch(self, idx):
        idx = np.asarray(idx)
        return tuple(a[idx] for a in self.arrays)


def feature_root(data_dir: Path) -> Path | None:
    """The folder holding vggish/, res152/, r2plus1d_18/ (DIR or DIR/feats), or None."""
    for root in (data_dir, data_dir / "feats"):
        if all((root / d).is_dir() for d in FEATURE_DIRS.values()):
            return root
    return None


def csv_dir(cfg: DataConfig, split_file: str) -> Path:
    """Where the LLP CSVs are: labels_dir, else DIR, else DIR's parent (DIR = data/feats)."""
    if cfg.labels_dir:
        return Path(cfg.labels_dir)
    d = Path(cfg.data_dir)
    for c in (d, d.parent):
        if (c / split_file).is_file():
            return c
    return d


def read_split_labels(cfg: DataConfig, split: str):
    """(ids, weak labels [N,C], gt_audio, gt_visual, csv path) of a split from the LLP CSVs.

    Dense annotations are read for val and test (LLP_FILES audio/visual).
    """
    from avparse.train.llp import LLP_FILES, read_dense, read_weak

    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; use train, val or test")
    d = csv_dir(cfg, LLP_FILES[split])
    path = d / LLP_FILES[split]
    if not path.is_file():
        raise FeatureError(path, None, f"the {split} label file is missing (give --labels DIR with the LLP CSV files)")
    classes = tuple(cfg.classes or LLP_CLASSES)
    ids, labels = read_weak(path, classes=classes)
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise FeatureError(path, dup, "video listed twice")
    gt_a = gt_v = None
    if split in ("val", "test"):
        pa, pv = d / LLP_FILES["audio"], d / LLP_FILES["visual"]
        for p in (pa, pv):
            if not p.is_file():
                raise FeatureError(p, None, f"the dense {split} annotations are missing")
        gt_a = read_dense(pa, ids, classes, num_snippets=cfg.num_snippets)
        gt_v = read_dense(pv, ids, classes, num_snippets=cfg.num_snippets)
    return ids, np.asarray(labels, np.uint8), gt_a, gt_v, path


def packed_index(data_dir, split: str) -> Path:
    return Path(data_dir) / f"{split}.json"


def open_split(cfg: DataConfig, split: str) -> FeatureSplit:
    """Open a split from a packed store (DIR/<split>.json) or an LLP layout."""
    d = Path(cfg.data_dir)
    if not d.is_dir():
        raise FeatureError(d, None, "no such data folder")
    idx = packed_index(d, split)
    if idx.is_file():
        s = PackedSplit(idx)
        if cfg.profile is not None:
            try:
                cfg.profile.check_compatible(s.profile)
            except ValueError as e:
                raise FeatureError(idx, None, str(e)) from None
        if s.num_snippets != cfg.num_snippets:
            raise FeatureError(idx, None, f"store has {s.num_snippets} snippets per video, expected {cfg.num_snippets}")
        if cfg.classes is not None and tuple(cfg.classes) != s.classes:
            raise FeatureError(idx, None, f"the store's {len(s.classes)} classes differ from the "
                               f"{len(cfg.classes)} configured classes")
        if split in ("val", "test") and not s.has_dense:
            raise FeatureError(idx, None, f"the {split} store has no dense annotations; pack it again with them")
        return s
    root = feature_root(d)
    if root is None:
        raise FeatureError(d, None, f"neither a packed store ({split}.json) nor the LLP layout "
                           f"({', '.join(FEATURE_DIRS.values())} folders) is here")
    ids, labels, gt_a, gt_v, path = read_split_labels(cfg, split)
    return LayoutSplit(root, split, ids, labels, gt_a, gt_v, profile=cfg.profile or PAPER,
                       classes=tuple(cfg.classes or LLP_CLASSES), num_snippets=cfg.num_snippets, csv_path=path)


def write_layout_video(root, vid: str, audio, v2d, v3d) -> None:
    """Write one video's three feature files in the LLP layout (used by pack tests and generators)."""
    root = Path(root)
    for m, a in zip(FEATURES, (audio, v2d, v3d)):
        (root / FEATURE_DIRS[m]).mkdir(parents=True, exist_ok=True)
        np.save(root / FEATURE_DIRS[m] / f"{vid}.npy", np.asarray(a, np.float32))
