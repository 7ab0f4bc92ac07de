"""Experiments of survey §3.2, "training algorithms" (chapter ``future/02_optimizers``).

Every function returns plain data (dicts, lists, ``optim.UpdateProfile``) that ``plotting`` draws.

- ``DEFAULT_LRS``: the learning rate of each optimizer, not tuned: torch's defaults for Adagrad,
  RMSProp and Adam (= Kingma & Ba 2015's α = 0.001); 0.1 for the methods without an adaptive
  scale (SGD, momentum, Nesterov, NGD, BNGD: for the last two, the length of a step).
- ``make_optimizer``: an optimizer of ``optim.OPTIMIZERS`` for a model; BNGD normalises layer
  by layer (``blocks="group"`` over ``optim.layer_param_groups``), as Yu et al. 2017 do.
- ``first_step_profiles``: the gradient, update and update/weight ratio of every layer of one
  deep net for the first step of each optimizer (all from the same initial weights and batch).
- ``step_length_checks``: the definitions of NGD (Hazan et al. 2015), BNGD (Yu et al. 2017,
  Alg. 1) and Adam's first step (Kingma & Ba 2015, §2.1: |Δ| ≈ α) measured on that step.
- ``predicted_hidden_ratio``: that first step's update/weight ratio of a hidden layer, from the
  update rules and the initialisation alone, for the methods whose first step ignores ||g||.
- ``optimizer_runs``: training-loss curves of each optimizer over seeds (``smooth`` to read them).
- ``warmup_runs`` / ``warmup_table``: a net at a large learning rate with a constant rate, a
  linear warm-up, and a warm-up followed by cosine decay (``optim.lr_schedule``): which runs
  stop with a non-finite loss or gradient (``training.Divergence``).

Left out on purpose: tuning each optimizer's learning rate (the chapter compares defaults) and
Yu et al.'s adaptive block-normalised variants (AdamNG).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..models import deep_mlp
from ..optim import UpdateProfile, get_optimizer, lr_schedule, update_profile
from ..training import train
from ..utils import set_seed

__all__ = ["DEFAULT_LRS", "ARMS", "make_optimizer", "build_net", "first_step_profiles", "step_length_checks",
           "predicted_hidden_ratio", "smooth", "optimizer_runs", "SCHEDULE_ARMS", "warmup_runs", "warmup_table"]

DEFAULT_LRS: dict[str, float] = {"sgd": 0.1, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.01, "rmsprop": 0.01,
                                 "adam": 0.001, "ngd": 0.1, "bngd": 0.1}
ARMS = ["sgd", "momentum", "adagrad", "rmsprop", "adam", "ngd", "bngd"]


def make_optimizer(name: str, model: nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``model`` at ``lr`` (default ``DEFAULT_LRS[name]``); BNGD per layer."""
    lr = DEFAULT_LRS.get(name.lower(), 0.1) if lr is None else lr
    kw = dict(blocks="group") if name.lower() == "bngd" else {}
    return get_optimizer(name, model, lr, **kw)


def build_net(depth: int, width: int, activation: str = "sigmoid", seed: int = 0, **kwargs) -> nn.Module:
    """The chapter's deep MLP (784 -> width^depth -> 10, LeCun-normal init unless ``init`` is given),
    built after ``set_seed(seed)`` so that every arm starts from the same weights."""
    set_seed(seed)
    return deep_mlp(depth, width, activation=activation, seed=seed, **kwargs)


def first_step_profiles(X: Tensor, y: Tensor, optimizers: Sequence[str] = ARMS, depth: int = 6, width: int = 64,
                        activation: str = "sigmoid", lrs: dict[str, float] | None = None,
                        seed: int = 0) -> dict[str, UpdateProfile]:
    """For each optimizer: a fresh net from ``seed``, one step on the batch ``(X, y)``, measured by
    ``optim.update_profile`` (the gradients are the same for all; the updates are not)."""
    out = {}
    for name in optimizers:
        model = build_net(depth, width, activation, seed)
        opt = make_optimizer(name, model, (lrs or {}).get(name))
        out[name] = update_profile(model, opt, lambda: F.cross_entropy(model(X), y))
    return out


