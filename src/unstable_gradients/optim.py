"""Training algorithms of survey §3.2: normalised steps, adaptive steps and learning-rate schedules.

- ``NormalizedGD``: a step of fixed length lr along -g/||g||, g the gradient of *all* parameters
  (normalised gradient descent; Hazan, Levy & Shalev-Shwartz 2015; survey §3.2 (1): "train
  along the gradient's direction with a fixed length, ignoring its size").
- ``BlockNormalizedGD``: each block's gradient normalised on its own, g_i/||g_i||, then an
  (optional) momentum step (Yu et al. 2017, arXiv:1707.04822, Alg. 1 with SGD+momentum as the
  step rule). A block is one parameter tensor (``blocks="tensor"``, the default: a layer's weight
  and its bias move separately) or one parameter group (``blocks="group"``); ``layer_param_groups``
  builds one group per weighted layer, Yu et al.'s "each block (layer)".
- ``OPTIMIZERS`` / ``get_optimizer``: the registry the training loop uses (SGD, momentum,
  Nesterov, Adagrad, RMSProp, Adam, NGD, BNGD; seed 003's list plus the survey's §3.2).
- ``update_profile``: for one step of any optimizer on any ``nn.Module``, each weighted layer's
  gradient norm, update norm ||Δw_l|| and update/weight ratio ||Δw_l||/||w_l||.
- ``lr_schedule`` / ``make_scheduler``: linear warm-up followed by a constant, cosine, step or
  linear decay, as a multiplier of the base learning rate (``LambdaLR``).

Left out on purpose: NGD's and BNGD's adaptive variants (Yu et al.'s AdamNG: pass the
normalised gradient to Adam) and line searches.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .diagnostics import weighted_layers
from .utils import lookup

__all__ = ["NormalizedGD", "BlockNormalizedGD", "layer_param_groups", "OPTIMIZERS", "get_optimizer",
           "UpdateProfile", "update_profile", "SCHEDULES", "lr_schedule", "make_scheduler"]

Params = Iterable[Tensor] | Iterable[dict]


def _check_lr_momentum(lr: float, momentum: float) -> None:
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")


class _MomentumStep(torch.optim.Optimizer):
    """Shared step rule: d <- momentum * d + ĝ, p <- p - lr * d, where ĝ is the normalised
    gradient that the subclass computes (``_directions``)."""

    def _apply(self, group: dict, params: list[Tensor], directions: list[Tensor]) -> None:
        for p, d in zip(params, directions):
            if group["momentum"]:
                buf = self.state[p].get("momentum_buffer")
                d = d.clone() if buf is None else buf.mul_(group["momentum"]).add_(d)
                self.state[p]["momentum_buffer"] = d
            p.add_(d, alpha=-group["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step()
        return loss

    def _step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _unit(grads: list[Tensor]) -> list[Tensor] | None:
    """g / ||g|| for the concatenation of ``grads`` (norm in float64); ``None`` when ||g|| = 0,
    so a zero gradient gives no step instead of 0/0 = NaN."""
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    if not norm > 0:
        return None
    return [g / norm.to(g.dtype) for g in grads]


class NormalizedGD(_MomentumStep):
    """Normalised gradient descent: w <- w - lr * g/||g|| with ||g|| taken over every parameter
    of every group together (Hazan et al. 2015, Alg. 1), so with ``momentum=0`` every step has
    Euclidean length exactly ``lr``, whatever the gradient's size. A zero gradient gives no step.
    ``momentum`` accumulates the normalised directions (heavy ball on ĝ, as in Yu et al. 2017)."""

    def __init__(self, params: Params, lr: float, momentum: float = 0.0) -> None:
        _check_lr_momentum(lr, momentum)
        super().__init__(params, dict(lr=lr, momentum=momentum))

    def _step(self) -> None:
        pairs = [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]
        unit = _unit([p.grad for _, p in pairs])
        if unit is None:
            return
        for group in self.param_groups:
            ps = [p for g, p in pairs if g is group]
            self._apply(group, ps, [d for (g, _), d in zip(pairs, unit) if g is group])


class BlockNormalizedGD(_MomentumStep):
    """Block-normalised gradient descent (Yu et al. 2017, Alg. 1): each block's gradient is
    divided by its own norm, ĝ_i = g_i/||g_i||, then w_i <- w_i - lr * ĝ_i (with ``momentum=0``
    every block moves by exactly ``lr``). ``blocks="tensor"``: every parameter tensor is a block;
    ``blocks="group"``: every parameter group is a block (see ``layer_param_groups``). A block
    whose gradient is zero does not move."""

    def __init__(self, params: Params, lr: float, momentum: float = 0.0, blocks: str = "tensor") -> None:
        _check_lr_momentum(lr, momentum)
        if blocks not in ("tensor", "group"):
            raise ValueError(f"blocks must be 'tensor' or 'group', got {blocks!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum, blocks=blocks))

    def _step(self) -> None:
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            blocks = [[p] for p in ps] if group["blocks"] == "tensor" else [ps]
            for block in blocks:
                unit = _unit([p.grad for p in block]) if block else None
                if unit is not None:
                    self._apply(group, block, unit)


def layer_param_groups(model: nn.Module) -> list[dict]:
    """One parameter group per weighted layer of ``model`` (``diagnostics.weighted_layers``: its
    own weight and bias), plus one group per other module that owns parameters (e.g. a norm
    layer's gain), so that ``BlockNormalizedGD(..., blocks="group")`` normalises layer by layer."""
    groups, seen = [], set()
    for name, module in [*weighted_layers(model), *model.named_modules()]:
        ps = [p for p in module.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
        if ps:
            seen.update(id(p) for p in ps)
            groups.append(dict(params=ps, name=name or type(model).__name__))
    return groups


def _sgd_variant(momentum: float, nesterov: bool = False) -> Callable[..., torch.optim.Optimizer]:
    def make(params: Params, lr: float, **kw) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr, momentum=kw.pop("momentum", momentum), nesterov=nesterov, **kw)
    return make


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "momentum": _sgd_variant(0.9),
    "nesterov": _sgd_variant(0.9, nesterov=True),
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "ngd": NormalizedGD,
    "bngd": BlockNormalizedGD,
}


