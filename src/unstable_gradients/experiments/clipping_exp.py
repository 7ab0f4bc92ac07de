"""Experiments of Part "Training methods": gradient clipping and L1/L2 weight penalties.

Three pieces, each returning plain data that ``plotting`` draws:

- **The cliff of a one-unit recurrent net** (Pascanu, Mikolov & Bengio 2013, §2.3, eq. 8,
  Fig. 6): x_t = w sigma(x_{t-1}) + b with sigma the logistic sigmoid, no input, x_0 = 0.5,
  error E = (sigma(x_50) - 0.7)^2 over the two parameters (w, b). ``one_unit_rnn`` runs the
  recursion and its forward-mode derivatives on whole arrays of (w, b) at once (the loss surface is
  one vectorised call; ``cliff_loss_autograd`` is the ``torch.autograd`` reference the tests use).
  ``cliff_descent`` runs plain gradient descent from many start points at once, optionally with
  the gradient clipped by norm or by value (``clip_rows``, the row-wise twin of
  ``clipping.clip_grad_norm`` / ``clip_grad_value``, tested against them).
- **Clipping an RNN whose gradients explode** (``rnn_run``): a ``VanillaRNN`` with an
  orthogonal recurrent matrix of gain > 1 on the adding problem (Hochreiter & Schmidhuber 1997,
  experiment 4; one of Pascanu et al.'s §4.1.2 tasks), trained by ``training.train`` with
  ``clip=None``, ``"norm"`` or ``"value"`` and optionally an L1/L2 penalty; records the global
  gradient norm before clipping, whether the clipper fired, the cosine between the clipped and
  the raw gradient, and the largest singular value of W_hh at every step.
- **Weight penalties on a deep net whose gradients explode** (``penalty_run``): a deep tanh MLP
  with its LeCun-normal weights multiplied by a gain on an MNIST subset, trained with
  ``train(..., l1=, l2=)``; records the loss and, at regular probes, the norm of every weight
  matrix, every layer's gradient of the *unpenalised* loss, the share of saturated units and the
  test accuracy.

Where the notation departs from the sources: Pascanu et al. write the state x_t and the sigmoid
sigma, as here. With h_t = sigma(x_t), their eq. 8 reads h_t = sigma(w h_{t-1} + b): the survey's
eq. 14-15 for one unit without input, x_t being the survey's pre-activation y_t; the error is then
(h_50 - 0.7)^2 with h_0 = sigma(0.5). ``penalty_run`` probes the gradient of the *unpenalised*
loss on fixed images; ``training.train``'s own per-layer records (``record_grads_every``) would
include the penalty's gradient l2 W or l1 sign(W) and hide what the data gradient does.

Left out on purpose: Pascanu et al.'s vanishing-gradient regulariser (their eq. 9-10) and their
training runs on the pathological tasks (millions of updates); the adding problem here runs a few
hundred updates, enough to see clipping act, not to solve the task.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..models import VanillaRNN, deep_mlp
from ..training import evaluate, train

__all__ = [
    "PASCANU_CLIFF", "sigmoid", "OneUnitRun", "one_unit_rnn", "cliff_loss", "cliff_loss_autograd",
    "cliff_line", "cliff_onset", "CliffSurface", "cliff_surface", "CliffCut", "cliff_cut", "locate_cliff",
    "clip_rows", "Descent", "cliff_descent", "start_grid",
    "adding_problem", "RNN_CLIP", "RNNRun", "rnn_run", "rnn_runs", "rnn_summary", "format_rnn_summary",
    "PENALTY", "PenaltyRun", "penalty_run", "penalty_runs",
]

#: Pascanu, Mikolov & Bengio 2013, §2.3: x_0 = .5, the target is reached "after 50 steps", and
#: the error is (sigma(x_50) - 0.7)^2.
PASCANU_CLIFF: dict[str, float] = dict(x0=0.5, steps=50, target=0.7)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic sigmoid 1 / (1 + e^-x), written to stay finite for large |x|."""
    x = np.asarray(x, dtype=float)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# --- the one-unit recurrent net (Pascanu et al. 2013, eq. 8) --------------------------------


