"""Finding and reading published weight files.

A weight file is looked up, in order, in the directory the user names
(``weights=``) and in the torch hub cache, ``torch.hub.get_dir()/checkpoints``
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``),
under the file name of its published URL: the place torchvision's weight enums
and ``torch.hub.load_state_dict_from_url`` would have put it. Lookup neither
downloads nor checks checksums (as torch hub loads a cached file): the
commands and ``avparse.load`` first fetch and verify what a model needs
(``avparse.core.hub.fetch`` with the files of ``avparse.core.registry``),
then build from the same places. A missing file here is a
``WeightsNotFoundError`` naming the file, its URL and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from avparse.core.hub import WeightsError, WeightsNotFoundError, cache_dir  # noqa: F401 (re-exported)


def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint cache (honours $TORCH_HOME, read at call time)."""
    return cache_dir()


def file_name(url: str) -> str:
    return os.path.basename(url.split("?")[0])


def _places(weights_dir) -> list[Path]:
    return ([Path(weights_dir)] if weights_dir is not None else []) + [hub_checkpoint_dir()]


_HOW = ("`avparse models --fetch NAME` or the first run of a command with that model downloads it; "
        "or copy it there by hand")


def find_weight_file(url: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """The local path of the file published at ``url`` (see module doc)."""
    name = file_name(url)
    for d in _places(weights_dir):
        p = d / name
        if p.is_file():
            return p
    where = " or ".join(str(d) for d in _places(weights_dir))
    raise WeightsNotFoundError(f"weight file {name} not found; put it in {where} (it is published at {url}; {_HOW})")


def find_weight_files(urls: list[str], weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """``find_weight_file`` for several files; one error naming every missing one."""
    found, missing = [], []
    for url in urls:
        try:
            found.append(find_weight_file(url, weights_dir))
        except WeightsNotFoundError:
            missing.append(url)
    if missing:
        names = ", ".join(file_name(u) for u in missing)
        urls_ = " ".join(missing)
        raise WeightsNotFoundError(
            f"weight file{'s' if len(missing) > 1 else ''} {names} not found; put "
            f"{'them' if len(missing) > 1 else 'it'} in {' or '.join(str(d) for d in _places(weights_dir))} "
            f"(published at {urls_}; {_HOW})"
        )
    return found


def load_state_dict(path: str | os.PathLike, *, prefer: str | None = None) -> dict:
    """torch.load with weights_only=True; numpy arrays (as some published
    files hold) are allowed through torch's safe-globals list. A file holding
    a dict with the key ``prefer`` (e.g. a checkpoint's ``extractor_state``)
    or ``state_dict`` gives that entry."""
    path = Path(path)
    try:
        obj = _load(path)
    except Exception as e:  # corrupt, truncated, not a torch file
        raise WeightsError(f"cannot read weight file {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if isinstance(obj, dict) and prefer is not None and prefer in obj:
        obj = obj[prefer]
        if obj is None:
            raise WeightsError(f"{path} holds no {prefer}")
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"weight file {path} does not hold a state dict (got {type(obj).__name__})")
    return obj


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:
        if "numpy" not in str(first):
            raise
    import numpy as np

    allowed = [np.ndarray, np.dtype, type(np.dtype("float32")), type(np.dtype("float64"))]
    try:
        allowed.append(np._core.multiarray._reconstruct)
    except AttributeError:  # numpy < 2
        allowed.append(np.core.multiarray._reconstruct)
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)
