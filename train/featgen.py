"""Generated feature sets in the LLP layout, with a learnable planted signal.

For tests, smoke runs and benchmarks: ``write_planted_layout`` writes the LLP
CSVs (weak labels for train/val/test, dense audio/visual annotations for
val+test) and the three feature folders. Every class c has a fixed random
pattern per feature kind; in each snippet where c is audible, the audio
features get pattern_a[c] added on top of Gaussian noise, and where c is
visible, every 2D frame gets pattern_2d[c] and the 3D feature pattern_3d[c].
The weak label of a video is the union of its audio and visual events, as in
LLP, so a model trained on weak labels can learn to find both when and in
which modality. With ``signal=0`` the features are pure noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avparse.core.profiles import FeatureProfile
from avparse.train.dataset import write_layout_video

_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


@dataclass(frozen=True)
class PlantedSpec:
    classes: tuple[str, ...]        # class vocabulary written to the CSVs
    profile: FeatureProfile         # feature sizes (audio_dim, frames_per_snippet, v2d_dim, v3d_dim)
    num_snippets: int = 10          # snippets per video
    signal: float = 1.0             # pattern amplitude relative to unit noise (0 = no signal)
    max_events: int = 2             # events per video: 1..max_events classes
    p_audio_only: float = 0.3       # probability an event is audible only
    p_visual_only: float = 0.3      # probability an event is visible only (else both)


def _video_id(rng) -> str:
    return "".join(rng.choice(_ID_CHARS, 11))


def make_videos(spec: PlantedSpec, n: int, rng, patterns):
    """n videos: (audio, v2d, v3d, weak labels [C], gt_a [C,T], gt_v [C,T]) tuples."""
    p, t, c = spec.profile, spec.num_snippets, len(spec.classes)
    f = p.frames_per_snippet
    out = []
    for _ in range(n):
        gt_a = np.zeros((c, t), np.uint8)
        gt_v = np.zeros((c, t), np.uint8)
        for k in rng.choice(c, size=int(rng.integers(1, spec.max_events + 1)), replace=False):
            r = rng.random()
            mods = ("a",) if r < spec.p_audio_only else ("v",) if r < spec.p_audio_only + spec.p_visual_only else ("a", "v")
            for m in mods:
                on = int(rng.integers(0, t))
                off = int(rng.integers(on + 1, t + 1))
                (gt_a if m == "a" else gt_v)[k, on:off] = 1
        audio = rng.standard_normal((t, p.audio_dim), dtype=np.float32)
        v2d = rng.standard_normal((t, f, p.v2d_dim), dtype=np.float32)
        v3d = rng.standard_normal((t, p.v3d_dim), dtype=np.float32)
        audio += spec.signal * (gt_a.T.astype(np.float32) @ patterns["a"])
        v2d += spec.signal * (gt_v.T.astype(np.float32) @ patterns["2d"])[:, None, :]
        v3d += spec.signal * (gt_v.T.astype(np.float32) @ patterns["3d"])
        weak = ((gt_a.max(1) | gt_v.max(1)) > 0).astype(np.uint8)
        out.append((audio, v2d.reshape(t * f, p.v2d_dim), v3d, weak, gt_a, gt_v))
    return out


def _write_weak(path: Path, ids, weak, classes) -> None:
    lines = ["filename\tevent_labels"]
    for vid, y in zip(ids, weak):
        lines.append(f"{vid}\t{','.join(classes[k] for k in np.flatnonzero(y))}")
    path.write_text("\n".join(lines) + "\n")


def _dense_rows(ids, gts, classes):
    rows = []
    for vid, g in zip(ids, gts):
        for k in range(g.shape[0]):
            x = np.concatenate([[0], g[k], [0]]).astype(np.int8)
            d = np.diff(x)
            for on, off in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
                rows.append(f"{vid}\t{on}\t{off}\t{classes[k]}")
    return rows


def write_planted_layout(out_dir, spec: PlantedSpec, *, n_train: int, n_val: int, n_test: int = 0,
                         seed: int = 0) -> Path:
    """Write a planted-signal feature set in the LLP layout under ``out_dir``; returns it."""
    from avparse.train.llp import LLP_FILES, feature_stem

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    p, c = spec.profile, len(spec.classes)
    patterns = {
        "a": rng.standard_normal((c, p.audio_dim)).astype(np.float32),
        "2d": rng.standard_normal((c, p.v2d_dim)).astype(np.float32),
        "3d": rng.standard_normal((c, p.v3d_dim)).astype(np.float32),
    }
    used: set[str] = set()
    dense_a, dense_v = ["filename\tonset\toffset\tevent_labels"], ["filename\tonset\toffset\tevent_labels"]
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        vids = make_videos(spec, n, rng, patterns)
        ids = []
        for _ in range(n):
            vid = _video_id(rng)
            while vid in used:
                vid = _video_id(rng)
            used.add(vid)
            ids.append(f"{vid}_0_{spec.num_snippets}")
        for vid, (a, v2, v3, *_rest) in zip(ids, vids):
            write_layout_video(out, feature_stem(vid), a, v2, v3)  # LLP naming: <youtube id>.npy
        _write_weak(out / LLP_FILES[split], ids, [v[3] for v in vids], spec.classes)
        if split != "train":
            dense_a += _dense_rows(ids, [v[4] for v in vids], spec.classes)
            dense_v += _dense_rows(ids, [v[5] for v in vids], spec.classes)
    (out / LLP_FILES["audio"]).write_text("\n".join(dense_a) + "\n")
    (out / LLP_FILES["visual"]).write_text("\n".join(dense_v) + "\n")
    return out
