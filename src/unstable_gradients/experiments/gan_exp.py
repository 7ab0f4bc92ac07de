"""The GAN aside (chapter ``future/06_gan_losses``; seed 003's "vanishing gradients" of GANs).

A one-dimensional GAN, small enough for a CPU in seconds: real data N(4, 0.5^2), a generator
G: z ~ N(0, 1) -> x and a discriminator D: x -> logit, both two-hidden-layer MLPs
(``models.MLP``). Goodfellow et al. 2014, §3: when D rejects G's samples with confidence, the
saturating generator loss log(1 - D(G(z))) passes back almost no gradient, the non-saturating
-log D(G(z)) does (``gan.GENERATOR_LOSSES``).

Every function returns plain data that ``plotting`` draws:

- ``analytic_slopes``: |dl/da| against D(G(z)) for each generator loss (exact: D and 1 - D).
- ``build_gan`` / ``real_samples`` / ``discriminator_step``: the pieces.
- ``generator_gradient``: ||dl/dtheta_G|| under one loss for a fixed D and batch of z.
- ``confidence_sweep``: D trained against a fixed G for more and more steps; at each checkpoint
  the mean D(G(z)) and G's gradient norm under each loss (several seeds).
- ``train_gan`` / ``gan_sweep`` / ``steps_to_reach``: alternating training after D was pre-trained to be
  confident; G's sample mean, D(G(z)) and G's gradient norm per step; when G's mean first gets near 4.

Left out on purpose: images, convolutional nets, mode collapse, the Wasserstein loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..gan import GENERATOR_LOSSES, get_generator_loss
from ..models import MLP
from ..training import OPTIMIZERS
from ..utils import lookup

__all__ = ["REAL_MEAN", "REAL_STD", "analytic_slopes", "real_samples", "build_gan", "discriminator_step",
           "generator_gradient", "confidence_sweep", "GanRun", "train_gan", "gan_sweep", "steps_to_reach"]

REAL_MEAN, REAL_STD = 4.0, 0.5


def analytic_slopes(d_values: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """|dl/da| of every generator loss at D(G(z)) = d, from ``gan.GeneratorLoss.grad`` at a = logit(d)."""
    d = torch.as_tensor(np.asarray(d_values, dtype=float), dtype=torch.float64)
    if bool(((d <= 0) | (d >= 1)).any()):
        raise ValueError("D(G(z)) values must lie strictly between 0 and 1")
    a = torch.log(d) - torch.log1p(-d)
    return {name: g.grad(a).abs().numpy() for name, g in GENERATOR_LOSSES.items()}


def real_samples(n: int, generator: torch.Generator | None = None) -> Tensor:
    """n samples of the real data, N(REAL_MEAN, REAL_STD^2), shape (n, 1)."""
    return REAL_MEAN + REAL_STD * torch.randn(n, 1, generator=generator)


def build_gan(seed: int, hidden: int = 16) -> tuple[MLP, MLP]:
    """(G, D): 1 -> hidden -> hidden -> 1 leaky-ReLU MLPs with He-normal weights, built after ``set_seed``-style seeding."""
    torch.manual_seed(seed)
    G = MLP([1, hidden, hidden, 1], activation="leaky_relu", init="he_normal")
    D = MLP([1, hidden, hidden, 1], activation="leaky_relu", init="he_normal")
    return G, D


def discriminator_step(D: nn.Module, G: nn.Module, opt: torch.optim.Optimizer, batch: int,
                       generator: torch.Generator) -> float:
    """One step on D's binary cross-entropy (real -> 1, G(z) -> 0; Goodfellow et al. 2014, Alg. 1); returns the loss."""
    x_real = real_samples(batch, generator)
    with torch.no_grad():
        x_fake = G(torch.randn(batch, 1, generator=generator))
    logits = D(torch.cat([x_real, x_fake]))
    target = torch.cat([torch.ones(batch, 1), torch.zeros(batch, 1)])
    loss = F.binary_cross_entropy_with_logits(logits, target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def _grad_norm(module: nn.Module) -> float:
    """The global L2 norm of the gradients of all of ``module``'s parameters."""
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()])))


