"""Typed events: what every stage after the tracker passes on.

numpy-free and torch-free. An event is an onset or an offset of one class in
one modality of one stream, stamped with the media time at which it happened
(a snippet boundary) and the media time at which it was decided (``decided_at``,
later than ``media_time`` by the lookahead and the evidence needed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .labels import MODALITIES

KINDS = ("onset", "offset")


@dataclass(frozen=True)
class Event:
    kind: str            # "onset" or "offset"
    stream: str          # stream name, as configured by the user
    label: str           # class name from the model's vocabulary
    modality: str        # "audio", "visual" or "audiovisual"
    media_time: float    # seconds of media time at which the event starts or ends
    score: float         # class probability that drove the decision, in [0, 1]
    decided_at: float = 0.0  # media time (s) of the latest evidence used to decide it
    reason: str = ""     # for offsets: "ended", "stopped", "source-lost", "end-of-stream"
    onset_time: float | None = None  # for offsets: media time of the matching onset

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"event kind must be one of {KINDS}, got {self.kind!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of the open interval this event belongs to."""
        return (self.stream, self.label, self.modality)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Event":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Segment:
    """A closed interval of one class in one modality (offline parsing result)."""

    stream: str
    label: str
    modality: str
    onset: float
    offset: float
    score: float = 0.0
    extra: dict = field(default_factory=dict, compare=False)
