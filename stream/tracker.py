"""The onset/offset tracker: snippet probabilities -> typed events.

One state machine per (stream, class, modality). Audio and visual run on the
snippet probabilities of their modality (optionally gated by the video-level
probability, as the paper's evaluation does: snippet prob >= 0.5 AND video
prob >= 0.5, YapengTian/AVVP-ECCV20 ``main_avvp.py`` eval); audio-visual runs on
``min(audio, visual)``, which crosses a threshold exactly when both do: the
paper's ``y_av = y_a * y_v``.

Each snippet decides one cell of media time: ``[t0, t0 + hop)`` centred in the
snippet (``t0 + (snippet - hop) / 2`` to ``t0 + (snippet + hop) / 2``; the first
snippet's cell starts at its t0). With hop = 1 s these are the LLP snippets.
Events are stamped at cell boundaries (``media_time``) and with the media time
of the newest evidence used (``decided_at``, from the probabilities).

Hysteresis: off -> on when p >= on_threshold, on -> off when p < off_threshold.
Minimum durations: an onset is emitted once the class has been on for
``min_on`` seconds (shorter bursts are dropped); an offset once it has been off
for ``min_off`` seconds (shorter gaps are bridged). Numpy only; no clocks.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from avparse.core.events import Event, Segment
from avparse.core.labels import MODALITIES

from .grid import SnippetGrid


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

    @classmethod
    def from_options(cls, *, on=None, off=None, min_on=None, min_off=None, video_gate: bool = False) -> "TrackerConfig":
        """The config of command-line style options: None keeps the default; ``off`` defaults to
        ``on`` (no hysteresis unless asked). Raises ValueError for nonsense values."""
        d = cls()
        on = d.on_threshold if on is None else on
        return cls(on_threshold=on, off_threshold=on if off is None else off,
                   min_on=d.min_on if min_on is None else min_on, min_off=d.min_off if min_off is None else min_off,
                   video_gate=video_gate)

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


_OFF, _PENDING_ON, _ON, _PENDING_OFF = range(4)


class _Track:
    __slots__ = ("state", "start", "score", "onset", "off_start", "off_score")

    def __init__(self):
        self.state = _OFF
        self.start = self.onset = self.off_start = 0.0
        self.score = self.off_score = 0.0


class Tracker:
    """A stage: ``push(SnippetProbs) -> list[Event]``, ``flush(reason)``, ``reset()``. Cells lie on ``grid``."""

    def __init__(self, config: TrackerConfig, *, classes: Sequence[str], grid: SnippetGrid = SnippetGrid()):
        self.config = config
        self.grid = grid
        self.classes = tuple(classes)
        self.reset()

    def reset(self) -> None:
        self._tracks: dict[str, list[list[_Track]]] = {}  # stream -> [modality][class]
        self._last: dict[str, tuple[float, float]] = {}   # stream -> (last cell end, decided_at)

    def open_events(self, stream: str | None = None) -> list[tuple[str, str, str, float]]:
        """(stream, label, modality, onset time) of every emitted onset not yet closed."""
        out = []
        for s, per_mod in self._tracks.items():
            if stream is not None and s != stream:
                continue
            for m, row in enumerate(per_mod):
                for c, tr in enumerate(row):
                    if tr.state in (_ON, _PENDING_OFF):
                        out.append((s, self.classes[c], MODALITIES[m], tr.onset))
        return out

    def _cell(self, p: SnippetProbs) -> tuple[float, float]:
        g = self.grid
        lo = p.t0 + (g.snippet_seconds - g.hop) / 2
        hi = p.t0 + (g.snippet_seconds + g.hop) / 2
        if p.index == 0:
            lo = p.t0
        return lo, hi

    def gated(self, p: SnippetProbs) -> np.ndarray:
        """[3, C]: audio, visual and audio-visual probabilities after the optional gate."""
        c = self.config
        fp = np.asarray(p.frame_prob, np.float64)
        if fp.shape != (2, len(self.classes)):
            raise ValueError(f"frame_prob must be [2, {len(self.classes)}], got {list(fp.shape)}")
        if c.video_gate:
            gate = np.asarray(p.global_prob, np.float64) >= c.gate_threshold
            fp = np.where(gate[None, :], fp, 0.0)
        return np.concatenate([fp, fp.min(axis=0, keepdims=True)], axis=0)

    def push(self, p: SnippetProbs) -> list[Event]:
        c = self.config
        probs = self.gated(p)
        lo, hi = self._cell(p)
        tracks = self._tracks.setdefault(
            p.stream, [[_Track() for _ in self.classes] for _ in MODALITIES]
        )
        self._last[p.stream] = (hi, p.decided_at)
        out: list[Event] = []
        for m, mod in enumerate(MODALITIES):
            for ci, label in enumerate(self.classes):
                x = float(probs[m, ci])
                tr = tracks[m][ci]
                ev = lambda kind, t, score, **kw: Event(
                    kind, p.stream, label, mod, round(t, 6), round(score, 6), round(p.decided_at, 6), **kw
                )
                if tr.state == _OFF:
                    if x >= c.on_threshold:
                        tr.state, tr.start, tr.score = _PENDING_ON, lo, x
                elif tr.state == _PENDING_ON:
                    if x < c.off_threshold:
                        tr.state = _OFF  # too short: dropped
                        continue
                    tr.score = max(tr.score, x)
                elif tr.state == _ON:
                    if x < c.off_threshold:
                        tr.state, tr.off_start, tr.off_score = _PENDING_OFF, lo, x
                elif tr.state == _PENDING_OFF:
                    if x >= c.on_threshold:
                        tr.state = _ON  # gap too short: bridged
                        continue
                # confirmations (durations measured to the end of this cell)
                if tr.state == _PENDING_ON and hi - tr.start >= c.min_on - 1e-9:
                    tr.state, tr.onset = _ON, tr.start
                    out.append(ev("onset", tr.start, tr.score))
                elif tr.state == _PENDING_OFF and hi - tr.off_start >= c.min_off - 1e-9:
                    tr.state = _OFF
                    out.append(ev("offset", tr.off_start, tr.off_score, reason="ended", onset_time=tr.onset))
        return out

    def flush(self, reason: str = "end-of-stream", *, stream: str | None = None) -> list[Event]:
        """Close every open event (of ``stream``, or all) with an offset saying ``reason``.

        An event already falling (off, but not for ``min_off`` yet) ends where it
        fell; one still on ends at the end of the last decided cell. Onsets not
        yet confirmed (shorter than ``min_on``) are dropped.
        """
        out: list[Event] = []
        for s in list(self._tracks):
            if stream is not None and s != stream:
                continue
            end, decided = self._last[s]
            for m, mod in enumerate(MODALITIES):
                for ci, label in enumerate(self.classes):
                    tr = self._tracks[s][m][ci]
                    if tr.state == _ON:
                        t, score = end, 0.0
                    elif tr.state == _PENDING_OFF:
                        t, score = tr.off_start, tr.off_score
                    else:
                        tr.state = _OFF
                        continue
                    out.append(Event("offset", s, label, mod, round(t, 6), round(score, 6), round(decided, 6),
                                     reason=reason, onset_time=tr.onset))
                    tr.state = _OFF
            del self._tracks[s]
            del self._last[s]
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
