"""The Hybrid Attention Network with attentive MMIL pooling (Tian et al., ECCV 2020).

Written from the paper (Sec. 3) and the authors' code, YapengTian/AVVP-ECCV20
``nets/net_audiovisual.py`` (class ``MMIL_Net``), whose numbers are the defaults
of :class:`HANConfig`. Per snippet t of a window of T snippets::

    f_a^t = fc_a(audio^t)                                   # 128 -> 512
    f_v^t = fc_fusion([fc_v(mean_8(v2d^t)), fc_st(v3d^t)])  # 2048 -> 512, 512 -> 512, 1024 -> 512
    f^_a, f^_v = HAN(f_a, f_v)                              # self + cross-modal attention
    P[t, m] = sigmoid(fc_prob(f^_m^t))                      # frame probabilities, m = audio, visual
    W_tp = softmax_t(fc_frame_att(f^)), W_av = softmax_m(fc_av_att(f^))
    global = sum_t sum_m W_tp * W_av * P,  a = sum_t (W_tp * P)[:, 0],  v = sum_t (W_tp * P)[:, 1]

Departures in *how* it is computed, none in *what*:

* The original applies ``fc_v`` to all 8T frames and then average-pools groups
  of 8; a linear layer commutes with the mean, so here the 8 frames are averaged
  first and ``fc_v`` runs on T vectors (1/8 of the work, same result up to float
  rounding).
* The original runs the (shared) HAN layer twice, once for audio queries and
  once for visual queries; here both run as one batch of 2B sequences [a; v].
  The cross-modal keys/values of [v; a] are the in-projection of [a; v] with
  its halves swapped, so each attention needs one packed projection of the
  batch (no weight slices), and with one head the attention over T snippets
  is two small batched products (``HybridAttentionLayer.forward_pair``).
* The three snippet classifiers (fc_prob, fc_frame_att, fc_av_att) run as one
  matrix product on the [2, B, T, d] layout, without stacking to [B, T, 2, d]
  (``HAN.heads``). Dropout draws the same masks in the same order as the plain
  arrangement, so training with a seed gives the same run up to float rounding
  (tests/core/test_han_fast.py).
* The dropouts of the residual branches and the FFN draw their Bernoulli masks
  from uniform 32-bit integers (:func:`dropout`), about half the cost of
  torch's CPU ``bernoulli_``; the drop probability is p to 2**-32.

``layer_mode="original"`` keeps a quirk of the original ``Encoder``: every layer
receives the ORIGINAL inputs, so only the last layer's output counts (the others
are skipped: their outputs are overwritten in the original and never reach the
result or the gradients). ``"stacked"`` feeds each layer the previous output.
With ``num_layers=1`` (the paper) both modes are the same.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from os import PathLike
from typing import Mapping, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POOLINGS = ("attentive", "max", "mean")
TEMPORALS = ("han", "none", "gru", "transformer")
LAYER_MODES = ("original", "stacked")


@dataclass(frozen=True)
class HANConfig:
    # Defaults: YapengTian/AVVP-ECCV20 nets/net_audiovisual.py (MMIL_Net) unless noted.
    audio_dim: int = 128           # audio feature size per snippet (VGGish; fc_a = Linear(128, 512))
    v2d_dim: int = 2048            # 2D feature size per frame (ResNet-152; fc_v = Linear(2048, 512))
    v3d_dim: int = 512             # 3D feature size per snippet (R(2+1)D-18; fc_st = Linear(512, 512))
    frames_per_snippet: int = 8    # 2D frames per snippet, averaged (original: F.avg_pool2d(.., (8, 1)))
    d_model: int = 512             # hidden size of every snippet feature (HANLayer d_model=512)
    nhead: int = 1                 # attention heads in self- and cross-modal attention (nhead=1)
    num_layers: int = 1            # temporal layers (Encoder(..., num_layers=1))
    dim_feedforward: int = 512     # hidden size of the feed-forward block (dim_feedforward=512)
    dropout: float = 0.1           # dropout on attention weights, residual branches and FFN (dropout=0.1)
    num_classes: int = 25          # event classes (fc_prob = Linear(512, 25); LLP has 25)
    pooling: str = "attentive"     # MMIL pooling: "attentive" (paper), "max" or "mean" (Table 2 ablations)
    temporal: str = "han"          # temporal net: "han" (paper), "none", "gru", "transformer" (Table 2)
    layer_mode: str = "original"   # "original": every layer sees the inputs (the original's Encoder); "stacked"
    layer_norm_eps: float = 1e-5   # eps of every LayerNorm (nn.LayerNorm default, as in the original)
    cross_attention: bool = True   # temporal "han": the cross-modal branch (paper: on; off = JoMoLD's with_ca=False)
    visual_head_dropout: float = 0.0  # dropout on the visual snippet features before the classifiers, training
    #                                 # only (paper: none; JoMoLD / MA code: cls_dropout 0.5)

    def __post_init__(self):
        for name, f in self.__dataclass_fields__.items():
            value, kind = getattr(self, name), f.type if isinstance(f.type, str) else f.type.__name__
            ok = {"int": isinstance(value, int) and not isinstance(value, bool),
                  "float": isinstance(value, (int, float)) and not isinstance(value, bool),
                  "str": isinstance(value, str), "bool": isinstance(value, bool)}[kind]
            if not ok:
                raise ValueError(f"HANConfig.{name} must be a {kind}, not {value!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"HANConfig.pooling must be one of {POOLINGS}, not {self.pooling!r}")
        if self.temporal not in TEMPORALS:
            raise ValueError(f"HANConfig.temporal must be one of {TEMPORALS}, not {self.temporal!r}")
        if self.layer_mode not in LAYER_MODES:
            raise ValueError(f"HANConfig.layer_mode must be one of {LAYER_MODES}, not {self.layer_mode!r}")
        for name in ("audio_dim", "v2d_dim", "v3d_dim", "frames_per_snippet", "d_model", "nhead",
                     "num_layers", "dim_feedforward", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"HANConfig.{name} must be >= 1, not {getattr(self, name)!r}")
        if self.d_model % self.nhead:
            raise ValueError(f"HANConfig.d_model ({self.d_model}) must be divisible by nhead ({self.nhead})")
        if self.temporal == "gru" and self.d_model % 2:
            raise ValueError(f"HANConfig.d_model ({self.d_model}) must be even for the bidirectional GRU")
        for name in ("dropout", "visual_head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"HANConfig.{name} must be in [0, 1), not {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "HANConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown HANConfig fields {sorted(unknown)}")
        return cls(**d)


class HANOutput(NamedTuple):
    """What :class:`HAN` returns (a NamedTuple, so tracing and export keep it)."""

    global_prob: Tensor    # [B, C] video-level event probability (p-bar)
    a_prob: Tensor         # [B, C] video-level audio event probability (p-bar_a)
    v_prob: Tensor         # [B, C] video-level visual event probability (p-bar_v)
    frame_prob: Tensor     # [B, T, 2, C] snippet probabilities P; [:, :, 0] audio, [:, :, 1] visual
    temporal_att: Tensor   # [B, T, 2, C] temporal attention W_tp, sums to 1 over T
    av_att: Tensor         # [B, T, 2, C] audio-visual attention W_av, sums to 1 over the 2 modalities


_I32_MIN = -(2 ** 31)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with the keep/drop draws made cheaply on the CPU.

    torch's CPU ``bernoulli_`` costs ~7 ns per element here (a tenth of a training
    step of the paper-size HAN went into the four [2B*T, 512] masks). The same
    Bernoulli(1 - p) mask comes from uniform 32-bit integers compared with a
    threshold: one full-range ``random_`` over int64 gives two int32 draws per
    element pair, half the generator calls. The drop probability is p quantised to
    2**-32 (``bernoulli_`` compares a 24-bit float), the kept values are scaled by
    1/(1-p) as ``F.dropout`` does, and the draws come from torch's default
    generator, so a seed (and a checkpoint's saved RNG state) fixes them.
    Elsewhere (CUDA's fused kernel is already cheap) it is ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not x.is_floating_point() or p >= 1.0:
        return F.dropout(x, p, training)
    n = x.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-(2 ** 63), None)
    draws = bits.view(torch.int32)[:n].view(x.shape)
    noise = draws.ge(_I32_MIN + round(p * 2 ** 32)).to(x.dtype).div_(1.0 - p)
    return x * noise


class Dropout(nn.Module):
    """``nn.Dropout`` drawing its masks with :func:`dropout` (no parameters, same state dict)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class HybridAttentionLayer(nn.Module):
    """One HAN layer (the original's ``HANLayer``), batch-first.

    x <- norm1(x + drop(self_attn(x, x, x)) + drop(cross_attn(x, y, y))); x <- norm2(x + drop(FFN(x))).
    With ``cross=False`` it is a post-norm Transformer encoder layer (ReLU), which is
    what the original's unused ``audio_encoder``/``visual_encoder`` are.
    Parameter names follow the original so that its weights map one to one.
    """

    def __init__(self, cfg: HANConfig, *, cross: bool):
        super().__init__()
        d, h, p = cfg.d_model, cfg.nhead, cfg.dropout
        self.self_attn = nn.MultiheadAttention(d, h, dropout=p, batch_first=True)
        self.cm_attn = nn.MultiheadAttention(d, h, dropout=p, batch_first=True) if cross else None
        self.linear1 = nn.Linear(d, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(p)      # inside the FFN
        self.dropout_sa = Dropout(p)   # on the self-attention branch (original: dropout12)
        self.dropout_ca = Dropout(p)   # on the cross-modal branch (original: dropout11)
        self.dropout2 = Dropout(p)     # on the FFN branch

    def _attend(self, mha: nn.MultiheadAttention, x: Tensor, y: Optional[Tensor]) -> Tensor:
        """nn.MultiheadAttention's mathematics (packed in-projection, softmax(q k'/sqrt(d_head)) v with
        dropout on the weights, out-projection) on batch-first tensors without its layout copies.
        y=None: self-attention (one packed projection)."""
        n, t, d = x.shape
        w, b = mha.in_proj_weight, mha.in_proj_bias
        if y is None:
            q, k, v = F.linear(x, w, b).chunk(3, dim=-1)
        else:
            q = F.linear(x, w[:d], b[:d])
            k, v = F.linear(y, w[d:], b[d:]).chunk(2, dim=-1)
        h = mha.num_heads
        q, k, v = (z.reshape(n, -1, h, d // h).transpose(1, 2) for z in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=mha.dropout if self.training else 0.0)
        return mha.out_proj(o.transpose(1, 2).reshape(n, t, d))

    def _attend1(self, mha: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, n: int, t: int) -> Tensor:
        """One head: softmax(q k' / sqrt(d)) v with dropout on the weights, then the out-projection.
        q, k, v: [n*t, d] (row-strided views of a packed projection are fine) -> [n*t, d].
        The attention dropout draws one mask of [n, t, t] as nn.MultiheadAttention / SDPA do."""
        d = q.shape[-1]
        scores = torch.bmm(q.view(n, t, d), k.view(n, t, d).transpose(1, 2)).mul_(1.0 / math.sqrt(d))
        w = F.dropout(torch.softmax(scores, dim=-1), mha.dropout, self.training)
        return F.linear(torch.bmm(w, v.view(n, t, d)).view(n * t, d), mha.out_proj.weight, mha.out_proj.bias)

    def forward_pair(self, x: Tensor, cross: bool = True) -> Tensor:
        """The layer on x = [a; v] ([2B, T, d]) with keys/values of the other modality ([v; a]).

        The same as ``forward(x, torch.cat([x[B:], x[:B]]))`` (the same dropout draws in the same
        order), computed with less work: the cross-modal in-projection of [v; a] is that of
        [a; v] with its halves swapped, so one packed projection of x serves queries, keys and values.
        ``cross=False`` (or a layer without the cross-modal branch): self-attention only, as
        JoMoLD's ``with_ca=False``; no snippet then sees the other modality.
        """
        n, t, d = x.shape
        b = n // 2
        cross = cross and self.cm_attn is not None
        if self.self_attn.num_heads != 1 or n != 2 * b:
            return self.forward(x, torch.cat([x[b:], x[:b]]) if cross else None)
        x2 = x.reshape(n * t, d)
        # split/roll rather than slicing: their gradients are one cat/roll, not a zero-filled copy per slice
        sq, sk, sv = F.linear(x2, self.self_attn.in_proj_weight, self.self_attn.in_proj_bias).split(d, dim=-1)
        if cross:
            cq, ckv = F.linear(x2, self.cm_attn.in_proj_weight, self.cm_attn.in_proj_bias).split([d, 2 * d], dim=-1)
        sa = self._attend1(self.self_attn, sq, sk, sv, n, t)
        if cross:
            ck, cv = ckv.roll(b * t, dims=0).split(d, dim=-1)   # keys/values of the other modality: [v; a]
            ca = self._attend1(self.cm_attn, cq, ck, cv, n, t)
            h = self.norm1(x2 + self.dropout_ca(ca) + self.dropout_sa(sa))   # x + cross + self, as the original
        else:
            h = self.norm1(x2 + self.dropout_sa(sa))
        h = self.norm2(h + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(h))))))
        return h.view(n, t, d)

    def forward(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """x [N, T, d] attending to itself and, when ``y`` is given and the layer has the cross-modal
        branch, to ``y`` ([N, T, d]); ``y=None``: self-attention only."""
        sa = self._attend(self.self_attn, x, None)
        if self.cm_attn is None or y is None:
            h = x + self.dropout_sa(sa)
        else:  # same order of additions as the original: x + cross + self
            h = x + self.dropout_ca(self._attend(self.cm_attn, x, y)) + self.dropout_sa(sa)
        h = self.norm1(h)
        h = self.norm2(h + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(h))))))
        return h


