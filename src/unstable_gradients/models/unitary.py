"""Recurrent nets whose recurrent matrix cannot change a vector's norm (survey §3.1, "design under a
gradient-norm constraint"; beyond the survey's own experiments).

Orthogonal RNN. The recurrent matrix W is a function of a free matrix A, and stays exactly
orthogonal whatever value a gradient step gives A. With the skew-symmetric S = A - A^T:

    "expm":   W = exp(S)                        (the Lie exponential; Lezcano-Casado & Martínez-Rubio 2019)
    "cayley": W = (I - S)(I + S)^{-1}           (the Cayley transform; Helfrich, Willmott & Ye 2018)

Both give W^T W = I because exp(S)^T = exp(-S) and, for the Cayley map, (I - S) and (I + S)^{-1}
commute. The Cayley map cannot reach orthogonal matrices with eigenvalue -1; the exponential map
reaches all rotations (det W = +1) but not the reflections. The recursion is that of
``VanillaRNN`` (survey eq. 14) with W_hh = W(A):

    h_t = sigma(W h_{t-1} + V x_t + b),   o_t = U h_t + b_o

with sigma ``"linear"`` (h = W h + V x + b), ``"tanh"`` or ``"modrelu"`` (below).

Unitary RNN, uRNN (Arjovsky, Shah & Bengio 2016, §4-5). The hidden state is complex, h_t ∈ C^n,
and the recurrent matrix is the product

    W = D_3 R_2 F^{-1} D_2 Π R_1 F D_1                                        (their eq. 6)

of diagonal phase matrices D_k = diag(exp(i θ_k)), complex Householder reflections
R_k = I - 2 v_k v_k^* / ||v_k||^2, a fixed random permutation Π and the unitary discrete Fourier
transform F (``torch.fft.fft(norm="ortho")``). Each factor is unitary, so ||W h|| = ||h||, with
7n real parameters and O(n log n) work per step. The input map V ∈ C^{n x n_in} (real and
imaginary parts), the nonlinearity is modReLU, and the output reads [Re h_t, Im h_t]:

    h_t = modReLU(W h_{t-1} + V x_t),   o_t = U [Re h_t; Im h_t] + b_o
    modReLU(z) = ReLU(|z| + b) z / |z|                                         (their eq. 8)

Initialisation as in their §4.3 (as we read it): V and U Glorot-uniform, the modReLU bias b = 0,
reflection vectors from U[-1, 1] (real and imaginary parts), phases θ from U[-π, π], and a learned
h_0 from U[-sqrt(3/(2n)), sqrt(3/(2n))] (real and imaginary parts), so E||h_0||^2 = 1.

Notation. Batches are rows: a state is ``(batch, n)`` and "W h" is computed row by row, so
``matrix()`` materialises W by applying the factors to the rows of the identity and transposing.
Left out on purpose: the uRNN's gradient clipping and any regularisation of the reflections.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..utils import lookup

__all__ = ["skew", "expm_map", "cayley_map", "ORTHOGONAL_MAPS", "orthogonal_matrix", "modrelu", "OrthogonalRNN",
           "UnitaryRNN", "RECURRENT_NONLINEARITIES"]

_EPS = 1e-12


def skew(A: Tensor) -> Tensor:
    """S = A - A^T, skew-symmetric (S^T = -S) for any square A."""
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"need a square matrix, got shape {tuple(A.shape)}")
    return A - A.T


def expm_map(S: Tensor) -> Tensor:
    """W = exp(S): orthogonal for skew-symmetric S (exp(S)^T exp(S) = exp(-S) exp(S) = I).

    A float32 S is exponentiated in float64 and rounded back: in float32 the scaling-and-squaring
    round-off grows with ||S|| (W^T W - I reached 1.7e-5 after a few large steps in our tests)."""
    if S.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.linalg.matrix_exp(S.double()).to(S.dtype)
    return torch.linalg.matrix_exp(S)


def cayley_map(S: Tensor) -> Tensor:
    """W = (I - S)(I + S)^{-1}, computed as the solution of (I + S) W = I - S (the two factors commute).
    I + S is invertible for skew-symmetric S (its eigenvalues are 1 + iλ, λ real)."""
    eye = torch.eye(S.shape[0], dtype=S.dtype, device=S.device)
    return torch.linalg.solve(eye + S, eye - S)


#: name -> map from a skew-symmetric matrix to an orthogonal one
ORTHOGONAL_MAPS: dict[str, Callable[[Tensor], Tensor]] = {"expm": expm_map, "cayley": cayley_map}


def orthogonal_matrix(A: Tensor, parametrisation: str = "expm") -> Tensor:
    """The orthogonal W(A) of ``parametrisation`` (``ORTHOGONAL_MAPS``) applied to S = A - A^T."""
    return lookup(ORTHOGONAL_MAPS, parametrisation, "orthogonal parametrisation")(skew(A))


def modrelu(z: Tensor, bias: Tensor) -> Tensor:
    """modReLU (Arjovsky et al. 2016, eq. 8): ReLU(|z| + b) z / |z|, for real or complex z.

    For real z, z / |z| = sign(z): the unit keeps its sign and its magnitude is shifted by b and
    rectified. |z| is computed as sqrt(|z|^2 + 1e-12), so that z = 0 has a finite gradient."""
    mag = torch.sqrt(z.real ** 2 + z.imag ** 2 + _EPS) if z.is_complex() else torch.sqrt(z ** 2 + _EPS)
    return z * (torch.relu(mag + bias) / mag)


#: the nonlinearities of ``OrthogonalRNN``: name -> f(pre-activation, bias)
RECURRENT_NONLINEARITIES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "linear": lambda a, b: a + b,
    "tanh": lambda a, b: torch.tanh(a + b),
    "modrelu": modrelu,
}


def _glorot_(w: Tensor, fan_in: int, fan_out: int, gen: torch.Generator | None) -> None:
    a = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        w.uniform_(-a, a, generator=gen)


class OrthogonalRNN(nn.Module):
    """h_t = sigma(W(A) h_{t-1} + V x_t + b), W(A) exactly orthogonal (module docstring).

    ``parametrisation``: ``"expm"`` or ``"cayley"``; ``activation``: ``"linear"``, ``"tanh"`` or
    ``"modrelu"`` (b is then the modReLU bias, starting at 0 so the cell starts linear in norm).
    A starts as the strict upper triangle of U[-``init_scale``, ``init_scale``] (A = 0 gives W = I),
    V and U are Glorot-uniform, biases zero. Input ``(batch, T, input_size)``; the output is U h_T
    + b_o (``many_to_one``) or U h_t + b_o at every step; ``return_hidden=True`` also returns the
    states h_0 ... h_T as graph nodes, like ``VanillaRNN``. W is computed once per ``forward``.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, parametrisation: str = "expm",
                 activation: str = "linear", init_scale: float = 1.0, many_to_one: bool = True,
                 seed: int | None = None) -> None:
        super().__init__()
        if min(input_size, hidden_size, output_size) < 1:
            raise ValueError(f"sizes must be >= 1, got {input_size}, {hidden_size}, {output_size}")
        lookup(ORTHOGONAL_MAPS, parametrisation, "orthogonal parametrisation")
        self.nonlinearity = lookup(RECURRENT_NONLINEARITIES, activation, "activation")
        self.config = dict(kind="orthogonal_rnn", input_size=input_size, hidden_size=hidden_size,
                           output_size=output_size, parametrisation=parametrisation, activation=activation,
                           init_scale=init_scale, many_to_one=many_to_one, seed=seed)
        self.parametrisation, self.hidden_size, self.many_to_one = parametrisation, hidden_size, many_to_one
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.A = nn.Parameter(torch.triu(torch.empty(hidden_size, hidden_size).uniform_(
            -init_scale, init_scale, generator=gen), diagonal=1))
        self.V = nn.Parameter(torch.empty(hidden_size, input_size))
        self.b = nn.Parameter(torch.zeros(hidden_size))
        self.U = nn.Parameter(torch.empty(output_size, hidden_size))
        self.b_o = nn.Parameter(torch.zeros(output_size))
        _glorot_(self.V, input_size, hidden_size, gen)
        _glorot_(self.U, hidden_size, output_size, gen)

    def recurrent_matrix(self) -> Tensor:
        """W(A), orthogonal to round-off."""
        return orthogonal_matrix(self.A, self.parametrisation)

    def forward(self, x: Tensor, h0: Tensor | None = None, return_hidden: bool = False):
        if x.dim() != 3:
            raise ValueError(f"OrthogonalRNN expects (batch, T, input_size), got shape {tuple(x.shape)}")
        W = self.recurrent_matrix()
        h = h0 if h0 is not None else x.new_zeros(x.shape[0], self.hidden_size)
        inp = x @ self.V.T
        hidden, outputs = [h], []
        for t in range(x.shape[1]):
            h = self.nonlinearity(h @ W.T + inp[:, t], self.b)
            hidden.append(h)
            if not self.many_to_one:
                outputs.append(h @ self.U.T + self.b_o)
        out = h @ self.U.T + self.b_o if self.many_to_one else torch.stack(outputs, 1)
        return (out, hidden) if return_hidden else out