def generator_gradient(G: nn.Module, D: nn.Module, loss: str, z: Tensor) -> tuple[float, float]:
    """(||dl/dtheta_G||, mean D(G(z))) for the generator loss ``loss`` on the batch ``z``; D is not changed."""
    lossf = get_generator_loss(loss)
    G.zero_grad()
    logits = D(G(z))
    lossf(logits).backward()
    norm = _grad_norm(G)
    D.zero_grad()
    return norm, float(torch.sigmoid(logits).mean().detach())


def confidence_sweep(checkpoints: Sequence[int] = (0, 10, 30, 100, 300), seeds: Sequence[int] = (0, 1, 2),
                     lr: float = 1e-2, batch: int = 128) -> dict[str, np.ndarray]:
    """Train D (Adam, ``lr``) against a fixed G; at each number of D steps in ``checkpoints`` record the mean
    D(G(z)) (``"d_fake"``) and G's gradient norm under every generator loss (one key per loss), each an
    array (seeds, checkpoints). The same z batch serves both losses."""
    if list(checkpoints) != sorted(checkpoints) or min(checkpoints) < 0:
        raise ValueError(f"checkpoints must be non-negative and increasing, got {checkpoints}")
    out = {k: np.zeros((len(seeds), len(checkpoints))) for k in ("d_fake", *GENERATOR_LOSSES)}
    for i, seed in enumerate(seeds):
        G, D = build_gan(seed)
        opt = torch.optim.Adam(D.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(batch, 1, generator=torch.Generator().manual_seed(seed + 10_000))
        done = 0
        for j, c in enumerate(checkpoints):
            for _ in range(c - done):
                discriminator_step(D, G, opt, batch, gen)
            done = c
            for name in GENERATOR_LOSSES:
                out[name][i, j], out["d_fake"][i, j] = generator_gradient(G, D, name, z)
    return out


@dataclass
class GanRun:
    """One GAN run: per generator step, the mean of G's samples, mean D(G(z)) and ||dl/dtheta_G||."""

    loss: str
    seed: int
    optimizer: str
    g_mean: list[float] = field(default_factory=list)
    d_fake: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)


def train_gan(loss: str, seed: int = 0, steps: int = 300, d_pretrain: int = 300, optimizer: str = "sgd",
              lr: float = 1e-2, d_lr: float = 1e-2, batch: int = 128) -> GanRun:
    """Pre-train D for ``d_pretrain`` steps against the initial G (so it is confident), then alternate one D step
    (Adam, ``d_lr``) and one G step under ``loss`` with ``optimizer`` (``training.OPTIMIZERS``) for ``steps``
    steps. Plain SGD shows the gradient's size most directly; Goodfellow et al. 2014 used momentum
    (``optimizer="momentum"``), and Adam divides the gradient's scale out of the step."""
    lossf = get_generator_loss(loss)
    G, D = build_gan(seed)
    d_opt = torch.optim.Adam(D.parameters(), lr=d_lr)
    g_opt = lookup(OPTIMIZERS, optimizer, "optimizer")(G.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(d_pretrain):
        discriminator_step(D, G, d_opt, batch, gen)
    run = GanRun(lossf.name, seed, optimizer)
    for _ in range(steps):
        discriminator_step(D, G, d_opt, batch, gen)
        z = torch.randn(batch, 1, generator=gen)
        x = G(z)
        logits = D(x)
        g_opt.zero_grad()
        lossf(logits).backward()
        run.grad_norm.append(_grad_norm(G))
        g_opt.step()
        run.g_mean.append(float(x.mean().detach()))
        run.d_fake.append(float(torch.sigmoid(logits).mean().detach()))
    return run


def gan_sweep(seeds: Sequence[int] = (0, 1, 2), losses: Sequence[str] = tuple(GENERATOR_LOSSES), **kw) -> dict[str, list[GanRun]]:
    """``train_gan`` for every loss and seed: {loss: [run per seed]}."""
    return {name: [train_gan(name, s, **kw) for s in seeds] for name in losses}


def steps_to_reach(run: GanRun, tol: float = 1.0) -> float:
    """The first generator step with |mean G(z) - REAL_MEAN| < ``tol`` (``nan`` if never within the run)."""
    hit = np.flatnonzero(np.abs(np.asarray(run.g_mean) - REAL_MEAN) < tol)
    return float(hit[0]) if hit.size else float("nan")
