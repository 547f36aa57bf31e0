"""One object that turns snippets into features: ``build_extractor``.

``extractor(audio, frames) -> Features`` takes a batch of N snippets (from any
number of streams): audio float32 [N, samples_per_snippet] at the profile's
sample rate, frames uint8 [N, F, H, W, 3] RGB of any size; and returns
float32 tensors audio [N, A], v2d [N, F, D2], v3d [N, D3].

Preprocessing (log-mel, resize/crop/normalise) runs in fp32 on the
extractor's device; the networks run through the chosen backend, in fp16 on a
GPU where that is safe (the convolutional trunks; the log-mel front end, the
PCA/quantisation and the outputs stay fp32), fp32 on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avparse.core.profiles import FeatureProfile, get_profile
from avparse.core.weights import WeightsError, find_weight_file, find_weight_files, load_state_dict

from . import backends
from .frontend import LogMel, frames_to_clips, frames_to_images


@dataclass
class Features:
    audio: torch.Tensor  # [N, audio_dim] float32
    v2d: torch.Tensor    # [N, frames_per_snippet, v2d_dim] float32
    v3d: torch.Tensor    # [N, v3d_dim] float32

    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(t.detach().float().cpu().numpy() for t in (self.audio, self.v2d, self.v3d))


@dataclass(frozen=True)
class ExtractorOptions:
    backend: str = "eager"          # "eager" | "compile" | "tensorrt" (falls back to compile)
    precision: str = "auto"         # "auto" (fp16 on CUDA, fp32 on CPU) | "fp32" | "fp16" | "bf16" (CPU autocast, approximate)
    max_images: int = 64            # 2D-CNN images per forward call (bounds memory; larger batches are chunked)
    max_clips: int = 32             # 3D-CNN clips (and audio examples x 8) per forward call
    channels_last: bool = True      # NHWC/NDHWC memory format for the CNNs (faster with oneDNN and cuDNN)
    engine_dir: str | None = None   # tensorrt engine cache (None: $AVPARSE_ENGINE_DIR or ~/.cache/avparse/engines)


class Extractor(nn.Module):
    """Audio front end + three networks + optional post-processing (see module doc)."""

    def __init__(self, profile: FeatureProfile, *, audio_net: nn.Module, v2d_net: nn.Module, v3d_net: nn.Module,
                 audio_post: nn.Module | None = None):
        super().__init__()
        self.profile = profile
        self.audio_frontend = LogMel(profile)
        self.audio_net = audio_net
        self.v2d_net = v2d_net
        self.v3d_net = v3d_net
        self.audio_post = audio_post
        self.options = ExtractorOptions()
        self.backend = "eager"  # the backend actually in use
        self._runners = None    # backend-wrapped nets (not registered: state_dict stays plain)
        self._autocast = False  # bf16 autocast on the CPU (precision "bf16")

    # -- set-up -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.audio_frontend.mel.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return next(self.v2d_net.parameters()).dtype

    def prepare(self, options: ExtractorOptions, device: str | torch.device = "cpu") -> "Extractor":
        """Move to ``device``, pick the precision, wrap the nets with the backend (eval mode)."""
        device = torch.device(device)
        self.options = options
        self.to(device)
        half = options.precision == "fp16" or (options.precision == "auto" and device.type == "cuda")
        if options.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"unknown precision {options.precision!r}; use auto, fp32, fp16 or bf16")
        if half and device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device; use precision fp32 (exact) or bf16 (approximate) on the CPU")
        if options.precision == "bf16" and device.type != "cpu":
            raise ValueError("bf16 is the CPU's reduced precision; on a GPU use fp16 (precision auto)")
        # bf16: weights stay fp32, convolutions and matmuls run in bf16 under CPU
        # autocast (AMX/AVX-512 BF16 where the CPU has them); features differ from fp32
        # by ~0.5% (relative L2, measured on ResNet-152), so it is opt-in, never the default.
        self._autocast = options.precision == "bf16"
        dtype = torch.float16 if half else torch.float32
        for net in (self.audio_net, self.v2d_net, self.v3d_net):
            net.to(dtype)
        if options.channels_last:
            self.v2d_net.to(memory_format=torch.channels_last)
            self.audio_net.to(memory_format=torch.channels_last)
            self.v3d_net.to(memory_format=torch.channels_last_3d)
        self.eval()
        self.backend = backends.resolve_backend(options.backend, device)
        p = self.profile
        examples = {
            "audio": torch.zeros(1, 1, p.example_frames, p.mel_bands, device=device, dtype=dtype),
            "v2d": torch.zeros(1, 3, p.frame_size, p.frame_size, device=device, dtype=dtype),
            "v3d": torch.zeros(1, 3, p.frames_per_snippet, p.clip_size, p.clip_size, device=device, dtype=dtype),
        }
        limits = {"audio": options.max_clips * 8, "v2d": options.max_images, "v3d": options.max_clips}
        self._runners = {
            k: backends.wrap(getattr(self, f"{k}_net"), self.backend, name=f"{p.name}-{k}", example=examples[k],
                             max_batch=limits[k], engine_dir=options.engine_dir)
            for k in ("audio", "v2d", "v3d")
        }
        return self

    def _run(self, key: str, x: torch.Tensor, chunk: int) -> torch.Tensor:
        eager = self.training or self._runners is None
        fn = getattr(self, f"{key}_net") if eager else self._runners[key]
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        if self.options.channels_last:
            x = x.contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._autocast):
            if x.shape[0] <= chunk:
                return fn(x).float()
            return torch.cat([fn(x[i:i + chunk]).float() for i in range(0, x.shape[0], chunk)])

    # -- extraction -----------------------------------------------------------
    def _as_tensor(self, x, dtype: torch.dtype) -> torch.Tensor:
        t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
        if t.dtype != dtype:
            if dtype == torch.uint8:
                raise ValueError(f"expected uint8 RGB frames, got {t.dtype}")
            t = t.to(dtype)
        return t.to(self.device, non_blocking=True)

    def encode_audio(self, audio) -> torch.Tensor:
        """float32 [N, samples_per_snippet] -> [N, audio_dim]."""
        p = self.profile
        wave = self._as_tensor(audio, torch.float32)
        if wave.dim() != 2 or wave.shape[1] != p.samples_per_snippet:
            raise ValueError(
                f"expected audio [N, {p.samples_per_snippet}] ({p.snippet_seconds} s at {p.sample_rate} Hz), "
                f"got shape {tuple(wave.shape)}"
            )
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            ex = self.audio_frontend(wave)  # [N, E, 96, 64] fp32
            n, e = ex.shape[:2]
            emb = self._run("audio", ex.reshape(n * e, 1, *ex.shape[2:]).to(self.compute_dtype), self.options.max_clips * 8)
            emb = emb.reshape(n, e, -1).mean(1)  # 1 s snippets hold exactly one example
            if self.audio_post is not None:
                emb = self.audio_post(emb)
        return emb

    def _frames(self, frames) -> torch.Tensor:
        p = self.profile
        frames = self._as_tensor(frames, torch.uint8)
        if frames.dim() != 5 or frames.shape[1] != p.frames_per_snippet or frames.shape[-1] != 3:
            raise ValueError(f"expected frames uint8 [N, {p.frames_per_snippet}, H, W, 3] RGB, got shape {tuple(frames.shape)}")
        return frames

    def encode_v2d(self, frames) -> torch.Tensor:
        """uint8 [N, F, H, W, 3] -> [N, F, v2d_dim] (one 2D-CNN vector per frame)."""
        frames = self._frames(frames)
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            v2d = self._run("v2d", frames_to_images(frames, self.profile, self.compute_dtype), self.options.max_images)
        return v2d.reshape(frames.shape[0], frames.shape[1], -1)

    def encode_v3d(self, frames) -> torch.Tensor:
        """uint8 [N, F, H, W, 3] -> [N, v3d_dim] (one clip vector per snippet)."""
        frames = self._frames(frames)
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            return self._run("v3d", frames_to_clips(frames, self.profile, self.compute_dtype), self.options.max_clips)

    def encode_frames(self, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [N, F, H, W, 3] -> (v2d [N, F, v2d_dim], v3d [N, v3d_dim])."""
        frames = self._frames(frames)
        return self.encode_v2d(frames), self.encode_v3d(frames)

    def forward(self, audio, frames) -> Features:
        a = self.encode_audio(audio)
        v2d, v3d = self.encode_frames(frames)
        if a.shape[0] != v2d.shape[0]:
            raise ValueError(f"audio has {a.shape[0]} snippets but frames have {v2d.shape[0]}")
        return Features(a, v2d, v3d)


