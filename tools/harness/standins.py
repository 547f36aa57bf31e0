"""A cheap stand-in for the extractors and the model: audio RMS and zero-crossing rate, frame
colour means and motion, and a small random HAN over those features. For soaks of the plumbing
on a small CPU (``avparse soak --extractor stats``) and for tests of the pipeline that need
a model whose events depend on the media but not its cost."""

from __future__ import annotations

from types import SimpleNamespace


class StatsExtractor:
    """A cheap stand-in extractor: audio RMS and zero-crossing rate, frame colour means and motion."""

    def __call__(self, audio, frames):
        import numpy as np
        import torch

        a = torch.from_numpy(np.asarray(audio, np.float32))
        fr = torch.from_numpy(np.asarray(frames)).float() / 255.0
        feat_a = torch.stack([a.pow(2).mean(1).sqrt() * 10, (a[:, 1:] * a[:, :-1] < 0).float().mean(1)], -1)
        return SimpleNamespace(audio=feat_a, v2d=fr.mean(dim=(2, 3)), v3d=fr.std(dim=(1, 2, 3, 4))[:, None])


def stand_in(classes):
    """A small random HAN over the stand-in features for ``classes``, as a LoadedModel-like object
    (``.model``, ``.classes``, ``.profile``)."""
    import torch

    from avparse.core.han import HANConfig, build_han

    torch.manual_seed(3)
    han = build_han(HANConfig(audio_dim=2, v2d_dim=3, v3d_dim=1, frames_per_snippet=8, d_model=8,
                              dim_feedforward=8, dropout=0.0, num_classes=len(classes))).eval()
    profile = SimpleNamespace(name="stats", sample_rate=16000, snippet_seconds=1.0, frames_per_snippet=8,
                              frame_size=112)
    return SimpleNamespace(model=han, classes=tuple(classes), profile=profile)
