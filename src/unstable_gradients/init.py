"""Weight initialisers of survey §2.2.1, written from their formulas (not wrapping ``nn.init``).

For a weight tensor of shape ``(fan_out, fan_in, *kernel)`` the receptive field multiplies both
fans, as in Glorot & Bengio (2010) and He et al. (2015):

=====================  ====================================================  ==================
name                   distribution                                          source
=====================  ====================================================  ==================
``standard_uniform``   U[-1/sqrt(n), 1/sqrt(n)], n = fan_in                  survey eq. 32
``xavier_uniform``     U[-a, a], a = gain * sqrt(6 / (fan_in + fan_out))     survey eq. 35
``xavier_normal``      N(0, gain^2 * 2 / (fan_in + fan_out))                 Glorot & Bengio
``he_uniform``         U[-a, a], a = sqrt(6 / ((1 + s^2) fan))               He et al. 2015
``he_normal``          N(0, 2 / ((1 + s^2) fan)), fan = fan_in or fan_out    survey eq. 38/41
``lecun_normal``       N(0, 1 / fan_in)                                      LeCun et al. 1998
``orthogonal``         gain * Q, Q from the QR of a Gaussian matrix          Saxe et al. 2014
``normal``             N(mean, std^2)                                        plain
=====================  ====================================================  ==================

``s`` is the negative slope of a leaky ReLU/PReLU (0 for ReLU). ``initialize(module, name)``
applies one of them to every weight matrix/kernel of a module and sets the biases.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .utils import lookup

__all__ = [
    "fans", "standard_uniform_", "xavier_uniform_", "xavier_normal_", "he_uniform_",
    "he_normal_", "lecun_normal_", "orthogonal_", "normal_", "INITIALIZERS",
    "initialize", "init_std", "is_weight",
]


def fans(weight: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a ``(out, in, *kernel)`` weight; a 1-D tensor has fan_in = its size."""
    if weight.dim() < 1:
        raise ValueError("cannot compute fans of a scalar tensor")
    if weight.dim() == 1:
        return weight.shape[0], weight.shape[0]
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _fan(weight: Tensor, mode: str) -> int:
    fan_in, fan_out = fans(weight)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def _uniform(weight: Tensor, bound: float, generator: torch.Generator | None) -> Tensor:
    with torch.no_grad():
        return weight.uniform_(-bound, bound, generator=generator)


def _normal(weight: Tensor, std: float, generator: torch.Generator | None, mean: float = 0.0) -> Tensor:
    with torch.no_grad():
        return weight.normal_(mean, std, generator=generator)


