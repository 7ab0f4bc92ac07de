"""Gradient diagnostics: agreement with the hand-written backward pass and with autograd, hook
hygiene, arbitrary torch models, and Nielsen's speed of learning."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from unstable_gradients.backprop import mlp_backward
from unstable_gradients.diagnostics import (
    default_layers,
    gradient_profile,
    learning_speed,
    parameter_grad_norms,
    weighted_layers,
)
from unstable_gradients.losses import get_loss
from unstable_gradients.models import MLP, SmallCNN, VanillaRNN


def _no_forward_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _mlp(activation="sigmoid"):
    return MLP([10, 8, 8, 8, 3], activation=activation, bias_std=1.0, seed=3).double()


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce_with_logits"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "linear"])
def test_profile_of_mlp_matches_mlp_backward(activation, loss):
    model = _mlp(activation)
    x = torch.randn(16, 10, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    ref = mlp_backward(model, x, y, loss=loss)

    prof = gradient_profile(model, x, y, loss=loss)

    assert prof.loss == pytest.approx(ref.loss, rel=1e-12)
    assert prof.layers == ["hidden1", "hidden2", "hidden3"]
    assert prof.output_grad == pytest.approx([float(g.norm()) for g in ref.outputs], rel=1e-10)
    assert prof.param_layers == ["linears.0", "linears.1", "linears.2", "linears.3"]
    for i, name in enumerate(prof.param_layers):
        assert prof.weight_grad[i] == pytest.approx(float(ref.params[f"{name}.weight"].norm()), rel=1e-10)
        assert prof.bias_grad[i] == pytest.approx(float(ref.params[f"{name}.bias"].norm()), rel=1e-10)
    # the .grad fields are left populated, and ratio() is first / last
    assert model.linears[0].weight.grad is not None
    assert prof.ratio() == pytest.approx(prof.output_grad[0] / prof.output_grad[-1])
    assert _no_forward_hooks(model)
    assert set(prof.as_dict()) == {"loss", "layers", "output_grad", "param_layers", "weight_grad", "bias_grad"}


def test_profile_zero_grad_flag():
    model = _mlp()
    x, y = torch.randn(4, 10, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    once = gradient_profile(model, x, y)
    fresh = gradient_profile(model, x, y)  # zero_grad=True: same numbers again
    assert fresh.weight_grad == pytest.approx(once.weight_grad, rel=1e-12)
    accumulated = gradient_profile(model, x, y, zero_grad=False)  # grads add up: twice the norm
    assert accumulated.weight_grad == pytest.approx([2 * w for w in once.weight_grad], rel=1e-10)


def test_hooks_removed_even_when_the_loss_raises():
    model = _mlp()
    keep = model.activations[0].register_forward_hook(lambda *a: None)  # the user's own hook survives

    def bad_loss(out, target):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        gradient_profile(model, torch.randn(2, 10, dtype=torch.float64), None, loss=bad_loss)
    assert len(model.activations[0]._forward_hooks) == 1
    keep.remove()
    assert _no_forward_hooks(model)


def test_hooks_removed_when_the_forward_raises():
    model = _mlp()
    with pytest.raises(RuntimeError):
        gradient_profile(model, torch.randn(2, 7, dtype=torch.float64), torch.tensor([0, 1]))
    assert _no_forward_hooks(model)


def test_profile_of_plain_sequential_uses_weighted_layers():
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    assert [n for n, _ in default_layers(model)] == ["0", "2", "4"]

    prof = gradient_profile(model, x, y, loss="cross_entropy")

    # autograd reference: de/dy_l for the outputs of the three Linear layers
    h0 = model[0](x)
    h0.retain_grad()
    h1 = model[2](model[1](h0))
    h1.retain_grad()
    h2 = model[4](model[3](h1))
    h2.retain_grad()
    get_loss("cross_entropy")(h2, y).backward()
    assert prof.layers == ["0", "2", "4"] == prof.param_layers
    assert prof.output_grad == pytest.approx([float(h.grad.norm()) for h in (h0, h1, h2)], rel=1e-10)
    # (the .grad fields now hold the profile's gradients plus the reference's: twice the norm)
    assert prof.weight_grad == pytest.approx([float(model[i].weight.grad.norm()) / 2 for i in (0, 2, 4)], rel=1e-10)
    assert _no_forward_hooks(model)


def test_profile_of_lstm_with_callable_loss():
    lstm = nn.LSTM(4, 6, batch_first=True).double()
    x = torch.randn(3, 5, 4, dtype=torch.float64)

    prof = gradient_profile(lstm, x, None, loss=lambda out, _t: (out**2).sum())

    with torch.no_grad():
        out, _ = lstm(x)
    assert prof.loss == pytest.approx(float((out**2).sum()), rel=1e-12)
    assert prof.output_grad == pytest.approx([float((2 * out).norm())], rel=1e-10)  # de/dout = 2 out
    assert len(prof.layers) == len(prof.param_layers) == 1
    lstm.zero_grad()
    (lstm(x)[0] ** 2).sum().backward()
    weights = [p.grad for n, p in lstm.named_parameters() if n.startswith("weight")]
    biases = [p.grad for n, p in lstm.named_parameters() if n.startswith("bias")]
    assert prof.weight_grad[0] == pytest.approx(float(torch.sqrt(sum((g**2).sum() for g in weights))), rel=1e-10)
    assert prof.bias_grad[0] == pytest.approx(float(torch.sqrt(sum((g**2).sum() for g in biases))), rel=1e-10)
    assert _no_forward_hooks(lstm)


def test_profile_layer_names_are_never_empty():
    lstm = nn.LSTM(4, 6, batch_first=True)
    prof = gradient_profile(lstm, torch.randn(3, 5, 4), None, loss=lambda out, _t: out.sum())
    assert all(prof.layers) and all(prof.param_layers)


def test_profile_with_explicit_layers_and_tuple_inputs():
    rnn = VanillaRNN(3, 5, 2, seed=0).double()
    x, h0 = torch.randn(4, 6, 3, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    prof = gradient_profile(rnn, (x, h0), torch.randn(4, 2, dtype=torch.float64), loss="mse",
                            layers=[("act", rnn.activation)])
    assert prof.layers == ["act"] and len(prof.output_grad) == 1
    assert weighted_layers(rnn) == [("VanillaRNN", rnn)]
    assert prof.param_layers == ["VanillaRNN"]


def test_profile_of_cnn_lists_conv_layers():
    model = SmallCNN(channels=(1, 2, 3), kernel_size=3, image_size=8, num_classes=4, seed=0)
    prof = gradient_profile(model, torch.randn(5, 64), torch.tensor([0, 1, 2, 3, 0]))
    assert prof.layers == ["conv1", "conv2"]
    assert prof.param_layers == ["convs.0", "convs.1", "classifier"]
    assert all(g > 0 for g in prof.output_grad)


def test_parameter_grad_norms_are_nan_without_grads():
    rows = parameter_grad_norms(nn.Sequential(nn.Linear(2, 2)))
    assert len(rows) == 1 and rows[0][0] == "0"
    assert all(v != v for v in rows[0][1:])  # nan


@pytest.mark.parametrize("loss", ["bce_with_logits", "cross_entropy"])
def test_learning_speed_is_the_norm_of_hidden_bias_gradients(loss):
    model = MLP([10, 6, 6, 6, 3], activation="sigmoid", bias_std=1.0, seed=5).double()
    x, y = torch.randn(20, 10, dtype=torch.float64), torch.randint(0, 3, (20,))

    speeds = learning_speed(model, x, y, loss=loss)

    # batch-mean loss, per-sample loss summed over output units (Nielsen's cross-entropy)
    o = model(x)
    if loss == "bce_with_logits":
        t = nn.functional.one_hot(y, 3).double()
        per_sample = -(t * torch.log(torch.sigmoid(o)) + (1 - t) * torch.log(1 - torch.sigmoid(o))).sum(1)
    else:
        per_sample = nn.functional.cross_entropy(o, y, reduction="none")
    model.zero_grad()
    per_sample.mean().backward()
    expected = [float(lin.bias.grad.norm()) for lin in model.linears[:-1]]
    assert len(speeds) == model.depth == 3
    assert speeds == pytest.approx(expected, rel=1e-10)
    assert _no_forward_hooks(model)


def test_learning_speed_default_loss_is_nielsens_cross_entropy():
    model = MLP([10, 6, 3], activation="sigmoid", bias_std=1.0, seed=5).double()
    x, y = torch.randn(20, 10, dtype=torch.float64), torch.randint(0, 3, (20,))
    ref = mlp_backward(model, x, y, loss="bce_with_logits")
    assert learning_speed(model, x, y) == pytest.approx([float(ref.params["linears.0.bias"].norm())], rel=1e-10)
