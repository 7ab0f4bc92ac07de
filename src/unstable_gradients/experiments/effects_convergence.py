"""Experiments of survey §1.4.2, "slow or failed convergence" (eq. 26-29, Fig. 6-7).

Part 1, the one-unit net of the survey's Fig. 6 (``OneUnitNet``)::

    h = tanh(w1 x + b1),   o = tanh(w2 h + b2),   e = (o - y)^2,   one sample (x, y) = (0, 0)

with w1 = 1 fixed and w2 in {0.5, 1, 2} (vanishing / stable / exploding). Its gradient is written
out by hand (survey eq. 3-6 with one unit per layer), one gradient-descent step is survey eq. 26
and the step's first-order loss change is survey eq. 27. ``reconstruct_start_points`` recovers the
start points A, C, E of Fig. 7, which the survey does not print.

Where the notation departs from the survey: the survey says only "squared loss". We use
e = (o - y)^2 *without* the factor 1/2, because with e = (o - y)^2 / 2 no start point anywhere in
the (b1, b2) plane lets one step of learning rate 0.5 lower the loss by the 0.38 of Fig. 7
(``max_one_step_decrease`` gives about 0.15); ``OneUnitNet(loss_scale=0.5)`` is that variant.
The survey writes the input as a sample "(0, 0)"; we name its parts ``x`` and ``y``.

Part 2, deep fully connected nets on MNIST in the three regimes of survey eq. 28-29
(``REGIMES``, ``run_regime``): tanh units, LeCun-normal weights N(0, 1/n_in) times a gain of 0.5,
1 or 2 (the same factors as w2 in Fig. 7), plus PyTorch's default ``nn.Linear`` initialisation;
plain SGD at one learning rate, as in the survey's analysis. Left out on purpose: momentum,
adaptive optimisers, normalisation and learning-rate schedules, which all change the story.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..models import MLP, deep_mlp
from ..training import Divergence, evaluate, train

__all__ = [
    "FIG7_W2", "FIG7_PAPER", "FIG7_LR", "FIG7_LABELS", "OneUnitNet", "GDStep", "start_point", "loss_changes",
    "Reconstruction", "reconstruct_start_points", "agreement_region", "same_point_fit", "max_one_step_decrease",
    "loss_grid", "REGIMES", "regime_net", "RegimeRuns", "run_regime", "steps_to_loss", "convergence_rows",
    "format_convergence_rows", "lr_sweep", "running_mean",
]

#: w2 of the three nets of Fig. 7 (survey §1.4.2): vanishing, stable, exploding.
FIG7_W2: dict[str, float] = {"vanishing": 0.5, "stable": 1.0, "exploding": 2.0}
#: Loss change of one step printed in the survey: A->B, C->D, E->F.
FIG7_PAPER: dict[str, float] = {"vanishing": -0.31, "stable": -0.38, "exploding": 0.19}
#: Learning rate of the survey's single gradient-descent step.
FIG7_LR = 0.5
#: (start, end) point names of each net in Fig. 7.
FIG7_LABELS: dict[str, tuple[str, str]] = {"vanishing": ("A", "B"), "stable": ("C", "D"), "exploding": ("E", "F")}


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def _positive(name: str, value: float) -> float:
    value = _finite(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


@dataclass(frozen=True)
class GDStep:
    """One gradient-descent step (survey eq. 26) of a ``OneUnitNet`` from ``start`` to ``end``.

    ``grad`` is (de/db1, de/db2) at ``start``; ``delta`` the actual loss change and
    ``predicted_delta`` the first-order change of survey eq. 27, -lr * ||grad||^2, which assumes
    the gradient stays fixed over the step.
    """

    start: tuple[float, float]
    end: tuple[float, float]
    grad: tuple[float, float]
    loss_start: float
    loss_end: float
    lr: float

    @property
    def delta(self) -> float:
        return self.loss_end - self.loss_start

    @property
    def grad_norm(self) -> float:
        return math.hypot(*self.grad)

    @property
    def predicted_delta(self) -> float:
        return -self.lr * self.grad_norm**2


@dataclass(frozen=True)
class OneUnitNet:
    """The survey's Fig. 6 net: h = tanh(w1 x + b1), o = tanh(w2 h + b2), e = s (o - y)^2.

    ``loss_scale`` s is 1 by default (see the module docstring for why); 0.5 gives the textbook
    e = (o - y)^2 / 2. The biases (b1, b2) are the variables of Fig. 7; every method accepts
    scalars or NumPy arrays of them (broadcast), in float64.
    """

    w2: float
    w1: float = 1.0
    x: float = 0.0
    y: float = 0.0
    loss_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("w2", "w1", "x", "y"):
            _finite(name, getattr(self, name))
        _positive("loss_scale", self.loss_scale)

    def forward(self, b1, b2) -> tuple[np.ndarray, np.ndarray]:
        """(h, o): the hidden and the output unit (survey eq. 1-2 with one unit per layer)."""
        h = np.tanh(self.w1 * self.x + np.asarray(b1, dtype=float))
        return h, np.tanh(self.w2 * h + np.asarray(b2, dtype=float))

    def loss(self, b1, b2) -> np.ndarray:
        """e(b1, b2) = s (o - y)^2."""
        _, o = self.forward(b1, b2)
        return self.loss_scale * (o - self.y) ** 2

    def grad(self, b1, b2) -> tuple[np.ndarray, np.ndarray]:
        """(de/db1, de/db2) by the chain rule (survey eq. 3-6 for one unit per layer):
        de/db2 = 2 s (o - y)(1 - o^2) and de/db1 = de/db2 * w2 (1 - h^2). The factor w2 (1 - h^2)
        is the one that survey eq. 4 says decides whether the gradient vanishes or explodes."""
        h, o = self.forward(b1, b2)
        g2 = 2 * self.loss_scale * (o - self.y) * (1 - o**2)
        return g2 * self.w2 * (1 - h**2), g2

    def step(self, b1: float, b2: float, lr: float = FIG7_LR) -> GDStep:
        """One gradient-descent step from (b1, b2) with learning rate ``lr`` (survey eq. 26)."""
        b1, b2, lr = _finite("b1", b1), _finite("b2", b2), _positive("lr", lr)
        g1, g2 = (float(g) for g in self.grad(b1, b2))
        e1, e2 = b1 - lr * g1, b2 - lr * g2
        return GDStep((b1, b2), (e1, e2), (g1, g2), float(self.loss(b1, b2)), float(self.loss(e1, e2)), lr)


def start_point(w2: float, o: float, b1: float, w1: float = 1.0, x: float = 0.0) -> tuple[float, float]:
    """The point (b1, b2) of the net with weight ``w2`` whose output is ``o``: b2 = atanh(o) - w2 h.

    Nets that share o share the loss and de/db2 = 2 (o - y)(1 - o^2), the survey's constraint."""
    o = _finite("o", o)
    if not -1 < o < 1:
        raise ValueError(f"the tanh output o must lie in (-1, 1), got {o}")
    b1 = _finite("b1", b1)
    return b1, float(np.arctanh(o) - _finite("w2", w2) * np.tanh(w1 * x + b1))


