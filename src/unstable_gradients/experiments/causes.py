"""Experiments of Part 1, "Causes" (survey §1.3, seeds 001/003/004, Nielsen ch. 5)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..activations import get_activation
from ..backprop import rnn_bptt
from ..diagnostics import GradientProfile, gradient_profile, learning_speed
from ..models import MLP, SmallCNN, VanillaRNN, deep_mlp
from ..training import train

__all__ = ["autograd_comparison", "format_comparison", "backward_gain", "mlp_profile", "cnn_profile", "rnn_step_gradients", "chain_factors", "ChainResult",
           "nielsen_net", "nielsen_initial_speeds", "nielsen_training_speeds", "NIELSEN"]


def backward_gain(profile: GradientProfile) -> float:
    """Geometric-mean factor by which ||de/dx_l|| changes per layer going backwards
    (> 1: grows toward the input, i.e. explodes; < 1: vanishes)."""
    g = np.asarray(profile.output_grad, dtype=float)
    if len(g) < 2:
        return float("nan")
    return float(np.exp(np.mean(np.log(g[:-1] / g[1:]))))


def mlp_profile(X: Tensor, y: Tensor, depth: int = 10, width: int = 100, activation: str = "tanh",
                weight_std: float | None = None, init: str = "lecun_normal", gain: float = 1.0,
                seed: int = 0) -> GradientProfile:
    """Gradient profile of a fresh ``deep_mlp`` at initialisation.

    Weights: ``init`` scaled by ``gain`` (``lecun_normal`` with gain g has std g/sqrt(n_in)), or a
    fixed N(0, weight_std^2) whatever the width when ``weight_std`` is given (to isolate the
    number of summed terms, survey eq. 25). Biases zero.
    """
    if weight_std is not None:
        net = deep_mlp(depth, width, X.shape[1], int(y.max()) + 1, activation=activation, init="normal",
                       init_kwargs=dict(std=weight_std), seed=seed)
    else:
        net = deep_mlp(depth, width, X.shape[1], int(y.max()) + 1, activation=activation, init=init, seed=seed)
        with torch.no_grad():
            for lin in net.linears:
                lin.weight.mul_(gain)
    return gradient_profile(net, X, y)


def cnn_profile(X: Tensor, y: Tensor, num_layers: int = 3, maps: int = 8, kernel_size: int = 3,
                weight_std: float = 0.1, activation: str = "tanh", seed: int = 0) -> GradientProfile:
    """Gradient profile of a ``SmallCNN`` whose kernels are N(0, weight_std^2): the sum in eq. 11
    has kernel_size^2 x maps terms per input pixel."""
    net = SmallCNN([1] + [maps] * num_layers, kernel_size=kernel_size, activation=activation, init="normal",
                   init_kwargs=dict(std=weight_std), seed=seed)
    return gradient_profile(net, X, y)


def rnn_step_gradients(steps: int = 30, hidden: int = 32, w_hh_scale: float = 1.0, activation: str = "tanh",
                       batch: int = 64, seed: int = 0) -> np.ndarray:
    """||de/dh_t|| for t = 0 .. steps-1 (BPTT, eq. 17) of a random ``VanillaRNN`` on Gaussian
    inputs, with W_hh orthogonal times ``w_hh_scale`` (its spectral radius). The loss depends on
    the last output only, so the curve shows how the gradient decays or grows back in time."""
    gen = torch.Generator().manual_seed(seed)
    net = VanillaRNN(8, hidden, 1, activation=activation, recurrent_init="orthogonal",
                     recurrent_kwargs=dict(gain=w_hh_scale), seed=seed)
    x = torch.randn(batch, steps, 8, generator=gen)
    target = torch.randn(batch, 1, generator=gen)
    g = rnn_bptt(net, x, target, loss="mse")
    return np.array([float(d.norm()) for d in g.outputs])


@dataclass
class ChainResult:
    """One-neuron-per-layer chains (seed 003, seed 004 eq. 5.1-5.4).

    ``factors``: |w_l sigma'(z_l)| for l = 2..L of every sampled chain, shape (chains, L-1);
    ``grad_b1``: |dC/db_1| per chain, computed by autograd; ``product``: the same from the
    product formula dC/db_1 = sigma'(z_1) prod_{l>=2} w_l sigma'(z_l) dC/da_L.
    """

    factors: np.ndarray
    grad_b1: np.ndarray
    product: np.ndarray
    depth: int
    activation: str
    extra: dict = field(default_factory=dict)


def chain_factors(depth: int = 5, chains: int = 10_000, activation: str = "sigmoid", weight_std: float = 1.0,
                  seed: int = 0) -> ChainResult:
    """Sample ``chains`` random one-neuron chains of ``depth`` layers with N(0, weight_std^2)
    weights and N(0, 1) biases and input, cost C = (a_L - y)^2 / 2 with y = 0."""
    gen = torch.Generator().manual_seed(seed)
    act = get_activation(activation)
    w = torch.randn(chains, depth, generator=gen, dtype=torch.float64) * weight_std
    b = torch.randn(chains, depth, generator=gen, dtype=torch.float64).requires_grad_(True)
    a = torch.randn(chains, generator=gen, dtype=torch.float64)
    zs = []
    for l in range(depth):
        z = w[:, l] * a + b[:, l]
        zs.append(z)
        a = act(z)
    cost = 0.5 * (a**2).sum()
    (grad_b,) = torch.autograd.grad(cost, b)
    with torch.no_grad():
        d = torch.stack([act.derivative(z) for z in zs], 1)
        factors = (w[:, 1:] * d[:, 1:]).abs()
        product = (d[:, 0] * (w[:, 1:] * d[:, 1:]).prod(1) * a).abs()
    return ChainResult(factors.numpy(), grad_b[:, 0].abs().numpy(), product.numpy(), depth, activation)


#: Nielsen's setup (NNDL ch. 5 and ``fig/generate_gradient.py``): first 1,000 training images,
#: sigmoid units, cross-entropy cost, weights N(0, 1/n_in), biases N(0, 1); full-batch SGD
#: (mini-batch 1,000), eta = 0.1, lambda = 5.0 (L2 term lambda/(2n) sum w^2 with n = 1,000).
NIELSEN = dict(images=1000, width=30, lr=0.1, batch_size=1000, lmbda=5.0, epochs=500)


def nielsen_net(hidden_layers: int, seed: int, width: int = NIELSEN["width"], activation: str = "sigmoid") -> MLP:
    """Nielsen's ``network2.Network([784] + [30] * hidden_layers + [10])`` with its default init
    (weights N(0, 1/n_in), biases N(0, 1)); ``width`` and ``activation`` vary it."""
    return MLP([784] + [width] * hidden_layers + [10], activation=activation, init="lecun_normal",
               bias_std=1.0, seed=seed)


def nielsen_initial_speeds(X: Tensor, y: Tensor, hidden_layers: int, seeds: range | list[int],
                           width: int = NIELSEN["width"], activation: str = "sigmoid") -> np.ndarray:
    """Speed of learning (||dC/db_l|| of each hidden layer) at initialisation, one row per seed."""
    rows = [learning_speed(nielsen_net(hidden_layers, s, width, activation).double(), X.double(), y,
                           loss="bce_with_logits") for s in seeds]
    return np.array(rows)


def nielsen_training_speeds(X: Tensor, y: Tensor, hidden_layers: int, seed: int = 0,
                            epochs: int = NIELSEN["epochs"]) -> tuple[np.ndarray, list[float]]:
    """Speed of learning of each hidden layer before each epoch of Nielsen's training run.

    Returns (array of shape (epochs, hidden_layers), per-epoch training cost)."""
    net = nielsen_net(hidden_layers, seed)
    res = train(net, X, y, epochs=epochs, batch_size=NIELSEN["batch_size"], lr=NIELSEN["lr"],
                loss="bce_with_logits", l2=NIELSEN["lmbda"] / len(X), seed=seed, record_grads_every=1,
                eval_every_epoch=False, progress=False, on_divergence="raise")
    names = [f"linears.{i}" for i in range(hidden_layers)]
    return np.array([res.bias_grad_norms[n] for n in names]).T, res.epoch_loss


def autograd_comparison(model, x: Tensor, target: Tensor, loss: str) -> list[dict]:
    """Run the hand-written backward pass that matches ``model`` (MLP: eq. 3-6, SmallCNN:
    eq. 10-13, VanillaRNN: eq. 17-20) and autograd on the same batch; one row per gradient with
    both norms and the largest elementwise difference."""
    from ..backprop import cnn_backward, mlp_backward

    model.zero_grad(set_to_none=True)
    if isinstance(model, VanillaRNN):
        hand = rnn_bptt(model, x, target, loss)
        out, hidden = model(x, return_hidden=True)
        states = hidden[1:]
        labels = [f"de/dh_{t}" for t in range(len(states))]
    else:
        hand = (mlp_backward if isinstance(model, MLP) else cnn_backward)(model, x, target, loss)
        watched = model.hidden_modules()
        states = []
        handles = [m.register_forward_hook(lambda _m, _i, o: states.append(o)) for _, m in watched]
        out = model(x)
        for h in handles:
            h.remove()
        labels = [f"de/dx_{i + 1}" for i in range(len(states))]
    for s in states:
        s.retain_grad()
    from ..losses import get_loss

    get_loss(loss)(out, target).backward()
    rows = [dict(quantity=lab, hand=float(h.norm()), autograd=float(s.grad.norm()),
                 max_abs_diff=float((h - s.grad).abs().max()))
            for lab, h, s in zip(labels, hand.outputs, states)]
    for name, p in model.named_parameters():
        if name in hand.params:
            g = hand.params[name]
            rows.append(dict(quantity=f"de/d{name}", hand=float(g.norm()), autograd=float(p.grad.norm()),
                             max_abs_diff=float((g - p.grad).abs().max())))
    return rows


def format_comparison(rows: list[dict], atol: float = 1e-12) -> str:
    """Rows of ``autograd_comparison`` as a fixed-width table; norms to 6 significant digits and
    the difference shown only as within/outside ``atol`` (so the printout is machine-independent)."""
    lines = [f"{'gradient':<22}{'hand-written':>14}{'autograd':>14}   agree (|diff| < {atol:g})"]
    for r in rows:
        lines.append(f"{r['quantity']:<22}{r['hand']:>14.6g}{r['autograd']:>14.6g}   {r['max_abs_diff'] < atol}")
    return "\n".join(lines)
