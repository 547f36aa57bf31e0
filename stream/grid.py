"""The snippet grid: one frozen value that every stage of a pipeline is handed.

What one snippet is (its length, the audio rate, the frames it holds and their
size) comes from the checkpoint's feature profile; the hop (seconds between
snippet starts) is the pipeline's choice. The assembler cuts snippets on this
grid, inference spaces its windows on it, the tracker decides its cells on it:
one value, derived once, so that no stage can disagree with another.
"""

from __future__ import annotations

from dataclasses import dataclass

from avparse.core.profiles import FeatureProfile

_P = FeatureProfile  # the defaults below are the paper profile's


@dataclass(frozen=True)
class SnippetGrid:
    sample_rate: int = _P.sample_rate                 # audio samples per second (the profile's; paper: 16 kHz)
    snippet_seconds: float = _P.snippet_seconds       # length of one snippet (the profile's; LLP: 1 s)
    frames_per_snippet: int = _P.frames_per_snippet   # video frames per snippet (the profile's; paper: 8)
    frame_size: tuple[int, int] = (_P.frame_size, _P.frame_size)  # (H, W) of black frames when no frame was
                                                      # ever seen (the profile's 2D input size)
    hop: float = 1.0                                  # seconds between snippet starts (< snippet_seconds: overlapping)

    def __post_init__(self):
        if not 0 < self.hop <= self.snippet_seconds:
            raise ValueError(f"hop must be in (0, snippet_seconds], got {self.hop}")
        if abs(self.stride * self.hop - self.snippet_seconds) > 1e-6:
            raise ValueError(f"snippet_seconds ({self.snippet_seconds}) must be a whole number of hops ({self.hop})")

    @classmethod
    def from_profile(cls, profile, *, hop: float = 1.0) -> "SnippetGrid":
        """The grid of a feature profile (anything with its snippet fields) at ``hop``."""
        return cls(sample_rate=profile.sample_rate, snippet_seconds=profile.snippet_seconds,
                   frames_per_snippet=profile.frames_per_snippet,
                   frame_size=(profile.frame_size, profile.frame_size), hop=hop)

    @property
    def samples_per_snippet(self) -> int:
        return int(round(self.sample_rate * self.snippet_seconds))

    @property
    def hop_samples(self) -> int:
        return int(round(self.sample_rate * self.hop))

    @property
    def stride(self) -> int:
        """Snippets between two that lie one snippet length apart (1 at hop = snippet_seconds)."""
        return max(1, int(round(self.snippet_seconds / self.hop)))
