"""Experiments of survey §1.4.1, "depth stops helping", for recurrent nets.

Three pieces, each returning plain data that ``plotting`` draws:

- **Table 1** (``table1``): the survey's one-unit sigmoid RNN over two steps fitting logical AND,
  h_t = sigma(w_xh x_t + w_hh h_{t-1} + b_h) (survey eq. 14-15) with w_xh = 1, b_h = -2 and
  w_hh = 2 or 8; the output is the last hidden state h_1 itself (no output layer). The hidden
  gradients come from the package's BPTT (``backprop.rnn_bptt``, survey eq. 17-18);
  ``table1_autograd`` computes the same numbers with ``torch.autograd`` as a reference, and
  ``input_sensitivity`` the forward counterpart, d(output)/dx_t, behind the survey's reading of
  the output differences (``output_differences``).
- **The per-step factor over long sequences** (``step_gradients``, ``step_gradient_map``): the
  same one-unit RNN over T steps; for one unit survey eq. 18 reads
  de/dh_{t-1} = de/dh_t * w_hh * sigma'(y_t), so the gradient is multiplied by the factor
  w_hh sigma'(y_t) at every step back.
- **A task that needs the first input only** (``first_input_task``, ``first_input_accuracy``):
  the sign of x_0 followed by T-1 noise steps, learnt by a ``VanillaRNN`` through
  ``training.train``; accuracy against T over several seeds.

Notation. The survey numbers the hidden states after each input h_0, h_1, ... (h_t follows x_t);
so does ``rnn_bptt`` (``outputs[t]`` = de/dh_t). The state *before* the first input, which the
survey does not name, is called h_{-1} here; it is 0. ``VanillaRNN.forward(return_hidden=True)``
instead lists [h_{-1}, h_0, h_1, ...]. The survey does not state its loss either: the squared
loss e = (o - y)^2 / 2 (the package's ``"mse"``) and h_{-1} = 0, at the initial parameters,
reproduce all 18 numbers of Table 1 (see ``tests/test_effects_rnn.py``).

Left out on purpose: the survey's update of the weights after its "one gradient-descent pass"
(its Table 1 reports the gradients and outputs *of* that pass, i.e. at the initial parameters,
and gives no learning rate).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..activations import get_activation
from ..backprop import rnn_bptt
from ..losses import get_loss
from ..models import VanillaRNN
from ..training import evaluate, train

__all__ = [
    "TABLE1_SAMPLES", "TABLE1_PAPER", "TABLE1_DIFFERENCES_PAPER", "Table1Row", "table1_rnn", "table1",
    "table1_autograd", "input_sensitivity", "output_differences", "format_table1", "StepGradients", "step_gradients",
    "StepGradientMap", "step_gradient_map", "crossings", "first_input_task", "FIRST_INPUT",
    "FirstInputResult", "first_input_accuracy",
]

#: The survey's three samples (x_0, x_1), all labelled 1 (logical AND is 1 only for (1, 1)).
TABLE1_SAMPLES: tuple[tuple[int, int], ...] = ((1, 1), (0, 1), (1, 0))

#: Survey Table 1: {w_hh: {(x_0, x_1): (de/dh_0, de/dh_1, output h_1)}}, as printed (two decimals).
TABLE1_PAPER: dict[float, dict[tuple[int, int], tuple[float, float, float]]] = {
    2.0: {(1, 1): (-0.29, -0.61, 0.39), (0, 1): (-0.30, -0.68, 0.32), (1, 0): (-0.25, -0.81, 0.19)},
    8.0: {(1, 1): (-0.35, -0.24, 0.76), (0, 1): (-1.02, -0.51, 0.49), (1, 0): (-0.92, -0.46, 0.54)},
}

#: The survey's reading of Table 1 (text after the table): output(1,1) - output(0,1) (x_0 differs)
#: and output(1,1) - output(1,0) (x_1 differs), for each w_hh.
TABLE1_DIFFERENCES_PAPER: dict[float, dict[str, float]] = {
    2.0: {"x0": 0.07, "x1": 0.20},
    8.0: {"x0": 0.27, "x1": 0.22},
}


@dataclass
class Table1Row:
    """One sample of Table 1. ``dh[t]`` = de/dh_t; ``dy[t]`` = de/dy_t = de/dh_t sigma'(y_t), the
    part of the update of the shared weights that enters through step t (survey eq. 19-20);
    ``factor`` = w_hh sigma'(y_1) = (de/dh_0) / (de/dh_1), the one backward step of eq. 18."""

    sample: tuple[int, ...]
    target: float
    dh: list[float]
    dy: list[float]
    output: float
    loss: float
    factor: float


