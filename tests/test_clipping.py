"""Gradient clipping (by L2 norm and by value) against ``torch.nn.utils``, its telemetry, the L1/L2
weight penalties, and their use in ``training.train``."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from unstable_gradients.clipping import (
    CLIPPERS,
    ClipStats,
    clip_grad_norm,
    clip_grad_value,
    get_clipper,
    penalized_weights,
    weight_penalty,
)
from unstable_gradients.models import MLP
from unstable_gradients.training import train

TORCH_CLIPPERS = {"norm": torch.nn.utils.clip_grad_norm_, "value": torch.nn.utils.clip_grad_value_}


def _params_with_grads(scale: float = 1.0, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 4), (5,), (3, 5), (3,)]
    params = [torch.zeros(s, requires_grad=True) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * scale
    params.append(torch.zeros(2, requires_grad=True))  # no gradient: ignored, as in torch
    return params


def _flat(params) -> torch.Tensor:
    return torch.cat([p.grad.double().flatten() for p in params if p.grad is not None])


@pytest.mark.parametrize("threshold", [0.05, 0.5, 1.0, 100.0], ids=lambda t: f"theta={t}")
@pytest.mark.parametrize("name", sorted(CLIPPERS))
def test_clippers_match_torch(name, threshold):
    ours, theirs = _params_with_grads(), _params_with_grads()
    before = _flat(ours)
    stats = get_clipper(name)(ours, threshold)
    torch_out = TORCH_CLIPPERS[name](theirs, threshold)
    for p, q in zip(ours, theirs):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=2e-6, atol=1e-8)
    after = _flat(ours)
    assert isinstance(stats, ClipStats) and stats.method == name and stats.threshold == threshold
    assert stats.norm_before == pytest.approx(float(before.norm()), rel=1e-12)
    assert stats.norm_after == pytest.approx(float(after.norm()), rel=1e-12)
    assert stats.max_abs_before == pytest.approx(float(before.abs().max()), rel=1e-6)
    cos = float(before @ after / (before.norm() * after.norm()))
    assert stats.cosine == pytest.approx(cos, abs=1e-9)
    if name == "norm":
        assert stats.norm_before == pytest.approx(float(torch_out), rel=1e-6)  # torch returns ||g|| before
        assert stats.clipped == (float(before.norm()) > threshold)
        assert stats.norm_after == pytest.approx(min(threshold, stats.norm_before), rel=1e-6)
        assert stats.cosine == 1.0 and math.isnan(stats.fraction_entries_clipped)
    else:
        n_big = int((before.abs() > threshold).sum())
        assert stats.clipped == (n_big > 0)
        assert stats.fraction_entries_clipped == n_big / before.numel()
        assert float(after.abs().max()) <= float(torch.tensor(threshold))  # θ rounded to float32
    assert stats.clipped == (threshold < 100.0)  # the random gradient has norm ~ 6, entries < 4


def test_below_threshold_leaves_gradients_bit_identical():
    for name in CLIPPERS:
        params = _params_with_grads(scale=1e-3)
        before = [p.grad.clone() for p in params if p.grad is not None]
        stats = get_clipper(name)(params, 1.0)
        assert not stats.clipped and stats.cosine == 1.0
        assert all(torch.equal(a, p.grad) for a, p in zip(before, [p for p in params if p.grad is not None]))


def test_value_clipping_turns_the_direction_norm_clipping_does_not():
    g = torch.tensor([10.0, 1.0])
    p = torch.zeros(2, requires_grad=True)
    p.grad = g.clone()
    stats = clip_grad_value(p, 1.0)  # a single tensor is accepted, as in torch
    assert p.grad.tolist() == [1.0, 1.0]
    assert stats.cosine == pytest.approx(11 / (math.sqrt(101) * math.sqrt(2)))  # 0.774: turned by 39 degrees
    assert stats.fraction_entries_clipped == 0.5
    p.grad = g.clone()
    stats = clip_grad_norm(p, 1.0)
    assert stats.cosine == 1.0 and stats.clipped
    torch.testing.assert_close(p.grad, g / math.sqrt(101))
    assert stats.norm_after == pytest.approx(1.0)


def test_zero_and_missing_gradients():
    p = torch.zeros(3, requires_grad=True)
    for name in CLIPPERS:
        stats = get_clipper(name)([p], 1.0)  # no .grad at all
        assert stats.norm_before == stats.norm_after == 0.0 and not stats.clipped and stats.cosine == 1.0
    p.grad = torch.zeros(3)
    assert clip_grad_norm([p], 1.0).cosine == 1.0 and torch.equal(p.grad, torch.zeros(3))


def test_registry_errors_list_valid_names():
    with pytest.raises(ValueError, match="valid names: norm, value"):
        get_clipper("l3")
    assert get_clipper("NORM") is clip_grad_norm


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")], ids=["zero", "negative", "inf", "nan"])
@pytest.mark.parametrize("name", sorted(CLIPPERS))
def test_bad_thresholds_raise(name, bad):
    with pytest.raises(ValueError, match="> 0"):
        get_clipper(name)(_params_with_grads(), bad)


# --------------------------------------------------------------------------------- weight penalties

def test_weight_penalty_formula_and_gradient_skip_biases():
    model = MLP([6, 5, 3], activation="tanh", seed=0)
    with torch.no_grad():
        for lin in model.linears:
            lin.bias.fill_(100.0)  # biases must not count
    Ws = [lin.weight for lin in model.linears]
    assert penalized_weights(model) == Ws
    Wd = [W.detach() for W in Ws]
    pen = weight_penalty(model, l1=0.3, l2=0.2)
    expected = 0.3 * sum(float(W.abs().sum()) for W in Wd) + 0.1 * sum(float((W**2).sum()) for W in Wd)
    assert float(pen.detach()) == pytest.approx(expected, rel=1e-6)
    pen.backward()
    for W in Ws:
        torch.testing.assert_close(W.grad, 0.3 * W.sign() + 0.2 * W.detach())
    assert all(lin.bias.grad is None for lin in model.linears)
    zero = weight_penalty(model)
    assert zero.shape == () and float(zero) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        weight_penalty(model, l1=-1.0)


# ----------------------------------------------------------------------------- integration in train

@pytest.fixture
def data(mnist_small):
    X, y = mnist_small
    return X[:200], y[:200]


def _net(seed=1):
    return MLP([784, 16, 10], activation="sigmoid", seed=seed)


def test_train_norm_clipping_records_telemetry_and_caps_the_step(data):
    X, y = data
    model, lr, theta = _net(), 0.5, 0.01
    before = [p.detach().clone() for p in model.parameters()]
    res = train(model, X, y, epochs=1, batch_size=200, lr=lr, clip="norm", clip_value=theta, seed=0,
                progress=False, eval_every_epoch=False)
    assert len(res.clipped) == len(res.clip_norm_before) == len(res.clip_norm_after) == len(res.clip_cosine) == 1
    assert res.clipped == [True] and res.fraction_clipped == 1.0
    assert res.clip_norm_before[0] > theta and res.clip_norm_after[0] == pytest.approx(theta, rel=1e-6)
    assert res.clip_cosine == [1.0] and math.isnan(res.clip_fraction_entries[0])
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert float(step.norm()) == pytest.approx(lr * theta, rel=1e-4)  # SGD moved by exactly lr * θ


def test_train_value_clipping_telemetry(data):
    X, y = data
    res = train(_net(), X, y, epochs=2, batch_size=50, lr=0.5, clip="value", clip_value=1e-3, seed=0,
                progress=False, eval_every_epoch=False)
    assert len(res.clipped) == len(res.steps) == 8
    assert all(0.0 < f <= 1.0 for f in res.clip_fraction_entries)
    assert all(0.0 < c < 1.0 for c in res.clip_cosine)  # value clipping turned every update
    assert all(a < b for a, b in zip(res.clip_norm_after, res.clip_norm_before))
    assert res.fraction_clipped == 1.0


def test_train_with_a_loose_threshold_equals_no_clipping(data):
    X, y = data
    kw = dict(epochs=1, batch_size=50, lr=1.0, seed=0, progress=False, eval_every_epoch=False)
    plain = train(_net(), X, y, **kw)
    loose = train(_net(), X, y, clip="norm", clip_value=1e6, **kw)
    assert loose.loss == plain.loss and loose.fraction_clipped == 0.0
    assert math.isnan(plain.fraction_clipped) and plain.clipped == []


def test_train_clip_argument_errors(data):
    X, y = data
    with pytest.raises(ValueError, match="valid names: norm, value"):
        train(_net(), X, y, clip="l2", clip_value=1.0, progress=False)
    with pytest.raises(ValueError, match="clip_value"):
        train(_net(), X, y, clip="norm", progress=False)
    with pytest.raises(ValueError, match="clip is None"):
        train(_net(), X, y, clip_value=1.0, progress=False)
    with pytest.raises(ValueError, match="> 0"):
        train(_net(), X, y, clip="value", clip_value=0.0, progress=False)
    with pytest.raises(ValueError, match=">= 0"):
        train(_net(), X, y, l1=-0.1, progress=False)


def test_train_l1_adds_the_penalty_to_loss_and_gradient(data):
    X, y = data
    l1, lr = 1e-3, 0.5
    kw = dict(epochs=1, batch_size=200, lr=lr, seed=0, progress=False, eval_every_epoch=False)
    m0, m1 = _net(), _net()
    start = copy.deepcopy(m0)
    plain = train(m0, X, y, **kw)
    pen = train(m1, X, y, l1=l1, **kw)
    assert pen.loss[0] - plain.loss[0] == pytest.approx(float(weight_penalty(start, l1=l1).detach()), rel=1e-4)
    for a, b, w0 in zip(m0.linears, m1.linears, start.linears):
        # the penalty's gradient l1 * sign(W) moves every weight by an extra -lr * l1 * sign(W)
        torch.testing.assert_close(b.weight - a.weight, -lr * l1 * w0.weight.sign(), rtol=0, atol=1e-6)
        torch.testing.assert_close(b.bias, a.bias)


# ---------------------------------------------------------------- adaptive gradient clipping (Brock et al. 2021)

from unstable_gradients.clipping import UNITWISE_CLIPPERS, clip_grad_agc  # noqa: E402


def _agc_reference(W: torch.Tensor, G: torch.Tensor, lam: float, eps: float = 1e-3) -> torch.Tensor:
    """Brock et al. 2021, eq. 3, one unit (row; the whole vector for a bias) at a time, float64."""
    out = G.double().clone()
    rows = out.reshape(out.shape[0], -1) if out.dim() > 1 else out.reshape(1, -1)
    wrows = W.double().reshape(rows.shape)
    for i in range(rows.shape[0]):
        w = max(float(wrows[i].norm()), eps)
        g = float(rows[i].norm())
        if g / w > lam:
            rows[i] *= lam * w / g
    return rows.reshape(G.shape)


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 3), (5,)], ids=["matrix", "kernel", "bias"])
@pytest.mark.parametrize("lam", [0.01, 0.3, 10.0])
def test_agc_matches_eq3_unit_by_unit(shape, lam):
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64))
    with torch.no_grad():
        p[0].mul_(1e-6)  # a unit with ||W_i|| below eps: the eps floor applies
    spread = torch.linspace(0.01, 3, shape[0], dtype=torch.float64).reshape(-1, *[1] * (len(shape) - 1))
    p.grad = torch.randn(shape, generator=gen, dtype=torch.float64) * spread
    expected = _agc_reference(p.detach(), p.grad, lam)
    changed = not torch.equal(expected, p.grad)
    stats = clip_grad_agc([p], lam)
    torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-15)
    assert stats.method == "agc" and stats.threshold == lam and stats.clipped == changed


def test_agc_bounds_every_unit_ratio_and_reports_telemetry():
    torch.manual_seed(1)
    W = torch.nn.Parameter(torch.randn(8, 5))
    W.grad = torch.randn(8, 5) * torch.tensor([0.001, 0.001, 1, 1, 1, 1, 1, 1]).reshape(-1, 1)
    before = W.grad.clone()
    stats = clip_grad_agc([W], 0.05)
    ratio = W.grad.norm(dim=1) / W.detach().norm(dim=1).clamp(min=1e-3)
    assert (ratio <= 0.05 + 1e-6).all()
    torch.testing.assert_close(W.grad[:2], before[:2])  # small units are left alone
    assert stats.fraction_entries_clipped == pytest.approx(6 / 8)
    assert stats.norm_before == pytest.approx(float(before.double().norm()))
    assert stats.norm_after == pytest.approx(float(W.grad.double().norm()), rel=1e-6)
    assert 0 < stats.cosine < 1  # unit-wise rescaling turns the global direction


def test_agc_is_a_no_op_under_a_large_threshold():
    W = torch.nn.Parameter(torch.randn(4, 3))
    W.grad = torch.randn(4, 3)
    before = W.grad.clone()
    stats = clip_grad_agc([W], 1e6)
    assert torch.equal(W.grad, before) and not stats.clipped and stats.cosine == pytest.approx(1.0)


def test_agc_is_registered_and_checks_its_arguments():
    assert get_clipper("agc") is clip_grad_agc and UNITWISE_CLIPPERS["agc"] is clip_grad_agc
    with pytest.raises(ValueError, match="unit-wise: agc"):
        get_clipper("l3")
    W = torch.nn.Parameter(torch.randn(2, 2))
    W.grad = torch.ones(2, 2)
    with pytest.raises(ValueError, match="clipping"):
        clip_grad_agc([W], 0.0)
    with pytest.raises(ValueError, match="eps"):
        clip_grad_agc([W], 0.1, eps=0.0)


def test_train_agc_skips_excluded_modules(data):
    X, y = data
    kw = dict(epochs=1, batch_size=200, lr=0.5, seed=0, progress=False, eval_every_epoch=False)
    m_all, m_skip = _net(), _net()
    last = len(m_all.linears) - 1
    r_all = train(m_all, X, y, clip="agc", clip_value=1e-4, **kw)
    r_skip = train(m_skip, X, y, clip="agc", clip_value=1e-4, clip_exclude=(f"linears.{last}",), **kw)
    assert r_all.ok and r_skip.ok and all(r_all.clipped)
    # the excluded output layer took the full step; the first layer saw the same clipped step
    assert not torch.allclose(m_all.linears[last].weight, m_skip.linears[last].weight)
    torch.testing.assert_close(m_all.linears[0].weight, m_skip.linears[0].weight)
    assert r_skip.clip_norm_before[0] < r_all.clip_norm_before[0]  # telemetry over the clipped parameters only
    with pytest.raises(ValueError, match="clip is None"):
        train(_net(), X, y, clip_exclude=("linears.0",), progress=False)