# ---------------------------------------------------------------------------
def _paper_nets(profile: FeatureProfile, weights):
    from .visual import Pooled2D, Pooled3D, r2plus1d_url, resnet152_url
    from .vggish import VGGISH_PCA_URL, VGGISH_URL, PCAQuantize, VGGishTrunk, load_pca, load_vggish

    random_init = isinstance(weights, str) and weights == "random"
    wdir = None if random_init or weights is None else weights
    urls = [VGGISH_URL] + ([VGGISH_PCA_URL] if profile.audio_postprocess == "pca8" else []) + [resnet152_url(), r2plus1d_url()]
    paths = {} if random_init else dict(zip(urls, find_weight_files(urls, wdir)))  # all missing ones in one error

    def state(url):
        return None if random_init else load_state_dict(paths[url])

    if random_init:
        audio_net = VGGishTrunk()
    else:
        with torch.device("meta"):
            audio_net = VGGishTrunk()
    post = PCAQuantize() if profile.audio_postprocess == "pca8" else None
    if not random_init:
        try:
            load_vggish(audio_net, state(VGGISH_URL))
            if post is not None:
                load_pca(post, state(VGGISH_PCA_URL))
        except ValueError as e:
            raise WeightsError(str(e)) from None
    try:
        v2d = Pooled2D(state(resnet152_url()))
        v3d = Pooled3D(state(r2plus1d_url()))
    except ValueError as e:
        raise WeightsError(str(e)) from None
    return dict(audio_net=audio_net, v2d_net=v2d, v3d_net=v3d, audio_post=post)


