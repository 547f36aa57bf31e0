"""Generated audio-visual scenes with dense ground truth, and the dataset writer.

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

from .synth_audio import AUDIO_SIGNATURES, DISTRACTOR_SOUNDS, Sound, draw_params, noise, reference_rms, render_sound
from .synth_video import CLUTTER_SHAPES, VISUAL_SIGNATURES, Sprite, background, draw_motion, draw_sprite

SYNTH_CLASSES: tuple[str, ...] = tuple(AUDIO_SIGNATURES)  # siren drum bell whistle engine hiss bird alarm clap horn
assert tuple(VISUAL_SIGNATURES) == SYNTH_CLASSES

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


class SynthError(Exception):
    """A scene or dataset cannot be generated (bad config, ffmpeg missing or failing)."""


LAYOUTS = ("llp", "independent")

# LLP's statistics, measured on its dense annotations (val + test: 1,849 clips, 6,620 intervals; the
# paper repository's AVVP_eval_audio.csv / AVVP_eval_visual.csv, reproduced by `avparse synth --stats`).
# Per class of SYNTH_CLASSES, (p_audio_only, p_visual_only) of a class that is not its clip's leading one:
# some sounds are mostly heard off screen (siren, horn, alarm, whistle: like LLP's Speech, audible only
# in 77% of its pairs), engine is often seen and not heard (like LLP's Cat, 31%, and Car, 22%), the
# others are mostly audible and visible (most LLP classes: 75-98%).
LLP_CLASS_MODALITY: tuple[tuple[float, float], ...] = (
    (0.90, 0.00),  # siren
    (0.25, 0.10),  # drum
    (0.45, 0.05),  # bell
    (0.75, 0.00),  # whistle
    (0.15, 0.40),  # engine
    (0.70, 0.00),  # hiss
    (0.60, 0.05),  # bird
    (0.80, 0.00),  # alarm
    (0.35, 0.10),  # clap
    (0.85, 0.00),  # horn
)


@dataclass(frozen=True)
class SynthConfig:
    """What a generated scene looks and sounds like. Defaults: the standard 10 s set, with LLP's
    annotation statistics (``layout="llp"``); ``synth_preset("independent")`` is the earlier default,
    whose modality is drawn independently of the class (the stress test for noisy modality labels)."""

    duration: int = 10                 # seconds per scene (10 like LLP; longer for live runs and soak tests)
    sample_rate: int = 16000           # audio samples per second of render_audio and of the files
    channels: int = 1                  # audio channels written to files (the mono mix copied to each)
    fps: int = 24                      # video frames per second (24 = 3 x the paper's 8 sampled frames/s)
    width: int = 128                   # frame width in pixels
    height: int = 128                  # frame height in pixels
    layout: str = "llp"                # how class events are drawn: "llp" (LLP's statistics) or "independent"
    # --- layout "llp": every 10 s of scene is planned like an LLP clip (docs/synth.md has the figures)
    classes_per_clip: tuple[float, ...] = (0.333, 0.548, 0.094, 0.025)  # P(1, 2, 3, 4 classes) per 10 s (LLP)
    class_modality: tuple[tuple[float, float], ...] = LLP_CLASS_MODALITY  # per class: (p_audio_only, p_visual_only)
    p_lead_av: float = 0.80            # the clip's leading class is audible and visible (LLP clips of one class: 83%)
    lead_floor: float = 0.02           # leading class drawn with weight p_both(class) + lead_floor
    p_full: float = 0.72               # a class's presence in a modality spans the whole clip (else len_weights)
    len_weights: tuple[float, ...] = (944, 762, 597, 472, 290, 261, 237, 198, 166)  # of 1..9 s (LLP's histogram)
    p_split_audio: float = 0.35        # an audio presence is broken into two intervals (a third: 1/4 of those)
    p_split_visual: float = 0.18       # a visual presence is broken into two intervals (likewise)
    p_audio_inside: float = 0.85       # audible + visible, intervals differ: audio inside the visual (else v in a)
    # --- layout "independent": 1-3 events per 10 s, modality independent of the class
    min_events: int = 1                # fewest class events per 10 s of scene
    max_events: int = 3                # most class events per 10 s of scene
    min_len: int = 1                   # shortest event interval, whole seconds
    max_len: int = 10                  # longest event interval, whole seconds (capped by duration)
    p_audio_only: float = 0.25         # probability that an event is audible only
    p_visual_only: float = 0.25        # probability that an event is visible only (both: the rest)
    # --- both layouts
    p_same_interval: float = 0.65      # audible and visible: both intervals coincide (llp 0.65; independent 0.4)
    snr_db: tuple[float, float] = (0.0, 12.0)  # range of each sound's RMS over the background noise RMS, dB
    noise_level: float = 0.02          # RMS of the background (pink) noise, full scale 1
    distractor_rate: float = 0.3       # sounds of no class (tone blips, noise bursts) per second
    distractor_len: tuple[float, float] = (0.1, 1.5)  # seconds a distractor sound lasts
    clutter: int = 3                   # sprites of no class present throughout the scene
    visual_distractor_rate: float = 0.2  # sprites of no class that come and go, per second
    visual_distractor_len: tuple[float, float] = (0.5, 3.0)  # seconds a distractor sprite stays
    object_size: tuple[float, float] = (0.09, 0.14)  # class sprite half-extent, fraction of the shorter side
    clutter_size: tuple[float, float] = (0.05, 0.12)  # clutter/distractor half-extent, same unit
    alpha: tuple[float, float] = (0.75, 1.0)  # opacity range of class sprites
    frame_noise: int = 6               # sensor noise per pixel, uniform in +-frame_noise grey levels

    def __post_init__(self):
        checks = [
            (self.duration >= 1 and float(self.duration).is_integer(), "duration must be a whole number of seconds >= 1"),
            (self.sample_rate >= 8000, "sample_rate must be at least 8000"),
            (self.channels in (1, 2), "channels must be 1 or 2"),
            (self.fps >= 1, "fps must be >= 1"),
            (self.width >= 16 and self.height >= 16 and self.width % 2 == 0 and self.height % 2 == 0,
             "width and height must be even and >= 16 (H.264 4:2:0)"),
            (1 <= self.min_events <= self.max_events, "need 1 <= min_events <= max_events"),
            (1 <= self.min_len <= self.max_len, "need 1 <= min_len <= max_len"),
            (self.p_audio_only >= 0 and self.p_visual_only >= 0 and self.p_audio_only + self.p_visual_only <= 1,
             "p_audio_only and p_visual_only must be >= 0 and sum to at most 1"),
            (0 <= self.p_same_interval <= 1, "p_same_interval must be in [0, 1]"),
            (self.layout in LAYOUTS, f"layout must be one of {LAYOUTS}, got {self.layout!r}"),
            (len(self.classes_per_clip) >= 1 and all(p >= 0 for p in self.classes_per_clip)
             and sum(self.classes_per_clip) > 0, "classes_per_clip must be probabilities of 1, 2, ... classes"),
            (len(self.class_modality) == len(SYNTH_CLASSES)
             and all(len(m) == 2 and m[0] >= 0 and m[1] >= 0 and m[0] + m[1] <= 1 for m in self.class_modality),
             f"class_modality needs one (p_audio_only, p_visual_only) pair per class ({len(SYNTH_CLASSES)}), "
             "each >= 0 and summing to at most 1"),
            (len(self.len_weights) >= 1 and all(w >= 0 for w in self.len_weights) and sum(self.len_weights) > 0,
             "len_weights must be weights of 1, 2, ... seconds"),
            (all(0 <= getattr(self, k) <= 1 for k in ("p_lead_av", "p_full", "p_split_audio", "p_split_visual",
                                                    "p_audio_inside")) and self.lead_floor >= 0,
             "p_lead_av, p_full, p_split_audio, p_split_visual and p_audio_inside must be in [0, 1]"),
            (self.snr_db[0] <= self.snr_db[1], "snr_db must be (low, high)"),
            (self.noise_level > 0, "noise_level must be > 0 (sound levels are set relative to it)"),
            (self.distractor_rate >= 0 and self.visual_distractor_rate >= 0, "distractor rates must be >= 0"),
            (self.clutter >= 0, "clutter must be >= 0"),
            (0 <= self.frame_noise <= 64, "frame_noise must be in [0, 64]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SynthError(f"bad synth config: {msg}")

    @property
    def n_samples(self) -> int:
        return int(self.duration * self.sample_rate)

    @property
    def n_frames(self) -> int:
        return int(self.duration * self.fps)


# Named scene settings: "llp" = SynthConfig() (LLP's statistics); "independent" = the default before
# LLP's statistics (modality drawn independently of the class, 1-3 events of 1-10 s per 10 s, a quarter
# audible only, a quarter visible only): the stress test for noisy modality labels.
PRESETS: dict[str, dict] = {
    "llp": {},
    "independent": {"layout": "independent", "p_same_interval": 0.4},
}


def synth_preset(name: str, **changes) -> SynthConfig:
    """The SynthConfig of preset ``name`` (see PRESETS) with ``changes`` on top."""
    if name not in PRESETS:
        raise SynthError(f"unknown scene preset {name!r}; known: {', '.join(PRESETS)}")
    return SynthConfig(**{**PRESETS[name], **changes})


@dataclass(frozen=True)
class PlannedEvent:
    """One class event of a scene: its audible and visible intervals (None: not in that modality)."""

    label: str
    audio: tuple[float, float] | None
    visual: tuple[float, float] | None


def _key(seed) -> tuple[int, ...]:
    key = tuple(int(s) for s in (seed if isinstance(seed, (tuple, list)) else (seed,)))
    if any(k < 0 for k in key):
        raise SynthError(f"seeds must be >= 0, got {seed!r}")
    return key


def _draw_interval(rng, cfg: SynthConfig) -> tuple[float, float]:
    hi = min(cfg.max_len, cfg.duration)
    lo = min(cfg.min_len, hi)
    length = int(rng.integers(lo, hi + 1))
    onset = int(rng.integers(0, cfg.duration - length + 1))
    return (float(onset), float(onset + length))


def _free(intervals: list, iv) -> bool:
    """True if ``iv`` neither overlaps nor touches any interval in ``intervals``."""
    return all(iv[1] < a or iv[0] > b for a, b in intervals)


def plan_events(rng: np.random.Generator, cfg: SynthConfig) -> list[PlannedEvent]:
    """Draw a scene's class events: count, class, modality and whole-second intervals."""
    if cfg.layout == "independent":
        return _plan_independent(rng, cfg)
    return _plan_llp(rng, cfg)


