"""Typed events: what every stage after the tracker passes on.

numpy-free and torch-free. An event is an onset or an offset of one class in
one modality of one stream, stamped with the media time at which it happened
(a snippet boundary) and the media time at which it was decided (``decided_at``,
later than ``media_time`` by the lookahead and the evidence needed).

An event has one encoding: the event fields of the versioned wire body
(docs/eventstream.md), ``to_dict``/``from_dict`` here; ``avparse.stream.wire``
adds the message header (publisher, session, seq, tseq, wall time) and checks
everything strictly. Every file and socket that carries events uses it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from .labels import MODALITIES

KINDS = ("onset", "offset")
SCHEMA_VERSION = 1  # the version ``v`` of the wire body (docs/eventstream.md)


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
        """The event fields of the wire body: ``v``, ``type``, ``stream``, ``class``, ``modality``,
        ``media_time``, ``score``, ``decided_at``, and for offsets ``reason`` and ``onset_time``."""
        d = {"v": SCHEMA_VERSION, "type": self.kind, "stream": self.stream, "class": self.label,
             "modality": self.modality, "media_time": float(self.media_time), "score": float(self.score),
             "decided_at": float(self.decided_at)}
        if self.kind == "offset":
            d["reason"] = self.reason
            d["onset_time"] = None if self.onset_time is None else float(self.onset_time)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Event":
        """An Event from its wire body (header fields, if any, are ignored). The form that event files
        of avparse 0.1 had (``kind``, ``label``, no ``v``) is read too, with a DeprecationWarning."""
        if "type" in d or "v" in d:
            if d.get("v") != SCHEMA_VERSION:
                raise ValueError(f"event schema version {d.get('v')!r} is not supported (this reader knows "
                                 f"{SCHEMA_VERSION})")
            ot = d.get("onset_time")
            return cls(kind=d["type"], stream=d["stream"], label=d["class"], modality=d["modality"],
                       media_time=float(d["media_time"]), score=float(d["score"]),
                       decided_at=float(d.get("decided_at", 0.0)), reason=d.get("reason", ""),
                       onset_time=None if ot is None else float(ot))
        warnings.warn("an event in the old form (kind/label, no schema version): avparse 0.1 wrote event files "
                      "so; write them again in the wire body (docs/eventstream.md)", DeprecationWarning, stacklevel=2)
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

    @property
    def start(self) -> float:
        """``onset``, by the name whisper and pyannote users expect."""
        return self.onset

    @property
    def end(self) -> float:
        """``offset``, by the name whisper and pyannote users expect."""
        return self.offset
