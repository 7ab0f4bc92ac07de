"""Activations: values against textbook formulas, closed-form derivatives against autograd,
agreement with ``torch.nn`` where torch has the function, and the registry's error handling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unstable_gradients.activations import (
    ACTIVATIONS,
    Activation,
    Maxout,
    PReLU,
    activation_names,
    get_activation,
)

# ---------------------------------------------------------------------------------------------
# Textbook definitions, written in NumPy (independent of the package and of torch).
# ---------------------------------------------------------------------------------------------


def _maxout_np(x: np.ndarray, k: int) -> np.ndarray:
    """Max over k consecutive features of each row."""
    b, n = x.shape
    return x.reshape(b, n // k, k).max(axis=2)


TEXTBOOK = {
    "step": lambda x: (x > 0).astype(float),
    "linear": lambda x: x,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": lambda x: (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x)),
    "hardtanh": lambda x: np.where(x < -1, -1.0, np.where(x > 1, 1.0, x)),
    "arctan": np.arctan,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "bent_identity": lambda x: (np.sqrt(x**2 + 1) - 1) / 2 + x,
    "relu": lambda x: np.maximum(0.0, x),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),  # default slope 0.01
    "prelu": lambda x: np.where(x > 0, x, 0.25 * x),  # He et al.'s initial slope 0.25
    "elu": lambda x: np.where(x > 0, x, 1.0 * (np.exp(x) - 1)),  # alpha = 1
    "softplus": lambda x: np.log(1 + np.exp(x)),  # beta = 1
    "swish": lambda x: x / (1 + np.exp(-x)),  # beta = 1
    "maxout": lambda x: _maxout_np(x, 2),  # k = 2 pieces
}

# Non-default hyper-parameters: (name, kwargs, textbook f)
TEXTBOOK_KWARGS = [
    ("leaky_relu", dict(negative_slope=0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    ("prelu", dict(init=0.125), lambda x: np.where(x > 0, x, 0.125 * x)),  # exact in float32
    ("elu", dict(alpha=0.5), lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    ("softplus", dict(beta=2.0), lambda x: np.log(1 + np.exp(2 * x)) / 2),
    ("softplus", dict(beta=0.5), lambda x: np.log(1 + np.exp(0.5 * x)) / 0.5),
    ("swish", dict(beta=2.0), lambda x: x / (1 + np.exp(-2 * x))),
    ("swish", dict(beta=0.5, learnable=True), lambda x: x / (1 + np.exp(-0.5 * x))),
    ("maxout", dict(k=3), lambda x: _maxout_np(x, 3)),
    ("maxout", dict(k=1), lambda x: x),
]


def _kw_id(case):
    name, kwargs, _ = case
    return name + "[" + ",".join(f"{k}={v}" for k, v in kwargs.items()) + "]"


# Off-kink grid: 0.1 spacing shifted by 0.0137, so no point is exactly 0 or +-1.
GRID = torch.linspace(-6, 6, 121, dtype=torch.float64) + 0.0137


def _input_for(act: Activation) -> torch.Tensor:
    """A float64 input the activation accepts: the 1-D grid, or (batch, 6*k) for maxout."""
    if act.elementwise:
        return GRID.clone()
    g = torch.Generator().manual_seed(0)
    return 3 * torch.randn(8, 6 * act.k, generator=g, dtype=torch.float64)


def _autograd_derivative(act: Activation, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(act(x).sum(), x)
    return g


def test_textbook_table_covers_every_registered_activation():
    assert set(TEXTBOOK) == set(activation_names())
    assert activation_names() == list(ACTIVATIONS)


@pytest.mark.parametrize("name", activation_names())
def test_value_matches_textbook_definition(name):
    act = get_activation(name).double()
    x = _input_for(act)
    expected = torch.from_numpy(np.asarray(TEXTBOOK[name](x.numpy()), dtype=np.float64))
    got = act(x).detach()
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", TEXTBOOK_KWARGS, ids=_kw_id)
def test_value_with_hyperparameters_matches_textbook(case):
    name, kwargs, f = case
    act = get_activation(name, **kwargs).double()
    x = _input_for(act)
    expected = torch.from_numpy(np.asarray(f(x.numpy()), dtype=np.float64))
    torch.testing.assert_close(act(x).detach(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", activation_names())
def test_derivative_matches_autograd(name):
    act = get_activation(name).double()
    x = _input_for(act)
    d = act.derivative(x)
    assert d.shape == x.shape
    torch.testing.assert_close(d, _autograd_derivative(act, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", TEXTBOOK_KWARGS, ids=_kw_id)
def test_derivative_with_hyperparameters_matches_autograd(case):
    name, kwargs, _ = case
    act = get_activation(name, **kwargs).double()
    x = _input_for(act)
    torch.testing.assert_close(act.derivative(x), _autograd_derivative(act, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["step", "relu", "leaky_relu", "prelu", "elu", "hardtanh"])
def test_derivative_at_kinks_uses_autograds_convention(name):
    """The module docstring promises the autograd value exactly at the kinks (0 and +-1)."""
    act = get_activation(name).double()
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(act.derivative(x), _autograd_derivative(act, x), rtol=0, atol=0)


def test_maxout_derivative_on_ties_picks_one_piece_like_autograd():
    act = Maxout(k=2).double()
    x = torch.tensor([[1.0, 1.0, -2.0, 3.0]], dtype=torch.float64)
    d = act.derivative(x)
    torch.testing.assert_close(d, _autograd_derivative(act, x))
    assert d.reshape(1, 2, 2).sum(-1).eq(1).all()  # exactly one winner per unit


# ---------------------------------------------------------------------------------------------
# Agreement with torch.nn
# ---------------------------------------------------------------------------------------------

TORCH_EQUIVALENTS = [
    ("sigmoid", {}, nn.Sigmoid),
    ("tanh", {}, nn.Tanh),
    ("hardtanh", {}, nn.Hardtanh),
    ("softsign", {}, nn.Softsign),
    ("relu", {}, nn.ReLU),
    ("leaky_relu", {}, nn.LeakyReLU),
    ("leaky_relu", dict(negative_slope=0.3), lambda: nn.LeakyReLU(0.3)),
    ("prelu", {}, nn.PReLU),
    ("elu", {}, nn.ELU),
    ("elu", dict(alpha=0.7), lambda: nn.ELU(alpha=0.7)),
    ("softplus", {}, nn.Softplus),
    ("softplus", dict(beta=2.0), lambda: nn.Softplus(beta=2.0)),
    ("swish", {}, nn.SiLU),
    ("linear", {}, nn.Identity),
]


@pytest.mark.parametrize(
    "name,kwargs,torch_cls", TORCH_EQUIVALENTS,
    ids=[_kw_id((n, k, None)) for n, k, _ in TORCH_EQUIVALENTS],
)
def test_matches_torch_nn(name, kwargs, torch_cls):
    ours = get_activation(name, **kwargs).double()
    ref = torch_cls().double()
    x = GRID.clone().requires_grad_(True)
    x_ref = GRID.clone().requires_grad_(True)
    y, y_ref = ours(x), ref(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    y.sum().backward()
    y_ref.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.derivative(GRID), x_ref.grad, rtol=1e-12, atol=1e-12)


def test_prelu_per_channel_matches_torch_nn_prelu():
    c = 3
    ours, ref = PReLU(num_parameters=c).double(), nn.PReLU(num_parameters=c).double()
    with torch.no_grad():
        ours.weight.copy_(torch.tensor([0.1, 0.25, 0.5]))
        ref.weight.copy_(torch.tensor([0.1, 0.25, 0.5]))
    x = torch.randn(2, c, 4, 5, dtype=torch.float64)
    y, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y, y_ref)
    y.pow(2).sum().backward()
    y_ref.pow(2).sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)


# ---------------------------------------------------------------------------------------------
# Properties of particular activations
# ---------------------------------------------------------------------------------------------


def test_sigmoid_derivative_peaks_at_quarter():
    x = torch.linspace(-10, 10, 20001, dtype=torch.float64)  # contains 0
    d = get_activation("sigmoid").derivative(x)
    assert d.max().item() == pytest.approx(0.25, abs=1e-15)
    assert x[d.argmax()].item() == pytest.approx(0.0, abs=1e-12)
    assert (d > 0).all() and (d <= 0.25).all()


def test_tanh_derivative_peaks_at_one():
    x = torch.linspace(-10, 10, 20001, dtype=torch.float64)
    d = get_activation("tanh").derivative(x)
    assert d.max().item() == pytest.approx(1.0, abs=1e-15)
    assert x[d.argmax()].item() == pytest.approx(0.0, abs=1e-12)
    assert (d >= 0).all() and (d <= 1).all()


def test_softplus_is_finite_for_large_inputs():
    act = get_activation("softplus")
    x = torch.tensor([50.0, 100.0, 1000.0], requires_grad=True)
    y = act(x)
    y.sum().backward()
    torch.testing.assert_close(y.detach(), x.detach())
    torch.testing.assert_close(x.grad, torch.ones(3))


def test_maxout_shapes():
    act = Maxout(k=2)
    assert act(torch.randn(5, 6)).shape == (5, 3)
    assert Maxout(k=3)(torch.randn(5, 6)).shape == (5, 2)
    assert act(torch.randn(6)).shape == (3,)  # 1-D: the only dim is the feature dim
    assert act(torch.randn(2, 6, 4, 4)).shape == (2, 3, 4, 4)  # dim 1 is the feature dim
    # pieces are consecutive features: unit j takes max(x[2j], x[2j+1])
    x = torch.tensor([[0.0, 5.0, 4.0, -1.0, 2.0, 3.0]])
    torch.testing.assert_close(act(x), torch.tensor([[5.0, 4.0, 3.0]]))
    assert act.derivative(torch.randn(2, 6, 4, 4)).shape == (2, 6, 4, 4)


@pytest.mark.parametrize("shape", [(5, 7), (7,), (2, 5, 3, 3)], ids=["2d", "1d", "4d"])
def test_maxout_rejects_feature_size_not_divisible_by_k(shape):
    act = Maxout(k=2)
    with pytest.raises(ValueError, match="divisible"):
        act(torch.randn(*shape))
    with pytest.raises(ValueError, match="divisible"):
        act.derivative(torch.randn(*shape))


def test_maxout_rejects_k_below_one():
    with pytest.raises(ValueError):
        Maxout(k=0)


def test_maxout_is_the_only_non_elementwise_activation():
    non_elementwise = [n for n in activation_names() if not get_activation(n).elementwise]
    assert non_elementwise == ["maxout"]


def test_prelu_slope_is_learnable():
    act = get_activation("prelu")
    params = list(act.parameters())
    assert len(params) == 1 and params[0] is act.weight and act.weight.requires_grad
    assert act.weight.item() == 0.25
    x = torch.tensor([-2.0, -1.0, 0.5, 3.0])
    act(x).sum().backward()
    # d/da sum(where(x > 0, x, a x)) = sum of the non-positive inputs
    torch.testing.assert_close(act.weight.grad, torch.tensor([-3.0]))


def test_prelu_per_channel_on_images():
    c = 4
    act = get_activation("prelu", num_parameters=c)
    assert act.weight.shape == (c,)
    slopes = torch.tensor([0.0, 0.1, 0.5, 2.0])
    with torch.no_grad():
        act.weight.copy_(slopes)
    x = torch.randn(3, c, 5, 6)
    y = act(x)
    expected = torch.where(x > 0, x, slopes.view(1, c, 1, 1) * x)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(act.derivative(x), torch.where(x > 0, 1.0, slopes.view(1, c, 1, 1).expand_as(x)))
    y.sum().backward()
    expected_grad = torch.where(x > 0, 0.0, x).sum(dim=(0, 2, 3))
    torch.testing.assert_close(act.weight.grad, expected_grad)


def test_learnable_swish_beta_gets_a_gradient():
    act = get_activation("swish", beta=1.5, learnable=True)
    assert isinstance(act.beta, nn.Parameter)
    act(torch.randn(10)).sum().backward()
    assert act.beta.grad is not None and act.beta.grad.abs() > 0
    assert list(get_activation("swish").parameters()) == []  # fixed beta is a buffer


@pytest.mark.parametrize(
    "name,kwargs",
    [("leaky_relu", dict(negative_slope=-0.1)), ("softplus", dict(beta=0.0)), ("softplus", dict(beta=-1.0))],
    ids=["leaky_negative_slope", "softplus_beta0", "softplus_beta_negative"],
)
def test_invalid_hyperparameters_raise(name, kwargs):
    with pytest.raises(ValueError):
        get_activation(name, **kwargs)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_get_activation_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_activation("gelu_but_not_really")
    msg = str(err.value)
    assert "gelu_but_not_really" in msg
    for name in activation_names():
        assert name in msg


def test_get_activation_wrong_kwarg_raises_type_error():
    with pytest.raises(TypeError, match="tanh"):
        get_activation("tanh", alpha=2.0)
    with pytest.raises(TypeError):
        get_activation("elu", beta=2.0)


def test_get_activation_passes_instances_through_and_normalises_names():
    act = get_activation("elu", alpha=0.3)
    assert get_activation(act) is act
    assert isinstance(get_activation("Leaky-ReLU"), ACTIVATIONS["leaky_relu"])
    assert get_activation("leaky_relu", negative_slope=0.2).negative_slope == 0.2


@pytest.mark.parametrize("name", activation_names())
def test_every_activation_builds_fresh_instances(name):
    a, b = get_activation(name), get_activation(name)
    assert isinstance(a, Activation) and a is not b
    assert math.isfinite(float(a(torch.zeros(1, 6)).detach().sum()))
