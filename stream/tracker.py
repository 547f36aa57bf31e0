"""The onset/offset tracker: snippet probabilities -> typed events.

One state machine per (stream, class, modality). Audio and visual run on the
snippet probabilities of their modality; audio-visual runs on
``min(audio, visual)``, which crosses a threshold exactly when both do: the
paper's ``y_av = y_a * y_v``.

Each snippet decides one cell of media time: ``[t0, t0 + hop)`` centred in the
snippet (``t0 + (snippet - hop) / 2`` to ``t0 + (snippet + hop) / 2``; the first
snippet's cell starts at its t0). With hop = 1 s these are the LLP snippets.
Events are stamped at cell boundaries (``media_time``) and with the media time
of the newest evidence used (``decided_at``, from the probabilities).

The decision rule (``stream/decision.py``): optional causal smoothing (median,
two-state HMM forward filter), an optional video-level gate (the paper's:
snippet prob >= 0.5 AND video prob >= 0.5, YapengTian/AVVP-ECCV20
``main_avvp.py`` eval), hysteresis (off -> on when p >= on, on -> off when
p < off) and minimum durations (an onset is emitted once the class has been on
for ``min_on`` seconds, shorter bursts are dropped; an offset once it has been
off for ``min_off`` seconds, shorter gaps are bridged). ``TrackerConfig``'s
scalar fields give every class and modality the same rule (the defaults: the
paper's bare threshold 0.5); calibrated ``DecisionRules`` (``avparse
calibrate``, stored in the checkpoint) give each its own. Nothing published is
taken back: smoothing only looks at the past. Numpy only; no clocks.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

from avparse.core.events import Event, Segment
from avparse.core.labels import MODALITIES

from .decision import DecisionBank, DecisionRules, Smoother, gate_source, rule_arrays, snippet_cell
from .grid import SnippetGrid

__all__ = ["MODALITIES", "SnippetProbs", "Tracker", "TrackerConfig", "events_to_segments", "segments_to_matrix",
           "events_to_matrices"]


@dataclass
class SnippetProbs:
    """What inference hands the tracker for one snippet of one stream."""

    stream: str
    index: int                # snippet index on the stream's grid
    t0: float                 # media time of the snippet's start
    frame_prob: np.ndarray    # float32 [2, C]: snippet probabilities, row 0 audio, row 1 visual
    global_prob: np.ndarray   # float32 [C]: video-level probability of the window it was predicted in
    a_prob: np.ndarray | None = None  # float32 [C]: video-level audio probability of that window
    v_prob: np.ndarray | None = None  # float32 [C]: video-level visual probability of that window
    decided_at: float = 0.0   # media time of the end of the newest snippet in that window
    wall_time: float = 0.0    # runtime clock when the prediction was made (latency figures)
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrackerConfig:
    on_threshold: float = 0.5    # a class turns on when its probability reaches this (paper: 0.5)
    off_threshold: float = 0.5   # ... and off when it falls below this (<= on_threshold: hysteresis)
    min_on: float = 0.0          # seconds a class must stay on before its onset is emitted
    min_off: float = 0.0         # seconds a class must stay off before its offset is emitted
    video_gate: bool = False     # the paper's gate: also require the video-level probability >= gate_threshold
    gate_threshold: float = 0.5  # video-level threshold of the gate (paper: 0.5)
    rules: DecisionRules | None = None  # calibrated per-class, per-modality rules (avparse calibrate); when set
                                        # they replace the six decision fields above (None: those fields apply
                                        # to every class and modality, the bare rule)

    @classmethod
    def from_options(cls, *, on=None, off=None, min_on=None, min_off=None, video_gate: bool = False,
                     rules: DecisionRules | None = None) -> "TrackerConfig":
        """The config of command-line style options: None keeps the default; ``off`` defaults to
        ``on`` (no hysteresis unless asked). With calibrated ``rules`` (a checkpoint's), the options
        override the rules' values for every class and modality (``DecisionRules.with_overrides``).
        Raises ValueError for nonsense values."""
        d = cls()
        on_ = d.on_threshold if on is None else on
        cfg = cls(on_threshold=on_, off_threshold=on_ if off is None else off,
                  min_on=d.min_on if min_on is None else min_on, min_off=d.min_off if min_off is None else min_off,
                  video_gate=video_gate)
        if rules is not None:
            cfg = replace(cfg, rules=rules.with_overrides(on=on, off=off, min_on=min_on, min_off=min_off,
                                                          gate=video_gate))
        return cfg

    def decision_rules(self, classes: Sequence[str], *, hop: float = SnippetGrid.hop) -> DecisionRules:
        """The rules the tracker applies at ``hop``: the calibrated ones (moved to ``hop``), else the six
        fields for every class."""
        if self.rules is not None:
            if tuple(self.rules.classes) != tuple(classes):
                raise ValueError(f"the calibrated rules are for {len(self.rules.classes)} classes "
                                 f"({', '.join(self.rules.classes[:3])}, ...), the model has {len(classes)} "
                                 f"({', '.join(tuple(classes)[:3])}, ...)")
            return self.rules.at_hop(hop)
        return DecisionRules.uniform(classes, hop=hop, on=self.on_threshold, off=self.off_threshold,
                                     min_on=self.min_on, min_off=self.min_off,
                                     gate="global" if self.video_gate else "none", gate_threshold=self.gate_threshold)

    def __post_init__(self):
        for name in ("on_threshold", "off_threshold", "gate_threshold"):
            v = getattr(self, name)
            if not (isinstance(v, numbers.Real) and 0.0 <= v <= 1.0):  # NaN fails too: it never crosses
                raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in (self.min_on, self.min_off)):
            raise ValueError(f"min_on and min_off must be finite seconds, got {self.min_on!r}, {self.min_off!r}")
        if self.off_threshold > self.on_threshold:
            raise ValueError(
                f"off_threshold ({self.off_threshold}) must not exceed on_threshold ({self.on_threshold})"
            )
        if self.min_on < 0 or self.min_off < 0:
            raise ValueError("min_on and min_off must be >= 0")
        if self.rules is not None and not isinstance(self.rules, DecisionRules):
            raise TypeError(f"rules must be DecisionRules or None, not {type(self.rules).__name__}")


class _StreamState:
    __slots__ = ("smoother", "bank", "last")

    def __init__(self, smoother: Smoother, bank: DecisionBank):
        self.smoother, self.bank = smoother, bank
        self.last = (0.0, 0.0)   # (end of the last decided cell, its decided_at)


class Tracker:
    """A stage: ``push(SnippetProbs) -> list[Event]``, ``flush(reason)``, ``reset()``. Cells lie on ``grid``."""

    def __init__(self, config: TrackerConfig, *, classes: Sequence[str], grid: SnippetGrid = SnippetGrid()):
        self.config = config
        self.grid = grid
        self.classes = tuple(classes)
        self.rules = config.decision_rules(self.classes, hop=grid.hop)
        a = rule_arrays(self.rules)
        self._arrays = a
        self._gates = a["gate"]
        self.reset()

    def reset(self) -> None:
        self._streams: dict[str, _StreamState] = {}

    def _new_stream(self) -> _StreamState:
        a = self._arrays
        return _StreamState(Smoother(a["median"], a["switch"]),
                            DecisionBank(a["on"], a["off"], a["min_on"], a["min_off"]))

    def open_events(self, stream: str | None = None) -> list[tuple[str, str, str, float]]:
        """(stream, label, modality, onset time) of every emitted onset not yet closed."""
        out = []
        for s, st in self._streams.items():
            if stream is not None and s != stream:
                continue
            for m, c in zip(*np.nonzero(st.bank.open_mask())):
                out.append((s, self.classes[c], MODALITIES[m], float(st.bank.onset[m, c])))
        return out

    def _cell(self, p: SnippetProbs) -> tuple[float, float]:
        return snippet_cell(p.index, p.t0, self.grid.hop, self.grid.snippet_seconds)

    def inputs(self, p: SnippetProbs) -> np.ndarray:
        """[3, C]: audio, visual and audio-visual (their minimum) snippet probabilities."""
        fp = np.asarray(p.frame_prob, np.float64)
        if fp.shape != (2, len(self.classes)):
            raise ValueError(f"frame_prob must be [2, {len(self.classes)}], got {list(fp.shape)}")
        return np.concatenate([fp, fp.min(axis=0, keepdims=True)], axis=0)

    def _gate(self, p: SnippetProbs) -> np.ndarray | None:
        """[3, C] boolean: where the video-level gate is open (None: no gate anywhere)."""
        if all(g == "none" for g in self._gates):
            return None
        thr = self._arrays["gate_threshold"]
        return np.stack([np.ones(len(self.classes), bool) if g == "none" else
                         gate_source(g, m, p.global_prob, p.a_prob, p.v_prob) >= thr[m]
                         for m, g in enumerate(self._gates)])

    def gated(self, p: SnippetProbs) -> np.ndarray:
        """[3, C]: the values the decision is made on, for a stream without smoothing history."""
        x = self.inputs(p)
        g = self._gate(p)
        return x if g is None else np.where(g, x, 0.0)

    def push(self, p: SnippetProbs) -> list[Event]:
        x = self.inputs(p)
        st = self._streams.get(p.stream)
        if st is None:
            st = self._streams[p.stream] = self._new_stream()
        x = st.smoother.push(x)
        g = self._gate(p)
        if g is not None:
            x = np.where(g, x, 0.0)
        lo, hi = self._cell(p)
        st.last = (hi, p.decided_at)
        onsets, offsets = st.bank.step(x, lo, hi)
        if not (onsets.any() or offsets.any()):
            return []
        b = st.bank
        out: list[Event] = []
        decided = round(p.decided_at, 6)
        for m, c in zip(*np.nonzero(onsets | offsets)):
            label, mod = self.classes[c], MODALITIES[m]
            if onsets[m, c]:
                out.append(Event("onset", p.stream, label, mod, round(float(b.start[m, c]), 6),
                                 round(float(b.score[m, c]), 6), decided))
            else:
                out.append(Event("offset", p.stream, label, mod, round(float(b.off_start[m, c]), 6),
                                 round(float(b.off_score[m, c]), 6), decided, reason="ended",
                                 onset_time=round(float(b.onset[m, c]), 6)))
        return out

    def flush(self, reason: str = "end-of-stream", *, stream: str | None = None) -> list[Event]:
        """Close every open event (of ``stream``, or all) with an offset saying ``reason``.

        An event already falling (off, but not for ``min_off`` yet) ends where it
        fell; one still on ends at the end of the last decided cell. Onsets not
        yet confirmed (shorter than ``min_on``) are dropped.
        """
        out: list[Event] = []
        for s in list(self._streams):
            if stream is not None and s != stream:
                continue
            st = self._streams.pop(s)
            end, decided = st.last
            b = st.bank
            falling = b.falling_mask()
            for m, c in zip(*np.nonzero(b.open_mask())):
                t, score = (float(b.off_start[m, c]), float(b.off_score[m, c])) if falling[m, c] else (end, 0.0)
                out.append(Event("offset", s, self.classes[c], MODALITIES[m], round(t, 6), round(score, 6),
                                 round(decided, 6), reason=reason, onset_time=round(float(b.onset[m, c]), 6)))
        return out


# ------------------------------------------------------------- offline helpers
def events_to_segments(events: Iterable[Event]) -> list[Segment]:
    """Pair onsets with their offsets into closed Segments (unclosed onsets are ignored)."""
    open_: dict[tuple, Event] = {}
    out: list[Segment] = []
    for e in events:
        if e.kind == "onset":
            open_[e.key] = e
        elif e.key in open_:
            on = open_.pop(e.key)
            out.append(Segment(e.stream, e.label, e.modality, on.media_time, e.media_time, on.score,
                               extra={"reason": e.reason}))
    out.sort(key=lambda s: (s.stream, s.onset, s.label, s.modality))
    return out


def segments_to_matrix(segments: Iterable[Segment], classes: Sequence[str], num_snippets: int, *,
                       modality: str, snippet_seconds: float = 1.0) -> np.ndarray:
    """Dense uint8 [C, T]: 1 where a segment of ``modality`` covers at least half of snippet t."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(classes), num_snippets), np.uint8)
    starts = np.arange(num_snippets) * snippet_seconds
    for s in segments:
        if s.modality != modality:
            continue
        if s.label not in index:
            raise ValueError(f"segment label {s.label!r} is not one of the classes")
        overlap = np.clip(np.minimum(starts + snippet_seconds, s.offset) - np.maximum(starts, s.onset), 0, None)
        out[index[s.label], overlap >= snippet_seconds / 2 - 1e-9] = 1
    return out


def events_to_matrices(events: Iterable[Event], classes: Sequence[str], num_snippets: int, *,
                       snippet_seconds: float = 1.0) -> dict[str, np.ndarray]:
    """Dense [C, T] binary matrices per modality ("audio", "visual", "audiovisual") for the metrics."""
    segs = events_to_segments(events)
    return {m: segments_to_matrix(segs, classes, num_snippets, modality=m, snippet_seconds=snippet_seconds)
            for m in MODALITIES}
