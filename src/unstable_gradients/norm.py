"""Normalisation layers of survey §2.2.3, written from their equations (not wrapping ``torch.nn``).

Batch normalisation (Ioffe & Szegedy 2015, Algorithm 1) normalises each feature over a
mini-batch B = {y_1 ... y_m} (survey eq. 46), then scales and shifts it (survey eq. 47):

    mu_B      = 1/m sum_i y_i                                   (Alg. 1, line 1)
    sigma_B^2 = 1/m sum_i (y_i - mu_B)^2                        (Alg. 1, line 2)
    yhat_i    = (y_i - mu_B) / sqrt(sigma_B^2 + eps)            (Alg. 1, line 3; survey eq. 46)
    z_i       = gamma yhat_i + beta                             (Alg. 1, line 4; survey eq. 47)

A hidden layer becomes z_l = BN(W_l x_{l-1}) (eq. 48), x_l = sigma(z_l) (eq. 49). The survey's
consequences, checked in ``tests/test_norm.py``:

- a bias b added before BN cancels in y - mu_B, so it is redundant (eq. 48 has none;
  ``MLP(bias=False)``);
- BN(alpha W u) = BN(W u) for any alpha > 0 (eq. 50), up to the eps in the denominator;
- back-propagation multiplies by dBN(W_l x_{l-1})/dx_{l-1} where a plain layer multiplies by
  W_l (eq. 51, the BN form of eq. 3), and that Jacobian does not change when W_l is scaled
  (eq. 52), so the weight scale that makes eq. 24's products vanish or explode drops out;
- dBN(alpha W u)/d(alpha W) = 1/alpha dBN(W u)/dW (Ioffe & Szegedy 2015, §3.3): larger
  weights get smaller gradients, which is why BN tolerates larger learning rates.

What is here:

=====================  ===================================================  =====================
name                   statistics over                                      source
=====================  ===================================================  =====================
``batch``              the batch (and the spatial positions of a map)      Ioffe & Szegedy 2015
``recurrent_batch``    the batch, separately at each time step t           Cooijmans et al. 2017
``layer``              the features of one sample (no batch dependence)    Ba et al. 2016
``none``               nothing: the identity                               --
=====================  ===================================================  =====================

Notation: the survey's gamma and beta are the parameters ``gamma`` and ``beta`` (torch calls them
``weight`` and ``bias``; we keep the survey's names, which also keeps ``init.initialize`` from
treating beta as a layer bias). Like torch, the variance that normalises is the biased (1/m) one,
while the running estimate used in evaluation mode takes the unbiased m/(m-1) correction
(Ioffe & Szegedy, Alg. 2, line 10), updated as ``running = (1 - momentum) running + momentum
stat`` (``momentum=None``: the cumulative average over all batches seen).

Left out on purpose: ``track_running_stats=False`` (evaluation with batch statistics), batch
renormalisation, group and weight normalisation.
"""
from __future__ import annotations

from numbers import Integral
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .utils import lookup

__all__ = ["BatchNorm", "RecurrentBatchNorm", "LayerNorm", "NORMALIZATIONS", "get_norm", "norm_names",
           "resolve_norm", "batch_statistics"]


def batch_statistics(x: Tensor) -> tuple[Tensor, Tensor, int]:
    """(mu_B, biased sigma_B^2, m) of each channel (dim 1) of ``x`` (Ioffe & Szegedy, Alg. 1 lines 1-2).

    ``x`` is ``(N, C)`` or ``(N, C, *spatial)``; for maps the mean runs over the batch *and* the
    positions, m = N * prod(spatial), as Ioffe & Szegedy (§3.2) prescribe for convolutions.
    """
    if x.dim() < 2:
        raise ValueError(f"batch normalisation expects (N, C) or (N, C, ...) input, got shape {tuple(x.shape)}")
    dims = (0, *range(2, x.dim()))
    m = x.numel() // x.shape[1]
    if m < 2:
        raise ValueError(f"batch normalisation needs more than one value per channel in training, got shape "
                         f"{tuple(x.shape)}")
    mean = x.mean(dims)
    var = ((x - _channel(mean, x.dim())) ** 2).mean(dims)  # biased
    return mean, var, m


