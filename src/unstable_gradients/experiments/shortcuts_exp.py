"""Experiments of survey §2.3.2, shortcut connections (eq. 64-66, Fig. 11-13).

Chapter ``structure/03_shortcuts``:

- ``unit_jacobian_check``: the backward step of a residual unit is survey eq. 66,
  de/dx_{l-1} = (de/dy_l) (1 + dF/dx_{l-1}), and across pre-activation units
  dx_L/dx_l = 1 + d(sum_i F_i)/dx_l (He et al. 2016b, eq. 5): autograd against the formula.
- ``parameter_table``, ``dense_connection_table``: parameter counts of residual, plain and
  shortcut-variant nets, and the m(m+1)/2 connections of a dense block (Huang et al. 2017; survey
  Fig. 12).
- ``init_profiles``: per-unit gradient norms ||de/dx_l|| at initialisation, plain vs residual,
  in the three ``SETTINGS`` (normalisation and initialisation).
- ``depth_sweep``: training error after a fixed budget by depth, plain vs residual (the
  degradation problem, He et al. 2016a, Fig. 1 and 4), and ``sweep`` over the shortcut
  variants of He et al. 2016b, Fig. 2, on one task.

Chapter ``structure/04_unraveled`` (Veit, Wilber & Belongie 2016):

- ``path_gradients``: the gradient carried by paths of each length k, by Veit et al.'s sampling
  method (§4.2): a full forward pass, then a backward pass that goes through the residual branch
  F of k randomly chosen units and through the shortcut only of the other n - k; the norm of the
  gradient at the input of the first unit is one path's gradient; times C(n, k) paths it is the
  total gradient of length k (``PathGradients.total``); ``effective_range`` gives the shortest
  range of lengths that carries a given share of it.
- ``lesion_accuracies`` / ``random_lesions``: test accuracy with single units, or k random units,
  deleted (Veit et al. §4.1-4.2, Fig. 3 and 5).

Where the code departs from the papers: the nets are MLPs on MNIST (not CNNs on CIFAR-10 or
ImageNet); a "unit" is He et al.'s two-layer residual unit on dense features of ``width``; the
depth ``n`` counts units, so a net has 2n + 2 weight layers (stem and output layer included). The
gradient of a path is measured at the output of the stem (the input of unit 1, x_0) rather than
at the image, because the stem is on every path. Batch norm is the package's
``norm.BatchNorm``; ``fast_batchnorm`` swaps it for ``torch.nn.BatchNorm1d`` (the same function,
``tests/test_norm.py``; 2-3x faster for these small nets) in the training sweeps.
Left out on purpose: CIFAR/ImageNet-scale nets, data augmentation, weight decay and learning-rate
schedules.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..diagnostics import GradientProfile, gradient_profile
from ..models.residual import SHORTCUTS, DenseBlock, ResidualNet, path_counts
from ..norm import BatchNorm
from ..training import evaluate, train

__all__ = [
    "SETTINGS", "ARMS", "make_net", "fast_batchnorm", "unit_jacobian_check", "parameter_table",
    "dense_connection_table", "init_profiles", "profile_ratios", "branch_gain", "Runs", "train_arm", "sweep",
    "depth_sweep", "error_matrix", "format_runs", "PathGradients", "path_gradients", "effective_range",
    "lesion_accuracies", "random_lesions", "error_without_units", "gate_means",
]

#: How a net is normalised and initialised (survey §2.2.1, §2.2.3). ``he2016``: batch norm after
#: every weight layer and He's N(0, 2/n_in) weights, the setting of He et al. 2016a/b;
#: ``he_init``: the same without normalisation; ``default_init``: no normalisation and PyTorch's
#: default ``nn.Linear`` init, U(-1/sqrt(n_in), 1/sqrt(n_in)) for weights and biases (the
#: "standard" init of survey eq. 32).
SETTINGS: dict[str, dict] = {
    "he2016": dict(norm="batch", init="he_normal"),
    "he_init": dict(norm=None, init="he_normal"),
    "default_init": dict(norm=None, init=None),
}

#: The arms of the chapter's comparisons: name -> ``ResidualNet`` options.
ARMS: dict[str, dict] = {
    "plain": dict(plain=True),
    "residual": dict(block="standard"),
    "pre-activation": dict(block="preact"),
}


def _setting(setting: str | Mapping) -> dict:
    if isinstance(setting, Mapping):
        return dict(setting)
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; valid settings: {', '.join(SETTINGS)}")
    return dict(SETTINGS[setting])


def _arm(arm: str | Mapping) -> dict:
    if isinstance(arm, Mapping):
        return dict(arm)
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid arms: {', '.join(ARMS)}")
    return dict(ARMS[arm])


def make_net(arm: str | Mapping = "residual", depth: int = 8, width: int = 64, setting: str | Mapping = "he2016",
             shortcut: str = "identity", seed: int = 0, fast: bool = False, **kwargs) -> ResidualNet:
    """A ``ResidualNet`` MLP for 784 inputs and 10 classes: ``depth`` units of ``width`` features.

    ``arm`` (``ARMS``: plain, residual, pre-activation) and ``setting`` (``SETTINGS``) pick the
    options; ``shortcut`` is one of ``models.residual.SHORTCUTS``. The weights depend only on
    ``seed`` (PyTorch's default init draws from the global generator, which is seeded here).
    ``fast=True`` applies ``fast_batchnorm``.
    """
    options = {**_setting(setting), **_arm(arm), **kwargs}
    torch.manual_seed(seed)  # the default init (init=None) draws from the global generator
    net = ResidualNet(input_shape=(784,), out_features=10, width=width, depth=depth, shortcut=shortcut, seed=seed,
                      **options)
    return fast_batchnorm(net) if fast else net


def fast_batchnorm(net: nn.Module) -> nn.Module:
    """Replace every ``norm.BatchNorm`` of a dense ``net`` by an equivalent ``torch.nn.BatchNorm1d`` (in place).

    Same eps, momentum, gamma (torch's ``weight``), beta (``bias``) and running statistics, so
    the net computes the same function (Ioffe & Szegedy 2015, Alg. 1-2); torch's fused kernel is
    2-3x faster than the package's equation-by-equation version for the small nets of the
    training sweeps. Returns ``net``.
    """
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, BatchNorm):
                if child.gamma is None or child.beta is None or child.momentum is None:
                    raise ValueError("fast_batchnorm needs an affine BatchNorm with an exponential momentum")
                fast = nn.BatchNorm1d(child.num_features, eps=child.eps, momentum=child.momentum,
                                      device=child.gamma.device, dtype=child.gamma.dtype)
                with torch.no_grad():
                    fast.weight.copy_(child.gamma)
                    fast.bias.copy_(child.beta)
                    fast.running_mean.copy_(child.running_mean)
                    fast.running_var.copy_(child.running_var)
                    fast.num_batches_tracked.copy_(child.num_batches_tracked)
                fast.train(child.training)
                setattr(module, name, fast)
    return net


# ---------------------------------------------------------------- 03: theory checks and counts

def unit_jacobian_check(width: int = 6, depth: int = 3, seed: int = 0) -> dict[str, float]:
    """Largest |autograd - formula| of two Jacobians, in float64 (one input vector).

    ``"eq66"``: one original unit x = sigma(y), y = x_{l-1} + F(x_{l-1}) (survey eq. 64-65):
    dx/dx_{l-1} = diag(sigma'(y)) (I + dF/dx_{l-1}) (survey eq. 66, written for the Jacobian).
    ``"he2016b_eq5"``: ``depth`` pre-activation units, x_L = x_0 + sum_i F_i(x_i):
    dx_L/dx_0 = I + d(sum_i F_i(x_i))/dx_0 (He et al. 2016b, eq. 4-5).
    """
    from torch.autograd.functional import jacobian

    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(width, dtype=torch.float64, generator=gen)
    net = ResidualNet(input_shape=(width,), width=width, depth=depth, seed=seed).double()
    unit = net.blocks[0]
    j_unit = jacobian(lambda v: unit(v[None])[0], x0)
    j_f = jacobian(lambda v: unit.residual(v[None])[0], x0)
    y = x0 + unit.residual(x0[None])[0]
    relu_slope = (y > 0).to(torch.float64)
    eq66 = torch.diag(relu_slope) @ (torch.eye(width, dtype=torch.float64) + j_f)
    pre = ResidualNet(input_shape=(width,), width=width, depth=depth, block="preact", seed=seed).double()

    def through_units(v: Tensor) -> Tensor:
        for b in pre.blocks:
            v = b(v)
        return v

    def residual_sum(v: Tensor) -> Tensor:
        total = torch.zeros_like(v)
        for b in pre.blocks:
            f = b.residual(v)
            total, v = total + f, v + f
        return total

    j_all = jacobian(lambda v: through_units(v[None])[0], x0)
    j_sum = jacobian(lambda v: residual_sum(v[None])[0], x0)
    eq5 = torch.eye(width, dtype=torch.float64) + j_sum
    return {"eq66": float((j_unit - eq66).abs().max()), "he2016b_eq5": float((j_all - eq5).abs().max())}


def parameter_table(width: int = 64, depth: int = 16, setting: str | Mapping = "he2016") -> list[dict]:
    """Parameters of the plain net and of the residual net with each shortcut (``SHORTCUTS``).

    Rows: ``arm``, ``params`` (all), ``shortcut_params`` (what the shortcuts add), ``weight_layers``.
    The identity shortcut adds none (He et al. 2016a, §3.2); gated and 1x1 shortcuts add a
    width x width map per unit (plus a bias for the gates).
    """
    rows = []
    arms = [("plain", dict(arm="plain"))] + [(s, dict(arm="residual", shortcut=s)) for s in SHORTCUTS]
    for label, opts in arms:
        net = make_net(depth=depth, width=width, setting=setting, **opts)
        n_weight = sum(1 for m in net.modules() if isinstance(m, nn.Linear))
        rows.append(dict(arm=label, params=sum(p.numel() for p in net.parameters()),
                         shortcut_params=net.shortcut_parameters(), weight_layers=n_weight))
    return rows


def dense_connection_table(ms: Sequence[int] = (1, 2, 3, 4, 5, 6), in_features: int = 16, growth_rate: int = 12) -> list[dict]:
    """For dense blocks of m layers: connections read off the layers' input widths, the survey's
    m(m+1)/2 (Fig. 12), each layer's number of inputs, and the block's output features in + m k."""
    rows = []
    for m in ms:
        block = DenseBlock(in_features, growth_rate, m, conv=False)
        inputs = [1 + (layer.in_features - in_features) // growth_rate for layer in block.layers]
        rows.append(dict(m=m, connections=block.num_connections, formula=m * (m + 1) // 2, inputs=inputs,
                         out_features=block.out_features, params=sum(p.numel() for p in block.parameters())))
    return rows


# ---------------------------------------------------------------- 03: gradients at initialisation

def init_profiles(X: Tensor, y: Tensor, depths: Sequence[int], arms: Sequence[str] = ("plain", "residual", "pre-activation"),
                  setting: str | Mapping = "he2016", width: int = 64, shortcut: str = "identity", seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> dict[tuple[str, int], GradientProfile]:
    """||de/dx_l|| for the output x_l of every unit l = 1 ... depth, at initialisation (one backward
    pass of the mean cross-entropy over the batch ``X``), for each arm and depth. Float64 by default
    so the profiles of deep plain nets do not underflow. Batch norm in training mode (batch statistics)."""
    out = {}
    for arm in arms:
        for depth in depths:
            net = make_net(arm, depth=depth, width=width, setting=setting, shortcut=shortcut, seed=seed).to(dtype)
            out[(arm, depth)] = gradient_profile(net, X.to(dtype), y)
    return out


def profile_ratios(profiles: Mapping[tuple[str, int], GradientProfile]) -> dict[str, dict[int, float]]:
    """arm -> depth -> ||de/dx_1|| / ||de/dx_L||: < 1 the gradient shrinks on its way to the input, > 1 it grows."""
    table: dict[str, dict[int, float]] = {}
    for (arm, depth), prof in profiles.items():
        table.setdefault(arm, {})[depth] = prof.ratio()
    return table


def branch_gain(X: Tensor, y: Tensor, setting: str | Mapping, width: int = 64, depth: int = 8, seed: int = 0) -> float:
    """gamma = mean over units of ||(dF_l/dx_{l-1})^T g||^2 / ||g||^2 at initialisation, with g = de/dy_l.

    The squared backward gain of a residual branch F alone. For the identity shortcut the unit's
    backward factor is ||(1 + dF/dx)^T g||^2 / ||g||^2 ~ 1 + gamma (eq. 66, when g and (dF/dx)^T g are
    uncorrelated), and that of the plain unit (F without shortcut) is gamma: so the residual
    stack multiplies the gradient by about (1 + gamma)^{(L-1)/2}, the plain one by gamma^{(L-1)/2}.
    Measured on a plain net, whose units are exactly the branches F (float64).
    """
    net = make_net("plain", depth=depth, width=width, setting=setting, seed=seed).double()
    prof = gradient_profile(net, X.double(), y)
    g = np.asarray(prof.output_grad)
    return float(np.mean((g[:-1] / g[1:]) ** 2))


# ---------------------------------------------------------------- 03: training sweeps

@dataclass
class Runs:
    """One arm trained from several seeds: ``train_error`` and ``test_error`` (arrays over seeds,
    nan where a run diverged), ``loss`` (seeds x steps, nan after a divergence), ``diverged``
    (how many seeds diverged), the run's options in ``config`` and the trained ``nets``."""

    train_error: np.ndarray
    test_error: np.ndarray
    loss: np.ndarray
    diverged: int
    config: dict = field(default_factory=dict)
    nets: list = field(default_factory=list, repr=False)

    def median(self, which: str = "train") -> float:
        """Median error over the seeds that did not diverge (nan if all did)."""
        v = self.train_error if which == "train" else self.test_error
        return float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan")


def train_arm(X: Tensor, y: Tensor, *, arm: str | Mapping = "residual", depth: int, seeds: Sequence[int],
              width: int = 64, setting: str | Mapping = "he2016", shortcut: str = "identity", lr: float = 0.1,
              momentum: float = 0.9, epochs: int = 2, batch_size: int = 100,
              test_data: tuple[Tensor, Tensor] | None = None, shortcut_kwargs: dict | None = None) -> Runs:
    """Train one arm from each seed for ``epochs`` passes over (X, y) with SGD (``momentum``; 0 = plain).

    The seed fixes both the initial weights and the mini-batch order, so arms with the same seed
    see the same batches. Errors are measured after training, in evaluation mode, on all of X (and
    on ``test_data``). A run whose loss or gradient stops being finite counts as diverged.
    Batch norm runs as ``torch.nn.BatchNorm1d`` (``fast_batchnorm``).
    """
    steps = epochs * math.ceil(len(X) / batch_size)
    tr, te, losses, nets, diverged = [], [], [], [], 0
    opt, opt_kw = ("momentum", dict(momentum=momentum, foreach=True)) if momentum else ("sgd", dict(foreach=True))
    for seed in seeds:
        net = make_net(arm, depth=depth, width=width, setting=setting, shortcut=shortcut, seed=seed, fast=True,
                       shortcut_kwargs=shortcut_kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a divergence is recorded, not warned about
            res = train(net, X, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, optimizer=opt,
                        optimizer_kwargs=opt_kw, progress=False, eval_every_epoch=False)
        curve = np.full(steps, np.nan)
        curve[: len(res.loss)] = res.loss
        losses.append(curve)
        ok = res.ok and all(torch.isfinite(p).all() for p in net.parameters())
        diverged += not ok
        tr.append(1 - evaluate(net, X, y)[1] if ok else float("nan"))
        te.append(1 - evaluate(net, *test_data)[1] if ok and test_data is not None else float("nan"))
        nets.append(net)
    config = dict(arm=arm, depth=depth, width=width, setting=setting, shortcut=shortcut, lr=lr, momentum=momentum,
                  epochs=epochs, batch_size=batch_size, seeds=list(seeds), n_train=len(X))
    return Runs(np.array(tr), np.array(te), np.array(losses), diverged, config, nets)


def sweep(X: Tensor, y: Tensor, grid: Mapping[object, Mapping], **common) -> dict:
    """``train_arm`` for every entry of ``grid`` (key -> options that override ``common``)."""
    return {key: train_arm(X, y, **{**common, **opts}) for key, opts in grid.items()}


def depth_sweep(X: Tensor, y: Tensor, depths: Sequence[int], arms: Sequence[str] = ("plain", "residual"),
                **common) -> dict[tuple[str, int], Runs]:
    """(arm, depth) -> ``Runs``: the degradation experiment (He et al. 2016a, Fig. 1 and 4)."""
    return sweep(X, y, {(a, d): dict(arm=a, depth=d) for a in arms for d in depths}, **common)


def error_matrix(runs: Mapping[tuple[str, int], Runs], arm: str, depths: Sequence[int], which: str = "train") -> np.ndarray:
    """Seeds x depths array of one arm's errors from ``depth_sweep``."""
    return np.stack([(runs[(arm, d)].train_error if which == "train" else runs[(arm, d)].test_error) for d in depths], 1)


def format_runs(runs: Mapping[object, Runs], label: str = "arm") -> str:
    """One line per entry: median training and test error over seeds, their range, divergences."""
    lines = [f"{label:<28} {'train error: median [min, max]':>32} {'test error':>11} {'diverged':>9}"]
    for key, r in runs.items():
        name = key if isinstance(key, str) else ", ".join(str(k) for k in key)
        ok = np.isfinite(r.train_error)
        rng = f"[{np.nanmin(r.train_error):.3f}, {np.nanmax(r.train_error):.3f}]" if ok.any() else "[  -  ,   -  ]"
        lines.append(f"{name:<28} {r.median():>14.3f} {rng:>17} {r.median('test'):>11.3f} "
                     f"{r.diverged:>5}/{len(r.train_error)}")
    return "\n".join(lines)


# ---------------------------------------------------------------- 04: the unraveled view

@dataclass
class PathGradients:
    """Gradient by path length in an n-unit residual net (Veit et al. 2016, §4.2, Fig. 6).

    ``per_path[k]``: mean over ``samples`` sampled paths of length k (k units through their
    residual branch F, n - k through their shortcut only) of ||de/dx_0||, the gradient norm at the
    input of unit 1; ``per_path_samples[k]`` the individual samples; ``counts[k]`` = C(n, k);
    ``total[k]`` = counts[k] * per_path[k], the gradient magnitude that all paths of length k carry.
    """

    n: int
    lengths: np.ndarray
    counts: np.ndarray
    per_path: np.ndarray
    per_path_samples: list
    samples: int

    @property
    def total(self) -> np.ndarray:
        return self.counts * self.per_path

    def share(self) -> np.ndarray:
        """``total`` as a share of its sum over all lengths."""
        return self.total / self.total.sum()

    def count_share(self) -> np.ndarray:
        """The share of all 2^n paths that have each length: Binomial(n, 1/2)."""
        return self.counts / self.counts.sum()


def _path_logits(net: ResidualNet, x0: Tensor, branch: set[int]) -> Tensor:
    """The forward pass of ``net`` from the input x0 of unit 1, with the backward pass cut so that
    unit i passes gradient only through F (i in ``branch``) or only through its shortcut (else).
    The forward values are the net's own: only ``detach`` placements differ."""
    x = x0
    for i, block in enumerate(net.blocks):
        fx = block.residual(x)
        y = x.detach() + fx if i in branch else x + fx.detach()  # eq. 64 with one term cut from the backward pass
        x = y if block.preactivation else block.act2(y)  # eq. 65
    x = net.final_act(net.final_norm(x))
    return net.head(x)


def path_gradients(net: ResidualNet, X: Tensor, y: Tensor, samples: int = 20, seed: int = 0) -> PathGradients:
    """Veit et al.'s measurement (§4.2): for each path length k = 0 ... n, ``samples`` random sets
    of k units whose residual branch the backward pass goes through (the other n - k units pass the
    gradient along their identity shortcut only); the norm of de/dx_0 for the mean cross-entropy
    on (X, y) is one path's gradient. ``net`` is run in evaluation mode (batch norm with its running
    statistics, so every path is a fixed function) and restored afterwards. Identity shortcuts only
    (the path decomposition needs h(x) = x)."""
    if net.plain or any(b.shortcut is None or type(b.shortcut).__name__ != "IdentityShortcut" for b in net.blocks):
        raise ValueError("path_gradients needs a residual net with identity shortcuts")
    n, rng = net.depth, np.random.default_rng(seed)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            x0 = net.stem_act(net.stem_norm(net.stem(net._prepare(X))))
        per_path, all_samples = [], []
        for k in range(n + 1):
            draws = 1 if k in (0, n) else samples
            norms = []
            for _ in range(draws):
                branch = set(rng.choice(n, size=k, replace=False).tolist())
                x = x0.clone().requires_grad_(True)
                loss = nn.functional.cross_entropy(_path_logits(net, x, branch), y)
                (g,) = torch.autograd.grad(loss, x)
                norms.append(float(g.norm()))
            per_path.append(float(np.mean(norms)))
            all_samples.append(norms)
    finally:
        net.train(was_training)
    counts = np.array(path_counts(n), dtype=float)
    return PathGradients(n, np.arange(n + 1), counts, np.array(per_path), all_samples, samples)


def effective_range(weights: Sequence[float], share: float = 0.9) -> tuple[int, int]:
    """The shortest range [lo, hi] of indices (path lengths) whose ``weights`` hold at least
    ``share`` of their sum (ties: the lowest lo). Veit et al.'s "effective paths" are such a range
    of the total gradient by length; of the path counts it is the bulk of the binomial."""
    w = np.asarray(weights, dtype=float)
    if not 0 < share <= 1 or w.ndim != 1 or (w < 0).any() or w.sum() <= 0:
        raise ValueError("need non-negative weights with a positive sum and 0 < share <= 1")
    target, csum = share * w.sum() * (1 - 1e-12), np.concatenate([[0.0], np.cumsum(w)])
    best = (0, len(w) - 1)
    for lo in range(len(w)):
        hi = int(np.searchsorted(csum, csum[lo] + target, side="left")) - 1
        if hi < len(w) and hi - lo < best[1] - best[0]:
            best = (lo, hi)
    return best


def lesion_accuracies(net: ResidualNet, X: Tensor, y: Tensor) -> tuple[float, np.ndarray]:
    """(accuracy of the whole net, accuracy with unit i deleted for each i) on (X, y), in evaluation
    mode (Veit et al. §4.1, Fig. 3). A deleted unit keeps its shortcut (``ResidualNet.lesion``); in
    a plain net it passes its input on unchanged."""
    base = evaluate(net, X, y)[1]
    accs = []
    for i in range(net.depth):
        with net.lesion(i):
            accs.append(evaluate(net, X, y)[1])
    return base, np.array(accs)


def random_lesions(net: ResidualNet, X: Tensor, y: Tensor, ks: Sequence[int], samples: int = 10,
                   seed: int = 0, candidates: Sequence[int] | None = None) -> np.ndarray:
    """Accuracy with k randomly chosen units deleted at once (Veit et al. §4.2, Fig. 5a): an array of
    shape (len(ks), samples) (k = 0 is the whole net, repeated). ``candidates``: the units (0-based)
    to draw from, default all."""
    rng = np.random.default_rng(seed)
    pool = np.arange(net.depth) if candidates is None else np.asarray(list(candidates))
    if max(ks, default=0) > len(pool):
        raise ValueError(f"cannot delete {max(ks)} of {len(pool)} candidate units")
    out = np.empty((len(ks), samples))
    for i, k in enumerate(ks):
        for j in range(samples):
            units = rng.choice(pool, size=k, replace=False).tolist()
            with net.lesion(units):
                out[i, j] = evaluate(net, X, y)[1]
    return out


def error_without_units(net: ResidualNet, X: Tensor, y: Tensor) -> tuple[float, float]:
    """(error of the net, error with *all* units deleted) on (X, y), in evaluation mode. With every
    unit deleted only the stem, the shortcut paths and the output layer are left: a near-linear
    model. A net whose error barely changes has learned little in its residual branches."""
    full = 1 - evaluate(net, X, y)[1]
    with net.lesion(range(net.depth)):
        bare = 1 - evaluate(net, X, y)[1]
    return full, bare


@torch.no_grad()
def gate_means(net: ResidualNet, X: Tensor) -> np.ndarray:
    """Mean gate value g(x) = sigmoid(W_g x + b_g) of each unit's gated shortcut over the inputs
    ``X`` and all features (He et al. 2016b, Fig. 2c-d), in evaluation mode. Exclusive gating
    scales F by g and the shortcut by 1 - g, so g near 0 means a unit that passes x on almost
    unchanged."""
    means: list[float] = []
    hooks = [b.register_forward_pre_hook(lambda m, inp: means.append(float(m.shortcut.g(inp[0]).mean())))
             for b in net.blocks if hasattr(b.shortcut, "g")]
    if not hooks:
        raise ValueError("the net has no gated shortcuts")
    was_training = net.training
    net.eval()
    try:
        net(X)
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return np.array(means)
