"""ReadAhead: any source read in a thread into a bounded buffer, ahead of its consumer.

``avparse parse`` opens its file this way before it loads torch and the model:
FFmpeg (a separate process) decodes while this process imports, so the first
snippets are ready when the model is. The chunks, their order and the
EndOfStream are the wrapped source's, untouched; only when they are read
changes. The buffer holds at most ``max_bytes`` of audio samples and video
pixels (then the reading thread waits for the consumer), so a long file is
never decoded into memory whole.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Iterator

from .types import AudioChunk, Chunk, VideoFrame

READ_AHEAD_BYTES = 128 << 20  # default buffer: the 10 s LLP clip (320x240, ~70 MB of frames) fits whole


def _payload(chunk) -> int:
    if isinstance(chunk, AudioChunk):
        return int(chunk.samples.nbytes)
    if isinstance(chunk, VideoFrame):
        return int(chunk.image.nbytes)
    return 0


class ReadAhead:
    """A source (``open``/``read``/``close``, ``name``) whose ``read()`` is run in a thread from
    ``open()`` on. ``open()`` may be called again (it does nothing then), so a caller can start the
    reading early and hand the object to code that opens its sources itself. ``start()`` opens the
    source in the thread too (the caller goes on at once); a later ``open()`` waits for that and
    raises what the source's ``open()`` raised. ``close()`` (any thread) stops the reading and
    closes the source. An exception of the source's ``read()`` is raised by this ``read()`` after
    the chunks that came before it."""

    def __init__(self, source, *, max_bytes: int = READ_AHEAD_BYTES):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.source = source
        self.name = source.name
        self.max_bytes = max_bytes
        self._items: deque = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._done = False
        self._stopped = False
        self._error: BaseException | None = None
        self._open_error: BaseException | None = None
        self._opened = threading.Event()
        self._thread: threading.Thread | None = None

    def __getattr__(self, attr):  # kinds, has_audio, has_video, info, path, counters, ... of the source
        if attr == "source":
            raise AttributeError(attr)
        return getattr(self.source, attr)

    def open(self) -> None:
        """Open the source (its errors are raised here) and start reading it; after ``start()``: wait
        for the opening and raise its error; again: nothing."""
        if self._thread is None:
            self.source.open()
            self._opened.set()
            self._begin(False)
            return
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    def start(self) -> None:
        """Open the source and read it, both in the thread; returns at once (``open()`` reports)."""
        if self._thread is None:
            self._begin(True)

    def _begin(self, open_first: bool) -> None:
        self._thread = threading.Thread(target=self._run, args=(open_first,), name=f"avparse-readahead-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self, open_first: bool = False) -> None:
        if open_first:
            try:
                self.source.open()
            except BaseException as e:  # raised by open() (and read()) in the caller's thread
                self._open_error = e
            finally:
                self._opened.set()
            if self._open_error is not None or self._stopped:
                with self._cond:
                    self._done = True
                    self._cond.notify_all()
                return
        it = self.source.read()
        try:
            for chunk in it:
                n = _payload(chunk)
                with self._cond:
                    # one chunk always fits, so a chunk larger than the buffer cannot stall the stream
                    self._cond.wait_for(lambda: self._stopped or not self._items or
                                        self._bytes + n <= self.max_bytes)
                    if self._stopped:
                        break
                    self._items.append((chunk, n))
                    self._bytes += n
                    self._cond.notify_all()
        except BaseException as e:  # handed to the consumer, after what came before
            self._error = e
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # the decoders stop now (a generator's finally), not when it is collected
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def read(self) -> Iterator[Chunk]:
        self.open()  # opens, or waits for the opening started by start() (and raises its error)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._done)
                if self._items:
                    chunk, n = self._items.popleft()
                    self._bytes -= n
                    self._cond.notify_all()
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield chunk

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self.source.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
