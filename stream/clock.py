"""The clocks of the live runtime and its sources: one protocol, two clocks.

Stages never read a clock (time is what the chunks carry); the runtime and the
sources (adapters that pace and stamp what they capture) are handed one.

- :class:`RealClock`: ``time.monotonic`` and ``time.sleep``. Live capture, and
  files or scenes replayed in real time.
- :class:`VirtualClock`: a time line that only moves when told: ``sleep(s)``
  moves it ``s`` on at once, ``advance(t)`` moves it to ``t`` (never back). A
  source paced on it replays instantly with the same time stamps; a Runtime on
  it follows the media it consumes (``follows_media``), so a file replayed as
  fast as possible sees the same batch deadlines as one replayed live, and
  gives the same events.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    follows_media: bool   # True: the runtime advances it to the media time it consumes (no real waiting)

    def now(self) -> float:
        """Seconds on a monotonic time line."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock (returns at once for <= 0)."""

    def advance(self, t: float) -> None:
        """The runtime consumed media up to time ``t`` (a clock that follows the media moves there)."""


class RealClock:
    """The real clock: time.monotonic and time.sleep; ``advance`` does nothing."""

    follows_media = False

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def advance(self, t: float) -> None:
        pass


class VirtualClock:
    """A clock that moves only when told: ``sleep`` and ``advance`` move it on without waiting."""

    follows_media = True

    def __init__(self, start: float = 0.0):
        self.t = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self.t += seconds

    def advance(self, t: float) -> None:
        with self._lock:
            if t > self.t:
                self.t = t
