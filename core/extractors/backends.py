"""Execution backends for the extractors' networks, behind one option.

- ``eager``: the modules as they are.
- ``compile``: ``torch.compile`` (Inductor). On the CPU with frozen weights
  (inference), Inductor folds batch norm into the convolutions and prepacks
  the weights for oneDNN; results match eager to float rounding.
- ``tensorrt``: torch-tensorrt (dynamo IR) with fp16 kernels, a dynamic batch
  range, and the built engine saved on disk and reused next time. When
  torch_tensorrt cannot be imported or no CUDA device is in use, it falls back
  to ``compile`` with one warning.

A backend wraps one network (``nn.Module`` taking one tensor) and returns a
callable with the same signature. Nothing here runs at import time.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

BACKENDS = ("eager", "compile", "tensorrt")


class BackendError(RuntimeError):
    """A backend could not be set up (clear message)."""


def default_engine_dir() -> Path:
    """Where tensorrt engines are cached: $AVPARSE_ENGINE_DIR or ~/.cache/avparse/engines."""
    env = os.environ.get("AVPARSE_ENGINE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "avparse" / "engines"


def tensorrt_unavailable_reason(device: torch.device) -> str | None:
    """None when the tensorrt backend can run, else why not."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return "no CUDA device is in use"
    try:
        import torch_tensorrt  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"torch_tensorrt cannot be imported ({type(e).__name__}: {e})"
    return None


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will actually run (tensorrt -> compile fallback, with a warning)."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "tensorrt":
        why = tensorrt_unavailable_reason(device)
        if why is not None:
            warnings.warn(f"tensorrt backend unavailable: {why}; falling back to torch.compile", RuntimeWarning, stacklevel=3)
            return "compile"
    return backend


def wrap(
    module: nn.Module,
    backend: str,
    *,
    name: str,
    example: torch.Tensor,
    max_batch: int,
    engine_dir: str | os.PathLike | None = None,
):
    """``module`` (eval mode, on its device and dtype) run by ``backend``.

    ``example`` is one input (batch dimension first) giving the shape and
    dtype; ``max_batch`` bounds the dynamic batch range of a tensorrt engine.
    """
    if backend == "eager":
        return module
    if backend == "compile":
        # freezing: treat the weights as constants (fold BN, prepack for oneDNN);
        # it applies only to inference (no grad), which is how extractors run.
        return torch.compile(module, options={"freezing": True})
    if backend == "tensorrt":
        return _tensorrt(module, name=name, example=example, max_batch=max_batch, engine_dir=engine_dir)
    raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _fingerprint(module: nn.Module, example: torch.Tensor, max_batch: int) -> str:
    """Engine cache key: weights, input shape range and dtype, library versions and GPU."""
    import torch_tensorrt

    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(repr((tuple(example.shape[1:]), str(example.dtype), max_batch)).encode())
    h.update(f"{torch.__version__}|{torch_tensorrt.__version__}|{torch.cuda.get_device_name(example.device)}".encode())
    return h.hexdigest()[:16]


def _tensorrt(module: nn.Module, *, name: str, example: torch.Tensor, max_batch: int, engine_dir):
    import torch_tensorrt

    engine_dir = Path(engine_dir) if engine_dir is not None else default_engine_dir()
    engine_dir.mkdir(parents=True, exist_ok=True)
    path = engine_dir / f"{name}-{_fingerprint(module, example, max_batch)}.ep"
    if path.is_file():
        try:
            return torch_tensorrt.load(str(path)).module()
        except Exception as e:  # stale or corrupt cache entry: rebuild it
            warnings.warn(f"cannot reuse tensorrt engine {path} ({e}); rebuilding it", RuntimeWarning, stacklevel=2)
    shape = tuple(example.shape[1:])
    opt = max(1, min(max_batch, example.shape[0]))
    spec = torch_tensorrt.Input(
        min_shape=(1, *shape), opt_shape=(opt, *shape), max_shape=(max_batch, *shape), dtype=example.dtype
    )
    kwargs = dict(ir="dynamo", inputs=[spec], enabled_precisions={example.dtype})
    with torch.inference_mode():
        trt = torch_tensorrt.compile(module, **kwargs)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:  # torch-tensorrt >= 2.5: the Input's min/opt/max keep the batch dynamic in the saved program
        torch_tensorrt.save(trt, str(tmp), arg_inputs=[spec])
    except TypeError:  # older releases name the argument ``inputs``
        torch_tensorrt.save(trt, str(tmp), inputs=[spec])
    os.replace(tmp, path)
    return trt