def _plan_independent(rng: np.random.Generator, cfg: SynthConfig) -> list[PlannedEvent]:
    """Layout "independent": 1-3 events per 10 s, modality independent of the class."""
    n = int(rng.integers(cfg.min_events, cfg.max_events + 1))
    n = max(1, int(round(n * cfg.duration / 10.0)))
    used: dict[tuple[str, str], list] = {}
    events: list[PlannedEvent] = []
    for _ in range(n):
        r = rng.uniform()
        mod = "audio" if r < cfg.p_audio_only else "visual" if r < cfg.p_audio_only + cfg.p_visual_only else "both"
        a = _draw_interval(rng, cfg) if mod in ("audio", "both") else None
        v = None
        if mod == "visual":
            v = _draw_interval(rng, cfg)
        elif mod == "both":
            v = a if rng.uniform() < cfg.p_same_interval else _draw_interval(rng, cfg)
        # prefer a class not yet in the scene; else one whose same-modality intervals stay apart
        fresh = [c for c in SYNTH_CLASSES if not any(k[0] == c for k in used)]
        order = list(rng.permutation(fresh)) + list(rng.permutation([c for c in SYNTH_CLASSES if c not in fresh]))
        for c in order:
            if (a is None or _free(used.get((c, "audio"), []), a)) and (v is None or _free(used.get((c, "visual"), []), v)):
                if a is not None:
                    used.setdefault((c, "audio"), []).append(a)
                if v is not None:
                    used.setdefault((c, "visual"), []).append(v)
                events.append(PlannedEvent(str(c), a, v))
                break
    return events


