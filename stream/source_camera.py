"""CameraSource: any OpenCV capture (device index, file, RTSP/HTTP/UDP URL).

Time stamps: OpenCV's ``CAP_PROP_POS_MSEC`` (the frame's presentation time
for files and network streams, the driver's buffer time for V4L2 devices),
taken relative to the first frame, as long as it is meaningful: it must
increase from frame to frame and, for live captures, follow the clock
(a jump of more than ``jump_tolerance`` against the elapsed clock time is a
discontinuity). Otherwise the frame is stamped by the injected clock:
previous time + elapsed clock time, so media time never goes backwards.

Network URLs that do not answer are retried with exponential back-off,
bounded by ``retries``; each retry is reported through ``notify``
(default: a logging warning). A device or file that does not open is a
CameraError at ``open()`` naming what exists. cv2 is imported here only.
"""

from __future__ import annotations

import glob
import math
import re
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from avparse.core.media import is_url

from .clock import Clock
from .source_base import CameraError, Notify, StopFlag, as_clock, default_notify
from .types import Chunk, EndOfStream, VideoFrame


def list_video_devices() -> list[str]:
    """The V4L2 device nodes present (``/dev/video*``), sorted by index."""
    def key(p):
        m = re.search(r"(\d+)$", p)
        return int(m.group(1)) if m else 1 << 30
    return sorted(glob.glob("/dev/video*"), key=key)


def _parse_spec(spec):
    """-> ("index", int) | ("url", str) | ("file", str)."""
    if isinstance(spec, bool):
        raise CameraError(f"bad camera spec {spec!r}: give a device index, a file or a URL")
    if isinstance(spec, int):
        return "index", spec
    s = str(spec).strip()
    if re.fullmatch(r"\d+", s):
        return "index", int(s)
    if s.startswith("/dev/video") and re.fullmatch(r"/dev/video\d+", s):
        return "index", int(s[len("/dev/video"):])
    if is_url(s) and not s.startswith("file://"):
        return "url", s
    return "file", s[len("file://"):] if s.startswith("file://") else s


