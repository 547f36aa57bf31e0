"""The plan of a generated scene: its settings (``SynthConfig``, the two layouts and their presets)
and which class events it holds, audible and visible when (``plan_events``), drawn from a seeded
generator. ``avparse.train.synth`` renders a plan into sound and pictures and writes datasets.

Layout ``llp`` (the default) reproduces LLP's annotation statistics (docs/synth.md; ``avparse synth
--stats`` prints them beside LLP's); ``independent`` draws each event's modality independently of
its class (the stress test for the noisy-label recipes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .synth_audio import AUDIO_SIGNATURES
from .synth_video import VISUAL_SIGNATURES

SYNTH_CLASSES: tuple[str, ...] = tuple(AUDIO_SIGNATURES)  # siren drum bell whistle engine hiss bird alarm clap horn
assert tuple(VISUAL_SIGNATURES) == SYNTH_CLASSES

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
