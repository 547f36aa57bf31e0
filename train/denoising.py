"""The training objectives of the denoising recipes (:mod:`avparse.train.recipes`): JoMoLD's noise
estimator loss, its joint-modal ranking and denoised loss, the snippet-alignment contrastive loss of
MA/JoMoLD, and the teacher's snippet loss. Written from the methods' descriptions and code (MCG-NJU/JoMoLD
``main.py``, ``nets/net_audiovisual.py``), nothing copied; the settings (:class:`JoMoLDConfig`,
:class:`TeacherConfig`) and the labels (:class:`TeacherLabels`) live in :mod:`avparse.train.recipes`.
An objective has ``loss(net, a, v2, v3, y, idx, step, *, autocast)`` and ``describe()``, as
:class:`avparse.train.trainer.PaperObjective`."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .losses import LossConfig, avvp_loss

if TYPE_CHECKING:   # annotations only: recipes imports this module
    from .recipes import JoMoLDConfig, TeacherConfig, TeacherLabels


def alignment_nce(x: torch.Tensor, temperature: float, smooth: float) -> torch.Tensor:
    """The snippet-alignment contrastive loss of MA/JoMoLD on snippet features x [2, B, T, d]: audio
    snippet t against the T visual snippets of its video (cosine / temperature, softmax), the target
    visual snippet t with probability 1 - smooth and smooth / (T - 1) on each other one;
    loss = -mean log(sum(target * softmax))."""
    a = F.normalize(x[0].float(), dim=-1)
    v = F.normalize(x[1].float(), dim=-1)
    sims = torch.bmm(a, v.transpose(1, 2)) / temperature                  # [B, T, T]
    t = sims.shape[-1]
    if t == 1:
        return sims.new_zeros(())
    target = torch.full_like(sims, smooth / (t - 1))
    target.diagonal(dim1=1, dim2=2).fill_(1.0 - smooth)
    return -torch.log((target * torch.softmax(sims, dim=-1)).sum(-1)).mean()


def _bce(p, t, clamp=1e-7):
    return F.binary_cross_entropy(p.clamp(clamp, 1 - clamp), t)


def _smoothed(y, s):
    return s * y + (1.0 - s) * 0.5


class EstimatorObjective:
    """JoMoLD's noise estimator loss (model built with ``cross_attention=False``)."""

    def __init__(self, jcfg: JoMoLDConfig):
        self.j = jcfg

    def loss(self, net, a, v2, v3, y, idx, step, *, autocast):
        with autocast():
            o, x = net(a, v2, v3, return_features=True)
        return (_bce(o.a_prob, _smoothed(y, self.j.a_smooth)) + _bce(o.v_prob, _smoothed(y, self.j.v_smooth))
                + _bce(o.global_prob, y) + alignment_nce(x, self.j.temperature, 0.1))

    def describe(self) -> dict:
        return {"name": "jomold-estimator", "jomold": self.j.to_dict()}


