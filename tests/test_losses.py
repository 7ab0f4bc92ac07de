"""Losses: values against their formulas, closed-form ``grad`` against autograd, shape checks."""
from __future__ import annotations

import pytest
import torch

from unstable_gradients.losses import LOSSES, Loss, get_loss

BATCH, CLASSES = 5, 4


def _targets(kind: str, output: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if kind == "labels":
        return torch.randint(0, CLASSES, (BATCH,), generator=g)
    if kind == "probabilities":  # soft targets in [0, 1], e.g. for bce
        return torch.rand(BATCH, CLASSES, generator=g, dtype=torch.float64)
    return torch.randn(BATCH, CLASSES, generator=g, dtype=torch.float64)  # real-valued regression


def _onehot(y):
    return torch.nn.functional.one_hot(y, CLASSES).double()


def _log_softmax(o):
    return o - o.exp().sum(1, keepdim=True).log()


# Independent formulas for each loss (batch mean of the per-sample loss)
FORMULAS = {
    "mse": lambda o, y: 0.5 * ((o - y) ** 2).sum() / o.shape[0],
    "mse_mean": lambda o, y: ((o - y) ** 2).mean(),
    "cross_entropy": lambda o, y: -(y * _log_softmax(o)).sum() / o.shape[0],
    "bce_with_logits": lambda o, y: -(
        y * torch.log(1 / (1 + torch.exp(-o))) + (1 - y) * torch.log(1 - 1 / (1 + torch.exp(-o)))
    ).sum() / o.shape[0],
}

CASES = [
    ("mse", "real"), ("mse", "labels"),
    ("mse_mean", "real"), ("mse_mean", "labels"),
    ("cross_entropy", "labels"),
    ("bce_with_logits", "probabilities"), ("bce_with_logits", "labels"),
]


def test_cases_cover_every_loss():
    assert {name for name, _ in CASES} == set(LOSSES) == set(FORMULAS)


@pytest.mark.parametrize("name,target_kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_value_matches_formula(name, target_kind):
    o = torch.randn(BATCH, CLASSES, dtype=torch.float64)
    y = _targets(target_kind, o)
    y_dense = _onehot(y) if target_kind == "labels" else y
    loss = get_loss(name)
    value = loss(o, y)
    assert value.dim() == 0
    torch.testing.assert_close(value, FORMULAS[name](o, y_dense), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss.value(o, y), value)


@pytest.mark.parametrize("name,target_kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_grad_matches_autograd(name, target_kind):
    o = (3 * torch.randn(BATCH, CLASSES, dtype=torch.float64)).requires_grad_(True)
    y = _targets(target_kind, o)
    loss = get_loss(name)
    (auto,) = torch.autograd.grad(loss.value(o, y), o)
    g = loss.grad(o.detach(), y)
    assert g.shape == o.shape
    torch.testing.assert_close(g, auto, rtol=1e-12, atol=1e-14)


def test_bce_output_delta_is_a_minus_y():
    """Nielsen ch. 3, eq. 66: with sigmoid outputs and cross-entropy cost, delta = a - y (per sample)."""
    o = torch.randn(BATCH, CLASSES, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (BATCH,))
    g = get_loss("bce_with_logits").grad(o, y)
    torch.testing.assert_close(g * BATCH, torch.sigmoid(o) - _onehot(y))


@pytest.mark.parametrize("name", ["mse", "mse_mean", "bce_with_logits"])
@pytest.mark.parametrize("part", ["value", "grad"])
def test_float_target_shape_mismatch_raises(name, part):
    o = torch.randn(BATCH, CLASSES)
    bad = torch.randn(BATCH, CLASSES + 1)
    with pytest.raises(ValueError, match="shape"):
        getattr(get_loss(name), part)(o, bad)
    with pytest.raises(ValueError, match="shape"):
        getattr(get_loss(name), part)(o, torch.randn(BATCH + 1, CLASSES))


@pytest.mark.filterwarnings("ignore:Using a target size:UserWarning")
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("part", ["value", "grad"])
def test_label_batch_mismatch_raises(name, part):
    o = torch.randn(BATCH, CLASSES)
    labels = torch.randint(0, CLASSES, (BATCH + 2,))
    with pytest.raises((ValueError, RuntimeError)):
        getattr(get_loss(name), part)(o, labels)


def test_cross_entropy_needs_integer_labels():
    o = torch.randn(BATCH, CLASSES)
    with pytest.raises(ValueError, match="integer class labels"):
        get_loss("cross_entropy")(o, torch.rand(BATCH, CLASSES))


def test_get_loss_registry():
    loss = LOSSES["mse"]
    assert isinstance(loss, Loss) and get_loss(loss) is loss
    assert get_loss("Cross-Entropy") is LOSSES["cross_entropy"]
    with pytest.raises(ValueError) as err:
        get_loss("hinge")
    for name in LOSSES:
        assert name in str(err.value)


def test_cross_entropy_value_rejects_a_single_label_for_a_batch():
    with pytest.raises(ValueError):
        get_loss("cross_entropy")(torch.randn(BATCH, CLASSES), torch.tensor([2]))


@pytest.mark.parametrize(
    "name,part",
    [("mse", "value"), ("mse", "grad"), ("mse_mean", "grad"), ("cross_entropy", "grad"), ("bce_with_logits", "grad")],
    ids=["mse-value", "mse-grad", "mse_mean-grad", "cross_entropy-grad", "bce_with_logits-grad"],
)
def test_single_label_for_a_batch_raises(name, part):
    with pytest.raises(ValueError):
        getattr(get_loss(name), part)(torch.randn(BATCH, CLASSES), torch.tensor([2]))