def step_length_checks(X: Tensor, y: Tensor, depth: int = 6, width: int = 64, activation: str = "sigmoid",
                       seed: int = 0) -> dict[str, float]:
    """Measured step lengths against the definitions, on the first step of a fresh net (float32):

    ``ngd``: ||Δw|| over all parameters / lr (1 by Hazan et al. 2015, Alg. 1); ``bngd_max_dev``:
    max over layers of | ||Δw_l|| / lr - 1 | (0 by Yu et al. 2017, Alg. 1); ``adam_median``: the
    median over weights with a non-zero gradient of |Δw|/α (1 by Kingma & Ba 2015, §2.1: the first
    step is α·g/(|g| + ε)); ``adam_below_eps``: the share of those weights whose |g| < ε = 1e-8
    (their step is shorter than α).
    """
    out = {}
    for name in ("ngd", "bngd", "adam"):
        model = build_net(depth, width, activation, seed)
        opt = make_optimizer(name, model)
        lr = opt.param_groups[0]["lr"]
        before = [p.detach().clone() for p in model.parameters()]
        prof = update_profile(model, opt, lambda: F.cross_entropy(model(X), y))
        deltas = [(p.detach() - b).double() for p, b in zip(model.parameters(), before)]
        if name == "ngd":
            out["ngd"] = float(torch.sqrt(sum((d ** 2).sum() for d in deltas))) / lr
        elif name == "bngd":
            out["bngd_max_dev"] = max(abs(u / lr - 1.0) for u in prof.update_norm)
        else:
            g = torch.cat([p.grad.double().flatten() for p in model.parameters()])
            d = torch.cat([x.flatten() for x in deltas])
            nz = g != 0
            out["adam_median"] = float((d[nz].abs() / lr).median())
            out["adam_below_eps"] = float((g[nz].abs() < 1e-8).double().mean())
    return out


def predicted_hidden_ratio(name: str, lr: float, fan_in: int, fan_out: int, alpha: float = 0.99) -> float:
    """The first step's update/weight ratio of a hidden layer with LeCun-normal weights (rms
    1/sqrt(fan_in), so ||w_l|| ≈ sqrt(fan_out)) for the methods whose first step does not depend on
    the gradient's size (all |g_i| >> ε): Adagrad and Adam move each weight by lr (Duchi et al.
    2011; Kingma & Ba 2015, §2.1), RMSProp by lr/sqrt(1 - alpha) (its first average of g² is
    (1 - alpha) g²), so ρ_l ≈ c·lr·sqrt(fan_in); BNGD moves the layer by lr, so ρ_l ≈ lr/sqrt(fan_out).
    SGD, momentum and NGD have no such value: their ratio is proportional to ||g_l||."""
    per_weight = {"adagrad": 1.0, "adam": 1.0, "rmsprop": 1.0 / math.sqrt(1.0 - alpha)}
    if name in per_weight:
        return per_weight[name] * lr * math.sqrt(fan_in)
    if name == "bngd":
        return lr / math.sqrt(fan_out)
    raise ValueError(f"no gradient-free prediction for {name!r}; valid names: adagrad, adam, bngd, rmsprop")


