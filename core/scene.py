"""The protocol that a renderable scene offers to the live runtime.

The generator lives in ``avparse.train.synth``; the live runtime
(``avparse.stream``) may not import ``train``, so it depends only on this
protocol, and ``tools`` wires a generated scene into a scene source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class TrueEvent:
    label: str       # class name
    modality: str    # "audio" or "visual" (audio-visual is derived: both at once)
    onset: float     # seconds
    offset: float    # seconds


class Scene(Protocol):
    sample_rate: int      # audio samples per second of render_audio
    fps: float            # video frames per second of render_frame
    duration: float       # seconds
    width: int
    height: int
    classes: Sequence[str]

    def render_audio(self, start: int, count: int):
        """float32 mono samples [count] from sample index ``start`` (zeros past the end)."""

    def render_frame(self, index: int):
        """uint8 RGB image [height, width, 3] of frame ``index`` (time index / fps)."""

    def ground_truth(self) -> Sequence[TrueEvent]:
        """The scene's true events, audio and visual intervals separately."""