def loss_changes(o, b1, w2s: Mapping[str, float] = FIG7_W2, lr: float = FIG7_LR, loss_scale: float = 1.0) -> np.ndarray:
    """Loss change of one step (eq. 26) from the common-output start point (o, b1) of each net.

    ``o`` and ``b1`` may be arrays (broadcast); the result has one more axis, one entry per net
    in the order of ``w2s``. Vectorised so that ``reconstruct_start_points`` can scan a grid."""
    lr = _positive("lr", lr)
    o, b1 = np.broadcast_arrays(np.asarray(o, dtype=float), np.asarray(b1, dtype=float))
    if np.any(np.abs(o) >= 1):
        raise ValueError("the tanh output o must lie in (-1, 1)")
    out = []
    for w2 in w2s.values():
        net = OneUnitNet(w2, loss_scale=loss_scale)
        b2 = np.arctanh(o) - w2 * np.tanh(b1)
        g1, g2 = net.grad(b1, b2)
        out.append(net.loss(b1 - lr * g1, b2 - lr * g2) - net.loss(b1, b2))
    return np.stack(out, -1)


def _components(mask: np.ndarray) -> int:
    """Number of 4-connected components of True cells in a 2-D boolean array."""
    seen = np.zeros_like(mask, dtype=bool)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        seen[start] = True
        while stack:
            i, j = stack.pop()
            for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and not seen[a, b]:
                    seen[a, b] = True
                    stack.append((a, b))
    return count