class UnitaryRNN(nn.Module):
    """The uRNN of Arjovsky, Shah & Bengio (2016): complex state, W = D_3 R_2 F^{-1} D_2 Π R_1 F D_1,
    modReLU, output U [Re h; Im h] + b_o (module docstring for the equations and initialisation).

    Parameters: ``theta`` (3, n) phases of D_1..D_3; ``reflection`` (2, 2, n) the real and imaginary
    parts of v_1, v_2; ``V_re``, ``V_im`` (n, input); ``b`` (n) modReLU bias; ``U`` (output, 2n);
    ``b_o``; ``h0_re``, ``h0_im`` (n) the learned initial state. ``perm`` (a buffer) is Π.
    ``apply_recurrent(h)`` is W h for complex rows h; ``matrix()`` materialises W.
    ``forward(x, return_hidden=True)`` also returns the states h_0 ... h_T as real rows
    [Re h; Im h] ``(batch, 2n)``, whose gradient norm is that of the complex state's gradient.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, many_to_one: bool = True,
                 seed: int | None = None) -> None:
        super().__init__()
        if min(input_size, hidden_size, output_size) < 1:
            raise ValueError(f"sizes must be >= 1, got {input_size}, {hidden_size}, {output_size}")
        n = hidden_size
        self.config = dict(kind="urnn", input_size=input_size, hidden_size=hidden_size, output_size=output_size,
                           many_to_one=many_to_one, seed=seed)
        self.hidden_size, self.many_to_one = n, many_to_one
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.theta = nn.Parameter(torch.empty(3, n).uniform_(-math.pi, math.pi, generator=gen))
        self.reflection = nn.Parameter(torch.empty(2, 2, n).uniform_(-1.0, 1.0, generator=gen))
        self.register_buffer("perm", torch.randperm(n, generator=gen))
        self.V_re = nn.Parameter(torch.empty(n, input_size))
        self.V_im = nn.Parameter(torch.empty(n, input_size))
        _glorot_(self.V_re, input_size, n, gen)
        _glorot_(self.V_im, input_size, n, gen)
        self.b = nn.Parameter(torch.zeros(n))
        self.U = nn.Parameter(torch.empty(output_size, 2 * n))
        _glorot_(self.U, 2 * n, output_size, gen)
        self.b_o = nn.Parameter(torch.zeros(output_size))
        a = math.sqrt(3.0 / (2 * n))
        self.h0_re = nn.Parameter(torch.empty(n).uniform_(-a, a, generator=gen))
        self.h0_im = nn.Parameter(torch.empty(n).uniform_(-a, a, generator=gen))

    def _diag(self, k: int) -> Tensor:
        return torch.polar(torch.ones_like(self.theta[k]), self.theta[k])  # exp(i theta_k)

    def _reflect(self, h: Tensor, k: int) -> Tensor:
        """R_k h = h - 2 v (v^* h) / ||v||^2 for each row h."""
        v = torch.complex(self.reflection[k, 0], self.reflection[k, 1])
        coef = (h @ v.conj()) / (v.real ** 2 + v.imag ** 2).sum()
        return h - 2 * coef[:, None] * v[None, :]

    def apply_recurrent(self, h: Tensor) -> Tensor:
        """W h = D_3 R_2 F^{-1} D_2 Π R_1 F D_1 h for complex rows h ``(batch, n)``."""
        h = h * self._diag(0)
        h = torch.fft.fft(h, norm="ortho")
        h = self._reflect(h, 0)
        h = h[:, self.perm]
        h = h * self._diag(1)
        h = torch.fft.ifft(h, norm="ortho")
        h = self._reflect(h, 1)
        return h * self._diag(2)

    def matrix(self) -> Tensor:
        """W as a dense complex (n, n) matrix: the factors applied to the identity's rows, transposed."""
        eye = torch.eye(self.hidden_size, dtype=self._cdtype(), device=self.theta.device)
        return self.apply_recurrent(eye).T

    def _cdtype(self) -> torch.dtype:
        return torch.complex128 if self.theta.dtype == torch.float64 else torch.complex64

    def initial_state(self, batch: int) -> Tensor:
        return torch.complex(self.h0_re, self.h0_im).expand(batch, -1)

    def readout(self, h: Tensor) -> Tensor:
        """o = U [Re h; Im h] + b_o."""
        return torch.cat([h.real, h.imag], -1) @ self.U.T + self.b_o

    def real_matrix(self) -> Tensor:
        """W as the real (2n, 2n) matrix [[Re W, -Im W], [Im W, Re W]] acting on [Re h; Im h]
        (their §4.1: complex arithmetic written with real numbers)."""
        W = self.matrix()
        return torch.cat([torch.cat([W.real, -W.imag], 1), torch.cat([W.imag, W.real], 1)], 0)

    def forward(self, x: Tensor, h0: Tensor | None = None, return_hidden: bool = False):
        """Run the recursion on [Re h; Im h] with W materialised once (``real_matrix``): the same
        numbers as applying the factors at every step (``apply_recurrent``), fewer, larger operations,
        which is faster on a CPU for small n (the factored form is O(n log n) per step, this O(n^2)).
        ``h0`` and the returned states are real ``(batch, 2n)`` tensors [Re h; Im h]."""
        if x.dim() != 3:
            raise ValueError(f"UnitaryRNN expects (batch, T, input_size), got shape {tuple(x.shape)}")
        n = self.hidden_size
        W = self.real_matrix()
        h = h0 if h0 is not None else torch.cat([self.h0_re, self.h0_im]).expand(x.shape[0], -1)
        inp = torch.cat([x @ self.V_re.T, x @ self.V_im.T], -1)
        hidden, outputs = [h], []
        for t in range(x.shape[1]):
            a = h @ W.T + inp[:, t]
            mag = torch.sqrt(a[:, :n] ** 2 + a[:, n:] ** 2 + _EPS)
            scale = torch.relu(mag + self.b) / mag    # modReLU on each complex unit
            h = a * torch.cat([scale, scale], -1)
            hidden.append(h)
            if not self.many_to_one:
                outputs.append(h @ self.U.T + self.b_o)
        out = h @ self.U.T + self.b_o if self.many_to_one else torch.stack(outputs, 1)
        return (out, hidden) if return_hidden else out

    def forward_factored(self, x: Tensor) -> Tensor:
        """The same net run with complex states and the factors of W applied at every step (the
        paper's O(n log n) form); ``forward`` must agree with it."""
        h = self.initial_state(x.shape[0])
        inp = torch.complex(x @ self.V_re.T, x @ self.V_im.T)
        outputs = []
        for t in range(x.shape[1]):
            h = modrelu(self.apply_recurrent(h) + inp[:, t], self.b)
            outputs.append(self.readout(h))
        return outputs[-1] if self.many_to_one else torch.stack(outputs, 1)