@dataclass
class OneUnitRun:
    """x_T of x_t = w sigma(x_{t-1}) + b and its exact derivatives with respect to w, b and x_0,
    each an array with the broadcast shape of (w, b)."""

    x: np.ndarray
    dx_dw: np.ndarray
    dx_db: np.ndarray
    dx_dx0: np.ndarray


def one_unit_rnn(w, b, x0: float = 0.5, steps: int = 50) -> OneUnitRun:
    """Run Pascanu et al.'s eq. 8, x_t = w sigma(x_{t-1}) + b, for ``steps`` steps from ``x0``,
    with forward-mode derivatives (chain rule along the recursion):

    dx_t/dw = sigma(x_{t-1}) + w sigma'(x_{t-1}) dx_{t-1}/dw,
    dx_t/db = 1 + w sigma'(x_{t-1}) dx_{t-1}/db,   dx_t/dx_0 = prod_t w sigma'(x_{t-1}).

    ``w`` and ``b`` broadcast against each other (scalars, vectors or meshgrids); float64 NumPy.
    The last product is the long-term factor of Pascanu et al.'s eq. 5 for one unit.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    w, b = np.broadcast_arrays(np.asarray(w, dtype=float), np.asarray(b, dtype=float))
    x = np.full(w.shape, float(x0))
    dw, db, dx0 = np.zeros(w.shape), np.zeros(w.shape), np.ones(w.shape)
    for _ in range(steps):
        s = sigmoid(x)
        f = w * s * (1.0 - s)          # w sigma'(x_{t-1}): one backward step of the recursion
        dw = s + f * dw
        db = 1.0 + f * db
        dx0 = f * dx0
        x = w * s + b
    return OneUnitRun(x, dw, db, dx0)


def cliff_loss(w, b, x0: float = 0.5, steps: int = 50, target: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E = (sigma(x_T) - target)^2 and its gradient (dE/dw, dE/db), element-wise over (w, b)
    (Pascanu et al. 2013, §2.3: T = 50, x_0 = .5, target 0.7)."""
    run = one_unit_rnn(w, b, x0, steps)
    s = sigmoid(run.x)
    de_dx = 2.0 * (s - target) * s * (1.0 - s)
    return (s - target) ** 2, de_dx * run.dx_dw, de_dx * run.dx_db


