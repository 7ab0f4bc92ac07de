"""A small convolutional net (survey §1.1 (2), eq. 7-9, Fig. 2)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..activations import get_activation
from ..init import initialize


class SmallCNN(nn.Module):
    """Stride-1 "valid" convolutions (eq. 7-9), each followed by an activation, then one affine
    classifier. No pooling, so every layer is exactly the survey's eq. 9 and the hand-written
    backward pass (``backprop.cnn_backward``, eq. 10-13) covers the whole net.

    ``channels = [c_0, c_1, ..., c_L]`` (c_0 = input maps); ``kernel_size`` k is the same for all
    layers; the input is ``(batch, c_0, H, W)`` (a flat 784-vector is reshaped to 1x28x28).
    """

    def __init__(self, channels: Sequence[int] = (1, 4, 8), kernel_size: int = 3, image_size: int = 28,
                 num_classes: int = 10, activation: str = "relu", init: str | None = "he_normal",
                 init_kwargs: dict | None = None, seed: int | None = None) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        side = image_size - (len(channels) - 1) * (kernel_size - 1)
        if len(channels) < 2 or side < 1:
            raise ValueError(f"channels {channels} with kernel {kernel_size} do not fit a {image_size}px image")
        self.config = dict(kind="cnn", channels=channels, kernel_size=kernel_size, image_size=image_size,
                           num_classes=num_classes, activation=activation, init=init,
                           init_kwargs=dict(init_kwargs or {}), seed=seed)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, kernel_size) for a, b in zip(channels[:-1], channels[1:]))
        self.activations = nn.ModuleList(get_activation(activation) for _ in self.convs)
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
        for conv, act in zip(self.convs, self.activations):
            x = act(conv(x))
        return self.classifier(x.flatten(1))
