"""The training loss of the paper and the switches of its Table 2.

The paper (Sec. 3, "Alleviating Modality Bias and Label Noise") optimises
L = L_wsl + L_g with

    L_wsl = BCE(p_bar, y)                     (video-level, attentive MMIL pooling)
    L_g   = BCE(p_bar_a, y_a) + BCE(p_bar_v, y_v)   (individual guided learning)

and smoothed labels y_m = (1 - eps_m) y + eps_m / K for each modality m. The
code (YapengTian/AVVP-ECCV20, main_avvp.py ``train``) uses a = 1.0 and v = 0.9
in ``P = a*y + (1-a)*0.5``, i.e. eps_a = 0, eps_v = 0.1 and K = 2 (two
outcomes per sigmoid output): y_a = y and y_v = 0.9 y + 0.05. All three
probabilities are clamped to [1e-7, 1 - 1e-7] before the BCE, as in that code.

Table 2's rows are switches of :class:`LossConfig`:

- ``terms``: "both" (L_wsl + L_g), "weak" (L_wsl only), "guided" (L_g only).
- ``noisy``: "smooth" (the paper's method, per-modality eps), "none"
  (y_a = y_v = y), "bootstrap" (Reed et al. 2014, "Training deep neural
  networks on noisy labels with bootstrapping", ref. [7] of the paper).

Bootstrapping replaces the guided targets by a mix of the label and the
model's own prediction q of that modality: soft, t = beta*y + (1-beta)*q with
beta = 0.95 (Reed et al.'s soft setting; q is not detached, so the extra term
acts as the minimum-entropy regulariser Reed et al. describe); hard,
t = beta*y + (1-beta)*[q > 0.5] with beta = 0.8 (their hard setting). Reed et
al. define it for a softmax; here each of the C sigmoid outputs is a
two-outcome distribution, so the same formula applies per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TERMS = ("both", "weak", "guided")
NOISY = ("smooth", "none", "bootstrap")
BOOTSTRAP_MODES = ("soft", "hard")


@dataclass(frozen=True)
class LossConfig:
    terms: str = "both"           # "both" = L_wsl + L_g (paper), "weak" = L_wsl, "guided" = L_g (Table 2 rows 1-3)
    noisy: str = "smooth"         # guided-label noise handling: "smooth" (paper), "none", "bootstrap" (Table 2 last rows)
    eps_a: float = 0.0            # audio label-smoothing epsilon (paper code: a = 1.0 -> eps_a = 0)
    eps_v: float = 0.1            # visual label-smoothing epsilon (paper code: v = 0.9 -> eps_v = 0.1)
    smooth_k: int = 2             # K of y_m = (1-eps) y + eps/K (paper code: the 0.5 of (1-v)*0.5 -> K = 2)
    bootstrap_mode: str = "soft"  # Reed et al.: "soft" (t = b*y + (1-b)*q) or "hard" (t = b*y + (1-b)*[q>0.5])
    bootstrap_beta: float | None = None  # None = Reed et al.'s value: 0.95 soft, 0.8 hard
    clamp: float = 1e-7           # probabilities clamped to [clamp, 1-clamp] (paper code)

    def __post_init__(self):
        if self.terms not in TERMS:
            raise ValueError(f"loss terms must be one of {TERMS}, got {self.terms!r}")
        if self.noisy not in NOISY:
            raise ValueError(f"noisy-label handling must be one of {NOISY}, got {self.noisy!r}")
        if self.bootstrap_mode not in BOOTSTRAP_MODES:
            raise ValueError(f"bootstrap mode must be one of {BOOTSTRAP_MODES}, got {self.bootstrap_mode!r}")
        for name in ("eps_a", "eps_v"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if self.smooth_k < 2:
            raise ValueError(f"smooth_k (K) must be > 1, got {self.smooth_k}")
        if self.bootstrap_beta is not None and not 0.0 <= self.bootstrap_beta <= 1.0:
            raise ValueError(f"bootstrap_beta must be in [0, 1], got {self.bootstrap_beta}")

    @property
    def beta(self) -> float:
        if self.bootstrap_beta is not None:
            return self.bootstrap_beta
        return 0.95 if self.bootstrap_mode == "soft" else 0.8


def smooth_labels(y: torch.Tensor, eps: float, k: int) -> torch.Tensor:
    """The paper's y_m = (1 - eps) y + eps / K."""
    return (1.0 - eps) * y + eps / k


def _bce(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy; ``t`` may carry gradient (soft bootstrap)."""
    if not t.requires_grad:
        return F.binary_cross_entropy(p, t)
    return -(t * torch.log(p) + (1.0 - t) * torch.log1p(-p)).mean()


def guided_targets(cfg: LossConfig, y: torch.Tensor, a_prob: torch.Tensor, v_prob: torch.Tensor):
    """Targets (y_a, y_v) of the guided loss for the configured noisy-label handling."""
    if cfg.noisy == "none":
        return y, y
    if cfg.noisy == "smooth":
        return smooth_labels(y, cfg.eps_a, cfg.smooth_k), smooth_labels(y, cfg.eps_v, cfg.smooth_k)
    b = cfg.beta
    if cfg.bootstrap_mode == "soft":
        return b * y + (1.0 - b) * a_prob, b * y + (1.0 - b) * v_prob
    return (
        b * y + (1.0 - b) * (a_prob.detach() > 0.5).to(y.dtype),
        b * y + (1.0 - b) * (v_prob.detach() > 0.5).to(y.dtype),
    )


def avvp_loss(cfg: LossConfig, global_prob, a_prob, v_prob, y) -> torch.Tensor:
    """The training loss for one batch: probabilities [B, C], weak labels y [B, C] float."""
    lo, hi = cfg.clamp, 1.0 - cfg.clamp
    p = global_prob.clamp(lo, hi)
    pa = a_prob.clamp(lo, hi)
    pv = v_prob.clamp(lo, hi)
    loss = None
    if cfg.terms in ("both", "guided"):
        ya, yv = guided_targets(cfg, y, pa, pv)
        loss = _bce(pa, ya) + _bce(pv, yv)
    if cfg.terms in ("both", "weak"):
        wsl = _bce(p, y)
        loss = wsl if loss is None else loss + wsl
    return loss