class CameraSource:
    """Frames of one OpenCV capture, as VideoFrame chunks (RGB, media time).

    spec: device index (0, "0", "/dev/video0"), a video file, or a URL
    (rtsp://, http://, udp://, ...). ``paced`` applies to files only: frames
    are released at their media time on the clock (a camera is paced by
    itself). ``retries``/``backoff``/``max_backoff``: reconnection policy for
    URLs (and for a device that stops delivering). ``open_timeout`` and
    ``read_timeout``: seconds OpenCV's FFmpeg backend waits for a URL.
    """

    def __init__(self, spec, *, name: str = "camera", clock: Clock | None = None, paced: bool = False,
                 retries: int = 5, backoff: float = 0.5, max_backoff: float = 8.0,
                 open_timeout: float = 10.0, read_timeout: float = 5.0,
                 jump_tolerance: float = 2.0, notify: Notify | None = None, timestamps: str = "auto"):
        if timestamps not in ("auto", "clock"):
            raise ValueError(f"timestamps must be 'auto' or 'clock', got {timestamps!r}")
        self.kind, self.target = _parse_spec(spec)
        self.spec = spec
        self.name = name
        self.clock = as_clock(clock)
        self.paced = paced
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.open_timeout, self.read_timeout = float(open_timeout), float(read_timeout)
        self.jump_tolerance = float(jump_tolerance)
        self.notify = notify or default_notify
        self.timestamps = timestamps
        self.kinds = frozenset({"video"})
        self.counters = {"frames": 0, "reconnects": 0, "clock_stamped": 0, "read_failures": 0}
        self.fps = 0.0
        self.size: tuple[int, int] | None = None  # (width, height) once open
        self._cap = None
        self._stop = StopFlag()
        self._lock = threading.Lock()
        self._reading = False

    # --------------------------------------------------------------- opening
    def _describe(self) -> str:
        return {"index": f"camera {self.target}", "url": f"camera URL {self.target}",
                "file": f"video file {self.target}"}[self.kind]

    def _try_open(self):
        import cv2  # imported here: no import side effects elsewhere

        if self.kind == "index":
            cap = cv2.VideoCapture(self.target)
        elif self.kind == "url":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000)]
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(self.target)
        if cap is not None and cap.isOpened():
            return cap
        if cap is not None:
            cap.release()
        return None

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * (2 ** attempt))

    def _open_with_retry(self, why: str) -> bool:
        """URL (or lost device): try ``retries`` times with back-off; True once open."""
        for attempt in range(self.retries):
            if self._stop:
                return False
            cap = self._try_open()
            if cap is not None:
                self._cap = cap
                return True
            if attempt + 1 < self.retries:
                wait = self._backoff(attempt)
                self.notify(f"{self._describe()}: {why} (attempt {attempt + 1}/{self.retries}); "
                            f"retrying in {wait:.1f} s")
                if self._stop.wait(self.clock, wait):
                    return False
        return False

    def open(self) -> None:
        self._stop.clear()
        if self.kind == "file":
            if not Path(self.target).is_file():
                raise CameraError(f"{self._describe()}: no such file")
            self._cap = self._try_open()
            if self._cap is None:
                raise CameraError(f"{self._describe()}: OpenCV cannot open it (not a video file?)")
        elif self.kind == "index":
            self._cap = self._try_open()
            if self._cap is None:
                devs = list_video_devices()
                have = ", ".join(f"{d} (index {d[len('/dev/video'):]})" for d in devs) if devs \
                    else "none (no /dev/video* device on this machine)"
                raise CameraError(f"{self._describe()} does not open; video devices here: {have}")
        else:
            if not self._open_with_retry("no answer"):
                total = sum(self._backoff(a) for a in range(self.retries - 1))
                raise CameraError(f"{self._describe()} did not answer after {self.retries} tries "
                                  f"over {total:.1f} s of back-off; check the address and that the "
                                  f"stream is being served")
        self._read_props()

    def _read_props(self):
        import cv2

        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 0.0
        w, h = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w > 0 and h > 0 else None

    # --------------------------------------------------------------- reading
    def read(self) -> Iterator[Chunk]:
        import cv2

        if self._cap is None:
            self.open()
        live = self.kind != "file"
        clock = self.clock
        first_pos = None      # POS_MSEC of the first frame of the current connection (ms)
        offset = 0.0          # media time of first_pos
        last_t = None
        last_wall = None
        last_pos = None
        start_wall = None
        reason, error = "end-of-stream", None
        self._reading = True
        try:
            while True:
                if self._stop:
                    reason = "stopped"
                    break
                ok, bgr = self._cap.read()
                now = clock.now()
                if not ok or bgr is None:
                    if not live:
                        break          # end of the file
                    self.counters["read_failures"] += 1
                    self._cap.release()
                    self._cap = None
                    self.notify(f"{self._describe()}: stream lost; reconnecting")
                    if not self._open_with_retry("reconnect failed"):
                        if self._stop:
                            reason = "stopped"
                        else:
                            reason = "source-lost"
                            error = f"{self._describe()} lost and did not come back after {self.retries} tries"
                        break
                    self.counters["reconnects"] += 1
                    first_pos = last_pos = None   # a new connection: its positions start over
                    continue
                pos = self._cap.get(cv2.CAP_PROP_POS_MSEC) if self.timestamps == "auto" else float("nan")
                step = 0.0 if last_t is None else max(1e-3, now - last_wall)
                usable = math.isfinite(pos) and (last_pos is None or pos > last_pos)
                if usable and first_pos is None:
                    # anchor: this frame's position maps to the time the clock says
                    first_pos, offset = pos, (0.0 if last_t is None else last_t + step)
                if usable:
                    t = offset + (pos - first_pos) / 1000.0
                    if last_t is not None and (t <= last_t or (live and abs((t - last_t) - step) > self.jump_tolerance)):
                        usable, first_pos = False, None   # discontinuity: re-anchor on a later frame
                if not usable:
                    t = 0.0 if last_t is None else last_t + step
                    self.counters["clock_stamped"] += 1
                if math.isfinite(pos):
                    last_pos = pos
                if self.paced and not live:
                    if start_wall is None:
                        start_wall = now - t
                    if self._stop.wait(clock, start_wall + t - clock.now()):
                        reason = "stopped"
                        break
                    now = clock.now()
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                last_t, last_wall = t, now
                self.counters["frames"] += 1
                yield VideoFrame(self.name, t, np.ascontiguousarray(rgb), wall_time=now)
        finally:
            self._reading = False
            self._release()
        yield EndOfStream(self.name, last_t or 0.0, reason, error)

    def _release(self):
        with self._lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    def close(self) -> None:
        self._stop.set()
        if not self._reading:
            self._release()


__all__ = ["CameraSource", "list_video_devices"]
