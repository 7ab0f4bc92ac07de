"""Models: rebuilding from ``config``, shapes, maxout wiring, argument checks."""
from __future__ import annotations

import pytest
import torch

from unstable_gradients.activations import Maxout
from unstable_gradients.models import MLP, MODELS, SmallCNN, VanillaRNN, build_model, deep_mlp


def _make(kind: str, seed):
    if kind == "mlp":
        return MLP([12, 9, 7, 4], activation="tanh", init="xavier_normal", bias_std=0.5,
                   activation_kwargs={}, seed=seed), torch.randn(5, 12)
    if kind == "mlp_prelu":
        return MLP([12, 9, 4], activation="prelu", activation_kwargs={"init": 0.125},
                   init="he_normal", init_kwargs={"negative_slope": 0.125}, seed=seed), torch.randn(5, 12)
    if kind == "cnn":
        return SmallCNN(channels=(1, 3, 2), kernel_size=3, image_size=10, num_classes=4, activation="elu",
                        seed=seed), torch.randn(5, 1, 10, 10)
    return VanillaRNN(3, 6, 2, activation="tanh", recurrent_init="orthogonal", recurrent_kwargs={"gain": 1.5},
                      seed=seed), torch.randn(5, 7, 3)


KINDS = ["mlp", "mlp_prelu", "cnn", "rnn"]


@pytest.mark.parametrize("seed", [0, None], ids=["seeded", "global_rng"])
@pytest.mark.parametrize("kind", KINDS)
def test_build_model_rebuilds_an_identical_model(kind, seed):
    torch.manual_seed(3)
    model, x = _make(kind, seed)
    torch.manual_seed(3)
    rebuilt = build_model(model.config)
    assert type(rebuilt) is type(model)
    assert rebuilt.config == model.config
    assert [(n, p.shape) for n, p in rebuilt.named_parameters()] == [(n, p.shape) for n, p in model.named_parameters()]
    for (n, p), q in zip(model.named_parameters(), rebuilt.parameters()):
        assert torch.equal(p, q), n
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "rnn"])
def test_seed_makes_construction_independent_of_global_rng(kind):
    torch.manual_seed(0)
    a, x = _make(kind, 42)
    torch.manual_seed(1)
    b, _ = _make(kind, 42)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    c, _ = _make(kind, 43)
    assert not torch.equal(a(x), c(x))


def test_build_model_does_not_mutate_config():
    model, _ = _make("mlp", 0)
    config = dict(model.config)
    build_model(config)
    assert config == model.config and config["kind"] == "mlp"


def test_build_model_needs_a_known_kind():
    with pytest.raises(ValueError, match="kind"):
        build_model({"sizes": [3, 2]})
    with pytest.raises(ValueError) as err:
        build_model({"kind": "capsule_net"})
    for kind in MODELS:
        assert kind in str(err.value)


def test_mlp_with_maxout_builds_and_runs():
    model = MLP([6, 4, 3, 2], activation="maxout", activation_kwargs={"k": 3}, seed=0)
    assert [lin.out_features for lin in model.linears] == [12, 9, 2]  # k pieces per hidden unit
    assert all(isinstance(a, Maxout) for a in model.activations)
    x = torch.randn(5, 6)
    out = model(x)
    assert out.shape == (5, 2)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # the hidden output of the maxout layer has the *unit* count
    h = model.activations[0](model.linears[0](x))
    assert h.shape == (5, 4)
    assert build_model(model.config)(x).shape == (5, 2)


def test_mlp_structure_and_hidden_modules():
    model = MLP([784, 30, 20, 10], activation="relu", seed=0)
    assert model.depth == 2
    assert [n for n, _ in model.hidden_modules()] == ["hidden1", "hidden2"]
    assert [m for _, m in model.hidden_modules()] == list(model.activations)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)  # images are flattened


def test_mlp_output_activation():
    model = MLP([5, 4, 3], output_activation="sigmoid", seed=0)
    out = model(torch.randn(10, 5))
    assert ((out > 0) & (out < 1)).all()