def _channel(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-channel vector (C,) to broadcast against an (N, C, *spatial) tensor."""
    return v.reshape(1, -1, *([1] * (ndim - 2)))


def _shape(num_features: int | Sequence[int]) -> tuple[int, ...]:
    """An int or a sequence of ints as a shape tuple."""
    return (int(num_features),) if isinstance(num_features, Integral) else tuple(int(s) for s in num_features)


def _normalise(x: Tensor, mean: Tensor, var: Tensor, eps: float) -> Tensor:
    """yhat = (x - mu) / sqrt(sigma^2 + eps), per channel (survey eq. 46)."""
    return (x - _channel(mean, x.dim())) / torch.sqrt(_channel(var, x.dim()) + eps)


def _update_running(running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, m: int,
                    momentum: float | None, count: Tensor) -> None:
    """Exponential (or, with ``momentum=None``, cumulative) average of mu_B and the unbiased var."""
    with torch.no_grad():
        count += 1
        rate = 1.0 / float(count) if momentum is None else momentum
        running_mean.mul_(1 - rate).add_(rate * mean.detach())
        running_var.mul_(1 - rate).add_(rate * var.detach() * m / (m - 1))


class BatchNorm(nn.Module):
    """Batch normalisation of dense ``(N, C)`` or convolutional ``(N, C, H, W)`` inputs.

    Ioffe & Szegedy 2015, Algorithm 1 (training) and Algorithm 2 (inference); survey eq. 46-47.
    In training mode each channel is normalised with the statistics of the current batch
    (over all dims but dim 1) and the running averages are updated; in evaluation mode the
    running averages are used, so the output of a sample no longer depends on its batch.
    ``affine=False`` drops gamma and beta (z = yhat); ``shift=False`` keeps only gamma (for a
    layer whose following bias already shifts, as in Cooijmans et al.'s recurrent BN).
    Agrees with ``torch.nn.BatchNorm1d/2d`` (``tests/test_norm.py``).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 shift: bool = True, gamma_init: float = 1.0) -> None:
        super().__init__()
        if int(num_features) < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.gamma = nn.Parameter(torch.full((self.num_features,), float(gamma_init))) if affine else None
        self.beta = nn.Parameter(torch.zeros(self.num_features)) if affine and shift else None
        self.register_buffer("running_mean", torch.zeros(self.num_features))
        self.register_buffer("running_var", torch.ones(self.num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm({self.num_features}) expects (N, {self.num_features}, ...) input, "
                             f"got shape {tuple(x.shape)}")
        if self.training:
            mean, var, m = batch_statistics(x)
            _update_running(self.running_mean, self.running_var, mean, var, m, self.momentum,
                            self.num_batches_tracked)
        else:
            mean, var = self.running_mean, self.running_var
        return _scale_shift(_normalise(x, mean, var, self.eps), self.gamma, self.beta)  # eq. 46-47

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.gamma is not None}, "
                f"shift={self.beta is not None}")


def _scale_shift(xhat: Tensor, gamma: Tensor | None, beta: Tensor | None) -> Tensor:
    """z = gamma yhat + beta per channel (survey eq. 47)."""
    if gamma is not None:
        xhat = xhat * _channel(gamma, xhat.dim())
    if beta is not None:
        xhat = xhat + _channel(beta, xhat.dim())
    return xhat


class RecurrentBatchNorm(nn.Module):
    """Batch normalisation with separate statistics at each time step (Cooijmans et al. 2017, §3-4).

    ``forward(x, t)`` normalises the ``(N, C)`` input of time step ``t`` with the batch
    statistics of that step (training) or the running averages kept for that step (evaluation),
    then scales and shifts it (survey eq. 46-47 at each t). Steps t >= ``max_steps`` reuse the
    statistics slot of the last step, ``max_steps - 1`` (Cooijmans et al. use the population
    statistics of T_max for every t > T_max); in training such steps are still normalised with
    their own batch statistics and feed that last slot's running average.

    gamma and beta are shared across time by default, as in Cooijmans et al.'s eq. 6-8
    (``per_step_affine=True`` gives every step its own, stored as ``gamma.<t>``/``beta.<t>``).
    gamma starts at 0.1 (their recommendation: with gamma = 1 tanh/sigmoid units saturate and
    the gradient vanishes); ``shift=False`` drops beta, which is redundant with the cell's own
    bias b (they set beta_h = beta_x = 0 in their eq. 6 for that reason).
    """

    def __init__(self, num_features: int, max_steps: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, shift: bool = True, per_step_affine: bool = False,
                 gamma_init: float = 0.1) -> None:
        super().__init__()
        if int(num_features) < 1 or int(max_steps) < 1:
            raise ValueError(f"num_features and max_steps must be >= 1, got {num_features}, {max_steps}")
        self.num_features, self.max_steps = int(num_features), int(max_steps)
        self.eps, self.momentum, self.per_step_affine = float(eps), momentum, per_step_affine
        c, steps = self.num_features, (self.max_steps if per_step_affine else 1)

        def params(fill: float, on: bool) -> nn.ParameterList | None:
            return nn.ParameterList(nn.Parameter(torch.full((c,), float(fill))) for _ in range(steps)) if on else None

        # a ParameterList of 1-D tensors (not one (T, C) matrix), so that ``init.initialize`` never
        # mistakes the per-step gains for a weight matrix
        self.gamma = params(gamma_init, affine)
        self.beta = params(0.0, affine and shift)
        self.register_buffer("running_mean", torch.zeros(self.max_steps, c))
        self.register_buffer("running_var", torch.ones(self.max_steps, c))
        self.register_buffer("num_batches_tracked", torch.zeros(self.max_steps, dtype=torch.long))

    def slot(self, t: int) -> int:
        """The statistics slot of time step ``t``: ``min(t, max_steps - 1)``."""
        if t < 0:
            raise ValueError(f"time step must be >= 0, got {t}")
        return min(int(t), self.max_steps - 1)

    def forward(self, x: Tensor, t: int) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"RecurrentBatchNorm({self.num_features}) expects (N, {self.num_features}, ...) input, "
                             f"got shape {tuple(x.shape)}")
        s = self.slot(t)
        if self.training:
            mean, var, m = batch_statistics(x)
            _update_running(self.running_mean[s], self.running_var[s], mean, var, m, self.momentum,
                            self.num_batches_tracked[s])
        else:
            mean, var = self.running_mean[s], self.running_var[s]
        p = s if self.per_step_affine else 0
        gamma = self.gamma[p] if self.gamma is not None else None
        beta = self.beta[p] if self.beta is not None else None
        return _scale_shift(_normalise(x, mean, var, self.eps), gamma, beta)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, max_steps={self.max_steps}, eps={self.eps}, momentum={self.momentum}, "
                f"per_step_affine={self.per_step_affine}")


