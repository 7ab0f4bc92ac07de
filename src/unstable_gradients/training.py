"""One small, fast training loop used by every chapter.

Data are pre-loaded tensors; mini-batches are index slices of a seeded permutation (no
DataLoader, no per-sample Python). The loop can record per-layer gradient norms, and when the
loss or a gradient stops being finite it stops with a ``Divergence`` that says at which step
and in which layer the first non-finite value appeared, rather than returning NaN curves.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .clipping import get_clipper, weight_penalty
from .diagnostics import parameter_grad_norms, weighted_layers
from .losses import get_loss
from .optim import OPTIMIZERS  # the registry lives in optim.py (survey §3.2: NGD, BNGD, ...)
from .utils import lookup

__all__ = ["TrainResult", "Divergence", "TrainingDiverged", "train", "evaluate", "OPTIMIZERS",
           "first_nonfinite_layer"]


@dataclass
class Divergence:
    """Where training stopped: step (0-based, counted over all epochs), epoch, the first layer
    whose output (forward) or gradient (backward) was non-finite, and which of the two
    (``where="loss"`` when every layer was finite and only the loss overflowed)."""

    step: int
    epoch: int
    layer: str
    where: str
    loss: float

    def __str__(self) -> str:
        return (f"diverged at step {self.step} (epoch {self.epoch}): first non-finite {self.where} "
                f"in layer {self.layer!r} (loss={self.loss:.4g})")


class TrainingDiverged(RuntimeError):
    """Raised by ``train(..., on_divergence="raise")``; ``.divergence`` holds the details."""

    def __init__(self, divergence: Divergence) -> None:
        super().__init__(str(divergence))
        self.divergence = divergence


@dataclass
class TrainResult:
    """What ``train`` returns. Per-step lists are aligned with ``steps``; per-epoch with ``epochs``.

    ``grad_norms[name]`` (when recorded) is a list over recorded steps of that layer's weight-
    gradient norm; ``bias_grad_norms`` likewise for biases (Nielsen's speed of learning).

    With ``train(..., clip=...)`` the ``clip_*`` lists and ``clipped`` hold, per step (aligned
    with ``steps``), the ``clipping.ClipStats`` of that step: global gradient L2 norm before and
    after clipping, whether the threshold was exceeded, the cosine between the gradient before
    and after, and (value clipping only, else nan) the share of gradient entries clamped.
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    grad_steps: list[int] = field(default_factory=list)
    grad_norms: dict[str, list[float]] = field(default_factory=dict)
    bias_grad_norms: dict[str, list[float]] = field(default_factory=dict)
    clip_norm_before: list[float] = field(default_factory=list)
    clip_norm_after: list[float] = field(default_factory=list)
    clipped: list[bool] = field(default_factory=list)
    clip_cosine: list[float] = field(default_factory=list)
    clip_fraction_entries: list[float] = field(default_factory=list)
    diverged: Divergence | None = None

    @property
    def ok(self) -> bool:
        return self.diverged is None

    @property
    def fraction_clipped(self) -> float:
        """Share of steps at which the clipper fired; ``nan`` when training did not clip."""
        return sum(self.clipped) / len(self.clipped) if self.clipped else float("nan")


def first_nonfinite_layer(model: nn.Module, X: Tensor) -> str | None:
    """Run ``model(X)`` and return the name of the first module (in execution order) whose output
    is non-finite, or ``None`` when the whole forward pass is finite."""
    found: list[str] = []
    handles = []

    def hook(name):
        def fn(_m, _i, out):
            if not found and isinstance(out, Tensor) and not torch.isfinite(out).all():
                found.append(name)
        return fn

    for name, module in model.named_modules():
        if name and not list(module.children()):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(X)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def _grads_finite(model: nn.Module) -> bool:
    """Fast check that every gradient is finite: one fused norm per parameter, then one test.
    A norm can overflow while every entry is finite; ``_first_nonfinite_grad`` then decides."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


def _first_nonfinite_grad(model: nn.Module) -> str | None:
    """Backward runs output-first, so the *last* weighted layer (in forward order) with a
    non-finite gradient is where the backward pass first broke."""
    bad = [name for name, m in weighted_layers(model)
           if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in m.parameters(recurse=False))]
    return bad[-1] if bad else None


@torch.no_grad()
def evaluate(model: nn.Module, X: Tensor, y: Tensor, loss: str = "cross_entropy", batch_size: int = 5000) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``(X, y)``; accuracy is nan for non-class targets."""
    lossf = get_loss(loss)
    was_training = model.training
    model.eval()
    total, correct = 0.0, 0
    for i in range(0, len(X), batch_size):
        out = model(X[i : i + batch_size])
        total += float(lossf(out, y[i : i + batch_size])) * len(out)
        if y.dim() == 1 and not y.dtype.is_floating_point:
            correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    acc = correct / len(X) if y.dim() == 1 and not y.dtype.is_floating_point else float("nan")
    return total / len(X), acc


def train(model: nn.Module, X: Tensor, y: Tensor, *, epochs: int = 1, batch_size: int = 100, lr: float = 0.1,
          optimizer: str | torch.optim.Optimizer = "sgd", loss: str = "cross_entropy", l2: float = 0.0, seed: int = 0,
          optimizer_kwargs: dict | None = None, test_data: tuple[Tensor, Tensor] | None = None,
          record_grads_every: int = 0, eval_every_epoch: bool = True, progress: bool = True,
          on_divergence: str = "stop", callback: Callable[[int, nn.Module], None] | None = None,
          clip: str | None = None, clip_value: float | None = None, l1: float = 0.0,
          lr_schedule: Callable[[int], float] | None = None, clip_exclude: tuple[str, ...] = ()) -> TrainResult:
    """Train ``model`` on pre-loaded ``(X, y)`` with mini-batch gradient descent.

    ``l2`` adds (l2 / 2) * sum ||W||^2 and ``l1`` adds l1 * sum |W| over weight matrices (not
    biases; ``clipping.weight_penalty``, seed 001 §3.2), as in Nielsen's ``network2`` where
    l2 = lambda / n; the recorded loss includes the penalty. ``clip`` (``"norm"`` or ``"value"``,
    see ``clipping.CLIPPERS``) clips the gradient of all parameters before every optimizer step,
    with threshold ``clip_value`` (the maximal global L2 norm, or the maximal |g_i|), and records
    its telemetry in the result's ``clip_*`` lists; a non-finite gradient is still a divergence
    (it is detected before clipping). ``clip="agc"`` is adaptive gradient clipping
    (``clipping.clip_grad_agc``, ``clip_value`` = lambda); ``clip_exclude`` names modules (e.g.
    ``("head",)``) whose parameters are not clipped and not in the telemetry (Brock et al. 2021
    do not clip the classifier). ``record_grads_every=k`` records per-layer weight and bias
    gradient norms every k steps (and at step 0), before clipping. ``on_divergence``: ``"stop"``
    returns early with ``result.diverged`` set (and a warning); ``"raise"`` raises
    ``TrainingDiverged``.
    The mini-batch order depends only on ``seed``.
    ``optimizer`` is a name from ``OPTIMIZERS`` (built with ``lr`` and ``optimizer_kwargs``) or an
    optimizer already built over ``model``'s parameters (then ``lr`` is not used and
    ``optimizer_kwargs`` must be empty). ``lr_schedule(t)`` multiplies the base learning rate at
    step t (``torch.optim.lr_scheduler.LambdaLR``; e.g. ``optim.lr_schedule("cosine", warmup=...)``).
    """
    if on_divergence not in ("stop", "raise"):
        raise ValueError(f"on_divergence must be 'stop' or 'raise', got {on_divergence!r}")
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if batch_size < 1 or epochs < 0 or lr <= 0:
        raise ValueError("need batch_size >= 1, epochs >= 0 and lr > 0")
    if l1 < 0 or l2 < 0:
        raise ValueError(f"weight penalties must be >= 0, got l1={l1}, l2={l2}")
    clipper = None
    if clip_exclude and clip is None:
        raise ValueError("clip_exclude was given but clip is None")
    clip_exclude = (clip_exclude,) if isinstance(clip_exclude, str) else tuple(clip_exclude)
    clip_params = [p for name, p in model.named_parameters()
                   if not any(name == e or name.startswith(e + ".") for e in clip_exclude)]
    if clip is not None:
        clipper = get_clipper(clip)
        if clip_value is None:
            raise ValueError(f"clip={clip!r} needs a threshold: pass clip_value (max L2 norm for 'norm', "
                             "max |g_i| for 'value')")
        if not clip_value > 0 or math.isinf(clip_value):
            raise ValueError(f"clip_value must be a finite number > 0, got {clip_value}")
    elif clip_value is not None:
        raise ValueError("clip_value was given but clip is None: pass clip='norm' or clip='value'")
    lossf = get_loss(loss)
    if isinstance(optimizer, torch.optim.Optimizer):
        if optimizer_kwargs:
            raise ValueError("optimizer_kwargs are for an optimizer given by name, not for a built optimizer")
        opt = optimizer
    else:
        opt = lookup(OPTIMIZERS, optimizer, "optimizer")(model.parameters(), lr=lr, **(optimizer_kwargs or {}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule) if lr_schedule is not None else None
    gen = torch.Generator().manual_seed(seed)
    result = TrainResult()
    n, step = len(X), 0
    steps_per_epoch = math.ceil(n / batch_size)
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc="training", leave=False)
    model.train()
    try:
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen).to(X.device)
            running = 0.0
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                xb, yb = X[idx], y[idx]
                opt.zero_grad(set_to_none=True)
                out = model(xb)
                value = lossf(out, yb)
                if l1 or l2:
                    value = value + weight_penalty(model, l1=l1, l2=l2)
                if torch.isfinite(value):
                    value.backward()
                finite_loss = bool(torch.isfinite(value))
                bad_grad = _first_nonfinite_grad(model) if finite_loss and not _grads_finite(model) else None
                if not torch.isfinite(value) or bad_grad:
                    layer = first_nonfinite_layer(model, xb)
                    where = "output" if layer else ("gradient" if bad_grad else "loss")
                    div = Divergence(step, epoch, layer or bad_grad or "loss", where, float(value.detach()))
                    if on_divergence == "raise":
                        raise TrainingDiverged(div)
                    warnings.warn(str(div), RuntimeWarning, stacklevel=2)
                    result.diverged = div
                    return result
                if record_grads_every and step % record_grads_every == 0:
                    result.grad_steps.append(step)
                    for name, w, b in parameter_grad_norms(model):
                        result.grad_norms.setdefault(name, []).append(w)
                        result.bias_grad_norms.setdefault(name, []).append(b)
                if clipper is not None:
                    stats = clipper(clip_params, clip_value)
                    result.clip_norm_before.append(stats.norm_before)
                    result.clip_norm_after.append(stats.norm_after)
                    result.clipped.append(stats.clipped)
                    result.clip_cosine.append(stats.cosine)
                    result.clip_fraction_entries.append(stats.fraction_entries_clipped)
                opt.step()
                if scheduler is not None:
                    scheduler.step()
                if callback is not None:
                    callback(step, model)
                result.steps.append(step)
                result.loss.append(float(value.detach()))
                running += result.loss[-1] * len(idx)
                step += 1
                bar.update(1)
            result.epochs.append(epoch + 1)
            result.epoch_loss.append(running / n)
            if eval_every_epoch:
                result.train_acc.append(evaluate(model, X, y, loss)[1])
                if test_data is not None:
                    tl, ta = evaluate(model, *test_data, loss)
                    result.test_loss.append(tl)
                    result.test_acc.append(ta)
    finally:
        bar.close()
    return result