def agreement_region(tolerance: float, paper: Mapping[str, float] = FIG7_PAPER, w2s: Mapping[str, float] = FIG7_W2,
                     lr: float = FIG7_LR, o_range: tuple[float, float] = (0.005, 0.995),
                     b1_range: tuple[float, float] = (-3.0, 3.0), n: tuple[int, int] = (397, 601)) -> dict:
    """Where on a grid of common-output start points (o, b1) all loss changes lie within
    ``tolerance`` of the paper's. Returns the number of grid cells and of connected pieces, and
    the o- and b1-extent of the set (nan when empty), so a reader can judge uniqueness."""
    _positive("tolerance", tolerance)
    o, b1 = np.meshgrid(np.linspace(*o_range, n[0]), np.linspace(*b1_range, n[1]), indexing="ij")
    target = np.array([paper[k] for k in w2s])
    mask = np.abs(loss_changes(o, b1, w2s, lr) - target).max(-1) <= tolerance
    ext = (lambda a: (float(a[mask].min()), float(a[mask].max())) if mask.any() else (math.nan, math.nan))
    return dict(tolerance=tolerance, cells=int(mask.sum()), pieces=_components(mask), o=ext(o), b1=ext(b1),
                grid=dict(o=o_range, b1=b1_range, n=n))


@dataclass
class Reconstruction:
    """Start points of Fig. 7 recovered by ``reconstruct_start_points``.

    ``o`` and ``b1`` are shared by the three nets, ``points[regime] = (b1, b2)`` and
    ``steps[regime]`` the step from it; ``max_deviation`` is max |ours - paper| over the three
    loss changes (the quantity the fit minimises)."""

    o: float
    b1: float
    points: dict[str, tuple[float, float]]
    steps: dict[str, GDStep]
    paper: dict[str, float]
    max_deviation: float
    lr: float = FIG7_LR
    w2s: dict[str, float] = field(default_factory=lambda: dict(FIG7_W2))

    def deltas(self) -> dict[str, float]:
        return {k: s.delta for k, s in self.steps.items()}

    def table(self) -> str:
        """The start and end points, losses, loss changes (ours, the paper's, and the first-order
        prediction of survey eq. 27), gradient norms and de/db2 of each net, rounded."""
        lines = [f"{'net':<10}{'w2':>4}  {'start (b1, b2)':<20}{'end (b1, b2)':<20}{'e start':>7}{'e end':>7}"
                 f"{'Δe':>8}{'paper':>7}{'eq. 27':>8}{'|∇e|':>7}{'de/db2':>8}"]
        for k, s in self.steps.items():
            p, q = FIG7_LABELS.get(k, ("P", "Q"))
            lines.append(f"{k:<10}{self.w2s[k]:>4g}  {p} ({s.start[0]:+.3f}, {s.start[1]:+.3f})  "
                         f"{q} ({s.end[0]:+.3f}, {s.end[1]:+.3f})  {s.loss_start:>7.3f}{s.loss_end:>7.3f}"
                         f"{s.delta:>+8.3f}{self.paper[k]:>+7.2f}{s.predicted_delta:>+8.3f}{s.grad_norm:>7.3f}"
                         f"{s.grad[1]:>8.4f}")
        return "\n".join(lines)


