"""GAN generator losses (``gan``) and the 1-D GAN experiments (``experiments.gan_exp``): analytic
derivatives against autograd, their limits, the chain rule through G, the registry, clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unstable_gradients import gan
from unstable_gradients.experiments import gan_exp as ge

F64 = torch.float64


@pytest.mark.parametrize("name", list(gan.GENERATOR_LOSSES), ids=list(gan.GENERATOR_LOSSES))
def test_analytic_derivative_matches_autograd(name):
    g = gan.get_generator_loss(name)
    a = torch.linspace(-40, 40, 161, dtype=F64, requires_grad=True)
    g.loss(a).sum().backward()
    assert torch.allclose(a.grad, g.grad(a.detach()), atol=1e-15, rtol=1e-12)


def test_losses_are_the_log_formulas_and_stay_finite():
    a = torch.tensor([-3.0, 0.0, 2.5], dtype=F64)
    d = torch.sigmoid(a)
    assert torch.allclose(gan.saturating_loss(a), torch.log(1 - d), atol=1e-14)
    assert torch.allclose(gan.non_saturating_loss(a), -torch.log(d), atol=1e-14)
    big = torch.tensor([-200.0, 200.0], dtype=F64)
    for g in gan.GENERATOR_LOSSES.values():
        assert bool(torch.isfinite(g.loss(big)).all() and torch.isfinite(g.grad(big)).all())


def test_saturating_gradient_vanishes_and_non_saturating_tends_to_minus_one():
    a = torch.tensor([-30.0], dtype=F64)          # D(G(z)) = sigma(-30) ~ 1e-13: D is sure the sample is fake
    assert abs(float(gan.saturating_grad(a))) < 1e-12
    assert float(gan.non_saturating_grad(a)) == pytest.approx(-1.0, abs=1e-12)
    # and the other way round when D is fooled
    assert float(gan.saturating_grad(-a)) == pytest.approx(-1.0, abs=1e-12)
    assert abs(float(gan.non_saturating_grad(-a))) < 1e-12


def test_analytic_slopes_are_d_and_one_minus_d():
    d = np.array([1e-6, 0.1, 0.5, 0.9])
    s = ge.analytic_slopes(d)
    assert np.allclose(s["saturating"], d, rtol=1e-9) and np.allclose(s["non_saturating"], 1 - d, rtol=1e-9)
    with pytest.raises(ValueError, match="strictly between"):
        ge.analytic_slopes([0.0, 0.5])


def test_registry_lists_valid_names():
    assert gan.get_generator_loss("non-saturating").name == "non_saturating"
    with pytest.raises(ValueError, match="valid names: non_saturating, saturating"):
        gan.get_generator_loss("wasserstein")
    with pytest.raises(ValueError, match="valid names"):
        ge.train_gan("minimax", steps=1, d_pretrain=0)


@pytest.mark.parametrize("name", list(gan.GENERATOR_LOSSES), ids=list(gan.GENERATOR_LOSSES))
def test_generator_gradient_is_the_chain_rule_through_the_logit(name):
    G, D = ge.build_gan(0, hidden=8)
    z = torch.randn(32, 1, generator=torch.Generator().manual_seed(1))
    norm, d_fake = ge.generator_gradient(G, D, name, z)
    assert all(p.grad is None for p in D.parameters())                  # D is left as it was
    G.zero_grad()
    a = D(G(z))
    a.backward(gan.get_generator_loss(name).grad(a.detach()) / len(z))   # dl/da, then back through D and G
    by_hand = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in G.parameters()))
    assert norm == pytest.approx(by_hand, rel=1e-5)
    assert d_fake == pytest.approx(float(torch.sigmoid(a.detach()).mean()), rel=1e-6)


def test_confident_discriminator_starves_the_saturating_loss():
    out = ge.confidence_sweep(checkpoints=(0, 200), seeds=(1,))   # seed 1: G starts far from the data
    assert set(out) == {"d_fake", "saturating", "non_saturating"} and out["d_fake"].shape == (1, 2)
    assert out["d_fake"][0, 1] < 0.01 < out["d_fake"][0, 0]
    assert out["saturating"][0, 1] < out["non_saturating"][0, 1] / 50
    with pytest.raises(ValueError, match="increasing"):
        ge.confidence_sweep(checkpoints=(10, 5))


def test_train_gan_records_every_step_and_steps_to_reach():
    run = ge.train_gan("non_saturating", seed=0, steps=5, d_pretrain=2)
    assert len(run.g_mean) == len(run.d_fake) == len(run.grad_norm) == 5
    assert all(0.0 < d < 1.0 for d in run.d_fake)
    r = ge.GanRun("x", 0, "sgd", g_mean=[0.0, 2.0, 3.5, 4.2])
    assert ge.steps_to_reach(r, tol=1.0) == 2.0 and math.isnan(ge.steps_to_reach(r, tol=0.1))
    assert ge.real_samples(10_000, torch.Generator().manual_seed(0)).mean().item() == pytest.approx(ge.REAL_MEAN, abs=0.02)
