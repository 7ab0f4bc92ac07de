"""Survey §3.2 (``optim``): NGD and BNGD step lengths against their definitions, zero gradients,
momentum, the registry, ``update_profile`` against a manual before/after diff, the learning-rate
schedules against their formulas, and the training loop's ``optimizer=``/``lr_schedule=``."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from unstable_gradients import optim
from unstable_gradients.models import MLP
from unstable_gradients.optim import (OPTIMIZERS, BlockNormalizedGD, NormalizedGD, get_optimizer, layer_param_groups,
                                      lr_schedule, make_scheduler, update_profile)
from unstable_gradients.training import train


def _net(seed=0):
    return MLP([5, 7, 6, 3], activation="tanh", seed=seed).double()


def _loss(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(8, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    return lambda: nn.functional.cross_entropy(model(X), y)


def _step(model, opt, closure):
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    closure().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    return [p.detach() - b for p, b in zip(model.parameters(), before)], grads


def _norm(ts):
    return float(torch.sqrt(sum((t ** 2).sum() for t in ts)))


@pytest.mark.parametrize("lr", [0.3, 1e-3])
def test_ngd_step_has_length_lr_along_minus_gradient(lr):
    model = _net()
    deltas, grads = _step(model, NormalizedGD(model.parameters(), lr=lr), _loss(model))
    assert _norm(deltas) == pytest.approx(lr, rel=1e-12)
    gnorm = _norm(grads)
    for d, g in zip(deltas, grads):
        torch.testing.assert_close(d, -lr * g / gnorm, rtol=1e-10, atol=1e-14)


def test_ngd_normalises_over_all_groups_together():
    model = _net()
    groups = [dict(params=list(model.linears[0].parameters())), dict(params=list(model.linears[1:].parameters()))]
    deltas, _ = _step(model, NormalizedGD(groups, lr=0.5), _loss(model))
    assert _norm(deltas) == pytest.approx(0.5, rel=1e-12)


def test_bngd_moves_every_tensor_by_lr():
    model = _net()
    deltas, grads = _step(model, BlockNormalizedGD(model.parameters(), lr=0.2), _loss(model))
    for d, g in zip(deltas, grads):
        assert float(d.norm()) == pytest.approx(0.2, rel=1e-12)
        torch.testing.assert_close(d, -0.2 * g / g.norm(), rtol=1e-10, atol=1e-14)


def test_bngd_by_layer_moves_every_layer_by_lr():
    model = _net()
    groups = layer_param_groups(model)
    assert [g["name"] for g in groups] == ["linears.0", "linears.1", "linears.2"]
    deltas, _ = _step(model, BlockNormalizedGD(groups, lr=0.2, blocks="group"), _loss(model))
    for l in range(3):  # weight and bias of a layer together
        assert _norm(deltas[2 * l: 2 * l + 2]) == pytest.approx(0.2, rel=1e-12)
    assert float(deltas[0].norm()) < 0.2  # the weight alone moves less than the block


def test_get_optimizer_builds_layer_blocks_from_a_model():
    model = _net()
    opt = get_optimizer("bngd", model, 0.1, blocks="group")
    assert len(opt.param_groups) == 3
    assert len(get_optimizer("bngd", model, 0.1).param_groups) == 1


@pytest.mark.parametrize("cls", [NormalizedGD, BlockNormalizedGD], ids=["ngd", "bngd"])
def test_zero_gradient_gives_no_step_and_no_nan(cls):
    w = nn.Parameter(torch.ones(3))
    v = nn.Parameter(torch.ones(2))
    opt = cls([w, v], lr=0.1)
    (0.0 * w.sum() + (v ** 2).sum()).backward()  # w's gradient is exactly zero
    opt.step()
    assert torch.equal(w.detach(), torch.ones(3))
    assert torch.isfinite(v).all() and not torch.equal(v.detach(), torch.ones(2))
    opt.zero_grad()
    (0.0 * (w.sum() + v.sum())).backward()
    before = v.detach().clone()
    opt.step()
    assert torch.equal(v.detach(), before)


@pytest.mark.parametrize("cls", [NormalizedGD, BlockNormalizedGD], ids=["ngd", "bngd"])
def test_momentum_accumulates_normalised_directions(cls):
    w = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = cls([w], lr=0.1, momentum=0.5)
    for _ in range(2):  # constant gradient (1, 0): directions (1, 0), then 0.5 + 1
        opt.zero_grad()
        (w @ torch.tensor([3.0, 0.0], dtype=torch.float64)).backward()
        opt.step()
    assert w.detach().tolist() == pytest.approx([-0.1 - 0.15, 0.0])


def test_bad_arguments_are_rejected():
    p = [nn.Parameter(torch.ones(1))]
    with pytest.raises(ValueError, match="lr"):
        NormalizedGD(p, lr=0)
    with pytest.raises(ValueError, match="momentum"):
        BlockNormalizedGD(p, lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="blocks"):
        BlockNormalizedGD(p, lr=0.1, blocks="row")


def test_registry_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_optimizer("lion", _net(), 0.1)
    for name in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "ngd", "bngd"):
        assert name in str(err.value) and name in OPTIMIZERS


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_registered_optimizer_steps(name):
    model = _net()
    deltas, _ = _step(model, get_optimizer(name, model, 0.01), _loss(model))
    assert all(torch.isfinite(d).all() for d in deltas) and _norm(deltas) > 0


def test_momentum_variants_match_torch_sgd():
    a, b = _net(), _net()
    opt_a = get_optimizer("nesterov", a, 0.1)
    opt_b = torch.optim.SGD(b.parameters(), 0.1, momentum=0.9, nesterov=True)
    for _ in range(3):
        _step(a, opt_a, _loss(a))
        _step(b, opt_b, _loss(b))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


# --- update_profile -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sgd", "adam", "bngd"])
def test_update_profile_matches_a_manual_diff(name):
    model, ref = _net(), _net()
    prof = update_profile(model, get_optimizer(name, model, 0.05), _loss(model))
    deltas, grads = _step(ref, get_optimizer(name, ref, 0.05), _loss(ref))
    assert prof.layers == ["linears.0", "linears.1", "linears.2"]
    for l in range(3):
        w = _norm([p.detach() - d for p, d in zip(list(ref.parameters())[2 * l: 2 * l + 2], deltas[2 * l: 2 * l + 2])])
        assert prof.grad_norm[l] == pytest.approx(_norm(grads[2 * l: 2 * l + 2]), rel=1e-12)
        assert prof.update_norm[l] == pytest.approx(_norm(deltas[2 * l: 2 * l + 2]), rel=1e-9)
        assert prof.weight_norm[l] == pytest.approx(w, rel=1e-12)
        assert prof.ratio[l] == pytest.approx(prof.update_norm[l] / w, rel=1e-12)
    assert prof.loss == pytest.approx(float(_loss(_net())().detach()), rel=1e-12)
    if name == "sgd":  # SGD's update is lr times the gradient
        assert prof.update_norm == pytest.approx([0.05 * g for g in prof.grad_norm], rel=1e-9)


def test_update_profile_restore_and_nonfinite_loss():
    model = _net()
    before = copy.deepcopy(model.state_dict())
    prof = update_profile(model, get_optimizer("sgd", model, 0.1), _loss(model), restore=True)
    assert min(prof.update_norm) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="not finite"):
        update_profile(model, get_optimizer("sgd", model, 0.1), lambda: torch.tensor(float("nan")))


def test_update_profile_on_a_torch_module():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    X = torch.randn(5, 4)
    prof = update_profile(model, get_optimizer("sgd", model, 0.1), lambda: model(X).pow(2).mean())
    assert prof.layers == ["0", "2"] and all(math.isfinite(r) for r in prof.ratio)


# --- learning-rate schedules ------------------------------------------------------------------

def test_warmup_is_linear_then_constant():
    f = lr_schedule("constant", warmup=4)
    assert [f(t) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_schedule("constant")(0) == 1.0


def test_cosine_and_linear_decay_follow_their_formulas():
    f = lr_schedule("cosine", warmup=2, total=12, min_factor=0.1)
    for t in range(2, 15):
        s = min(t - 2, 10)
        assert f(t) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * s / 10)), abs=1e-15)
    g = lr_schedule("linear", total=10)
    assert [g(t) for t in (0, 5, 10, 20)] == pytest.approx([1.0, 0.5, 0.0, 0.0])


def test_step_decay():
    f = lr_schedule("step", warmup=1, step_size=3, gamma=0.5)
    assert [f(t) for t in range(8)] == pytest.approx([1.0, 1, 1, 1, 0.5, 0.5, 0.5, 0.25])


def test_schedule_errors():
    with pytest.raises(ValueError, match="valid names"):
        lr_schedule("exponential")
    with pytest.raises(ValueError, match="total"):
        lr_schedule("cosine", warmup=5, total=5)
    with pytest.raises(ValueError, match="step_size"):
        lr_schedule("step")
    with pytest.raises(ValueError, match="warmup"):
        lr_schedule(warmup=-1)


def test_make_scheduler_sets_the_learning_rate():
    model = _net()
    opt = get_optimizer("sgd", model, 0.4)
    sched = make_scheduler(opt, "constant", warmup=4)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])


# --- the training loop takes a built optimizer and a schedule ---------------------------------

def test_train_accepts_an_optimizer_and_a_schedule(mnist_small):
    X, y = mnist_small[0][:200], mnist_small[1][:200]
    seen = []
    model = MLP([784, 10, 10], seed=0)
    opt = get_optimizer("ngd", model, 0.5)
    res = train(model, X, y, epochs=1, batch_size=50, optimizer=opt, progress=False, eval_every_epoch=False,
                lr_schedule=lr_schedule("constant", warmup=4),
                callback=lambda step, m: seen.append(opt.param_groups[0]["lr"]))
    assert res.ok and len(res.loss) == 4
    assert seen == pytest.approx([0.25, 0.375, 0.5, 0.5])  # after step t: the lr of step t + 1, 0.5 (t + 2)/4
    # same runs by name and by instance
    a = train(MLP([784, 10, 10], seed=0), X, y, epochs=1, batch_size=50, lr=0.3, optimizer="momentum", progress=False)
    m = MLP([784, 10, 10], seed=0)
    b = train(m, X, y, epochs=1, batch_size=50, optimizer=get_optimizer("momentum", m, 0.3), progress=False)
    assert a.loss == b.loss
    with pytest.raises(ValueError, match="optimizer_kwargs"):
        train(m, X, y, optimizer=get_optimizer("sgd", m, 0.1), optimizer_kwargs=dict(momentum=0.5), progress=False)


def test_schedule_changes_the_steps(mnist_small):
    X, y = mnist_small[0][:200], mnist_small[1][:200]
    runs = [train(MLP([784, 10, 10], seed=0), X, y, epochs=1, batch_size=50, lr=0.5, progress=False,
                  lr_schedule=s) for s in (None, lr_schedule("constant", warmup=4))]
    assert runs[0].loss[0] == runs[1].loss[0] and runs[0].loss[1] != runs[1].loss[1]


def test_module_exports():
    for name in optim.__all__:
        assert hasattr(optim, name)
