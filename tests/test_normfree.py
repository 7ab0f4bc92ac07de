"""Normalisation-free residual units: Fixup's scaling formula, ReZero/SkipInit identity at init,
gradients reaching the scalars, the registry and rebuilding from the config."""
from __future__ import annotations

import math

import pytest
import torch

from unstable_gradients.models import NORMFREE_BLOCKS, NormFreeResNet, build_model, fixup_scale
from unstable_gradients.models.normfree import FixupBlock, ReZeroBlock, SkipInitBlock, fixup_init_


@pytest.mark.parametrize("L,m", [(1, 2), (4, 2), (16, 2), (8, 3), (27, 4)])
def test_fixup_scale_is_the_formula(L, m):
    assert fixup_scale(L, m) == pytest.approx(L ** (-1 / (2 * m - 2)))


def test_fixup_scale_for_two_layer_branches_is_inverse_sqrt():
    assert fixup_scale(16, 2) == pytest.approx(0.25)


@pytest.mark.parametrize("L,m", [(0, 2), (4, 1)])
def test_fixup_scale_rejects_bad_sizes(L, m):
    with pytest.raises(ValueError):
        fixup_scale(L, m)


def test_fixup_init_scales_first_layers_and_zeroes_last_and_head():
    he = NormFreeResNet(width=16, depth=9, scheme="none", seed=3)
    fx = NormFreeResNet(width=16, depth=9, scheme="fixup", seed=3)
    for a, b in zip(he.blocks, fx.blocks):
        torch.testing.assert_close(b.weight1.weight, a.weight1.weight / 3)  # 9^{-1/2}
        assert b.weight2.weight.abs().max() == 0
    assert fx.head.weight.abs().max() == 0 and fx.head.bias.abs().max() == 0
    torch.testing.assert_close(fx.stem.weight, he.stem.weight)  # the stem keeps He's init


def test_fixup_without_zero_init_only_scales():
    he = NormFreeResNet(width=16, depth=4, scheme="none", seed=1)
    fx = NormFreeResNet(width=16, depth=4, scheme="fixup", fixup_zero=False, seed=1)
    torch.testing.assert_close(fx.blocks[0].weight2.weight, he.blocks[0].weight2.weight)
    torch.testing.assert_close(fx.blocks[0].weight1.weight, he.blocks[0].weight1.weight / 2)


@pytest.mark.parametrize("scheme", ["fixup", "rezero", "skipinit"])
def test_units_are_the_identity_at_init(scheme):
    net = NormFreeResNet(input_shape=(12,), width=12, depth=5, scheme=scheme, seed=0)
    x = torch.randn(7, 12)
    for block in net.blocks:
        torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("cls", [ReZeroBlock, SkipInitBlock])
def test_scalar_block_computes_x_plus_alpha_branch(cls):
    torch.manual_seed(0)
    b = cls(6, alpha=0.3)
    x = torch.randn(4, 6)
    plain = b.weight2(b.act2(b.weight1(b.act1(x))))
    torch.testing.assert_close(b(x), x + 0.3 * plain)


def test_fixup_block_matches_hand_written_branch():
    torch.manual_seed(0)
    b = FixupBlock(5)
    with torch.no_grad():
        for name, v in [("bias1a", 0.1), ("bias1b", -0.2), ("bias2a", 0.3), ("bias2b", 0.05), ("scale", 1.7)]:
            getattr(b, name).fill_(v)
    x = torch.randn(3, 5)
    h = torch.relu(b.weight1(torch.relu(x) + 0.1) - 0.2)
    torch.testing.assert_close(b(x), x + 1.7 * b.weight2(h + 0.3) + 0.05)


@pytest.mark.parametrize("scheme,name", [("rezero", "alpha"), ("skipinit", "alpha"), ("fixup", "scale")])
def test_gradients_reach_the_scalars(scheme, name):
    net = NormFreeResNet(input_shape=(10,), width=10, depth=3, scheme=scheme, seed=0, **(
        {} if scheme != "fixup" else dict(fixup_zero=False)))
    torch.nn.functional.cross_entropy(net(torch.randn(8, 10)), torch.randint(0, 10, (8,))).backward()
    grads = [getattr(b, name).grad for b in net.blocks]
    assert all(g is not None and torch.isfinite(g) for g in grads)
    assert any(float(g.abs()) > 0 for g in grads)


def test_fixup_zero_init_gives_gradient_to_last_layers_only():
    net = NormFreeResNet(input_shape=(10,), width=10, depth=3, scheme="fixup", seed=0)
    torch.nn.functional.cross_entropy(net(torch.randn(8, 10)), torch.randint(0, 10, (8,))).backward()
    assert net.head.weight.grad.abs().max() > 0
    assert net.blocks[0].weight1.weight.grad.abs().max() == 0  # behind a zero W_2 and a zero head


def test_skipinit_alpha_and_scalars():
    net = NormFreeResNet(width=8, depth=4, scheme="skipinit", alpha=0.5, seed=0)
    assert net.scalars() == {"alpha": [0.5] * 4}
    assert NormFreeResNet(width=8, depth=2, scheme="none", seed=0).scalars() == {}


def test_registry_and_option_errors():
    assert set(NORMFREE_BLOCKS) == {"none", "fixup", "rezero", "skipinit"}
    with pytest.raises(ValueError, match="valid names: fixup, none, rezero, skipinit"):
        NormFreeResNet(scheme="unitnorm")
    with pytest.raises(ValueError, match="replaces normalisation"):
        NormFreeResNet(scheme="fixup", norm="batch")
    with pytest.raises(ValueError, match="alpha applies"):
        NormFreeResNet(scheme="fixup", alpha=0.1)


def test_config_rebuilds_the_same_net():
    net = NormFreeResNet(width=8, depth=3, scheme="skipinit", alpha=0.2, seed=5)
    twin = build_model(net.config)
    x = torch.randn(4, 784)
    torch.testing.assert_close(twin(x), net(x))


def test_batchnorm_reference_builds():
    net = NormFreeResNet(width=8, depth=2, scheme="none", norm="batch", seed=0)
    assert net(torch.randn(5, 784)).shape == (5, 10)


def test_conv_units_work():
    net = NormFreeResNet(input_shape=(1, 8, 8), width=4, depth=2, scheme="rezero", conv=True, seed=0)
    assert net(torch.randn(2, 64)).shape == (2, 10)


def test_fixup_init_rejects_zero_depth():
    net = NormFreeResNet(width=8, depth=0, scheme="none", seed=0)
    with pytest.raises(ValueError):
        fixup_init_(net)
    assert math.isfinite(float(net(torch.randn(2, 784)).sum().detach()))
