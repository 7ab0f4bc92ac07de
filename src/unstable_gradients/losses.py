"""Loss functions with their gradients with respect to the network output.

Each loss maps ``(output, target)`` to a scalar averaged over the batch, and ``loss.grad``
returns de/d(output) in closed form, which starts the hand-written backward passes.

- ``mse``: e = mean_batch 1/2 ||o - y||^2 (the survey's squared loss, §1.4.2; seed 004's MSE
  uses the mean over classes instead: ``mse_mean``).
- ``cross_entropy``: softmax cross-entropy over logits, integer class targets.
- ``bce_with_logits``: Nielsen's cross-entropy cost for sigmoid output units,
  e = -mean_batch sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)], a = sigmoid(logits), one-hot y.
  Its output delta is a - y (Nielsen ch. 3, eq. 66).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .utils import lookup

__all__ = ["Loss", "LOSSES", "get_loss"]


def _as_float_target(output: Tensor, target: Tensor) -> Tensor:
    """Integer class labels become one-hot rows matching ``output``."""
    if target.dtype in (torch.int64, torch.int32, torch.uint8) and output.dim() == 2 and target.dim() == 1:
        if target.shape[0] != output.shape[0]:
            raise ValueError(f"{target.shape[0]} labels for a batch of {output.shape[0]} outputs")
        return F.one_hot(target.long(), output.shape[1]).to(output.dtype)
    if target.shape != output.shape:
        raise ValueError(f"target shape {tuple(target.shape)} does not match output {tuple(output.shape)}")
    return target.to(output.dtype)


def _batch(output: Tensor) -> int:
    return output.shape[0] if output.dim() > 1 else 1


@dataclass(frozen=True)
class Loss:
    """A named loss: ``value(output, target)`` and its gradient ``grad(output, target)``."""

    name: str
    value: Callable[[Tensor, Tensor], Tensor]
    grad: Callable[[Tensor, Tensor], Tensor]

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        return self.value(output, target)


def _mse(o: Tensor, y: Tensor) -> Tensor:
    return 0.5 * ((o - _as_float_target(o, y)) ** 2).sum() / _batch(o)


def _mse_grad(o: Tensor, y: Tensor) -> Tensor:
    return (o - _as_float_target(o, y)) / _batch(o)


def _mse_mean(o: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(o, _as_float_target(o, y))


def _mse_mean_grad(o: Tensor, y: Tensor) -> Tensor:
    return 2 * (o - _as_float_target(o, y)) / o.numel()


def _ce(o: Tensor, y: Tensor) -> Tensor:
    if y.dim() != 1 or y.dtype.is_floating_point:
        raise ValueError("cross_entropy needs integer class labels of shape (batch,)")
    return F.cross_entropy(o, y.long())


def _ce_grad(o: Tensor, y: Tensor) -> Tensor:
    return (torch.softmax(o, dim=1) - _as_float_target(o, y)) / _batch(o)


def _bce(o: Tensor, y: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(o, _as_float_target(o, y), reduction="sum") / _batch(o)


def _bce_grad(o: Tensor, y: Tensor) -> Tensor:
    return (torch.sigmoid(o) - _as_float_target(o, y)) / _batch(o)


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", _mse, _mse_grad),
    "mse_mean": Loss("mse_mean", _mse_mean, _mse_mean_grad),
    "cross_entropy": Loss("cross_entropy", _ce, _ce_grad),
    "bce_with_logits": Loss("bce_with_logits", _bce, _bce_grad),
}


def get_loss(name: str | Loss) -> Loss:
    """Look a loss up by name; unknown names raise ``ValueError`` listing the valid ones."""
    if isinstance(name, Loss):
        return name
    return lookup(LOSSES, name, "loss")
