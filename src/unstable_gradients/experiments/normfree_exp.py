"""Experiments of chapter ``future/05_normalisation_free`` (after 2018, beyond the survey).

- ``variance_profile``: the mean square q_l = E[x_l^2] of the output of every pre-activation unit
  of a residual MLP at initialisation, fed N(0, 1) inputs, for the ``ARMS`` (He's init, batch
  norm, Fixup, ReZero, SkipInit); ``predicted_profile`` is the closed form of each (below).
- ``train_arms``: a deep residual MLP on an MNIST subset, one run per arm and seed, through
  ``training.train``; ``clip_arms`` the same net trained with no clipping, norm, value and adaptive
  gradient clipping (``clipping.clip_grad_agc``; Brock et al. 2021, §4).

The recursion behind ``predicted_profile``: a unit adds its branch, x_{l+1} = x_l + alpha F(x_l),
and at initialisation F(x_l) is uncorrelated with x_l, so q_{l+1} = q_l + alpha^2 E[F(x_l)^2]. For a
ReLU branch F = W_2 relu(W_1 relu(x)) with He's weights, Var(W relu(z)) = (2/n) n E[z^2]/2 = E[z^2],
so E[F^2] = q_l and q_{l+1} = q_l (1 + c), c = alpha^2 (He: c = 1, q doubles per unit; SkipInit
with alpha = 1/sqrt(L): c = 1/L, q_L = q_0 (1 + 1/L)^L <= e q_0; Fixup, ReZero: F = 0 at init,
c = 0). With batch norm in the branch E[F^2] = 1 whatever q_l is, so q grows linearly,
q_l = q_0 + l (De & Smith 2020, §2: the branch is downscaled by about sqrt(l)).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..models.normfree import NormFreeResNet
from ..training import train
from ..utils import lookup
from .shortcuts_exp import fast_batchnorm

__all__ = ["ARMS", "INIT_ARMS", "arm_options", "make_net", "branch_gain", "predicted_profile", "unit_outputs",
           "variance_profile", "growth_per_unit", "linear_slope", "Run", "train_arm", "train_arms", "CLIP_ARMS",
           "clip_arms", "summarise", "plot_variance_by_depth", "plot_loss_curves", "init_variance_explorer"]

#: arm -> ``NormFreeResNet`` options; ``alpha="1/sqrt(L)"`` is resolved by ``arm_options``.
ARMS: dict[str, dict] = {
    "he": dict(scheme="none"),
    "default": dict(scheme="none", init=None),
    "batch_norm": dict(scheme="none", norm="batch"),
    "fixup": dict(scheme="fixup"),
    "rezero": dict(scheme="rezero"),
    "skipinit": dict(scheme="skipinit", alpha="1/sqrt(L)"),
}
#: arms with a closed-form variance profile (the default init's biases are random: left out)
INIT_ARMS: tuple[str, ...] = ("he", "batch_norm", "fixup", "rezero", "skipinit")


def arm_options(arm: str, depth: int) -> dict:
    """``ARMS[arm]`` with SkipInit's alpha = 1/sqrt(L) resolved for ``depth`` units."""
    opts = dict(lookup(ARMS, arm, "arm"))
    if opts.get("alpha") == "1/sqrt(L)":
        opts["alpha"] = 1.0 / math.sqrt(depth)
    return opts


def make_net(arm: str, depth: int, width: int = 64, input_features: int = 784, seed: int = 0,
             fast: bool = False) -> NormFreeResNet:
    """The arm's net: ``depth`` pre-activation units of ``width`` features, 10 outputs. PyTorch's
    default init draws from the global generator, which is seeded here. ``fast`` swaps batch norm
    for ``torch.nn.BatchNorm1d`` (``shortcuts_exp.fast_batchnorm``)."""
    torch.manual_seed(seed)
    net = NormFreeResNet(input_shape=(input_features,), width=width, depth=depth, seed=seed,
                         **arm_options(arm, depth))
    return fast_batchnorm(net) if fast else net


def branch_gain(arm: str, depth: int) -> float | None:
    """c of q_{l+1} = q_l (1 + c) at init (module docstring); ``None`` for batch norm (additive)."""
    gains = {"he": 1.0, "fixup": 0.0, "rezero": 0.0, "skipinit": 1.0 / depth, "batch_norm": None}
    if arm not in gains:
        raise ValueError(f"no closed form for arm {arm!r}; valid arms: {', '.join(gains)}")
    return gains[arm]


