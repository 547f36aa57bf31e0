"""Generated audio-visual scenes with dense ground truth, and the dataset writer.

The scene's plan (``SynthConfig``, the layouts, which events it holds) is in
``avparse.train.synth_plan``; its names are importable from here too.

A scene holds one to three events per 10 s, each of a class of ``SYNTH_CLASSES``
and audible only, visible only or both, with audio and visual intervals that
need not coincide, over background noise, visual clutter and distractors that
belong to no class. Event bounds lie on whole seconds (the one-second snippets
of LLP). A scene implements ``avparse.core.scene.Scene``: audio and frames are
rendered lazily, block by block and frame by frame, as pure functions of the
sample or frame index, so a live source can pull any block in real time and the
file writer encodes exactly the same samples and frames.

``write_dataset`` writes clips as mp4 (H.264 + AAC, one ffmpeg process per clip
reading raw frames and samples from pipes) with LLP-format annotation files;
``isolated_audio`` / ``isolated_frames`` render one-second snippets holding one
labelled class (or none) for pretraining extractors with snippet labels.
The signatures are in ``synth_audio`` and ``synth_video``; docs/synth.md lists them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from avparse.core.scene import TrueEvent

from .synth_audio import DISTRACTOR_SOUNDS, Sound, draw_params, noise, reference_rms, render_sound
from .synth_plan import (  # noqa: F401  (LAYOUTS, PRESETS, ...: the plan's names are importable from here too)
    LAYOUTS,
    LLP_CLASS_MODALITY,
    PRESETS,
    SYNTH_CLASSES,
    PlannedEvent,
    SynthConfig,
    SynthError,
    _key,
    plan_events,
    synth_preset,
)
from .synth_video import CLUTTER_SHAPES, VISUAL_SIGNATURES, Sprite, background, draw_motion, draw_sprite


# LLP file roles (avparse.train.llp.LLP_FILES) -> the generated set's file names.
SYNTH_FILES: dict[str, str] = {
    "full": "synth_full.csv",            # weak labels of every clip (AVVP_dataset_full.csv)
    "train": "synth_train.csv",          # weak labels, training split (AVVP_train.csv)
    "val": "synth_val.csv",              # weak labels, validation split (AVVP_val_pd.csv)
    "test": "synth_test.csv",            # weak labels, test split (AVVP_test_pd.csv)
    "audio": "synth_eval_audio.csv",     # dense audio events of val + test (AVVP_eval_audio.csv)
    "visual": "synth_eval_visual.csv",   # dense visual events of val + test (AVVP_eval_visual.csv)
    "full_audio": "synth_full_audio.csv",    # dense audio events of every clip (no LLP counterpart)
    "full_visual": "synth_full_visual.csv",  # dense visual events of every clip (no LLP counterpart)
}
MEDIA_DIR = "media"          # clips are DIR/media/<filename>.mp4
MANIFEST = "synth.json"      # seed, config, classes, file names, counts




def _distinct_colour(rng, shape: str) -> tuple:
    """A colour such that (shape, colour) is no class's signature."""
    for _ in range(100):
        col = tuple(float(x) for x in rng.uniform(20, 250, 3))
        if all(not (s == shape and np.linalg.norm(np.subtract(col, c)) < 90) for s, c, _ in VISUAL_SIGNATURES.values()):
            return col
    return (128.0, 128.0, 128.0)


