"""Experiments of survey §2.2.3, batch normalisation (eq. 46-52; Ioffe & Szegedy 2015).

Four parts, each returning plain data that ``plotting`` draws:

1. The survey's algebra, checked numerically in float64 (``invariance_checks``, ``eps_deviation``):
   BN(alpha W x) = BN(W x) (survey eq. 50), the Jacobian dBN(W x)/dx unchanged by alpha (eq. 52),
   a bias before BN made redundant (the reason eq. 48 has none), and Ioffe & Szegedy's (§3.3)
   dBN(alpha W x)/d(alpha W) = (1/alpha) dBN(W x)/dW. Plus one consequence of eq. 50 that the
   survey does not state: the weight gradient of a BN layer is orthogonal to W (Euler's theorem
   for a function of degree 0), so plain SGD can only let ||W|| grow.
2. Where the statistics are taken (``normalisation_axes``): dense and convolutional batch norm,
   recurrent batch norm with statistics per time step (Cooijmans et al. 2017) and layer norm
   (Ba et al. 2016).
3. Back-propagation through a deep net whose hidden weights are scaled by alpha
   (``scaled_profiles``): survey eq. 51-52 in a whole network.
4. Training: Ioffe & Szegedy's Fig. 1 MNIST experiment (``run_fig1``) and the range of learning
   rates that trains deep nets with and without BN (``lr_range``).

Where we depart from the papers: Ioffe & Szegedy give neither the optimiser, nor the learning
rate, nor the standard deviation of their "small random Gaussian" weights, nor how they
binarised MNIST. ``FIG1`` fixes our defaults (plain SGD, eta = 0.5, N(0, 0.1^2), pixels >= 0.5);
the chapter also runs eta = 2 and says why. Their percentiles of "a typical sigmoid input" are taken here over a
fixed probe of 1,000 test images, with the BN net in training mode (batch statistics over the
probe: their N_BN^tr) on a copy, so the running averages of the real net are not touched.
Left out on purpose: the Inception/ImageNet experiments of their §4.2, batch renormalisation,
and the regularising effect of BN that the survey also mentions.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.autograd.functional import jacobian
from torch.nn import functional as F

from ..data import load_mnist
from ..diagnostics import GradientProfile, gradient_profile
from ..models import MLP, deep_mlp
from ..norm import BatchNorm, get_norm
from ..training import train

__all__ = [
    "FIG1", "load_binary_mnist", "InvarianceRow", "invariance_checks", "format_invariance_rows", "eps_deviation",
    "normalisation_axes", "format_axes_rows", "scaled_profiles", "fig1_net", "Fig1Run", "run_fig1",
    "distribution_drift", "weight_growth", "arm_label", "accuracy_at", "format_fig1_rows", "format_unit_percentiles",
    "LRRange", "lr_range", "trainable_range",
]

#: Ioffe & Szegedy (2015), §4.1 and Fig. 1, and the choices the paper leaves open (marked "ours").
FIG1: dict = dict(
    sizes=[784, 100, 100, 100, 10],   # 3 fully connected hidden layers of 100 units (paper)
    activation="sigmoid",             # paper
    batch_size=60,                    # paper: "60 examples per mini-batch"
    steps=50_000,                     # paper: "50000 steps"
    percentiles=(15, 50, 85),         # paper, Fig. 1 (b, c)
    init_std=0.1,                     # ours: "small random Gaussian values", std not given
    lr=0.5,                           # ours: not given
    optimizer="sgd",                  # ours: not given
    threshold=0.5,                    # ours: "28x28 binary image", binarisation not given
    probe=1000,                       # ours: images over which the percentiles are taken
)


def load_binary_mnist(split: str = "train", subset: int | None = None,
                      threshold: float = FIG1["threshold"]) -> tuple[Tensor, Tensor]:
    """MNIST as 0/1 images (pixel in [0, 1] at or above ``threshold`` -> 1), flattened to 784
    (Ioffe & Szegedy 2015, §4.1: "a 28x28 binary image as input")."""
    X, y = load_mnist(split, subset=subset)
    return (X >= threshold).to(X.dtype), y


# --- 1. the algebra of survey eq. 50-52 ---------------------------------------------------------


def _bn(weight: Tensor, u: Tensor, gamma: Tensor, beta: Tensor, bias: Tensor | None = None,
        eps: float = 0.0) -> Tensor:
    """z = BN(W u (+ b)) in training mode (survey eq. 46-48) with fixed gamma, beta: a fresh
    ``BatchNorm`` per call, so that no running statistics leak between evaluations."""
    bn = BatchNorm(weight.shape[0], eps=eps).to(weight.dtype)
    with torch.no_grad():
        bn.gamma.copy_(gamma)
        bn.beta.copy_(beta)
    y = u @ weight.T
    return bn(y if bias is None else y + bias)


@dataclass
class InvarianceRow:
    """Deviations, for one alpha, from the survey's identities (float64, eps = 0), each relative
    to the largest |entry| of the quantity it compares with.

    ``forward``: max |BN(alpha W u) - BN(W u)| (eq. 50); ``jac_input``: max |dBN(alpha W u)/du -
    dBN(W u)/du| (eq. 52); ``jac_weight``: max |dBN(alpha W u)/d(alpha W) - (1/alpha) dBN(W u)/dW|
    (Ioffe & Szegedy §3.3); ``cosine``: |cos| of the angle between alpha W and de/d(alpha W) for a
    generic loss e (Euler's theorem: W . de/dW = 0); ``bitwise``: whether the first three are
    exactly 0 (they are when alpha is a power of two, whose scaling is exact in floating point).
    ``bias_output`` (relative) and ``bias_grad`` (absolute; the gradient it sums has entries of
    order 1) test eq. 48: max |BN(W u + b) - BN(W u)| and max |de/db|.
    """

    alpha: float
    forward: float
    jac_input: float
    jac_weight: float
    cosine: float
    bias_output: float
    bias_grad: float

    @property
    def bitwise(self) -> bool:
        return self.forward == 0 and self.jac_input == 0 and self.jac_weight == 0

    def worst(self) -> float:
        """The largest of the deviations (the cosine and the bias rows included)."""
        return max(self.forward, self.jac_input, self.jac_weight, self.cosine, self.bias_output, self.bias_grad)


def _relative(a: Tensor, ref: Tensor) -> float:
    """max |a - ref| / max |ref|."""
    return float((a - ref).abs().max() / ref.abs().max())


def _problem(n_in: int, n_out: int, batch: int, seed: int) -> tuple[Tensor, ...]:
    """A random float64 W (n_out x n_in), batch u, gamma ~ U(0.5, 2), beta ~ N(0, 1), bias b and
    loss weights r (e = sum(r * z), a generic loss), all from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    d = torch.float64
    return (torch.randn(n_out, n_in, generator=g, dtype=d), torch.randn(batch, n_in, generator=g, dtype=d),
            0.5 + 1.5 * torch.rand(n_out, generator=g, dtype=d), torch.randn(n_out, generator=g, dtype=d),
            torch.randn(n_out, generator=g, dtype=d), torch.randn(batch, n_out, generator=g, dtype=d))


def invariance_checks(alphas: Iterable[float], n_in: int = 16, n_out: int = 8, batch: int = 32,
                      seed: int = 0) -> list[InvarianceRow]:
    """Check survey eq. 50 and 52, the redundant bias and Ioffe & Szegedy's 1/alpha rule numerically.

    A random W, a batch u of ``batch`` rows, random gamma and beta (``_problem``), all float64,
    BN with eps = 0 so that the identities are exact up to rounding (with eps > 0 they hold up to
    a relative eps / Var(W u); see ``eps_deviation``). Jacobians are the full ones (the batch
    couples the rows), by ``torch.autograd.functional.jacobian``.
    """
    w, u, gamma, beta, b, r = _problem(n_in, n_out, batch, seed)
    with torch.no_grad():
        ref = _bn(w, u, gamma, beta)
        out_b = _bn(w, u, gamma, beta, bias=b)
    j_u = jacobian(lambda v: _bn(w, v, gamma, beta), u)
    j_w = jacobian(lambda v: _bn(v, u, gamma, beta), w)
    bb = b.clone().requires_grad_(True)
    (g_b,) = torch.autograd.grad((_bn(w, u, gamma, beta, bias=bb) * r).sum(), bb)
    rows = []
    for alpha in alphas:
        aw = alpha * w
        ja_u = jacobian(lambda v: _bn(aw, v, gamma, beta), u)
        ja_w = jacobian(lambda v: _bn(v, u, gamma, beta), aw)
        wa = aw.clone().requires_grad_(True)
        (g_w,) = torch.autograd.grad((_bn(wa, u, gamma, beta) * r).sum(), wa)
        with torch.no_grad():
            fwd = _bn(aw, u, gamma, beta)
        rows.append(InvarianceRow(
            alpha=float(alpha), forward=_relative(fwd, ref), jac_input=_relative(ja_u, j_u),
            jac_weight=_relative(ja_w, j_w / alpha),
            cosine=abs(float((g_w * aw).sum() / (g_w.norm() * aw.norm()))),
            bias_output=_relative(out_b, ref), bias_grad=float(g_b.abs().max()),
        ))
    return rows


def format_invariance_rows(rows: Sequence[InvarianceRow], bound: float) -> str:
    """One line per alpha: whether each deviation is below ``bound``, and whether the two sides
    are bitwise equal. Verdicts, not raw deviations: rounding errors of 1e-16 differ between
    CPUs (summation order), the verdicts do not."""
    def cell(v: float) -> str:
        return f"< {bound:.0e}" if v < bound else f"{v:.1e} (!)"

    lines = [f"{'alpha':>7}  {'eq. 50':>9}  {'eq. 52':>9}  {'1/alpha':>9}  {'cos(W,dW)':>9}  bitwise equal"]
    for r in rows:
        lines.append(f"{r.alpha:>7g}  {cell(r.forward):>9}  {cell(r.jac_input):>9}  {cell(r.jac_weight):>9}  "
                     f"{cell(r.cosine):>9}  {'yes' if r.bitwise else 'no'}")
    r = rows[0]
    lines.append(f"bias before BN: output changed by {cell(r.bias_output)}, max |de/db| {cell(r.bias_grad)}")
    return "\n".join(lines)


def eps_deviation(alphas: Iterable[float], eps: float = 1e-5, n_in: int = 16, n_out: int = 8, batch: int = 32,
                  seed: int = 0) -> list[tuple[float, float, float]]:
    """(alpha, min over units of Var(alpha W u), max |BN(alpha W u) - BN(W u)|) with the eps of a
    real BN layer (torch's default 1e-5), float64, same W, u, gamma, beta as ``invariance_checks``
    and the reference BN(W u) also with eps. The deviation is about |z| eps / (2 Var) while
    alpha^2 Var >> eps: eq. 50 fails once the scaled pre-activations are as small as sqrt(eps)."""
    w, u, gamma, beta, _, _ = _problem(n_in, n_out, batch, seed)
    out = []
    with torch.no_grad():
        ref = _bn(w, u, gamma, beta, eps=eps)
        for alpha in alphas:
            var = float(((alpha * u @ w.T).var(0, unbiased=False)).min())
            out.append((float(alpha), var, float((_bn(alpha * w, u, gamma, beta, eps=eps) - ref).abs().max())))
    return out


# --- 2. where the statistics are taken -----------------------------------------------------------


@torch.no_grad()
def normalisation_axes(seed: int = 0) -> list[dict]:
    """Apply each normalisation of ``norm`` to a float64 input with an offset and a scale, and
    report over which axes it made the mean 0 and the variance 1.

    Rows: batch norm of a dense (N, C) layer and of a convolutional (N, C, H, W) map (one mean per
    channel, over the batch and the positions: Ioffe & Szegedy §3.2), recurrent batch norm of a
    sequence (N, T, C) with one mean per channel *and time step* (Cooijmans et al. 2017), the same
    sequence under one batch norm shared by all steps (its per-step means are then not 0: the
    sequence's mean drifts by 5 per step), and layer norm of a dense layer (one mean per sample,
    over its features: Ba et al. 2016). ``max_mean``, ``max_var_dev``: the largest |mean| and
    |variance - 1| over the groups (per step for both sequence rows; eps = 0, gamma = 1, beta = 0,
    so where the axes are right both are rounding errors); ``statistics``: how many means.
    """
    g = torch.Generator().manual_seed(seed)
    d = torch.float64
    n, c, hw, t = 64, 6, 5, 4

    def data(*shape: int) -> Tensor:
        return 3.0 + 2.0 * torch.randn(*shape, generator=g, dtype=d)

    def stats(z: Tensor, dims: tuple[int, ...]) -> tuple[float, float]:
        return (float(z.mean(dims).abs().max()), float((z.var(dims, unbiased=False) - 1).abs().max()))

    rows = []
    x = data(n, c)
    rows.append(dict(name="batch (dense)", shape=tuple(x.shape), over="N (per feature)", statistics=c,
                     values=stats(get_norm("batch", c, eps=0.0).to(d)(x), (0,))))
    x = data(n, c, hw, hw)
    rows.append(dict(name="batch (conv)", shape=tuple(x.shape), over="N, H, W (per channel)", statistics=c,
                     values=stats(get_norm("batch", (c, hw, hw), eps=0.0).to(d)(x), (0, 2, 3))))
    seq = data(n, t, c) + torch.arange(t, dtype=d).reshape(1, t, 1) * 5.0  # statistics drift with t
    rbn = get_norm("recurrent_batch", c, max_steps=t, eps=0.0, gamma_init=1.0).to(d)
    z = torch.stack([rbn(seq[:, s], s) for s in range(t)], 1)
    rows.append(dict(name="recurrent batch", shape=tuple(seq.shape), over="N (per feature and step)",
                     statistics=c * t, values=stats(z, (0,))))
    shared = get_norm("batch", c, eps=0.0).to(d)(seq.reshape(n * t, c)).reshape(n, t, c)
    rows.append(dict(name="batch, shared t", shape=tuple(seq.shape), over="N, T (per feature)", statistics=c,
                     values=stats(shared, (0,))))
    x = data(n, c)
    rows.append(dict(name="layer", shape=tuple(x.shape), over="C (per sample)", statistics=n,
                     values=stats(get_norm("layer", c, eps=0.0).to(d)(x), (1,))))
    for r in rows:
        r["max_mean"], r["max_var_dev"] = r.pop("values")
    return rows


def format_axes_rows(rows: Sequence[dict], bound: float = 1e-12) -> str:
    """The rows of ``normalisation_axes`` as a table; rounding errors shown as ``< bound``."""
    lines = [f"{'normalisation':<16} {'input shape':<16} {'statistics over':<26} {'means':>5}  mean 0 and var 1"]
    for r in rows:
        ok = (f"yes (< {bound:.0e})" if r["max_mean"] < bound and r["max_var_dev"] < bound else
              f"no: per-step |mean| up to {r['max_mean']:.2f}, |var - 1| up to {r['max_var_dev']:.2f}")
        lines.append(f"{r['name']:<16} {str(r['shape']):<16} {r['over']:<26} {r['statistics']:>5}  {ok}")
    return "\n".join(lines)


# --- 3. eq. 51-52 in a deep net ---------------------------------------------------------------


def scaled_profiles(X: Tensor, y: Tensor, alphas: Sequence[float], norms: Sequence[str | None] = (None, "batch"),
                    depth: int = 10, width: int = 100, activation: str = "sigmoid", init: str = "lecun_normal",
                    seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[tuple[str, float], GradientProfile]:
    """Per-layer gradient profiles at initialisation of a deep net whose *hidden* weight matrices
    are multiplied by alpha, with and without normalisation.

    Survey eq. 51-52: with BN in every hidden layer, back-propagation multiplies by
    dBN(W_l x)/dx instead of W_l, and that Jacobian does not depend on the scale of W_l, so the
    whole profile (and the output) is the same for every alpha up to BN's eps; without BN the
    gradient reaching layer l scales like alpha^(L - l) (survey eq. 24). The output layer is not
    scaled (no BN follows it). Keys ``(norm or "none", alpha)``; one batch ``X, y``, training mode.
    """
    X, out = X.to(dtype), {}
    for norm in norms:
        for alpha in alphas:
            net = deep_mlp(depth, width, X.shape[1], int(y.max()) + 1, activation=activation, init=init, seed=seed,
                           norm=norm, bias=norm in (None, "none")).to(dtype)
            with torch.no_grad():
                for lin in net.linears[:-1]:
                    lin.weight.mul_(alpha)
            out[(norm or "none", float(alpha))] = gradient_profile(net, X, y)
    return out


# --- 4a. Ioffe & Szegedy's Fig. 1 -----------------------------------------------------------------


def fig1_net(norm: str | None, seed: int, init_std: float = FIG1["init_std"]) -> MLP:
    """The net of Ioffe & Szegedy's Fig. 1: 784-100-100-100-10, sigmoid, weights N(0, init_std^2).

    Without BN each hidden layer computes sigmoid(W u + b), b = 0 at the start; with
    ``norm="batch"`` it computes sigmoid(BN(W u)) (their §3.1; survey eq. 48-49: no bias, beta
    takes its role). For a given ``seed`` both nets start from the same weight matrices."""
    return MLP(FIG1["sizes"], activation=FIG1["activation"], init="normal", init_kwargs=dict(std=init_std),
               norm=norm, bias=norm in (None, "none"), seed=seed)


@dataclass
class Fig1Run:
    """One training run of the Fig. 1 net, recorded at checkpoints ``steps`` (0 = before training).

    ``test_acc``: accuracy on the test set; ``percentiles``: (checkpoints, units, 3) array of the
    15th/50th/85th percentile of each last-hidden-layer unit's sigmoid input over the probe images;
    ``weight_norms``: (checkpoints, hidden layers) Frobenius norms ||W_l||; ``loss``: the
    mini-batch loss of every step; ``seconds``: wall time of the whole run."""

    norm: str
    seed: int
    lr: float
    steps: list[int] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    percentiles: np.ndarray | None = None
    weight_norms: np.ndarray | None = None
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    diverged: str | None = None


@torch.no_grad()
def _sigmoid_inputs(model: MLP, probe: Tensor) -> Tensor:
    """The input z of the last hidden layer's sigmoid for each probe image, (n, units). A BN net
    runs in training mode on a copy (statistics of the probe batch; running averages untouched)."""
    net = copy.deepcopy(model) if model.norms else model
    net.train()
    captured: dict[str, Tensor] = {}
    handle = net.activations[-1].register_forward_hook(lambda _m, inp, _o: captured.__setitem__("z", inp[0]))
    try:
        net(probe)
    finally:
        handle.remove()
    return captured["z"]


@torch.no_grad()
def _accuracy(model: MLP, X: Tensor, y: Tensor) -> float:
    was = model.training
    model.eval()
    acc = float((model(X).argmax(1) == y).float().mean())
    model.train(was)
    return acc


def run_fig1(X: Tensor, y: Tensor, X_test: Tensor, y_test: Tensor, norm: str | None, seed: int = 0,
             epochs: int = 2, lr: float = FIG1["lr"], every: int = 100, early: Sequence[int] = (25, 50),
             init_std: float = FIG1["init_std"], probe: int = FIG1["probe"]) -> Fig1Run:
    """Train ``fig1_net(norm, seed)`` with plain SGD on mini-batches of 60 for ``epochs`` passes
    over ``X`` (60,000 images: 1,000 steps per epoch; the paper's 50,000 steps are 50 epochs) and
    record test accuracy, the percentiles of the last hidden layer's sigmoid inputs and the weight
    norms at step 0, every ``every`` steps and at the ``early`` steps (where the curves move
    fast). ``seed`` fixes both the initial weights and the order of the mini-batches. The BN net
    is evaluated in inference mode (running averages, Ioffe & Szegedy Alg. 2) for the accuracy.

    The loop is ``training.train``'s (same optimiser, loss and mini-batch order for a given seed,
    checked in the tests) without its per-step bookkeeping, which would cost a fifth of the run:
    a sigmoid net cannot overflow, so a non-finite loss only stops the run and is noted in
    ``diverged``."""
    model = fig1_net(norm, seed, init_std)
    early = set(early)
    P = X_test[:probe]
    q = torch.tensor([p / 100 for p in FIG1["percentiles"]])
    run = Fig1Run(norm=norm or "none", seed=seed, lr=lr)
    pcts, wnorms = [], []

    def record(step: int, m: MLP) -> None:
        run.steps.append(step)
        run.test_acc.append(_accuracy(m, X_test, y_test))
        pcts.append(torch.quantile(_sigmoid_inputs(m, P), q, dim=0).T.numpy())
        wnorms.append([float(lin.weight.detach().norm()) for lin in m.linears[:-1]])

    start = time.perf_counter()
    record(0, model)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen, n, bs, step = torch.Generator().manual_seed(seed), len(X), FIG1["batch_size"], 0
    model.train()
    for _ in range(epochs):  # the mini-batches of training.train with the same seed
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(X[idx]), y[idx])
            value = float(loss.detach())
            if not math.isfinite(value):
                run.diverged = f"non-finite loss at step {step}"
                break
            loss.backward()
            opt.step()
            run.loss.append(value)
            step += 1
            if step % every == 0 or step in early:
                record(step, model)
        if run.diverged:
            break
    run.seconds = time.perf_counter() - start
    run.percentiles, run.weight_norms = np.array(pcts), np.array(wnorms)
    return run


def distribution_drift(run: Fig1Run, from_step: int = 0) -> dict[str, np.ndarray]:
    """How far each last-hidden-layer unit's sigmoid-input distribution moves during training.

    Per unit, over the checkpoints from step ``from_step`` on: ``median_travel`` = (max - min of
    the median) / (mean width), with width = 85th - 15th percentile, i.e. how many of its own
    widths the median travels; ``width_ratio`` = last width / first width. Arrays over units."""
    first = int(np.searchsorted(run.steps, from_step))
    p = run.percentiles[first:]
    med, width = p[:, :, 1], p[:, :, 2] - p[:, :, 0]
    return dict(median_travel=(med.max(0) - med.min(0)) / width.mean(0), width_ratio=width[-1] / width[0])


def weight_growth(run: Fig1Run) -> np.ndarray:
    """||W_l|| at the last checkpoint divided by ||W_l|| at step 0, per hidden layer."""
    return run.weight_norms[-1] / run.weight_norms[0]


def arm_label(norm: str | None, lr: float) -> str:
    """The label (and, through ``plotting.color_for``, the colour) of one arm of Fig. 1."""
    return f"{'BN' if norm not in (None, 'none') else 'no BN'}, η = {lr:g}"


def accuracy_at(runs: Sequence[Fig1Run], step: int) -> np.ndarray:
    """Test accuracy of each run at checkpoint ``step`` (-1: the last one)."""
    return np.array([r.test_acc[-1 if step < 0 else r.steps.index(step)] for r in runs])


def format_fig1_rows(runs: Mapping[tuple[str, float], Sequence[Fig1Run]], at: Sequence[int] = (100, 500, 1000),
                     drift_from: int = 1000) -> str:
    """A text table of the Fig. 1 runs: test accuracy at the steps ``at`` and at the end (one value
    per seed), the median over units (and seeds) of how far a last-hidden-layer sigmoid input's
    median travels in its own widths, over the whole run and from step ``drift_from`` on, its
    width at the end over its width at the start, ||W_3|| at the end over its start, and seconds."""
    end = max(r.steps[-1] for rs in runs.values() for r in rs)
    head = (f"{'arm':<14}" + "".join(f"{'acc @' + str(s):>15}" for s in at) + f"{'acc @' + str(end):>15}"
            + f"{'travel':>8}{'from ' + str(drift_from):>11}{'width x':>9}{'|W3| x':>8}{'s':>6}")
    lines = [head]
    for (norm, lr), rs in runs.items():
        accs = "".join(f"{' / '.join(f'{a:.3f}' for a in accuracy_at(rs, s)):>15}" for s in [*at, -1])
        travel = np.median([distribution_drift(r)["median_travel"] for r in rs])
        late = np.median([distribution_drift(r, drift_from)["median_travel"] for r in rs])
        width = np.median([distribution_drift(r)["width_ratio"] for r in rs])
        growth = np.median([weight_growth(r)[-1] for r in rs])
        secs = sum(r.seconds for r in rs)
        lines.append(f"{arm_label(norm, lr):<14}{accs}{travel:>8.2f}{late:>11.2f}{width:>9.2f}{growth:>8.2f}"
                     f"{secs:>6.0f}")
    return "\n".join(lines)


def format_unit_percentiles(runs: Mapping[tuple[str, float], Sequence[Fig1Run]], unit: int = 0,
                            at: Sequence[int] = (0, 25, 100, 1000), seed_index: int = 0) -> str:
    """The 15th/50th/85th percentiles of one last-hidden-layer unit's sigmoid input at the steps
    ``at``, for the run ``seed_index`` of every arm: the numbers behind Fig. 1 (b, c)."""
    lines = [f"unit {unit}, seed {seed_index}: 15th / 50th / 85th percentile of the sigmoid input"]
    for (norm, lr), rs in runs.items():
        r = rs[seed_index]
        cells = [f"step {s}: " + " / ".join(f"{v:+.2f}" for v in r.percentiles[r.steps.index(s), unit])
                 for s in at if s in r.steps]
        lines.append(f"{arm_label(norm, lr):<14}  " + "   ".join(cells))
    return "\n".join(lines)


# --- 4b. the range of learning rates --------------------------------------------------------------


@dataclass
class LRRange:
    """Final training loss of each (net, norm) at each learning rate; ``nan`` where it diverged.

    ``loss[(net, norm)]`` and ``diverged_at[(net, norm)]`` (step of the first non-finite value, or
    -1) are arrays aligned with ``lrs``; ``nets`` maps a net's label to its config."""

    lrs: list[float]
    nets: dict[str, dict]
    norms: list[str]
    steps: int
    loss: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    diverged_at: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


def lr_range(X: Tensor, y: Tensor, nets: Mapping[str, dict], lrs: Sequence[float],
             norms: Sequence[str | None] = (None, "batch"), steps: int = 100, batch_size: int = 100,
             tail: int = 20, seed: int = 0) -> LRRange:
    """Train each net of ``nets`` (label -> ``deep_mlp`` kwargs: depth, width, activation, init,
    init_kwargs) with and without normalisation for ``steps`` SGD steps at every learning rate
    and record the mean mini-batch loss of the last ``tail`` steps, or the divergence step
    (``result.diverged``). BN nets drop the hidden biases. Uses the first ``steps * batch_size``
    rows of ``X`` (one epoch), so every run sees the same mini-batches for a given ``seed``."""
    n = steps * batch_size
    if n > len(X):
        raise ValueError(f"{steps} steps of {batch_size} need {n} images, got {len(X)}")
    out = LRRange(lrs=[float(v) for v in lrs], nets={k: dict(v) for k, v in nets.items()},
                  norms=[nm or "none" for nm in norms], steps=steps)
    for label, cfg in nets.items():
        cfg = dict(cfg)
        depth, width = cfg.pop("depth"), cfg.pop("width", 100)
        for norm in norms:
            key = (label, norm or "none")
            out.loss[key], out.diverged_at[key] = np.full(len(lrs), np.nan), np.full(len(lrs), -1)
            for i, lr in enumerate(lrs):
                net = deep_mlp(depth, width, X.shape[1], int(y.max()) + 1, norm=norm, bias=norm in (None, "none"),
                               seed=seed, **cfg)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = train(net, X[:n], y[:n], epochs=1, batch_size=batch_size, lr=float(lr), seed=seed,
                                eval_every_epoch=False, progress=False)
                if res.diverged is not None:
                    out.diverged_at[key][i] = res.diverged.step
                else:
                    out.loss[key][i] = float(np.mean(res.loss[-tail:]))
    return out


def trainable_range(result: LRRange, key: tuple[str, str], threshold: float) -> tuple[float, float] | None:
    """(smallest, largest) learning rate at which ``key`` ended below ``threshold`` without
    diverging, or ``None`` when none did."""
    ok = np.flatnonzero(np.nan_to_num(result.loss[key], nan=np.inf) < threshold)
    return (result.lrs[ok[0]], result.lrs[ok[-1]]) if ok.size else None
