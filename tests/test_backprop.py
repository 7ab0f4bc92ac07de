"""The hand-written backward passes (survey eq. 3-6, 10-13, 17-20) against autograd, in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unstable_gradients.activations import activation_names, get_activation
from unstable_gradients.backprop import cnn_backward, conv2d_backward, mlp_backward, rnn_bptt
from unstable_gradients.losses import get_loss
from unstable_gradients.models import MLP, SmallCNN, VanillaRNN

ATOL = 1e-10
ELEMENTWISE = [n for n in activation_names() if get_activation(n).elementwise]
LOSSES = ["cross_entropy", "mse", "bce_with_logits"]


def _target(loss: str, batch: int, classes: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    if loss == "mse":  # real-valued regression targets
        return torch.randn(batch, classes, generator=g, dtype=torch.float64)
    return torch.randint(0, classes, (batch,), generator=g)  # class labels (one-hot for bce)


def _autograd_with_hidden(model, modules, x, target, loss):
    """Autograd reference: parameter grads plus de/d(output) of each module in ``modules``."""
    hidden = []

    def keep(_m, _i, out):
        out.retain_grad()
        hidden.append(out)

    handles = [m.register_forward_hook(keep) for m in modules]
    try:
        model.zero_grad(set_to_none=True)
        value = get_loss(loss)(model(x), target)
        value.backward()
    finally:
        for h in handles:
            h.remove()
    return value, [h.grad for h in hidden]


def _assert_params_close(grads, model, names):
    assert set(names) <= set(grads.params)
    for name in names:
        p = dict(model.named_parameters())[name]
        torch.testing.assert_close(grads.params[name], p.grad, atol=ATOL, rtol=0, msg=lambda m: f"{name}: {m}")


# ---------------------------------------------------------------------------------------------
# MLP, eq. 3-6
# ---------------------------------------------------------------------------------------------


def _mlp(activation: str, sizes=(6, 7, 5, 5, 4)) -> MLP:
    # bias_std=1 so biases (and negative pre-activations) matter; lecun init keeps units unsaturated
    return MLP(list(sizes), activation=activation, bias_std=1.0, seed=11).double()


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ELEMENTWISE)
def test_mlp_backward_matches_autograd(activation, loss):
    model = _mlp(activation)
    x = torch.randn(8, 6, dtype=torch.float64)
    y = _target(loss, 8, 4)
    grads = mlp_backward(model, x, y, loss=loss)
    value, hidden = _autograd_with_hidden(model, list(model.activations), x, y, loss)

    assert grads.loss == pytest.approx(value.item(), rel=1e-12)
    _assert_params_close(grads, model, [n for n, _ in model.linears.named_parameters(prefix="linears")])
    # outputs: de/dx_l for the hidden layers 1..L-1, forward order
    assert len(grads.outputs) == model.depth == 3
    for l, (ours, ref) in enumerate(zip(grads.outputs, hidden), start=1):
        assert ours.shape == ref.shape == (8, model.sizes[l])
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0, msg=lambda m: f"hidden{l}: {m}")


@pytest.mark.parametrize(
    "depth",
    [
        pytest.param(0, id="no_hidden"),
        pytest.param(1, id="one_hidden"),
    ],
)
def test_mlp_backward_shallow_nets(depth):
    model = _mlp("tanh", sizes=[6] + [5] * depth + [3])
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 2, 1, 2])
    grads = mlp_backward(model, x, y)
    _autograd_with_hidden(model, [], x, y, "cross_entropy")
    _assert_params_close(grads, model, [n for n, _ in model.named_parameters()])
    assert len(grads.outputs) == depth  # one entry per hidden layer, none for the input


def test_mlp_backward_flattens_image_input():
    model = _mlp("sigmoid", sizes=(16, 5, 3))
    x, y = torch.randn(4, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    grads = mlp_backward(model, x, y)
    _autograd_with_hidden(model, [], x, y, "cross_entropy")
    _assert_params_close(grads, model, [n for n, _ in model.named_parameters()])


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_backward_covers_prelu_slopes(kind):
    if kind == "mlp":
        model, backward = _mlp("prelu"), mlp_backward
        x, y = torch.randn(8, 6, dtype=torch.float64), _target("cross_entropy", 8, 4)
    else:
        model = SmallCNN(channels=(2, 3), kernel_size=3, image_size=6, num_classes=4, activation="prelu",
                         seed=0).double()
        backward = cnn_backward
        x, y = torch.randn(8, 2, 6, 6, dtype=torch.float64), _target("cross_entropy", 8, 4)
    grads = backward(model, x, y)
    _autograd_with_hidden(model, [], x, y, "cross_entropy")
    assert set(grads.params) == {n for n, _ in model.named_parameters()}
    _assert_params_close(grads, model, [n for n, _ in model.named_parameters()])


def test_mlp_backward_rejects_maxout():
    model = MLP([6, 4, 3], activation="maxout", seed=0)
    with pytest.raises(ValueError, match="maxout"):
        mlp_backward(model, torch.randn(2, 6), torch.tensor([0, 1]))


def test_mlp_backward_rejects_output_activation():
    model = MLP([6, 4, 3], activation="tanh", output_activation="sigmoid", seed=0)
    with pytest.raises(ValueError, match="output_activation"):
        mlp_backward(model, torch.randn(2, 6), torch.tensor([0, 1]))


def test_mlp_backward_does_not_touch_param_grads():
    model = _mlp("tanh")
    mlp_backward(model, torch.randn(3, 6, dtype=torch.float64), torch.tensor([0, 1, 2]))
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Convolution, eq. 10-13
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 4], ids=lambda k: f"k{k}")
def test_conv2d_backward_matches_torch(k):
    b, m, n, h, w = 3, 4, 5, 9, 7  # non-square images catch swapped axes
    x = torch.randn(b, m, h, w, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(n, m, k, k, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(n, dtype=torch.float64, requires_grad=True)
    grad_y = torch.randn(b, n, h - k + 1, w - k + 1, dtype=torch.float64)

    gx, gk, gb = conv2d_backward(x.detach(), kernel.detach(), grad_y)

    torch.testing.assert_close(gx, torch.nn.grad.conv2d_input(x.shape, kernel.detach(), grad_y), atol=ATOL, rtol=0)
    torch.testing.assert_close(gk, torch.nn.grad.conv2d_weight(x.detach(), kernel.shape, grad_y), atol=ATOL, rtol=0)
    (F.conv2d(x, kernel, bias) * grad_y).sum().backward()
    torch.testing.assert_close(gx, x.grad, atol=ATOL, rtol=0)
    torch.testing.assert_close(gk, kernel.grad, atol=ATOL, rtol=0)
    torch.testing.assert_close(gb, bias.grad, atol=ATOL, rtol=0)
    assert gx.shape == x.shape and gk.shape == kernel.shape and gb.shape == (n,)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus"])
def test_cnn_backward_matches_autograd(activation, loss):
    model = SmallCNN(channels=(2, 3, 4), kernel_size=3, image_size=8, num_classes=5,
                     activation=activation, seed=2).double()
    with torch.no_grad():  # non-zero biases
        for conv in model.convs:
            conv.bias.normal_(0, 0.5)
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    y = _target(loss, 4, 5)
    grads = cnn_backward(model, x, y, loss=loss)
    value, hidden = _autograd_with_hidden(model, list(model.activations), x, y, loss)

    assert grads.loss == pytest.approx(value.item(), rel=1e-12)
    expected = {n for n, _ in model.named_parameters()}
    assert set(grads.params) == expected
    _assert_params_close(grads, model, sorted(expected))
    assert len(grads.outputs) == len(model.convs)
    for ours, ref in zip(grads.outputs, hidden):
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_cnn_backward_accepts_flat_input():
    model = SmallCNN(channels=(1, 2), kernel_size=3, image_size=6, num_classes=3, activation="tanh", seed=0).double()
    x, y = torch.randn(2, 36, dtype=torch.float64), torch.tensor([0, 2])
    grads = cnn_backward(model, x, y)
    _autograd_with_hidden(model, [], x, y, "cross_entropy")
    _assert_params_close(grads, model, [n for n, _ in model.named_parameters()])


# ---------------------------------------------------------------------------------------------
# RNN, BPTT eq. 17-20
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "softsign"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["h0_zero", "h0_given"])
def test_rnn_bptt_matches_autograd(activation, loss, with_h0):
    model = VanillaRNN(3, 5, 2, activation=activation, recurrent_init="orthogonal", seed=4).double()
    with torch.no_grad():
        model.b_h.normal_(0, 0.5)
        model.b_o.normal_(0, 0.5)
    batch, steps = 4, 6
    x = torch.randn(batch, steps, 3, dtype=torch.float64)
    y = _target(loss, batch, 2)
    h0 = torch.randn(batch, 5, dtype=torch.float64) if with_h0 else None

    grads = rnn_bptt(model, x, y, loss=loss, h0=h0)

    model.zero_grad(set_to_none=True)
    out, hidden = model(x, h0=h0, return_hidden=True)
    assert len(hidden) == steps + 1
    for h in hidden[1:]:
        h.retain_grad()
    value = get_loss(loss)(out, y)
    value.backward()

    assert grads.loss == pytest.approx(value.item(), rel=1e-12)
    assert set(grads.params) == {n for n, _ in model.named_parameters()}
    _assert_params_close(grads, model, ["W_xh", "W_hh", "b_h", "W_ho", "b_o"])
    assert len(grads.outputs) == steps
    for t in range(steps):  # outputs[t] = de/dh after input t = hidden[t + 1]
        torch.testing.assert_close(grads.outputs[t], hidden[t + 1].grad, atol=ATOL, rtol=0)


def test_rnn_bptt_requires_many_to_one():
    model = VanillaRNN(3, 4, 2, many_to_one=False, seed=0)
    with pytest.raises(ValueError, match="many_to_one"):
        rnn_bptt(model, torch.randn(2, 3, 3), torch.randn(2, 2))
