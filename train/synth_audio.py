"""Audible signatures of the generated scenes: closed-form sounds and shaped noise.

Every sound here is a pure function of the absolute sample index, so a scene
renders the same samples whatever the block size: tonal and rhythmic sounds are
closed-form in time, and noise is built from fixed 50%-overlapping segments
(sqrt-Hann windows, one random generator per segment index), so a block of any
size at any start gets exactly the samples a whole-file render gets.

Each class has a distinct spectro-temporal shape that a small CNN can learn from
one 1 s log-mel snippet: every rhythmic pattern repeats at least twice a second.
Distractor sounds (tone blips, band-noise bursts) belong to no class and share
some features with classes (a blip resembles a whistle or alarm for a moment,
a noise burst resembles hiss), as real confusers do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

# name -> (frequency band in Hz where most of its energy lies, one-line description).
# The band is used by the docs and by the test that checks annotations match content.
AUDIO_SIGNATURES: dict[str, tuple[tuple[float, float], str]] = {
    "siren": ((500.0, 1500.0), "tone sweeping up and down (600-1300 Hz, 1.5-2.5 sweeps/s) with a 2nd harmonic"),
    "drum": ((40.0, 220.0), "low thumps with a falling pitch (150 -> 60 Hz), 2.5-4 beats/s"),
    "bell": ((700.0, 5500.0), "inharmonic partials (f, 2.76f, 5.40f; f 800-1100 Hz) struck every 0.4-0.6 s, ringing down"),
    "whistle": ((2000.0, 3300.0), "steady pure tone 2.2-3.0 kHz with 5-7 Hz vibrato"),
    "engine": ((30.0, 700.0), "buzzing sawtooth at 40-70 Hz, amplitude-modulated at 8-12 Hz"),
    "hiss": ((3500.0, 7500.0), "steady high band of noise (about 4-7 kHz)"),
    "bird": ((2600.0, 4800.0), "short rising chirps (2.8 -> 4.5 kHz, 60-110 ms), 5-8 chirps/s"),
    "alarm": ((850.0, 5600.0), "square-ish 900-1100 Hz tone switched on and off 3-5 times/s"),
    "clap": ((1000.0, 8000.0), "sharp broadband noise bursts (decay 12-20 ms), 3-5 per s, irregular"),
    "horn": ((200.0, 2500.0), "steady harmonic tone, fundamental 250-400 Hz, six harmonics, slight tremolo"),
}

DISTRACTOR_SOUNDS = ("blip", "burst")  # sounds that belong to no class
FADE = 0.01  # seconds of linear fade at the ends of every sound (no clicks)


@dataclass(frozen=True)
class Sound:
    """One sound in a scene: a class signature, a distractor or the background."""

    kind: str                  # a class name, "blip" or "burst"
    onset: float               # seconds (may lie outside the scene: isolated snippets)
    offset: float              # seconds
    gain: float                # linear amplitude applied to the unit-RMS signature
    key: tuple                 # random-generator key of this sound's noise segments
    params: dict = field(default_factory=dict)  # the instance's drawn parameters


def draw_params(kind: str, rng: np.random.Generator, length: float) -> dict:
    """Random parameters of one instance of ``kind`` lasting ``length`` seconds."""
    u = rng.uniform
    p: dict = {"phase": float(u(0.0, 1.0))}  # seconds of pattern already elapsed at onset; beats: sorted array
    span = length + 1.0  # beat lists cover the sound and the pattern's head start

    def beats(lo, hi, jitter):
        period = u(lo, hi)
        n = int(np.ceil(span / period)) + 2
        t = np.arange(n) * period + rng.uniform(-jitter, jitter, n) * period
        return np.sort(t - p["phase"])

    if kind == "siren":
        p.update(fc=u(850, 1000), fd=u(250, 320), fm=u(1.5, 2.5))
    elif kind == "drum":
        p.update(beats=beats(0.25, 0.4, 0.05), tau=u(0.06, 0.1))
    elif kind == "bell":
        p.update(beats=beats(0.4, 0.6, 0.05), f=u(800, 1100), tau=u(0.25, 0.4))
    elif kind == "whistle":
        p.update(f=u(2200, 3000), vib=u(5, 7), depth=u(20, 40))
    elif kind == "engine":
        p.update(f0=u(40, 70), am=u(8, 12))
    elif kind == "hiss":
        p.update(lo=u(3800, 4300), hi=u(6500, 7200), am=u(0.3, 0.8))
    elif kind == "bird":
        p.update(beats=beats(1 / 8, 1 / 5, 0.2), f1=u(2700, 2900), f2=u(4300, 4600), dur=u(0.06, 0.11))
    elif kind == "alarm":
        p.update(f=u(900, 1100), gate=u(3, 5))
    elif kind == "clap":
        p.update(beats=beats(0.2, 0.33, 0.3), tau=u(0.012, 0.02))
    elif kind == "horn":
        p.update(f0=u(250, 400), trem=u(3, 6))
    elif kind == "blip":
        p.update(f=float(np.exp(u(np.log(300), np.log(5000)))), h2=u(0.0, 0.5))
    elif kind == "burst":
        c = float(np.exp(u(np.log(300), np.log(3000))))
        p.update(lo=c, hi=c * u(1.3, 2.5))
    else:
        raise ValueError(f"unknown sound kind {kind!r}")
    return p


# ---------------------------------------------------------------- shaped noise

_SEG_CACHE: dict = {}
_SEG_LOCK = threading.Lock()
_SEG_CACHE_MAX = 128  # segments of 2 x 0.25 s (128 KB each at 16 kHz float64): a few live scenes' worth


@lru_cache(maxsize=256)
def _gain(n: int, sample_rate: int, shape: tuple) -> np.ndarray | None:
    """Spectral gain of ``shape`` for an n-point real FFT, scaled for unit output variance."""
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    if shape[0] == "pink":
        g = 1.0 / np.sqrt(np.maximum(f, 30.0))
    elif shape[0] == "band":
        lo, hi = shape[1], shape[2]
        w = max(1.0, 0.1 * (hi - lo))  # taper the band edges over 10% of the band (no ringing)
        g = np.clip(np.minimum((f - lo + w) / w, (hi + w - f) / w), 0.0, 1.0)
    elif shape[0] == "white":
        return None
    else:
        raise ValueError(f"unknown noise shape {shape!r}")
    return g / np.sqrt(np.mean(g * g) + 1e-30)


@lru_cache(maxsize=16)
def _window(n: int) -> np.ndarray:
    """sqrt-Hann of length n: two of them overlapped by half sum to unit power."""
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n))


def _segment(key: tuple, j: int, seg: int, sample_rate: int, shape: tuple) -> np.ndarray:
    """Segment ``j`` (samples [j*seg, j*seg + 2*seg)) of unit-variance shaped noise, windowed."""
    ck = (key, j, seg, sample_rate, shape)
    hit = _SEG_CACHE.get(ck)
    if hit is not None:
        return hit
    rng = np.random.default_rng([*key, j & 0x7FFFFFFF, 1 if j < 0 else 0])
    x = rng.standard_normal(2 * seg)
    g = _gain(2 * seg, sample_rate, shape)
    if g is not None:
        x = np.fft.irfft(np.fft.rfft(x) * g, 2 * seg)
    y = x * _window(2 * seg)
    with _SEG_LOCK:  # live sources may render scenes from several threads
        while len(_SEG_CACHE) >= _SEG_CACHE_MAX:
            _SEG_CACHE.pop(next(iter(_SEG_CACHE)))
        _SEG_CACHE[ck] = y
    return y


def noise(key: tuple, start: int, count: int, sample_rate: int, shape: tuple = ("white",)) -> np.ndarray:
    """Unit-variance noise on samples [start, start+count), identical for any block split.

    ``shape`` is ("white",), ("pink",) or ("band", lo_hz, hi_hz).
    """
    seg = max(64, sample_rate // 4)
    out = np.zeros(count)
    if count <= 0:
        return out
    j0 = start // seg - 1
    j1 = (start + count - 1) // seg
    for j in range(j0, j1 + 1):
        s = j * seg
        y = _segment(key, j, seg, sample_rate, shape)
        a, b = max(start, s), min(start + count, s + 2 * seg)
        if a < b:
            out[a - start:b - start] += y[a - s:b - s]
    return out


# ---------------------------------------------------------------- signatures

def _beat_sum(t: np.ndarray, beats: np.ndarray, tail: float, fn) -> np.ndarray:
    """Sum of fn(t - b) for beats b whose response [b, b+tail) meets t."""
    out = np.zeros_like(t)
    if t.size == 0:
        return out
    i0, i1 = np.searchsorted(beats, [t[0] - tail, t[-1]], side="left")
    for b in beats[max(0, i0 - 1):i1 + 1]:
        m = (t >= b) & (t < b + tail)
        if m.any():
            out[m] += fn(t[m] - b)
    return out


def _harmonics(ph: np.ndarray, amps) -> np.ndarray:
    """sum_h amps[h-1] * sin(h * ph), by the Chebyshev recurrence (one sin, one cos)."""
    s1, c2 = np.sin(ph), 2.0 * np.cos(ph)
    out = amps[0] * s1
    prev, cur = np.zeros_like(ph), s1
    for a in amps[1:]:
        prev, cur = cur, c2 * cur - prev
        if a:
            out += a * cur
    return out


def signature(s: Sound, t: np.ndarray, start: int, sample_rate: int) -> np.ndarray:
    """Un-gained, roughly unit-level signal of sound ``s`` at absolute times ``t`` (s).

    ``t`` is local: seconds since the sound's onset. ``start`` is the absolute index of
    t[0], used for block-independent noise.
    """
    p, k = s.params, s.kind
    tt = t + p["phase"]  # pattern time
    two_pi = 2 * np.pi
    if k == "siren":
        ph = two_pi * p["fc"] * tt - (p["fd"] / p["fm"]) * np.cos(two_pi * p["fm"] * tt)
        return np.sin(ph) + 0.35 * np.sin(2 * ph)
    if k == "drum":
        tau = p["tau"]

        def thump(d):
            ph = two_pi * (60.0 * d + (90.0 * 0.03) * (1 - np.exp(-d / 0.03)))  # f: 150 -> 60 Hz
            return np.sin(ph) * np.exp(-d / tau)

        return _beat_sum(t, p["beats"], 6 * tau, thump)
    if k == "bell":
        f, tau = p["f"], p["tau"]

        def strike(d):
            return np.exp(-d / tau) * (np.sin(two_pi * f * d) + 0.6 * np.sin(two_pi * 2.76 * f * d)
                                       + 0.4 * np.sin(two_pi * 5.40 * f * d) * np.exp(-d / 0.1))

        return _beat_sum(t, p["beats"], 5 * tau, strike)
    if k == "whistle":
        ph = two_pi * p["f"] * tt - (p["depth"] / p["vib"]) * np.cos(two_pi * p["vib"] * tt)
        return np.sin(ph)
    if k == "engine":
        saw = 2.0 * np.mod(p["f0"] * tt, 1.0) - 1.0
        return saw * (1.0 + 0.6 * np.sin(two_pi * p["am"] * tt))
    if k == "hiss":
        n = noise(s.key, start, t.size, sample_rate, ("band", p["lo"], p["hi"]))
        return n * (1.0 + 0.2 * np.sin(two_pi * p["am"] * tt))
    if k == "bird":
        f1, f2, dur = p["f1"], p["f2"], p["dur"]

        def chirp(d):
            ph = two_pi * (f1 * d + (f2 - f1) * d * d / (2 * dur))
            return np.sin(ph) * np.sin(np.pi * d / dur) ** 2

        return _beat_sum(t, p["beats"], dur, chirp)
    if k == "alarm":
        sq = _harmonics(two_pi * p["f"] * tt, (1.0, 0.0, 1 / 3, 0.0, 1 / 5))
        gate = np.mod(p["gate"] * tt, 1.0)
        env = np.clip(np.minimum(gate, 0.5 - gate) / 0.02, 0.0, 1.0)  # 50% duty, soft edges
        return sq * env
    if k == "clap":
        n = noise(s.key, start, t.size, sample_rate, ("band", 900.0, 8000.0))
        env = _beat_sum(t, p["beats"], 6 * p["tau"], lambda d: np.exp(-d / p["tau"]))
        return n * env
    if k == "horn":
        return _harmonics(two_pi * p["f0"] * tt, (1.0, 0.8, 0.6, 0.5, 0.35, 0.25)) * (
            1.0 + 0.15 * np.sin(two_pi * p["trem"] * tt))
    if k == "blip":
        ph = two_pi * p["f"] * tt
        return np.sin(ph) + p["h2"] * np.sin(2 * ph)
    if k == "burst":
        return noise(s.key, start, t.size, sample_rate, ("band", p["lo"], min(p["hi"], 0.45 * sample_rate)))
    raise ValueError(f"unknown sound kind {k!r}")


def reference_rms(kind: str, params: dict, key: tuple, sample_rate: int) -> float:
    """RMS of the signature over one second of its pattern (to set gains by SNR)."""
    s = Sound(kind, 0.0, 1.0, 1.0, key + (9,), params)
    n = sample_rate
    t = np.arange(n) / sample_rate
    x = signature(s, t, 0, sample_rate)
    return float(np.sqrt(np.mean(x * x)) + 1e-12)


def render_sound(s: Sound, start: int, count: int, sample_rate: int) -> tuple[int, np.ndarray] | None:
    """(offset into the block, gained samples) of ``s`` on [start, start+count), or None if silent there."""
    a = max(start, int(np.ceil(s.onset * sample_rate)))
    b = min(start + count, int(np.ceil(s.offset * sample_rate)))
    if a >= b:
        return None
    t_abs = np.arange(a, b) / sample_rate
    env = np.clip(np.minimum(t_abs - s.onset, s.offset - t_abs) / FADE, 0.0, 1.0)
    x = signature(s, t_abs - s.onset, a, sample_rate)
    return a - start, x * env * s.gain