def get_optimizer(name: str, params: nn.Module | Params, lr: float, **kwargs) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (a key of ``OPTIMIZERS``) with learning rate ``lr``.

    ``params`` is a model or its parameters. For ``"bngd"`` with ``blocks="group"`` and a model,
    the groups are the model's layers (``layer_param_groups``).
    """
    make = lookup(OPTIMIZERS, name, "optimizer")
    if isinstance(params, nn.Module):
        params = layer_param_groups(params) if kwargs.get("blocks") == "group" else params.parameters()
    return make(params, lr=lr, **kwargs)


# ---------------------------------------------------------------------------------------------
# What one step does to each layer
# ---------------------------------------------------------------------------------------------


@dataclass
class UpdateProfile:
    """One optimizer step, per weighted layer (forward order): ||g_l||, ||Δw_l|| and ||w_l||
    (before the step), over the layer's own parameters (weight and bias together), and
    ``ratio`` = ||Δw_l|| / ||w_l|| (``nan`` for a layer whose weights are all zero)."""

    loss: float
    layers: list[str] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    update_norm: list[float] = field(default_factory=list)
    weight_norm: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _norm(tensors: list[Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors))) if tensors else float("nan")


def update_profile(model: nn.Module, optimizer: torch.optim.Optimizer, loss_closure: Callable[[], Tensor],
                   restore: bool = False) -> UpdateProfile:
    """Take one step of ``optimizer`` on ``model`` and measure it layer by layer.

    ``loss_closure()`` returns the scalar loss (a forward pass); this function zeroes the
    gradients, back-propagates it, reads ||g_l||, steps, and reads Δw_l = w_l(after) - w_l(before)
    for each layer of ``diagnostics.weighted_layers(model)``. With ``restore=True`` the weights
    are put back afterwards (the optimizer's state keeps the step).
    """
    layers = weighted_layers(model)
    params = [[p for p in m.parameters(recurse=False) if p.requires_grad] for _, m in layers]
    optimizer.zero_grad(set_to_none=True)
    loss = loss_closure()
    if not torch.isfinite(loss):
        raise ValueError(f"the loss is not finite ({float(loss)}); no step was taken")
    loss.backward()
    before = [[p.detach().clone() for p in ps] for ps in params]
    optimizer.step()
    prof = UpdateProfile(loss=float(loss.detach()))
    with torch.no_grad():
        for (name, _), ps, old in zip(layers, params, before):
            w = _norm(old)
            du = _norm([p - o for p, o in zip(ps, old)])
            prof.layers.append(name)
            prof.grad_norm.append(_norm([p.grad for p in ps if p.grad is not None]))
            prof.weight_norm.append(w)
            prof.update_norm.append(du)
            prof.ratio.append(du / w if w > 0 else float("nan"))
            if restore:
                for p, o in zip(ps, old):
                    p.copy_(o)
    return prof


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules (multipliers of the base lr, for LambdaLR)
# ---------------------------------------------------------------------------------------------


def _constant(t: int, span: int, **_) -> float:
    return 1.0


def _cosine(t: int, span: int, min_factor: float = 0.0, **_) -> float:
    """Cosine decay from 1 to ``min_factor`` over ``span`` steps (Loshchilov & Hutter 2017, eq. 5)."""
    return min_factor + 0.5 * (1.0 - min_factor) * (1.0 + math.cos(math.pi * min(t, span) / span))


def _linear(t: int, span: int, min_factor: float = 0.0, **_) -> float:
    return 1.0 - (1.0 - min_factor) * min(t, span) / span


def _step(t: int, span: int, step_size: int = 1, gamma: float = 0.1, **_) -> float:
    return gamma ** (t // step_size)


SCHEDULES: dict[str, Callable[..., float]] = {"constant": _constant, "cosine": _cosine, "linear": _linear,
                                              "step": _step}


def lr_schedule(kind: str = "constant", *, warmup: int = 0, total: int | None = None, min_factor: float = 0.0,
                step_size: int | None = None, gamma: float = 0.1) -> Callable[[int], float]:
    """The multiplier f(t) of the base learning rate at step t = 0, 1, ... (``LambdaLR``'s rule).

    Linear warm-up over the first ``warmup`` steps, f(t) = (t + 1)/warmup for t < warmup (Goyal et
    al. 2017, §2.2, "gradual warmup"), then the decay ``kind`` (a key of ``SCHEDULES``) on the
    step s = t - warmup: ``constant`` 1; ``cosine`` min_factor + (1 - min_factor)(1 + cos(π s/S))/2
    and ``linear`` 1 - (1 - min_factor) s/S with S = total - warmup (both stay at min_factor
    after ``total``); ``step`` gamma^floor(s/step_size).
    """
    rule = lookup(SCHEDULES, kind, "schedule")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    span = 1
    if kind in ("cosine", "linear"):
        if total is None or total <= warmup:
            raise ValueError(f"schedule {kind!r} needs total > warmup (got total={total}, warmup={warmup})")
        span = total - warmup
    if kind == "step" and (step_size is None or step_size < 1):
        raise ValueError(f"schedule 'step' needs step_size >= 1, got {step_size}")

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        return rule(t - warmup, span, min_factor=min_factor, step_size=step_size, gamma=gamma)

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str = "constant", **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR(optimizer, lr_schedule(kind, **kwargs))``: call ``.step()`` after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(kind, **kwargs))
