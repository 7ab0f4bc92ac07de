"""Activation functions of the survey and its companion texts, each with its analytic derivative.

Every activation is an ``nn.Module`` whose ``forward`` is differentiable by autograd and whose
``derivative(x)`` returns the closed-form f'(x) elementwise. The closed forms feed the plots of
chapter "Causes" (survey Fig. 4) and the hand-written backward passes (survey eq. 3, 10, 17, 21).

Names follow the textbook chapter (seed 004, §5.3) and the survey §2.2.2:
``step``, ``linear``, ``sigmoid``, ``tanh``, ``hardtanh``, ``arctan``, ``softsign``,
``bent_identity``, ``relu``, ``leaky_relu``, ``prelu``, ``elu``, ``softplus``, ``swish``,
``maxout``. At a kink (ReLU at 0, step at 0, ...) the derivative takes the value torch's
autograd uses, so that hand-written and automatic gradients agree exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .utils import lookup

__all__ = [
    "Activation", "Step", "Linear", "Sigmoid", "Tanh", "HardTanh", "ArcTan", "SoftSign",
    "BentIdentity", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softplus", "Swish", "Maxout",
    "ACTIVATIONS", "get_activation", "activation_names",
]


class Activation(nn.Module):
    """Base class: an elementwise nonlinearity f with a closed-form derivative f'."""

    #: True when ``forward`` keeps the input's shape (all but ``maxout``).
    elementwise: bool = True

    def derivative(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def parameter_grads(self, x: Tensor, grad_output: Tensor) -> dict[str, Tensor]:
        """de/dp for the activation's own trainable parameters, given de/df(x); none by default."""
        return {}

    def extra_repr(self) -> str:
        return ""


class Step(Activation):
    """Heaviside step f(x) = 1[x > 0]; f'(x) = 0 almost everywhere (seed 004, eq. 5.5).

    The forward pass keeps a (zero) gradient path so a network of steps can be back-propagated
    and shows exactly why the step cannot be trained by gradient descent.
    """

    def forward(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype) + 0.0 * x

    def derivative(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


class Linear(Activation):
    """Identity f(x) = x; f'(x) = 1."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def derivative(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)


class Sigmoid(Activation):
    """Logistic sigmoid (survey eq. 22); f' = f(1-f) lies in (0, 0.25]."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1 - s)


class Tanh(Activation):
    """Hyperbolic tangent (survey eq. 23); f' = 1 - f^2 lies in (0, 1]."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1 - torch.tanh(x) ** 2


class HardTanh(Activation):
    """Hard tanh: clip(x, -1, 1); f' = 1 on (-1, 1), 0 outside (torch's convention at +-1: 0)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.hardtanh(x)

    def derivative(self, x: Tensor) -> Tensor:
        return ((x > -1) & (x < 1)).to(x.dtype)


class ArcTan(Activation):
    """f(x) = arctan(x); f'(x) = 1 / (1 + x^2)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.atan(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1 / (1 + x**2)


class SoftSign(Activation):
    """f(x) = x / (1 + |x|); f'(x) = 1 / (1 + |x|)^2."""

    def forward(self, x: Tensor) -> Tensor:
        return x / (1 + x.abs())

    def derivative(self, x: Tensor) -> Tensor:
        return 1 / (1 + x.abs()) ** 2


class BentIdentity(Activation):
    """f(x) = (sqrt(x^2 + 1) - 1) / 2 + x; f'(x) = x / (2 sqrt(x^2 + 1)) + 1."""

    def forward(self, x: Tensor) -> Tensor:
        return (torch.sqrt(x**2 + 1) - 1) / 2 + x

    def derivative(self, x: Tensor) -> Tensor:
        return x / (2 * torch.sqrt(x**2 + 1)) + 1


class ReLU(Activation):
    """Rectified linear unit max(0, x) (survey eq. 42); f' = 1[x > 0]."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def derivative(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)


class LeakyReLU(Activation):
    """Leaky ReLU (survey eq. 44): x for x > 0, a*x otherwise, with a = 0.01 by default."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if negative_slope < 0:
            raise ValueError(f"negative_slope must be >= 0, got {negative_slope}")
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, self.negative_slope))

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class PReLU(Activation):
    """Parametric ReLU (He et al. 2015; survey eq. 45): the negative slope a is learned.

    ``num_parameters=1`` shares one slope across the layer; ``num_parameters=C`` learns one
    per channel (dimension 1 of the input), as in He et al. Initial slope 0.25 as in the paper.
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25) -> None:
        super().__init__()
        self.num_parameters = num_parameters
        self.weight = nn.Parameter(torch.full((num_parameters,), float(init)))

    def _slope(self, x: Tensor) -> Tensor:
        if self.num_parameters == 1:
            return self.weight.reshape(())
        if x.dim() < 2:
            return self.weight
        shape = [1] * x.dim()
        shape[1] = self.num_parameters
        return self.weight.reshape(shape)

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, x, self._slope(x) * x)

    def derivative(self, x: Tensor) -> Tensor:
        slope = self._slope(x).detach()
        return torch.where(x > 0, torch.ones_like(x), slope * torch.ones_like(x))

    def parameter_grads(self, x: Tensor, grad_output: Tensor) -> dict[str, Tensor]:
        """de/da = sum of de/df * x over the inputs where x <= 0 (per channel, or all of them)."""
        g = grad_output * torch.where(x > 0, torch.zeros_like(x), x)
        if self.num_parameters == 1:
            return {"weight": g.sum().reshape(1)}
        dims = [d for d in range(g.dim()) if d != (1 if g.dim() > 1 else 0)]
        return {"weight": g.sum(dim=dims) if dims else g}

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class ELU(Activation):
    """Exponential linear unit: x for x > 0, alpha (e^x - 1) otherwise; f' = alpha e^x for x <= 0."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), self.alpha * torch.exp(x))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softplus(Activation):
    """Softplus log(1 + e^{beta x}) / beta (survey eq. 43, Fig. 9); f' = sigmoid(beta x)."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = float(beta)

    def forward(self, x: Tensor) -> Tensor:
        # log(1 + e^{bx}) / b computed as logaddexp(bx, 0) / b: no overflow for large bx
        return torch.logaddexp(self.beta * x, torch.zeros_like(x)) / self.beta

    def derivative(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.beta * x)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class Swish(Activation):
    """Swish x * sigmoid(beta x) (Ramachandran et al. 2017); beta = 1 is SiLU.

    f'(x) = s + beta x s (1 - s) with s = sigmoid(beta x). ``learnable=True`` trains beta.
    """

    def __init__(self, beta: float = 1.0, learnable: bool = False) -> None:
        super().__init__()
        b = torch.tensor(float(beta))
        if learnable:
            self.beta = nn.Parameter(b)
        else:
            self.register_buffer("beta", b)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.beta * x)

    def derivative(self, x: Tensor) -> Tensor:
        beta = self.beta.detach()
        s = torch.sigmoid(beta * x)
        return s + beta * x * s * (1 - s)

    def parameter_grads(self, x: Tensor, grad_output: Tensor) -> dict[str, Tensor]:
        """de/dbeta = sum of de/df * x^2 s (1 - s), only when beta is learnable."""
        if not isinstance(self.beta, nn.Parameter):
            return {}
        s = torch.sigmoid(self.beta.detach() * x)
        return {"beta": (grad_output * x**2 * s * (1 - s)).sum()}

    def extra_repr(self) -> str:
        return f"beta={float(self.beta):g}"


class Maxout(Activation):
    """Maxout (Goodfellow et al. 2013): the maximum over ``k`` pieces.

    The input's feature dimension (dim 1, or the last dim of a 1-D input) holds ``n*k`` values,
    grouped as ``k`` consecutive pieces per unit; the output holds ``n``. ``derivative(x)``
    has the input's shape: 1 at the winning piece of each unit (the first on ties), 0 elsewhere.
    A layer feeding a maxout must therefore produce ``k`` times as many features
    (``models.MLP`` does this for you).
    """

    elementwise = False

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"maxout needs k >= 1 pieces, got {k}")
        self.k = int(k)

    def _grouped(self, x: Tensor) -> Tensor:
        dim = 1 if x.dim() > 1 else 0
        n = x.shape[dim]
        if n % self.k:
            raise ValueError(f"maxout with k={self.k} needs a feature size divisible by k, got {n}")
        shape = list(x.shape)
        shape[dim : dim + 1] = [n // self.k, self.k]
        return x.reshape(shape), dim

    def forward(self, x: Tensor) -> Tensor:
        g, dim = self._grouped(x)
        return g.max(dim=dim + 1).values

    def derivative(self, x: Tensor) -> Tensor:
        g, dim = self._grouped(x)
        idx = g.argmax(dim=dim + 1, keepdim=True)
        return torch.zeros_like(g).scatter_(dim + 1, idx, 1.0).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"k={self.k}"


ACTIVATIONS: dict[str, type[Activation]] = {
    "step": Step,
    "linear": Linear,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "hardtanh": HardTanh,
    "arctan": ArcTan,
    "softsign": SoftSign,
    "bent_identity": BentIdentity,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "prelu": PReLU,
    "elu": ELU,
    "softplus": Softplus,
    "swish": Swish,
    "maxout": Maxout,
}


def activation_names() -> list[str]:
    """The registered activation names, in the order of the textbook's zoo."""
    return list(ACTIVATIONS)


def get_activation(name: str | Activation, **kwargs) -> Activation:
    """Build an activation by name, e.g. ``get_activation("leaky_relu", negative_slope=0.2)``.

    An ``Activation`` instance is returned unchanged. Unknown names raise ``ValueError`` listing
    the valid ones; keyword arguments the activation does not take raise ``TypeError``.
    """
    if isinstance(name, Activation):
        return name
    cls = lookup(ACTIVATIONS, name, "activation")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"activation {name!r} does not take {sorted(kwargs)}: {err}") from None
