"""Audio and image preprocessing in torch, batched, on any device.

``LogMel`` reproduces VGGish's log-mel front end (the reference is
``mel_features.py`` of tensorflow/models research/audioset/vggish, as copied in
harritaylor/torchvggish): frames of ``win_length`` samples every
``hop_length`` samples with no padding, a *periodic* Hann window, an rfft of
the next power of two, magnitudes (not power), an HTK-mel filterbank with a
zeroed DC row, then ``log(mel + log_offset)``; examples are consecutive,
non-overlapping blocks of ``example_frames`` frames. The filterbank is built
in float64 as the reference does and stored as a float32 buffer.

``frames_to_images`` / ``frames_to_clips`` turn uint8 RGB frames of any size
into normalised float tensors as the paper's feature scripts did (see
``avparse.core.profiles``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from avparse.core.profiles import FeatureProfile


def hertz_to_mel(hz):
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix(*, num_bins: int, sample_rate: int, mel_bands: int, fmin: float, fmax: float) -> np.ndarray:
    """[num_bins, mel_bands] triangular HTK-mel weights on magnitude bins.

    Band i spans mel edges i..i+2 of ``mel_bands + 2`` points spaced evenly
    in mel between fmin and fmax; the DC bin gets no weight (HTK).
    """
    nyquist = sample_rate / 2.0
    if not 0.0 <= fmin < fmax <= nyquist:
        raise ValueError(f"mel band edges must satisfy 0 <= fmin < fmax <= {nyquist} Hz; got {fmin}, {fmax}")
    bins_mel = hertz_to_mel(np.linspace(0.0, nyquist, num_bins))
    edges = np.linspace(hertz_to_mel(fmin), hertz_to_mel(fmax), mel_bands + 2)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_mel[None, :] - lo) / (mid - lo)
    falling = (hi - bins_mel[None, :]) / (hi - mid)
    w = np.maximum(0.0, np.minimum(rising, falling)).T  # [bins, bands]
    w[0, :] = 0.0
    return w


class LogMel(nn.Module):
    """Waveform [N, samples] (float, at profile.sample_rate) -> log-mel examples
    [N, E, example_frames, mel_bands] where E = number of whole examples."""

    def __init__(self, profile: FeatureProfile):
        super().__init__()
        self.win_length = profile.win_length
        self.hop_length = profile.hop_length
        self.n_fft = 2 ** int(math.ceil(math.log2(self.win_length)))
        self.example_frames = profile.example_frames
        self.log_offset = float(profile.log_offset)
        n = torch.arange(self.win_length, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2.0 * math.pi / self.win_length * n)  # periodic Hann
        self.register_buffer("window", window.float(), persistent=False)
        mel = mel_matrix(
            num_bins=self.n_fft // 2 + 1,
            sample_rate=profile.sample_rate,
            mel_bands=profile.mel_bands,
            fmin=profile.mel_fmin,
            fmax=profile.mel_fmax,
        )
        self.register_buffer("mel", torch.from_numpy(mel).float(), persistent=False)

    def num_frames(self, samples: int) -> int:
        return 1 + (samples - self.win_length) // self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"expected audio [N, samples], got shape {tuple(wave.shape)}")
        wave = wave.float()
        frames = wave.unfold(-1, self.win_length, self.hop_length)  # [N, T, win]
        if frames.shape[1] < self.example_frames:
            need = self.win_length + (self.example_frames - 1) * self.hop_length
            raise ValueError(f"audio too short for one example: {wave.shape[-1]} samples, need {need}")
        spec = torch.fft.rfft(frames * self.window, n=self.n_fft).abs()  # [N, T, bins]
        logmel = torch.log(spec @ self.mel + self.log_offset)  # [N, T, bands]
        e = logmel.shape[1] // self.example_frames
        return logmel[:, : e * self.example_frames].reshape(wave.shape[0], e, self.example_frames, -1)


def _resize_center_crop(x: torch.Tensor, *, resize: int, size: int) -> torch.Tensor:
    """x uint8 [B, 3, H, W] -> uint8 [B, 3, size, size].

    resize > 0: shorter side to ``resize`` (aspect kept, torchvision's rule
    for an int size), then the centre ``size`` square; resize == 0: squash
    to size x size. Bilinear with antialiasing on uint8, as torchvision's
    ``Resize`` does on PIL images (the paper's scripts used PIL).
    """
    from torchvision.transforms.v2 import functional as TF

    if resize > 0:
        if min(x.shape[-2:]) != resize:
            x = TF.resize(x, [resize], antialias=True)
        return TF.center_crop(x, [size, size])
    if tuple(x.shape[-2:]) != (size, size):
        x = TF.resize(x, [size, size], antialias=True)
    return x


def _normalize(x: torch.Tensor, mean, std, dtype) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x.float() / 255.0 - m) / s).to(dtype)


def _to_nchw(frames: torch.Tensor) -> torch.Tensor:
    if frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames uint8 [N, F, H, W, 3] RGB, got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    n, f, h, w, _ = frames.shape
    return frames.reshape(n * f, h, w, 3).permute(0, 3, 1, 2)


def frames_to_images(frames: torch.Tensor, profile: FeatureProfile, dtype=torch.float32) -> torch.Tensor:
    """uint8 [N, F, H, W, 3] -> normalised [N*F, 3, frame_size, frame_size] (2D CNN input)."""
    x = _resize_center_crop(_to_nchw(frames), resize=profile.frame_resize, size=profile.frame_size)
    return _normalize(x, profile.frame_mean, profile.frame_std, dtype)


def frames_to_clips(frames: torch.Tensor, profile: FeatureProfile, dtype=torch.float32) -> torch.Tensor:
    """uint8 [N, F, H, W, 3] -> normalised [N, 3, F, clip_size, clip_size] (3D CNN input)."""
    n, f = frames.shape[:2]
    x = _resize_center_crop(_to_nchw(frames), resize=profile.clip_resize, size=profile.clip_size)
    x = _normalize(x, profile.clip_mean, profile.clip_std, dtype)
    return x.reshape(n, f, 3, profile.clip_size, profile.clip_size).permute(0, 2, 1, 3, 4)
