"""VGGish (Hershey et al. 2017) in PyTorch, with the published weight layout.

Module and parameter names follow harritaylor/torchvggish ``vggish.py`` so the
published files load unchanged (release v0.1):

- ``vggish-10086976.pth``: ``features.{0,3,6,8,11,13}.{weight,bias}`` (3x3
  convs 1-64-128-256-256-512-512, max-pools after 64, 128, the second 256 and
  the second 512) and ``embeddings.{0,2,4}.{weight,bias}`` (Linear
  12288-4096-4096-128, each followed by ReLU).
- ``vggish_pca_params-970ea276.pth``: ``pca_eigen_vectors`` [128, 128] and
  ``pca_means`` [128] (torchvggish reshapes the means to [128, 1]).

The conv stack's output [N, 512, 6, 4] is flattened in (H, W, C) order, as
TensorFlow did, before the embedding MLP (torchvggish transposes the same way).
Post-processing (optional): PCA whitening, clip to [-2, 2], quantise to 0..255
(``vggish_params.py``: QUANTIZE_MIN_VAL/MAX_VAL), kept as float.
"""

from __future__ import annotations

import torch
from torch import nn

from avparse.core.registry import VGGISH, VGGISH_PCA

from .visual import load_checked

VGGISH_FILE, VGGISH_URL = VGGISH.name, VGGISH.url              # the published files (addresses and checksums:
VGGISH_PCA_FILE, VGGISH_PCA_URL = VGGISH_PCA.name, VGGISH_PCA.url  # avparse.core.registry)

_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")  # torchvggish make_layers()
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0


def _features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 1
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers)


class VGGishTrunk(nn.Module):
    """Log-mel examples [B, 1, 96, 64] -> raw 128-d embeddings [B, 128]."""

    def __init__(self):
        super().__init__()
        self.features = _features()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True),
            nn.Linear(4096, 4096), nn.ReLU(True),
            nn.Linear(4096, 128), nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # [B, 512, 6, 4]
        x = x.permute(0, 2, 3, 1).flatten(1)  # (H, W, C) order, as TF
        return self.embeddings(x)


class PCAQuantize(nn.Module):
    """VGGish's PCA whitening + 8-bit quantisation (AudioSet release format)."""

    def __init__(self, dim: int = 128):
        super().__init__()
        self.register_buffer("pca_eigen_vectors", torch.eye(dim))
        self.register_buffer("pca_means", torch.zeros(dim, 1))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        emb = emb.float()
        pca = (emb - self.pca_means.t()) @ self.pca_eigen_vectors.t()
        pca = pca.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        return torch.round((pca - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


def load_vggish(trunk: VGGishTrunk, state: dict) -> None:
    """Load ``vggish-10086976.pth``'s state dict (names and shapes checked)."""
    _load_exact(trunk, state, VGGISH_FILE)


def load_pca(post: PCAQuantize, state: dict) -> None:
    """Load ``vggish_pca_params-970ea276.pth`` (tensors or numpy arrays)."""
    missing = {"pca_eigen_vectors", "pca_means"} - set(state)
    if missing:
        raise ValueError(f"{VGGISH_PCA_FILE}: missing {sorted(missing)}")
    vec = torch.as_tensor(state["pca_eigen_vectors"], dtype=torch.float32)
    means = torch.as_tensor(state["pca_means"], dtype=torch.float32)
    if vec.shape != (128, 128) or means.numel() != 128:
        raise ValueError(
            f"{VGGISH_PCA_FILE}: expected pca_eigen_vectors [128, 128] and pca_means [128], "
            f"got {tuple(vec.shape)} and {tuple(means.shape)}"
        )
    post.pca_eigen_vectors.copy_(vec)
    post.pca_means.copy_(means.reshape(-1, 1))


def _load_exact(module: nn.Module, state: dict, file: str) -> None:
    load_checked(module, {k: torch.as_tensor(v, dtype=torch.float32) for k, v in state.items()}, file)