class SynthScene:
    """A generated scene (implements ``avparse.core.scene.Scene``). Build with ``make_scene``."""

    def __init__(self, *, name: str, key: tuple, config: SynthConfig, events: list[PlannedEvent],
                 sounds: list[Sound], sprites: list[Sprite], bg: np.ndarray):
        self.name = name
        self.key = key
        self.config = config
        self.events = list(events)
        self.sounds = list(sounds)
        self.sprites = list(sprites)
        self.sample_rate = config.sample_rate
        self.fps = config.fps
        self.duration = float(config.duration)
        self.width = config.width
        self.height = config.height
        self.classes = SYNTH_CLASSES
        self._bg = bg
        self._tile = max(1, self.sample_rate // 4)  # render_audio computes and caches 0.25 s tiles
        self._tiles: dict[int, np.ndarray] = {}

    @property
    def n_samples(self) -> int:
        return self.config.n_samples

    @property
    def n_frames(self) -> int:
        return self.config.n_frames

    def render_audio(self, start: int, count: int) -> np.ndarray:
        """float32 mono samples [count] from sample ``start``; zeros outside the scene.

        Served from cached 0.25 s tiles, so small blocks cost little; every sample is
        a pure function of its index, so tiles equal a direct render (``render_audio_direct``).
        """
        out = np.zeros(count, np.float32)
        a, b = max(0, start), min(self.n_samples, start + count)
        T = self._tile
        for k in range(a // T, (b - 1) // T + 1) if a < b else ():
            tile = self._tiles.get(k)
            if tile is None:
                tile = self.render_audio_direct(k * T, T)
                if len(self._tiles) >= 8:
                    self._tiles.pop(next(iter(self._tiles)))
                self._tiles[k] = tile
            lo, hi = max(a, k * T), min(b, (k + 1) * T)
            out[lo - start:hi - start] = tile[lo - k * T:hi - k * T]
        return out

    def render_audio_direct(self, start: int, count: int) -> np.ndarray:
        """Like ``render_audio`` but computed for exactly this block (no tiles, no cache)."""
        out = np.zeros(count, np.float64)
        a, b = max(0, start), min(self.n_samples, start + count)
        if a < b:
            seg = out[a - start:b - start]
            seg += self.config.noise_level * noise(self.key + (2,), a, b - a, self.sample_rate, ("pink",))
            for s in self.sounds:
                r = render_sound(s, a, b - a, self.sample_rate)
                if r is not None:
                    off, x = r
                    seg[off:off + x.size] += x
            np.clip(seg, -1.0, 1.0, out=seg)
        return out.astype(np.float32)

    def render_frame(self, index: int) -> np.ndarray:
        """uint8 RGB [height, width, 3] of frame ``index`` (time index / fps)."""
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        t = index / self.fps
        img = self._bg.copy()
        for sp in self.sprites:
            if sp.onset <= t < sp.offset:
                draw_sprite(img, sp, t, index)
        n = self.config.frame_noise
        if n:
            # random bytes mapped onto -n..n (a table lookup is 3x cheaper than integers())
            rng = np.random.default_rng([*self.key, 3, index])
            lut = (np.arange(256, dtype=np.int16) % (2 * n + 1)) - n
            raw = np.frombuffer(rng.bytes(img.size), np.uint8).reshape(img.shape)
            img = np.clip(img.astype(np.int16) + lut[raw], 0, 255).astype(np.uint8)
        return img

    def ground_truth(self) -> list[TrueEvent]:
        """Audio and visual intervals of every class event, sorted by onset."""
        out = []
        for e in self.events:
            if e.audio is not None:
                out.append(TrueEvent(e.label, "audio", e.audio[0], e.audio[1]))
            if e.visual is not None:
                out.append(TrueEvent(e.label, "visual", e.visual[0], e.visual[1]))
        return sorted(out, key=lambda x: (x.onset, x.offset, x.modality, SYNTH_CLASSES.index(x.label)))

    def weak_labels(self) -> list[str]:
        """The video-level labels: every class audible or visible somewhere, in class order."""
        present = {e.label for e in self.events}
        return [c for c in SYNTH_CLASSES if c in present]

    def dense(self, modality: str) -> np.ndarray:
        """uint8 [C, duration] one-second presence of each class in ``modality`` ("audio"/"visual")."""
        m = np.zeros((len(SYNTH_CLASSES), int(self.duration)), np.uint8)
        for ev in self.ground_truth():
            if ev.modality == modality:
                m[SYNTH_CLASSES.index(ev.label), int(ev.onset):int(ev.offset)] = 1
        return m


def make_scene(seed, config: SynthConfig = SynthConfig(), *, events: Sequence[PlannedEvent] | None = None,
               name: str | None = None) -> SynthScene:
    """Build a scene from ``seed`` (an int or a tuple of ints); same seed and config -> same scene.

    ``events`` replaces the drawn class events (their intervals may extend past the scene).
    """
    cfg = config
    key = _key(seed)
    rng = np.random.default_rng([*key, 0])
    plan = list(events) if events is not None else plan_events(rng, cfg)
    for e in plan:
        if e.label not in SYNTH_CLASSES:
            raise SynthError(f"unknown synth class {e.label!r}; known: {', '.join(SYNTH_CLASSES)}")
    sr, w, h, dur = cfg.sample_rate, cfg.width, cfg.height, float(cfg.duration)
    side = min(w, h)

    sounds: list[Sound] = []

    def add_sound(kind, on, off, i):
        params = draw_params(kind, rng, off - on)
        nkey = (*key, 1, i)
        snr = rng.uniform(*cfg.snr_db)
        gain = cfg.noise_level * 10 ** (snr / 20) / reference_rms(kind, params, nkey, sr)
        sounds.append(Sound(kind, on, off, float(gain), nkey, params))

    for i, e in enumerate(plan):
        if e.audio is not None:
            add_sound(e.label, e.audio[0], e.audio[1], i)
    for j in range(int(rng.poisson(cfg.distractor_rate * dur))):
        length = rng.uniform(*cfg.distractor_len)
        on = rng.uniform(-0.5 * length, dur - 0.5 * length)
        add_sound(DISTRACTOR_SOUNDS[int(rng.integers(len(DISTRACTOR_SOUNDS)))], on, on + length, 1000 + j)

    sprites: list[Sprite] = []
    for j in range(cfg.clutter):
        shape = CLUTTER_SHAPES[int(rng.integers(len(CLUTTER_SHAPES)))]
        s = rng.uniform(*cfg.clutter_size) * side
        sprites.append(Sprite("clutter", shape, _distinct_colour(rng, shape), s, rng.uniform(s, w - s),
                              rng.uniform(s, h - s), -1e9, 1e9, rng.uniform(0.6, 1.0), (*key, 4, 1000 + j),
                              draw_motion("clutter", rng, s, w, h)))
    for j in range(int(rng.poisson(cfg.visual_distractor_rate * dur))):
        shape = CLUTTER_SHAPES[int(rng.integers(len(CLUTTER_SHAPES)))]
        s = rng.uniform(*cfg.clutter_size) * side
        length = rng.uniform(*cfg.visual_distractor_len)
        on = rng.uniform(-0.5 * length, dur - 0.5 * length)
        sprites.append(Sprite("distractor", shape, _distinct_colour(rng, shape), s, rng.uniform(s, w - s),
                              rng.uniform(s, h - s), on, on + length, rng.uniform(0.6, 1.0), (*key, 4, 2000 + j),
                              draw_motion("distractor", rng, s, w, h)))
    centres: list[tuple[float, float]] = []
    for i, e in enumerate(plan):
        if e.visual is None:
            continue
        shape, colour, _ = VISUAL_SIGNATURES[e.label]
        s = rng.uniform(*cfg.object_size) * side
        m = min(1.5 * s + 2, 0.45 * side)
        lo_y = m + (0.8 * s if e.label == "drum" else 0)  # room to bounce up
        cand = np.stack([rng.uniform(m, w - m, 24), rng.uniform(min(lo_y, h - m), h - m, 24)], 1)
        if centres:
            d = np.min(np.linalg.norm(cand[:, None, :] - np.asarray(centres)[None], axis=2), axis=1)
            cx, cy = cand[int(np.argmax(d))]
        else:
            cx, cy = cand[0]
        centres.append((float(cx), float(cy)))
        jit = rng.uniform(-12, 12, 3)
        col = tuple(float(np.clip(c + d, 0, 255)) for c, d in zip(colour, jit))
        sprites.append(Sprite(e.label, shape, col, float(s), float(cx), float(cy), e.visual[0], e.visual[1],
                              rng.uniform(*cfg.alpha), (*key, 4, i), draw_motion(e.label, rng, s, w, h)))
    bg = background(np.random.default_rng([*key, 5]), w, h)
    return SynthScene(name=name or "synth_" + "_".join(map(str, key)), key=key, config=cfg, events=plan,
                      sounds=sounds, sprites=sprites, bg=bg)


# ---------------------------------------------------------------- isolated snippets for pretraining

def _isolated_scene(label: str | None, seed, config: SynthConfig, modality: str) -> SynthScene:
    cfg = replace(config, duration=1)
    if label is None:
        ev = []
    else:
        span = (-1.0, 2.0)  # the event runs through the whole second: no fade at its edges
        ev = [PlannedEvent(label, span if modality == "audio" else None, span if modality == "visual" else None)]
    return make_scene((*_key(seed), 77), cfg, events=ev, name=f"isolated_{label}")


def isolated_audio(label: str | None, seed, config: SynthConfig = SynthConfig()) -> np.ndarray:
    """float32 [sample_rate] one second holding ``label``'s sound (None: none) over noise and distractors."""
    return _isolated_scene(label, seed, config, "audio").render_audio(0, config.sample_rate)


def isolated_frames(label: str | None, seed, config: SynthConfig = SynthConfig(), frames: int = 8) -> np.ndarray:
    """uint8 [frames, H, W, 3]: ``frames`` evenly spaced frames of one second holding ``label``'s sprite
    (None: none) over background, clutter and distractors."""
    sc = _isolated_scene(label, seed, config, "visual")
    idx = [int(i * config.fps / frames) for i in range(frames)]
    return np.stack([sc.render_frame(i) for i in idx])


# ---------------------------------------------------------------- files

@dataclass(frozen=True)
class WriteConfig:
    """How a generated set is written."""

    val_fraction: float = 0.1      # share of clips in the validation split
    test_fraction: float = 0.2     # share of clips in the test split (the rest: training)
    crf: int = 18                  # x264 constant rate factor (lower: better quality, bigger files)
    preset: str = "veryfast"       # x264 speed preset
    audio_bitrate: str = "128k"    # AAC bit rate
    jobs: int = 1                  # clips encoded in parallel (one process each)


def ffmpeg_command(cfg: SynthConfig, path: str, audio_fd: int, wcfg: WriteConfig = WriteConfig()) -> list[str]:
    """ffmpeg reading raw RGB frames on stdin and float32 mono samples on ``audio_fd``; bit-exact output."""
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{cfg.width}x{cfg.height}", "-framerate", str(cfg.fps),
        "-i", "pipe:0",
        "-f", "f32le", "-ar", str(cfg.sample_rate), "-ac", "1", "-i", f"pipe:{audio_fd}",
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", wcfg.preset, "-crf", str(wcfg.crf), "-pix_fmt", "yuv420p",
        "-threads", "1", "-x264-params", "threads=1:sliced-threads=0",
        "-c:a", "aac", "-b:a", wcfg.audio_bitrate, "-ac", str(cfg.channels),
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
        "-f", "mp4", path,
    ]


def write_clip(scene: SynthScene, path, wcfg: WriteConfig = WriteConfig()) -> None:
    """Encode ``scene`` into ``path`` (mp4, H.264 + AAC) from its render_frame/render_audio calls."""
    if shutil.which("ffmpeg") is None:
        raise SynthError("ffmpeg is not installed or not on PATH; install it (apt-get install ffmpeg)")
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    sr = scene.sample_rate
    audio = np.concatenate([scene.render_audio(s, min(sr, scene.n_samples - s))
                            for s in range(0, scene.n_samples, sr)]).astype("<f4").tobytes()
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(ffmpeg_command(scene.config, str(tmp), r, wcfg), stdin=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(r,))
    except OSError as e:
        os.close(r)
        os.close(w)
        raise SynthError(f"cannot start ffmpeg: {e}") from None
    os.close(r)
    err: list = []

    def feed_audio():
        try:
            with os.fdopen(w, "wb") as f:
                f.write(audio)
        except BrokenPipeError as e:
            err.append(e)

    th = threading.Thread(target=feed_audio, daemon=True)
    th.start()
    try:
        for i in range(scene.n_frames):
            proc.stdin.write(scene.render_frame(i).tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    th.join()
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.wait() != 0:
        tmp.unlink(missing_ok=True)
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {proc.returncode}"
        raise SynthError(f"ffmpeg failed writing {path}: {last}")
    os.replace(tmp, path)


def clip_name(seed: int, index: int) -> str:
    """The LLP ``filename`` of clip ``index`` of the set generated from ``seed``."""
    return f"synth{seed}_{index:06d}"


def clip_scene(seed: int, index: int, config: SynthConfig = SynthConfig()) -> SynthScene:
    """Scene ``index`` of the set generated from ``seed`` (independent of the set's size)."""
    return make_scene((seed, index), config, name=clip_name(seed, index))


def split_indices(n: int, seed: int, wcfg: WriteConfig = WriteConfig()) -> dict[str, list[int]]:
    """Clip indices of the train/val/test splits (a seeded permutation; sorted within each split)."""
    perm = np.random.default_rng([seed, 99]).permutation(n)
    n_test = int(round(n * wcfg.test_fraction))
    n_val = int(round(n * wcfg.val_fraction))
    return {
        "test": sorted(int(i) for i in perm[:n_test]),
        "val": sorted(int(i) for i in perm[n_test:n_test + n_val]),
        "train": sorted(int(i) for i in perm[n_test + n_val:]),
    }


def _weak_rows(scenes) -> str:
    return "filename\tevent_labels\n" + "".join(f"{s.name}\t{','.join(s.weak_labels())}\n" for s in scenes)


def _dense_rows(scenes, modality: str) -> str:
    rows = ["filename\tonset\toffset\tevent_labels\n"]
    for s in scenes:
        for e in s.ground_truth():
            if e.modality == modality:
                rows.append(f"{s.name}\t{int(e.onset)}\t{int(e.offset)}\t{e.label}\n")
    return "".join(rows)


def annotation_files(scenes: list[SynthScene], splits: dict[str, list[int]]) -> dict[str, str]:
    """File name -> text of every annotation file for ``scenes`` (indexed like ``splits``)."""
    by = {k: [scenes[i] for i in v] for k, v in splits.items()}
    ev = sorted(splits["val"] + splits["test"])
    return {
        SYNTH_FILES["full"]: _weak_rows(scenes),
        SYNTH_FILES["train"]: _weak_rows(by["train"]),
        SYNTH_FILES["val"]: _weak_rows(by["val"]),
        SYNTH_FILES["test"]: _weak_rows(by["test"]),
        SYNTH_FILES["audio"]: _dense_rows([scenes[i] for i in ev], "audio"),
        SYNTH_FILES["visual"]: _dense_rows([scenes[i] for i in ev], "visual"),
        SYNTH_FILES["full_audio"]: _dense_rows(scenes, "audio"),
        SYNTH_FILES["full_visual"]: _dense_rows(scenes, "visual"),
    }


def _write_one(args) -> str:
    seed, index, cfg, wcfg, media = args
    sc = clip_scene(seed, index, cfg)
    write_clip(sc, Path(media) / f"{sc.name}.mp4", wcfg)
    return sc.name


@dataclass
class DatasetInfo:
    out_dir: Path
    names: list[str]
    splits: dict[str, list[int]]
    seconds: float                  # wall time of writing
    files: dict[str, str] = field(default_factory=dict)  # role -> file name


def write_dataset(out_dir, n: int, seed: int, config: SynthConfig = SynthConfig(), *,
                  write: WriteConfig = WriteConfig(), progress: Callable[[int, int], None] | None = None
                  ) -> DatasetInfo:
    """Write ``n`` clips to ``out_dir``/media and the LLP-format annotation files to ``out_dir``."""
    if n < 1:
        raise SynthError(f"the number of videos must be >= 1, got {n}")
    _key(seed)
    t0 = time.perf_counter()
    out = Path(out_dir)
    media = out / MEDIA_DIR
    try:
        media.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SynthError(f"cannot create {media}: {e.strerror}") from None
    scenes = [clip_scene(seed, i, config) for i in range(n)]
    jobs = [(seed, i, config, write, str(media)) for i in range(n)]
    done = 0
    if write.jobs <= 1:
        for a in jobs:
            _write_one(a)
            done += 1
            if progress:
                progress(done, n)
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=write.jobs) as ex:
            for _ in ex.map(_write_one, jobs, chunksize=4):
                done += 1
                if progress:
                    progress(done, n)
    splits = split_indices(n, seed, write)
    for fname, text in annotation_files(scenes, splits).items():
        (out / fname).write_text(text)
    manifest = {
        "format": "avparse-synth", "version": 1, "seed": seed, "videos": n,
        "classes": list(SYNTH_CLASSES), "config": asdict(config), "files": SYNTH_FILES,
        "media_dir": MEDIA_DIR, "media_ext": ".mp4",
        "splits": {k: len(v) for k, v in splits.items()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return DatasetInfo(out, [s.name for s in scenes], splits, time.perf_counter() - t0, dict(SYNTH_FILES))