def reconstruct_start_points(paper: Mapping[str, float] = FIG7_PAPER, w2s: Mapping[str, float] = FIG7_W2,
                             lr: float = FIG7_LR, o_range: tuple[float, float] = (0.005, 0.995),
                             b1_range: tuple[float, float] = (-3.0, 3.0), n: tuple[int, int] = (397, 601),
                             refinements: int = 8) -> Reconstruction:
    """Recover A, C, E of Fig. 7 from the survey's constraint and its three loss changes.

    The three start points share the hidden bias b1 and the output o (hence the starting loss and
    de/db2 = 2 o (1 - o^2), the survey's stated constraint); b2 = atanh(o) - w2 tanh(b1) differs.
    Two unknowns (o, b1) and three targets: we take the minimax (Chebyshev) fit, the (o, b1) that
    minimises the largest |ours - paper|, found on an ``n`` grid over ``o_range`` x ``b1_range``
    and then refined ``refinements`` times on 41 x 41 grids around the best point. Positive o
    only: the mirror image (-b1, -b2) of a solution is a solution too, since e(b1, b2) = e(-b1, -b2).
    """
    if set(paper) != set(w2s):
        raise ValueError(f"paper and w2s must name the same nets, got {sorted(paper)} and {sorted(w2s)}")
    target = np.array([_finite(f"paper[{k!r}]", paper[k]) for k in w2s])
    lo_o, hi_o = o_range
    if not (-1 < lo_o < hi_o < 1):
        raise ValueError(f"o_range must lie inside (-1, 1) and be increasing, got {o_range}")
    o, b1 = np.meshgrid(np.linspace(*o_range, n[0]), np.linspace(*b1_range, n[1]), indexing="ij")
    do, db = o[1, 0] - o[0, 0], b1[0, 1] - b1[0, 0]
    for _ in range(refinements + 1):
        dev = np.abs(loss_changes(o, b1, w2s, lr) - target).max(-1)
        i = np.unravel_index(np.argmin(dev), dev.shape)
        best_o, best_b1 = float(o[i]), float(b1[i])
        do, db = do / 10, db / 10
        o, b1 = np.meshgrid(np.clip(best_o + do * np.arange(-20, 21), lo_o, hi_o),
                            best_b1 + db * np.arange(-20, 21), indexing="ij")
    points = {k: start_point(w2, best_o, best_b1) for k, w2 in w2s.items()}
    steps = {k: OneUnitNet(w2s[k]).step(*points[k], lr=lr) for k in w2s}
    return Reconstruction(best_o, best_b1, points, steps, dict(paper), float(dev[i]), lr, dict(w2s))


def same_point_fit(paper: Mapping[str, float] = FIG7_PAPER, w2s: Mapping[str, float] = FIG7_W2,
                   lr: float = FIG7_LR, n: int = 20_001) -> tuple[float, np.ndarray, float]:
    """The simplest hypothesis: one start point (0, b2) for all three nets (with b1 = 0 the
    hidden unit is 0, so o = tanh(b2) whatever w2, and de/db2 is equal automatically).
    Returns (b2, loss changes, max |ours - paper|) of the best such point on an ``n``-point scan
    of o in (0, 1)."""
    o = np.linspace(0.0005, 0.9995, n)
    d = loss_changes(o, 0.0, w2s, lr)
    dev = np.abs(d - np.array([paper[k] for k in w2s])).max(-1)
    i = int(np.argmin(dev))
    return float(np.arctanh(o[i])), d[i], float(dev[i])


def max_one_step_decrease(w2: float, lr: float = FIG7_LR, loss_scale: float = 1.0, lim: float = 4.0,
                          n: int = 801) -> tuple[float, tuple[float, float]]:
    """The largest loss decrease one gradient step can achieve from any start point on an n x n
    grid of (b1, b2) in [-lim, lim]^2, and where. With ``loss_scale=0.5`` (e = (o - y)^2 / 2) it
    stays far below the survey's 0.38, which is why this module uses e = (o - y)^2."""
    net = OneUnitNet(w2, loss_scale=loss_scale)
    _positive("lr", lr)
    b1, b2 = np.meshgrid(np.linspace(-lim, lim, n), np.linspace(-lim, lim, n), indexing="ij")
    g1, g2 = net.grad(b1, b2)
    dec = net.loss(b1, b2) - net.loss(b1 - lr * g1, b2 - lr * g2)
    i = np.unravel_index(np.argmax(dec), dec.shape)
    return float(dec[i]), (float(b1[i]), float(b2[i]))