def predicted_profile(arm: str, depth: int, q0: float) -> np.ndarray:
    """q_0 ... q_L predicted from the stem's q_0: q_0 (1 + c)^l, or q_0 + l with batch norm."""
    l = np.arange(depth + 1, dtype=np.float64)
    c = branch_gain(arm, depth)
    return q0 + l if c is None else q0 * (1.0 + c) ** l


@torch.no_grad()
def unit_outputs(net: NormFreeResNet, X: Tensor) -> list[Tensor]:
    """[x_0, x_1, ..., x_L]: the stem's output and every unit's, in training mode (batch statistics)."""
    net.train()
    h = net.stem_act(net.stem_norm(net.stem(net._prepare(X))))
    outs = [h]
    for block in net.blocks:
        h = block(h)
        outs.append(h)
    return outs


def variance_profile(arm: str, depth: int, width: int = 128, batch: int = 256, seeds: Sequence[int] = (0, 1, 2),
                     dtype: torch.dtype = torch.float64) -> np.ndarray:
    """q_l = E[x_l^2] (over the batch and the features) for l = 0 ... L, one row per seed, at init.

    Inputs are N(0, 1) vectors of ``width`` features, drawn from the seed."""
    rows = []
    for seed in seeds:
        net = make_net(arm, depth, width, input_features=width, seed=seed).to(dtype)
        X = torch.randn(batch, width, generator=torch.Generator().manual_seed(10_000 + seed), dtype=dtype)
        rows.append([float((h**2).mean()) for h in unit_outputs(net, X)])
    return np.array(rows)


def growth_per_unit(q: np.ndarray) -> float:
    """Mean of the per-unit ratios q_{l+1} / q_l over units and rows: an unbiased estimate of 1 + c
    in eq. q_{l+1} = q_l (1 + c), since E[q_{l+1} | x_l] = q_l (1 + c) over the unit's fresh weights.
    (The geometric mean (q_L / q_0)^(1/L) is biased low by the spread of the per-unit gains.)"""
    q = np.atleast_2d(q)
    return float(np.mean(q[:, 1:] / q[:, :-1]))


def linear_slope(q: np.ndarray) -> float:
    """Least-squares slope of q_l against l (mean over rows): 1 for the batch-norm prediction."""
    q = np.atleast_2d(q).mean(0)
    return float(np.polyfit(np.arange(len(q)), q, 1)[0])


# ---------------------------------------------------------------- training

@dataclass
class Run:
    """One training run: loss per step (until divergence), final test accuracy (nan if diverged),
    the step of divergence (``None`` if it did not) and, with clipping, the share of steps clipped and
    the mean cosine between the clipped and the raw gradient (``clipping.ClipStats``)."""

    arm: str
    seed: int
    loss: list[float] = field(default_factory=list)
    test_acc: float = float("nan")
    diverged_at: int | None = None
    fraction_clipped: float = float("nan")
    cosine: float = float("nan")


