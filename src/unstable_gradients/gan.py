"""Generator losses of a GAN and their gradients: the "vanishing generator gradient" of seed 003.

Goodfellow et al. 2014, §3: the generator G minimises log(1 - D(G(z))), but "early in learning,
when G is poor, D can reject samples with high confidence because they are clearly different
from the training data. In this case, log(1 - D(G(z))) saturates. Rather than training G to
minimize log(1 - D(G(z))) we can train G to maximize log D(G(z))." Goodfellow 2016 (NIPS tutorial,
§3.2.3) calls the first the minimax (saturating) and the second the non-saturating heuristic.

With the discriminator's logit a = logit D(G(z)), D = sigma(a), the two losses G minimises are

    saturating:      l_sat(a) = log(1 - sigma(a)) = -softplus(a),     dl_sat/da = -sigma(a)       -> 0  as D -> 0
    non-saturating:  l_ns(a)  = -log sigma(a)     =  softplus(-a),    dl_ns/da  = -(1 - sigma(a)) -> -1 as D -> 0

so when D is confident a sample is fake (D(G(z)) -> 0) the saturating loss passes back a gradient
|dl/da| = D(G(z)), vanishing, and the non-saturating one 1 - D(G(z)) -> 1. Both are written with
softplus(a) = log(1 + e^a) computed as ``logaddexp(0, a)``, finite for any logit and with the exact
derivative sigmoid(a) (``torch.nn.functional.softplus`` turns linear above a threshold). Beyond the
survey (a GAN aside of seed 003).

Left out on purpose: the discriminator's own loss lives in ``experiments.gan_exp`` (binary
cross-entropy on logits); the Wasserstein loss (Arjovsky et al. 2017) is discussed, not implemented.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .utils import lookup

__all__ = ["GeneratorLoss", "GENERATOR_LOSSES", "get_generator_loss", "saturating_loss", "non_saturating_loss",
           "saturating_grad", "non_saturating_grad"]


def saturating_loss(logits: Tensor) -> Tensor:
    """log(1 - D(G(z))) per sample, = -softplus(a) (Goodfellow et al. 2014, eq. 1, the generator's term)."""
    return -torch.logaddexp(torch.zeros_like(logits), logits)


def saturating_grad(logits: Tensor) -> Tensor:
    """d/da log(1 - sigma(a)) = -sigma(a): vanishes as D(G(z)) = sigma(a) -> 0."""
    return -torch.sigmoid(logits)


def non_saturating_loss(logits: Tensor) -> Tensor:
    """-log D(G(z)) per sample, = softplus(-a) (Goodfellow et al. 2014, §3; Goodfellow 2016, §3.2.3)."""
    return torch.logaddexp(torch.zeros_like(logits), -logits)


def non_saturating_grad(logits: Tensor) -> Tensor:
    """d/da (-log sigma(a)) = -(1 - sigma(a)) = -sigma(-a): tends to -1 as D(G(z)) -> 0."""
    return -torch.sigmoid(-logits)


@dataclass(frozen=True)
class GeneratorLoss:
    """A generator loss l(a) of the discriminator's logit and its analytic derivative dl/da (per sample)."""

    name: str
    loss: Callable[[Tensor], Tensor]
    grad: Callable[[Tensor], Tensor]

    def __call__(self, logits: Tensor) -> Tensor:
        """The batch mean of l(a), the quantity G minimises."""
        return self.loss(logits).mean()


GENERATOR_LOSSES: dict[str, GeneratorLoss] = {
    "saturating": GeneratorLoss("saturating", saturating_loss, saturating_grad),
    "non_saturating": GeneratorLoss("non_saturating", non_saturating_loss, non_saturating_grad),
}


def get_generator_loss(name: str | GeneratorLoss) -> GeneratorLoss:
    """A ``GeneratorLoss`` by name (``saturating``, ``non_saturating``); unknown names list the valid ones."""
    return name if isinstance(name, GeneratorLoss) else lookup(GENERATOR_LOSSES, name, "generator loss")