def test_mlp_default_init_is_lecun_with_zero_biases():
    model = MLP([400, 300, 10], seed=0)
    assert model.linears[0].weight.std().item() == pytest.approx(1 / 20, rel=0.03)
    assert torch.count_nonzero(model.linears[0].bias) == 0


@pytest.mark.parametrize("sizes", [[5], [], [5, 0, 2], [5, 3, -1]], ids=["one_size", "empty", "zero_width", "negative"])
def test_mlp_bad_sizes_raise(sizes):
    with pytest.raises(ValueError, match="sizes"):
        MLP(sizes)


def test_deep_mlp():
    model = deep_mlp(3, 16, activation="tanh", seed=0)
    assert model.sizes == [784, 16, 16, 16, 10]
    assert model.config["activation"] == "tanh"
    assert deep_mlp(0, 16).sizes == [784, 10]
    with pytest.raises(ValueError, match="depth"):
        deep_mlp(-1, 16)


def test_mlp_unknown_activation_raises():
    with pytest.raises(ValueError, match="activation"):
        MLP([3, 2, 1], activation="nope")


def test_cnn_shapes_and_hidden_modules():
    model = SmallCNN(seed=0)  # channels (1, 4, 8), 3x3 kernels, 28px
    assert model.classifier.in_features == 8 * 24 * 24
    assert model(torch.randn(2, 784)).shape == (2, 10)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert [n for n, _ in model.hidden_modules()] == ["conv1", "conv2"]


@pytest.mark.parametrize(
    "kwargs",
    [dict(channels=(1,)), dict(channels=(1, 2, 2, 2), kernel_size=5, image_size=12)],
    ids=["single_channel_entry", "too_deep_for_image"],
)
def test_cnn_bad_sizes_raise(kwargs):
    with pytest.raises(ValueError, match="channels"):
        SmallCNN(**kwargs)


def test_rnn_shapes_and_hidden_states():
    model = VanillaRNN(3, 5, 2, seed=0)
    x = torch.randn(4, 6, 3)
    out, hidden = model(x, return_hidden=True)
    assert out.shape == (4, 2) and len(hidden) == 7
    assert torch.count_nonzero(hidden[0]) == 0 and all(h.shape == (4, 5) for h in hidden)
    h0 = torch.randn(4, 5)
    assert model(x, h0=h0, return_hidden=True)[1][0] is h0
    seq = VanillaRNN(3, 5, 2, many_to_one=False, seed=0)
    assert seq(x).shape == (4, 6, 2)
    torch.testing.assert_close(seq(x)[:, -1], VanillaRNN(3, 5, 2, seed=0)(x))  # same weights, same last output
    with pytest.raises(ValueError, match="batch, T, input_size"):
        model(torch.randn(4, 3))


def test_rnn_recurrent_init_and_zero_biases():
    model = VanillaRNN(3, 8, 2, recurrent_init="orthogonal", recurrent_kwargs={"gain": 1.5}, seed=0)
    w = model.W_hh.detach().double()
    torch.testing.assert_close(w @ w.T, 2.25 * torch.eye(8, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.count_nonzero(model.b_h) == 0 and torch.count_nonzero(model.b_o) == 0
    assert [n for n, _ in model.named_parameters()] == ["W_xh", "W_hh", "b_h", "W_ho", "b_o"]


def test_vanilla_rnn_without_init_uses_torch_default_bounds_and_seed():
    a = VanillaRNN(3, 16, 2, init=None, seed=7)
    b = VanillaRNN(3, 16, 2, init=None, seed=7)
    for name in ("W_xh", "W_hh", "W_ho"):
        w = getattr(a, name)
        assert torch.equal(w, getattr(b, name)), name
        assert w.abs().max() <= 1 / 16**0.5 + 1e-7
        assert w.std() > 0.5 * (1 / 16**0.5) / 3**0.5
