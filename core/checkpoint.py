"""HAN checkpoints: self-describing files of plain types, and the original's weights.

An avparse checkpoint is a ``torch.save`` of one dict, readable with
``torch.load(path, weights_only=True)``::

    format           "avparse.han"
    version          FORMAT_VERSION (int; a reader refuses newer versions)
    config           HANConfig as a dict
    classes          list of class names, index order of the model's outputs
    profile          FeatureProfile as a dict (the input contract)
    extractor_state  nested dict of tensors (bundled trained extractors) or None
    extra            dict of plain values (training facts: epoch, metrics, ...)
    state_dict       the HAN's parameters (CPU tensors)
    calibration      optional: dict of plain values, the tracker's decision rules chosen by
                     ``avparse calibrate`` (``{"format": "avparse.decision-rules", "rules": [...]}``,
                     read by ``avparse.stream.decision.calibrations``); absent: the bare rule.
                     Readers that do not know it ignore it, so it needs no new format version.

:func:`load_model` also reads a raw ``state_dict`` saved by the original code
(YapengTian/AVVP-ECCV20 main_avvp.py: ``torch.save(model.state_dict(), ...)`` of
``MMIL_Net``): its HAN parameters are mapped onto ours, its unused modules
(``audio_encoder``, ``visual_encoder``, ``cmt_encoder``, the encoders' final
norms, which its forward never calls) are ignored by name, and it gets
``layer_mode="original"``, the LLP classes and the paper's feature profile.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from avparse.core.han import HAN, HANConfig
from avparse.core.labels import LLP_CLASSES
from avparse.core.profiles import PAPER, PROFILES, FeatureProfile

FORMAT_NAME = "avparse.han"
FORMAT_VERSION = 1

_KEYS = ("format", "version", "config", "classes", "profile", "extractor_state", "extra", "state_dict")


class CheckpointError(Exception):
    """A checkpoint file that cannot be used; the message is one line naming file and cause."""

    def __init__(self, path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{path}: {cause}")


@dataclass(frozen=True)
class LoadedModel:
    model: HAN                                  # in eval mode, on the requested device
    config: HANConfig                           # the model's config
    classes: tuple                              # class names in output index order
    profile: FeatureProfile                     # the features the model expects
    extractor_state: Optional[dict]             # bundled extractor weights or None
    meta: dict                                  # format, version, source ("avparse" | "original"), extra, ...
    calibration: Optional[dict] = None          # the tracker's calibrated decision rules (plain dict) or None


# ---------------------------------------------------------------------------- saving


def _check_plain(value: Any, where: str) -> Any:
    """Return a copy of value made of types that weights_only loading accepts (tensors to CPU)."""
    if value is None:
        return value
    for t in (bool, int, float, str):   # exact builtins: a numpy float64 (a float subclass) would be pickled
        if isinstance(value, t):        # as a numpy object that a weights-only load refuses
            return t(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            out[k] = _check_plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_check_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} is not a plain type (None, bool, int, float, str, "
                    "tensor, list, dict)")


def _check_profile_matches(cfg: HANConfig, profile: FeatureProfile) -> Optional[str]:
    pairs = (("audio_dim", "audio_dim"), ("v2d_dim", "v2d_dim"), ("v3d_dim", "v3d_dim"),
             ("frames_per_snippet", "frames_per_snippet"))
    for c, p in pairs:
        if getattr(cfg, c) != getattr(profile, p):
            return (f"model config {c}={getattr(cfg, c)} does not match feature profile "
                    f"{profile.name!r} {p}={getattr(profile, p)}")
    return None


def save_checkpoint(path, model: HAN, *, classes, profile: FeatureProfile, extra: Optional[dict] = None,
                    extractor_state: Optional[Mapping] = None, calibration: Optional[Mapping] = None) -> Path:
    """Write ``model`` with its config, class names and feature profile to ``path`` (atomically)."""
    path = Path(path)
    cfg: HANConfig = model.config
    classes = [str(c) for c in classes]
    if len(classes) != cfg.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with num_classes={cfg.num_classes}")
    if not isinstance(profile, FeatureProfile):
        raise TypeError(f"profile must be a FeatureProfile, not {type(profile).__name__}")
    problem = _check_profile_matches(cfg, profile)
    if problem:
        raise ValueError(problem)
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "classes": classes,
        "profile": profile.to_dict(),
        "extractor_state": _check_plain(extractor_state, "extractor_state"),
        "extra": _check_plain(dict(extra or {}), "extra"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if calibration is not None:
        payload["calibration"] = _check_plain(dict(calibration), "calibration")
    return _write(path, payload)


def _write(path: Path, payload: dict) -> Path:
    """torch.save ``payload`` to ``path`` atomically (a temporary file renamed), keeping an existing
    file's permission bits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------------- loading