def smooth(values: Sequence[float], k: int = 10) -> np.ndarray:
    """Running mean over the last ``k`` values (fewer at the start), to read noisy loss curves."""
    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - k, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def optimizer_runs(X: Tensor, y: Tensor, optimizers: Sequence[str] = ARMS, seeds: Sequence[int] = (0, 1),
                   depth: int = 6, width: int = 64, activation: str = "sigmoid", epochs: int = 5,
                   batch_size: int = 100, lrs: dict[str, float] | None = None,
                   progress: bool = False) -> dict[str, dict]:
    """Train one net per (optimizer, seed) from the same initial weights per seed; returns, per
    optimizer, ``loss`` (list over seeds of per-step training losses), ``diverged`` (bools) and
    ``final`` (mean loss of the last 10% of steps per seed, nan if diverged)."""
    out: dict[str, dict] = {}
    for name in optimizers:
        res = dict(loss=[], diverged=[], final=[])
        for seed in seeds:
            model = build_net(depth, width, activation, seed)
            opt = make_optimizer(name, model, (lrs or {}).get(name))
            r = train(model, X, y, epochs=epochs, batch_size=batch_size, optimizer=opt, seed=seed,
                      progress=progress, eval_every_epoch=False)
            tail = r.loss[-max(1, len(r.loss) // 10):]
            res["loss"].append(r.loss)
            res["diverged"].append(not r.ok)
            res["final"].append(float(np.mean(tail)) if r.ok else float("nan"))
        out[name] = res
    return out


SCHEDULE_ARMS: dict[str, Callable[[int, int], Callable[[int], float] | None]] = {
    "constant": lambda warmup, total: None,
    "warm-up": lambda warmup, total: lr_schedule("constant", warmup=warmup),
    "warm-up + cosine": lambda warmup, total: lr_schedule("cosine", warmup=warmup, total=total),
}


def warmup_runs(X: Tensor, y: Tensor, lrs: Sequence[float] = (1.0, 2.0), schedules: Sequence[str] = tuple(SCHEDULE_ARMS),
                seeds: Sequence[int] = (0, 1, 2), depth: int = 4, width: int = 100, activation: str = "relu",
                init: str = "he_normal", optimizer: str = "sgd", epochs: int = 3, batch_size: int = 50,
                warmup: int = 60) -> list[dict]:
    """One run per (lr, schedule, seed) of a ReLU net with He init (the initialisation chapter's
    setting) at large learning rates. Each row: lr, schedule, seed, ``diverged`` (the step of the
    first non-finite value, or None), ``final`` (mean of the last 10 losses; nan if diverged),
    ``loss`` (the per-step losses up to the end or the divergence)."""
    rows = []
    steps = epochs * math.ceil(len(X) / batch_size)
    for lr in lrs:
        for sched in schedules:
            if sched not in SCHEDULE_ARMS:
                raise ValueError(f"unknown schedule arm {sched!r}; valid names: {', '.join(SCHEDULE_ARMS)}")
            make_sched = SCHEDULE_ARMS[sched]
            for seed in seeds:
                model = build_net(depth, width, activation, seed, init=init)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a divergence is a result here
                    r = train(model, X, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                              seed=seed, progress=False, eval_every_epoch=False,
                              lr_schedule=make_sched(warmup, steps))
                rows.append(dict(lr=lr, schedule=sched, seed=seed, diverged=r.diverged.step if r.diverged else None,
                                 final=float(np.mean(r.loss[-10:])) if r.ok else float("nan"), loss=r.loss))
    return rows


def warmup_table(rows: list[dict], chance: float = math.log(10)) -> list[dict]:
    """Per (lr, schedule): runs, how many diverged, how many ended near chance (final loss within
    0.05 of ln 10: a net that stopped learning), and the median final loss of the others."""
    table = []
    for key in dict.fromkeys((r["lr"], r["schedule"]) for r in rows):
        rs = [r for r in rows if (r["lr"], r["schedule"]) == key]
        div = [r for r in rs if r["diverged"] is not None]
        stuck = [r for r in rs if r["diverged"] is None and abs(r["final"] - chance) < 0.05]
        learnt = [r["final"] for r in rs if r["diverged"] is None and r not in stuck]
        table.append(dict(lr=key[0], schedule=key[1], runs=len(rs), diverged=len(div), stuck=len(stuck),
                          learnt=len(learnt), median_final=float(np.median(learnt)) if learnt else float("nan"),
                          first_divergence=min((r["diverged"] for r in div), default=None)))
    return table
