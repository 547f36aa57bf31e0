"""The ``lite`` profile's extractors: small trainable CNNs for CPUs.

- audio: VGGish's log-mel front end (same 96 x 64 examples) into a 4-block
  CNN with batch norm, global average pooling and a linear layer (128-d).
- 2D: torchvision's MobileNetV3-Small trunk on 112 px frames, pooled (576)
  and projected linearly to 256-d. ImageNet weights
  (``MobileNet_V3_Small_Weights.IMAGENET1K_V1``) can initialise the trunk.
- 3D (motion): a small 3D CNN on 64 px clips of the snippet's frames and
  their temporal differences (128-d).

All three are plain ``nn.Module``s: they train (the demo pretrains them on
synthetic scenes) and their weights travel in the checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

MOBILENET_ENUM = "MobileNet_V3_Small_Weights.IMAGENET1K_V1"


def mobilenet_url() -> str:
    from torchvision.models import MobileNet_V3_Small_Weights

    return MobileNet_V3_Small_Weights.IMAGENET1K_V1.url


def _block2d(cin: int, cout: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


class LiteAudioNet(nn.Module):
    """log-mel examples [B, 1, 96, 64] -> [B, dim]."""

    def __init__(self, dim: int = 128, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block2d(1, w, True), *_block2d(w, 2 * w, True), *_block2d(2 * w, 4 * w, True), *_block2d(4 * w, 8 * w, False)
        )
        self.proj = nn.Linear(8 * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x).mean((2, 3)))


class LiteFrameNet(nn.Module):
    """images [B, 3, S, S] -> [B, dim]: MobileNetV3-Small trunk, pooled, projected."""

    def __init__(self, dim: int = 256, trunk_state: dict | None = None):
        super().__init__()
        from torchvision.models import mobilenet_v3_small

        net = mobilenet_v3_small(weights=None)
        if trunk_state is not None:
            feats = {k[len("features."):]: v for k, v in trunk_state.items() if k.startswith("features.")}
            net.features.load_state_dict(feats)
        self.features = net.features
        self.proj = nn.Linear(576, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x).mean((2, 3)))


class LiteMotionNet(nn.Module):
    """clips [N, 3, F, S, S] -> [N, dim]: frames and frame differences into a small 3D CNN."""

    def __init__(self, dim: int = 128, width: int = 16):
        super().__init__()
        w = width

        def block(cin, cout, stride):
            return [nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(6, w, (1, 2, 2)), *block(w, 2 * w, (1, 2, 2)), *block(2 * w, 4 * w, (2, 2, 2)), *block(4 * w, 8 * w, (2, 2, 2))
        )
        self.proj = nn.Linear(8 * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = x[:, :, 1:] - x[:, :, :-1]
        x = torch.cat([x[:, :, 1:], diff], dim=1)  # [N, 6, F-1, S, S]
        return self.proj(self.features(x).mean((2, 3, 4)))
