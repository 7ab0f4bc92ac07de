"""Shortcut connections (survey §2.3.2): residual units, shortcut variants, plain nets, lesions, DenseNet."""
from __future__ import annotations

import pytest
import torch

from unstable_gradients.models import build_model
from unstable_gradients.models.residual import (BLOCKS, SHORTCUTS, DenseBlock, DenseNet, PlainNet,
                                                PreActResidualBlock, ResidualBlock, ResidualNet, get_block,
                                                get_shortcut, path_counts)

DT = torch.float64


def _x(conv: bool, features: int = 3, batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, features, 5, 5, dtype=DT) if conv else torch.randn(batch, features, dtype=DT)


@pytest.mark.parametrize("norm", [None, "batch"], ids=["no_norm", "batch_norm"])
@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
def test_block_with_zero_residual_is_identity_or_sigma(conv, norm):
    x = _x(conv)
    for cls in (ResidualBlock, PreActResidualBlock):
        block = cls(3, conv=conv, norm=norm).double()
        with torch.no_grad():
            block.weight2.weight.zero_()
            if block.weight2.bias is not None:
                block.weight2.bias.zero_()
        expected = x if cls is PreActResidualBlock else torch.relu(x)  # x + 0, or sigma(x + 0) (eq. 64-65)
        torch.testing.assert_close(block(x), expected, atol=0, rtol=0)


def test_preact_unit_jacobian_is_identity_plus_dF():
    """Eq. 66 / He et al. 2016b eq. 5: dx_out/dx = I + dF/dx for the identity shortcut."""
    block = PreActResidualBlock(3, activation="tanh").double()
    x = torch.randn(1, 3, dtype=DT)
    jac = torch.autograd.functional.jacobian(block, x).reshape(3, 3)
    jac_f = torch.autograd.functional.jacobian(block.residual, x).reshape(3, 3)
    torch.testing.assert_close(jac, torch.eye(3, dtype=DT) + jac_f, atol=1e-12, rtol=0)