def joint_modal_drop(loss_a: torch.Tensor, loss_v: torch.Tensor, pos: torch.Tensor, k_a: torch.Tensor,
                     k_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """JoMoLD's joint-modal ranking on one batch. loss_a, loss_v [B, C]: per (video, class) BCE of each
    modality; pos [B, C] bool: labelled; k_a, k_v [C] ints: how many labels of each class may be noise.
    Returns (drop_a, drop_v) bool [B, C]: a visual label is dropped when it is among the k_v positives
    of its class with the LARGEST visual loss AND among the k_v with the SMALLEST audio loss (the
    class is clearly heard but not seen), and symmetrically for audio."""
    b, c = loss_a.shape
    big = torch.finfo(loss_a.dtype).max
    drop_a = torch.zeros_like(pos)
    drop_v = torch.zeros_like(pos)
    for ci in range(c):
        p = pos[:, ci]
        n = int(p.sum())
        if n == 0:
            continue
        la = torch.where(p, loss_a[:, ci], big)    # positives first in ascending order
        lv = torch.where(p, loss_v[:, ci], big)
        asc_a = torch.argsort(la, stable=True)[:n]
        asc_v = torch.argsort(lv, stable=True)[:n]
        kv, ka = int(k_v[ci]), int(k_a[ci])
        if kv > 0:
            low_a = torch.zeros(b, dtype=torch.bool, device=pos.device)
            high_v = torch.zeros_like(low_a)
            low_a[asc_a[:kv]] = True
            high_v[asc_v[n - kv:]] = True
            drop_v[:, ci] = low_a & high_v
        if ka > 0:
            high_a = torch.zeros(b, dtype=torch.bool, device=pos.device)
            low_v = torch.zeros_like(high_a)
            high_a[asc_a[n - ka:]] = True
            low_v[asc_v[:ka]] = True
            drop_a[:, ci] = high_a & low_v
    return drop_a, drop_v


class DenoisingObjective:
    """JoMoLD's denoised training (``ratios`` given) and/or the teacher's snippet loss (``teacher``
    given); with neither it is not used (the paper's objective is)."""

    def __init__(self, *, jcfg: JoMoLDConfig | None = None, ratios: dict | None = None, warm_steps: float = 0.0,
                 teacher: "TeacherLabels | None" = None, tcfg: TeacherConfig | None = None,
                 loss_cfg: LossConfig | None = None):
        self.j, self.t, self.tcfg, self.loss_cfg = jcfg, teacher, tcfg, loss_cfg
        self.ratios = None
        if ratios is not None:
            self.ratios = (torch.tensor(ratios["audio"], dtype=torch.float32),
                           torch.tensor(ratios["visual"], dtype=torch.float32))
        self.warm_steps = float(warm_steps)

    def _targets(self, model, a, v2, v3, y, step, autocast):
        """JoMoLD's denoised guided targets of this batch (the model ranks, without cross-modal attention)."""
        j = self.j
        ya, yv = _smoothed(y, j.a_smooth), _smoothed(y, j.v_smooth)
        ra, rv = (r.to(y.device) for r in self.ratios)
        if self.warm_steps > 0:
            w = min(1.0, step / self.warm_steps)
            ra, rv = ra * w, rv * w
        with torch.no_grad():
            with autocast():
                o = model(a, v2, v3, cross_attention=False)
            clamp = 1e-7
            la = F.binary_cross_entropy(o.a_prob.float().clamp(clamp, 1 - clamp), ya, reduction="none")
            lv = F.binary_cross_entropy(o.v_prob.float().clamp(clamp, 1 - clamp), yv, reduction="none")
            pos = y > 0.5
            n = pos.sum(dim=0).float()
            drop_a, drop_v = joint_modal_drop(la, lv, pos, (ra * n).floor(), (rv * n).floor())
        return ya.masked_fill(drop_a, 0.0), yv.masked_fill(drop_v, 0.0)

    def loss(self, net, a, v2, v3, y, idx, step, *, autocast):
        if self.ratios is not None:   # rank first (no gradient), as JoMoLD does, then the training pass
            ya, yv = self._targets(net, a, v2, v3, y, step, autocast)
        with autocast():
            o, x = net(a, v2, v3, return_features=True)
        if self.ratios is not None:
            j = self.j
            if self.t is not None:   # the teacher's modality labels take part in the ranking's targets
                ya, yv = ya * self.t.video(idx, 0, y.device), yv * self.t.video(idx, 1, y.device)
            loss = (j.audio_weight * _bce(o.a_prob, ya) + j.visual_weight * _bce(o.v_prob, yv)
                    + j.video_weight * _bce(o.global_prob, y) + j.nce_weight * alignment_nce(x, j.temperature,
                                                                                             j.nce_smooth))
        else:
            ta, tv = self.t.video(idx, 0, y.device), self.t.video(idx, 1, y.device)
            lc = self.loss_cfg or LossConfig(noisy="none")
            loss = avvp_loss(replace(lc, terms="weak"), o.global_prob, o.a_prob, o.v_prob, y) \
                + _bce(o.a_prob, ta) + _bce(o.v_prob, tv)
        if self.t is not None and self.tcfg.snippet_weight > 0:
            s = self.t.snippets(idx, y.device)                       # [B, T, 2, C]
            loss = loss + self.tcfg.snippet_weight * _bce(o.frame_prob, s)
        return loss

    def describe(self) -> dict:
        d = {"name": "+".join(n for n, on in (("jomold", self.ratios is not None), ("teacher", self.t is not None))
                              if on)}
        if self.ratios is not None:
            d.update(jomold=self.j.to_dict(), ratios=[r.tolist() for r in self.ratios], warm_steps=self.warm_steps)
        if self.t is not None:
            d.update(teacher=self.tcfg.to_dict(), labels_sha=self.t.digest())
        return d