def _presence(rng, cfg: SynthConfig, length: int) -> tuple[int, int]:
    """One modality's whole-second span in a clip of ``length`` s: the whole clip with p_full, else
    1..9 s by len_weights (capped by the clip), placed uniformly."""
    if rng.uniform() < cfg.p_full:
        return 0, length
    w = np.asarray(cfg.len_weights, float)
    n = min(int(rng.choice(np.arange(1, w.size + 1), p=w / w.sum())), length)
    on = int(rng.integers(0, length - n + 1))
    return on, on + n


def _split(rng, span: tuple[int, int], p: float, depth: int = 0) -> list[tuple[int, int]]:
    """``span`` as one interval, or with probability p broken by a gap of whole seconds into two (the
    second piece again with probability 1/4): runs of one class in one modality, apart, as in LLP."""
    a, b = span
    if b - a >= 3 and depth < 2 and rng.uniform() < p:
        g0 = int(rng.integers(a + 1, b - 1))
        g1 = int(rng.integers(g0 + 1, b))
        return [(a, g0)] + _split(rng, (g1, b), 0.25, depth + 1)
    return [span]


def _inner(rng, span: tuple[int, int]) -> tuple[int, int]:
    """A strictly shorter whole-second interval inside ``span`` (length >= 2)."""
    n = int(rng.integers(1, span[1] - span[0]))
    on = int(rng.integers(span[0], span[1] - n + 1))
    return on, on + n


