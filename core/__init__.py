"""avparse.core: the task and the model, no I/O.

Label sets, the Hybrid Attention Network, feature extractors and their
preprocessing, frame probabilities to events, the LLP metrics, checkpoints.
Importing this package has no side effects and does not import torch: the
torch-based pieces are imported lazily by name.
"""

from avparse.core.labels import LLP_CLASSES  # noqa: F401

__all__ = ["LLP_CLASSES", "load_model", "build_han", "HANConfig"]


def __getattr__(name):  # lazy, so `import avparse.core` stays torch-free
    if name in ("build_han", "HANConfig", "HAN", "HANOutput"):
        from avparse.core import han

        return getattr(han, name)
    if name in ("load_model", "save_checkpoint", "CheckpointError"):
        from avparse.core import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'avparse.core' has no attribute {name!r}")
