"""The loss of the paper and its Table 2 switches, against hand-written formulas."""

import pytest
import torch

from avparse.train.losses import LossConfig, avvp_loss, guided_targets, smooth_labels


def _probs(seed=0, b=4, c=6):
    g = torch.Generator().manual_seed(seed)
    p = [torch.rand(b, c, generator=g) for _ in range(3)]
    y = (torch.rand(b, c, generator=g) < 0.4).float()
    return p, y


def _paper_loss(p, pa, pv, y):
    """main_avvp.py train(): clamp_ each, a = 1.0, v = 0.9, P = a*y + (1-a)*0.5, BCELoss sum a + v + global."""
    crit = torch.nn.BCELoss()
    p, pa, pv = (x.clamp(1e-7, 1 - 1e-7) for x in (p, pa, pv))
    ya = 1.0 * y + (1 - 1.0) * 0.5
    yv = 0.9 * y + (1 - 0.9) * 0.5
    return crit(pa, ya) + crit(pv, yv) + crit(p, y)


def test_defaults_are_the_paper_code():
    (p, pa, pv), y = _probs()
    cfg = LossConfig()
    ya, yv = guided_targets(cfg, y, pa, pv)
    assert torch.equal(ya, y)
    assert torch.allclose(yv, 0.9 * y + 0.05)
    assert torch.allclose(avvp_loss(cfg, p, pa, pv, y), _paper_loss(p, pa, pv, y), rtol=1e-6, atol=0)


def test_clamping_keeps_the_loss_finite_at_0_and_1():
    y = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.0, 1.0]])  # as wrong as possible
    loss = avvp_loss(LossConfig(), p, p, p, y)
    assert torch.isfinite(loss)
    assert torch.allclose(loss, _paper_loss(p, p, p, y))


def test_smoothing_formula_with_own_epsilon_per_modality():
    (p, pa, pv), y = _probs(1)
    cfg = LossConfig(eps_a=0.2, eps_v=0.3, smooth_k=4)
    ya, yv = guided_targets(cfg, y, pa, pv)
    assert torch.allclose(ya, 0.8 * y + 0.05)
    assert torch.allclose(yv, 0.7 * y + 0.075)
    assert torch.allclose(smooth_labels(y, 0.1, 2), 0.9 * y + 0.05)


def test_no_noise_handling_uses_the_labels():
    (p, pa, pv), y = _probs(2)
    ya, yv = guided_targets(LossConfig(noisy="none"), y, pa, pv)
    assert torch.equal(ya, y) and torch.equal(yv, y)


def test_weak_only_and_guided_only():
    (p, pa, pv), y = _probs(3)
    bce = torch.nn.BCELoss()
    weak = avvp_loss(LossConfig(terms="weak"), p, pa, pv, y)
    assert torch.allclose(weak, bce(p, y))
    guided = avvp_loss(LossConfig(terms="guided"), p, pa, pv, y)
    assert torch.allclose(guided, bce(pa, y) + bce(pv, 0.9 * y + 0.05))
    # weak only sends no gradient to the modality probabilities
    p2, pa2 = p.clone().requires_grad_(), pa.clone().requires_grad_()
    avvp_loss(LossConfig(terms="weak"), p2, pa2, pv, y).backward()
    assert torch.count_nonzero(p2.grad) > 0
    assert pa2.grad is None or torch.count_nonzero(pa2.grad) == 0


def test_soft_bootstrap_is_reed_et_al():
    (p, pa, pv), y = _probs(4)
    pa = pa.clamp(0.01, 0.99).requires_grad_()
    pv = pv.clamp(0.01, 0.99)
    cfg = LossConfig(terms="guided", noisy="bootstrap")
    assert cfg.beta == 0.95
    got = avvp_loss(cfg, p, pa, pv, y)

    def soft(q):
        t = 0.95 * y + 0.05 * q
        return -(t * torch.log(q) + (1 - t) * torch.log(1 - q)).mean()

    ref = soft(pa) + soft(pv)
    assert torch.allclose(got, ref, rtol=1e-6)
    # the prediction inside the target carries gradient (minimum-entropy term)
    g1, = torch.autograd.grad(got, pa)
    detached = -(((0.95 * y + 0.05 * pa.detach()) * torch.log(pa)
                  + (1 - (0.95 * y + 0.05 * pa.detach())) * torch.log(1 - pa)).mean())
    g2, = torch.autograd.grad(detached, pa)
    assert not torch.allclose(g1, g2)


def test_hard_bootstrap_uses_the_thresholded_prediction():
    y = torch.tensor([[1.0, 0.0, 0.0]])
    q = torch.tensor([[0.2, 0.7, 0.4]])
    cfg = LossConfig(noisy="bootstrap", bootstrap_mode="hard")
    assert cfg.beta == 0.8
    ya, _ = guided_targets(cfg, y, q, q)
    assert torch.allclose(ya, torch.tensor([[0.8, 0.2, 0.0]]))


@pytest.mark.parametrize("kw", [dict(terms="all"), dict(noisy="reed"), dict(eps_v=1.0), dict(smooth_k=1),
                                dict(bootstrap_mode="x"), dict(bootstrap_beta=1.5)])
def test_bad_config_is_refused(kw):
    with pytest.raises(ValueError):
        LossConfig(**kw)