def loss_grid(w2: float, b1_lim: tuple[float, float] = (-2.0, 2.0), b2_lim: tuple[float, float] = (-2.0, 2.0),
              n: int = 121, loss_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B1, B2, E): the loss surface of the net with weight ``w2`` on an n x n grid (Fig. 7 a-f)."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    B1, B2 = np.meshgrid(np.linspace(*b1_lim, n), np.linspace(*b2_lim, n), indexing="xy")
    return B1, B2, OneUnitNet(w2, loss_scale=loss_scale).loss(B1, B2)


# --------------------------------------------------------------------------------------------
# Part 2: deep nets on MNIST in three regimes (survey eq. 28-29)
# --------------------------------------------------------------------------------------------

#: The regimes compared on MNIST: tanh units, LeCun-normal weights N(0, 1/n_in) times ``gain``
#: (biases 0); "torch default" keeps nn.Linear's own init, U(-1/sqrt(n_in), 1/sqrt(n_in)) for
#: weights and biases (kaiming_uniform with a = sqrt(5)), i.e. a weight gain of 1/sqrt(3) ~ 0.58.
REGIMES: dict[str, dict] = {
    "vanishing": dict(activation="tanh", init="lecun_normal", gain=0.5),
    "stable": dict(activation="tanh", init="lecun_normal", gain=1.0),
    "exploding": dict(activation="tanh", init="lecun_normal", gain=2.0),
    "torch default": dict(activation="tanh", init=None, gain=1.0),
}


def _regime(regime: str | Mapping) -> dict:
    if isinstance(regime, str):
        if regime not in REGIMES:
            raise ValueError(f"unknown regime {regime!r}; valid names: {', '.join(REGIMES)}")
        return dict(REGIMES[regime])
    cfg = dict(regime)
    unknown = set(cfg) - {"activation", "init", "gain", "init_kwargs"}
    if unknown or "activation" not in cfg:
        raise ValueError(f"a regime is a dict with 'activation' and optional 'init', 'gain', 'init_kwargs'; "
                         f"got keys {sorted(cfg)}")
    return cfg


def regime_net(regime: str | Mapping, depth: int, width: int, seed: int, in_features: int = 784,
               out_features: int = 10) -> MLP:
    """A ``deep_mlp`` (``depth`` hidden layers of ``width`` units) initialised as ``regime``.

    ``init=None`` keeps PyTorch's default ``nn.Linear`` init, drawn after ``torch.manual_seed(seed)``;
    otherwise the weights are the named initialiser (seeded by ``seed``) times ``gain``."""
    cfg = _regime(regime)
    gain = _positive("gain", cfg.get("gain", 1.0))
    torch.manual_seed(seed)
    net = deep_mlp(depth, width, in_features, out_features, activation=cfg["activation"], init=cfg.get("init"),
                   init_kwargs=cfg.get("init_kwargs"), seed=seed)
    if gain != 1.0:
        with torch.no_grad():
            for lin in net.linears:
                lin.weight.mul_(gain)
    return net


@dataclass
class RegimeRuns:
    """Training runs of one regime over several seeds (rows), as plain arrays.

    ``loss``: per-step mini-batch loss, shape (seeds, steps), nan after a divergence;
    ``epoch_loss``: (seeds, epochs); ``test_acc``: (seeds,), after the last epoch (nan without
    test data or after a divergence); ``weight_grad`` / ``bias_grad``: the
    per-layer gradient norms ||de/dW_l||, ||de/db_l|| at the steps ``grad_steps``, shape
    (seeds, recorded steps, layers), layer 0 nearest the input; ``diverged``: one entry per seed.
    """

    regime: str
    config: dict
    seeds: list[int]
    loss: np.ndarray
    epoch_loss: np.ndarray
    test_acc: np.ndarray
    grad_steps: np.ndarray
    weight_grad: np.ndarray
    bias_grad: np.ndarray
    diverged: list[Divergence | None]

    def total_grad_norm(self) -> np.ndarray:
        """||de/dω|| over all parameters (survey eq. 29), shape (seeds, recorded steps)."""
        return np.sqrt(np.nansum(self.weight_grad**2 + self.bias_grad**2, axis=-1))