def _one_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    line = text[0].strip() if text else type(e).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _read(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt, truncated or foreign files
        text = str(e)
        m = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", text)
        detail = m.group(1) if m else ""
        g = re.search(r"Unsupported global: GLOBAL (\S+)", detail)
        if g:
            raise CheckpointError(path, f"holds a Python object ({g.group(1)}) that a safe weights-only load "
                                        "refuses: not an avparse checkpoint") from None
        if detail:
            e = ValueError(detail)
        raise CheckpointError(
            path, f"cannot be read as a PyTorch weights file (corrupt, truncated or not a checkpoint): {_one_line(e)}"
        ) from None


def _check_state(path, model: HAN, state: Mapping, *, what: str) -> None:
    """Compare names and shapes with the model; one-line CheckpointError on the first difference."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise CheckpointError(path, f"{what} lacks parameters {', '.join(missing[:3])}{more}")
    if unexpected:
        more = f" (and {len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise CheckpointError(path, f"{what} has unexpected parameters {', '.join(unexpected[:3])}{more}")
    for k, v in want.items():
        got = state[k]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(path, f"{what} parameter {k} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(v.shape):
            raise CheckpointError(
                path, f"size mismatch for {k}: file has {list(got.shape)}, the config needs {list(v.shape)}")


def _finish(path, cfg: HANConfig, state: Mapping, device) -> HAN:
    try:
        model = HAN(cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"invalid model config: {_one_line(e)}") from None
    _check_state(path, model, state, what="the state dict")
    model.load_state_dict(state)
    return model.to(device).eval()


def _load_avparse(path: Path, d: dict, device) -> LoadedModel:
    version = d.get("version")
    if not isinstance(version, int):
        raise CheckpointError(path, f"format version is {version!r}, not an integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(path, f"written in checkpoint format version {version}, newer than this avparse "
                                    f"reads (up to {FORMAT_VERSION}); upgrade avparse")
    if version < 1:
        raise CheckpointError(path, f"unknown checkpoint format version {version}")
    missing = [k for k in _KEYS if k not in d]
    if missing:
        raise CheckpointError(path, f"checkpoint lacks the fields {', '.join(missing)}")
    try:
        cfg = HANConfig.from_dict(d["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"invalid model config: {_one_line(e)}") from None
    pd = d["profile"]
    if not isinstance(pd, dict) or pd.get("name") not in PROFILES:
        name = pd.get("name") if isinstance(pd, dict) else pd
        raise CheckpointError(path, f"unknown feature profile {name!r} (known: {', '.join(PROFILES)}); "
                                    "a newer avparse or the extractor that made it is needed")
    try:
        profile = FeatureProfile.from_dict(pd)
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"invalid feature profile: {_one_line(e)}") from None
    problem = _check_profile_matches(cfg, profile)
    if problem:
        raise CheckpointError(path, problem)
    classes = d["classes"]
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(path, "classes is not a list of names")
    if len(classes) != cfg.num_classes:
        raise CheckpointError(path, f"{len(classes)} class names for a model with num_classes={cfg.num_classes}")
    state = d["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(path, "state_dict is not a dict")
    if not isinstance(d["extra"], Mapping):
        raise CheckpointError(path, "extra is not a dict")
    if d["extractor_state"] is not None and not isinstance(d["extractor_state"], Mapping):
        raise CheckpointError(path, "extractor_state is neither a dict nor None")
    calibration = d.get("calibration")
    if calibration is not None and not isinstance(calibration, Mapping):
        raise CheckpointError(path, "calibration is neither a dict nor absent")
    model = _finish(path, cfg, state, device)
    meta = {"format": FORMAT_NAME, "version": version, "source": "avparse", "path": str(path),
            "extra": dict(d["extra"])}
    return LoadedModel(model, cfg, tuple(classes), profile, d["extractor_state"], meta,
                       dict(calibration) if calibration is not None else None)


def write_calibration(path, calibration: Optional[Mapping], *, out=None) -> Path:
    """Store ``calibration`` (plain values; None removes it) in the avparse checkpoint ``path``,
    everything else unchanged, atomically; to ``out`` instead when given. CheckpointError if ``path``
    is not an avparse checkpoint (an original MMIL_Net state dict has no place for it: save it with
    avparse first)."""
    path = Path(path)
    d = _read(path)
    if not (isinstance(d, Mapping) and d.get("format") == FORMAT_NAME):
        raise CheckpointError(path, "not an avparse checkpoint (an original MMIL_Net state dict cannot hold a "
                                    "calibration; train or convert with avparse first)")
    payload = dict(d)
    if calibration is None:
        payload.pop("calibration", None)
    else:
        payload["calibration"] = _check_plain(dict(calibration), "calibration")
    return _write(Path(out) if out is not None else path, payload)


# The original MMIL_Net (YapengTian/AVVP-ECCV20 nets/net_audiovisual.py) builds these
# modules but its forward never calls them; their parameters are ignored by name.
_ORIG_LAYER = r"\d+\.(self_attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)" \
              r"|(linear1|linear2|norm1|norm2)\.(weight|bias))"
_ORIG_IGNORED = re.compile(
    r"^(audio_encoder\.layers\." + _ORIG_LAYER + r"|visual_encoder\.layers\." + _ORIG_LAYER
    + r"|cmt_encoder\.layers\." + _ORIG_LAYER + r"|cmt_encoder\.norm[12]\.(weight|bias)"
    + r"|hat_encoder\.norm[12]\.(weight|bias))$"
)
# Used parameters: our names are the original's except for the HAN's prefix.
_ORIG_DIRECT = tuple(f"{m}.{p}" for m in ("fc_a", "fc_v", "fc_st", "fc_fusion", "fc_prob", "fc_frame_att",
                                           "fc_av_att") for p in ("weight", "bias"))
_ORIG_HAN = re.compile(r"^hat_encoder\.layers\.(\d+)\.((self_attn|cm_attn)\.(in_proj_weight|in_proj_bias"
                       r"|out_proj\.weight|out_proj\.bias)|(linear1|linear2|norm1|norm2)\.(weight|bias))$")


def is_original_state_dict(d: Any) -> bool:
    """True for a raw MMIL_Net state dict (optionally with DataParallel's "module." prefix)."""
    if not isinstance(d, Mapping) or not d or not all(isinstance(k, str) for k in d):
        return False
    keys = {k[7:] if k.startswith("module.") else k for k in d}
    return "fc_prob.weight" in keys and "hat_encoder.layers.0.cm_attn.in_proj_weight" in keys


def _load_original(path: Path, raw: Mapping, device, profile: FeatureProfile = PAPER) -> LoadedModel:
    state, ignored = {}, []
    for k, v in raw.items():
        name = k[7:] if k.startswith("module.") else k
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(path, f"original MMIL_Net state dict entry {k} is a {type(v).__name__}, not a tensor")
        if name in _ORIG_DIRECT:
            state[name] = v
        elif _ORIG_HAN.match(name):
            state["temporal." + name[len("hat_encoder."):]] = v
        elif _ORIG_IGNORED.match(name):
            ignored.append(name)
        else:
            raise CheckpointError(path, f"unexpected parameter {k!r} in an original MMIL_Net state dict")
    for name in ("fc_a.weight", "fc_v.weight", "fc_st.weight", "fc_prob.weight",
                 "temporal.layers.0.linear1.weight"):
        if name not in state:
            raise CheckpointError(path, f"original MMIL_Net state dict lacks {name}")
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("temporal.layers."))
    d_model, audio_dim = state["fc_a.weight"].shape
    cfg_kw = dict(audio_dim=int(audio_dim), v2d_dim=int(state["fc_v.weight"].shape[1]),
                  v3d_dim=int(state["fc_st.weight"].shape[1]), d_model=int(d_model),
                  dim_feedforward=int(state["temporal.layers.0.linear1.weight"].shape[0]),
                  num_classes=int(state["fc_prob.weight"].shape[0]), num_layers=layers,
                  nhead=1, frames_per_snippet=PAPER.frames_per_snippet,  # not in the weights; MMIL_Net uses 1, 8
                  pooling="attentive", temporal="han", layer_mode="original")
    try:
        cfg = HANConfig(**cfg_kw)
    except ValueError as e:
        raise CheckpointError(path, f"original MMIL_Net weights give an invalid config: {_one_line(e)}") from None
    if cfg.num_classes != len(LLP_CLASSES):
        raise CheckpointError(path, f"original MMIL_Net weights have {cfg.num_classes} classes, LLP has "
                                    f"{len(LLP_CLASSES)}")
    problem = _check_profile_matches(cfg, profile)
    if problem:
        raise CheckpointError(path, f"original MMIL_Net weights: {problem}")
    model = _finish(path, cfg, state, device)
    meta = {"format": "original-mmil-state-dict", "version": None, "source": "original", "path": str(path),
            "extra": {}, "ignored": sorted(ignored)}
    return LoadedModel(model, cfg, LLP_CLASSES, profile, None, meta)


def load_model(path, *, device="cpu", profile: str | FeatureProfile | None = None) -> LoadedModel:
    """Load an avparse checkpoint or an original MMIL_Net state dict; the model is in eval mode.

    ``profile``: the feature profile of a file that does not store one (an original state dict;
    default ``paper``, see avparse.core.registry.LLP_AUDIO_EVIDENCE; ``paper-pca`` for the other
    reading of the LLP audio features). For an avparse checkpoint, which stores its profile, a
    different one is an error. Raises CheckpointError (one line naming the file and the cause) for
    anything unusable.
    """
    path = Path(path)
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise CheckpointError(path, f"unknown feature profile {profile!r} (known: {', '.join(PROFILES)})")
        profile = PROFILES[profile]
    d = _read(path)
    if isinstance(d, Mapping) and d.get("format") == FORMAT_NAME:
        loaded = _load_avparse(path, d, device)
        if profile is not None and profile.name != loaded.profile.name:
            raise CheckpointError(path, f"was trained on feature profile {loaded.profile.name!r}, not "
                                        f"{profile.name!r}; drop the profile or pass a matching checkpoint")
        return loaded
    if is_original_state_dict(d):
        return _load_original(path, d, device, profile or PAPER)
    if isinstance(d, Mapping) and "format" in d:
        raise CheckpointError(path, f"unknown checkpoint format {d['format']!r}, expected {FORMAT_NAME!r}")
    raise CheckpointError(path, f"not an avparse checkpoint nor an original MMIL_Net state dict "
                                f"(it holds a {type(d).__name__})")
