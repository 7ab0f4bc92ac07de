"""Deep fully connected network (survey §1.1 (1), eq. 1-2, Fig. 1), optionally normalised (§2.2.3)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..activations import Activation, get_activation
from ..init import initialize
from ..norm import get_norm, resolve_norm


class MLP(nn.Module):
    """A fully connected net with layer sizes ``sizes = [n_0, n_1, ..., n_L]`` (Nielsen's notation).

    Hidden layer l computes y_l = W_l x_{l-1} + b_l (eq. 1) and x_l = sigma(y_l) (eq. 2); the last
    layer is affine (logits), optionally followed by ``output_activation``. With ``maxout`` the
    affine maps produce ``k`` pieces per unit.

    ``norm`` (a name from ``norm.NORMALIZATIONS``: ``"batch"``, ``"layer"``; ``None``/``"none"``
    for none) inserts a normalisation between the affine map and the activation of every hidden
    layer, x_l = sigma(BN(W_l x_{l-1} + b_l)) (Ioffe & Szegedy 2015, §3; survey eq. 48-49), built
    with ``norm_kwargs``; the modules are in ``norms``. With maxout the norm sees all k pieces.
    ``bias=False`` drops the hidden layers' b_l, which BN makes redundant (it cancels in
    y - mu_B; beta takes its role); the output layer keeps its bias. With the defaults
    (``norm=None``, ``bias=True``) the net is exactly the plain one of eq. 1-2.

    Attributes ``linears`` (the affine maps W_l, b_l) and ``activations`` (the sigma of each hidden
    layer) are what diagnostics and the hand-written backward pass (``backprop.mlp_backward``)
    read. ``hidden_modules()`` lists the modules whose outputs are the hidden x_l.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "sigmoid", init: str | None = "lecun_normal",
                 init_kwargs: dict | None = None, activation_kwargs: dict | None = None,
                 bias_std: float = 0.0, output_activation: str | None = None, seed: int | None = None,
                 norm: str | None = None, norm_kwargs: dict | None = None, bias: bool = True) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes needs at least an input and an output size, all >= 1; got {sizes}")
        self.config = dict(kind="mlp", sizes=sizes, activation=activation, init=init,
                           init_kwargs=dict(init_kwargs or {}), activation_kwargs=dict(activation_kwargs or {}),
                           bias_std=bias_std, output_activation=output_activation, seed=seed,
                           norm=norm, norm_kwargs=dict(norm_kwargs or {}), bias=bias)
        self.sizes = sizes
        norm_name = resolve_norm(norm, ("none", "batch", "layer"), "MLP")
        acts = [get_activation(activation, **(activation_kwargs or {})) for _ in sizes[1:-1]]
        k = getattr(acts[0], "k", 1) if acts and not acts[0].elementwise else 1
        self.linears = nn.ModuleList(
            nn.Linear(n_in, n_out * (k if i < len(sizes) - 2 else 1), bias=bias or i == len(sizes) - 2)
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))
        )
        self.activations = nn.ModuleList(acts)
        # an empty list for no normalisation, so the plain net's modules and parameters are unchanged
        self.norms = nn.ModuleList(
            get_norm(norm_name, lin.out_features, **(norm_kwargs or {})) for lin in self.linears[:-1]
        ) if norm_name else nn.ModuleList()
        self.output_activation = get_activation(output_activation) if output_activation else None
        if init is not None:
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            initialize(self, init, bias_std=bias_std, generator=gen, **(init_kwargs or {}))

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.activations)

    def hidden_modules(self) -> list[tuple[str, nn.Module]]:
        """(name, module) pairs whose outputs are the hidden layer outputs x_1 ... x_{L-1}."""
        return [(f"hidden{i + 1}", act) for i, act in enumerate(self.activations)]

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1) if x.dim() > 2 else x
        for l, (linear, act) in enumerate(zip(self.linears[:-1], self.activations)):
            y = linear(x)  # eq. 1
            x = act(self.norms[l](y) if self.norms else y)  # eq. 2, with BN(y) when normalised
        out = self.linears[-1](x)
        return self.output_activation(out) if self.output_activation is not None else out


def deep_mlp(depth: int, width: int, in_features: int = 784, out_features: int = 10, **kwargs) -> MLP:
    """An MLP with ``depth`` hidden layers of ``width`` units each; ``kwargs`` go to ``MLP``."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    return MLP([in_features] + [width] * depth + [out_features], **kwargs)


__all__ = ["MLP", "deep_mlp", "Activation"]
