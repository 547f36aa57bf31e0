"""Feature profiles: a named set of extractors and its snippet contract.

A profile fixes what one 1 s snippet is made of (audio rate and samples,
frames and their size) and what features come out (sizes). Every checkpoint
stores its profile; a model is never fed features of another profile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FeatureProfile:
    name: str                      # "paper" or "lite"
    sample_rate: int = 16000       # audio samples per second fed to the audio extractor
    snippet_seconds: float = 1.0   # length of one snippet (LLP: 1 s)
    frames_per_snippet: int = 8    # video frames sampled per snippet (paper: 8 fps)
    frame_size: int = 224          # side of the square 2D-CNN input (ResNet-152: 224)
    clip_size: int = 112           # side of the 3D-CNN clip input (R(2+1)D-18: 112)
    audio_dim: int = 128           # audio feature size per snippet (VGGish: 128)
    v2d_dim: int = 2048            # 2D feature size per frame (ResNet-152: 2048)
    v3d_dim: int = 512             # 3D feature size per snippet (R(2+1)D-18: 512)
    description: str = ""          # one line for humans

    @property
    def samples_per_snippet(self) -> int:
        return int(round(self.sample_rate * self.snippet_seconds))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureProfile":
        names = set(cls.__dataclass_fields__)
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown feature-profile fields {sorted(unknown)}")
        return cls(**d)

    def check_compatible(self, other: "FeatureProfile") -> None:
        """Raise ValueError naming the first field where two profiles differ."""
        a, b = self.to_dict(), other.to_dict()
        for k in a:
            if k != "description" and a[k] != b[k]:
                raise ValueError(
                    f"feature profile mismatch: {k} is {a[k]!r} in {self.name!r} but {b[k]!r} in {other.name!r}"
                )


PAPER = FeatureProfile(
    name="paper",
    description="VGGish 128-d, ResNet-152 2048-d on 8 frames/s, R(2+1)D-18 512-d (the LLP features)",
)

PROFILES: dict[str, FeatureProfile] = {"paper": PAPER}


def get_profile(name: str) -> FeatureProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown feature profile {name!r}; known: {', '.join(PROFILES)}") from None
