"""The HAN's faster arrangement computes what the plain one does: the packed pair layer
(one in-projection per attention for both modalities) against the layer on [a; v] with
keys [v; a], and the fused heads against pool(F, sigmoid(fc_prob(F))); in float64, train
mode included (the same dropout draws in the same order), gradients included."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avparse.core.han import HANConfig, build_han

ONE_HEAD = HANConfig(audio_dim=8, v2d_dim=12, v3d_dim=6, frames_per_snippet=3, d_model=16, nhead=1,
                     num_layers=1, dim_feedforward=24, num_classes=5, dropout=0.3)


def _grads(module):
    return {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("train", [False, True])
def test_pair_layer_equals_layer_on_swapped_keys(train):
    torch.manual_seed(0)
    model = build_han(ONE_HEAD).double().train(train)
    layer = model.temporal.layers[0]
    b, t, d = 3, 4, ONE_HEAD.d_model
    x = torch.randn(2 * b, t, d, dtype=torch.float64)
    outs, grads = [], []
    for fast in (True, False):
        layer.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        out = layer.forward_pair(x) if fast else layer(x, torch.cat([x[b:], x[:b]]))
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append(_grads(layer))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-9, atol=1e-10, msg=k)
    if train:  # dropout really acted: another draw gives another output
        torch.manual_seed(6)
        assert not torch.allclose(layer.forward_pair(x), outs[0])


@pytest.mark.parametrize("pooling", ["attentive", "max", "mean"])
def test_heads_equal_plain_pooling(pooling):
    torch.manual_seed(0)
    model = build_han(dataclasses.replace(ONE_HEAD, pooling=pooling)).double()
    b, t, d = 3, 4, ONE_HEAD.d_model
    x = torch.randn(2, b, t, d, dtype=torch.float64, requires_grad=True)
    got = model.heads(x)
    f = x.permute(1, 2, 0, 3)                                    # [B, T, 2, d]
    want = model.pool(f, torch.sigmoid(model.fc_prob(f)))
    for name, g, w in zip(got._fields, got, want):
        assert g.shape == w.shape, name
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=name)
    g1 = torch.autograd.grad(got.global_prob.sum() + got.a_prob.sum() + 2 * got.v_prob.sum(), x)[0]
    g2 = torch.autograd.grad(want.global_prob.sum() + want.a_prob.sum() + 2 * want.v_prob.sum(), x)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)
