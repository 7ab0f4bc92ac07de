"""A small convolutional net (survey §1.1 (2), eq. 7-9, Fig. 2), optionally normalised (§2.2.3)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..activations import get_activation
from ..init import initialize
from ..norm import get_norm, resolve_norm


class SmallCNN(nn.Module):
    """Stride-1 "valid" convolutions (eq. 7-9), each followed by an activation, then one affine
    classifier. No pooling, so every layer is exactly the survey's eq. 9 and the hand-written
    backward pass (``backprop.cnn_backward``, eq. 10-13) covers the whole net.

    ``channels = [c_0, c_1, ..., c_L]`` (c_0 = input maps); ``kernel_size`` k is the same for all
    layers; the input is ``(batch, c_0, H, W)`` (a flat 784-vector is reshaped to 1x28x28).

    ``norm`` (``"batch"``, ``"layer"``; ``None``/``"none"`` for none) normalises each conv's output
    before its activation, x_l = sigma(BN(K_l * x_{l-1} + b_l)), built with ``norm_kwargs``:
    batch norm per channel over the batch and all positions (Ioffe & Szegedy 2015, §3.2), layer
    norm over the whole (C, H, W) map of each sample (Ba et al. 2016). The modules are in
    ``norms`` (empty without normalisation). ``bias=False`` drops the conv biases, redundant
    under BN; the classifier keeps its bias. ``backprop.cnn_backward`` covers the plain net only.
    """

    def __init__(self, channels: Sequence[int] = (1, 4, 8), kernel_size: int = 3, image_size: int = 28,
                 num_classes: int = 10, activation: str = "relu", init: str | None = "he_normal",
                 init_kwargs: dict | None = None, seed: int | None = None, norm: str | None = None,
                 norm_kwargs: dict | None = None, bias: bool = True) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        side = image_size - (len(channels) - 1) * (kernel_size - 1)
        if len(channels) < 2 or side < 1:
            raise ValueError(f"channels {channels} with kernel {kernel_size} do not fit a {image_size}px image")
        self.config = dict(kind="cnn", channels=channels, kernel_size=kernel_size, image_size=image_size,
                           num_classes=num_classes, activation=activation, init=init,
                           init_kwargs=dict(init_kwargs or {}), seed=seed, norm=norm,
                           norm_kwargs=dict(norm_kwargs or {}), bias=bias)
        norm_name = resolve_norm(norm, ("none", "batch", "layer"), "SmallCNN")
        self.convs = nn.ModuleList(nn.Conv2d(a, b, kernel_size, bias=bias)
                                   for a, b in zip(channels[:-1], channels[1:]))
        self.activations = nn.ModuleList(get_activation(activation) for _ in self.convs)
        sides = [image_size - (i + 1) * (kernel_size - 1) for i in range(len(self.convs))]
        self.norms = nn.ModuleList(
            get_norm(norm_name, (c, s, s), **(norm_kwargs or {})) for c, s in zip(channels[1:], sides)
        ) if norm_name else nn.ModuleList()
        self.classifier = nn.Linear(channels[-1] * side * side, num_classes)
        self.image_shape = (channels[0], image_size, image_size)
        if init is not None:
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            initialize(self, init, generator=gen, **(init_kwargs or {}))

    def hidden_modules(self) -> list[tuple[str, nn.Module]]:
        return [(f"conv{i + 1}", act) for i, act in enumerate(self.activations)]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.reshape(-1, *self.image_shape)
        for l, (conv, act) in enumerate(zip(self.convs, self.activations)):
            y = conv(x)  # eq. 9
            x = act(self.norms[l](y) if self.norms else y)
        return self.classifier(x.flatten(1))
