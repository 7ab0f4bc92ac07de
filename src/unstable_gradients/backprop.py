"""Hand-written backward passes that implement the survey's gradient equations.

Each function runs the forward pass itself, keeps the intermediate values, and then walks back
through the equations of survey §1.1-1.2. They exist to be read next to the equations and to be
checked against autograd (``tests/test_backprop.py``); training uses autograd.

- ``mlp_backward``: fully connected, eq. 3-6.
- ``conv2d_backward`` / ``cnn_backward``: stride-1 valid convolution, eq. 10-13.
- ``rnn_bptt``: back-propagation through time with the single shared W_hh, eq. 17-20.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .losses import get_loss
from .models import MLP, SmallCNN, VanillaRNN

__all__ = ["Gradients", "mlp_backward", "conv2d_backward", "cnn_backward", "rnn_bptt"]


@dataclass
class Gradients:
    """Result of a hand-written backward pass.

    ``outputs``: de/dx for each hidden output (layer or time step), in forward order.
    ``params``: de/dp for each named parameter, keyed as in ``model.named_parameters()``
    (activation parameters such as PReLU slopes included).
    """

    loss: float
    outputs: list[Tensor] = field(default_factory=list)
    params: dict[str, Tensor] = field(default_factory=dict)


@torch.no_grad()
def mlp_backward(model: MLP, x: Tensor, target: Tensor, loss: str = "cross_entropy") -> Gradients:
    """Gradients of an ``MLP`` by survey eq. 3-6.

    de/dx_{l-1} = W_l^T (de/dx_l (.) sigma'(y_l))        (eq. 3; elementwise eq. 4)
    de/dW_l     = (de/dx_l (.) sigma'(y_l)) x_{l-1}^T    (eq. 5)
    de/db_l     =  de/dx_l (.) sigma'(y_l)               (eq. 6)
    Rows of ``x`` are samples, so each product is summed over the batch.
    """
    if len(getattr(model, "norms", ())):
        raise ValueError("mlp_backward implements eq. 3-6 of the plain MLP; this one is normalised "
                         f"(norm={model.config.get('norm')!r}): use autograd")
    if any(not act.elementwise for act in model.activations):
        raise ValueError("mlp_backward implements eq. 3-6 for elementwise activations; maxout is not one")
    lossf = get_loss(loss)
    x = x.flatten(1)
    xs, ys = [x], []
    for linear, act in zip(model.linears[:-1], model.activations):
        ys.append(linear(xs[-1]))
        xs.append(act(ys[-1]))
    out = model.linears[-1](xs[-1])
    if model.output_activation is not None:
        raise ValueError("mlp_backward expects an MLP without output_activation (the loss takes logits)")
    delta = lossf.grad(out, target)  # de/dy_L
    grads = Gradients(loss=float(lossf(out, target)))
    n = len(model.linears)
    grads.params[f"linears.{n - 1}.weight"] = delta.T @ xs[-1]
    if model.linears[-1].bias is not None:
        grads.params[f"linears.{n - 1}.bias"] = delta.sum(0)
    dx = delta @ model.linears[-1].weight  # de/dx_{L-1}
    outputs = [dx] if n > 1 else []
    for l in range(n - 2, -1, -1):
        for pname, g in model.activations[l].parameter_grads(ys[l], dx).items():  # e.g. PReLU slopes
            grads.params[f"activations.{l}.{pname}"] = g
        delta = dx * model.activations[l].derivative(ys[l])  # de/dy_l, eq. 21
        grads.params[f"linears.{l}.weight"] = delta.T @ xs[l]  # eq. 5
        if model.linears[l].bias is not None:  # absent with MLP(bias=False)
            grads.params[f"linears.{l}.bias"] = delta.sum(0)  # eq. 6
        dx = delta @ model.linears[l].weight  # eq. 3
        if l > 0:
            outputs.append(dx)
    grads.outputs = outputs[::-1]
    return grads


def conv2d_backward(x: Tensor, kernel: Tensor, grad_y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Backward of a stride-1 valid cross-correlation Y = K * X + b (survey eq. 9), by eq. 10-13.

    ``x``: (batch, M, H, W); ``kernel``: (N, M, k, k); ``grad_y`` = de/dY: (batch, N, H-k+1, W-k+1).
    Returns (de/dX, de/dK, de/db):

    de/dX^(m)_{i,j} = sum_n sum_{u,v} pad(de/dY^(n))_{i+u, j+v} K^(m,n)_{k-1-u, k-1-v}
        -- the "full" convolution with the flipped kernel (eq. 10-11);
    de/dK^(m,n)_{u,v} = sum_{i,j} de/dY^(n)_{i,j} X^(m)_{i+u, j+v}   (eq. 12);
    de/db_n = sum_{i,j} de/dY^(n)_{i,j}                              (eq. 13).
    Sums also run over the batch for K and b. Written as loops over the k*k kernel offsets.
    """
    k = kernel.shape[-1]
    h_out, w_out = grad_y.shape[-2:]
    padded = F.pad(grad_y, (k - 1, k - 1, k - 1, k - 1))
    flipped = kernel.flip(-1, -2)
    grad_x = x.new_zeros(x.shape)
    grad_k = kernel.new_zeros(kernel.shape)
    for u in range(k):
        for v in range(k):
            window = padded[:, :, u : u + x.shape[-2], v : v + x.shape[-1]]
            grad_x += torch.einsum("bnij,nm->bmij", window, flipped[:, :, u, v])
            grad_k[:, :, u, v] = torch.einsum("bnij,bmij->nm", grad_y, x[:, :, u : u + h_out, v : v + w_out])
    return grad_x, grad_k, grad_y.sum(dim=(0, 2, 3))


@torch.no_grad()
def cnn_backward(model: SmallCNN, x: Tensor, target: Tensor, loss: str = "cross_entropy") -> Gradients:
    """Gradients of a ``SmallCNN``: eq. 3-6 for the classifier, eq. 10-13 for each conv layer."""
    if len(getattr(model, "norms", ())):
        raise ValueError("cnn_backward implements eq. 10-13 of the plain SmallCNN; this one is normalised "
                         f"(norm={model.config.get('norm')!r}): use autograd")
    lossf = get_loss(loss)
    if x.dim() == 2:
        x = x.reshape(-1, *model.image_shape)
    xs, ys = [x], []
    for conv, act in zip(model.convs, model.activations):
        ys.append(conv(xs[-1]))
        xs.append(act(ys[-1]))
    out = model.classifier(xs[-1].flatten(1))
    delta = lossf.grad(out, target)
    grads = Gradients(loss=float(lossf(out, target)))
    grads.params["classifier.weight"] = delta.T @ xs[-1].flatten(1)
    grads.params["classifier.bias"] = delta.sum(0)
    dx = (delta @ model.classifier.weight).reshape(xs[-1].shape)
    outputs = [dx]
    for l in range(len(model.convs) - 1, -1, -1):
        for pname, g in model.activations[l].parameter_grads(ys[l], dx).items():
            grads.params[f"activations.{l}.{pname}"] = g
        dy = dx * model.activations[l].derivative(ys[l])  # eq. 21 for maps
        dx, dk, db = conv2d_backward(xs[l], model.convs[l].weight, dy)
        grads.params[f"convs.{l}.weight"] = dk
        if model.convs[l].bias is not None:  # absent with SmallCNN(bias=False)
            grads.params[f"convs.{l}.bias"] = db
        if l > 0:
            outputs.append(dx)
    grads.outputs = outputs[::-1]
    return grads


@torch.no_grad()
def rnn_bptt(model: VanillaRNN, x: Tensor, target: Tensor, loss: str = "mse", h0: Tensor | None = None) -> Gradients:
    """BPTT for a many-to-one ``VanillaRNN`` (the loss depends on the last output only), eq. 17-20.

    de/dh_{t-1} = W_hh^T (de/dh_t (.) sigma'(y_t))                 (eq. 17; elementwise eq. 18)
    de/dW_hh    = sum_t (de/dh_t (.) sigma'(y_t)) h_{t-1}^T         (eq. 20)
    de/dW_xh    = sum_t (de/dh_t (.) sigma'(y_t)) x_t^T             (eq. 19)
    ``outputs[t]`` is de/dh for the state after input t (t = 0 .. T-1, the survey's h_0 .. h_{T-1}).
    """
    if not model.many_to_one:
        raise ValueError("rnn_bptt implements the survey's many-to-one case; build the RNN with many_to_one=True")
    if getattr(model, "normalized", False):
        raise ValueError("rnn_bptt implements eq. 17-20 of the plain VanillaRNN; this one is normalised "
                         f"(norm={model.config.get('norm')!r}): use autograd")
    lossf = get_loss(loss)
    batch, steps, _ = x.shape
    hs = [h0 if h0 is not None else x.new_zeros(batch, model.hidden_size)]
    ys = []
    for t in range(steps):
        ys.append(x[:, t] @ model.W_xh.T + hs[-1] @ model.W_hh.T + model.b_h)
        hs.append(model.activation(ys[-1]))
    out = hs[-1] @ model.W_ho.T + model.b_o
    d_out = lossf.grad(out, target)
    grads = Gradients(loss=float(lossf(out, target)))
    grads.params["W_ho"] = d_out.T @ hs[-1]
    grads.params["b_o"] = d_out.sum(0)
    dh = d_out @ model.W_ho
    g_xh, g_hh, g_b = torch.zeros_like(model.W_xh), torch.zeros_like(model.W_hh), torch.zeros_like(model.b_h)
    dhs = [None] * steps
    for t in range(steps - 1, -1, -1):
        dhs[t] = dh
        delta = dh * model.activation.derivative(ys[t])
        g_xh += delta.T @ x[:, t]
        g_hh += delta.T @ hs[t]
        g_b += delta.sum(0)
        dh = delta @ model.W_hh
    grads.params.update(W_xh=g_xh, W_hh=g_hh, b_h=g_b)
    grads.outputs = dhs
    return grads
