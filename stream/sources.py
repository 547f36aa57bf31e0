"""Sources: where the live runtime's chunks come from.

Each source implements the ``Source`` protocol of ``stream.types``:
``open()``, ``read() -> Iterator[AudioChunk | VideoFrame | EndOfStream]``
(EndOfStream last), ``close()`` (from any thread: ``read`` then ends soon).
Every chunk carries its media time ``t`` (the stream's own clock) and
``wall_time`` (the injected runtime clock at capture).

- ``FileSource``: a media file through the FFmpeg decoder (``core.media``),
  audio and video together, timestamps from the file, paced or fast.
- ``SceneSource``: any ``core.scene.Scene`` (rendered audio and frames),
  paced or fast.
- ``CameraSource`` (``source_camera``): any OpenCV capture.
- ``MicrophoneSource`` (``source_mic``): a PortAudio input device.
- ``ReadAhead`` (``source_readahead``): any of them read in a thread into a
  bounded buffer ahead of its consumer (``avparse parse`` decodes while the
  model loads).

Audio always leaves a source as float32 mono at the ``sample_rate`` the
source was given (the profile's), in blocks of ``block_seconds``.
See docs/sources.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from avparse.core import media
from avparse.core.media import MediaError

from .resample import StreamingResampler
from .clock import Clock, RealClock, VirtualClock
from .source_base import (
    CameraError,
    MicrophoneError,
    Pacer,
    SourceError,
    StopFlag,
    as_clock,
    log,
)
from .source_camera import CameraSource, list_video_devices
from .source_mic import MicrophoneSource, list_input_devices
from .source_readahead import ReadAhead
from .types import AudioChunk, Chunk, EndOfStream, VideoFrame


class FileSource:
    """A media file, audio and video decoded together with their real
    timestamps (media time 0 = the file's start).

    ``paced``: release each chunk when its media time is due on ``clock``
    (audio blocks when their last sample is due, as a microphone would),
    at ``speed`` times real time; otherwise as fast as decoding goes.
    ``fps``/``size``: optional constant-rate resampling and scaling of the
    video in FFmpeg (default: every frame at its own size and pts).
    A decoding fault while running ends the stream with an EndOfStream whose
    reason is "source-lost" and whose ``error`` says why (``self.error`` keeps the MediaError).
    """

    def __init__(self, path, *, sample_rate: int, paced: bool = False, clock: Clock | None = None,
                 name: str | None = None, block_seconds: float = 0.04, fps: float | None = None,
                 size=None, speed: float = 1.0, audio: bool = True, video: bool = True):
        if block_seconds <= 0:
            raise ValueError(f"block_seconds must be positive, got {block_seconds}")
        self.path = str(path)
        self.name = name or Path(self.path).stem
        self.sample_rate = int(sample_rate)
        self.paced, self.speed = paced, speed
        self.clock = as_clock(clock)
        self.block = max(1, int(round(block_seconds * self.sample_rate)))
        self.fps, self.size = fps, size
        self.want_audio, self.want_video = audio, video
        self.info: media.MediaInfo | None = None
        self.error: MediaError | None = None
        self.counters = {"audio_chunks": 0, "frames": 0}
        self._stop = StopFlag()
        self._it = None

    def open(self) -> None:
        """Probe the file: raises MediaError (missing, not media, ...) here, at start-up."""
        self.info = media.probe(self.path)
        if self.want_audio and not self.info.has_audio and not self.info.has_video:
            raise MediaError(f"{self.path}: no audio or video track")
        self._stop.clear()

    @property
    def kinds(self) -> frozenset:
        """What this source yields ("audio", "video"): the file's tracks (probed once)."""
        if self.info is None:
            self.info = media.probe(self.path)
        return frozenset(k for k, on in (("audio", self.has_audio), ("video", self.has_video)) if on)

    @property
    def has_audio(self) -> bool:
        return bool(self.info and self.info.has_audio and self.want_audio)

    @property
    def has_video(self) -> bool:
        return bool(self.info and self.info.has_video and self.want_video)

    def read(self) -> Iterator[Chunk]:
        if self.info is None:
            self.open()
        clock, pacer = self.clock, Pacer(self.clock, self._stop, self.speed)
        end_t = 0.0
        reason, error = "end-of-stream", None
        info = self.info  # probed once, at open(): the decoders do not probe again
        self._it = media.iter_av(self.path, sample_rate=self.sample_rate, block=self.block,
                                 fps=self.fps, size=self.size, strict=True, info=info) \
            if (self.has_audio and self.has_video) else (
                (("audio", t, x) for t, x in media.iter_audio(self.path, self.sample_rate, self.block, info=info))
                if self.has_audio else
                (("video", t, x) for t, x in media.iter_frames(self.path, fps=self.fps, size=self.size, info=info)))
        try:
            for kind, t, x in self._it:   # the pacer's time line starts at the first item
                if self._stop:
                    reason = "stopped"
                    break
                if kind == "audio":
                    dur = len(x) / self.sample_rate
                    if self.paced:
                        pacer.wait(t + dur)
                    now = clock.now()
                    wall = now - dur / self.speed if self.paced else now
                    self.counters["audio_chunks"] += 1
                    end_t = max(end_t, t + dur)
                    yield AudioChunk(self.name, t, x, self.sample_rate, wall_time=wall)
                else:
                    if self.paced:
                        pacer.wait(t)
                    self.counters["frames"] += 1
                    end_t = max(end_t, t)
                    yield VideoFrame(self.name, t, x, wall_time=clock.now())
        except MediaError as e:
            self.error = e
            reason, error = "source-lost", str(e)
            log.warning("stream %s: %s", self.name, e)
        finally:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
            self._it = None
        if self._stop and reason == "end-of-stream":
            reason = "stopped"
        yield EndOfStream(self.name, end_t, reason, error)

    def close(self) -> None:
        self._stop.set()


class SceneSource:
    """Any object with the ``core.scene.Scene`` protocol, rendered block by
    block: audio sample i is at i / scene.sample_rate, frame j at j / scene.fps.

    Audio is resampled to ``sample_rate`` (default: the scene's own) with the
    streaming resampler; the output time line is the scene's. ``paced``:
    release chunks in real time on ``clock``; otherwise as fast as rendering.
    """

    def __init__(self, scene, *, block_seconds: float = 0.04, paced: bool = False,
                 clock: Clock | None = None, sample_rate: int | None = None,
                 name: str = "scene", speed: float = 1.0):
        if block_seconds <= 0:
            raise ValueError(f"block_seconds must be positive, got {block_seconds}")
        self.scene = scene
        self.name = name
        self.in_rate = int(scene.sample_rate)
        self.sample_rate = int(sample_rate or scene.sample_rate)
        self.block_seconds = block_seconds
        self.paced, self.speed = paced, speed
        self.clock = as_clock(clock)
        self.counters = {"audio_chunks": 0, "frames": 0}
        self.kinds = frozenset({"audio", "video"})
        self._stop = StopFlag()

    def open(self) -> None:
        for attr in ("sample_rate", "fps", "duration", "render_audio", "render_frame"):
            if not hasattr(self.scene, attr):
                raise SourceError(f"scene {type(self.scene).__name__} lacks {attr!r}: not a core.scene.Scene")
        if self.scene.duration <= 0 or self.scene.fps <= 0 or self.scene.sample_rate <= 0:
            raise SourceError("scene has no duration, frame rate or sample rate")
        self._stop.clear()

    def read(self) -> Iterator[Chunk]:
        sc = self.scene
        total = int(round(sc.duration * self.in_rate))
        n_frames = int(np.ceil(sc.duration * sc.fps - 1e-9))
        block = max(1, int(round(self.block_seconds * self.in_rate)))
        rs = StreamingResampler(self.in_rate, self.sample_rate)
        clock, pacer = self.clock, Pacer(self.clock, self._stop, self.speed)
        if self.paced:
            pacer.wait(0.0)
        pos, frame, out_n = 0, 0, 0
        reason = "end-of-stream"
        while pos < total or frame < n_frames:
            if self._stop:
                reason = "stopped"
                break
            # capture order: an audio block when its last sample is in, a frame at its time
            n = min(block, total - pos)
            a_done = (pos + n) / self.in_rate if pos < total else float("inf")
            v_t = frame / sc.fps if frame < n_frames else float("inf")
            if a_done <= v_t:
                x = np.asarray(sc.render_audio(pos, n), dtype=np.float32).reshape(-1)
                if len(x) != n:
                    raise SourceError(f"scene.render_audio({pos}, {n}) gave {len(x)} samples")
                pos += n
                y = rs.process(x)
                if pos >= total:
                    y = np.concatenate([y, rs.flush()])
                if self.paced:
                    pacer.wait(pos / self.in_rate)
                if len(y):
                    t = out_n / self.sample_rate
                    out_n += len(y)
                    self.counters["audio_chunks"] += 1
                    wall = clock.now() - (len(y) / self.sample_rate / self.speed if self.paced else 0.0)
                    yield AudioChunk(self.name, t, y, self.sample_rate, wall_time=wall)
            else:
                if self.paced:
                    pacer.wait(v_t)
                img = np.asarray(sc.render_frame(frame), dtype=np.uint8)
                frame += 1
                self.counters["frames"] += 1
                yield VideoFrame(self.name, v_t, img, wall_time=clock.now())
        yield EndOfStream(self.name, min(pos / self.in_rate, float(sc.duration)), reason)

    def close(self) -> None:
        self._stop.set()


__all__ = [
    "FileSource", "SceneSource", "CameraSource", "MicrophoneSource", "ReadAhead",
    "SourceError", "CameraError", "MicrophoneError", "MediaError",
    "Clock", "RealClock", "VirtualClock", "list_video_devices", "list_input_devices",
]
