"""The tracker's decision rule as arrays: smoothing, the video-level gate, hysteresis, minimum durations.

A *column* is one (modality, class) track of one stream; the rule's parameters
are per column, so one rule can give every class and modality its own
thresholds (what ``avparse calibrate`` chooses). Numpy only; no clock.

Per snippet, for every column, in this order:

1. **Smoothing** of the snippet probability (causal: nothing from the future):
   a causal median over the last ``median`` cells (1: none; it delays a clean
   onset by ``(median - 1) // 2`` cells), then a two-state HMM **forward
   filter** (the filtering half of HMM/Viterbi smoothing, as sound event
   detection systems use it, without the backward pass that would take
   decisions back): the class is on or off, it changes state between two
   snippets with prior probability ``switch``, and the snippet probability is
   read as the evidence ``p / (1 - p)`` (the model's posterior at an even
   prior). The output is the filtered posterior P(on | snippets so far). With
   ``switch = 0.5`` it is the probability itself; with a small ``switch`` one
   weak snippet cannot turn a class on or off, two in a row or one strong one
   can (a switch needs ``p >= 1 - switch`` from a settled state).
2. **Gate** (``gate_threshold`` per column, 0: none): the value counts only
   while the gate probability (the window's video-level probability) reaches
   the threshold; else it is 0.
3. **Hysteresis** (``on`` / ``off`` per column) and **minimum durations**
   (``min_on`` / ``min_off`` seconds per column), measured to the end of the
   current cell: the state machine of :class:`DecisionBank`.

:class:`ModalityRule` and :class:`DecisionRules` are the same parameters as
plain frozen values, written into checkpoints by ``avparse calibrate``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from avparse.core.labels import MODALITIES

GATES = ("none", "global", "modality")   # no gate; the window's video-level probability; that of the modality
RULES_VERSION = 1

_OFF, _PENDING_ON, _ON, _PENDING_OFF = range(4)
_EPS = 1e-9
_P_CLIP = 1e-6   # probabilities are clipped to [eps, 1 - eps] for the filter's odds


def _prob(v, name: str) -> float:
    if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 <= v <= 1.0):  # NaN fails too
        raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
    return float(v)


def _seconds(v, name: str) -> float:
    if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite seconds >= 0, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class ModalityRule:
    """How the snippet probabilities of one modality become onsets and offsets (per class where a tuple)."""

    on: tuple[float, ...]          # per class: (smoothed, gated) probability that turns the class on
    off: tuple[float, ...]         # per class: it turns off below this (<= on; lower: hysteresis)
    min_on: float = 0.0            # seconds on (to the end of the cell) before the onset is published
    min_off: float = 0.0           # seconds off before the offset is published (shorter gaps are bridged)
    gate: str = "none"             # video-level gate: "none", "global" (the paper's), "modality" (a_prob / v_prob)
    gate_threshold: float = 0.5    # the gate opens at this video-level probability (the paper's 0.5)
    median: int = 1                # causal median over this many cells before the filter (odd; 1: none)
    switch: float = 0.5            # HMM forward filter: prior probability of a state change per cell (0.5: none)

    def __post_init__(self):
        on = tuple(_prob(v, "on threshold") for v in self.on)
        off = tuple(_prob(v, "off threshold") for v in self.off)
        if len(on) != len(off) or not on:
            raise ValueError(f"on and off need one threshold per class, got {len(on)} and {len(off)}")
        bad = [i for i, (a, b) in enumerate(zip(on, off)) if b > a]
        if bad:
            raise ValueError(f"off threshold ({off[bad[0]]}) must not exceed on threshold ({on[bad[0]]})")
        object.__setattr__(self, "on", on)
        object.__setattr__(self, "off", off)
        _seconds(self.min_on, "min_on")
        _seconds(self.min_off, "min_off")
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {', '.join(GATES)}, got {self.gate!r}")
        _prob(self.gate_threshold, "gate_threshold")
        if not (isinstance(self.median, numbers.Integral) and self.median >= 1 and self.median % 2 == 1):
            raise ValueError(f"median must be an odd number of cells >= 1, got {self.median!r}")
        if not (isinstance(self.switch, numbers.Real) and 0.0 < self.switch <= 0.5):
            raise ValueError(f"switch must be a probability in (0, 0.5], got {self.switch!r}")

    @classmethod
    def uniform(cls, classes: int, *, on: float = 0.5, off: float | None = None, **kw) -> "ModalityRule":
        """The same thresholds for every class."""
        return cls(on=(on,) * classes, off=((on if off is None else off),) * classes, **kw)

    def to_dict(self) -> dict:
        return {"on": list(self.on), "off": list(self.off), "min_on": self.min_on, "min_off": self.min_off,
                "gate": self.gate, "gate_threshold": self.gate_threshold, "median": self.median,
                "switch": self.switch}

    @classmethod
    def from_dict(cls, d: dict) -> "ModalityRule":
        if not isinstance(d, dict):
            raise ValueError(f"a modality rule must be a dict, got {type(d).__name__}")
        known = {"on", "off", "min_on", "min_off", "gate", "gate_threshold", "median", "switch"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown modality rule fields {', '.join(sorted(unknown))}")
        if not isinstance(d.get("on"), (list, tuple)) or not isinstance(d.get("off"), (list, tuple)):
            raise ValueError("a modality rule needs on and off lists")
        return cls(**{**d, "on": tuple(d["on"]), "off": tuple(d["off"])})


@dataclass(frozen=True)
class DecisionRules:
    """A rule per modality (audio, visual, audio-visual) for one class list at one hop."""

    hop: float                      # seconds between snippets the rules were chosen for
    classes: tuple[str, ...]        # class names, the model's output order
    audio: ModalityRule
    visual: ModalityRule
    audiovisual: ModalityRule
    info: dict = field(default_factory=dict, compare=False)  # plain facts: how they were chosen, figures

    def __post_init__(self):
        if not (isinstance(self.hop, numbers.Real) and math.isfinite(self.hop) and self.hop > 0):
            raise ValueError(f"hop must be positive seconds, got {self.hop!r}")
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        for m in MODALITIES:
            if len(getattr(self, m).on) != len(self.classes):
                raise ValueError(f"{m} rule has {len(getattr(self, m).on)} thresholds for {len(self.classes)} classes")

    @property
    def modalities(self) -> tuple[ModalityRule, ModalityRule, ModalityRule]:
        return (self.audio, self.visual, self.audiovisual)

    @classmethod
    def uniform(cls, classes: Sequence[str], *, hop: float = 1.0, **kw) -> "DecisionRules":
        """One rule (``ModalityRule.uniform(**kw)``) for every modality."""
        r = ModalityRule.uniform(len(classes), **kw)
        return cls(hop=hop, classes=tuple(classes), audio=r, visual=r, audiovisual=r)

    def with_overrides(self, *, on=None, off=None, min_on=None, min_off=None, gate=None) -> "DecisionRules":
        """These rules with command-line style overrides (None keeps the rule's value): ``on`` sets every
        on threshold (and every off threshold too unless ``off`` is given), ``gate`` True is the paper's
        global gate at 0.5 for every modality."""
        def one(r: ModalityRule) -> ModalityRule:
            kw = {}
            if on is not None:
                kw["on"] = (on,) * len(r.on)
                kw["off"] = ((on if off is None else off),) * len(r.on)
            elif off is not None:
                kw["off"] = tuple(min(off, a) for a in r.on)
            if min_on is not None:
                kw["min_on"] = min_on
            if min_off is not None:
                kw["min_off"] = min_off
            if gate:
                kw["gate"], kw["gate_threshold"] = "global", 0.5
            return replace(r, **kw)

        return replace(self, audio=one(self.audio), visual=one(self.visual), audiovisual=one(self.audiovisual))

    def at_hop(self, hop: float) -> "DecisionRules":
        """The rules moved to another hop: durations stay in seconds, the filter's switch probability keeps
        its rate per second (``1 - (1 - s) ** (hop / self.hop)``), the median its span in seconds."""
        if abs(hop - self.hop) < 1e-9:
            return self
        k = hop / self.hop

        def one(r: ModalityRule) -> ModalityRule:
            s = r.switch if r.switch >= 0.5 else min(0.5, 1.0 - (1.0 - r.switch) ** k)
            med = max(1, int(round((r.median - 1) / k)) // 2 * 2 + 1) if r.median > 1 else 1
            return replace(r, switch=s, median=med)

        return replace(self, hop=float(hop), audio=one(self.audio), visual=one(self.visual),
                       audiovisual=one(self.audiovisual))

    def to_dict(self) -> dict:
        return {"version": RULES_VERSION, "hop": self.hop, "classes": list(self.classes),
                **{m: getattr(self, m).to_dict() for m in MODALITIES}, "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict) -> "DecisionRules":
        """Raises ValueError (one line) for anything that is not a valid rule set."""
        if not isinstance(d, dict):
            raise ValueError(f"decision rules must be a dict, got {type(d).__name__}")
        v = d.get("version")
        if not isinstance(v, int) or v > RULES_VERSION or v < 1:
            raise ValueError(f"decision rules version {v!r} is not one this avparse reads (1..{RULES_VERSION})")
        missing = [k for k in ("hop", "classes", *MODALITIES) if k not in d]
        if missing:
            raise ValueError(f"decision rules lack {', '.join(missing)}")
        if not isinstance(d["classes"], (list, tuple)) or not all(isinstance(c, str) for c in d["classes"]):
            raise ValueError("decision rules: classes is not a list of names")
        info = d.get("info") or {}
        return cls(hop=d["hop"], classes=tuple(d["classes"]),
                   **{m: ModalityRule.from_dict(d[m]) for m in MODALITIES},
                   info=dict(info) if isinstance(info, dict) else {})


CALIBRATION_FORMAT = "avparse.decision-rules"


def calibration_record(rules: Sequence[DecisionRules], **facts) -> dict:
    """What a checkpoint stores (its ``calibration`` entry): the rules of every calibrated hop and
    plain facts about how they were chosen."""
    return {"format": CALIBRATION_FORMAT, "version": RULES_VERSION, "rules": [r.to_dict() for r in rules],
            **facts}


def calibrations(record: dict | None) -> list[DecisionRules]:
    """The rules of a checkpoint's ``calibration`` entry ([] for None); ValueError (one line) if it is
    not one this avparse reads."""
    if record is None:
        return []
    if not isinstance(record, dict) or record.get("format") != CALIBRATION_FORMAT:
        fmt = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"calibration entry of format {fmt!r}, expected {CALIBRATION_FORMAT!r}")
    rules = record.get("rules")
    if not isinstance(rules, (list, tuple)) or not rules:
        raise ValueError("calibration entry holds no rules")
    out = [DecisionRules.from_dict(r) for r in rules]
    hops = [r.hop for r in out]
    if len(set(hops)) != len(hops):
        raise ValueError(f"calibration entry has two rule sets for one hop ({hops})")
    return out


def select_rules(calibrations: Sequence[DecisionRules], hop: float) -> DecisionRules | None:
    """The calibrated rules for ``hop``: those chosen at that hop, else those of the nearest hop moved
    to it (:meth:`DecisionRules.at_hop`); None without any."""
    if not calibrations:
        return None
    best = min(calibrations, key=lambda r: (abs(math.log(r.hop / hop)), -r.hop))
    return best.at_hop(hop)


def checkpoint_rules(record: dict | None, hop: float) -> DecisionRules | None:
    """The rules a checkpoint's ``calibration`` entry gives at ``hop`` (None: not calibrated).
    ValueError (one line) for an entry this avparse cannot read."""
    return select_rules(calibrations(record), hop)


# ------------------------------------------------------------------ the arrays
def snippet_cell(index: int, t0: float, hop: float, snippet_seconds: float) -> tuple[float, float]:
    """The cell of media time a snippet decides: ``hop`` long, centred in the snippet (the first
    snippet's cell starts at its t0)."""
    lo = t0 + (snippet_seconds - hop) / 2
    hi = t0 + (snippet_seconds + hop) / 2
    return (t0 if index == 0 else lo), hi


class Smoother:
    """Causal median + HMM forward filter over columns (any array shape), per-column parameters."""

    def __init__(self, median: np.ndarray, switch: np.ndarray):
        self.median = np.asarray(median, np.int64)
        self.switch = np.asarray(switch, np.float64)
        self.active = bool((self.median > 1).any() or (self.switch < 0.5).any())
        self._sizes = sorted(set(int(k) for k in np.unique(self.median) if k > 1))
        self.reset()

    def reset(self) -> None:
        self._history: list[np.ndarray] = []   # the last max(median) - 1 inputs
        self._post: np.ndarray | None = None   # filtered posterior of the previous cell

    def push(self, x: np.ndarray) -> np.ndarray:
        if not self.active:
            return x
        x = np.asarray(x, np.float64)
        if self._sizes:
            self._history.append(x)
            del self._history[:-max(self._sizes)]
            y = x.copy()
            for k in self._sizes:
                h = self._history[-k:]   # fewer cells at the start of a stream
                med = np.median(np.stack(h), axis=0) if len(h) > 1 else h[0]
                y = np.where(self.median == k, med, y)
            x = y
        if (self.switch < 0.5).any():
            p = np.clip(x, _P_CLIP, 1.0 - _P_CLIP)
            odds = p / (1.0 - p)
            s = self.switch
            prior = np.full_like(p, 0.5) if self._post is None else self._post * (1 - s) + (1 - self._post) * s
            post = prior * odds / (prior * odds + (1.0 - prior))
            self._post = post
            x = np.where(s < 0.5, post, x)
        return x


class DecisionBank:
    """The hysteresis / minimum-duration state machine of many columns of one stream.

    ``step(x, lo, hi)`` decides the cell ``[lo, hi)`` from the values ``x`` (after smoothing and the
    gate) and returns ``(onsets, offsets)``: boolean masks of the columns whose onset (at ``start``)
    or offset (at ``off_start``) is published now. A column turns on at ``x >= on``, off at ``x < off``;
    its onset is published once it has been on for ``min_on`` seconds (shorter bursts are dropped),
    its offset once it has been off for ``min_off`` (shorter gaps are bridged).
    """

    def __init__(self, on, off, min_on, min_off):
        self.on = np.asarray(on, np.float64)
        self.off = np.broadcast_to(np.asarray(off, np.float64), self.on.shape)
        self.min_on = np.broadcast_to(np.asarray(min_on, np.float64), self.on.shape) - _EPS
        self.min_off = np.broadcast_to(np.asarray(min_off, np.float64), self.on.shape) - _EPS
        shape = self.on.shape
        self.state = np.zeros(shape, np.int8)
        self.start = np.zeros(shape)      # media time where the pending / current event began
        self.score = np.zeros(shape)      # the highest value while pending on
        self.onset = np.zeros(shape)      # media time of the published onset
        self.off_start = np.zeros(shape)  # media time where the event fell (pending off)
        self.off_score = np.zeros(shape)  # the value when it fell

    def step(self, x: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        st = self.state
        is_off, is_pon, is_on, is_poff = st == _OFF, st == _PENDING_ON, st == _ON, st == _PENDING_OFF
        rise = x >= self.on
        fall = x < self.off
        start_on = is_off & rise                  # off -> pending on
        drop = is_pon & fall                      # pending on -> off: too short, dropped
        keep_on = is_pon & ~fall                  # still pending on
        start_off = is_on & fall                  # on -> pending off
        bridge = is_poff & rise                   # pending off -> on: gap too short, bridged
        self.start = np.where(start_on, lo, self.start)
        self.score = np.where(start_on, x, np.where(keep_on, np.maximum(self.score, x), self.score))
        self.off_start = np.where(start_off, lo, self.off_start)
        self.off_score = np.where(start_off, x, self.off_score)
        pon = start_on | keep_on
        poff = start_off | (is_poff & ~bridge)
        onsets = pon & (hi - self.start >= self.min_on)
        offsets = poff & (hi - self.off_start >= self.min_off)
        self.onset = np.where(onsets, self.start, self.onset)
        new = st.copy()
        new[drop] = _OFF
        new[bridge] = _ON
        new[pon] = _PENDING_ON
        new[poff] = _PENDING_OFF
        new[onsets] = _ON
        new[offsets] = _OFF
        self.state = new
        return onsets, offsets

    def open_mask(self) -> np.ndarray:
        """Columns whose onset was published and whose offset not yet."""
        return (self.state == _ON) | (self.state == _PENDING_OFF)

    def falling_mask(self) -> np.ndarray:
        """Open columns already off but not for ``min_off`` yet (they end where they fell)."""
        return self.state == _PENDING_OFF


def gate_source(kind: str, row: int, global_prob, a_prob=None, v_prob=None) -> np.ndarray:
    """The video-level probabilities [C] that gate modality ``row`` (0 audio, 1 visual, 2 audio-visual):
    the window's ``global_prob`` ("global", the paper's), or the modality's own ``a_prob`` / ``v_prob``
    (their minimum for audio-visual; ``global_prob`` where the model gives none)."""
    glob = np.asarray(global_prob, np.float64)
    if kind != "modality":
        return glob
    a = glob if a_prob is None else np.asarray(a_prob, np.float64)
    v = glob if v_prob is None else np.asarray(v_prob, np.float64)
    return (a, v, np.minimum(a, v))[row]


def rule_arrays(rules: DecisionRules) -> dict:
    """The rules as [3, C] arrays (modality rows audio, visual, audio-visual)."""
    mods = rules.modalities
    C = len(rules.classes)
    col = lambda f: np.array([[f(r)] * C for r in mods], np.float64)  # noqa: E731
    return {
        "on": np.array([r.on for r in mods], np.float64),
        "off": np.array([r.off for r in mods], np.float64),
        "min_on": col(lambda r: r.min_on),
        "min_off": col(lambda r: r.min_off),
        "gate": [r.gate for r in mods],
        "gate_threshold": col(lambda r: r.gate_threshold if r.gate != "none" else 0.0),
        "median": np.array([[r.median] * C for r in mods], np.int64),
        "switch": col(lambda r: r.switch),
    }
