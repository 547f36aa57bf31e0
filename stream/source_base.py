"""What every source shares: the injected clock, errors, and stop handling.

Sources are adapters (they talk to devices, sockets and subprocesses), so
they may block and sleep, but they never read the wall clock directly: a
clock (``avparse.stream.clock``) is handed in. ``RealClock`` is the real one;
on a ``VirtualClock`` ``sleep`` only advances its time, so a paced source can
be replayed instantly in tests and still see the same time stamps.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from .clock import Clock, RealClock

log = logging.getLogger("avparse.stream.sources")


class SourceError(Exception):
    """A source cannot start (missing device, bad spec, unreachable URL).
    The message is one line: what failed, what exists or what to do."""


class CameraError(SourceError):
    pass


class MicrophoneError(SourceError):
    pass


Notify = Callable[[str], None]


def default_notify(message: str) -> None:
    log.warning("%s", message)


class StopFlag:
    """Set from any thread by ``close()``; checked by ``read()`` loops. Its
    ``wait(clock, seconds)`` sleeps on the clock in short steps so that a
    stop request interrupts a long back-off."""

    def __init__(self):
        self._e = threading.Event()

    def set(self) -> None:
        self._e.set()

    def clear(self) -> None:
        self._e.clear()

    def __bool__(self) -> bool:
        return self._e.is_set()

    def wait(self, clock: Clock, seconds: float, step: float = 0.05) -> bool:
        """Sleep ``seconds`` on ``clock`` in steps; return True if stopped meanwhile.
        It counts the steps it asked for (not the clock's reading), so it ends
        even on a clock that nothing advances."""
        left = seconds
        while not self._e.is_set():
            if left <= 0:
                return False
            d = min(step, left)
            clock.sleep(d)
            left -= d
        return True


def as_clock(clock) -> Clock:
    """The clock a source runs on: ``clock``, or a RealClock when None."""
    return RealClock() if clock is None else clock


class Pacer:
    """Releases items at ``start + media_time`` on the clock (real-time replay).
    The first item fixes ``start``; ``wait(t)`` sleeps until media time t is due."""

    def __init__(self, clock: Clock, stop: StopFlag, speed: float = 1.0):
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.clock, self.stop, self.speed = clock, stop, speed
        self.start: float | None = None
        self.t0 = 0.0

    def wait(self, t: float) -> None:
        if self.start is None:
            self.start, self.t0 = self.clock.now(), t
            return
        due = self.start + (t - self.t0) / self.speed
        self.stop.wait(self.clock, due - self.clock.now())