def standard_uniform_(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The "standard" heuristic U[-1/sqrt(n), 1/sqrt(n)], n = fan_in (survey eq. 32): Var = 1/(3n)."""
    return _uniform(weight, 1 / math.sqrt(fans(weight)[0]), generator)


def xavier_uniform_(weight: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Glorot's normalised init U[-a, a], a = gain*sqrt(6/(n_in+n_out)) (survey eq. 35)."""
    fan_in, fan_out = fans(weight)
    return _uniform(weight, gain * math.sqrt(6 / (fan_in + fan_out)), generator)


def xavier_normal_(weight: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """N(0, gain^2 * 2/(n_in+n_out)): the Gaussian with Glorot's variance (survey eq. 34)."""
    fan_in, fan_out = fans(weight)
    return _normal(weight, gain * math.sqrt(2 / (fan_in + fan_out)), generator)


def he_uniform_(weight: Tensor, mode: str = "fan_in", negative_slope: float = 0.0,
                generator: torch.Generator | None = None) -> Tensor:
    """U[-a, a] with He's variance 2/((1+s^2) n): a = sqrt(6/((1+s^2) n))."""
    n = _fan(weight, mode)
    return _uniform(weight, math.sqrt(6 / ((1 + negative_slope**2) * n)), generator)


def he_normal_(weight: Tensor, mode: str = "fan_in", negative_slope: float = 0.0,
               generator: torch.Generator | None = None) -> Tensor:
    """N(0, 2/((1+s^2) n)) (He et al. 2015, eq. 10/14; survey eq. 38 with n = fan_in, eq. 41 fan_out)."""
    n = _fan(weight, mode)
    return _normal(weight, math.sqrt(2 / ((1 + negative_slope**2) * n)), generator)


def lecun_normal_(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """N(0, 1/n_in) (LeCun et al. 1998); also Nielsen's ``default_weight_initializer``."""
    return _normal(weight, 1 / math.sqrt(fans(weight)[0]), generator)


def orthogonal_(weight: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2014), kernels flattened to 2-D.

    Q comes from the QR decomposition of a standard Gaussian matrix, with the signs of R's
    diagonal folded in so that Q is Haar-distributed.
    """
    if weight.dim() < 2:
        raise ValueError("orthogonal init needs a tensor with at least 2 dimensions")
    rows = weight.shape[0]
    cols = weight.numel() // rows
    flat = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(flat)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if rows < cols:
        q = q.T
    with torch.no_grad():
        weight.copy_((gain * q).reshape(weight.shape).to(weight.dtype))
    return weight


def normal_(weight: Tensor, std: float = 1.0, mean: float = 0.0,
            generator: torch.Generator | None = None) -> Tensor:
    """Plain N(mean, std^2), e.g. the N(0, 1) weights of the one-neuron chains (seed 003)."""
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    return _normal(weight, std, generator, mean)


INITIALIZERS: dict[str, Callable[..., Tensor]] = {
    "standard_uniform": standard_uniform_,
    "xavier_uniform": xavier_uniform_,
    "xavier_normal": xavier_normal_,
    "he_uniform": he_uniform_,
    "he_normal": he_normal_,
    "lecun_normal": lecun_normal_,
    "orthogonal": orthogonal_,
    "normal": normal_,
}


def init_std(name: str, weight_shape: tuple[int, ...], **kwargs) -> float:
    """The standard deviation an initialiser gives a weight of this shape (for tests and plots)."""
    w = torch.empty(weight_shape)
    fan_in, fan_out = fans(w)
    gain = kwargs.get("gain", 1.0)
    slope = kwargs.get("negative_slope", 0.0)
    n = fan_in if kwargs.get("mode", "fan_in") == "fan_in" else fan_out
    table = {
        "standard_uniform": 1 / math.sqrt(3 * fan_in),
        "xavier_uniform": gain * math.sqrt(2 / (fan_in + fan_out)),
        "xavier_normal": gain * math.sqrt(2 / (fan_in + fan_out)),
        "he_uniform": math.sqrt(2 / ((1 + slope**2) * n)),
        "he_normal": math.sqrt(2 / ((1 + slope**2) * n)),
        "lecun_normal": 1 / math.sqrt(fan_in),
        # rows (or columns) of a semi-orthogonal matrix have unit norm: entry variance 1/max fan
        "orthogonal": gain / math.sqrt(max(w.shape[0], w.numel() // w.shape[0])),
        "normal": kwargs.get("std", 1.0),
    }
    lookup(INITIALIZERS, name, "initializer")
    return table[name]


#: parameter names of normalisation layers (``norm``): never weights, whatever their shape
#: (a layer norm over (C, H, W) maps has a 3-D gain)
_NORM_PARAMS = ("gamma", "beta")


def is_weight(name: str, p: Tensor) -> bool:
    """True for weight matrices/kernels: >= 2 dims, not a bias, not a normalisation gain/shift."""
    return p.dim() >= 2 and not name.endswith("bias") and name.rsplit(".", 1)[-1] not in _NORM_PARAMS


def initialize(module: nn.Module, name: str, *, bias: float | str = 0.0, bias_std: float = 0.0,
               generator: torch.Generator | None = None, **kwargs) -> nn.Module:
    """Initialise every weight matrix/kernel (parameters with >= 2 dims) of ``module`` by ``name``.

    Biases (parameters whose name ends in ``bias``) are set to the constant ``bias`` or, when
    ``bias_std > 0``, drawn from N(0, bias_std^2) (Nielsen's biases: ``bias_std=1``).
    Other 1-D parameters (PReLU slopes) and normalisation parameters (``gamma``, ``beta`` of
    ``norm``, of any shape) are left alone.
    ``kwargs`` go to the initialiser (``gain``, ``mode``, ``negative_slope``, ``std``).
    Returns the module, so calls can be chained.
    """
    init_fn = lookup(INITIALIZERS, name, "initializer")
    for pname, p in module.named_parameters():
        if is_weight(pname, p):
            try:
                init_fn(p, generator=generator, **kwargs)
            except TypeError as err:
                raise TypeError(f"initializer {name!r} does not take {sorted(kwargs)}: {err}") from None
        elif pname.endswith("bias"):
            if bias_std > 0:
                _normal(p, bias_std, generator)
            else:
                with torch.no_grad():
                    p.fill_(float(bias))
    return module