def _pad(rows: Sequence[Sequence[float]], length: int) -> np.ndarray:
    out = np.full((len(rows), length), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def run_regime(regime: str, X: Tensor, y: Tensor, *, depth: int, width: int, epochs: int, lr: float,
               seeds: Sequence[int], batch_size: int = 100, test_data: tuple[Tensor, Tensor] | None = None,
               record_grads_every: int = 10) -> RegimeRuns:
    """Train one ``regime_net`` per seed with plain SGD (cross-entropy, fixed ``lr``) and collect
    the loss curves and per-layer gradient norms (survey eq. 28: ||de/dx_l|| ordered vanishing <
    stable < exploding, carried over to the parameter gradients). The seed fixes both the initial
    weights and the mini-batch order, so every regime sees the same batches for a given seed.
    The test set is evaluated once, after the last epoch (per-epoch evaluation would cost about
    as much as a third of the training)."""
    if not seeds:
        raise ValueError("need at least one seed")
    cfg = _regime(regime)
    n_steps = epochs * math.ceil(len(X) / batch_size)
    losses, epoch_losses, accs, grads_w, grads_b, diverged, grad_steps = [], [], [], [], [], [], None
    for seed in seeds:
        net = regime_net(cfg, depth, width, seed, X.shape[1], int(y.max()) + 1)
        res = train(net, X, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer="sgd", seed=seed,
                    record_grads_every=record_grads_every, eval_every_epoch=False, progress=False)
        losses.append(res.loss)
        epoch_losses.append(res.epoch_loss)
        accs.append(evaluate(net, *test_data)[1] if test_data is not None and res.ok else math.nan)
        names = list(res.grad_norms)
        grads_w.append([res.grad_norms[k] for k in names])
        grads_b.append([res.bias_grad_norms[k] for k in names])
        if grad_steps is None or len(res.grad_steps) > len(grad_steps):
            grad_steps = res.grad_steps
        diverged.append(res.diverged)
    n_rec = len(grad_steps)
    layers = max(len(g) for g in grads_w)
    W = np.full((len(seeds), n_rec, layers), np.nan)
    B = np.full_like(W, np.nan)
    for s, (gw, gb) in enumerate(zip(grads_w, grads_b)):
        for l, (w, b) in enumerate(zip(gw, gb)):
            W[s, : len(w), l], B[s, : len(b), l] = w, b
    return RegimeRuns(regime if isinstance(regime, str) else "custom", cfg, list(seeds), _pad(losses, n_steps),
                      _pad(epoch_losses, epochs), np.asarray(accs, dtype=float), np.asarray(grad_steps), W, B, diverged)


def steps_to_loss(loss: np.ndarray, threshold: float, window: int = 20) -> int | None:
    """First step at which the running mean of the last ``window`` mini-batch losses is below
    ``threshold`` (``None`` if never, or after a divergence): "how many steps to reach a loss"."""
    loss = np.asarray(loss, dtype=float)
    if window < 1 or loss.ndim != 1:
        raise ValueError("need a 1-D loss curve and window >= 1")
    if len(loss) < window:
        return None
    run = np.convolve(loss, np.ones(window) / window, mode="valid")
    hit = np.nonzero(run < threshold)[0]
    return int(hit[0] + window - 1) if hit.size else None


def running_mean(curves: np.ndarray, window: int = 10) -> np.ndarray:
    """Running mean over the last ``window`` steps of each row of ``curves`` (for drawing noisy
    mini-batch losses); the first ``window - 1`` steps average over what is there."""
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    c = np.cumsum(np.pad(curves, ((0, 0), (1, 0))), axis=1)
    idx = np.arange(1, curves.shape[1] + 1)
    lo = np.maximum(idx - window, 0)
    return (c[:, idx] - c[:, lo]) / (idx - lo)


def convergence_rows(runs: Mapping[str, RegimeRuns], threshold: float = 1.0, window: int = 20) -> list[dict]:
    """One summary row per regime: median gradient norms of the first (input-side) layer's
    weights and of the whole parameter vector (survey eq. 29) at the first and the last recorded
    step, epoch losses (mean over seeds) with the min-max of the last one, mean test accuracy,
    the number of diverged runs, and the steps each seed took to reach ``threshold``
    (``None`` = not within the run)."""
    rows = []
    for name, r in runs.items():
        total = r.total_grad_norm()
        rows.append(dict(
            regime=name, seeds=len(r.seeds),
            grad_first=(float(np.nanmedian(r.weight_grad[:, 0, 0])), float(np.nanmedian(r.weight_grad[:, -1, 0]))),
            grad_last_layer=float(np.nanmedian(r.weight_grad[:, 0, -1])),
            grad_total=(float(np.nanmedian(total[:, 0])), float(np.nanmedian(total[:, -1]))),
            epoch_loss=np.nanmean(r.epoch_loss, 0).tolist(), final_min=float(np.nanmin(r.epoch_loss[:, -1])),
            final_max=float(np.nanmax(r.epoch_loss[:, -1])), test_acc=float(np.nanmean(r.test_acc)),
            steps=[steps_to_loss(l, threshold, window) for l in r.loss], diverged=sum(d is not None for d in r.diverged)))
    return rows


def format_convergence_rows(rows: Sequence[dict], threshold: float = 1.0) -> str:
    """``convergence_rows`` as a fixed-width table, numbers rounded for a stable printout:
    gradient norms as start -> end of training, losses to two decimals."""
    head = (f"{'regime':<14}{'|de/dW_1| start->end':<22}{'|de/dω| start->end':<20}{'loss by epoch':<16}"
            f"{'last min-max':<13}{'test acc':>8}{'diverged':>9}  steps to loss < {threshold:g}")
    lines = [head]
    for r in rows:
        steps = ", ".join("never" if s is None else str(s) for s in r["steps"])
        losses = " ".join(f"{v:.2f}" for v in r["epoch_loss"])
        g1, gt = r["grad_first"], r["grad_total"]
        lines.append(f"{r['regime']:<14}{g1[0]:.1e} -> {g1[1]:.1e}    {gt[0]:.1e} -> {gt[1]:.1e}  {losses:<16}"
                     f"{r['final_min']:.2f}-{r['final_max']:.2f}   {r['test_acc']:>8.3f}{r['diverged']:>6}/{r['seeds']:<2}  {steps}")
    return "\n".join(lines)


def lr_sweep(regimes: Sequence[str], lrs: Sequence[float], X: Tensor, y: Tensor, *, depth: int, width: int,
             epochs: int, seed: int = 0, batch_size: int = 100,
             known: Mapping[tuple[str, float], float] | None = None) -> np.ndarray:
    """Mean training loss of the last epoch for each regime (rows) and learning rate (columns),
    one seed each: does the ranking of the regimes depend on the learning rate? ``nan`` marks a
    run that diverged. ``known[(regime, lr)]`` supplies a value already computed with the same
    settings and seed (e.g. epoch ``epochs`` of a ``run_regime`` run), which is then not rerun."""
    out = np.full((len(regimes), len(lrs)), np.nan)
    known = dict(known or {})
    for i, name in enumerate(regimes):
        for j, lr in enumerate(lrs):
            if (name, lr) in known:
                out[i, j] = known[(name, lr)]
                continue
            net = regime_net(name, depth, width, seed, X.shape[1], int(y.max()) + 1)
            res = train(net, X, y, epochs=epochs, batch_size=batch_size, lr=_positive("lr", lr), seed=seed,
                        eval_every_epoch=False, progress=False)
            if res.diverged is None:
                out[i, j] = res.epoch_loss[-1]
    return out
