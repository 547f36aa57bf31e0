"""The demo's headless output: the annotated video with its audio in one mp4,
and the events as JSON lines.

:class:`Recorder` runs one ffmpeg process reading raw RGB frames on its
stdin and float32 mono samples on a second pipe, encoding H.264 + AAC into
``path`` (written as ``path.part`` and renamed when complete, so a file at
``path`` is always whole). Frames are written at a constant ``fps``; audio is
placed by media time (``write_audio(t, samples)`` pads a gap with silence and
drops what overlaps), so picture and sound stay in sync. Each pipe has its own
writer thread, so a full pipe never stalls the other one (no deadlock with
ffmpeg reading its inputs in any order).

It is also a runtime sink: ``emit(event)`` appends the event's wire body (the
one event encoding, ``avparse.stream.wire.EventLines``) as one JSON line to
``events_path``, flushed per line (``wire.decode_body`` or ``Event.from_dict``
read it back; :class:`EventFile` alone does only that). ``close()`` finalises both.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avparse.core.events import Event


class RecorderError(RuntimeError):
    """The recording cannot be written (ffmpeg missing or failing, unwritable path)."""


@dataclass(frozen=True)
class RecorderConfig:
    path: str                        # the mp4 to write
    width: int                       # frame width in pixels (even, for 4:2:0)
    height: int                      # frame height in pixels (even)
    fps: float = 25.0                # frames per second of the written video (constant)
    sample_rate: int = 16000         # rate of the samples given to write_audio
    events_path: str | None = None   # JSON-lines event file (None: no event file)
    crf: int = 23                    # x264 constant rate factor (lower: better, bigger)
    preset: str = "veryfast"         # x264 speed preset
    audio_bitrate: str = "96k"       # AAC bit rate
    threads: int = 1                 # x264 threads (the live pipeline needs the other cores)
    queue_frames: int = 50           # frames queued for ffmpeg before write_frame waits
    stall_timeout: float = 30.0      # seconds a write may wait for ffmpeg before it is a RecorderError

    def __post_init__(self):
        if self.width % 2 or self.height % 2 or self.width < 16 or self.height < 16:
            raise ValueError(f"frame size must be even and >= 16, got {self.width}x{self.height}")
        if self.fps <= 0 or self.sample_rate <= 0:
            raise ValueError("fps and sample_rate must be positive")


def ffmpeg_command(cfg: RecorderConfig, out: str, audio_fd: int) -> list[str]:
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{cfg.width}x{cfg.height}", "-framerate", f"{cfg.fps:g}",
        "-thread_queue_size", "64", "-i", "pipe:0",
        "-f", "f32le", "-ar", str(cfg.sample_rate), "-ac", "1", "-thread_queue_size", "64",
        "-i", f"pipe:{audio_fd}",
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", cfg.preset, "-crf", str(cfg.crf), "-pix_fmt", "yuv420p",
        "-threads", str(cfg.threads), "-c:a", "aac", "-b:a", cfg.audio_bitrate,
        "-movflags", "+faststart", "-f", "mp4", out,
    ]


class _Pipe:
    """A writer thread feeding one file descriptor from a bounded queue."""

    def __init__(self, f, maxsize: int, name: str):
        self.f = f
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.broken: BaseException | None = None
        self._ending = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                item = self.q.get(timeout=0.05)
            except queue.Empty:
                if self._ending.is_set():
                    break
                continue
            if self.broken is None:
                try:
                    self.f.write(item)
                except (BrokenPipeError, OSError) as e:
                    self.broken = e
        try:
            self.f.close()
        except OSError:
            pass

    def put(self, data: bytes, timeout: float) -> None:
        try:
            self.q.put(data, timeout=timeout)
        except queue.Full:
            raise RecorderError(f"ffmpeg has not read its input for {timeout:g} s") from None

    def finish(self) -> None:
        """No more data: the writer closes the pipe once the queue is written (never blocks)."""
        self._ending.set()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)


class EventFile:
    """A runtime sink writing each event as one JSON line (its wire body), flushed per line."""

    def __init__(self, path: str, publisher: str = "avparse-demo"):
        from avparse.stream.wire import EventLines

        self.path = str(path)
        self._lines = EventLines(publisher)
        self.events = 0
        self._f = None
        self._lock = threading.Lock()

    def open(self) -> "EventFile":
        try:
            self._f = open(self.path, "w", encoding="utf-8")
        except OSError as e:
            raise RecorderError(f"{self.path}: cannot write the event file: {e.strerror}") from None
        return self

    def emit(self, event: Event) -> None:
        with self._lock:
            if self._f is not None:
                self._f.write(self._lines.line(event) + "\n")
                self._f.flush()
                self.events += 1

    def stats(self, d: dict) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None


class Recorder:
    """Annotated video + audio into one mp4 (ffmpeg), events into JSON lines."""

    def __init__(self, config: RecorderConfig):
        self.config = config
        self.frames = 0
        self.samples = 0
        self._proc = None
        self._video = self._audio = None
        self._events = None
        self._lock = threading.Lock()
        self._closed = False
        self._err_lines: list[str] = []
        self._err_thread = None
        self._tmp = None

    def open(self) -> "Recorder":
        cfg = self.config
        if shutil.which("ffmpeg") is None:
            raise RecorderError("ffmpeg is not installed or not on PATH; install it (apt-get install ffmpeg)")
        path = Path(cfg.path)
        if not path.parent.is_dir():
            raise RecorderError(f"{cfg.path}: the folder {path.parent} does not exist")
        if cfg.events_path:
            self._events = EventFile(cfg.events_path).open()
        self._tmp = str(path.with_name(path.name + ".part"))
        r, w = os.pipe()
        try:
            # its own session: Ctrl-C in a terminal signals the whole foreground process group, and an
            # encoder killed by it would leave no file; the demo ends the recording itself (close())
            self._proc = subprocess.Popen(ffmpeg_command(cfg, self._tmp, r), stdin=subprocess.PIPE,
                                          stderr=subprocess.PIPE, pass_fds=(r,), start_new_session=True)
        except OSError as e:
            os.close(w)
            raise RecorderError(f"cannot start ffmpeg: {e}") from None
        finally:
            os.close(r)
        self._err_thread = threading.Thread(target=self._read_errors, daemon=True)
        self._err_thread.start()
        self._video = _Pipe(self._proc.stdin, cfg.queue_frames, "avparse-recorder-video")
        self._audio = _Pipe(os.fdopen(w, "wb"), 1000, "avparse-recorder-audio")
        return self

    def _read_errors(self):
        for line in self._proc.stderr:
            self._err_lines.append(line.decode(errors="replace").rstrip())
            del self._err_lines[:-20]

    # ------------------------------------------------------------------ input
    def write_frame(self, rgb: np.ndarray) -> None:
        """One frame (uint8 RGB [height, width, 3]) at the next 1/fps step."""
        cfg = self.config
        if rgb.shape != (cfg.height, cfg.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 [{cfg.height}, {cfg.width}, 3], got {rgb.dtype} {list(rgb.shape)}")
        self._check()
        self._video.put(np.ascontiguousarray(rgb).tobytes(), self.config.stall_timeout)
        self.frames += 1

    def write_audio(self, t: float, samples: np.ndarray) -> None:
        """Mono float32 ``samples`` whose first is at media time ``t`` (0 = the recording's start)."""
        self._check()
        x = np.asarray(samples, np.float32).reshape(-1)
        sr = self.config.sample_rate
        with self._lock:
            start = int(round(t * sr))
            if start > self.samples:       # a gap: silence
                self._audio.put(np.zeros(start - self.samples, "<f4").tobytes(), self.config.stall_timeout)
                self.samples = start
            elif start < self.samples:     # overlap: keep what is new
                x = x[self.samples - start:]
            if len(x):
                self._audio.put(x.astype("<f4").tobytes(), self.config.stall_timeout)
                self.samples += len(x)

    def pad_audio(self, t: float) -> None:
        """Silence up to media time ``t`` (so the audio lasts as long as the video)."""
        self.write_audio(t, np.zeros(0, np.float32))

    @property
    def video_seconds(self) -> float:
        return self.frames / self.config.fps

    def _check(self):
        if self._proc is None or self._closed:
            raise RecorderError("recorder is not open")
        for p in (self._video, self._audio):
            if p.broken is not None:
                raise RecorderError(f"ffmpeg stopped reading ({self._last_error()})")

    def _last_error(self) -> str:
        return self._err_lines[-1] if self._err_lines else "no message"

    # ------------------------------------------------------------- the sink API
    def emit(self, event: Event) -> None:
        if self._events is not None:
            self._events.emit(event)

    @property
    def events(self) -> int:
        return self._events.events if self._events is not None else 0

    def stats(self, d: dict) -> None:
        pass

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Finish the file (rename .part to the final name); raises RecorderError if ffmpeg failed."""
        if self._closed:
            return
        self._closed = True
        if self._events is not None:
            self._events.close()
        if self._proc is None:
            return
        # both ends at once: ffmpeg may wait for the end of one input before it reads the rest
        # of the other, so closing them one after the other can deadlock
        self._video.finish()
        self._audio.finish()
        end = time.monotonic() + self.config.stall_timeout
        for pipe in (self._video, self._audio):
            pipe.join(max(0.0, end - time.monotonic()))
        if self._video.thread.is_alive() or self._audio.thread.is_alive():
            self._proc.kill()   # ffmpeg stopped reading: the writers' blocked writes fail now
            self._err_lines.append("ffmpeg stopped reading its input")
            self._video.join(5.0)
            self._audio.join(5.0)
        try:
            rc = self._proc.wait(timeout=self.config.stall_timeout + 30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            self._err_lines.append("ffmpeg did not finish in time")
            rc = -1
        self._err_thread.join(timeout=5)
        if rc != 0 or self.frames == 0:
            Path(self._tmp).unlink(missing_ok=True)
            why = "no frames were written" if rc == 0 else self._last_error()
            raise RecorderError(f"could not write {self.config.path}: {why}")
        os.replace(self._tmp, self.config.path)

    def discard(self) -> None:
        """Stop and remove what was written (a run that never started)."""
        if self._proc is not None and not self._closed:
            self._closed = True
            self._proc.kill()
            for pipe in (self._video, self._audio):
                pipe.finish()
                pipe.join(5.0)
            self._proc.wait()
            Path(self._tmp).unlink(missing_ok=True)
        self._closed = True
        if self._events is not None:
            self._events.close()
            Path(self._events.path).unlink(missing_ok=True)

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
