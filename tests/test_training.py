"""The training loop: determinism, learning on a small MNIST subset, gradient recording, divergence
detection (forward and backward), argument checks, and ``first_nonfinite_layer``."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from unstable_gradients.losses import get_loss
from unstable_gradients.models import MLP
from unstable_gradients.training import (
    OPTIMIZERS,
    Divergence,
    TrainingDiverged,
    evaluate,
    first_nonfinite_layer,
    train,
)


@pytest.fixture
def data(mnist_small):
    X, y = mnist_small
    return X[:500], y[:500]


def _net(activation="sigmoid", sizes=(784, 20, 10), seed=1):
    return MLP(list(sizes), activation=activation, seed=seed)


def test_same_seed_gives_identical_losses(data):
    X, y = data
    runs = [train(_net(), X, y, epochs=1, batch_size=50, lr=1.0, seed=3, progress=False) for _ in range(2)]
    assert len(runs[0].loss) == 10
    assert runs[0].loss == runs[1].loss  # bit-identical
    assert runs[0].steps == list(range(10))
    other = train(_net(), X, y, epochs=1, batch_size=50, lr=1.0, seed=4, progress=False)
    assert other.loss != runs[0].loss  # the data order depends on the seed


def test_loss_decreases_on_mnist_subset(mnist_small):
    X, y = mnist_small
    res = train(_net(), X, y, epochs=3, batch_size=50, lr=3.0, seed=0, progress=False,
                test_data=(X[:200], y[:200]))
    assert res.ok and res.diverged is None
    assert res.epochs == [1, 2, 3]
    assert res.epoch_loss[0] > res.epoch_loss[1] > res.epoch_loss[2]
    assert res.epoch_loss[-1] < 0.5 * math.log(10) < res.loss[0]  # chance level is ln 10 = 2.30
    assert res.train_acc[-1] > 0.8
    assert len(res.test_loss) == len(res.test_acc) == 3
    # epoch_loss is the sample-weighted mean of the step losses
    assert res.epoch_loss[0] == pytest.approx(sum(res.loss[:20]) / 20, rel=1e-6)


def test_record_grads_every(data):
    X, y = data
    model = _net()
    initial = copy.deepcopy(model)
    res = train(model, X, y, epochs=1, batch_size=25, lr=0.5, seed=2, progress=False, record_grads_every=5)
    assert res.grad_steps == [0, 5, 10, 15]
    assert list(res.grad_norms) == list(res.bias_grad_norms) == ["linears.0", "linears.1"]
    for series in (*res.grad_norms.values(), *res.bias_grad_norms.values()):
        assert len(series) == 4 and all(math.isfinite(v) and v > 0 for v in series)
    # step 0's norms are those of the first mini-batch's gradient at the initial weights
    idx = torch.randperm(len(X), generator=torch.Generator().manual_seed(2))[:25]
    get_loss("cross_entropy")(initial(X[idx]), y[idx]).backward()
    for i, name in enumerate(["linears.0", "linears.1"]):
        assert res.grad_norms[name][0] == pytest.approx(float(initial.linears[i].weight.grad.norm()), rel=1e-5)
        assert res.bias_grad_norms[name][0] == pytest.approx(float(initial.linears[i].bias.grad.norm()), rel=1e-5)


def test_no_grads_recorded_by_default(data):
    res = train(_net(), *data, epochs=1, batch_size=250, progress=False, eval_every_epoch=False)
    assert res.grad_steps == [] and res.grad_norms == {} and res.train_acc == []


def test_l2_penalty_is_part_of_the_loss(data):
    X, y = data
    model = _net()
    initial = copy.deepcopy(model)
    res = train(model, X, y, epochs=1, batch_size=100, lr=0.1, l2=0.01, seed=0, progress=False)
    idx = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))[:100]
    penalty = 0.5 * 0.01 * sum((lin.weight**2).sum() for lin in initial.linears)  # weights only
    expected = get_loss("cross_entropy")(initial(X[idx]), y[idx]) + penalty
    assert res.loss[0] == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_optimizer_trains(data, optimizer):
    lr = 0.5 if optimizer in ("sgd", "momentum") else 0.01
    res = train(_net(), *data, epochs=1, batch_size=50, lr=lr, optimizer=optimizer, seed=0, progress=False,
                eval_every_epoch=False)
    assert res.ok and len(res.loss) == 10 and all(math.isfinite(v) for v in res.loss)


def test_momentum_accepts_its_coefficient(data):
    res = train(_net(), *data, epochs=1, batch_size=100, lr=0.1, optimizer="momentum",
                optimizer_kwargs=dict(momentum=0.5), progress=False)
    assert res.ok


# ---------------------------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------------------------


def test_nan_weight_diverges_at_step_zero_in_that_layer(data):
    model = _net("tanh", sizes=(784, 16, 16, 10))
    with torch.no_grad():
        model.linears[1].weight[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="linears.1"):
        res = train(model, *data, epochs=1, batch_size=50, progress=False)
    assert isinstance(res.diverged, Divergence) and not res.ok
    assert (res.diverged.step, res.diverged.epoch) == (0, 0)
    assert res.diverged.layer == "linears.1" and res.diverged.where == "output"
    assert math.isnan(res.diverged.loss)
    assert res.loss == []


def test_huge_weights_overflow_in_the_first_layer_that_reaches_inf(data):
    model = _net("relu", sizes=(784, 16, 16, 16, 10))
    with torch.no_grad():  # x2 ~ 1e30 is still finite in float32; x3 ~ 1e60 is not
        model.linears[1].weight.mul_(1e30)
        model.linears[2].weight.mul_(1e30)
    assert first_nonfinite_layer(model, data[0][:50]) == "linears.2"
    with pytest.warns(RuntimeWarning, match="diverged at step 0"):
        res = train(model, *data, epochs=1, batch_size=50, progress=False)
    assert res.diverged.layer == "linears.2" and res.diverged.where == "output"


def test_divergence_step_is_counted_across_epochs(data):
    X, y = data

    def poison(step, model):  # after the optimiser step of step 12, the weights turn nan
        if step == 12:
            with torch.no_grad():
                model.linears[1].weight.fill_(float("nan"))

    with pytest.warns(RuntimeWarning):
        res = train(_net(), X, y, epochs=3, batch_size=50, progress=False, callback=poison)
    # 10 steps per epoch: step 13 is the 4th step of the second epoch
    assert (res.diverged.step, res.diverged.epoch) == (13, 1)
    assert res.diverged.layer == "linears.1"
    assert len(res.loss) == 13 and res.epochs == [1]


def test_non_finite_gradient_with_finite_forward_names_the_layer(data):
    """Forward finite, gradient overflows: de/dW_0 = (W_2 W_1)^T delta x^T ~ 1e20 * 1e25 > float32 max."""
    X, y = data
    model = _net("linear", sizes=(784, 16, 16, 10))
    with torch.no_grad():
        model.linears[0].weight.mul_(1e-25)  # W_0 x stays O(1) for x ~ 1e25
        model.linears[1].weight.mul_(1e20)  # logits ~ 1e20: finite
    assert first_nonfinite_layer(model, X[:50] * 1e25) is None
    with pytest.warns(RuntimeWarning, match="gradient"):
        res = train(model, X * 1e25, y, epochs=1, batch_size=50, progress=False)
    assert res.diverged.step == 0
    assert res.diverged.layer == "linears.0" and res.diverged.where == "gradient"
    assert math.isfinite(res.diverged.loss)


class SqrtAbs(nn.Module):
    """sqrt(|x|): finite everywhere, but its derivative at 0 is infinite."""

    def forward(self, x):
        return x.abs().sqrt()


def test_gradient_divergence_names_where_the_backward_pass_broke(data):
    """A zero pre-activation before sqrt|.| makes the backward signal nan from layer '2' down to the
    input: layers '0' and '2' both get non-finite gradients, and the first to break (backward runs
    output-first) is '2'; the output layer '4' stays finite."""
    model = nn.Sequential(nn.Linear(784, 8), nn.Tanh(), nn.Linear(8, 8), SqrtAbs(), nn.Linear(8, 10))
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.zero_()
    with pytest.warns(RuntimeWarning, match="gradient"):
        res = train(model, *data, epochs=1, batch_size=50, progress=False)
    assert not torch.isfinite(model[0].weight.grad).all() and not torch.isfinite(model[2].weight.grad).all()
    assert torch.isfinite(model[4].weight.grad).all()
    assert (res.diverged.step, res.diverged.layer, res.diverged.where) == (0, "2", "gradient")


def test_overflowing_loss_is_not_reported_as_a_gradient(data):
    X, _ = data
    model = _net("linear", sizes=(784, 16, 10))
    with torch.no_grad():
        model.linears[1].weight.mul_(1e21)  # outputs ~ 1e20: finite; 0.5 * o^2 ~ 1e40: inf in float32
    with pytest.warns(RuntimeWarning):
        res = train(model, X, torch.zeros(len(X), 10), loss="mse", epochs=1, batch_size=50, progress=False)
    assert res.diverged.layer == "loss"
    assert res.diverged.where != "gradient"


def test_on_divergence_raise(data):
    model = _net()
    with torch.no_grad():
        model.linears[0].bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged) as err:
        train(model, *data, epochs=1, batch_size=50, progress=False, on_divergence="raise")
    div = err.value.divergence
    assert isinstance(div, Divergence) and div.step == 0 and div.layer == "linears.0"
    assert "linears.0" in str(err.value) and isinstance(err.value, RuntimeError)


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(on_divergence="ignore"), "on_divergence"),
        (dict(batch_size=0), "batch_size"),
        (dict(epochs=-1), "epochs"),
        (dict(lr=0.0), "lr"),
    ],
    ids=["on_divergence", "batch_size", "epochs", "lr"],
)
def test_bad_arguments_raise(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(_net(), *data, progress=False, **kwargs)


def test_length_mismatch_raises(data):
    X, y = data
    with pytest.raises(ValueError, match="rows"):
        train(_net(), X, y[:-1], progress=False)


def test_unknown_optimizer_lists_valid_names(data):
    with pytest.raises(ValueError) as err:
        train(_net(), *data, optimizer="lbfgs-ish", progress=False)
    for name in OPTIMIZERS:
        assert name in str(err.value)


def test_zero_epochs_leaves_the_model_alone(data):
    model = _net()
    before = copy.deepcopy(model.state_dict())
    res = train(model, *data, epochs=0, progress=False)
    assert res.loss == [] and res.epochs == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------
# evaluate, first_nonfinite_layer
# ---------------------------------------------------------------------------------------------


def test_evaluate_matches_direct_computation(data):
    X, y = data
    model = _net()
    model.train()
    loss, acc = evaluate(model, X, y, batch_size=128)  # several uneven batches
    with torch.no_grad():
        out = model(X)
    assert loss == pytest.approx(float(get_loss("cross_entropy")(out, y)), rel=1e-5)
    assert acc == pytest.approx(float((out.argmax(1) == y).double().mean()))
    assert model.training  # mode restored
    _, nan_acc = evaluate(model, X, torch.zeros(len(X), 10), loss="mse")
    assert math.isnan(nan_acc)


def test_first_nonfinite_layer_on_a_finite_model():
    model = _net()
    assert first_nonfinite_layer(model, torch.rand(4, 784)) is None
    assert all(not m._forward_hooks for m in model.modules())


def test_first_nonfinite_layer_nan_input_is_caught_in_the_first_layer():
    x = torch.rand(4, 784)
    x[0, 3] = float("nan")
    assert first_nonfinite_layer(_net(), x) == "linears.0"


def test_first_nonfinite_layer_uses_execution_order_not_registration_order():
    class Reversed(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Linear(4, 4)  # registered first, runs second
            self.early = nn.Linear(4, 4)

        def forward(self, x):
            return self.late(torch.tanh(self.early(x)))

    model = Reversed()
    with torch.no_grad():
        model.late.weight.fill_(float("nan"))
    assert first_nonfinite_layer(model, torch.randn(2, 4)) == "late"
    with torch.no_grad():
        model.early.bias.fill_(float("inf"))
    assert first_nonfinite_layer(model, torch.randn(2, 4)) == "early"
    assert all(not m._forward_hooks for m in model.modules())