def cliff_loss_autograd(w: float, b: float, x0: float = 0.5, steps: int = 50,
                        target: float = 0.7) -> tuple[float, float, float]:
    """The same E and gradient by ``torch.autograd`` in float64: the reference for ``cliff_loss``."""
    wt = torch.tensor(float(w), dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(float(b), dtype=torch.float64, requires_grad=True)
    x = torch.tensor(float(x0), dtype=torch.float64)
    for _ in range(steps):
        x = wt * torch.sigmoid(x) + bt
    e = (torch.sigmoid(x) - target) ** 2
    gw, gb = torch.autograd.grad(e, (wt, bt))
    return e.item(), gw.item(), gb.item()


def cliff_line(w, x0: float = 0.5):
    """b*(w) = x0 - w sigma(x0): the bias at which x0 is a fixed point of the map. Where that fixed
    point is repelling (|w sigma'(x0)| > 1, see ``cliff_onset``) it is the boundary between two
    basins of attraction (for w > 0) or two phases of a period-2 cycle (for w < 0): crossing it
    moves x_T from one attractor to the other, Pascanu et al.'s §2.2 mechanism for the cliff."""
    return float(x0) - np.asarray(w, dtype=float) * float(sigmoid(x0))


def cliff_onset(x0: float = 0.5) -> float:
    """|w| above which the fixed point x0 repels: 1 / sigma'(x0) (4.2553 for x0 = 0.5; Pascanu et
    al.'s necessary condition for exploding gradients, |w| > 1/gamma = 4, is the bound at x0 = 0)."""
    s = float(sigmoid(x0))
    return 1.0 / (s * (1.0 - s))


@dataclass
class CliffSurface:
    """E and ||grad E|| on a grid: ``loss[i, j]`` at (w[j], b[i]); ``long_term`` = |dx_T/dx_0|."""

    w: np.ndarray
    b: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    long_term: np.ndarray
    settings: dict = field(default_factory=dict)


def cliff_surface(w_range: tuple[float, float] = (-2.0, 10.0), b_range: tuple[float, float] = (-8.0, 4.0),
                  n: int | tuple[int, int] = 301, **model) -> CliffSurface:
    """The error surface of Pascanu et al.'s Fig. 6 on an ``n`` x ``n`` grid (one vectorised call).
    Note that the wall is far narrower than any grid spacing once w sigma'(x0) is well above one
    (its width in b shrinks like (w sigma'(x0))^-T): use ``cliff_cut`` to resolve it."""
    nw, nb = (n, n) if isinstance(n, int) else n
    w, b = np.linspace(*w_range, nw), np.linspace(*b_range, nb)
    W, B = np.meshgrid(w, b)
    settings = {**PASCANU_CLIFF, **model}
    e, gw, gb = cliff_loss(W, B, **settings)
    long_term = np.abs(one_unit_rnn(W, B, settings["x0"], settings["steps"]).dx_dx0)
    return CliffSurface(w, b, e, np.hypot(gw, gb), long_term, dict(settings, w_range=w_range, b_range=b_range))


@dataclass
class CliffCut:
    """E and ||grad E|| along b at fixed w, ``b`` centred on the predicted wall b*(w)."""

    w: float
    b_star: float
    b: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray


def cliff_cut(w: float, half_width: float = 0.05, n: int = 20_001, **model) -> CliffCut:
    """A fine cut through the wall at fixed ``w``: b in b*(w) +- ``half_width`` on ``n`` points."""
    settings = {**PASCANU_CLIFF, **model}
    b_star = float(cliff_line(w, settings["x0"]))
    b = np.linspace(b_star - half_width, b_star + half_width, n)
    e, gw, gb = cliff_loss(np.full_like(b, w), b, **settings)
    return CliffCut(float(w), b_star, b, e, np.hypot(gw, gb))


def locate_cliff(w: float, b_grid: np.ndarray, **model) -> float:
    """Where the wall is, measured: the b of the largest ||grad E|| over ``b_grid`` (1-D) at fixed
    ``w``. The answer is good to about one grid step where the wall is narrower than the grid."""
    settings = {**PASCANU_CLIFF, **model}
    b_grid = np.asarray(b_grid, dtype=float)
    _, gw, gb = cliff_loss(np.full_like(b_grid, w), b_grid, **settings)
    return float(b_grid[np.argmax(np.hypot(gw, gb))])


def clip_rows(G: np.ndarray, method: str | None, threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip every row of ``G`` (one independent gradient per row) as ``clipping.clip_grad_norm`` /
    ``clip_grad_value`` clip one global gradient: by L2 norm, g <- g theta / ||g|| when
    ||g|| > theta; by value, g_i <- clamp(g_i, -theta, theta). ``method=None`` leaves ``G`` as is.
    Returns (clipped rows, whether each row was clipped, cosine between each row before and after;
    1 where a row is zero)."""
    G = np.asarray(G, dtype=float)
    if method is None:
        return G.copy(), np.zeros(len(G), bool), np.ones(len(G))
    if threshold is None or not threshold > 0 or math.isinf(threshold):
        raise ValueError(f"clipping needs a finite threshold > 0, got {threshold}")
    norm = np.linalg.norm(G, axis=1)
    if method == "norm":
        clipped = norm > threshold
        scale = np.where(clipped, threshold / np.where(clipped, norm, 1.0), 1.0)
        return G * scale[:, None], clipped, np.ones(len(G))
    if method == "value":
        out = np.clip(G, -threshold, threshold)
        clipped = (np.abs(G) > threshold).any(axis=1)
        norm_after = np.linalg.norm(out, axis=1)
        denom = norm * norm_after
        cos = np.where(denom > 0, (G * out).sum(1) / np.where(denom > 0, denom, 1.0), 1.0)
        return out, clipped, np.clip(cos, -1.0, 1.0)
    raise ValueError(f"unknown clipping method {method!r}; valid: 'norm', 'value' or None")


@dataclass
class Descent:
    """Gradient descent on the cliff from ``n`` start points. ``path[k, s]`` = (w, b) of run k
    after s steps; ``loss[k, s]`` its error; ``grad_norm[k, s]`` / ``clipped`` / ``cosine``: the
    raw gradient's norm at step s, whether it was clipped and cos(raw, clipped)."""

    path: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    clipped: np.ndarray
    cosine: np.ndarray
    settings: dict = field(default_factory=dict)

    @property
    def step_length(self) -> np.ndarray:
        """||theta_{s+1} - theta_s|| for each run and step."""
        return np.linalg.norm(np.diff(self.path, axis=1), axis=2)

    def success(self, tol: float = 1e-3) -> np.ndarray:
        """Which runs end with E < ``tol``."""
        return self.loss[:, -1] < tol


def cliff_descent(starts: np.ndarray, lr: float = 1.0, steps: int = 200, clip: str | None = None,
                  threshold: float | None = None, **model) -> Descent:
    """Plain gradient descent theta <- theta - lr g on E(w, b) from every row of ``starts``
    ((n, 2) array of (w, b)), all runs at once; ``clip`` = ``"norm"`` (Pascanu et al.'s Alg. 1) or
    ``"value"`` clips each run's gradient with ``threshold`` before the step (``clip_rows``)."""
    settings = {**PASCANU_CLIFF, **model}
    theta = np.array(starts, dtype=float).reshape(-1, 2)
    path, losses, norms, clipped, cosines = [theta.copy()], [], [], [], []
    for _ in range(steps):
        e, gw, gb = cliff_loss(theta[:, 0], theta[:, 1], **settings)
        G = np.stack([gw, gb], 1)
        G_clipped, fired, cos = clip_rows(G, clip, threshold)
        theta = theta - lr * G_clipped
        losses.append(e)
        norms.append(np.linalg.norm(G, axis=1))
        clipped.append(fired)
        cosines.append(cos)
        path.append(theta.copy())
    losses.append(cliff_loss(theta[:, 0], theta[:, 1], **settings)[0])
    return Descent(np.stack(path, 1), np.stack(losses, 1), np.stack(norms, 1), np.stack(clipped, 1),
                   np.stack(cosines, 1), dict(settings, lr=lr, steps=steps, clip=clip, threshold=threshold))


def start_grid(w_values: Sequence[float], offsets: Sequence[float], x0: float = 0.5) -> np.ndarray:
    """Start points (w, b*(w) + offset) for every w and offset: a negative offset starts below
    the wall, on the high-error side of Pascanu et al.'s Fig. 6."""
    return np.array([(w, float(cliff_line(w, x0)) + o) for w in w_values for o in offsets])


# --- clipping a recurrent net whose gradients explode ----------------------------------------


def adding_problem(n: int, steps: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The adding problem (Hochreiter & Schmidhuber 1997, §5 exp. 4; Pascanu et al. 2013, §4.1.2):
    ``n`` sequences of ``steps`` pairs (value ~ U[0, 1], marker); exactly two markers are 1, one in
    each half of the sequence; the target is the sum of the two marked values. Returns X
    (n, steps, 2) float32 and y (n, 1) float32. The target has variance 1/6, so predicting its
    mean 1 gives the package's ``"mse"`` loss 1/2 (o - y)^2 a value of 1/12."""
    if n < 1 or steps < 2:
        raise ValueError(f"need n >= 1 and steps >= 2, got n={n}, steps={steps}")
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(n, steps, generator=gen)
    first = torch.randint(0, steps // 2, (n,), generator=gen)
    second = torch.randint(steps // 2, steps, (n,), generator=gen)
    marks = torch.zeros(n, steps)
    marks[torch.arange(n), first] = 1.0
    marks[torch.arange(n), second] = 1.0
    return torch.stack([values, marks], -1), (values * marks).sum(1, keepdim=True)


#: The recurrent setting of the clipping chapter: a 32-unit tanh RNN whose orthogonal W_hh has
#: gain 1.5 (all singular values 1.5), SGD with lr 0.1 on mini-batches of 50 sequences of length 30.
RNN_CLIP: dict = dict(n=1000, steps=30, hidden=32, gain=1.5, lr=0.1, batch_size=50, epochs=10)


@dataclass
class RNNRun:
    """One training run of ``rnn_run``, per optimizer step: ``loss`` (1/2 (o - y)^2 averaged over
    the batch, plus the penalty when there is one), ``grad_norm`` (global L2 norm of the raw gradient, before any clipping),
    ``clipped`` (whether the clipper fired), ``cosine`` (cos between the clipped and the raw
    gradient; 1 without clipping) and ``fraction_entries`` (value clipping: share of gradient
    entries clamped, else nan). ``recurrent_norm``: the largest singular value of W_hh before
    step 0 and after every step (Pascanu et al.'s lambda_1). ``train_loss``: the unpenalised loss
    (the package's ``"mse"``, 1/2 (o - y)^2 averaged) of the trained net on all its training
    sequences (nan when it diverged). ``diverged`` is the
    ``training.Divergence`` message when training hit a non-finite loss or gradient."""

    label: str
    clip: str | None
    threshold: float | None
    l1: float
    l2: float
    seed: int
    loss: np.ndarray
    grad_norm: np.ndarray
    clipped: np.ndarray
    cosine: np.ndarray
    fraction_entries: np.ndarray
    recurrent_norm: np.ndarray
    train_loss: float = float("nan")
    diverged: str | None = None
    diverged_step: int | None = None

    @property
    def fraction_clipped(self) -> float:
        """Share of steps at which the clipper fired (nan without clipping)."""
        return float(self.clipped.mean()) if self.clip and len(self.clipped) else float("nan")


def _global_grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))) if grads else 0.0


def _spectral_norm(W: Tensor) -> float:
    W = W.detach().double()
    return float(torch.linalg.matrix_norm(W, 2)) if torch.isfinite(W).all() else float("inf")


def rnn_run(clip: str | None = None, threshold: float | None = None, l1: float = 0.0, l2: float = 0.0,
            seed: int = 0, label: str | None = None, **settings) -> RNNRun:
    """Train a ``VanillaRNN`` (tanh, orthogonal W_hh times ``gain``) on ``adding_problem`` with
    ``training.train(..., clip=clip, clip_value=threshold, l1=l1, l2=l2)``; ``settings`` override
    ``RNN_CLIP``. The data are the same for every seed (data seed 0); ``seed`` sets the initial
    weights and the batch order, so arms run with the same seed share both."""
    cfg = {**RNN_CLIP, **settings}
    X, y = adding_problem(cfg["n"], cfg["steps"], seed=0)
    net = VanillaRNN(2, cfg["hidden"], 1, activation="tanh", recurrent_init="orthogonal",
                     recurrent_kwargs=dict(gain=cfg["gain"]), seed=seed)
    applied: list[float] = []
    rec = [_spectral_norm(net.W_hh)]

    def record(step: int, model: torch.nn.Module) -> None:
        applied.append(_global_grad_norm(model))
        rec.append(_spectral_norm(model.W_hh))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a divergence is returned, not warned
        res = train(net, X, y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"], loss="mse",
                    seed=seed, clip=clip, clip_value=threshold, l1=l1, l2=l2, progress=False,
                    eval_every_epoch=False, callback=record)
    n = len(res.loss)
    if label is None:
        parts = ([f"{clip} θ={threshold:g}"] if clip else []) + ([f"L1 {l1:g}"] if l1 else []) + \
                ([f"L2 {l2:g}"] if l2 else [])
        label = ", ".join(parts) or "plain SGD"
    return RNNRun(label, clip, threshold, l1, l2, seed, np.array(res.loss),
                  np.array(res.clip_norm_before if clip else applied, dtype=float)[:n],
                  np.array(res.clipped if clip else [False] * n, dtype=bool)[:n],
                  np.array(res.clip_cosine if clip else [1.0] * n, dtype=float)[:n],
                  np.array(res.clip_fraction_entries if clip else [float("nan")] * n, dtype=float)[:n],
                  np.array(rec[: n + 1]), float("nan") if res.diverged else evaluate(net, X, y, "mse")[0],
                  str(res.diverged) if res.diverged else None, res.diverged.step if res.diverged else None)


def rnn_runs(arms: Mapping[str, dict], seeds: Sequence[int] = (0, 1, 2), **settings) -> dict[str, list[RNNRun]]:
    """``rnn_run`` for every arm {label: dict(clip=..., threshold=..., l1=..., l2=...)} and seed."""
    return {label: [rnn_run(seed=s, label=label, **kw, **settings) for s in seeds] for label, kw in arms.items()}


def rnn_summary(runs: Mapping[str, list[RNNRun]], tail: int = 20) -> list[dict]:
    """One row per arm: seeds diverged, share of steps clipped (over all steps, and over the last
    quarter of the steps), mean and smallest cosine between the clipped and the raw gradient over
    the steps where the clipper fired, the largest raw gradient norm, the median over seeds of
    the final ||W_hh||_2, each seed's mean training loss over its last ``tail`` steps and each
    seed's final unpenalised loss on the whole training set (both nan for a seed that diverged)."""
    rows = []
    for label, rs in runs.items():
        clipping = rs[0].clip is not None
        fired = np.concatenate([r.cosine[r.clipped] for r in rs]) if clipping else np.array([])
        late = [r.clipped[3 * len(r.clipped) // 4:].mean() for r in rs] if clipping else [float("nan")]
        rows.append(dict(arm=label, seeds=len(rs), diverged=sum(r.diverged is not None for r in rs),
                         fraction_clipped=float(np.mean([r.fraction_clipped for r in rs])) if clipping else float("nan"),
                         fraction_clipped_late=float(np.mean(late)),
                         cosine_mean=float(fired.mean()) if fired.size else float("nan"),
                         cosine_min=float(fired.min()) if fired.size else float("nan"),
                         max_grad_norm=float(max(np.nanmax(r.grad_norm) for r in rs)),
                         recurrent_norm=float(np.median([r.recurrent_norm[-1] for r in rs])),
                         final_loss=[float(np.mean(r.loss[-tail:])) if r.diverged is None else float("nan") for r in rs],
                         train_loss=[r.train_loss for r in rs]))
    return rows


def format_rnn_summary(rows: list[dict]) -> str:
    """``rnn_summary`` as an aligned text table ("-" where a column does not apply)."""
    def f(v: float, spec: str) -> str:
        return "-" if v != v else format(v, spec)

    lines = [f"{'arm':<16}{'diverged':>9}{'clipped: all':>14}{'last 1/4':>10}{'mean cos':>10}{'min cos':>9}"
             f"{'max ||g||':>11}{'||W_hh||₂':>11}   final training loss per seed"]
    for r in rows:
        finals = ", ".join("diverged" if v != v else f"{v:.3g}" for v in r["train_loss"])
        lines.append(f"{r['arm']:<16}{r['diverged']:>5} / {r['seeds']}{f(r['fraction_clipped'], '.0%'):>14}"
                     f"{f(r['fraction_clipped_late'], '.0%'):>10}{f(r['cosine_mean'], '.3f'):>10}"
                     f"{f(r['cosine_min'], '.3f'):>9}{r['max_grad_norm']:>11.2g}{r['recurrent_norm']:>11.3g}   {finals}")
    return "\n".join(lines)


# --- weight penalties on a deep net whose gradients explode -----------------------------------


#: The penalty chapter's net: 20 tanh layers of 100 units, LeCun-normal weights times ``gain`` = 3
#: (per-layer backward gain well above one), SGD with lr 0.01 and mini-batches of 100 on the first
#: 1,000 MNIST training images; the data gradient is probed every ``probe_every`` steps on the
#: first ``probe`` training images, and the test set is evaluated at the same steps.
PENALTY: dict = dict(depth=20, width=100, activation="tanh", gain=3.0, lr=0.01, batch_size=100, epochs=20,
                     probe=256, probe_every=20)


@dataclass
class PenaltyRun:
    """One ``penalty_run``. Per optimizer step: ``loss`` (the penalised training loss that
    ``train`` minimises). At ``probe_steps`` (before step 0, then after every ``probe_every``
    steps): ``weight_norm`` (sqrt of the sum of squares of all weight matrices),
    ``layer_weight_norm`` (probes x layers) and ``data_grad`` (probes x layers): each layer's
    ||dC/dW_l|| of the *unpenalised* cross-entropy on the probe images, so that the penalty's own
    gradient does not mask what the data gradient does; ``saturated`` (probes x hidden layers):
    the share of hidden units with |x_l| > 0.99 on the probe images (meaningful for tanh, whose
    derivative is then below 0.02); ``test_loss``/``test_acc``: cross-entropy and accuracy on
    the test data."""

    label: str
    l1: float
    l2: float
    seed: int
    loss: np.ndarray
    probe_steps: np.ndarray
    weight_norm: np.ndarray
    layer_weight_norm: np.ndarray
    data_grad: np.ndarray
    saturated: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    diverged: str | None = None
    diverged_step: int | None = None

    @property
    def explosion(self) -> np.ndarray:
        """||dC/dW_1|| / ||dC/dW_L|| at each probe: first over last layer's data gradient."""
        return self.data_grad[:, 0] / self.data_grad[:, -1]


def penalty_run(X: Tensor, y: Tensor, test: tuple[Tensor, Tensor], l1: float = 0.0, l2: float = 0.0,
                seed: int = 0, label: str | None = None, clip: str | None = None, clip_value: float | None = None,
                **settings) -> PenaltyRun:
    """Train ``deep_mlp`` (``PENALTY`` overridden by ``settings``) with ``train(..., l1=, l2=)``
    (and optionally ``clip``), probing weight norms and per-layer data gradients on the way."""
    from ..diagnostics import gradient_profile

    cfg = {**PENALTY, **settings}
    init = "he_normal" if cfg["activation"] == "relu" else "lecun_normal"
    net = deep_mlp(cfg["depth"], cfg["width"], X.shape[1], int(y.max()) + 1, activation=cfg["activation"],
                   init=init, seed=seed)
    with torch.no_grad():
        for lin in net.linears:
            lin.weight.mul_(cfg["gain"])
    Xp, yp = X[: cfg["probe"]], y[: cfg["probe"]]
    steps, wn, lwn, dg, sat, tl, ta = [], [], [], [], [], [], []

    def probe(step: int, model: torch.nn.Module) -> None:
        if step >= 0 and (step + 1) % cfg["probe_every"]:
            return
        norms = [float(lin.weight.detach().double().norm()) for lin in model.linears]
        prof = gradient_profile(model, Xp, yp, layers=[])
        model.zero_grad(set_to_none=True)
        loss, acc = evaluate(model, *test)
        with torch.no_grad():
            h, shares = Xp, []
            for lin, act in zip(model.linears[:-1], model.activations):
                h = act(lin(h))
                shares.append(float((h.abs() > 0.99).double().mean()))
        sat.append(shares)
        steps.append(step + 1)
        wn.append(math.sqrt(sum(v * v for v in norms)))
        lwn.append(norms)
        dg.append(prof.weight_grad)
        tl.append(loss)
        ta.append(acc)

    probe(-1, net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = train(net, X, y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"], l1=l1, l2=l2,
                    seed=seed, progress=False, eval_every_epoch=False, callback=probe, clip=clip,
                    clip_value=clip_value)
    if label is None:
        label = " + ".join(([f"L1 {l1:g}"] if l1 else []) + ([f"L2 {l2:g}"] if l2 else [])) or "no penalty"
    return PenaltyRun(label, l1, l2, seed, np.array(res.loss), np.array(steps), np.array(wn), np.array(lwn),
                      np.array(dg), np.array(sat), np.array(tl), np.array(ta),
                      str(res.diverged) if res.diverged else None, res.diverged.step if res.diverged else None)


def penalty_runs(X: Tensor, y: Tensor, test: tuple[Tensor, Tensor], arms: Mapping[str, dict],
                 seeds: Sequence[int] = (0, 1), **settings) -> dict[str, list[PenaltyRun]]:
    """``penalty_run`` for every arm {label: dict(l1=..., l2=..., clip=..., clip_value=...)} and seed."""
    return {label: [penalty_run(X, y, test, seed=s, label=label, **kw, **settings) for s in seeds]
            for label, kw in arms.items()}
