"""The paper's visual extractors, taken from torchvision.

- 2D: ResNet-152 with the classifier removed (the 2048-d global-average-pooled
  output). The paper's ``scripts/extract_rgb_feat.py`` used Cadene's
  ``pretrainedmodels.resnet152(pretrained='imagenet')``, whose weights are
  torchvision's original ImageNet ResNet-152 (2017,
  ``resnet152-b121ed2d.pth``); torchvision republishes those weights as
  ``ResNet152_Weights.IMAGENET1K_V1`` (``resnet152-394f9c45.pth``). V2 are
  2021 weights from a new training recipe (and a 232 px resize), so V1 is
  the one that matches the LLP features.
- 3D: R(2+1)D-18 (``video.r2plus1d_18``) with the classifier removed (the
  512-d pooled output), as ``scripts/extract_3D_feat.py`` does with
  ``nn.Sequential(*list(model.children())[:-1])``; weights
  ``R2Plus1D_18_Weights.KINETICS400_V1`` (the script's ``pretrained=True``).
"""

from __future__ import annotations

import torch
from torch import nn

RESNET152_ENUM = "ResNet152_Weights.IMAGENET1K_V1"
R2PLUS1D_ENUM = "R2Plus1D_18_Weights.KINETICS400_V1"


def resnet152_url() -> str:
    from torchvision.models import ResNet152_Weights

    return ResNet152_Weights.IMAGENET1K_V1.url


def r2plus1d_url() -> str:
    from torchvision.models.video import R2Plus1D_18_Weights

    return R2Plus1D_18_Weights.KINETICS400_V1.url


class Pooled2D(nn.Module):
    """images [B, 3, S, S] -> [B, 2048]: torchvision ResNet-152 up to the pooled features."""

    def __init__(self, state_dict: dict | None = None):
        super().__init__()
        from torchvision.models import resnet152

        net = _build(resnet152, state_dict, "ResNet-152 (" + RESNET152_ENUM + ")")
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Pooled3D(nn.Module):
    """clips [N, 3, F, S, S] -> [N, 512]: torchvision R(2+1)D-18 up to the pooled features."""

    def __init__(self, state_dict: dict | None = None):
        super().__init__()
        from torchvision.models.video import r2plus1d_18

        net = _build(r2plus1d_18, state_dict, "R(2+1)D-18 (" + R2PLUS1D_ENUM + ")")
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _build(factory, state: dict | None, what: str) -> nn.Module:
    """A torchvision model, randomly initialised or holding ``state`` (built on
    the meta device and assigned: no time spent on an initialisation that the
    weights overwrite)."""
    if state is None:
        return factory(weights=None)
    with torch.device("meta"):
        net = factory(weights=None)
    load_checked(net, state, what)
    return net


def load_checked(net: nn.Module, state: dict, what: str) -> None:
    """Load ``state`` into ``net``: the same keys and shapes, else a ValueError naming ``what``."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{what}: state dict does not match (missing {missing[:4]}, unexpected {unexpected[:4]})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{what}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    net.load_state_dict(state, assign=True)
