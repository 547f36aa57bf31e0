"""Feature extractors (VGGish, ResNet-152, R(2+1)D-18 and the lite profile).

``build_extractor(profile, *, weights=None, backend="eager", device="cpu")``
returns an ``Extractor``; ``extractor(audio [N, samples], frames uint8
[N, F, H, W, 3]) -> Features(audio [N, A], v2d [N, F, D2], v3d [N, D3])``.
Importing this package does not import torch; the names load lazily.
"""

__all__ = ["build_extractor", "Extractor", "ExtractorOptions", "Features", "BACKENDS"]


def __getattr__(name):
    if name in ("build_extractor", "Extractor", "ExtractorOptions", "Features"):
        from avparse.core.extractors import extractor

        return getattr(extractor, name)
    if name == "BACKENDS":
        from avparse.core.extractors.backends import BACKENDS

        return BACKENDS
    raise AttributeError(f"module 'avparse.core.extractors' has no attribute {name!r}")