class HANTemporal(nn.Module):
    """The hybrid attention network: one layer per depth, shared by both modalities."""

    def __init__(self, cfg: HANConfig):
        super().__init__()
        self.layer_mode = cfg.layer_mode
        self.cross = cfg.cross_attention
        self.layers = nn.ModuleList(HybridAttentionLayer(cfg, cross=cfg.cross_attention)
                                    for _ in range(cfg.num_layers))

    def forward(self, a: Tensor, v: Tensor, cross: Optional[bool] = None) -> tuple[Tensor, Tensor]:
        b = a.shape[0]
        x = self.forward_packed(torch.cat([a, v]), cross)
        return x[:b], x[b:]

    def forward_packed(self, x: Tensor, cross: Optional[bool] = None) -> Tensor:
        """x = [a; v] ([2B, T, d]) -> [a'; v']: audio queries attend to visual and vice versa
        (``cross=False``: each modality attends to itself only; None: the config's setting)."""
        cross = self.cross if cross is None else cross
        if self.layer_mode == "original":
            # Every layer gets the inputs and overwrites the output: only the last one counts.
            return self.layers[-1].forward_pair(x, cross)
        for layer in self.layers:
            x = layer.forward_pair(x, cross)
        return x


class TransformerTemporal(nn.Module):
    """Table 2 "Transformer": unimodal self-attention only, separate weights per modality.

    As the original's (unused) ``audio_encoder``/``visual_encoder``: post-norm
    encoder layers, stacked.
    """

    def __init__(self, cfg: HANConfig):
        super().__init__()
        self.audio_layers = nn.ModuleList(HybridAttentionLayer(cfg, cross=False) for _ in range(cfg.num_layers))
        self.visual_layers = nn.ModuleList(HybridAttentionLayer(cfg, cross=False) for _ in range(cfg.num_layers))

    def forward(self, a: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        for la, lv in zip(self.audio_layers, self.visual_layers):
            a, v = la(a), lv(v)
        return a, v


class GRUTemporal(nn.Module):
    """Table 2 "GRU": a bidirectional GRU per modality (d_model/2 per direction, so
    the output stays d_model wide). The paper gives no details; this is our choice."""

    def __init__(self, cfg: HANConfig):
        super().__init__()
        kw = dict(input_size=cfg.d_model, hidden_size=cfg.d_model // 2, num_layers=cfg.num_layers,
                  batch_first=True, bidirectional=True, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.audio_gru = nn.GRU(**kw)
        self.visual_gru = nn.GRU(**kw)

    def forward(self, a: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.audio_gru(a)[0], self.visual_gru(v)[0]


class HAN(nn.Module):
    """Snippet features -> snippet and video-level event probabilities (see module docstring)."""

    def __init__(self, cfg: HANConfig):
        super().__init__()
        self.config = cfg
        d, c = cfg.d_model, cfg.num_classes
        self.fc_a = nn.Linear(cfg.audio_dim, d)
        self.fc_v = nn.Linear(cfg.v2d_dim, d)
        self.fc_st = nn.Linear(cfg.v3d_dim, d)
        self.fc_fusion = nn.Linear(2 * d, d)
        if cfg.temporal == "han":
            self.temporal = HANTemporal(cfg)
        elif cfg.temporal == "transformer":
            self.temporal = TransformerTemporal(cfg)
        elif cfg.temporal == "gru":
            self.temporal = GRUTemporal(cfg)
        else:
            self.temporal = None
        self.fc_prob = nn.Linear(d, c)
        if cfg.pooling == "attentive":
            self.fc_frame_att = nn.Linear(d, c)
            self.fc_av_att = nn.Linear(d, c)

    def embed(self, audio: Tensor, v2d: Tensor, v3d: Tensor) -> tuple[Tensor, Tensor]:
        """Input features -> (audio, visual) snippet features [B, T, d_model], before the temporal net."""
        cfg = self.config
        if audio.ndim != 3 or audio.shape[-1] != cfg.audio_dim:
            raise ValueError(f"audio must be [B, T, {cfg.audio_dim}], got {list(audio.shape)}")
        b, t = audio.shape[:2]
        if t < 1:
            raise ValueError("a window needs at least one snippet (T >= 1), got T=0")
        f = cfg.frames_per_snippet
        means = tuple(v2d.shape) == (b, t, cfg.v2d_dim)  # each snippet's frames already averaged
        if not means and tuple(v2d.shape) != (b, t * f, cfg.v2d_dim):
            raise ValueError(f"v2d must be [B, T*{f}, {cfg.v2d_dim}] = {[b, t * f, cfg.v2d_dim]} (or the frame means, "
                             f"[B, T, {cfg.v2d_dim}]), got {list(v2d.shape)}")
        if tuple(v3d.shape) != (b, t, cfg.v3d_dim):
            raise ValueError(f"v3d must be [B, T, {cfg.v3d_dim}] = {[b, t, cfg.v3d_dim]}, got {list(v3d.shape)}")
        a = self.fc_a(audio)
        # mean over each snippet's frames, then fc_v: equal to fc_v on every frame then the mean
        v2 = self.fc_v(v2d if means else v2d.reshape(b, t, f, cfg.v2d_dim).mean(dim=2))
        v = self.fc_fusion(torch.cat([v2, self.fc_st(v3d)], dim=-1))
        return a, v

    def pool(self, x: Optional[Tensor], frame_prob: Tensor) -> HANOutput:
        """MMIL pooling of snippet features x [B, T, 2, d] and probabilities P [B, T, 2, C] to video
        level (x is used by attentive pooling only)."""
        mode = self.config.pooling
        if mode == "attentive":
            w_tp = torch.softmax(self.fc_frame_att(x), dim=1)
            w_av = torch.softmax(self.fc_av_att(x), dim=2)
        elif mode == "mean":
            w_tp = torch.full_like(frame_prob, 1.0 / frame_prob.shape[1])
            w_av = torch.full_like(frame_prob, 0.5)
        else:  # "max" as a one-hot attention: the same value and gradient as max over time, then modality
            p = frame_prob.detach()
            w_tp = F.one_hot(p.argmax(dim=1), p.shape[1]).movedim(-1, 1).to(p.dtype)   # [B, T, 2, C]
            best_m = p.amax(dim=1).argmax(dim=1)                                          # [B, C]
            w_av = F.one_hot(best_m, 2).movedim(-1, 1).unsqueeze(1).expand_as(p).to(p.dtype)
        temporal_prob = w_tp * frame_prob
        global_prob = (temporal_prob * w_av).sum(dim=(1, 2))
        a_prob = temporal_prob[:, :, 0].sum(dim=1)
        v_prob = temporal_prob[:, :, 1].sum(dim=1)
        return HANOutput(global_prob, a_prob, v_prob, frame_prob, w_tp, w_av)

    def forward(self, audio: Tensor, v2d: Tensor, v3d: Tensor, *, cross_attention: Optional[bool] = None,
                return_features: bool = False):
        """audio [B, T, A], v2d [B, T*F, D2] (or its frame means [B, T, D2]), v3d [B, T, D3] ->
        :class:`HANOutput`. Any T >= 1. ``cross_attention=False`` runs the hybrid attention layer
        without its cross-modal branch (JoMoLD ranks labels so); None: the config's setting.
        ``return_features``: ``(HANOutput, features)`` with the snippet features of :meth:`features`
        (training losses on them)."""
        x = self.features(audio, v2d, v3d, cross_attention=cross_attention)
        out = self.heads(x)
        return (out, x) if return_features else out

    def features(self, audio: Tensor, v2d: Tensor, v3d: Tensor, *, cross_attention: Optional[bool] = None
                 ) -> Tensor:
        """The snippet features after the temporal net, [2, B, T, d] (index 0 audio, 1 visual)."""
        a, v = self.embed(audio, v2d, v3d)
        b, t, d = a.shape
        if isinstance(self.temporal, HANTemporal):      # both modalities as one batch [a; v]
            x = self.temporal.forward_packed(torch.cat([a, v]), cross_attention)
        else:
            if self.temporal is not None:
                a, v = self.temporal(a, v)
            x = torch.cat([a, v])
        return x.view(2, b, t, d)

    def heads(self, x: Tensor) -> HANOutput:
        """Snippet features x [2, B, T, d] (index 0 audio, 1 visual) -> :class:`HANOutput`.

        The same as ``pool(F, sigmoid(fc_prob(F)))`` with F = x as [B, T, 2, d], computed in x's
        layout (no stacking copy) and, for attentive pooling, with the three classifiers of the
        snippets (fc_prob, fc_frame_att, fc_av_att) as one matrix product."""
        dev = x.device.type
        if torch.is_autocast_enabled(dev):
            # mixed precision (training with precision="bf16"): the classifiers, sigmoids, softmaxes and
            # pooling stay in fp32, so probabilities near 0 and 1 keep their resolution and gradient
            with torch.autocast(dev, enabled=False):
                return self.heads(x.float())
        if self.training and self.config.visual_head_dropout > 0:   # JoMoLD/MA: dropout on the visual features
            x = torch.stack([x[0], F.dropout(x[1], self.config.visual_head_dropout, True)])
        m, b, t, d = x.shape
        c = self.config.num_classes
        if self.config.pooling != "attentive":
            frame_prob = torch.sigmoid(self.fc_prob(x)).permute(1, 2, 0, 3)   # [B, T, 2, C]
            return self.pool(None, frame_prob)
        w = torch.cat([self.fc_prob.weight, self.fc_frame_att.weight, self.fc_av_att.weight])
        bias = torch.cat([self.fc_prob.bias, self.fc_frame_att.bias, self.fc_av_att.bias])
        z_prob, z_tp, z_av = F.linear(x.reshape(m * b * t, d), w, bias).view(m, b, t, 3 * c).split(c, dim=-1)
        frame_prob = torch.sigmoid(z_prob)               # [2, B, T, C]
        w_tp = torch.softmax(z_tp, dim=2)                # over time
        w_av = torch.softmax(z_av, dim=0)                # over the two modalities
        temporal_prob = w_tp * frame_prob
        a_prob, v_prob = temporal_prob.sum(dim=2).unbind(0)
        global_prob = (temporal_prob * w_av).sum(dim=(0, 2))
        return HANOutput(global_prob, a_prob, v_prob, *(z.permute(1, 2, 0, 3).contiguous()
                                                        for z in (frame_prob, w_tp, w_av)))


def build_han(cfg: HANConfig = HANConfig(), *, weights=None, device="cpu") -> HAN:
    """Build a HAN for ``cfg`` on ``device``.

    ``weights``: None (random init, PyTorch defaults), a state dict of this
    model's parameter names, or a path to a checkpoint written by
    :func:`avparse.core.checkpoint.save_checkpoint` (or an original MMIL_Net state
    dict), whose config must equal ``cfg``. Like torchvision's builders the
    module is returned in training mode; call ``.eval()`` for inference
    (:func:`avparse.core.checkpoint.load_model` does).
    """
    model = HAN(cfg)
    if weights is not None:
        if isinstance(weights, (str, PathLike)):
            from avparse.core.checkpoint import load_model

            loaded = load_model(weights)
            if loaded.config != cfg:
                diff = [k for k, v in cfg.to_dict().items() if loaded.config.to_dict()[k] != v]
                raise ValueError(f"{weights}: checkpoint config differs from the requested one in {diff}")
            weights = loaded.model.state_dict()
        model.load_state_dict(weights)
    return model.to(device)