def _plan_clip(rng, cfg: SynthConfig, length: int) -> list[tuple[str, list, list]]:
    """One LLP-like clip of ``length`` s: [(class, audio intervals, visual intervals)]."""
    k_p = np.asarray(cfg.classes_per_clip, float)
    k = min(int(rng.choice(np.arange(1, k_p.size + 1), p=k_p / k_p.sum())), len(SYNTH_CLASSES))
    mod = np.asarray(cfg.class_modality, float)                     # [C, 2]: audio only, visual only
    lead_w = 1.0 - mod.sum(axis=1) + cfg.lead_floor                 # audible-and-visible classes lead
    lead = int(rng.choice(len(SYNTH_CLASSES), p=lead_w / lead_w.sum()))
    others = [int(c) for c in rng.permutation(len(SYNTH_CLASSES)) if c != lead][:k - 1]
    out = []
    for j, c in enumerate([lead] + others):
        p_a, p_v = mod[c]
        r = rng.uniform()
        if j == 0:   # the leading class: audible and visible with p_lead_av, else by the class's leaning
            kind = "both" if r < cfg.p_lead_av else (
                "audio" if rng.uniform() * (p_a + p_v) < p_a or p_a + p_v == 0 else "visual")
        else:
            kind = "audio" if r < p_a else "visual" if r < p_a + p_v else "both"
        if kind == "audio":
            a, v = _split(rng, _presence(rng, cfg, length), cfg.p_split_audio), []
        elif kind == "visual":
            a, v = [], _split(rng, _presence(rng, cfg, length), cfg.p_split_visual)
        else:
            span = _presence(rng, cfg, length)
            if rng.uniform() < cfg.p_same_interval or span[1] - span[0] < 2:
                a = v = _split(rng, span, cfg.p_split_visual)              # the same runs in both
            elif rng.uniform() < cfg.p_audio_inside:
                a, v = _split(rng, _inner(rng, span), cfg.p_split_audio), [span]
            else:
                a, v = [span], [_inner(rng, span)]
        out.append((SYNTH_CLASSES[c], a, v))
    return out


def _plan_llp(rng: np.random.Generator, cfg: SynthConfig) -> list[PlannedEvent]:
    """Layout "llp": each 10 s of the scene (the last one possibly shorter) planned as an LLP clip;
    runs of one class in one modality that touch across two clips are merged."""
    runs: dict[tuple[str, str], list[list[float]]] = {}
    order: list[tuple[str, str]] = []
    for start in range(0, cfg.duration, 10):
        for label, a, v in _plan_clip(rng, cfg, min(10, cfg.duration - start)):
            for modality, ivs in (("audio", a), ("visual", v)):
                for lo, hi in ivs:
                    key = (label, modality)
                    lst = runs.setdefault(key, [])
                    if key not in order:
                        order.append(key)
                    if lst and lst[-1][1] >= start + lo:   # touches the previous clip's run: one run
                        lst[-1][1] = float(start + hi)
                    else:
                        lst.append([float(start + lo), float(start + hi)])
    events = []
    for label, modality in order:
        for lo, hi in runs[(label, modality)]:
            iv = (lo, hi)
            events.append(PlannedEvent(label, iv if modality == "audio" else None, iv if modality == "visual" else None))
    # an audible and visible run with the same interval is one event (one sound, one sprite, as before)
    merged: list[PlannedEvent] = []
    for e in events:
        twin = next((i for i, m in enumerate(merged) if m.label == e.label and m.audio is not None and m.visual is None
                     and e.visual is not None and m.audio == e.visual), None)
        if twin is not None:
            merged[twin] = PlannedEvent(e.label, merged[twin].audio, e.visual)
        else:
            merged.append(e)
    return merged


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