class LayerNorm(nn.Module):
    """Layer normalisation (Ba et al. 2016, eq. 3): statistics over the features of each sample.

    mu = 1/H sum_i a_i, sigma^2 = 1/H sum_i (a_i - mu)^2 over the last ``len(normalized_shape)``
    dims (H of them), then z = gamma (a - mu)/sqrt(sigma^2 + eps) + beta elementwise, with gamma
    and beta of shape ``normalized_shape``. No batch statistics, so training and evaluation modes
    compute the same thing and a batch of one is fine. For a convolutional map pass
    ``(C, H, W)``. Agrees with ``torch.nn.LayerNorm``. Beyond the survey, for comparison with BN.
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, affine: bool = True,
                 shift: bool = True, gamma_init: float = 1.0) -> None:
        super().__init__()
        shape = _shape(normalized_shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"normalized_shape must be non-empty with sizes >= 1, got {normalized_shape}")
        self.normalized_shape, self.eps = shape, float(eps)
        self.gamma = nn.Parameter(torch.full(shape, float(gamma_init))) if affine else None
        self.beta = nn.Parameter(torch.zeros(shape)) if affine and shift else None

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(f"LayerNorm{self.normalized_shape} got input of shape {tuple(x.shape)}")
        dims = tuple(range(-k, 0))
        mean = x.mean(dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dims, keepdim=True)  # biased, as Ba et al. and torch
        z = (x - mean) / torch.sqrt(var + self.eps)
        if self.gamma is not None:
            z = z * self.gamma
        if self.beta is not None:
            z = z + self.beta
        return z

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, affine={self.gamma is not None}"


class _Identity(nn.Identity):
    """``none``: the identity; takes (and ignores) a time step so it can stand in a recurrent net."""

    def forward(self, x: Tensor, t: int | None = None) -> Tensor:
        return x


#: name -> builder(feature_shape, **kwargs). ``feature_shape`` is the per-sample shape, (C,) or
#: (C, H, W): batch norms normalise per channel C, layer norm over the whole shape.
NORMALIZATIONS: dict[str, Callable[..., nn.Module]] = {
    "none": lambda shape, **kw: _Identity(),
    "batch": lambda shape, **kw: BatchNorm(shape[0], **kw),
    "recurrent_batch": lambda shape, **kw: RecurrentBatchNorm(shape[0], **kw),
    "layer": lambda shape, **kw: LayerNorm(shape, **kw),
}


def norm_names() -> list[str]:
    """The names ``get_norm`` accepts."""
    return list(NORMALIZATIONS)


def resolve_norm(name: str | None, allowed: Sequence[str] | None = None, where: str = "") -> str | None:
    """The canonical registry name of ``name``, or ``None`` for no normalisation (``None``/``"none"``).

    Raises ``ValueError`` listing the valid names when ``name`` is unknown or not in ``allowed``
    (e.g. a feed-forward model does not take ``recurrent_batch``). Models call this up front, so a
    bad name fails even where no layer would be built.
    """
    if name is None:
        return None
    lookup(NORMALIZATIONS, name, "normalization")
    key = name.lower().replace("-", "_")
    if allowed is not None and key not in allowed:
        raise ValueError(f"normalization {name!r} is not available{' in ' + where if where else ''}; "
                         f"valid names: {', '.join(sorted(allowed))}")
    return None if key == "none" else key


def get_norm(name: str, num_features: int | Sequence[int], **kwargs) -> nn.Module:
    """Build the normalisation ``name`` for ``num_features`` features.

    ``num_features`` is C, or the per-sample feature shape ``(C, H, W)`` of a convolutional map:
    ``batch``/``recurrent_batch`` take its channel count C (statistics per channel), ``layer``
    normalises over the whole shape (Ba et al.: all hidden units of the layer). ``kwargs`` go to
    the layer (``eps``, ``momentum``, ``affine``, ``max_steps`` for ``recurrent_batch``, ...).
    Raises ``ValueError`` listing the valid names for an unknown ``name``.
    """
    builder = lookup(NORMALIZATIONS, name, "normalization")
    try:
        return builder(_shape(num_features), **kwargs)
    except TypeError as err:
        raise TypeError(f"normalization {name!r} does not take {sorted(kwargs)}: {err}") from None
