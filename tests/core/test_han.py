"""HAN: shapes for any T, probabilities, attentions, the Table 2 variants, the
frame-average shortcut and the two layer modes. Debug-size configs except where
the paper's sizes are the point."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from avparse.core.han import HAN, HANConfig, HANOutput, build_han, dropout

TINY = HANConfig(audio_dim=8, v2d_dim=12, v3d_dim=6, frames_per_snippet=3, d_model=16, nhead=2,
                 num_layers=2, dim_feedforward=24, num_classes=5)


def inputs(cfg: HANConfig, b: int, t: int, *, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, t, cfg.audio_dim, generator=g, dtype=dtype),
            torch.randn(b, t * cfg.frames_per_snippet, cfg.v2d_dim, generator=g, dtype=dtype).abs(),
            torch.randn(b, t, cfg.v3d_dim, generator=g, dtype=dtype).abs())


def run(model, *x) -> HANOutput:
    with torch.no_grad():
        return model(*x)


def test_defaults_are_the_papers():
    cfg = HANConfig()
    assert (cfg.audio_dim, cfg.v2d_dim, cfg.v3d_dim, cfg.frames_per_snippet) == (128, 2048, 512, 8)
    assert (cfg.d_model, cfg.nhead, cfg.num_layers, cfg.dim_feedforward, cfg.dropout) == (512, 1, 1, 512, 0.1)
    assert (cfg.num_classes, cfg.pooling, cfg.temporal, cfg.layer_mode) == (25, "attentive", "han", "original")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 3


@pytest.mark.parametrize("temporal", ["han", "none", "gru", "transformer"])
@pytest.mark.parametrize("pooling", ["attentive", "max", "mean"])
def test_variants_shapes_probs_and_attention(temporal, pooling):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, temporal=temporal, pooling=pooling)
    model = build_han(cfg).eval()
    b, c = 2, cfg.num_classes
    for t in (1, 3, 10):
        out = run(model, *inputs(cfg, b, t, seed=t))
        assert isinstance(out, HANOutput)
        assert out.global_prob.shape == out.a_prob.shape == out.v_prob.shape == (b, c)
        assert out.frame_prob.shape == out.temporal_att.shape == out.av_att.shape == (b, t, 2, c)
        for p in (out.global_prob, out.a_prob, out.v_prob, out.frame_prob):
            assert torch.isfinite(p).all() and p.min() >= 0 and p.max() <= 1
        ones = torch.ones(b, 2, c)
        torch.testing.assert_close(out.temporal_att.sum(dim=1), ones)           # over time
        torch.testing.assert_close(out.av_att.sum(dim=2), torch.ones(b, t, c))  # over modality
        # the pooling formula of the paper, whatever the weights
        tp = out.temporal_att * out.frame_prob
        torch.testing.assert_close(out.global_prob, (tp * out.av_att).sum(dim=(1, 2)))
        torch.testing.assert_close(out.a_prob, tp[:, :, 0].sum(dim=1))
        torch.testing.assert_close(out.v_prob, tp[:, :, 1].sum(dim=1))
        p = out.frame_prob
        if pooling == "max":
            torch.testing.assert_close(out.global_prob, p.amax(dim=(1, 2)))
            torch.testing.assert_close(out.a_prob, p[:, :, 0].amax(dim=1))
        if pooling == "mean":
            torch.testing.assert_close(out.global_prob, p.mean(dim=(1, 2)))
            torch.testing.assert_close(out.v_prob, p[:, :, 1].mean(dim=1))
    # trainable: every parameter that the forward uses gets a gradient
    model.train()
    out = model(*inputs(cfg, b, 4))
    (out.global_prob.sum() + out.a_prob.sum() + out.v_prob.sum()).backward()
    no_grad = [n for n, q in model.named_parameters() if q.grad is None]
    if cfg.layer_mode == "original" and temporal == "han":  # earlier layers are dead, as in the original
        no_grad = [n for n in no_grad if not n.startswith("temporal.layers.0.")]
    assert no_grad == []


def test_temporal_net_mixes_time_and_none_does_not():
    torch.manual_seed(0)
    a, v2, v3 = inputs(TINY, 1, 5)
    a2 = a.clone()
    a2[:, 4] += 3.0  # change only the last snippet's audio
    for temporal, mixes in (("none", False), ("han", True), ("gru", True), ("transformer", True)):
        model = build_han(dataclasses.replace(TINY, temporal=temporal)).eval()
        p1, p2 = run(model, a, v2, v3).frame_prob, run(model, a2, v2, v3).frame_prob
        changed_first = not torch.allclose(p1[:, 0], p2[:, 0])
        assert changed_first == mixes, temporal
        if temporal == "han":  # cross-modal attention: audio reaches the visual stream of other snippets
            assert not torch.allclose(p1[:, 0, 1], p2[:, 0, 1])


def test_frame_average_then_linear_equals_linear_then_average():
    """The original: fc_v on all 8T frames, avg_pool2d over groups of 8. Ours: mean first."""
    for cfg, dtype, tol in ((TINY, torch.float64, 1e-12), (HANConfig(), torch.float32, 1e-5)):
        torch.manual_seed(0)
        model = build_han(cfg).to(dtype).eval()
        b, t, f = 2, 3, cfg.frames_per_snippet
        audio, v2d, v3d = inputs(cfg, b, t, dtype=dtype)
        with torch.no_grad():
            _, ours = model.embed(audio, v2d, v3d)
            per_frame = model.fc_v(v2d).permute(0, 2, 1).unsqueeze(-1)        # as the original does it
            pooled = F.avg_pool2d(per_frame, (f, 1)).squeeze(-1).permute(0, 2, 1)
            ref = model.fc_fusion(torch.cat([pooled, model.fc_st(v3d)], dim=-1))
        assert ours.shape == (b, t, cfg.d_model)
        assert (ours - ref).abs().max().item() <= tol


def _original_encoder(layers, a, v):
    """The original Encoder.forward: every layer gets the ORIGINAL a and v."""
    out_a, out_v = a, v
    for layer in layers:
        out_a, out_v = layer(a, v), layer(v, a)
    return out_a, out_v


def _stacked_encoder(layers, a, v):
    for layer in layers:
        a, v = layer(a, v), layer(v, a)
    return a, v


@pytest.mark.parametrize("mode", ["original", "stacked"])
def test_layer_modes(mode):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, num_layers=3, layer_mode=mode)
    model = build_han(cfg).eval()
    b, t = 2, 4
    a = torch.randn(b, t, cfg.d_model)
    v = torch.randn(b, t, cfg.d_model)
    layers = model.temporal.layers
    with torch.no_grad():
        got = model.temporal(a, v)
        want = (_original_encoder if mode == "original" else _stacked_encoder)(layers, a, v)
        other = (_stacked_encoder if mode == "original" else _original_encoder)(layers, a, v)
    for g, w, o in zip(got, want, other):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(g, o, atol=1e-3)  # the two modes really differ with 3 layers


def test_single_layer_modes_agree():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, num_layers=1)
    m1 = build_han(cfg).eval()
    m2 = build_han(dataclasses.replace(cfg, layer_mode="stacked"), weights=m1.state_dict()).eval()
    x = inputs(cfg, 2, 3)
    torch.testing.assert_close(run(m1, *x).frame_prob, run(m2, *x).frame_prob)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = build_han(dataclasses.replace(TINY, dropout=0.5))
    x = inputs(TINY, 2, 3)
    assert model.training  # builders return training mode, like torchvision's
    assert not torch.equal(run(model, *x).frame_prob, run(model, *x).frame_prob)
    model.eval()
    assert torch.equal(run(model, *x).frame_prob, run(model, *x).frame_prob)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cheap_dropout_is_bernoulli_with_the_scaling_of_f_dropout(p):
    n = 400_000
    x = torch.full((n,), 2.0, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, p)
    kept = y != 0
    frac = 1.0 - kept.float().mean().item()
    assert abs(frac - p) < 5 * (p * (1 - p) / n) ** 0.5  # within 5 standard errors of p
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 2.0 / (1.0 - p)))
    y.sum().backward()  # the gradient is the mask times 1/(1-p), as F.dropout's
    torch.testing.assert_close(x.grad, kept.float() / (1.0 - p))
    # neighbouring elements are independent (two int32 draws come from one int64)
    pairs = kept[: n // 2 * 2].view(-1, 2).float()
    both = (pairs[:, 0] * pairs[:, 1]).mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * ((1 - p) ** 2 * (1 - (1 - p) ** 2) / (n // 2)) ** 0.5
    # seeded: the same seed gives the same mask; odd sizes and other shapes work
    torch.manual_seed(3)
    assert torch.equal(dropout(x.detach(), p), y.detach())
    assert dropout(torch.ones(3, 5, 7), p).shape == (3, 5, 7)
    z = torch.ones(4)
    assert dropout(z, p, training=False) is z and dropout(z, 0.0) is z


def test_bad_inputs_and_configs():
    model = build_han(TINY).eval()
    a, v2, v3 = inputs(TINY, 2, 3)
    with pytest.raises(ValueError, match="v2d must be"):
        model(a, v2[:, :-1], v3)
    with pytest.raises(ValueError, match="v3d must be"):
        model(a, v2, v3[:, :2])
    with pytest.raises(ValueError, match="audio must be"):
        model(a[..., :-1], v2, v3)
    with pytest.raises(ValueError, match="T >= 1"):
        model(a[:, :0], v2[:, :0], v3[:, :0])
    for bad in (dict(pooling="sum"), dict(temporal="lstm"), dict(layer_mode="x"), dict(nhead=3),
                dict(num_layers=0), dict(dropout=1.0), dict(d_model=16.0), dict(num_classes="5"),
                dict(pooling=None)):
        with pytest.raises(ValueError):
            dataclasses.replace(TINY, **bad)


def test_build_han_weights_and_device():
    torch.manual_seed(0)
    m1 = build_han(TINY).eval()
    m2 = build_han(TINY, weights=m1.state_dict(), device="cpu").eval()
    assert isinstance(m2, HAN)
    x = inputs(TINY, 1, 2)
    torch.testing.assert_close(run(m1, *x).global_prob, run(m2, *x).global_prob, rtol=0, atol=0)
    with pytest.raises(RuntimeError):
        build_han(dataclasses.replace(TINY, d_model=8), weights=m1.state_dict())


def test_lazy_exports():
    import avparse.core as core

    assert core.HANConfig is HANConfig and core.build_han is build_han
    from avparse.core import CheckpointError, load_model, save_checkpoint  # noqa: F401


def _leak(model, cfg, cross=None):
    """Largest change of the AUDIO snippet probabilities when only the VISUAL inputs change (and back)."""
    a, v2, v3 = inputs(cfg, 2, 6)
    _, w2, w3 = inputs(cfg, 2, 6, seed=5)
    b, _, _ = inputs(cfg, 2, 6, seed=6)
    kw = {} if cross is None else {"cross_attention": cross}
    with torch.no_grad():
        p0 = model(a, v2, v3, **kw).frame_prob
        d_audio = (model(a, w2, w3, **kw).frame_prob[:, :, 0] - p0[:, :, 0]).abs().max()
        d_visual = (model(b, v2, v3, **kw).frame_prob[:, :, 1] - p0[:, :, 1]).abs().max()
    return float(d_audio), float(d_visual)


@pytest.mark.parametrize("layer_mode", ["original", "stacked"])
def test_cross_attention_switch(layer_mode):
    """cross_attention=False: no snippet sees the other modality (JoMoLD's with_ca=False), built without the
    cross-modal weights; the same weights run with the switch at call time give the same outputs, on
    the fast path and on the plain one; the default is the paper's (cross-modal branch on)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, nhead=1, layer_mode=layer_mode)
    full = build_han(cfg).eval()
    assert cfg.cross_attention and all(l.cm_attn is not None for l in full.temporal.layers)
    assert min(_leak(full, cfg)) > 1e-4                        # with cross-modal attention the modalities mix
    assert max(_leak(full, cfg, cross=False)) == 0.0           # switched off at call time: they do not
    off_cfg = dataclasses.replace(cfg, cross_attention=False)
    off = build_han(off_cfg).eval()
    assert all(l.cm_attn is None for l in off.temporal.layers)
    assert max(_leak(off, off_cfg)) == 0.0
    state = {k: v for k, v in full.state_dict().items() if "cm_attn" not in k}
    off.load_state_dict(state)
    x = inputs(cfg, 3, 7)
    with torch.no_grad():
        a = off(*x).frame_prob
        b = full(*x, cross_attention=False).frame_prob
        # the plain (unfused) path of the layer: forward(x, None) per modality
        e = full.embed(*x)
        layer = full.temporal.layers[-1]
        plain = torch.stack([layer(e[0]), layer(e[1])]) if layer_mode == "original" else None
    assert torch.allclose(a, b, atol=1e-6)
    if plain is not None:
        assert torch.allclose(full.features(*x, cross_attention=False), plain, atol=1e-5)
    with pytest.raises(ValueError, match="cross_attention must be a bool"):
        HANConfig(cross_attention=1)


def test_visual_head_dropout_only_on_visual_and_only_in_training():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, dropout=0.0, visual_head_dropout=0.5)
    m = build_han(cfg)
    x = inputs(cfg, 2, 5)
    m.train()
    o1, o2 = m(*x), m(*x)
    assert torch.equal(o1.frame_prob[:, :, 0], o2.frame_prob[:, :, 0])       # audio: no dropout
    assert not torch.equal(o1.frame_prob[:, :, 1], o2.frame_prob[:, :, 1])   # visual: dropped differently
    m.eval()
    assert torch.equal(m(*x).frame_prob, m(*x).frame_prob)
    out, feats = m(*x, return_features=True)
    assert feats.shape == (2, 2, 5, cfg.d_model) and torch.equal(out.frame_prob, m(*x).frame_prob)
    with pytest.raises(ValueError, match="visual_head_dropout"):
        HANConfig(visual_head_dropout=1.0)