def train_arm(arm: str, X: Tensor, y: Tensor, test: tuple[Tensor, Tensor], depth: int = 32, width: int = 64,
              seed: int = 0, epochs: int = 2, lr: float = 0.1, batch_size: int = 100, **train_kwargs) -> Run:
    """Train the arm's net with SGD (``training.train``; ``train_kwargs`` e.g. clipping options)."""
    net = make_net(arm, depth, width, input_features=X.shape[1], seed=seed, fast=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a divergence is a result here, not a warning
        r = train(net, X, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, test_data=test,
                  progress=False, **train_kwargs)
    return Run(arm, seed, list(r.loss), r.test_acc[-1] if r.ok and r.test_acc else float("nan"),
               r.diverged.step if r.diverged else None, r.fraction_clipped,
               float(np.mean(r.clip_cosine)) if r.clip_cosine else float("nan"))


def train_arms(arms: Sequence[str], X: Tensor, y: Tensor, test: tuple[Tensor, Tensor],
               seeds: Sequence[int] = (0, 1, 2), **kwargs) -> dict[str, list[Run]]:
    """``train_arm`` for every arm and seed: {arm: [Run per seed]}."""
    return {a: [train_arm(a, X, y, test, seed=s, **kwargs) for s in seeds] for a in arms}


#: clipping arm -> ``train`` options (thresholds fixed before the runs; AGC leaves the classifier alone)
CLIP_ARMS: dict[str, dict] = {
    "no clipping": {},
    "norm (θ = 1)": dict(clip="norm", clip_value=1.0),
    "value (θ = 0.01)": dict(clip="value", clip_value=0.01),
    "AGC (λ = 0.01)": dict(clip="agc", clip_value=0.01, clip_exclude=("head",)),
}


def clip_arms(arm: str, X: Tensor, y: Tensor, test: tuple[Tensor, Tensor], seeds: Sequence[int] = (0, 1),
              clips: Mapping[str, dict] | None = None, **kwargs) -> dict[str, list[Run]]:
    """The same net and learning rate under every clipping option of ``clips`` (``CLIP_ARMS``)."""
    clips = CLIP_ARMS if clips is None else clips
    return {name: [train_arm(arm, X, y, test, seed=s, **opts, **kwargs) for s in seeds]
            for name, opts in clips.items()}


def summarise(runs: Mapping[str, list[Run]], tail: int = 5) -> list[dict]:
    """Per arm: how many runs diverged, mean loss of the last ``tail`` steps of the runs that did
    not, mean final test accuracy, the mean share of clipped steps and the mean cosine(raw, clipped)."""
    rows = []
    for arm, rs in runs.items():
        ok = [r for r in rs if r.diverged_at is None]
        rows.append(dict(arm=arm, runs=len(rs), diverged=len(rs) - len(ok),
                         first_divergence=min((r.diverged_at for r in rs if r.diverged_at is not None), default=None),
                         final_loss=float(np.mean([np.mean(r.loss[-tail:]) for r in ok])) if ok else float("nan"),
                         test_acc=float(np.mean([r.test_acc for r in ok])) if ok else float("nan"),
                         fraction_clipped=float(np.mean([r.fraction_clipped for r in rs])),
                         cosine=float(np.mean([r.cosine for r in rs]))))
    return rows


# ---------------------------------------------------------------- drawing (takes the data above)

def plot_variance_by_depth(ax, profiles: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray],
                           title: str | None = None):
    """Measured q_l of every seed (thin lines, markers for the mean) and the closed form (dashed), log y."""
    from ..plotting import _finish, color_for

    for i, (arm, q) in enumerate(profiles.items()):
        c, l = color_for(arm), np.arange(q.shape[1])
        for row in q:
            ax.semilogy(l, row, "-", color=c, lw=0.6, alpha=0.5)
        ax.semilogy(l, np.exp(np.log(q).mean(0)), "osv^D"[i % 5], color=c, ms=4, mfc="none", label=arm)
        ax.semilogy(l, predictions[arm], "--", color=c, lw=1.2)
    ax.plot([], [], "--", color="k", label="closed form")
    return _finish(ax, "residual unit l", r"$E[x_l^2]$ at initialisation", title)


def plot_loss_curves(ax, runs: Mapping[str, list[Run]], title: str | None = None, ylim: tuple[float, float] = (0.1, 1e6)):
    """Training loss per step of every run on a log axis; a cross marks where a run diverged."""
    from ..plotting import _finish, color_for

    for arm, rs in runs.items():
        c = color_for(arm)
        for i, r in enumerate(rs):
            ax.semilogy(range(len(r.loss)), r.loss, "-o" if len(r.loss) < 3 else "-", ms=4, color=c, lw=1, alpha=0.8,
                        label=arm if i == 0 else None)
            if r.diverged_at is not None:
                ax.semilogy([r.diverged_at], [min(ylim[1], max(r.loss[-1:] or [ylim[1]]))], "x", color=c, ms=8)
    ax.set_ylim(*ylim)
    return _finish(ax, "SGD step", "training loss (cross-entropy)", title)


def init_variance_explorer(width: int = 128, batch: int = 256):
    """Widget: depth x scheme -> q_l = E[x_l^2] by unit at initialisation, against its closed form."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from ..plotting import new_axes

    style = dict(continuous_update=False)
    controls = dict(depth=widgets.IntSlider(16, min=1, max=64, description="units L", **style),
                    arms=widgets.SelectMultiple(options=list(INIT_ARMS), value=("he", "fixup"), description="schemes"),
                    seed=widgets.IntSlider(0, min=0, max=9, description="seed", **style))

    def show(depth: int, arms: tuple[str, ...], seed: int) -> None:
        profiles = {a: variance_profile(a, depth, width, batch, seeds=[seed]) for a in arms}
        preds = {a: predicted_profile(a, depth, float(q[0, 0])) for a, q in profiles.items()}
        fig, ax = new_axes(width=5.5, height=3.6)
        plot_variance_by_depth(ax, profiles, preds, title=f"{depth} units of {width} features, seed {seed}")
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])
