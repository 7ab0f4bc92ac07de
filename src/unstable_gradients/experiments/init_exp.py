"""Experiments of survey §2.2.1, parameter initialisation (eq. 30-41).

Notation (the survey's, after Glorot & Bengio 2010): a net of ``L`` weight layers; layer ``l`` has
``n_l`` units and ``W_l`` is an ``n_l x n_{l-1}`` matrix, so its fan-in is ``n_{l-1}`` and its
fan-out ``n_l``; biases are zero; ``y_l = W_l x_{l-1}`` and ``x_l = f(y_l)``. For zero-mean weights
independent of their inputs (the survey's assumptions)

- forward, survey eq. 30 (Glorot & Bengio eq. 5; He et al. 2015 eq. 7-9)::

      E[y_l^2] = n_{l-1} Var[W_l] E[x_{l-1}^2],   E[x_l^2] = c_f E[y_l^2]

- backward, survey eq. 31 (Glorot & Bengio eq. 6; He et al. eq. 11-13)::

      E[(de/dx_{l-1})^2] = n_l Var[W_l] c_b E[(de/dx_l)^2]

- weights (Glorot & Bengio eq. 2, 7)::  E[(de/dW_l)^2] = E[x_{l-1}^2] c_b E[(de/dx_l)^2]  per example,

with ``c_f = E[f(y)^2] / E[y^2]`` and ``c_b = E[f'(y)^2]``: 1 and 1 for a linear unit (and for tanh
in its linear regime near 0), 1/2 and 1/2 for ReLU (He et al. §2.2), (1 + a^2)/2 for a leaky
ReLU of slope ``a``. For zero-mean inputs E[x^2] = Var[x]. For a linear net the forward and
backward recursions hold *exactly* in expectation over the weights (``de/dy_l`` then depends only
on the weights above layer l); for ReLU the backward one assumes, as He et al. do, that the mask
f'(y_l) is independent of the gradient arriving from above.

Where the notation departs: He et al. write ``n_l`` for the fan-in of layer l (our ``n_{l-1}``)
and ``n̂_l`` for its fan-out (our ``n_l``). The forward recursion here tracks the pre-activation
``y_l`` (as He et al. eq. 9 do); in the linear regime ``y_l = x_l`` and it is the survey's eq. 30.

What is here: the predicted and the measured per-layer profiles (``predicted_profile``,
``measure_profile``), the per-layer gains and their sampling error (``layer_gains``), the
weight-gradient variance against depth (eq. 32, ``weight_grad_vs_depth``), the per-layer
statistics of Glorot & Bengio's Fig. 6-8 (``glorot_layer_stats``), and the deep ReLU nets of
He et al.'s 22- and 30-layer comparison (``relu_net``, ``homogeneity_ratio``, ``train_relu``).
Left out on purpose: convolutional nets (the MLP keeps the CPU budget; eq. 30-41 are the same with
n = k^2 c) and PReLU (chapter "activations").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..activations import get_activation
from ..init import INITIALIZERS, init_std
from ..losses import get_loss
from ..models import MLP, deep_mlp
from ..utils import lookup

__all__ = [
    "INIT_ARMS", "arm", "activation_factors", "weight_variances", "VarianceProfile", "predicted_profile",
    "measure_profile", "compare_profile", "layer_gains", "GainEstimate", "weight_grad_vs_depth", "DepthSweep", "LayerStats",
    "glorot_layer_stats", "histograms", "relu_net", "homogeneity_ratio", "init_grad_norms", "SideBySide",
    "train_side_by_side", "ReluRuns", "train_relu", "steps_to_loss", "running_mean", "format_gain_rows",
]

#: The initialisations the chapter compares: arm name -> (initialiser of ``init.INITIALIZERS``, kwargs).
#: ``standard`` is survey eq. 32 (and PyTorch's default for ``nn.Linear`` weights); ``xavier`` the
#: normalised init of survey eq. 35 (uniform, Glorot & Bengio eq. 16); ``he_fan_in`` and
#: ``he_fan_out`` survey eq. 40 (Gaussian, std sqrt(2/n)); ``lecun`` N(0, 1/n_in); ``orthogonal``
#: Saxe et al. 2014.
INIT_ARMS: dict[str, tuple[str, dict]] = {
    "standard": ("standard_uniform", {}),
    "xavier": ("xavier_uniform", {}),
    "xavier_normal": ("xavier_normal", {}),
    "lecun": ("lecun_normal", {}),
    "he_fan_in": ("he_normal", {"mode": "fan_in"}),
    "he_fan_out": ("he_normal", {"mode": "fan_out"}),
    "orthogonal": ("orthogonal", {}),
}


def arm(name: str) -> tuple[str, dict]:
    """``(initialiser name, kwargs)`` of an arm of ``INIT_ARMS``; an unknown name lists the valid ones."""
    init, kw = lookup(INIT_ARMS, name, "initialisation arm")
    return init, dict(kw)


def activation_factors(activation: str, **activation_kwargs) -> tuple[float, float]:
    """``(c_f, c_b)`` = (E[f(y)^2] / E[y^2], E[f'(y)^2]) for a symmetric, zero-mean y.

    Exact for ``linear`` (1, 1), ``relu`` (1/2, 1/2; He et al. 2015, §2.2) and ``leaky_relu``
    ((1 + a^2)/2 both). Any other activation gets its linear-regime value f'(0)^2 for both (exact
    only as y -> 0; 1 for tanh, the survey's "derivative equal to 1" assumption of eq. 30-31).
    """
    if activation == "relu":
        return 0.5, 0.5
    if activation == "leaky_relu":
        a = float(activation_kwargs.get("negative_slope", get_activation("leaky_relu").negative_slope))
        return (1 + a * a) / 2, (1 + a * a) / 2
    act = get_activation(activation, **activation_kwargs)
    d0 = float(act.derivative(torch.zeros(1, dtype=torch.float64))[0]) ** 2
    return d0, d0


def weight_variances(widths: Sequence[int], init: str, **init_kwargs) -> np.ndarray:
    """Var[W_l] for l = 1..L of a net with layer sizes ``widths = [n_0, ..., n_L]`` (``init.init_std``)."""
    widths = _check_widths(widths)
    return np.array([init_std(init, (n_out, n_in), **init_kwargs) ** 2 for n_in, n_out in zip(widths[:-1], widths[1:])])


def _check_widths(widths: Sequence[int]) -> list[int]:
    widths = [int(n) for n in widths]
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths needs at least two layer sizes, all >= 1; got {widths}")
    return widths


@dataclass
class VarianceProfile:
    """Per-layer second moments of one net (measured: mean over ``seeds`` nets; predicted: formulas).

    ``forward[l-1]`` = E[y_l^2] for l = 1..L (pre-activations); ``activation[l-1]`` = E[x_l^2];
    ``backward[l]`` = E[(de/dx_l)^2] for l = 0..L (``backward[L]`` is the top gradient);
    ``weight_grad[l-1]`` = E[(de/dW_l)^2] for one example. ``per_seed`` holds the same arrays for
    each net (shape (seeds, ...)) when measured, to estimate sampling errors.
    """

    widths: list[int]
    init: str
    activation: str
    forward: np.ndarray
    activation_sq: np.ndarray
    backward: np.ndarray
    weight_grad: np.ndarray
    per_seed: dict[str, np.ndarray] = field(default_factory=dict)
    input_sq: float = 1.0
    top_sq: float = 1.0

    @property
    def depth(self) -> int:
        return len(self.widths) - 1


def predicted_profile(widths: Sequence[int], init: str, activation: str = "linear", *, input_sq: float = 1.0,
                      top_sq: float = 1.0, init_kwargs: dict | None = None,
                      activation_kwargs: dict | None = None) -> VarianceProfile:
    """The profile survey eq. 30-31 predict (the recursions in the module docstring).

    ``input_sq`` = E[x_0^2]; ``top_sq`` = E[(de/dx_L)^2]. The top layer has the activation too
    (the measured nets of ``measure_profile`` apply f to every layer, x_L included).
    """
    widths = _check_widths(widths)
    var_w = weight_variances(widths, init, **(init_kwargs or {}))
    cf, cb = activation_factors(activation, **(activation_kwargs or {}))
    L = len(widths) - 1
    fwd, act = np.empty(L), np.empty(L)
    x_sq = input_sq
    for l in range(1, L + 1):
        fwd[l - 1] = widths[l - 1] * var_w[l - 1] * x_sq  # eq. 30, one layer
        act[l - 1] = x_sq = cf * fwd[l - 1]
    bwd = np.empty(L + 1)
    bwd[L] = top_sq
    for l in range(L, 0, -1):
        bwd[l - 1] = widths[l] * var_w[l - 1] * cb * bwd[l]  # eq. 31, one layer
    x_prev = np.concatenate([[input_sq], act[:-1]])
    wgrad = x_prev * cb * bwd[1:]
    return VarianceProfile(widths, init, activation, fwd, act, bwd, wgrad, input_sq=input_sq, top_sq=top_sq)


def measure_profile(widths: Sequence[int], init: str, activation: str = "linear", *, batch: int = 512,
                    seeds: int | Sequence[int] = 4, init_kwargs: dict | None = None,
                    activation_kwargs: dict | None = None, dtype: torch.dtype = torch.float64,
                    inputs: Tensor | None = None) -> VarianceProfile:
    """Measure E[y_l^2], E[x_l^2], E[(de/dx_l)^2] and E[(de/dW_l)^2] at initialisation.

    For each seed s a net x_l = f(W_l x_{l-1}) (no biases, f on every layer) gets weights from
    ``init`` (drawn with ``torch.Generator().manual_seed(s)``); the inputs are ``inputs`` or
    N(0, 1) draws (``batch x n_0``) and the top gradient de/dx_L is an independent N(0, 1) matrix
    G (the loss is e = sum(G * x_L)), so E[x_0^2] = E[G^2] = 1 up to sampling. The weight gradient
    of the batch is a sum over examples whose cross terms have mean zero (G is independent across
    examples), so its mean square divided by ``batch`` estimates the per-example E[(de/dW_l)^2].
    Returned moments are means over seeds (``per_seed`` keeps each net's).
    """
    widths = _check_widths(widths)
    seeds = range(seeds) if isinstance(seeds, int) else list(seeds)
    if len(seeds) < 1 or batch < 1:
        raise ValueError("need at least one seed and batch >= 1")
    init_fn = lookup(INITIALIZERS, init, "initializer")
    act = get_activation(activation, **(activation_kwargs or {}))
    rows: dict[str, list] = {k: [] for k in ("forward", "activation_sq", "backward", "weight_grad", "input_sq", "top_sq")}
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s))
        Ws = [init_fn(torch.empty(n_out, n_in, dtype=dtype), generator=gen, **(init_kwargs or {})).requires_grad_(True)
              for n_in, n_out in zip(widths[:-1], widths[1:])]
        x0 = (inputs.to(dtype) if inputs is not None else torch.randn(batch, widths[0], generator=gen, dtype=dtype))
        x0 = x0.clone().requires_grad_(True)
        n = x0.shape[0]
        G = torch.randn(n, widths[-1], generator=gen, dtype=dtype)
        xs, ys, x = [x0], [], x0
        for W in Ws:
            y = x @ W.T
            x = act(y)
            y.retain_grad()
            x.retain_grad()
            ys.append(y)
            xs.append(x)
        (x * G).sum().backward()
        with torch.no_grad():
            rows["forward"].append([float((y**2).mean()) for y in ys])
            rows["activation_sq"].append([float((x**2).mean()) for x in xs[1:]])
            rows["backward"].append([float((x.grad**2).mean()) for x in xs])
            rows["weight_grad"].append([float((W.grad**2).mean()) / n for W in Ws])
            rows["input_sq"].append(float((x0**2).mean()))
            rows["top_sq"].append(float((G**2).mean()))
    per_seed = {k: np.array(v) for k, v in rows.items()}
    return VarianceProfile(widths, init, activation, per_seed["forward"].mean(0), per_seed["activation_sq"].mean(0),
                           per_seed["backward"].mean(0), per_seed["weight_grad"].mean(0), per_seed=per_seed,
                           input_sq=float(per_seed["input_sq"].mean()), top_sq=float(per_seed["top_sq"].mean()))


def compare_profile(widths: Sequence[int], init_arm: str, activation: str = "linear", *, seeds: int = 4,
                    batch: int = 512) -> tuple[VarianceProfile, VarianceProfile]:
    """(measured, predicted) profiles of an arm of ``INIT_ARMS``; the prediction starts from the
    measured E[x_0^2] and E[(de/dx_L)^2], so that only the per-layer factors are compared."""
    init, kw = arm(init_arm)
    m = measure_profile(widths, init, activation, batch=batch, seeds=seeds, init_kwargs=kw)
    p = predicted_profile(widths, init, activation, input_sq=m.input_sq, top_sq=m.top_sq, init_kwargs=kw)
    return m, p


@dataclass(frozen=True)
class GainEstimate:
    """A per-layer gain: the geometric mean over layers and seeds of the measured ratios, its
    relative standard error (sd of log(measured / predicted ratio) over the ratios, / sqrt(count)),
    and the predicted value (geometric mean of the predicted ratios)."""

    measured: float
    rel_se: float
    predicted: float
    count: int

    @property
    def rel_error(self) -> float:
        return self.measured / self.predicted - 1


def layer_gains(measured: VarianceProfile, predicted: VarianceProfile | None = None) -> dict[str, GainEstimate]:
    """Per-layer gains of the forward pass (E[y_l^2] / E[y_{l-1}^2], l = 2..L) and of the backward
    pass (E[(de/dx_{l-1})^2] / E[(de/dx_l)^2], l = 1..L), each as a ``GainEstimate``.

    Ratios are taken net by net and layer by layer; the estimate is their geometric mean and the
    prediction the geometric mean of the predicted ratios over the same layers (``predicted``
    defaults to ``predicted_profile`` of the same widths, init and activation; pass one built with
    the same ``init_kwargs`` when the init takes any).
    """
    predicted = predicted or predicted_profile(measured.widths, measured.init, measured.activation)
    fwd = measured.per_seed["forward"]
    bwd = measured.per_seed["backward"]
    pairs = {
        "forward": (np.log(fwd[:, 1:] / fwd[:, :-1]), np.log(predicted.forward[1:] / predicted.forward[:-1])),
        "backward": (np.log(bwd[:, :-1] / bwd[:, 1:]), np.log(predicted.backward[:-1] / predicted.backward[1:])),
    }
    out = {}
    for key, (logs, pred) in pairs.items():
        flat = logs.ravel()
        resid = (logs - pred).ravel()  # the layers' predicted gains differ when the widths do
        se = float(resid.std(ddof=1) / math.sqrt(resid.size)) if resid.size > 1 else float("nan")
        out[key] = GainEstimate(float(np.exp(flat.mean())), se, float(np.exp(pred.mean())), int(flat.size))
    return out


def format_gain_rows(rows: dict[str, dict[str, GainEstimate]]) -> str:
    """``{label: layer_gains(...)}`` as a fixed-width table: predicted and measured gains per layer
    (4 significant digits) and the relative standard error of each measurement."""
    lines = [f"{'net':<30}{'forward: eq.':>13}{'measured':>10}{'± se':>8}{'backward: eq.':>15}{'measured':>10}{'± se':>8}"]
    for label, g in rows.items():
        f, b = g["forward"], g["backward"]
        lines.append(f"{label:<30}{f.predicted:>13.4g}{f.measured:>10.4g}{f.rel_se:>8.1%}"
                     f"{b.predicted:>15.4g}{b.measured:>10.4g}{b.rel_se:>8.1%}")
    return "\n".join(lines)


@dataclass
class DepthSweep:
    """Per-example weight-gradient variance E[(de/dW_l)^2] against the number of layers L (eq. 32).

    ``measured[i, s, l]``: net of ``depths[i]`` layers, seed s, layer l (nan beyond that net's
    depth); ``predicted[i]``: the formula's value (the same for every layer of a square net)."""

    depths: list[int]
    width: int
    init: str
    activation: str
    measured: np.ndarray
    predicted: np.ndarray

    def layer_mean(self) -> np.ndarray:
        """Mean over seeds and layers, one value per depth."""
        return np.nanmean(self.measured, axis=(1, 2))

    def factor_per_layer(self) -> tuple[float, float]:
        """(measured, predicted) factor by which adding one layer multiplies the weight-gradient
        variance: exp of the least-squares slope of log(variance) against L."""
        d = np.asarray(self.depths, dtype=float)
        return float(np.exp(np.polyfit(d, np.log(self.layer_mean()), 1)[0])), float(np.exp(np.polyfit(d, np.log(self.predicted), 1)[0]))


def weight_grad_vs_depth(depths: Sequence[int], width: int = 256, init: str = "standard_uniform",
                         activation: str = "linear", batch: int = 512, seeds: int = 4,
                         init_kwargs: dict | None = None) -> DepthSweep:
    """``measure_profile`` of square nets (all ``width`` units, input included) of each depth:
    the weight-gradient variance of every layer. For a linear net with the standard init the
    prediction is (1/3)^(L-1) E[x_0^2] E[(de/dy_L)^2] in every layer (survey eq. 32)."""
    depths = [int(d) for d in depths]
    L_max = max(depths)
    measured = np.full((len(depths), seeds, L_max), np.nan)
    predicted = np.empty(len(depths))
    for i, L in enumerate(depths):
        widths = [width] * (L + 1)
        prof = measure_profile(widths, init, activation, batch=batch, seeds=seeds, init_kwargs=init_kwargs)
        measured[i, :, :L] = prof.per_seed["weight_grad"]
        predicted[i] = predicted_profile(widths, init, activation, init_kwargs=init_kwargs).weight_grad.mean()
    return DepthSweep(depths, width, init, activation, measured, predicted)


# --- Glorot & Bengio 2010, Fig. 6-8: per-layer distributions in a deep tanh net -----------------


@dataclass
class LayerStats:
    """Values of one forward/backward pass of an ``MLP`` at initialisation, per hidden layer.

    ``activations[l]``: the hidden outputs x_{l+1} (after the activation), flattened;
    ``backprop[l]``: the back-propagated gradients de/dy_{l+1} with respect to that layer's
    pre-activations (Glorot & Bengio's dCost/ds); ``weight_grad[l]``: de/dW_{l+1} of the batch.
    Arrays are float64 numpy. ``loss``: the batch loss.
    """

    activations: list[np.ndarray]
    backprop: list[np.ndarray]
    weight_grad: list[np.ndarray]
    loss: float

    def std(self, kind: str) -> np.ndarray:
        """Standard deviation of each hidden layer's values of ``kind`` (``activations``,
        ``backprop`` or ``weight_grad``)."""
        return np.array([v.std() for v in getattr(self, kind)])


def glorot_layer_stats(net: MLP, X: Tensor, y: Tensor, loss: str = "cross_entropy") -> LayerStats:
    """One pass of ``net`` on ``(X, y)``, recording every hidden layer's activations, the gradient
    with respect to its pre-activations and its weight gradient (Glorot & Bengio 2010, Fig. 6, 7, 8;
    their eq. 2 propagates dCost/ds, s the pre-activations). ``X`` is cast to the net's dtype."""
    if not isinstance(net, MLP):
        raise TypeError(f"glorot_layer_stats needs an MLP, got {type(net).__name__}")
    dtype = next(net.parameters()).dtype
    pre: list[Tensor] = []
    post: list[Tensor] = []

    def keep_pre(_module, _inputs, out: Tensor) -> None:
        out.retain_grad()
        pre.append(out)

    hooks = [lin.register_forward_hook(keep_pre) for lin in net.linears[:-1]]
    hooks += [a.register_forward_hook(lambda _m, _i, out: post.append(out)) for a in net.activations]
    net.zero_grad(set_to_none=True)
    try:
        value = get_loss(loss)(net(X.to(dtype)), y)
        value.backward()
    finally:
        for h in hooks:
            h.remove()
    as_np = lambda t: t.detach().double().numpy().ravel()  # noqa: E731
    return LayerStats([as_np(x) for x in post], [as_np(s.grad) for s in pre],
                      [as_np(lin.weight.grad) for lin in net.linears[:-1]], float(value.detach()))


def histograms(values: Sequence[np.ndarray], bins: int = 101, limit: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised histograms (densities) of several arrays on shared bins over [-limit, limit]
    (``limit``: the largest |value| when not given). Returns (bin centres, densities (n, bins))."""
    if limit is None:
        limit = max(float(np.abs(v).max()) for v in values)
    edges = np.linspace(-limit, limit, bins + 1)
    dens = np.array([np.histogram(np.clip(v, -limit, limit), bins=edges, density=True)[0] for v in values])
    return (edges[:-1] + edges[1:]) / 2, dens


# --- He et al. 2015, §2.2: deep ReLU nets, "Xavier" vs He --------------------------------------


def relu_net(layers: int, init: str, width: int = 100, seed: int = 0, in_features: int = 784,
             out_features: int = 10, dtype: torch.dtype = torch.float32) -> MLP:
    """A plain ReLU MLP with ``layers`` weight layers (``layers - 1`` hidden layers of ``width``
    units and the affine output layer), biases zero, weights from the arm ``init`` of ``INIT_ARMS``
    (or an initialiser name of ``init.INITIALIZERS``)."""
    if layers < 2:
        raise ValueError(f"layers must be >= 2 (one hidden layer and the output layer), got {layers}")
    name, kw = arm(init) if init in INIT_ARMS else (init, {})
    return deep_mlp(layers - 1, width, in_features, out_features, activation="relu", init=name, init_kwargs=kw,
                    seed=seed).to(dtype)


def homogeneity_ratio(layers: int, init: str = "xavier_normal", reference: str = "he_fan_in", width: int = 100,
                      seed: int = 0, inputs: Tensor | None = None, out_features: int | None = None) -> tuple[float, float]:
    """(measured, predicted) ratio std(output of the ``init`` net) / std(output of the
    ``reference`` net), both ``relu_net(layers, ..., seed=seed)`` in float64, at initialisation.

    The inputs are ``inputs`` (their width sets the input layer) or 256 N(0, 1) rows of ``width``
    values; ``out_features`` defaults to ``width`` (a square net) or 10 with ``inputs``. Both nets
    draw the same standard-normal numbers (same seed), so every weight of one is a fixed multiple
    of the other's; ReLU is positively homogeneous and the biases are zero, hence the output ratio
    is exactly the product over layers of the two initialisers' std ratios (the prediction). For
    Xavier against He on a square net that is 2^(-L/2): He et al.'s "1/sqrt(2)^L" (their §2.2).
    Both initialisers must be Gaussian (``xavier_normal``, ``lecun``, ``he_*``).
    """
    if inputs is None:
        gen = torch.Generator().manual_seed(seed + 10_000)
        inputs = torch.randn(256, width, generator=gen, dtype=torch.float64)
    n_in = inputs.shape[1]
    n_out = out_features or (width if n_in == width and out_features is None and inputs.shape[0] == 256 else 10)
    outs, stds = {}, {}
    for name in (init, reference):
        net = relu_net(layers, name, width, seed, in_features=n_in, out_features=n_out, dtype=torch.float64)
        with torch.no_grad():
            outs[name] = net(inputs.double())
        i_name, kw = arm(name) if name in INIT_ARMS else (name, {})
        stds[name] = np.array([init_std(i_name, tuple(lin.weight.shape), **kw) for lin in net.linears])
    return float(outs[init].std() / outs[reference].std()), float(np.prod(stds[init] / stds[reference]))


def init_grad_norms(layers: int, init: str, X: Tensor, y: Tensor, width: int = 100, seed: int = 0) -> dict[str, np.ndarray | float]:
    """At initialisation, in float64: std of the logits, and ||de/dW_l|| of every layer
    (input side first) for cross-entropy on ``(X, y)``."""
    net = relu_net(layers, init, width, seed, in_features=X.shape[1], dtype=torch.float64)
    out = net(X.double())
    get_loss("cross_entropy")(out, y).backward()
    return dict(logit_std=float(out.detach().std()),
                weight_grad=np.array([float(lin.weight.grad.norm()) for lin in net.linears]))


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing running mean along the last axis (the first ``window - 1`` entries average what
    there is so far)."""
    values = np.asarray(values, dtype=float)
    c = np.cumsum(values, axis=-1)
    out = c.copy()
    out[..., window:] = c[..., window:] - c[..., :-window]
    counts = np.minimum(np.arange(1, values.shape[-1] + 1), window)
    return out / counts


@dataclass
class SideBySide:
    """What ``train_side_by_side`` returns, one row per net: ``loss`` (nets x steps; the mean
    cross-entropy of each mini-batch, nan from a divergence on), ``diverged`` (the first step at
    which the loss or a gradient was not finite, or -1), ``test_acc`` (nan without test data or
    after a divergence)."""

    loss: np.ndarray
    diverged: np.ndarray
    test_acc: np.ndarray


def _stacked(nets: Sequence[MLP]) -> tuple[list[Tensor], list[Tensor], object]:
    sizes = {tuple(n.sizes) for n in nets}
    kinds = {(n.config["activation"], n.config["norm"], n.config["output_activation"], n.config["bias"]) for n in nets}
    if len(sizes) != 1 or len(kinds) != 1 or next(iter(kinds))[1:] != (None, None, True):
        raise ValueError("train_side_by_side needs plain MLPs (no norm, no output activation, biases on) of one "
                         f"shape and activation; got sizes {sorted(sizes)} and settings {sorted(map(str, kinds))}")
    Ws = [torch.stack([n.linears[l].weight.detach() for n in nets]).transpose(1, 2).contiguous().requires_grad_(True)
          for l in range(len(nets[0].linears))]
    bs = [torch.stack([n.linears[l].bias.detach() for n in nets]).unsqueeze(1).contiguous().requires_grad_(True)
          for l in range(len(nets[0].linears))]
    return Ws, bs, nets[0].activations[0] if len(nets[0].activations) else None


def _forward(Ws: list[Tensor], bs: list[Tensor], act, x: Tensor) -> Tensor:
    """x: (nets, batch, n_0) -> logits (nets, batch, n_L); eq. 1-2 for every net at once."""
    for l, (W, b) in enumerate(zip(Ws, bs)):
        x = torch.baddbmm(b, x, W)
        if l < len(Ws) - 1:
            x = act(x)
    return x


def train_side_by_side(nets: Sequence[MLP], X: Tensor, y: Tensor, seeds: Sequence[int], *, lrs: Sequence[float],
                       epochs: int = 6, batch_size: int = 100, momentum: float = 0.9,
                       test_data: tuple[Tensor, Tensor] | None = None) -> SideBySide:
    """Train several MLPs of one shape at once, as one batched computation (``torch.baddbmm``).

    Net i is trained exactly as ``training.train(nets[i], X, y, optimizer="momentum",
    lr=lrs[i], seed=seeds[i], batch_size=batch_size, epochs=epochs)`` would train it — the same
    mini-batch order (a ``torch.randperm`` per epoch from ``Generator().manual_seed(seeds[i])``),
    mean cross-entropy, SGD with momentum — up to floating-point rounding; it is just several times
    faster for the small, deep nets of this chapter, whose cost is per-layer overhead. Different
    learning rates share one optimiser: each net's loss is weighted by lrs[i] / lrs[0], which for
    SGD with momentum (linear in the gradient, no weight decay) is the same as its own rate.
    The nets themselves are not modified (their weights are copied).
    """
    if not (len(nets) == len(seeds) == len(lrs)) or not nets:
        raise ValueError(f"need one seed and one learning rate per net: {len(nets)} nets, {len(seeds)} seeds, {len(lrs)} lrs")
    if min(lrs) <= 0 or batch_size < 1 or epochs < 0:
        raise ValueError("need learning rates > 0, batch_size >= 1 and epochs >= 0")
    Ws, bs, act = _stacked(nets)
    dtype = Ws[0].dtype
    X, S, n = X.to(dtype), len(nets), len(X)
    weight = torch.tensor([lr / lrs[0] for lr in lrs], dtype=dtype)
    opt = torch.optim.SGD(Ws + bs, lr=lrs[0], momentum=momentum)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    steps = epochs * math.ceil(n / batch_size)
    loss = np.full((S, steps), np.nan)
    diverged = np.full(S, -1)
    alive = torch.ones(S, dtype=torch.bool)
    step = 0
    for _ in range(epochs):
        orders = [torch.randperm(n, generator=g) for g in gens]
        for i in range(0, n, batch_size):
            idx = torch.stack([o[i : i + batch_size] for o in orders])
            opt.zero_grad(set_to_none=True)
            out = _forward(Ws, bs, act, X[idx])
            per = torch.nn.functional.cross_entropy(out.flatten(0, 1), y[idx].flatten(), reduction="none")
            per = per.view(S, -1).mean(1)
            alive_before = alive & torch.isfinite(per).detach()
            torch.where(alive_before, per * weight, torch.zeros_like(per)).sum().backward()
            # as ``training.train``: a non-finite loss or gradient ends a net's run (here: freezes it)
            grads_ok = torch.stack([torch.isfinite(p.grad).flatten(1).all(1) for p in Ws + bs]).all(0)
            for j in torch.nonzero(alive & ~(alive_before & grads_ok)).flatten().tolist():
                diverged[j] = step
            alive &= alive_before & grads_ok
            for p in Ws + bs:  # a diverged net gets no update
                p.grad[~alive] = 0
            opt.step()
            loss[:, step] = np.where(alive.numpy(), per.detach().numpy(), np.nan)
            step += 1
    acc = np.full(S, np.nan)
    if test_data is not None:
        with torch.no_grad():
            Xt, yt = test_data
            pred = _forward(Ws, bs, act, Xt.to(dtype).expand(S, -1, -1)).argmax(-1)
            acc = np.where(alive.numpy(), (pred == yt).double().mean(1).numpy(), np.nan)
    return SideBySide(loss, diverged, acc)


@dataclass
class ReluRuns:
    """Training runs of one (depth, init, learning rate) arm over seeds: ``loss`` (seeds x steps,
    nan after a divergence), ``final_loss`` (mean over the last tenth of the steps) and
    ``test_acc`` (one per seed, nan if diverged), ``diverged`` (step of divergence or -1 per
    seed) and the setting."""

    layers: int
    init: str
    lr: float
    loss: np.ndarray
    test_acc: np.ndarray
    final_loss: np.ndarray
    diverged: np.ndarray
    setting: dict


def train_relu(layers: int, arms: Sequence[tuple[str, float]], X: Tensor, y: Tensor, *, seeds: Sequence[int] = (0, 1, 2),
               width: int = 100, epochs: int = 6, batch_size: int = 100, momentum: float = 0.9,
               test_data: tuple[Tensor, Tensor] | None = None) -> dict[tuple[str, float], ReluRuns]:
    """Train ``relu_net(layers, init, width, seed)`` for every ``(init, lr)`` of ``arms`` and every
    seed, with SGD + momentum 0.9 (He et al.'s optimiser), mini-batches of ``batch_size``, a
    constant learning rate and cross-entropy on ``(X, y)``; the seed fixes both the weights and the
    mini-batch order, so all arms of one seed start from the same random numbers. All nets train
    side by side (``train_side_by_side``). Returns ``{(init, lr): ReluRuns}``."""
    arms = [(str(a), float(lr)) for a, lr in arms]
    plan = [(a, lr, s) for a, lr in arms for s in seeds]
    nets = [relu_net(layers, a, width, s, in_features=X.shape[1]) for a, _, s in plan]
    res = train_side_by_side(nets, X, y, [s for _, _, s in plan], lrs=[lr for _, lr, _ in plan], epochs=epochs,
                             batch_size=batch_size, momentum=momentum, test_data=test_data)
    tail = max(1, res.loss.shape[1] // 10)
    final = np.where(res.diverged < 0, np.mean(res.loss[:, -tail:], axis=1), np.nan)
    setting = dict(width=width, epochs=epochs, batch_size=batch_size, momentum=momentum, n_train=len(X))
    out = {}
    for k, (a, lr) in enumerate(arms):
        rows = slice(k * len(seeds), (k + 1) * len(seeds))
        out[a, lr] = ReluRuns(layers, a, lr, res.loss[rows], res.test_acc[rows], final[rows], res.diverged[rows], setting)
    return out


def steps_to_loss(loss: np.ndarray, threshold: float, window: int = 20) -> list[int | None]:
    """Per run (row), the first step at which the trailing ``window``-step mean loss is below
    ``threshold`` (``None``: never; a diverged run's nan losses never count)."""
    rm = running_mean(np.asarray(loss, dtype=float), window)  # nan from a divergence on: never below
    out = []
    for row in rm:
        hit = np.nonzero(row < threshold)[0]
        out.append(int(hit[0]) if hit.size else None)
    return out