def _lite_nets(profile: FeatureProfile, weights):
    from .lite import LiteAudioNet, LiteFrameNet, LiteMotionNet, mobilenet_url

    trunk = None
    if weights is not None and not (isinstance(weights, str) and weights == "random"):
        trunk = load_state_dict(find_weight_file(mobilenet_url(), weights))
    return dict(
        audio_net=LiteAudioNet(profile.audio_dim),
        v2d_net=LiteFrameNet(profile.v2d_dim, trunk_state=trunk),
        v3d_net=LiteMotionNet(profile.v3d_dim),
    )


_FAMILIES = {("vggish", "resnet152", "r2plus1d_18"): _paper_nets, ("lite-audio", "lite-2d", "lite-3d"): _lite_nets}


def build_extractor(
    profile: FeatureProfile | str,
    *,
    weights=None,
    backend: str = "eager",
    device: str | torch.device = "cpu",
    options: ExtractorOptions | None = None,
) -> Extractor:
    """The extractors of ``profile``, ready for inference on ``device``.

    ``weights``:
      - None: the published files from the torch hub cache (paper profiles);
        random initialisation for ``lite`` (it is trained, e.g. by the demo);
      - a directory: the published files are looked for there first (paper:
        VGGish, its PCA file, ResNet-152, R(2+1)D-18; lite: MobileNetV3-Small
        ImageNet weights for the 2D trunk);
      - ``"random"``: random initialisation (benchmarks, tests);
      - a state dict of this extractor (e.g. a checkpoint's extractor_state),
        or the path of a ``.pt`` file holding one.
    Missing published files raise ``WeightsNotFoundError`` naming the file and
    where to put it. ``backend`` is "eager", "compile" or "tensorrt";
    ``options`` sets precision, chunk sizes, memory format, engine cache.
    """
    if isinstance(profile, str):
        profile = get_profile(profile)
    key = (profile.audio_model, profile.v2d_model, profile.v3d_model)
    if key not in _FAMILIES:
        raise ValueError(f"profile {profile.name!r}: no extractor family for models {key}")
    state = None
    if isinstance(weights, (str, os.PathLike)) and weights != "random" and Path(weights).is_file():
        state = load_state_dict(weights, prefer="extractor_state")  # an extractor state file or a checkpoint bundling one
    elif isinstance(weights, dict):
        state = weights
    nets = _FAMILIES[key](profile, "random" if state is not None else weights)
    ext = Extractor(profile, **nets)
    if state is not None:
        missing, unexpected = ext.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise WeightsError(
                f"extractor weights do not match profile {profile.name!r} (missing {missing[:4]}, unexpected {unexpected[:4]})"
            )
    opts = options if options is not None else ExtractorOptions(backend=backend)
    if options is not None and backend != "eager" and options.backend == "eager":
        from dataclasses import replace

        opts = replace(options, backend=backend)
    return ext.prepare(opts, device)
