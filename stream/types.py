"""What flows between the live stages: timestamped chunks and snippets.

Every item carries its media time in seconds (the stream's own clock: for a
microphone, PortAudio's capture time relative to the stream start; for a file,
its presentation timestamps; for a scene, sample index / rate). Stages never
read the wall clock; the runtime stamps ``wall_time`` where it needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np


@dataclass(frozen=True)
class AudioChunk:
    stream: str             # stream name
    t: float                # media time (s) of samples[0]
    samples: np.ndarray     # float32 mono [n], already at the profile's sample rate
    sample_rate: int        # samples per second of ``samples``
    wall_time: float = 0.0  # runtime clock when captured (for latency figures only)

    @property
    def end(self) -> float:
        return self.t + len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class VideoFrame:
    stream: str             # stream name
    t: float                # media time (s) of this frame (presentation time)
    image: np.ndarray       # uint8 RGB [H, W, 3] at the source's own size
    wall_time: float = 0.0  # runtime clock when captured (for latency figures only)


@dataclass(frozen=True)
class EndOfStream:
    stream: str
    t: float                # media time at which the source ended
    reason: str = "end-of-stream"


@dataclass
class Snippet:
    """One snippet of one stream: ``audio`` covers [t0, t0 + seconds)."""

    stream: str
    index: int              # snippet index on the stream's grid (t0 = index * hop)
    t0: float               # media time (s) of the snippet's start
    audio: np.ndarray       # float32 [samples_per_snippet] at the profile's rate
    frames: np.ndarray      # uint8 [frames_per_snippet, H, W, 3] RGB
    missing_frames: int = 0  # frame slots filled by repeating a neighbour
    missing_audio: int = 0   # audio samples filled with zeros (dropped blocks)
    wall_time: float = 0.0   # runtime clock when the snippet was complete
    info: dict = field(default_factory=dict)


Chunk = AudioChunk | VideoFrame | EndOfStream


class Source(Protocol):
    """A live or file source of one stream. ``read`` yields chunks in the
    order they are captured; a source that ends yields EndOfStream last."""

    name: str

    def open(self) -> None: ...

    def read(self) -> Iterator[Chunk]: ...

    def close(self) -> None: ...