@pytest.mark.parametrize("block", sorted(BLOCKS))
@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
@pytest.mark.parametrize("shortcut", sorted(SHORTCUTS))
def test_every_shortcut_builds_runs_and_backpropagates(shortcut, conv, block):
    net = ResidualNet(input_shape=(2, 6, 6) if conv else (7,), out_features=3, width=4, depth=2, conv=conv,
                      block=block, shortcut=shortcut, norm="batch", seed=0)
    out = net(torch.randn(5, 72 if conv else 7))  # flat inputs are reshaped for conv nets
    assert out.shape == (5, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
def test_shortcut_formulas(conv):
    x, fx = _x(conv), _x(conv)
    cs = get_shortcut("constant_scaling", 3, conv)
    torch.testing.assert_close(cs(x, fx), 0.5 * x + 0.5 * fx)
    torch.testing.assert_close(get_shortcut("constant_scaling", 3, conv, scale_residual=False)(x, fx), 0.5 * x + fx)
    ex = get_shortcut("exclusive_gating", 3, conv).double()
    g = torch.sigmoid(ex.gate(x))
    torch.testing.assert_close(ex(x, fx), (1 - g) * x + g * fx)
    so = get_shortcut("shortcut_only_gating", 3, conv).double()
    torch.testing.assert_close(so(x, fx), (1 - torch.sigmoid(so.gate(x))) * x + fx)
    assert torch.all(so.gate.bias == -6.0)
    proj = get_shortcut("conv1x1", 3, conv).double()
    assert (proj.proj.kernel_size == (1, 1)) if conv else proj.proj.weight.shape == (3, 3)
    torch.testing.assert_close(proj(x, fx), proj.proj(x) + fx)
    drop = get_shortcut("dropout", 3, conv)
    kept = (drop(x, fx) - fx) / x  # training: each entry of x is kept (1) or dropped (0), never rescaled
    assert torch.all(((kept - 1).abs() < 1e-9) | (kept.abs() < 1e-9)) and 0 < kept.mean() < 1
    drop.eval()
    torch.testing.assert_close(drop(x, fx), 0.5 * x + fx)  # expectation 0.5 on the shortcut


@pytest.mark.parametrize("shortcut", sorted(SHORTCUTS))
def test_plain_net_drops_only_the_shortcut_parameters(shortcut):
    kw = dict(input_shape=(7,), out_features=3, width=4, depth=3, shortcut=shortcut, norm="batch", seed=0)
    res, plain = ResidualNet(**kw), PlainNet(**kw)
    assert plain.config["plain"] and all(b.shortcut is None for b in plain.blocks)
    n_res, n_plain = (sum(p.numel() for p in m.parameters()) for m in (res, plain))
    assert n_plain == n_res - res.shortcut_parameters()
    assert (res.shortcut_parameters() > 0) == (shortcut in ("conv1x1", "exclusive_gating", "shortcut_only_gating"))


def test_plain_identity_net_has_the_same_weights_and_omits_the_addition():
    kw = dict(input_shape=(7,), out_features=3, width=4, depth=2, seed=0)
    res, plain = ResidualNet(**kw).double(), ResidualNet(plain=True, **kw).double()
    for (n, p), q in zip(res.named_parameters(), plain.parameters()):
        assert torch.equal(p, q), n
    x = torch.randn(3, 7, dtype=DT)
    h = plain.stem_act(plain.stem(x))
    for b in plain.blocks:
        h = torch.relu(b.residual(h))  # x_l = sigma(F(x_{l-1})): no "+ x"
    torch.testing.assert_close(plain(x), plain.head(h), atol=0, rtol=0)
    with pytest.raises(TypeError, match="plain"):
        PlainNet(plain=False)


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_lesion_removes_exactly_one_block(block):
    net = ResidualNet(input_shape=(6,), out_features=2, width=4, depth=4, block=block, seed=0).double()
    calls = [0] * 4
    for i, b in enumerate(net.blocks):
        b.weight1.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    x = torch.randn(3, 6, dtype=DT)
    full = net(x)
    with net.lesion(2) as same:
        assert same is net and [b.lesioned for b in net.blocks] == [False, False, True, False]
        lesioned = net(x)
    assert calls == [2, 2, 1, 2]  # only block 2's residual branch was skipped
    assert not any(b.lesioned for b in net.blocks) and torch.equal(net(x), full)
    h = net.stem_act(net.stem_norm(net.stem(x)))
    for i, b in enumerate(net.blocks):
        if i != 2:
            h = b(h)
        elif block == "standard":
            h = torch.relu(h)  # sigma(x + 0)
    torch.testing.assert_close(lesioned, net.head(net.final_act(net.final_norm(h))), atol=0, rtol=0)
    with net.lesion([0, -1]):
        assert [b.lesioned for b in net.blocks] == [True, False, False, True]
    for bad in (4, -5):
        with pytest.raises(ValueError, match="out of range"):
            with net.lesion(bad):
                pass


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
@pytest.mark.parametrize("m", [1, 2, 4])
def test_dense_block_widths_and_connections(conv, m):
    k, c_in = 3, 5
    block = DenseBlock(c_in, k, m, conv=conv, norm=None).double()
    x = _x(conv, c_in)
    y = block(x)
    assert block.out_features == c_in + m * k == y.shape[1]
    assert block.num_connections == m * (m + 1) // 2
    assert [layer.in_features for layer in block.layers] == [c_in + l * k for l in range(m)]
    assert sorted(block.connections()) == sorted((s, l) for l in range(1, m + 1) for s in range(l))
    torch.testing.assert_close(y[:, :c_in], x, atol=0, rtol=0)  # the block input is passed on unchanged


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
def test_densenet_classifier_runs(conv):
    net = DenseNet(input_shape=(1, 8, 8) if conv else (20,), out_features=3, growth_rate=2, block_layers=(2, 3),
                   conv=conv, seed=0)
    out = net(torch.randn(4, 64 if conv else 20))
    assert out.shape == (4, 3)
    out.sum().backward()
    assert len(net.hidden_modules()) == 5 and net.blocks[0].in_features == 4  # stem: 2k features
    assert net.blocks[1].in_features == (4 + 2 * 2) // 2  # compression 0.5 at the transition


def test_registries_and_arguments_raise_listing_names():
    with pytest.raises(ValueError) as err:
        get_shortcut("highway", 3)
    assert all(n in str(err.value) for n in SHORTCUTS)
    with pytest.raises(ValueError) as err:
        get_block("bottleneck", 3)
    assert all(n in str(err.value) for n in BLOCKS)
    with pytest.raises(ValueError, match="shortcut"):
        ResidualNet(shortcut="nope", plain=True)
    with pytest.raises(ValueError, match="residual block"):
        ResidualNet(block="nope")
    with pytest.raises(ValueError, match="normalization"):
        ResidualNet(norm="recurrent_batch")
    with pytest.raises(ValueError, match="C, H, W"):
        ResidualNet(input_shape=(784,), conv=True)
    with pytest.raises(ValueError, match="image_size"):
        ResidualBlock(3, conv=True, norm="layer")
    with pytest.raises(TypeError, match="does not take"):
        get_shortcut("identity", 3, scale=2)


def test_path_counts_are_binomial():
    assert path_counts(3) == [1, 3, 3, 1]
    assert sum(path_counts(10)) == 2**10
    with pytest.raises(ValueError):
        path_counts(-1)


def _models():
    return [
        (ResidualNet(input_shape=(9,), out_features=2, width=4, depth=3, shortcut="exclusive_gating",
                     shortcut_kwargs={"gate_bias": -3.0}, norm="layer", seed=4), torch.randn(3, 9)),
        (ResidualNet(input_shape=(2, 6, 6), out_features=2, width=3, depth=2, conv=True, block="preact",
                     shortcut="conv1x1", norm="batch", seed=4), torch.randn(3, 2, 6, 6)),
        (PlainNet(input_shape=[9], out_features=2, width=4, depth=2, activation="tanh", seed=4), torch.randn(3, 9)),
        (DenseNet(input_shape=(1, 8, 8), out_features=2, growth_rate=2, block_layers=[2, 2], norm="layer", seed=4),
         torch.randn(3, 64)),
    ]


@pytest.mark.parametrize("i", range(4), ids=["resnet_gated", "resnet_conv_preact", "plain", "densenet"])
def test_build_model_round_trips(i):
    model, x = _models()[i]
    model.eval()
    rebuilt = build_model(model.config).eval()
    assert type(rebuilt) is type(model) and rebuilt.config == model.config
    for (n, p), q in zip(model.named_parameters(), rebuilt.parameters()):
        assert torch.equal(p, q), n
    torch.testing.assert_close(rebuilt(x), model(x), atol=0, rtol=0)
    gates = [m.gate.bias for m in model.modules() if hasattr(m, "gate_bias")]
    assert all(torch.all(b == -3.0) for b in gates)
