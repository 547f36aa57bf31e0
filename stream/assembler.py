"""Snippet assembly: timestamped audio blocks and video frames -> aligned snippets.

One assembler per stream. Audio is the master clock: the snippet grid is
``t0 = origin + k * hop`` in audio media time, and a snippet is emitted once
the audio covering ``[t0, t0 + snippet_seconds)`` is in (the stream's
:class:`~avparse.stream.grid.SnippetGrid`). Video frames are
placed on the audio clock (their media time mapped through a clock mapper, see
``sync``) and the ``frames_per_snippet`` slots of a snippet take the frame
nearest to each slot centre, whatever the source frame rate.

Faults are handled and counted, never allowed to shift the grid or stall:

- a gap in audio timestamps (dropped blocks) is zero-filled at its place;
  overlapping audio (a block that starts before the previous one ended) is
  trimmed;
- a snippet whose frames are not in yet waits for them, but only by media
  time: once the audio is ``late_tolerance`` seconds past the snippet's end it
  is emitted with the frames it has (nearest neighbour repeated) or black
  frames, and counted;
- a frame that arrives after its snippet was emitted is counted as late;
- camera and microphone clocks that drift apart are reconciled by mapping
  video time onto audio time (``sync="capture"``) through the capture times
  (``wall_time``) that the sources stamp on every chunk.

Numpy only; no clocks: time is what the chunks carry.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

import numpy as np

from .grid import SnippetGrid
from .types import AudioChunk, EndOfStream, Snippet, VideoFrame


@dataclass(frozen=True)
class AssemblerConfig:
    origin: float = 0.0               # media time of grid index 0
    video: bool = True                # the stream has video (False: audio only, black frames, no waiting)
    late_tolerance: float = 0.5       # wait at most this much audio time past a snippet's end for its frames
    frame_tolerance: float | None = None  # a slot whose nearest frame is farther than this counts as missing
                                          # (None: one slot width)
    sync: str = "media"               # "media": video and audio times share one clock (files, scenes);
                                      # "capture": map video time to audio time through wall_time (camera + mic)
    sync_window: int = 64             # capture sync: chunks per clock used for the offset estimate
    tail_min_fraction: float = 0.5    # at the end, emit a partial last snippet (zero-padded) if at least
                                      # this fraction of its audio is in
    max_gap: float = 10.0             # an audio gap longer than this (s) is a clock jump: the snippets in
                                      # it are skipped (grid indices jump, the grid's phase stays), not zero-filled
    max_frames: int = 512             # frames buffered at most (a stalled audio clock must not grow memory)

    def __post_init__(self):
        if self.sync not in ("media", "capture"):
            raise ValueError(f"sync must be 'media' or 'capture', got {self.sync!r}")


class ClockMapper:
    """Maps one clock onto another through shared capture (wall) times.

    Each chunk gives ``wall - media`` for its clock; capture delays only add to
    it, so the minimum over a recent window estimates the true offset and
    follows slow drift. ``to_audio(t_video) = t_video + off_video - off_audio``.
    """

    def __init__(self, window: int):
        self._a: deque[float] = deque(maxlen=window)
        self._v: deque[float] = deque(maxlen=window)

    def observe_audio(self, t: float, wall: float) -> None:
        self._a.append(wall - t)

    def observe_video(self, t: float, wall: float) -> None:
        self._v.append(wall - t)

    def to_audio(self, t: float) -> float:
        if not self._a or not self._v:
            return t
        return t + min(self._v) - min(self._a)

    def reset(self) -> None:
        self._a.clear()
        self._v.clear()


COUNTERS = (
    "snippets",          # snippets emitted
    "audio_chunks",      # audio blocks received
    "audio_gaps",        # gaps in audio timestamps (dropped blocks), zero-filled
    "missing_audio",     # samples zero-filled for gaps (and before the first block)
    "overlap_audio",     # samples dropped because a block overlapped the previous one
    "frames",            # video frames received
    "late_frames",       # frames whose snippet had already been emitted
    "missing_frames",    # frame slots filled by repeating the nearest frame (no frame near the slot)
    "video_timeouts",    # snippets emitted without waiting any longer for their frames
    "black_snippets",    # snippets emitted with black frames (no frame at all)
    "padded_tail",       # partial last snippets zero-padded at the end
    "audio_jumps",       # audio gaps longer than max_gap: snippets skipped instead of zero-filled
    "skipped_snippets",  # grid snippets skipped by those jumps
    "dropped_frames",    # frames dropped because more than max_frames were buffered
    "nonfinite_audio",   # NaN/inf samples received, replaced by zeros (a broken device or file)
)


class SnippetAssembler:
    """A stage: ``push(chunk) -> list[Snippet]``, ``flush()``, ``reset()``. Snippets are cut on ``grid``."""

    def __init__(self, config: AssemblerConfig = AssemblerConfig(), *, grid: SnippetGrid = SnippetGrid(),
                 stream: str = ""):
        self.config = config
        self.grid = grid
        self.stream = stream
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        c = self.config
        g = self.grid
        self.counters = {k: 0 for k in COUNTERS}
        self._next = 0                      # grid index of the next snippet to emit
        self._base = int(round(c.origin * g.sample_rate))  # sample index of _buf[0]
        self._buf = np.zeros(0, np.float32)  # audio from _base on
        self._end = self._base              # sample index one past the last audio received
        self._started = False
        self._frames_t: list[float] = []    # frame times on the audio clock, sorted
        self._frames: list[np.ndarray] = []
        self._video_ended = not c.video
        self._last_shape: tuple | None = None
        self._clock = ClockMapper(c.sync_window)
        self._gaps: list[tuple[int, int]] = []  # zero-filled sample ranges not yet emitted

    def stats(self) -> dict:
        return dict(self.counters)

    # ------------------------------------------------------------------ input
    def push(self, chunk) -> list[Snippet]:
        if isinstance(chunk, AudioChunk):
            jumped = self._push_audio(chunk)
            if jumped:
                return jumped + self._emit_ready()
        elif isinstance(chunk, VideoFrame):
            self._push_frame(chunk)
        elif isinstance(chunk, EndOfStream):
            return self.flush()
        else:
            raise TypeError(f"SnippetAssembler cannot take {type(chunk).__name__}")
        return self._emit_ready()

    def end_video(self) -> list[Snippet]:
        """The stream's video source ended: stop waiting for frames."""
        self._video_ended = True
        return self._emit_ready()

    def flush(self) -> list[Snippet]:
        """End of stream: emit every complete snippet, then a zero-padded tail."""
        c = self.config
        g = self.grid
        self._video_ended = True
        out = self._emit_ready()
        S, H = g.samples_per_snippet, g.hop_samples
        origin = int(round(c.origin * g.sample_rate))
        real_end = self._end  # padding must not make further tails
        while True:
            start = origin + self._next * H
            have = real_end - start
            if have < c.tail_min_fraction * S or have <= 0:
                break
            self._append_samples(np.zeros(max(0, start + S - self._end), np.float32))
            self.counters["padded_tail"] += 1
            out.append(self._make(self._next))
            self._next += 1
        return out

    def _push_audio(self, ch: AudioChunk) -> list[Snippet]:
        c = self.config
        g = self.grid
        if ch.sample_rate != g.sample_rate:
            raise ValueError(
                f"stream {self.stream!r}: audio at {ch.sample_rate} Hz, the assembler expects {g.sample_rate} Hz"
            )
        self.counters["audio_chunks"] += 1
        if c.sync == "capture" and ch.wall_time:
            self._clock.observe_audio(ch.t, ch.wall_time)
        x = np.asarray(ch.samples, np.float32).reshape(-1)
        bad = ~np.isfinite(x)
        if bad.any():  # NaN/inf would poison every HAN window it falls in (10 s of silence from the model)
            self.counters["nonfinite_audio"] += int(bad.sum())
            x = np.where(bad, np.float32(0.0), x)
        start = int(round(ch.t * g.sample_rate))
        out: list[Snippet] = []
        if self._started and start - self._end > c.max_gap * g.sample_rate:
            out = self._jump(start)
        if start > self._end:
            gap = start - self._end
            # before the first block: silence up to it, not a dropped block
            if self._started:
                self.counters["audio_gaps"] += 1
            self.counters["missing_audio"] += gap
            self._gaps.append((self._end, start))
            self._append_samples(np.zeros(gap, np.float32))
        elif start < self._end:
            cut = min(self._end - start, len(x))
            self.counters["overlap_audio"] += cut
            x = x[cut:]
        self._started = True
        self._append_samples(x)
        return out

    def _jump(self, start: int) -> list[Snippet]:
        """A clock jump: finish the snippets begun before it (zero-padded), skip to the grid
        snippet that holds ``start``; its samples before ``start`` are then zero-filled."""
        c = self.config
        g = self.grid
        S, H = g.samples_per_snippet, g.hop_samples
        origin = int(round(c.origin * g.sample_rate))
        out = []
        while origin + self._next * H < self._end:
            self._append_samples(np.zeros(max(0, origin + self._next * H + S - self._end), np.float32))
            out.append(self._make(self._next))
            self._next += 1
        k = max(self._next, (start - origin) // H)
        self.counters["audio_jumps"] += 1
        self.counters["skipped_snippets"] += k - self._next
        self._next = k
        self._base = self._end = origin + k * H
        self._buf = np.zeros(0, np.float32)
        self._gaps = []
        return out

    def _append_samples(self, x: np.ndarray) -> None:
        if len(x):
            self._buf = np.concatenate([self._buf, x]) if len(self._buf) else x.copy()
            self._end += len(x)

    def _push_frame(self, fr: VideoFrame) -> None:
        c = self.config
        self.counters["frames"] += 1
        if c.sync == "capture" and fr.wall_time:
            self._clock.observe_video(fr.t, fr.wall_time)
        t = self._clock.to_audio(fr.t) if c.sync == "capture" else fr.t
        # late: every slot it could serve has already been emitted
        if self._next > 0 and t < self._slot_centres(self._next - 1)[-1]:
            self.counters["late_frames"] += 1
        i = bisect.bisect_right(self._frames_t, t)
        self._frames_t.insert(i, t)
        self._frames.insert(i, fr.image)
        self._last_shape = fr.image.shape
        if len(self._frames) > c.max_frames:
            n = len(self._frames) - c.max_frames
            del self._frames_t[:n]
            del self._frames[:n]
            self.counters["dropped_frames"] += n

    # ----------------------------------------------------------------- output
    def _slot_centres(self, k: int) -> np.ndarray:
        c = self.config
        g = self.grid
        t0 = c.origin + k * g.hop
        w = g.snippet_seconds / g.frames_per_snippet
        return t0 + (np.arange(g.frames_per_snippet) + 0.5) * w

    def _emit_ready(self) -> list[Snippet]:
        c = self.config
        g = self.grid
        out = []
        S, H = g.samples_per_snippet, g.hop_samples
        origin = int(round(c.origin * g.sample_rate))
        while True:
            k = self._next
            end = origin + k * H + S
            if self._end < end:
                break
            if not self._video_ended:
                last_centre = self._slot_centres(k)[-1]
                have_video = bool(self._frames_t) and self._frames_t[-1] >= last_centre
                if not have_video:
                    audio_now = self._end / g.sample_rate
                    if audio_now < end / g.sample_rate + c.late_tolerance:
                        break  # wait for frames (bounded by media time)
                    self.counters["video_timeouts"] += 1
            out.append(self._make(k))
            self._next += 1
        return out

    def _make(self, k: int) -> Snippet:
        c = self.config
        g = self.grid
        S, H = g.samples_per_snippet, g.hop_samples
        origin = int(round(c.origin * g.sample_rate))
        start = origin + k * H
        audio = self._buf[start - self._base: start - self._base + S].copy()
        missing_audio = sum(max(0, min(b, start + S) - max(a, start)) for a, b in self._gaps)
        frames, missing = self._pick_frames(k)
        self.counters["missing_frames"] += missing
        self.counters["snippets"] += 1
        t0 = c.origin + k * g.hop
        # drop what no later snippet needs
        nxt = origin + (k + 1) * H
        drop = nxt - self._base
        if drop > 0:
            self._buf = self._buf[drop:]
            self._base = nxt
        self._gaps = [(a, b) for a, b in self._gaps if b > nxt]
        self._prune_frames(c.origin + (k + 1) * g.hop)
        return Snippet(
            stream=self.stream, index=k, t0=t0, audio=audio, frames=frames,
            missing_frames=missing, missing_audio=missing_audio,
        )

    def _pick_frames(self, k: int) -> tuple[np.ndarray, int]:
        c = self.config
        g = self.grid
        F = g.frames_per_snippet
        if not self._frames_t:
            h, w = (self._last_shape[:2] if self._last_shape else g.frame_size)
            if c.video:
                self.counters["black_snippets"] += 1
            return np.zeros((F, h, w, 3), np.uint8), F if c.video else 0
        centres = self._slot_centres(k)
        ts = np.asarray(self._frames_t)
        j = np.searchsorted(ts, centres)
        lo = np.clip(j - 1, 0, len(ts) - 1)
        hi = np.clip(j, 0, len(ts) - 1)
        pick = np.where(np.abs(ts[hi] - centres) < np.abs(ts[lo] - centres), hi, lo)
        tol = c.frame_tolerance if c.frame_tolerance is not None else g.snippet_seconds / F
        missing = int(np.sum(np.abs(ts[pick] - centres) > tol))
        return np.stack([self._frames[i] for i in pick]), missing

    def _prune_frames(self, t_next: float) -> None:
        # keep the last frame before the next snippet's start (to repeat it) and all after
        i = bisect.bisect_left(self._frames_t, t_next) - 1
        if i > 0:
            del self._frames_t[:i]
            del self._frames[:i]
