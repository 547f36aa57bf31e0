"""What the demo picture shows, collected from the runtime's threads.

:class:`OverlayState` collects what the picture shows, from any thread:
audio and video chunks (``audio``/``frame``, fed by a tap on the sources),
snippet probabilities (``prediction``, as a Pipeline observer: the
decision frontier and the latency), events (``emit``: it is a runtime sink)
and the runtime's stats (``stats``). ``view(t)`` copies what a picture at
media time ``t`` needs into a :class:`View`. Numpy only; it never reads the
wall clock (the latency comes from the wall-clock stamps that chunks and
probabilities carry). Drawing a View is ``drawing.Overlay``'s job.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from avparse.core.events import Event
from avparse.stream.types import StageObserver


@dataclass(frozen=True)
class OverlayConfig:
    width: int = 1280              # picture width in pixels
    height: int = 720              # picture height in pixels
    window_seconds: float = 15.0   # media time shown by the timeline (the last N seconds)
    envelope_step: float = 0.05    # seconds per bin of the audio envelope above the timeline
    level_seconds: float = 0.1     # audio level meter: RMS over the last this many seconds
    frame_seconds: float = 3.0     # video frames kept (a recording drawn late still finds the frame of its time)
    floor_db: float = -60.0        # bottom of the level meter, dBFS (its top is 0 dBFS)
    envelope_db: tuple = (-50.0, -10.0)  # dBFS at the bottom and the top of the sound envelope
    peak_hold: float = 1.5         # seconds a level peak marker stays before it falls
    latency_snippets: int = 5      # latency shown: median over this many recent snippets
    keep_seconds: float = 30.0     # history kept (spans, envelope) beyond which it is dropped

    def __post_init__(self):
        if self.width < 640 or self.height < 360:
            raise ValueError(f"overlay size must be at least 640x360, got {self.width}x{self.height}")
        if self.window_seconds <= 1 or self.keep_seconds < self.window_seconds:
            raise ValueError("window_seconds must be > 1 and keep_seconds >= window_seconds")


@dataclass
class Span:
    label: str
    modality: str
    onset: float
    offset: float | None   # None: still open
    score: float
    known: float = 0.0         # media time received when the onset arrived
    closed_known: float = 0.0  # ... and when the offset arrived


@dataclass
class View:
    """Everything one picture shows (a copy: safe to draw from any thread)."""

    t: float                                  # media time at the right edge of the timeline ("now")
    frame: np.ndarray | None = None           # uint8 RGB video frame to show
    level_db: float = -120.0                  # audio level now (RMS, dBFS)
    peak_db: float = -120.0                   # held peak (dBFS)
    envelope: np.ndarray | None = None        # dBFS per envelope bin, oldest first
    envelope_t0: float = 0.0                  # media time of envelope[0]'s start
    spans: list = field(default_factory=list)     # Span of the timeline window (predicted)
    truth: list = field(default_factory=list)     # (label, modality, onset, offset) ground truth, av derived
    frontier: float | None = None             # media time up to which decisions are made
    latency: float | None = None              # seconds from a snippet's start to its decision (median)
    compute: float | None = None              # of which: from the snippet's end to its decision
    snippet_seconds: float = 1.0
    events: int = 0                           # events received so far
    drops: int = 0                            # chunks dropped or missing so far (runtime stats)
    ended: bool = False                       # the stream has ended


class OverlayState(StageObserver):
    """What the demo picture shows, collected from the runtime's threads (thread-safe). It is a
    runtime sink (events, stats) and a Pipeline observer (``prediction``: every snippet's decision).

    Everything it learns is stamped with the media time received when it learnt it
    (``known``: the newest audio's end), so ``view(t, as_of=t)`` draws exactly what a
    live viewer saw at media time ``t``, however late the picture is drawn (a recording
    that falls behind, or is finished after the stream ended).
    """

    def __init__(self, config: OverlayConfig = OverlayConfig(), *, classes: Sequence[str],
                 truth: Callable[[float, float], list] | None = None):
        self.config = config
        self.classes = tuple(classes)
        self._truth = truth
        self._lock = threading.Lock()
        c = config
        self._frames: deque = deque()                      # (t, image), the last frame_seconds of them
        self._env_step = c.envelope_step
        self._env: dict[int, list] = {}                    # bin index -> [sum of squares, n]
        self._offsets: deque = deque(maxlen=50)            # wall_time - media time of recent audio chunks
        self.audio_end = 0.0                               # media time of the end of the newest audio
        self.audio_arrival: float | None = None            # wall stamp of that chunk's end (from the chunk)
        self.video_end = 0.0                               # media time of the newest frame
        self._spans: list[Span] = []                       # closed spans, in order of their offset events
        self._open: dict[tuple, Span] = {}                 # (label, modality) -> open span
        self._decisions: deque = deque()                   # (known, frontier, latency, compute) per snippet
        self.snippet_seconds = 1.0
        self._events: list[float] = []                     # known time of each event
        self.drops = 0
        self.ended = False

    # ------------------------------------------------------------- inputs
    def _known(self) -> float:
        return self.audio_end if self.audio_arrival is not None else self.video_end

    def audio(self, chunk) -> None:
        """An AudioChunk (float32 mono samples, media time ``t``)."""
        x = np.asarray(chunk.samples, np.float32)
        n = len(x)
        if n == 0:
            return
        sr = chunk.sample_rate
        end = chunk.t + n / sr
        step = self._env_step
        sq = np.square(x, dtype=np.float64)
        first = int(math.floor(chunk.t / step))
        last = int(math.floor((end - 1e-9) / step))
        with self._lock:
            for b in range(first, last + 1):    # a chunk spans one or a few bins
                lo = max(0, int(round((b * step - chunk.t) * sr)))
                hi = min(n, int(round(((b + 1) * step - chunk.t) * sr)))
                if hi > lo:
                    acc = self._env.setdefault(b, [0.0, 0])
                    acc[0] += float(sq[lo:hi].sum())
                    acc[1] += hi - lo
            self._offsets.append(chunk.wall_time - chunk.t)
            self.audio_end = max(self.audio_end, end)
            self.audio_arrival = chunk.wall_time + n / sr
            old = int((end - self.config.keep_seconds) / step)
            if first % 20 == 0:
                for b in [b for b in self._env if b < old]:
                    del self._env[b]

    def frame(self, frame) -> None:
        """A VideoFrame (uint8 RGB, media time ``t``)."""
        with self._lock:
            self._frames.append((frame.t, frame.image))
            while self._frames and self._frames[0][0] < frame.t - self.config.frame_seconds:
                self._frames.popleft()
            self.video_end = max(self.video_end, frame.t)

    def prediction(self, p) -> None:
        """The SnippetProbs of one snippet, as the tracker receives it (a Pipeline observer hook)."""
        with self._lock:
            lat = comp = None
            if self._offsets and p.wall_time:
                off = min(self._offsets)   # the least-delayed chunk: its wall stamp is nearest capture
                lat = p.wall_time - (off + float(p.t0))
                comp = p.wall_time - (off + float(p.decided_at))
            prev = self._decisions[-1][1] if self._decisions else 0.0
            self._decisions.append((self._known(), max(prev, float(p.decided_at)), lat, comp))
            while len(self._decisions) > 4 and self._decisions[0][0] < self._known() - self.config.keep_seconds:
                self._decisions.popleft()

    def emit(self, event: Event) -> None:
        """Runtime sink: an onset opens a span, an offset closes it."""
        with self._lock:
            known = self._known()
            self._events.append(known)
            key = (event.label, event.modality)
            if event.kind == "onset":
                self._open[key] = Span(event.label, event.modality, event.media_time, None, event.score,
                                       known=known)
            else:
                span = self._open.pop(key, None)
                onset = event.onset_time if event.onset_time is not None else (span.onset if span else event.media_time)
                self._spans.append(Span(event.label, event.modality, onset, event.media_time,
                                        span.score if span else event.score,
                                        known=span.known if span else known, closed_known=known))
                if len(self._spans) > 256:   # drop spans long out of any timeline
                    keep = known - self.config.keep_seconds
                    self._spans = [s for s in self._spans if s.offset >= keep]

    def stats(self, d: dict) -> None:
        """Runtime sink: the runtime's figures (drops are shown)."""
        drops = d.get("drops", {})
        with self._lock:
            self.drops = int(sum(drops.get("queue", {}).values()) + drops.get("missing_frames", 0)
                             + drops.get("audio_gaps", 0))

    def end(self) -> None:
        with self._lock:
            self.ended = True

    @staticmethod
    def _db(sumsq: float, n: int) -> float:
        return 10 * math.log10(sumsq / n + 1e-12) if n else -120.0

    # ------------------------------------------------------------- output
    def clock_end(self) -> float:
        """Media time received so far: the audio's end (the master clock), or the newest
        frame's time for a stream without sound."""
        with self._lock:
            return self._known()

    @property
    def events(self) -> int:
        return len(self._events)

    def media_now(self, wall: float, *, ahead: float = 0.25) -> float:
        """Media time at wall-clock time ``wall`` (the same clock as the chunks' stamps):
        the newest audio's end moved on by the wall time since it arrived, at most ``ahead``."""
        with self._lock:
            if self.audio_arrival is None:
                return self.video_end
            return self.audio_end + min(max(wall - self.audio_arrival, 0.0), ahead)

    def view(self, t: float, *, as_of: float | None = None, frame_at: bool = False) -> View:
        """What the picture at media time ``t`` shows, knowing what was known at media time
        ``as_of`` (None: everything known now). ``frame_at``: the newest frame whose media
        time is <= t (video on the audio's time line); otherwise the newest frame."""
        c = self.config
        with self._lock:
            frame = None
            if self._frames:
                frame = self._frames[-1][1]
                if frame_at:
                    frame = self._frames[0][1]
                    for ft, img in self._frames:
                        if ft > t + 1e-6:
                            break
                        frame = img
            step = self._env_step
            b1 = int(math.floor(min(t, self.audio_end) / step - 1e-9))
            b0 = int(math.floor(t / step)) - int(math.ceil(c.window_seconds / step))
            env = np.array([self._db(*self._env[b]) if b in self._env else -120.0 for b in range(b0, b1 + 1)])
            lv = [self._env[b] for b in range(b1 - max(1, round(c.level_seconds / step)) + 1, b1 + 1) if b in self._env]
            level = self._db(sum(x[0] for x in lv), sum(x[1] for x in lv))
            hold = int(round(c.peak_hold / step))
            peak = max(env[-hold:].max() if len(env) else -120.0, level)
            lo = t - c.window_seconds
            k = math.inf if as_of is None else as_of + 1e-9
            spans = []
            for s in list(self._spans) + list(self._open.values()):
                if s.known > k:
                    continue
                closed = s.offset is not None and s.closed_known <= k
                if closed and s.offset < lo:
                    continue
                spans.append(Span(s.label, s.modality, s.onset, s.offset if closed else None, s.score))
            known = [d for d in self._decisions if d[0] <= k]
            lat = [d for d in known[-c.latency_snippets:] if d[2] is not None]
            view = View(t=t, frame=frame, level_db=level, peak_db=peak, envelope=env,
                        envelope_t0=b0 * step, spans=spans, frontier=known[-1][1] if known else None,
                        latency=float(np.median([d[2] for d in lat])) if lat else None,
                        compute=float(np.median([d[3] for d in lat])) if lat else None,
                        snippet_seconds=self.snippet_seconds,
                        events=len(self._events) if as_of is None else bisect.bisect_right(self._events, k),
                        drops=self.drops, ended=self.ended and as_of is None)
        if self._truth is not None:
            view.truth = with_audiovisual(self._truth(lo - 1, t + 1))
        return view


def with_audiovisual(truth) -> list[tuple[str, str, float, float]]:
    """(label, modality, onset, offset) audio and visual intervals plus their audio-visual
    overlaps (the paper's rule: audio-visual where a class is both audible and visible)."""
    out = [(e.label, e.modality, float(e.onset), float(e.offset)) if hasattr(e, "label") else tuple(e)
           for e in truth]
    aud = [x for x in out if x[1] == "audio"]
    vis = [x for x in out if x[1] == "visual"]
    for a in aud:
        for v in vis:
            if a[0] == v[0]:
                on, off = max(a[2], v[2]), min(a[3], v[3])
                if off > on:
                    out.append((a[0], "audiovisual", on, off))
    return out
