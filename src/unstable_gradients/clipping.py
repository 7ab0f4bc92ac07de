"""Gradient clipping and L1/L2 weight penalties: the companion texts' remedies for exploding
gradients (seed 001 §3.2; seed 002 §3.1 and §4.1; chapter "Training methods").

Clipping is written from the formulas of seed 002 §4.1, with g the gradient of *all* the given
parameters flattened into one vector and θ the threshold:

- by L2 norm: ||g||_2 = sqrt(sum_i g_i^2); if ||g||_2 > θ then g' = (θ / ||g||_2) g, else g' = g.
  The direction is kept; only the length changes (Pascanu et al. 2013, Alg. 1).
- by value (L∞): g'_i = clamp(g_i, -θ, θ), so ||g'||_∞ <= θ. Every large entry is cut to the same
  size, so the direction *does* change -- the warning in seed 002 ("裁剪操作会破坏梯度的方向":
  clipping damages the gradient's direction), which strictly applies to value clipping only.

Each clipper modifies ``p.grad`` in place, like ``torch.nn.utils.clip_grad_norm_`` and
``clip_grad_value_``, and returns a ``ClipStats`` record so that a training loop can log how often
and how hard it clipped, and how far the update direction turned (``cosine``).

Where we differ from torch: ``torch.nn.utils.clip_grad_norm_`` rescales by θ / (||g|| + 1e-6) as
soon as that factor is below 1; we follow the formula (no epsilon, strict ``>``), so the two agree
to about 1e-6 relative and differ only when ||g|| lies within 1e-6 of θ.

The weight penalties follow seed 001 §3.2 (Loss = (y - W^T x)^2 + α ||W||^2) and the package's
``training.train``: ``l1 * sum |W| + (l2 / 2) * sum ||W||^2`` over weight matrices and kernels,
never biases.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .init import is_weight
from .utils import lookup

__all__ = ["ClipStats", "clip_grad_norm", "clip_grad_value", "CLIPPERS", "get_clipper", "weight_penalty",
           "penalized_weights", "clip_grad_agc", "UNITWISE_CLIPPERS"]


@dataclass
class ClipStats:
    """Telemetry of one clipping call, all over the global gradient vector g (every parameter).

    ``norm_before`` / ``norm_after``: ||g||_2 and ||g'||_2. ``max_abs_before``: ||g||_∞.
    ``clipped``: whether the threshold was exceeded (norm: ||g||_2 > θ; value: ||g||_∞ > θ).
    ``cosine``: cos(g, g') -- 1 for norm clipping, below 1 when value clipping turns the update
    (1 by convention when g = 0). ``fraction_entries_clipped``: share of entries of g that value
    clipping clamped (``nan`` for norm clipping, which rescales instead of clamping).
    """

    method: str
    threshold: float
    norm_before: float
    norm_after: float
    max_abs_before: float
    clipped: bool
    cosine: float
    fraction_entries_clipped: float = float("nan")

    def as_dict(self) -> dict:
        return asdict(self)


def _grads(parameters: Iterable[Tensor] | Tensor) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _check_threshold(threshold: float, what: str) -> float:
    threshold = float(threshold)
    if not threshold > 0 or math.isinf(threshold):
        raise ValueError(f"{what} must be a finite number > 0, got {threshold}")
    return threshold


def _norm(grads: list[Tensor]) -> Tensor:
    """||g||_2 of the concatenated gradients, accumulated in float64 for the telemetry."""
    return torch.sqrt(sum((g.double() ** 2).sum() for g in grads)) if grads else torch.zeros((), dtype=torch.float64)


def _cosine(before: list[Tensor], after: list[Tensor], norm_before: float, norm_after: float) -> float:
    if norm_before == 0.0 or norm_after == 0.0:
        return 1.0
    dot = float(sum((a.double() * b.double()).sum() for a, b in zip(before, after)))
    return max(-1.0, min(1.0, dot / (norm_before * norm_after)))


@torch.no_grad()
def clip_grad_norm(parameters: Iterable[Tensor] | Tensor, max_norm: float) -> ClipStats:
    """Clip by global L2 norm: g <- g * θ / ||g||_2 when ||g||_2 > θ (seed 002 §4.1; Pascanu et
    al. 2013, Alg. 1). Modifies the ``.grad`` of ``parameters`` in place; returns ``ClipStats``."""
    theta = _check_threshold(max_norm, "max_norm")
    grads = _grads(parameters)
    norm = float(_norm(grads))
    max_abs = max((float(g.abs().max()) for g in grads if g.numel()), default=0.0)
    clipped = norm > theta
    if clipped:
        scale = theta / norm
        for g in grads:
            g.mul_(scale)
    norm_after = float(_norm(grads))
    # g' is a positive multiple of g: the direction is unchanged by construction
    return ClipStats("norm", theta, norm, norm_after, max_abs, clipped, 1.0)


@torch.no_grad()
def clip_grad_value(parameters: Iterable[Tensor] | Tensor, clip_value: float) -> ClipStats:
    """Clip by value (L∞): g_i <- clamp(g_i, -θ, θ) (seed 002 §4.1, the L∞ case). Modifies the
    ``.grad`` of ``parameters`` in place; returns ``ClipStats`` with the share of entries clamped
    and the cosine between the gradient before and after (the change of direction)."""
    theta = _check_threshold(clip_value, "clip_value")
    grads = _grads(parameters)
    before = [g.clone() for g in grads]
    norm = float(_norm(grads))
    max_abs = max((float(g.abs().max()) for g in grads if g.numel()), default=0.0)
    n_total = sum(g.numel() for g in grads)
    n_clipped = sum(int((g.abs() > theta).sum()) for g in grads)
    for g in grads:
        g.clamp_(-theta, theta)
    norm_after = float(_norm(grads))
    return ClipStats("value", theta, norm, norm_after, max_abs, n_clipped > 0,
                     _cosine(before, grads, norm, norm_after),
                     n_clipped / n_total if n_total else 0.0)


def _unitwise_norm(x: Tensor) -> Tensor:
    """Norm of each unit, float64, broadcastable to ``x``: rows (output units / channels) of a
    matrix or kernel, the whole tensor for vectors and scalars (biases, gains)."""
    x = x.double()
    if x.dim() <= 1:
        return x.norm()
    return x.flatten(1).norm(dim=1).reshape(-1, *([1] * (x.dim() - 1)))


@torch.no_grad()
def clip_grad_agc(parameters: Iterable[Tensor] | Tensor, clipping: float, eps: float = 1e-3) -> ClipStats:
    """Adaptive gradient clipping, unit-wise (Brock, De, Smith & Simonyan 2021, §4, eq. 3):

        G_i <- lambda * max(||W_i||, eps) / ||G_i|| * G_i   if ||G_i|| / max(||W_i||, eps) > lambda,

    for every unit i (a row of a weight matrix, an output channel of a kernel; a whole bias vector
    or scalar), lambda = ``clipping``, eps = 1e-3 as in the paper. The threshold is relative to the
    weights, so it bounds each unit's step ||Delta W_i|| / ||W_i|| (for SGD, lr * lambda).
    Brock et al. do not clip the final classifier: leave it out of ``parameters``
    (``training.train(..., clip_exclude=("head",))``). Modifies ``.grad`` in place; ``ClipStats``
    as for the other clippers, with ``fraction_entries_clipped`` the share of gradient entries in
    clipped units."""
    lam = _check_threshold(clipping, "clipping")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    pairs = [(p, p.grad) for p in parameters if p.grad is not None]
    grads = [g for _, g in pairs]
    before = [g.clone() for g in grads]
    norm = float(_norm(grads))
    max_abs = max((float(g.abs().max()) for g in grads if g.numel()), default=0.0)
    n_total = sum(g.numel() for g in grads)
    n_clipped = 0
    for p, g in pairs:
        w_norm = _unitwise_norm(p.detach()).clamp(min=eps)
        g_norm = _unitwise_norm(g)
        over = g_norm > lam * w_norm
        factor = torch.where(over, lam * w_norm / g_norm.clamp(min=1e-300), torch.ones_like(g_norm))
        g.copy_((g.double() * factor).to(g.dtype))
        n_clipped += int(over.expand(g.shape).sum()) if g.dim() > 1 else (g.numel() if bool(over) else 0)
    norm_after = float(_norm(grads))
    return ClipStats("agc", lam, norm, norm_after, max_abs, n_clipped > 0,
                     _cosine(before, grads, norm, norm_after), n_clipped / n_total if n_total else 0.0)


#: name -> clipper(parameters, threshold) -> ClipStats
CLIPPERS: dict[str, Callable[[Iterable[Tensor] | Tensor, float], ClipStats]] = {
    "norm": clip_grad_norm,
    "value": clip_grad_value,
}

#: clippers that act unit by unit and need the weights as well as the gradients (no torch twin)
UNITWISE_CLIPPERS: dict[str, Callable[[Iterable[Tensor] | Tensor, float], ClipStats]] = {"agc": clip_grad_agc}


def get_clipper(name: str) -> Callable[[Iterable[Tensor] | Tensor, float], ClipStats]:
    """The clipper called ``name`` (``"norm"``, ``"value"`` or ``"agc"``); unknown names raise a ``ValueError``
    that lists the valid ones. ``CLIPPERS`` act on the global gradient vector, ``UNITWISE_CLIPPERS``
    (``"agc"``) unit by unit."""
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key in UNITWISE_CLIPPERS:
        return UNITWISE_CLIPPERS[key]
    try:
        return lookup(CLIPPERS, name, "clipper")
    except ValueError as err:
        raise ValueError(f"{err}; unit-wise: {', '.join(sorted(UNITWISE_CLIPPERS))}") from None


def penalized_weights(model: nn.Module) -> list[Tensor]:
    """The parameters a weight penalty acts on: matrices and kernels (``init.is_weight``), not
    biases or normalisation gains."""
    return [p for n, p in model.named_parameters() if is_weight(n, p)]


def weight_penalty(model: nn.Module, l1: float = 0.0, l2: float = 0.0) -> Tensor:
    """``l1 * sum_W sum|w| + (l2 / 2) * sum_W sum w^2`` over the weight matrices of ``model``
    (seed 001 §3.2, the α||W|| term; the l2 half matches ``training.train`` and Nielsen's
    ``network2`` with l2 = λ/n). Differentiable; a zero tensor when both coefficients are 0."""
    if l1 < 0 or l2 < 0:
        raise ValueError(f"penalty coefficients must be >= 0, got l1={l1}, l2={l2}")
    weights = penalized_weights(model)
    penalty: Tensor | float = 0.0
    if l2:
        penalty = 0.5 * l2 * sum((w**2).sum() for w in weights)
    if l1:
        penalty = penalty + l1 * sum(w.abs().sum() for w in weights)
    if isinstance(penalty, float):
        ref = weights[0] if weights else next(model.parameters(), torch.zeros(()))
        return torch.zeros((), dtype=ref.dtype, device=ref.device)
    return penalty