def table1_rnn(w_hh: float, w_xh: float = 1.0, b_h: float = -2.0, activation: str = "sigmoid",
               dtype: torch.dtype = torch.float64) -> VanillaRNN:
    """The survey's Fig. 5 network: one input, one hidden unit, output o = h_T (W_ho = 1, b_o = 0).

    h_t = activation(w_xh x_t + w_hh h_{t-1} + b_h)  (survey eq. 14-15; defaults: w_xh = 1, b_h = -2).
    Built as a ``VanillaRNN(1, 1, 1)`` whose parameters are overwritten with these values.
    """
    for name, v in (("w_hh", w_hh), ("w_xh", w_xh), ("b_h", b_h)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    net = VanillaRNN(1, 1, 1, activation=activation, init=None, seed=0).to(dtype)
    with torch.no_grad():
        net.W_xh.fill_(w_xh)
        net.W_hh.fill_(w_hh)
        net.b_h.fill_(b_h)
        net.W_ho.fill_(1.0)
        net.b_o.fill_(0.0)
    return net


def _sequences(samples: Sequence[Sequence[float]], dtype: torch.dtype) -> Tensor:
    """Samples (x_0, ..., x_{T-1}) as a (batch, T, 1) tensor; all must have the same length >= 1."""
    rows = [tuple(s) for s in samples]
    if not rows or any(len(r) == 0 for r in rows) or len({len(r) for r in rows}) != 1:
        raise ValueError(f"samples must be non-empty sequences of one common length >= 1, got {samples!r}")
    x = torch.tensor(rows, dtype=dtype).unsqueeze(-1)
    if not torch.isfinite(x).all():
        raise ValueError("samples must be finite")
    return x


def _target(target: float) -> Tensor:
    if not isinstance(target, (int, float)) or not math.isfinite(target):
        raise ValueError(f"target must be a finite number, got {target!r}")
    return torch.full((1, 1), float(target), dtype=torch.float64)


def table1(w_hh: float, samples: Sequence[Sequence[float]] = TABLE1_SAMPLES, target: float = 1.0,
           w_xh: float = 1.0, b_h: float = -2.0, activation: str = "sigmoid") -> list[Table1Row]:
    """Survey Table 1 for one ``w_hh``: per sample, de/dh_t from BPTT and the output h_{T-1}.

    Loss e = (h_{T-1} - target)^2 / 2, initial state h_{-1} = 0, at the given (initial)
    parameters; one sample at a time (the package's ``"mse"`` averages over a batch), in float64.
    Gradients by ``rnn_bptt`` (survey eq. 17-18, for one unit de/dh_{t-1} = de/dh_t w_hh sigma'(y_t)).
    """
    samples = [tuple(s) for s in samples]
    net = table1_rnn(w_hh, w_xh, b_h, activation)
    x = _sequences(samples, torch.float64)
    y = _target(target)
    rows = []
    for i, s in enumerate(samples):
        xi = x[i : i + 1]
        g = rnn_bptt(net, xi, y, loss="mse")
        with torch.no_grad():
            out, hidden = net(xi, return_hidden=True)  # hidden = [h_{-1}, h_0, ..., h_{T-1}]
            ys = [xi[:, t] @ net.W_xh.T + hidden[t] @ net.W_hh.T + net.b_h for t in range(xi.shape[1])]
            d = [float(net.activation.derivative(v)) for v in ys]
        dh = [float(v) for v in g.outputs]
        rows.append(Table1Row(sample=tuple(s), target=float(target), dh=dh, dy=[a * b for a, b in zip(dh, d)],
                              output=float(out), loss=g.loss, factor=float(w_hh) * d[-1]))
    return rows


def table1_autograd(w_hh: float, samples: Sequence[Sequence[float]] = TABLE1_SAMPLES, target: float = 1.0,
                    w_xh: float = 1.0, b_h: float = -2.0, activation: str = "sigmoid") -> list[list[float]]:
    """The reference for ``table1``: de/dh_t of each sample by ``torch.autograd`` (same loss and
    initial state), as a list per sample."""
    net = table1_rnn(w_hh, w_xh, b_h, activation)
    x = _sequences(samples, torch.float64)
    y = _target(target)
    result = []
    for i in range(len(x)):
        out, hidden = net(x[i : i + 1], return_hidden=True)
        states = hidden[1:]
        for h in states:
            h.retain_grad()
        get_loss("mse")(out, y).backward()
        result.append([float(h.grad) for h in states])
    return result


def input_sensitivity(w_hh: float, sample: Sequence[float], w_xh: float = 1.0, b_h: float = -2.0,
                      activation: str = "sigmoid") -> list[float]:
    """d(output)/dx_t for t = 0 .. T-1 by autograd: how strongly the output h_{T-1} responds to a
    small change of each input. For two steps, dh_1/dx_1 = sigma'(y_1) w_xh and
    dh_1/dx_0 = sigma'(y_1) w_hh sigma'(y_0) w_xh, so their ratio is the per-step factor
    w_hh sigma'(y_0): the factor of survey eq. 18 also scales the *forward* influence of x_0."""
    net = table1_rnn(w_hh, w_xh, b_h, activation)
    x = _sequences([sample], torch.float64).requires_grad_(True)
    net(x).sum().backward()
    return [float(v) for v in x.grad.flatten()]


def output_differences(rows: Sequence[Table1Row]) -> dict[str, float]:
    """The survey's reading of Table 1: output(1,1) - output(0,1) ("x0": only x_0 differs) and
    output(1,1) - output(1,0) ("x1": only x_1 differs). Needs those three samples among ``rows``."""
    out = {r.sample: r.output for r in rows}
    missing = [s for s in TABLE1_SAMPLES if s not in out]
    if missing:
        raise ValueError(f"output_differences needs the samples {TABLE1_SAMPLES}; missing {missing}")
    return {"x0": out[(1, 1)] - out[(0, 1)], "x1": out[(1, 1)] - out[(1, 0)]}


def format_table1(ours: dict[float, list[Table1Row]],
                  paper: dict[float, dict[tuple[int, int], tuple[float, float, float]]] = TABLE1_PAPER) -> str:
    """Table 1 in the survey's layout (samples as rows; de/dh_0, de/dh_1, output for each w_hh),
    each cell as "ours (paper)": ours to three decimals, the paper's two as printed."""
    names = {2.0: "vanishing", 8.0: "exploding"}
    width = 16
    head1, head2 = "input ", "      "
    for w in ours:
        title = f"w_hh = {w:g}" + (f" ({names[w]})" if w in names else "")
        head1 += f"| {title:<{3 * width}}"
        head2 += "| " + "".join(f"{h:<{width}}" for h in ("de/dh0", "de/dh1", "output"))
    lines = [head1.rstrip(), head2.rstrip(), "-" * len(head2.rstrip())]
    for s in TABLE1_SAMPLES:
        line = f"{s[0]},{s[1]:<4}"
        for w, rows in ours.items():
            r = next((r for r in rows if r.sample == s), None)
            if r is None:
                raise ValueError(f"format_table1: no row for sample {s} at w_hh = {w:g}")
            p = paper.get(w, {}).get(s, (float("nan"),) * 3)
            line += "| " + "".join(f"{f'{o:.3f} ({q:.2f})':<{width}}" for o, q in zip((*r.dh[:2], r.output), p))
        lines.append(line.rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The same one-unit RNN over T steps
# ---------------------------------------------------------------------------------------------


def _one_unit_inputs(n: int, steps: int, inputs: str, seed: int, dtype: torch.dtype) -> Tensor:
    """(n, steps, 1) inputs: ``"bits"`` = independent fair 0/1 bits (the alphabet of Table 1),
    ``"ones"`` = all ones."""
    if inputs == "bits":
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(0, 2, (n, steps, 1), generator=gen).to(dtype)
    if inputs == "ones":
        return torch.ones(n, steps, 1, dtype=dtype)
    raise ValueError(f"unknown inputs {inputs!r}; valid: 'bits', 'ones'")


@dataclass
class StepGradients:
    """|de/dh_t| of each sequence (rows) and step t = 0 .. T-1 (columns), and the per-step factor
    |de/dh_{t-1}| / |de/dh_t| = |w_hh sigma'(y_t)| for t = 1 .. T-1 (survey eq. 18, one unit)."""

    w_hh: float
    activation: str
    dh: np.ndarray
    factor: np.ndarray


def step_gradients(w_hh: float, steps: int = 50, activation: str = "sigmoid", w_xh: float = 1.0, b_h: float = -2.0,
                   inputs: str = "bits", n_sequences: int = 256, target: float = 1.0, seed: int = 0) -> StepGradients:
    """BPTT (``rnn_bptt``) through the Table-1 network over ``steps`` inputs, for ``n_sequences``
    random input sequences at once; float64, loss (h_{T-1} - target)^2 / 2 per sequence.

    The factor is computed from the gradients themselves, as the ratio of consecutive de/dh_t;
    where a gradient is exactly zero (a dead ReLU) the factor is recorded as 0.
    """
    if steps < 2 or n_sequences < 1:
        raise ValueError(f"need steps >= 2 and n_sequences >= 1, got steps={steps}, n_sequences={n_sequences}")
    net = table1_rnn(w_hh, w_xh, b_h, activation)
    x = _one_unit_inputs(n_sequences, steps, inputs, seed, torch.float64)
    y = torch.full((n_sequences, 1), float(target), dtype=torch.float64)
    g = rnn_bptt(net, x, y, loss="mse")
    # "mse" averages over the batch: times n gives each sequence's own gradient
    dh = torch.cat(g.outputs, 1).abs().numpy() * n_sequences
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(dh[:, 1:] > 0, dh[:, :-1] / dh[:, 1:], 0.0)
    return StepGradients(float(w_hh), activation, dh, factor)


@dataclass
class StepGradientMap:
    """Heat-map data over (w_hh, step), averaged in log10 over the sequences (a geometric mean).

    ``log10_factor[i, k]``: mean log10 |w_hh sigma'(y_t)| at step t = k + 1 for ``w_hh[i]``.
    ``log10_first_over_last[i, k]``: mean log10 |de/dh_0| / |de/dh_{T-1}| for a sequence of
    length T = k + 2 (``horizons[k]``), i.e. the product of the factors of steps 1 .. T-1: how much
    smaller (< 0) or larger (> 0) the gradient reaching the first step is than at the last one.
    """

    w_hh: np.ndarray
    horizons: np.ndarray
    log10_factor: np.ndarray
    log10_first_over_last: np.ndarray
    activation: str
    settings: dict = field(default_factory=dict)


def step_gradient_map(w_hh_values: Sequence[float], steps: int = 50, activation: str = "sigmoid",
                      w_xh: float = 1.0, b_h: float = -2.0, inputs: str = "bits", n_sequences: int = 256,
                      seed: int = 0) -> StepGradientMap:
    """``step_gradients`` for each w_hh, summarised as a ``StepGradientMap``.

    A T-step sequence shares its first T inputs with a longer one, so |de/dh_0| / |de/dh_{T-1}|
    of the short sequence equals the product of the long one's factors of steps 1 .. T-1: one
    run of ``steps`` inputs gives every horizon T = 2 .. steps (``tests`` check this against
    separate runs). A factor of exactly 0 (dead ReLU) is floored at 1e-300 before the log.
    """
    w_hh_values = [float(w) for w in w_hh_values]
    if not w_hh_values:
        raise ValueError("w_hh_values is empty")
    logf = []
    for w in w_hh_values:
        sg = step_gradients(w, steps, activation, w_xh, b_h, inputs, n_sequences, seed=seed)
        logf.append(np.log10(np.maximum(sg.factor, 1e-300)))
    logf = np.stack(logf)  # (W, n, T-1)
    return StepGradientMap(w_hh=np.array(w_hh_values), horizons=np.arange(2, steps + 1),
                           log10_factor=logf.mean(1), log10_first_over_last=np.cumsum(logf, 2).mean(1),
                           activation=activation,
                           settings=dict(steps=steps, w_xh=w_xh, b_h=b_h, inputs=inputs, n_sequences=n_sequences, seed=seed))


def crossings(x: Sequence[float], values: Sequence[float], level: float = 0.0) -> list[float]:
    """The x where the piecewise-linear curve ``values(x)`` crosses ``level`` (linear interpolation)."""
    x, v = np.asarray(x, dtype=float), np.asarray(values, dtype=float) - level
    if x.shape != v.shape:
        raise ValueError(f"x and values differ in shape: {x.shape} vs {v.shape}")
    out = []
    for i in range(len(x) - 1):
        if v[i] == 0:
            out.append(float(x[i]))
        elif v[i] * v[i + 1] < 0:
            out.append(float(x[i] - v[i] * (x[i + 1] - x[i]) / (v[i + 1] - v[i])))
    if len(v) and v[-1] == 0:
        out.append(float(x[-1]))
    return out


# ---------------------------------------------------------------------------------------------
# A task whose answer is the first input
# ---------------------------------------------------------------------------------------------

#: Settings of the first-input experiment: 16 hidden units with ``VanillaRNN``'s default
#: initialisation (Xavier-uniform weights, zero biases), 1,000 training and 1,000 test sequences, Adam (lr 0.02),
#: mini-batches of 100 for 10 epochs (100 steps), noise N(0, 1) after the first input.
FIRST_INPUT = dict(hidden=16, n_train=1000, n_test=1000, epochs=10, batch_size=100, lr=0.02, optimizer="adam",
                   noise=1.0)


def first_input_task(n: int, steps: int, noise: float = 1.0, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` sequences of length ``steps``: x_0 = +1 or -1 (label 1 or 0, fair coin), then
    ``steps - 1`` inputs drawn from N(0, noise^2). Returns X (n, steps, 1) float32, y (n,) int64.
    Only x_0 carries the label, so an RNN must carry it through ``steps - 1`` updates."""
    if n < 1 or steps < 1 or noise < 0:
        raise ValueError(f"need n >= 1, steps >= 1, noise >= 0; got n={n}, steps={steps}, noise={noise}")
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randn(n, steps, 1, generator=gen) * noise
    x[:, 0, 0] = 2.0 * y - 1
    return x, y


@dataclass
class FirstInputResult:
    """Test accuracy (rows: seeds, columns: ``steps``) of one activation on the first-input task,
    and ||de/dh_0|| / ||de/dh_{T-1}|| of each net at initialisation (BPTT on its training set)."""

    activation: str
    steps: list[int]
    seeds: list[int]
    accuracy: np.ndarray
    grad_ratio: np.ndarray
    diverged: int = 0
    settings: dict = field(default_factory=dict)

    def mean(self) -> np.ndarray:
        return self.accuracy.mean(0)

    def spread(self) -> np.ndarray:
        """Standard deviation over seeds."""
        return self.accuracy.std(0)


def first_input_accuracy(steps: Sequence[int], activation: str = "tanh", seeds: Sequence[int] = range(5),
                         **overrides) -> FirstInputResult:
    """Train a fresh ``VanillaRNN(1, hidden, 2)`` per (seed, T) on ``first_input_task`` with
    ``training.train`` (cross-entropy on the last step's output, survey's many-to-one BPTT) and
    return its test accuracy. Seed s fixes the net's initial weights (``VanillaRNN(seed=s)``),
    the mini-batch order and the data (training set seed 100 + s, test set seed 10,000 + s).
    ``overrides`` replace entries of ``FIRST_INPUT``.
    """
    unknown = set(overrides) - set(FIRST_INPUT)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; valid: {sorted(FIRST_INPUT)}")
    cfg = {**FIRST_INPUT, **overrides}
    get_activation(activation)  # fail early on a bad name
    steps, seeds = [int(t) for t in steps], [int(s) for s in seeds]
    if not steps or min(steps) < 1 or not seeds:
        raise ValueError(f"need at least one T >= 1 and one seed; got steps={steps}, seeds={seeds}")
    acc = np.zeros((len(seeds), len(steps)))
    ratio = np.zeros_like(acc)
    diverged = 0
    for i, s in enumerate(seeds):
        for j, T in enumerate(steps):
            X, y = first_input_task(cfg["n_train"], T, cfg["noise"], seed=100 + s)
            Xt, yt = first_input_task(cfg["n_test"], T, cfg["noise"], seed=10_000 + s)
            net = VanillaRNN(1, cfg["hidden"], 2, activation=activation, seed=s)
            g = rnn_bptt(copy.deepcopy(net).double(), X.double(), y, loss="cross_entropy")  # float64: no underflow
            ratio[i, j] = float(g.outputs[0].norm() / g.outputs[-1].norm())
            res = train(net, X, y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                        optimizer=cfg["optimizer"], seed=s, eval_every_epoch=False, progress=False)
            diverged += not res.ok
            acc[i, j] = evaluate(net, Xt, yt)[1]
    return FirstInputResult(activation, steps, seeds, acc, ratio, diverged, cfg)
