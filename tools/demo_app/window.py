"""The demo's window (OpenCV's HighGUI) and the writer of the recording's frames."""

from __future__ import annotations

import os
import sys
import time

WINDOW_TITLE = "avparse demo"


def display_available() -> bool:
    """Whether a window can open: $DISPLAY names an X server that accepts a connection.

    Checked in a child process, so that this process makes no Xlib call before the GUI
    toolkit does (Xlib wants XInitThreads before any other call when threads use it)."""
    if not os.environ.get("DISPLAY"):
        return False
    probe = ("import ctypes, sys\n"
             "try:\n    x = ctypes.CDLL('libX11.so.6')\nexcept OSError:\n    sys.exit(0)\n"
             "x.XOpenDisplay.restype = ctypes.c_void_p\n"
             "sys.exit(0 if x.XOpenDisplay(None) else 1)\n")
    import subprocess

    try:
        return subprocess.run([sys.executable, "-c", probe], timeout=10, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class FramePump:
    """Writes the recording's frames: frame k shows media time k / fps, drawn once the audio
    has passed that time (plus a margin, so the frame of that time has arrived too)."""

    MARGIN = 0.1  # seconds

    def __init__(self, state, overlay, recorder, fps: float, same_clock: bool):
        self.state, self.overlay, self.recorder = state, overlay, recorder
        self.fps, self.same_clock = fps, same_clock
        self.k = 0

    def write_due(self, end: float | None = None) -> None:
        """Frames due now (``end`` None: up to the media received, less the margin), or all
        frames before media time ``end``."""
        if self.recorder is None:
            return
        while True:
            t = self.k / self.fps
            if (t > self.state.clock_end() - self.MARGIN + 1e-9) if end is None else (t >= end - 1e-9):
                return
            self.recorder.write_frame(self.overlay.render(self.state.view(t, as_of=t, frame_at=self.same_clock)))
            self.k += 1

    def finish(self) -> None:
        """After the runtime ended: the frames up to the end of the media, audio padded to match."""
        if self.recorder is None:
            return
        end = self.state.clock_end()
        self.write_due(end=max(end, 1.0 / self.fps))
        self.recorder.pad_audio(self.recorder.video_seconds)


class Window:
    """The demo window (OpenCV's HighGUI). ``open`` shows it before the pipeline starts;
    ``loop`` draws ``fps`` pictures a second until the runtime ends, `q`/Esc, the window is
    closed, or Ctrl-C. It opens at the picture's size, 1:1, and can be resized (ratio kept)."""

    def __init__(self, state, overlay, fps: float):
        self.state, self.overlay, self.fps = state, overlay, fps

    def open(self) -> None:
        import cv2

        w, h = self.overlay.config.width, self.overlay.config.height
        flags = cv2.WINDOW_NORMAL | getattr(cv2, "WINDOW_KEEPRATIO", 0) | getattr(cv2, "WINDOW_GUI_NORMAL", 0)
        cv2.namedWindow(WINDOW_TITLE, flags)
        cv2.resizeWindow(WINDOW_TITLE, w, h)
        cv2.imshow(WINDOW_TITLE, self.overlay.render(self.state.view(0.0))[..., ::-1])
        cv2.waitKey(100)   # let the toolkit map and paint it while the process is still quiet

    def loop(self, pump, thread, stopped) -> None:
        import cv2

        w, h = self.overlay.config.width, self.overlay.config.height
        period = 1.0 / self.fps
        checked = time.monotonic()
        try:
            while thread.is_alive() and not stopped.is_set():
                t0 = time.monotonic()
                img = self.overlay.render(self.state.view(self.state.media_now(t0)))
                cv2.imshow(WINDOW_TITLE, img[..., ::-1])
                pump.write_due()
                wait = max(1, int((period - (time.monotonic() - t0)) * 1000))
                key = cv2.waitKey(wait) & 0xFF
                if key in (ord("q"), ord("Q"), 27):
                    break
                try:
                    if cv2.getWindowProperty(WINDOW_TITLE, cv2.WND_PROP_VISIBLE) < 1:
                        break   # closed with the window's close button
                    if t0 - checked > 1.0:   # a window left at a toolkit's minimal size: ask again
                        checked = t0
                        _, _, ww, wh = cv2.getWindowImageRect(WINDOW_TITLE)
                        if 0 < ww < w // 4 and 0 < wh < h // 4:
                            cv2.resizeWindow(WINDOW_TITLE, w, h)
                except cv2.error:
                    break
        finally:
            self.close()

    @staticmethod
    def close() -> None:
        try:
            import cv2

            cv2.destroyWindow(WINDOW_TITLE)
            cv2.waitKey(1)
        except Exception:
            pass
