"""Shortcut connections of survey §2.3.2: residual units, their shortcut variants, DenseNet.

Residual unit (He et al. 2016a, "Deep residual learning", Fig. 2; survey eq. 64-66, Fig. 11a),
with sigma = ReLU and F a small stack of weight layers:

    y_l = x_{l-1} + F(x_{l-1})                                        (eq. 64)
    x_l = sigma(y_l)                                                  (eq. 65)
    de/dx_{l-1} = de/dy_l ⊙ (1 + dF/dx_{l-1})                         (eq. 66; the "1" is the shortcut)

Pre-activation unit (He et al. 2016b, "Identity mappings in deep residual networks", Fig. 1b/4e;
survey Fig. 11b): the activation moves inside F, so the unit is x_l = x_{l-1} + F(x_{l-1}) with
F = W_2 sigma(BN(W_1 sigma(BN(x_{l-1})))) and the identity path is never touched:
x_L = x_l + sum_{i >= l} F(x_i) and de/dx_l = de/dx_L (1 + d/dx_l sum F) (He et al. 2016b, eq. 4-5).

Shortcut variants of He et al. 2016b (Fig. 2, Table 1; survey: identity beats them all) are the
``SHORTCUTS``; each combines the unit's input x with the residual branch F(x):

========================  ====================================  =======================================
name                      y (before the unit's sigma, if any)   He et al. 2016b, Table 1
========================  ====================================  =======================================
``identity``              x + F                                 Fig. 2a, original: 6.61 % error
``constant_scaling``      lam x + (1 - lam) F  (lam = 0.5)      Fig. 2b, 0.5 / 0.5: 12.35 %
                          lam x + F  (``scale_residual=False``)  Fig. 2b, 0.5 / 1: fails to converge
``exclusive_gating``      (1 - g) ⊙ x + g ⊙ F                   Fig. 2c, b_g = -6: 8.70 %
``shortcut_only_gating``  (1 - g) ⊙ x + F                       Fig. 2d, b_g = -6: 6.91 %
``conv1x1``               W_s x + F  (1x1 conv / linear map)    Fig. 2e: 12.22 %
``dropout``               m ⊙ x + F,  m ~ Bernoulli(1 - p)      Fig. 2f, p = 0.5: fails
========================  ====================================  =======================================

The error rates of the last column were written from memory and have NOT been checked against
the paper: do not cite them or put them in the ledger until someone has. (A secondary source, a
Chinese translation of the paper, agrees on 6.61 %, 12.22 % and the failing dropout shortcut.)

g(x) = sigma(W_g x + b_g) is a 1x1 convolution (a linear map for dense units) followed by the
logistic sigmoid, b_g starting at ``gate_bias`` (default -6, the best row of each gated case).
The dropout shortcut does *not* rescale by 1/(1 - p): He et al. read it as a multiplicative
factor of expectation 0.5 on the shortcut, which is what makes it fail; in evaluation mode the
shortcut is (1 - p) x. (The table's errors are for the 110-layer ResNet on CIFAR-10.)

``ResidualNet(plain=True)`` (also ``PlainNet``) removes every shortcut and keeps all other
layers, for the degradation experiment (He et al. 2016a, Fig. 1/4). ``ResidualNet.lesion``
deletes blocks at test time, leaving their shortcut, for the lesion study of Veit, Wilber &
Belongie 2016 ("Residual networks behave like ensembles of relatively shallow networks"; survey
Fig. 13); ``path_counts`` gives their binomial path-length distribution.

DenseNet (Huang et al. 2017; survey Fig. 12): in a dense block of m layers, layer l receives the
concatenation of the block input and the outputs of layers 1 ... l-1 and adds k ("growth rate")
new features, so the block has m(m+1)/2 direct connections and in + m k output features.

Units come for dense (``(batch, width)``, ``conv=False``) and convolutional inputs
(``(batch, C, H, W)``, ``conv=True``, "same" padding so the shortcut needs no projection).
``norm`` takes the names of ``norm.NORMALIZATIONS`` (``None`` for none); weight layers drop their
bias when normalised. Left out on purpose: bottleneck units, strided/downsampling units.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..activations import get_activation
from ..init import initialize
from ..norm import get_norm, resolve_norm
from ..utils import lookup

__all__ = ["Shortcut", "IdentityShortcut", "ConstantScalingShortcut", "ExclusiveGatingShortcut",
           "ShortcutOnlyGatingShortcut", "ProjectionShortcut", "DropoutShortcut", "SHORTCUTS", "get_shortcut",
           "ResidualBlock", "PreActResidualBlock", "BLOCKS", "get_block", "ResidualNet", "PlainNet",
           "DenseLayer", "DenseBlock", "DenseNet", "path_counts"]

_NORMS = ("none", "batch", "layer")


def _weight_layer(conv: bool, n_in: int, n_out: int, kernel_size: int = 3, bias: bool = True) -> nn.Module:
    """A "weight layer" of He et al.: a same-padded convolution or a linear map."""
    if conv:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        return nn.Conv2d(n_in, n_out, kernel_size, padding=kernel_size // 2, bias=bias)
    return nn.Linear(n_in, n_out, bias=bias)


def _norm_layer(name: str | None, channels: int, conv: bool, image_size: int | None, kwargs: dict | None) -> nn.Module:
    """``get_norm`` for a unit's features (per channel; layer norm of a map needs ``image_size``)."""
    if name is None:
        return nn.Identity()
    if conv and name == "layer":
        if image_size is None:
            raise ValueError("layer normalisation of feature maps needs image_size")
        return get_norm(name, (channels, image_size, image_size), **(kwargs or {}))
    return get_norm(name, channels, **(kwargs or {}))


