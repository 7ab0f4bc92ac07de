"""Residual nets without normalisation (after 2018, beyond the survey): Fixup, ReZero, SkipInit.

All three start from the pre-activation unit of ``models.residual`` (He et al. 2016b),
x_{l+1} = x_l + F(x_l), F = W_2 sigma(W_1 sigma(x_l)), without batch norm, and make the residual
branch small (here: zero) at initialisation, so that the variance of x_l cannot double from unit
to unit as it does with He's init (Var(F(x)) = Var(x) for a ReLU branch, so
Var(x_{l+1}) = 2 Var(x_l); De & Smith 2020, §2).

- **Fixup** (Zhang, Dauphin & Ma 2019, ICLR, §3, "Fixup initialization", rules 1-3): (1) the
  classification layer and the last layer of each residual branch start at 0; (2) every other
  layer has a standard (He) init, and the weight layers inside the branches are scaled by
  L^{-1/(2m-2)} (L branches of m layers each; ``fixup_scale``); (3) a scalar multiplier (1) in
  every branch and a scalar bias (0) before each linear layer and activation. The biases sit as in
  the authors' basic block (b_1a before W_1, b_1b before sigma, b_2a before W_2, the multiplier
  and b_2b after W_2), in the pre-activation order:
  F(x) = s (W_2 (sigma(W_1 (sigma(x) + b_1a) + b_1b) + b_2a)) + b_2b.
- **ReZero** (Bachlechner et al. 2020, "ReZero is all you need"): x_{l+1} = x_l + alpha_l F(x_l),
  one learnable scalar alpha_l per unit, initialised to 0.
- **SkipInit** (De & Smith 2020, NeurIPS, §4): a learnable scalar multiplier alpha at the end of
  each residual branch in place of batch norm, initialised to 0 or to a small constant
  (<= 1/sqrt(d) for d units). At init it is the same unit as ReZero's; ``alpha`` sets the constant.

Where the code departs from the papers: dense (MLP) units instead of convolutional ones; the
weight layers keep their own (zero-initialised) per-unit biases next to Fixup's scalar ones; the
stem has He's init and is not scaled. ``NormFreeResNet(scheme="none")`` is the plain He-init
pre-activation net (with ``norm="batch"``, the batch-normalised reference).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..utils import lookup
from .residual import PreActResidualBlock, ResidualNet

__all__ = ["fixup_scale", "ScalarResidualBlock", "ReZeroBlock", "SkipInitBlock", "FixupBlock", "NORMFREE_BLOCKS",
           "NormFreeResNet", "fixup_init_"]


def fixup_scale(num_branches: int, branch_layers: int = 2) -> float:
    """L^{-1/(2m-2)}: Fixup's factor for the weight layers of L branches of m layers (Zhang et al.
    2019, §3, rule 2); L^{-1/2} for the two-layer units used here. Needs L >= 1 and m >= 2."""
    if num_branches < 1 or branch_layers < 2:
        raise ValueError(f"Fixup needs L >= 1 branches of m >= 2 layers, got L={num_branches}, m={branch_layers}")
    return float(num_branches) ** (-1.0 / (2 * branch_layers - 2))


class ScalarResidualBlock(PreActResidualBlock):
    """x_{l+1} = x_l + alpha F(x_l) with a learnable scalar ``alpha`` (ReZero / SkipInit).

    ``residual(x)`` returns the scaled branch alpha F(x); other arguments as
    ``PreActResidualBlock`` (no normalisation by default)."""

    def __init__(self, features: int, alpha: float = 0.0, **kwargs) -> None:
        super().__init__(features, **kwargs)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def residual(self, x: Tensor) -> Tensor:
        return self.alpha * super().residual(x)


class ReZeroBlock(ScalarResidualBlock):
    """ReZero unit, x + alpha F(x) with alpha = 0 at init (Bachlechner et al. 2020)."""


class SkipInitBlock(ScalarResidualBlock):
    """SkipInit unit: a scalar alpha at the end of the branch, 0 or small (<= 1/sqrt(d)) at init
    (De & Smith 2020, §4)."""


class FixupBlock(PreActResidualBlock):
    """Pre-activation unit with Fixup's scalar biases and multiplier (Zhang et al. 2019, §3, rule 3):
    F(x) = s (W_2 (sigma(W_1 (sigma(x) + b_1a) + b_1b) + b_2a)) + b_2b, with s = 1 and b = 0 at init.
    The zero / scaled weights of rules 1-2 are set by ``fixup_init_``."""

    def __init__(self, features: int, **kwargs) -> None:
        super().__init__(features, **kwargs)
        for name in ("bias1a", "bias1b", "bias2a", "bias2b"):
            setattr(self, name, nn.Parameter(torch.zeros(())))
        self.scale = nn.Parameter(torch.ones(()))

    def residual(self, x: Tensor) -> Tensor:
        h = self.act2(self.weight1(self.act1(x) + self.bias1a) + self.bias1b)
        return self.scale * self.weight2(h + self.bias2a) + self.bias2b


#: scheme name -> unit class (``"none"``: the plain pre-activation unit)
NORMFREE_BLOCKS: dict[str, type[PreActResidualBlock]] = {
    "none": PreActResidualBlock, "fixup": FixupBlock, "rezero": ReZeroBlock, "skipinit": SkipInitBlock}


@torch.no_grad()
def fixup_init_(net: ResidualNet, zero_init: bool = True) -> ResidualNet:
    """Rules 1-2 of Fixup (Zhang et al. 2019, §3) on a net of two-layer units, in place.

    W_1 of every unit is multiplied by ``fixup_scale(L, 2)`` = L^{-1/2} (L = ``net.depth``); with
    ``zero_init`` (default) W_2 of every unit and the output layer start at 0 (rule 1). Without it,
    only the scaling is applied: each branch then has variance gain 1/L instead of 1."""
    if net.depth < 1:
        raise ValueError("Fixup needs at least one residual unit")
    scale = fixup_scale(net.depth, 2)
    for block in net.blocks:
        block.weight1.weight.mul_(scale)
        if zero_init:
            block.weight2.weight.zero_()
            if block.weight2.bias is not None:
                block.weight2.bias.zero_()
    if zero_init:
        net.head.weight.zero_()
        net.head.bias.zero_()
    return net


class NormFreeResNet(ResidualNet):
    """A pre-activation ``ResidualNet`` whose units follow a normalisation-free ``scheme``.

    ``scheme`` (``NORMFREE_BLOCKS``): ``"fixup"``, ``"rezero"``, ``"skipinit"`` or ``"none"`` (He's
    init only; with ``norm="batch"`` the batch-normalised reference). ``alpha``: the initial scalar
    of ReZero / SkipInit units (default 0). ``fixup_zero``: apply Fixup's zero init (rule 1) as
    well as its scaling. The weights are drawn as in ``ResidualNet`` with the same ``seed``, then
    the scheme's init is applied, so all schemes of one seed share W_1. Rebuild with
    ``models.build_model(net.config)``.
    """

    def __init__(self, input_shape: int | Sequence[int] = (784,), out_features: int = 10, width: int = 32,
                 depth: int = 8, scheme: str = "fixup", alpha: float | None = None, fixup_zero: bool = True,
                 norm: str | None = None, conv: bool = False, activation: str = "relu", kernel_size: int = 3,
                 init: str | None = "he_normal", seed: int | None = None) -> None:
        block_cls = lookup(NORMFREE_BLOCKS, scheme, "normalisation-free scheme")
        scheme = scheme.lower()
        if scheme != "none" and norm is not None:
            raise ValueError(f"scheme {scheme!r} replaces normalisation; use scheme='none' with norm={norm!r}")
        if alpha is not None and not issubclass(block_cls, ScalarResidualBlock):
            raise ValueError(f"alpha applies to rezero and skipinit only, not to {scheme!r}")
        super().__init__(input_shape=input_shape, out_features=out_features, width=width, depth=depth, conv=conv,
                         block="preact", activation=activation, norm=norm, kernel_size=kernel_size, init=init,
                         seed=seed)
        if block_cls is not PreActResidualBlock:
            side = self.input_shape[1] if conv else None
            extra = {} if alpha is None else dict(alpha=alpha)
            blocks = nn.ModuleList(block_cls(width, conv=conv, activation=activation, kernel_size=kernel_size,
                                             image_size=side, **extra) for _ in range(depth))
            for new, old in zip(blocks, self.blocks):
                new.load_state_dict(old.state_dict(), strict=False)  # keep the seeded He weights
            self.blocks = blocks
        if scheme == "fixup":
            fixup_init_(self, zero_init=fixup_zero)
        self.scheme = scheme
        self.config = dict(kind="normfree", input_shape=self.input_shape, out_features=out_features, width=width,
                           depth=depth, scheme=scheme, alpha=alpha, fixup_zero=fixup_zero, norm=norm, conv=conv,
                           activation=activation, kernel_size=kernel_size, init=init, seed=seed)

    def scalars(self) -> dict[str, list[float]]:
        """The per-unit scalars: ``alpha`` (ReZero/SkipInit) or ``scale`` (Fixup); empty otherwise."""
        name = "alpha" if self.scheme in ("rezero", "skipinit") else "scale" if self.scheme == "fixup" else None
        return {} if name is None else {name: [float(getattr(b, name).detach()) for b in self.blocks]}