# ---------------------------------------------------------------- shortcuts (He et al. 2016b, Fig. 2)

class Shortcut(nn.Module):
    """Combines a unit's input x with its residual branch F(x): ``forward(x, fx)``.

    ``fx=None`` means the branch has been deleted (``ResidualNet.lesion``): what is left is the
    shortcut path alone. Every shortcut takes ``(features, conv=False, **options)``.
    """

    def __init__(self, features: int, conv: bool = False) -> None:
        super().__init__()
        self.features, self.conv = int(features), bool(conv)

    def path(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The shortcut's own term h(x)."""
        raise NotImplementedError

    def forward(self, x: Tensor, fx: Tensor | None = None) -> Tensor:
        return self.path(x) if fx is None else self.path(x) + fx


class IdentityShortcut(Shortcut):
    """h(x) = x: y = x + F(x) (He et al. 2016a, eq. 1; survey eq. 64)."""

    def path(self, x: Tensor) -> Tensor:
        return x


class ConstantScalingShortcut(Shortcut):
    """h(x) = lam x; F scaled by 1 - lam when ``scale_residual`` (default), else left alone.

    He et al. 2016b, Fig. 2b with lam = 0.5: scaling both paths (a highway net with frozen gates,
    12.35 % error) trains; scaling only the shortcut (0.5 / 1) fails to converge. Eq. 66 becomes
    de/dx_l = de/dx_L (lam^(L-l) + ...): the shortcut's gradient shrinks geometrically with depth.
    """

    def __init__(self, features: int, conv: bool = False, scale: float = 0.5, scale_residual: bool = True) -> None:
        super().__init__(features, conv)
        self.scale, self.scale_residual = float(scale), bool(scale_residual)

    def path(self, x: Tensor) -> Tensor:
        return self.scale * x

    def forward(self, x: Tensor, fx: Tensor | None = None) -> Tensor:
        if fx is None:
            return self.path(x)
        return self.path(x) + ((1 - self.scale) * fx if self.scale_residual else fx)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, scale_residual={self.scale_residual}"


class _GatedShortcut(Shortcut):
    """Shared gate g(x) = sigma(W_g x + b_g), W_g a 1x1 convolution (linear map for dense units)."""

    def __init__(self, features: int, conv: bool = False, gate_bias: float = -6.0) -> None:
        super().__init__(features, conv)
        self.gate_bias = float(gate_bias)
        self.gate = _weight_layer(conv, features, features, kernel_size=1)
        self.reset_gate_bias()

    def reset_gate_bias(self) -> None:
        """b_g = ``gate_bias``; nets call this after ``init.initialize`` zeroed the biases."""
        with torch.no_grad():
            self.gate.bias.fill_(self.gate_bias)

    def g(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.gate(x))

    def path(self, x: Tensor) -> Tensor:
        return (1 - self.g(x)) * x

    def extra_repr(self) -> str:
        return f"gate_bias={self.gate_bias}"


class ExclusiveGatingShortcut(_GatedShortcut):
    """y = (1 - g(x)) ⊙ x + g(x) ⊙ F(x): highway-style gating (He et al. 2016b, Fig. 2c)."""

    def forward(self, x: Tensor, fx: Tensor | None = None) -> Tensor:
        g = self.g(x)
        return (1 - g) * x if fx is None else (1 - g) * x + g * fx


class ShortcutOnlyGatingShortcut(_GatedShortcut):
    """y = (1 - g(x)) ⊙ x + F(x): only the shortcut is gated (He et al. 2016b, Fig. 2d)."""


class ProjectionShortcut(Shortcut):
    """h(x) = W_s x, a 1x1 convolution (a linear map for dense units), no bias (He et al. 2016b, Fig. 2e;
    the projection shortcut of He et al. 2016a, eq. 2, used here on every unit)."""

    def __init__(self, features: int, conv: bool = False) -> None:
        super().__init__(features, conv)
        self.proj = _weight_layer(conv, features, features, kernel_size=1, bias=False)

    def path(self, x: Tensor) -> Tensor:
        return self.proj(x)


class DropoutShortcut(Shortcut):
    """h(x) = m ⊙ x with m ~ Bernoulli(1 - p) in training and (1 - p) x in evaluation; *no* 1/(1 - p)
    rescaling, so the shortcut carries a factor of expectation 1 - p = 0.5 (He et al. 2016b, Fig. 2f)."""

    def __init__(self, features: int, conv: bool = False, p: float = 0.5) -> None:
        super().__init__(features, conv)
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def path(self, x: Tensor) -> Tensor:
        if self.training:
            return x * torch.bernoulli(torch.full_like(x, 1 - self.p))
        return (1 - self.p) * x

    def extra_repr(self) -> str:
        return f"p={self.p}"


#: name -> shortcut class, built as ``cls(features, conv, **options)``
SHORTCUTS: dict[str, type[Shortcut]] = {
    "identity": IdentityShortcut,
    "constant_scaling": ConstantScalingShortcut,
    "exclusive_gating": ExclusiveGatingShortcut,
    "shortcut_only_gating": ShortcutOnlyGatingShortcut,
    "conv1x1": ProjectionShortcut,
    "dropout": DropoutShortcut,
}


def get_shortcut(name: str, features: int, conv: bool = False, **kwargs) -> Shortcut:
    """Build shortcut ``name`` (``SHORTCUTS``); raises ``ValueError`` listing the valid names."""
    cls = lookup(SHORTCUTS, name, "shortcut")
    try:
        return cls(features, conv, **kwargs)
    except TypeError as err:
        raise TypeError(f"shortcut {name!r} does not take {sorted(kwargs)}: {err}") from None


# ---------------------------------------------------------------- residual units

class ResidualBlock(nn.Module):
    """The original residual unit (He et al. 2016a, Fig. 2; survey eq. 64-65, Fig. 11a):

        F(x) = N_2(W_2 sigma(N_1(W_1 x))),   x_out = sigma(h(x) + F(x))

    with N the normalisation ``norm`` (identity when ``None``; He et al. use BN), W_1, W_2 two
    weight layers of ``features`` units (3x3 convolutions with ``conv=True``), h the ``shortcut``
    (``SHORTCUTS``, built with ``shortcut_kwargs``) and sigma ``activation``: ``act1`` is the one
    inside F, ``act2`` the one after the addition. ``plain=True`` removes the shortcut (x_out =
    sigma(F(x)); no shortcut parameters). ``residual(x)`` is F(x). While ``lesioned`` is set, F is
    deleted and the unit computes sigma(h(x)) (the identity for ReLU inputs, which are >= 0), or
    passes x on unchanged when plain. ``image_size`` is needed only for layer norm of maps.
    """

    preactivation = False

    def __init__(self, features: int, conv: bool = False, activation: str = "relu", norm: str | None = None,
                 shortcut: str = "identity", shortcut_kwargs: dict | None = None, plain: bool = False,
                 kernel_size: int = 3, image_size: int | None = None, norm_kwargs: dict | None = None,
                 activation_kwargs: dict | None = None) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        norm_name = resolve_norm(norm, _NORMS, type(self).__name__)
        self.features, self.conv, self.plain = int(features), bool(conv), bool(plain)
        bias = norm_name is None  # a bias before BN cancels (survey §2.2.3)
        self.weight1 = _weight_layer(conv, features, features, kernel_size, bias)
        self.weight2 = _weight_layer(conv, features, features, kernel_size, bias)
        self.norm1 = _norm_layer(norm_name, features, conv, image_size, norm_kwargs)
        self.norm2 = _norm_layer(norm_name, features, conv, image_size, norm_kwargs)
        self.act1 = get_activation(activation, **(activation_kwargs or {}))
        self.act2 = get_activation(activation, **(activation_kwargs or {}))
        self.shortcut = None if plain else get_shortcut(shortcut, features, conv, **(shortcut_kwargs or {}))
        self.lesioned = False

    def residual(self, x: Tensor) -> Tensor:
        """F(x) = N_2(W_2 sigma(N_1(W_1 x)))."""
        return self.norm2(self.weight2(self.act1(self.norm1(self.weight1(x)))))

    def _combine(self, x: Tensor) -> Tensor:
        fx = None if self.lesioned else self.residual(x)
        if self.shortcut is None:  # plain: no shortcut; a deleted plain layer passes x on
            return x if fx is None else fx
        return self.shortcut(x, fx)  # eq. 64 (h(x) + F(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.act2(self._combine(x))  # eq. 65

    def extra_repr(self) -> str:
        return f"{self.features}, conv={self.conv}, plain={self.plain}, lesioned={self.lesioned}"


class PreActResidualBlock(ResidualBlock):
    """The pre-activation unit (He et al. 2016b, Fig. 1b/4e; survey Fig. 11b):

        F(x) = W_2 sigma(N_2(W_1 sigma(N_1(x)))),   x_out = h(x) + F(x)

    nothing after the addition, so with the identity shortcut the signal and its gradient pass
    from any unit to any other unchanged (He et al. 2016b, eq. 4-5). ``act1``/``norm1`` act on
    the unit's input, ``act2``/``norm2`` between the weight layers. Arguments as ``ResidualBlock``;
    a lesioned unit computes h(x) (x for the identity shortcut).
    """

    preactivation = True

    def residual(self, x: Tensor) -> Tensor:
        """F(x) = W_2 sigma(N_2(W_1 sigma(N_1(x))))."""
        return self.weight2(self.act2(self.norm2(self.weight1(self.act1(self.norm1(x))))))

    def forward(self, x: Tensor) -> Tensor:
        return self._combine(x)


#: name -> residual unit class, built as ``cls(features, **options)``
BLOCKS: dict[str, type[ResidualBlock]] = {"standard": ResidualBlock, "preact": PreActResidualBlock}


def get_block(name: str, features: int, **kwargs) -> ResidualBlock:
    """Build residual unit ``name`` (``BLOCKS``); raises ``ValueError`` listing the valid names."""
    return lookup(BLOCKS, name, "residual block")(features, **kwargs)


def path_counts(num_blocks: int) -> list[int]:
    """Number of paths of each length k = 0 ... n through n residual units: C(n, k), 2^n in all.

    The unraveled view (Veit et al. 2016, eq. 3-4; survey Fig. 13): each unit is either taken
    (F) or skipped (shortcut), so path lengths are Binomial(n, 1/2).
    """
    if num_blocks < 0:
        raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
    return [math.comb(num_blocks, k) for k in range(num_blocks + 1)]


def _input_shape(input_shape: int | Sequence[int], conv: bool) -> list[int]:
    shape = [int(input_shape)] if isinstance(input_shape, int) else [int(s) for s in input_shape]
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be non-empty with sizes >= 1, got {input_shape}")
    if conv and len(shape) != 3:
        raise ValueError(f"a convolutional net needs input_shape (C, H, W), got {input_shape}")
    if conv and shape[1] != shape[2]:
        raise ValueError(f"square images only, got {input_shape}")
    return shape


class _ShapedInput(nn.Module):
    """Flatten (dense) or reshape a flat batch to ``input_shape`` (conv) on the way in."""

    input_shape: list[int]
    conv: bool

    def _prepare(self, x: Tensor) -> Tensor:
        if self.conv:
            return x.reshape(-1, *self.input_shape) if x.dim() == 2 else x
        return x.flatten(1) if x.dim() > 2 else x


class ResidualNet(_ShapedInput):
    """A residual network of ``depth`` units of ``width`` features, dense or convolutional.

    input -> stem weight layer (to ``width``; followed by N and sigma for ``block="standard"``,
    as He et al. 2016a's first conv-BN-ReLU) -> ``depth`` units (``BLOCKS[block]``, each with the
    ``shortcut``) -> for ``"preact"`` a final N and sigma (He et al. 2016b, §4) -> for conv nets a
    global average pool -> an affine output layer of ``out_features``. Inputs are ``(batch,
    *input_shape)``; a flat batch is reshaped for conv nets, images are flattened for dense ones.

    ``plain=True`` (``PlainNet``) builds the same net without shortcuts: identical weight layers,
    norms and activations, fewer parameters by the shortcuts' (none for ``"identity"``). ``init``
    (default He's N(0, 2/n_in)) sets every weight and zeroes the biases, then gate biases are reset
    to their ``gate_bias``. ``hidden_modules()`` are the units, whose outputs are x_1 ... x_depth.
    ``lesion(i)`` deletes unit(s) i while in its ``with`` block (Veit et al. 2016).
    """

    def __init__(self, input_shape: int | Sequence[int] = (784,), out_features: int = 10, width: int = 32,
                 depth: int = 8, conv: bool = False, block: str = "standard", activation: str = "relu",
                 shortcut: str = "identity", shortcut_kwargs: dict | None = None, norm: str | None = None,
                 norm_kwargs: dict | None = None, plain: bool = False, kernel_size: int = 3,
                 init: str | None = "he_normal", init_kwargs: dict | None = None,
                 activation_kwargs: dict | None = None, seed: int | None = None) -> None:
        super().__init__()
        shape = _input_shape(input_shape, conv)
        if width < 1 or depth < 0 or out_features < 1:
            raise ValueError(f"width and out_features must be >= 1 and depth >= 0; got width={width}, "
                             f"depth={depth}, out_features={out_features}")
        block_cls = lookup(BLOCKS, block, "residual block")
        lookup(SHORTCUTS, shortcut, "shortcut")  # fail early, also for plain nets
        norm_name = resolve_norm(norm, _NORMS, "ResidualNet")
        self.config = dict(kind="resnet", input_shape=shape, out_features=out_features, width=width, depth=depth,
                           conv=conv, block=block, activation=activation, shortcut=shortcut,
                           shortcut_kwargs=dict(shortcut_kwargs or {}), norm=norm, norm_kwargs=dict(norm_kwargs or {}),
                           plain=plain, kernel_size=kernel_size, init=init, init_kwargs=dict(init_kwargs or {}),
                           activation_kwargs=dict(activation_kwargs or {}), seed=seed)
        self.input_shape, self.conv, self.plain, self.depth = shape, bool(conv), bool(plain), depth
        side = shape[1] if conv else None
        n_in = shape[0] if conv else math.prod(shape)
        act = lambda: get_activation(activation, **(activation_kwargs or {}))  # noqa: E731
        pre = block_cls.preactivation
        self.stem = _weight_layer(conv, n_in, width, kernel_size, bias=norm_name is None)
        self.stem_norm = nn.Identity() if pre else _norm_layer(norm_name, width, conv, side, norm_kwargs)
        self.stem_act = nn.Identity() if pre else act()
        self.blocks = nn.ModuleList(
            block_cls(width, conv=conv, activation=activation, norm=norm, shortcut=shortcut,
                      shortcut_kwargs=shortcut_kwargs, plain=plain, kernel_size=kernel_size, image_size=side,
                      norm_kwargs=norm_kwargs, activation_kwargs=activation_kwargs)
            for _ in range(depth))
        self.final_norm = _norm_layer(norm_name, width, conv, side, norm_kwargs) if pre else nn.Identity()
        self.final_act = act() if pre else nn.Identity()
        self.head = nn.Linear(width, out_features)
        if init is not None:
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            initialize(self, init, generator=gen, **(init_kwargs or {}))
            for m in self.modules():
                if isinstance(m, _GatedShortcut):
                    m.reset_gate_bias()

    def hidden_modules(self) -> list[tuple[str, nn.Module]]:
        """(name, module) pairs whose outputs are the units' outputs x_1 ... x_depth."""
        return [(f"block{i + 1}", b) for i, b in enumerate(self.blocks)]

    def shortcut_parameters(self) -> int:
        """Number of parameters in the shortcuts (what ``plain=True`` removes)."""
        return sum(p.numel() for b in self.blocks if b.shortcut is not None for p in b.shortcut.parameters())

    @contextmanager
    def lesion(self, blocks: int | Iterable[int]) -> Iterator["ResidualNet"]:
        """Delete unit(s) ``blocks`` (0-based; negative counts from the end) inside a ``with`` block.

        A deleted unit keeps only its shortcut path (Veit et al. 2016, §4: "deleting individual
        layers"); see ``ResidualBlock`` for what that means per unit. The previous state is
        restored on exit, also after an exception.
        """
        idx = [blocks] if isinstance(blocks, int) else list(blocks)
        for i in idx:
            if not -self.depth <= i < self.depth:
                raise ValueError(f"block index {i} out of range for a net of {self.depth} blocks")
        chosen = [self.blocks[i] for i in idx]
        before = [b.lesioned for b in chosen]
        try:
            for b in chosen:
                b.lesioned = True
            yield self
        finally:
            for b, was in zip(chosen, before):
                b.lesioned = was

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_act(self.stem_norm(self.stem(self._prepare(x))))
        for block in self.blocks:
            x = block(x)
        x = self.final_act(self.final_norm(x))
        if self.conv:
            x = x.mean((2, 3))  # global average pooling
        return self.head(x)


def PlainNet(**kwargs) -> ResidualNet:
    """``ResidualNet(plain=True, **kwargs)``: the same layers without shortcuts (He et al. 2016a, Fig. 3)."""
    if "plain" in kwargs:
        raise TypeError("PlainNet sets plain=True itself")
    return ResidualNet(plain=True, **kwargs)


# ---------------------------------------------------------------- DenseNet (Huang et al. 2017)

class DenseLayer(nn.Module):
    """H_l of Huang et al. 2017 (§3, "composite function"): N -> sigma -> weight layer with
    ``growth_rate`` k outputs (a 3x3 convolution, or a linear map for dense inputs)."""

    def __init__(self, in_features: int, growth_rate: int, conv: bool = True, activation: str = "relu",
                 norm: str | None = "batch", norm_kwargs: dict | None = None, image_size: int | None = None,
                 kernel_size: int = 3, activation_kwargs: dict | None = None) -> None:
        super().__init__()
        norm_name = resolve_norm(norm, _NORMS, "DenseLayer")
        self.in_features, self.growth_rate = int(in_features), int(growth_rate)
        self.norm = _norm_layer(norm_name, in_features, conv, image_size, norm_kwargs)
        self.act = get_activation(activation, **(activation_kwargs or {}))
        self.weight = _weight_layer(conv, in_features, growth_rate, kernel_size, bias=norm_name is None)

    def forward(self, x: Tensor) -> Tensor:
        return self.weight(self.act(self.norm(x)))


class DenseBlock(nn.Module):
    """A dense block (Huang et al. 2017, eq. 2; survey Fig. 12): x_l = H_l([x_0, x_1, ..., x_{l-1}]).

    Layer l (1 ... m = ``num_layers``) sees the concatenation (along dim 1: channels or features)
    of the block input x_0 (``in_features``) and all earlier outputs, in + (l-1) k features, and
    adds k = ``growth_rate``; the block returns [x_0, ..., x_m], in + m k features
    (``out_features``). ``connections()`` lists the (source, layer) pairs read off the layers'
    input widths (source 0 is the block input); there are m(m+1)/2. ``conv=True`` (default) for
    ``(batch, C, H, W)`` maps, ``conv=False`` for ``(batch, features)``.
    """

    def __init__(self, in_features: int, growth_rate: int, num_layers: int, conv: bool = True,
                 activation: str = "relu", norm: str | None = "batch", norm_kwargs: dict | None = None,
                 image_size: int | None = None, kernel_size: int = 3, activation_kwargs: dict | None = None) -> None:
        super().__init__()
        if min(in_features, growth_rate, num_layers) < 1:
            raise ValueError(f"in_features, growth_rate and num_layers must be >= 1; got {in_features}, "
                             f"{growth_rate}, {num_layers}")
        self.in_features, self.growth_rate, self.conv = int(in_features), int(growth_rate), bool(conv)
        self.layers = nn.ModuleList(
            DenseLayer(in_features + l * growth_rate, growth_rate, conv, activation, norm, norm_kwargs, image_size,
                       kernel_size, activation_kwargs)
            for l in range(num_layers))

    @property
    def out_features(self) -> int:
        return self.in_features + len(self.layers) * self.growth_rate

    def connections(self) -> list[tuple[int, int]]:
        """(source, layer) pairs: layer l (1-based) reads sources 0 (block input) ... l-1."""
        pairs = []
        for l, layer in enumerate(self.layers, start=1):
            sources = 1 + (layer.in_features - self.in_features) // self.growth_rate
            pairs += [(s, l) for s in range(sources)]
        return pairs

    @property
    def num_connections(self) -> int:
        """m(m+1)/2 for m layers (Huang et al. 2017, §1; survey §2.3.2)."""
        return len(self.connections())

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class DenseNet(_ShapedInput):
    """A small DenseNet classifier (Huang et al. 2017, §3, Fig. 2).

    stem weight layer (to ``stem_features``, default 2k) -> dense blocks of ``block_layers``
    layers each, with growth rate k -> between blocks a transition N -> sigma -> 1x1 weight layer
    to floor(``compression`` * features) (-> 2x2 average pooling for conv nets) -> N -> sigma ->
    global average pool (conv) -> affine output layer. ``conv=False`` builds the same on flat
    inputs with linear layers. ``init`` and ``seed`` as in ``ResidualNet``; ``hidden_modules()``
    are all dense layers, in order.
    """

    def __init__(self, input_shape: int | Sequence[int] = (1, 28, 28), out_features: int = 10, growth_rate: int = 4,
                 block_layers: Sequence[int] = (3, 3), stem_features: int | None = None, compression: float = 0.5,
                 conv: bool = True, activation: str = "relu", norm: str | None = "batch",
                 norm_kwargs: dict | None = None, kernel_size: int = 3, init: str | None = "he_normal",
                 init_kwargs: dict | None = None, activation_kwargs: dict | None = None,
                 seed: int | None = None) -> None:
        super().__init__()
        shape = _input_shape(input_shape, conv)
        block_layers = [int(m) for m in block_layers]
        if not block_layers or min(block_layers) < 1 or not 0 < compression <= 1:
            raise ValueError(f"block_layers must be non-empty with entries >= 1 and 0 < compression <= 1; "
                             f"got {block_layers}, {compression}")
        norm_name = resolve_norm(norm, _NORMS, "DenseNet")
        stem_features = int(stem_features or 2 * growth_rate)
        self.config = dict(kind="densenet", input_shape=shape, out_features=out_features, growth_rate=growth_rate,
                           block_layers=block_layers, stem_features=stem_features, compression=compression,
                           conv=conv, activation=activation, norm=norm, norm_kwargs=dict(norm_kwargs or {}),
                           kernel_size=kernel_size, init=init, init_kwargs=dict(init_kwargs or {}),
                           activation_kwargs=dict(activation_kwargs or {}), seed=seed)
        self.input_shape, self.conv = shape, bool(conv)
        side = shape[1] if conv else None
        n_in = shape[0] if conv else math.prod(shape)
        act = lambda: get_activation(activation, **(activation_kwargs or {}))  # noqa: E731
        self.stem = _weight_layer(conv, n_in, stem_features, kernel_size)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        c = stem_features
        for b, m in enumerate(block_layers):
            block = DenseBlock(c, growth_rate, m, conv, activation, norm, norm_kwargs, side, kernel_size,
                               activation_kwargs)
            self.blocks.append(block)
            c = block.out_features
            if b < len(block_layers) - 1:
                c_out = max(1, int(math.floor(compression * c)))
                parts = [_norm_layer(norm_name, c, conv, side, norm_kwargs), act(),
                         _weight_layer(conv, c, c_out, kernel_size=1, bias=norm_name is None)]
                if conv:
                    if side < 2:
                        raise ValueError(f"input_shape {shape} is too small for {len(block_layers)} blocks")
                    parts.append(nn.AvgPool2d(2))
                    side //= 2
                self.transitions.append(nn.Sequential(*parts))
                c = c_out
        self.final_norm = _norm_layer(norm_name, c, conv, side, norm_kwargs)
        self.final_act = act()
        self.head = nn.Linear(c, out_features)
        if init is not None:
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            initialize(self, init, generator=gen, **(init_kwargs or {}))

    def hidden_modules(self) -> list[tuple[str, nn.Module]]:
        """(name, module) pairs of every dense layer (their outputs are the k new features)."""
        return [(f"block{b + 1}.layer{l + 1}", layer)
                for b, block in enumerate(self.blocks) for l, layer in enumerate(block.layers)]

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(self._prepare(x))
        for b, block in enumerate(self.blocks):
            x = block(x)
            if b < len(self.transitions):
                x = self.transitions[b](x)
        x = self.final_act(self.final_norm(x))
        if self.conv:
            x = x.mean((2, 3))
        return self.head(x)

