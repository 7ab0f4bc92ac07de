"""Gated networks of survey §2.3.1, written from their equations (not wrapping ``torch.nn.LSTM``/``GRU``).

LSTM with a forget gate (Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000;
survey eq. 53-58, Fig. 10), sigma the logistic sigmoid and ⊙ the elementwise product:

    f_t = sigma(W_xf x_t + W_hf h_{t-1} + b_f)                                (eq. 53)
    i_t = sigma(W_xi x_t + W_hi h_{t-1} + b_i)                                (eq. 54)
    Ĉ_t = tanh(W_xC x_t + W_hC h_{t-1} + b_C)                                 (eq. 55)
    C_t = f_t ⊙ C_{t-1} + i_t ⊙ Ĉ_t                                          (eq. 56)
    o_t = sigma(W_xo x_t + W_ho h_{t-1} + b_o)                                (eq. 57)
    h_t = o_t ⊙ tanh(C_t)                                                     (eq. 58)

Back-propagation through the cell state (eq. 59; the survey writes it from t to t-1):

    de/dC_t = de/dh_t ⊙ o_t ⊙ tanh'(C_t)  +  de/dC_{t+1} ⊙ f_{t+1}

where de/dh_t is the total derivative (through the readout *and* the gates of step t+1). The
second, "stable" term is the constant error carousel scaled by the forget gate; the first,
"dynamic" term carries everything that reaches C_t through h_t. ``cell_gradient_terms`` splits an
autograd gradient into these two terms.

Variants (survey §2.3.1, second paragraph):

- peephole connections (Gers & Schmidhuber 2000; Gers, Schraudolph & Schmidhuber 2002, eq. 1-6):
  diagonal weights w_ci, w_cf from C_{t-1} into the input and forget gates and w_co from C_t
  into the output gate, i_t = sigma(... + w_ci ⊙ C_{t-1}), f_t = sigma(... + w_cf ⊙ C_{t-1}),
  o_t = sigma(... + w_co ⊙ C_t);
- projection LSTM, "LSTMP" (Sak, Senior & Beaufays 2014, eq. 1-7): h_t = W_hr m_t with
  m_t = o_t ⊙ tanh(C_t) and W_hr of shape (P, H), P < H; the projected h_t is what recurs
  (W_h* take P inputs) and what the next layer sees. This is ``torch.nn.LSTM(proj_size=P)``.
  (Sak et al.'s second, non-recurrent projection is left out, as in torch.)
- GRU (Cho et al. 2014, eq. 5-8), see ``GRUCell``.

Highway networks carry the gate idea into feed-forward nets (Srivastava, Greff & Schmidhuber
2015; survey eq. 60-63), see ``HighwayLayer`` and ``HighwayNet``.

Notation and storage, chosen so that weights copy to and from torch as they are: the four gate
matrices of eq. 53-57 are stacked in torch's order **i, f, g, o** (g = Ĉ, the candidate) into
``weight_ih`` (4H, input) = [W_xi; W_xf; W_xC; W_xo] and ``weight_hh`` (4H, H or P); like torch,
every gate has two biases, ``bias_ih`` and ``bias_hh``, whose sum is the survey's b. ``from_torch``
/ ``copy_from_torch`` / ``to_torch`` move weights between these modules and ``torch.nn``;
``tests/test_gated.py`` checks outputs and gradients against ``torch.nn.LSTM``/``GRU``. The input
is batch-first, ``(batch, T, input)``, like ``VanillaRNN``.

Left out on purpose: bidirectional nets, dropout between layers, packed sequences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..activations import get_activation
from ..init import INITIALIZERS, initialize
from ..utils import lookup

__all__ = ["LSTMCell", "GRUCell", "LSTM", "GRU", "Readout", "RecurrentTrace", "CELLS", "get_cell",
           "cell_gradient_terms", "from_torch", "LSTM_GATES", "GRU_GATES", "HighwayLayer", "HighwayNet"]

#: stacking order of the gate blocks in ``weight_ih``/``weight_hh`` (torch's)
LSTM_GATES = ("i", "f", "g", "o")
GRU_GATES = ("r", "z", "n")

_Generator = torch.Generator | None


def _uniform_(tensors: Sequence[Tensor | None], bound: float, generator: _Generator) -> None:
    with torch.no_grad():
        for t in tensors:
            if t is not None:
                t.uniform_(-bound, bound, generator=generator)


def _init_blocks(weight: Tensor, blocks: int, name: str, generator: _Generator, kwargs: dict) -> None:
    """Apply initialiser ``name`` to each gate block of a stacked weight, as if it were its own matrix."""
    fn = lookup(INITIALIZERS, name, "initializer")
    for chunk in weight.data.chunk(blocks, 0):
        try:
            fn(chunk, generator=generator, **kwargs)
        except TypeError as err:
            raise TypeError(f"initializer {name!r} does not take {sorted(kwargs)}: {err}") from None


def _scratch(seed: int | None) -> _Generator:
    """A throw-away generator for the cells' construction-time init when a net is seeded (its
    ``_init`` re-draws everything from the seed), so that a seeded net leaves the global RNG alone."""
    return torch.Generator() if seed is not None else None


class _GatedCell(nn.Module):
    """Shared storage and initialisation of ``LSTMCell`` and ``GRUCell``."""

    gates: tuple[str, ...] = ()
    torch_names: tuple[str, ...] = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")

    def __init__(self, input_size: int, hidden_size: int, recurrent_size: int, bias: bool) -> None:
        super().__init__()
        if min(input_size, hidden_size, recurrent_size) < 1:
            raise ValueError(f"sizes must be >= 1, got input {input_size}, hidden {hidden_size}")
        n = len(self.gates)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.weight_ih = nn.Parameter(torch.empty(n * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(n * hidden_size, recurrent_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.zeros(n * hidden_size))
            self.bias_hh = nn.Parameter(torch.zeros(n * hidden_size))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def _torch_default(self, generator: _Generator) -> None:
        """torch's default: every weight and bias from U[-1/sqrt(H), 1/sqrt(H)]."""
        params = [getattr(self, n, None) for n in self.torch_names]
        _uniform_(params, 1 / math.sqrt(self.hidden_size), generator)

    def reset_parameters(self, init: str | None = None, recurrent_init: str | None = None,
                         init_kwargs: dict | None = None, recurrent_kwargs: dict | None = None,
                         generator: _Generator = None) -> None:
        """Initialise the weights.

        ``init=None``: torch's default, U[-1/sqrt(H), 1/sqrt(H)] for all weights and biases.
        Otherwise ``init`` (a name from ``init.INITIALIZERS``) is applied to each gate block of
        ``weight_ih`` and ``weight_hh`` separately (so fans are those of one gate's matrix) and
        the biases are zeroed; ``recurrent_init`` then re-initialises the blocks of ``weight_hh``
        (e.g. ``"orthogonal"`` per gate, Saxe et al. 2014). Subclasses add their own parameters.
        """
        n = len(self.gates)
        if init is None:
            self._torch_default(generator)
        else:
            _init_blocks(self.weight_ih, n, init, generator, dict(init_kwargs or {}))
            _init_blocks(self.weight_hh, n, init, generator, dict(init_kwargs or {}))
            with torch.no_grad():
                for b in (self.bias_ih, self.bias_hh):
                    if b is not None:
                        b.zero_()
        if recurrent_init is not None:
            _init_blocks(self.weight_hh, n, recurrent_init, generator, dict(recurrent_kwargs or {}))

    def gate_block(self, name: str, gate: str) -> Tensor:
        """The rows of parameter ``name`` (``weight_ih``, ``bias_hh``, ...) that belong to ``gate``."""
        k = lookup({g: i for i, g in enumerate(self.gates)}, gate, "gate")
        return getattr(self, name).chunk(len(self.gates), 0)[k]

    def copy_from_torch(self, module: nn.Module, layer: int | None = None) -> "_GatedCell":
        """Copy the weights of a ``torch.nn.LSTMCell``/``GRUCell`` (``layer=None``) or of layer
        ``layer`` of a ``torch.nn.LSTM``/``GRU`` into this cell. Shapes must match."""
        suffix = "" if layer is None else f"_l{layer}"
        with torch.no_grad():
            for name in self.torch_names:
                ours, theirs = getattr(self, name, None), getattr(module, name + suffix, None)
                if (ours is None) != (theirs is None):
                    raise ValueError(f"{name}: one module has it and the other not (bias/proj_size differ)")
                if ours is None:
                    continue
                if ours.shape != theirs.shape:
                    raise ValueError(f"{name}{suffix}: shape {tuple(theirs.shape)} does not fit {tuple(ours.shape)}")
                ours.copy_(theirs)
        return self

    def copy_to_torch(self, module: nn.Module, layer: int | None = None) -> nn.Module:
        """The reverse of ``copy_from_torch``: write this cell's weights into a torch module."""
        suffix = "" if layer is None else f"_l{layer}"
        with torch.no_grad():
            for name in self.torch_names:
                ours = getattr(self, name, None)
                if ours is not None:
                    getattr(module, name + suffix).copy_(ours)
        return module


class LSTMCell(_GatedCell):
    """One step of the LSTM with forget gate (survey eq. 53-58), optionally with peepholes and a projection.

    ``forward(x, state)`` takes x_t ``(batch, input_size)`` and ``state = (h_{t-1}, C_{t-1})``
    (zeros when ``None``) and returns ``(h_t, C_t)``; ``return_gates=True`` adds a dict of the
    gate values ``i, f, g, o`` (g = Ĉ_t) and ``m`` = o_t ⊙ tanh(C_t) (= h_t without projection).

    Parameters: ``weight_ih`` (4H, input), ``weight_hh`` (4H, R), ``bias_ih``, ``bias_hh`` (4H)
    stacked i, f, g, o as in torch (R = P with a projection, else H); ``weight_hr`` (P, H) with
    ``proj_size = P > 0`` (Sak et al. 2014); ``weight_ci``, ``weight_cf``, ``weight_co`` (H,) with
    ``peephole=True`` (Gers & Schmidhuber 2000). Peephole weights start at zero, so a peephole cell
    starts out computing exactly what the plain cell with the same other weights computes.
    The weights start at torch's default (``reset_parameters`` re-initialises them), drawn from
    ``generator`` (the global RNG when ``None``).
    """

    gates = LSTM_GATES
    torch_names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, peephole: bool = False,
                 proj_size: int = 0, generator: _Generator = None) -> None:
        if proj_size < 0 or (proj_size != 0 and proj_size >= hidden_size):
            raise ValueError(f"proj_size must be 0 (none) or in [1, hidden_size); got {proj_size} "
                             f"with hidden_size {hidden_size}")
        super().__init__(input_size, hidden_size, proj_size or hidden_size, bias)
        self.peephole, self.proj_size = bool(peephole), int(proj_size)
        if peephole:
            self.weight_ci = nn.Parameter(torch.zeros(hidden_size))
            self.weight_cf = nn.Parameter(torch.zeros(hidden_size))
            self.weight_co = nn.Parameter(torch.zeros(hidden_size))
        if proj_size:
            self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size))
        else:
            self.register_parameter("weight_hr", None)
        self.reset_parameters(generator=generator)

    @property
    def output_size(self) -> int:
        """Size of h_t: P with a projection, else H."""
        return self.proj_size or self.hidden_size

    def reset_parameters(self, init: str | None = None, recurrent_init: str | None = None,
                         init_kwargs: dict | None = None, recurrent_kwargs: dict | None = None,
                         generator: _Generator = None, forget_bias: float | None = None) -> None:
        """See ``_GatedCell.reset_parameters``; ``weight_hr`` gets ``init`` as a whole matrix (torch's
        default when ``init=None``), peepholes are zeroed, and ``forget_bias`` (when not ``None``)
        sets the forget gate's bias: b_f = ``bias_ih`` block f = forget_bias, ``bias_hh`` block f = 0
        (Gers et al. 2000 start with the forget gate open; Jozefowicz et al. 2015 recommend b_f = 1)."""
        super().reset_parameters(init, recurrent_init, init_kwargs, recurrent_kwargs, generator)
        if self.weight_hr is not None and init is not None:
            lookup(INITIALIZERS, init, "initializer")(self.weight_hr, generator=generator, **(init_kwargs or {}))
        with torch.no_grad():
            if self.peephole:
                for w in (self.weight_ci, self.weight_cf, self.weight_co):
                    w.zero_()
            if forget_bias is not None:
                if self.bias_ih is None:
                    raise ValueError("forget_bias needs bias=True")
                self.gate_block("bias_ih", "f").fill_(float(forget_bias))
                self.gate_block("bias_hh", "f").zero_()

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None, return_gates: bool = False):
        if state is None:
            h = x.new_zeros(x.shape[0], self.output_size)
            c = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            h, c = state
        a = x @ self.weight_ih.T + h @ self.weight_hh.T
        if self.bias_ih is not None:
            a = a + self.bias_ih + self.bias_hh
        a_i, a_f, a_g, a_o = a.chunk(4, 1)
        if self.peephole:  # Gers & Schmidhuber 2000: the gates also see C_{t-1}
            a_i = a_i + self.weight_ci * c
            a_f = a_f + self.weight_cf * c
        i = torch.sigmoid(a_i)  # eq. 54
        f = torch.sigmoid(a_f)  # eq. 53
        g = torch.tanh(a_g)  # eq. 55 (Ĉ_t)
        c_new = f * c + i * g  # eq. 56
        if self.peephole:  # the output gate sees the new C_t
            a_o = a_o + self.weight_co * c_new
        o = torch.sigmoid(a_o)  # eq. 57
        m = o * torch.tanh(c_new)  # eq. 58
        h_new = m @ self.weight_hr.T if self.weight_hr is not None else m  # Sak et al. 2014, eq. 6
        if return_gates:
            return h_new, c_new, dict(i=i, f=f, g=g, o=o, m=m)
        return h_new, c_new

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}, peephole={self.peephole}, "
                f"proj_size={self.proj_size}")


class GRUCell(_GatedCell):
    """One step of the gated recurrent unit (Cho et al. 2014, eq. 5-8), in torch's formulation.

    With W_* acting on x_t and U_* on h_{t-1}, each with its own bias (torch's b_i*, b_h*):

        r_t = sigma(W_r x_t + b_ir + U_r h_{t-1} + b_hr)                  reset gate
        z_t = sigma(W_z x_t + b_iz + U_z h_{t-1} + b_hz)                  update gate
        n_t = tanh(W_n x_t + b_in + r_t ⊙ (U_n h_{t-1} + b_hn))           candidate (reset_after=True)
        h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    ``reset_after=True`` (default) is ``torch.nn.GRU``/cuDNN's form: the reset gate multiplies
    U_n h_{t-1} + b_hn *after* the matrix product. Cho et al.'s original (their eq. 8,
    h̃ = tanh(W x + U (r ⊙ h_{t-1}))) applies r *before* the matrix, to h_{t-1} itself:
    ``reset_after=False`` gives n_t = tanh(W_n x_t + b_in + U_n (r_t ⊙ h_{t-1}) + b_hn). Both keep
    Cho's convention that z weights the *old* state (eq. 7). Only ``reset_after=True`` matches
    torch. Gates are stacked r, z, n as in torch: ``weight_ih`` (3H, input), ``weight_hh`` (3H, H).
    """

    gates = GRU_GATES

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, reset_after: bool = True,
                 generator: _Generator = None) -> None:
        super().__init__(input_size, hidden_size, hidden_size, bias)
        self.reset_after = bool(reset_after)
        self.reset_parameters(generator=generator)

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def forward(self, x: Tensor, state: Tensor | None = None, return_gates: bool = False):
        h = x.new_zeros(x.shape[0], self.hidden_size) if state is None else state
        H = self.hidden_size
        gi = x @ self.weight_ih.T
        if self.bias_ih is not None:
            gi = gi + self.bias_ih
        i_r, i_z, i_n = gi.chunk(3, 1)
        w_rz, w_n = self.weight_hh[: 2 * H], self.weight_hh[2 * H:]
        b_rz, b_n = (self.bias_hh[: 2 * H], self.bias_hh[2 * H:]) if self.bias_hh is not None else (0.0, 0.0)
        h_r, h_z = (h @ w_rz.T + b_rz).chunk(2, 1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        if self.reset_after:  # torch / cuDNN
            n = torch.tanh(i_n + r * (h @ w_n.T + b_n))
        else:  # Cho et al. 2014, eq. 8
            n = torch.tanh(i_n + (r * h) @ w_n.T + b_n)
        h_new = (1 - z) * n + z * h
        return (h_new, dict(r=r, z=z, n=n)) if return_gates else h_new

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}, reset_after={self.reset_after}"


#: name -> cell builder(input_size, hidden_size, **kwargs)
CELLS: dict[str, Callable[..., nn.Module]] = {
    "lstm": LSTMCell,
    "peephole_lstm": lambda i, h, **kw: LSTMCell(i, h, peephole=True, **kw),
    "projection_lstm": lambda i, h, proj_size=None, **kw: LSTMCell(i, h, proj_size=proj_size or max(1, h // 2), **kw),
    "gru": GRUCell,
    "cho_gru": lambda i, h, **kw: GRUCell(i, h, reset_after=False, **kw),
}


def get_cell(name: str, input_size: int, hidden_size: int, **kwargs) -> nn.Module:
    """Build the recurrent cell ``name`` (``CELLS``); ``projection_lstm`` defaults to P = H // 2.
    Raises ``ValueError`` listing the valid names for an unknown name."""
    return lookup(CELLS, name, "cell")(input_size, hidden_size, **kwargs)


class Readout(nn.Module):
    """o = W h + b, the affine output map of eq. 16 (``VanillaRNN``'s W_ho, b_o).

    A bare module rather than ``nn.Linear`` so that ``diagnostics.weighted_layers`` lists the
    recurrent cells *and* the readout of a gated net (it takes only ``nn.Linear``-type modules
    when there are any).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, h: Tensor) -> Tensor:
        return h @ self.weight.T + self.bias


@dataclass
class RecurrentTrace:
    """Everything a pass through a gated net computed, as graph nodes (nothing detached).

    ``h[l][t]`` / ``c[l][t]``: state of layer l at step t, t = 0 (the initial state) ... T;
    ``c`` is ``None`` for a GRU. ``gates[l][t - 1]``: the gate dict of layer l at step t = 1 ... T.
    ``outputs``: the top layer's h_1 ... h_T stacked, ``(batch, T, size)``.
    """

    outputs: Tensor
    h: list[list[Tensor]]
    c: list[list[Tensor]] | None
    gates: list[list[dict[str, Tensor]]] = field(default_factory=list)


class _GatedNet(nn.Module):
    """A stack of gated cells over a batch-first sequence, plus a readout (shared LSTM/GRU code)."""

    has_cell_state = False
    torch_class: type[nn.Module] = nn.Module

    def _setup(self, cells: list[_GatedCell], output_size: int, many_to_one: bool) -> None:
        self.cells = nn.ModuleList(cells)
        self.num_layers = len(cells)
        self.many_to_one = many_to_one
        self.readout = Readout(cells[-1].output_size, output_size)

    def _init(self, init: str | None, recurrent_init: str | None, init_kwargs: dict | None,
              recurrent_kwargs: dict | None, seed: int | None, **cell_kwargs) -> None:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for cell in self.cells:
            cell.reset_parameters(init, recurrent_init, init_kwargs, recurrent_kwargs, gen, **cell_kwargs)
        if init is None:  # torch.nn.Linear-like default bound for the readout
            _uniform_([self.readout.weight], 1 / math.sqrt(self.readout.weight.shape[1]), gen)
        else:
            lookup(INITIALIZERS, init, "initializer")(self.readout.weight, generator=gen, **(init_kwargs or {}))
        with torch.no_grad():
            self.readout.bias.zero_()

    def _initial_states(self, x: Tensor, state) -> list:
        batch = x.shape[0]
        layers = self.num_layers
        if state is None:
            if self.has_cell_state:
                return [(x.new_zeros(batch, c.output_size), x.new_zeros(batch, c.hidden_size)) for c in self.cells]
            return [x.new_zeros(batch, c.hidden_size) for c in self.cells]
        parts = state if self.has_cell_state else (state,)
        per_part = []
        for s in parts:
            if s.dim() == 2 and layers == 1:
                per_part.append([s])  # (batch, size) for a one-layer net: used as it is
            elif s.dim() == 3 and s.shape[0] == layers:
                per_part.append([s[l] for l in range(layers)])
            else:
                raise ValueError(f"initial state must be (num_layers={layers}, batch, size) "
                                 f"(or (batch, size) for one layer); got shape {tuple(s.shape)}")
        return list(zip(*per_part)) if self.has_cell_state else per_part[0]

    def trace(self, x: Tensor, state=None, keep_gates: bool = True) -> RecurrentTrace:
        """Run the cells over ``x`` ``(batch, T, input_size)`` and keep every state (and gate)."""
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__} expects (batch, T, input_size), got shape {tuple(x.shape)}")
        init = self._initial_states(x, state)
        hs, cs, gates = [], [] if self.has_cell_state else None, []
        inp = [x[:, t] for t in range(x.shape[1])]
        for l, cell in enumerate(self.cells):
            if self.has_cell_state:
                h, c = init[l]
                h_l, c_l = [h], [c]
            else:
                h, h_l = init[l], [init[l]]
            g_l = []
            for x_t in inp:
                if self.has_cell_state:
                    out = cell(x_t, (h, c), return_gates=keep_gates)
                    h, c = out[0], out[1]
                    c_l.append(c)
                else:
                    out = cell(x_t, h, return_gates=keep_gates)
                    h = out[0] if keep_gates else out
                if keep_gates:
                    g_l.append(out[-1])
                h_l.append(h)
            hs.append(h_l)
            if cs is not None:
                cs.append(c_l)
            gates.append(g_l)
            inp = h_l[1:]
        return RecurrentTrace(outputs=torch.stack(inp, 1), h=hs, c=cs, gates=gates if keep_gates else [])

    def recurrent(self, x: Tensor, state=None):
        """The recurrent part alone, with ``torch.nn.LSTM/GRU(batch_first=True)``'s return values:
        ``(outputs (batch, T, size), (h_n, c_n))`` for an LSTM, ``(outputs, h_n)`` for a GRU, with
        h_n, c_n of shape ``(num_layers, batch, size)``."""
        tr = self.trace(x, state, keep_gates=False)
        h_n = torch.stack([h[-1] for h in tr.h])
        if self.has_cell_state:
            return tr.outputs, (h_n, torch.stack([c[-1] for c in tr.c]))
        return tr.outputs, h_n

    def forward(self, x: Tensor, state=None, return_states: bool = False):
        """Readout of the last step (``many_to_one``) or of every step ``(batch, T, output_size)``.

        ``return_states=True`` also returns the top layer's states h_0 ... h_T (and, for an LSTM,
        C_0 ... C_T) as lists of the graph nodes the recursion used, so that their gradients can be
        read (``torch.autograd.grad(loss, cs)``: de/dC_t of eq. 59). h_0, C_0 are the initial state
        (zeros by default, which do not require grad: pass ``state`` to read de/dh_0).
        """
        tr = self.trace(x, state, keep_gates=False)
        out = self.readout(tr.outputs[:, -1] if self.many_to_one else tr.outputs)
        if not return_states:
            return out
        return (out, tr.h[-1], tr.c[-1]) if self.has_cell_state else (out, tr.h[-1])

    def copy_from_torch(self, module: nn.Module) -> "_GatedNet":
        """Copy the weights of a ``torch.nn.LSTM``/``GRU`` with the same sizes (the readout is kept)."""
        if getattr(module, "bidirectional", False) or getattr(module, "dropout", 0):
            raise ValueError("bidirectional torch modules and inter-layer dropout are not supported")
        layers = getattr(module, "num_layers", None)
        if layers != self.num_layers:
            raise ValueError(f"torch module has {layers} layers, this net {self.num_layers}")
        for l, cell in enumerate(self.cells):
            cell.copy_from_torch(module, layer=l)
        return self

    def _torch_kwargs(self) -> dict:
        c = self.cells[0]
        return dict(input_size=c.input_size, hidden_size=c.hidden_size, num_layers=self.num_layers,
                    bias=c.bias_ih is not None, batch_first=True)

    def to_torch(self) -> nn.Module:
        """A ``torch.nn.LSTM``/``GRU`` (``batch_first=True``) holding this net's recurrent weights."""
        p = self.cells[0].weight_ih
        module = self.torch_class(**self._torch_kwargs()).to(dtype=p.dtype, device=p.device)
        for l, cell in enumerate(self.cells):
            cell.copy_to_torch(module, layer=l)
        return module


class LSTM(_GatedNet):
    """A (stacked) LSTM with forget gate and a linear readout (survey eq. 53-58; Gers et al. 2000).

    Sizes as in ``VanillaRNN``: input ``(batch, T, input_size)``, ``hidden_size`` H cells per
    layer, ``output_size`` readout units applied to the top layer's h_T (``many_to_one``) or to
    every h_t. ``peephole=True`` adds peephole connections, ``proj_size=P`` a recurrent projection
    (see ``LSTMCell``); ``num_layers`` stacks cells, layer l+1 reading layer l's h_t.

    Initialisation (``seed`` makes it independent of the global RNG): ``init=None`` is torch's
    default U[-1/sqrt(H), 1/sqrt(H)]; otherwise ``init`` per gate block with zero biases, and
    ``recurrent_init`` per gate block of ``weight_hh``. ``forget_bias`` (default 1.0; ``None``
    leaves the forget gate's biases as ``init`` set them) sets b_f so that the forget gate starts
    open, f ≈ sigma(1) = 0.73, and the stable term of eq. 59 starts near 1.

    ``trace(x)`` keeps all states and gates; ``recurrent(x)`` matches ``torch.nn.LSTM``;
    ``LSTM.from_torch(module, output_size)`` builds one from a torch LSTM.
    """

    has_cell_state = True
    torch_class = nn.LSTM

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_layers: int = 1,
                 many_to_one: bool = True, peephole: bool = False, proj_size: int = 0,
                 forget_bias: float | None = 1.0, bias: bool = True, init: str | None = None,
                 recurrent_init: str | None = None, init_kwargs: dict | None = None,
                 recurrent_kwargs: dict | None = None, seed: int | None = None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.config = dict(kind="lstm", input_size=input_size, hidden_size=hidden_size, output_size=output_size,
                           num_layers=num_layers, many_to_one=many_to_one, peephole=peephole, proj_size=proj_size,
                           forget_bias=forget_bias, bias=bias, init=init, recurrent_init=recurrent_init,
                           init_kwargs=dict(init_kwargs or {}), recurrent_kwargs=dict(recurrent_kwargs or {}),
                           seed=seed)
        self.hidden_size, self.proj_size, self.peephole = hidden_size, proj_size, peephole
        cells = []
        for l in range(num_layers):
            n_in = input_size if l == 0 else (proj_size or hidden_size)
            cells.append(LSTMCell(n_in, hidden_size, bias=bias, peephole=peephole, proj_size=proj_size,
                                  generator=_scratch(seed)))
        self._setup(cells, output_size, many_to_one)
        self._init(init, recurrent_init, init_kwargs, recurrent_kwargs, seed,
                   forget_bias=forget_bias if bias else None)

    def _torch_kwargs(self) -> dict:
        if self.peephole:
            raise ValueError("torch.nn.LSTM has no peephole connections")
        return dict(super()._torch_kwargs(), proj_size=self.proj_size)

    @classmethod
    def from_torch(cls, module: nn.LSTM, output_size: int = 1, many_to_one: bool = True,
                   seed: int | None = None) -> "LSTM":
        """An ``LSTM`` with the recurrent weights of ``module`` (a ``torch.nn.LSTM``, any
        ``batch_first``) and a fresh readout; same dtype and device as ``module``."""
        net = cls(module.input_size, module.hidden_size, output_size, num_layers=module.num_layers,
                  many_to_one=many_to_one, proj_size=module.proj_size, bias=module.bias, seed=seed)
        p = module.weight_ih_l0
        return net.to(dtype=p.dtype, device=p.device).copy_from_torch(module)


class GRU(_GatedNet):
    """A (stacked) GRU with a linear readout (Cho et al. 2014; see ``GRUCell``).

    Arguments as for ``LSTM`` (no forget bias, peepholes or projection); ``reset_after=False``
    gives Cho et al.'s original candidate. ``forward(..., return_states=True)`` returns
    ``(out, hs)``; ``recurrent(x)`` matches ``torch.nn.GRU`` (with ``reset_after=True``).
    """

    torch_class = nn.GRU

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_layers: int = 1,
                 many_to_one: bool = True, reset_after: bool = True, bias: bool = True, init: str | None = None,
                 recurrent_init: str | None = None, init_kwargs: dict | None = None,
                 recurrent_kwargs: dict | None = None, seed: int | None = None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.config = dict(kind="gru", input_size=input_size, hidden_size=hidden_size, output_size=output_size,
                           num_layers=num_layers, many_to_one=many_to_one, reset_after=reset_after, bias=bias,
                           init=init, recurrent_init=recurrent_init, init_kwargs=dict(init_kwargs or {}),
                           recurrent_kwargs=dict(recurrent_kwargs or {}), seed=seed)
        self.hidden_size, self.reset_after = hidden_size, reset_after
        cells = [GRUCell(input_size if l == 0 else hidden_size, hidden_size, bias=bias, reset_after=reset_after,
                         generator=_scratch(seed)) for l in range(num_layers)]
        self._setup(cells, output_size, many_to_one)
        self._init(init, recurrent_init, init_kwargs, recurrent_kwargs, seed)

    def _torch_kwargs(self) -> dict:
        if not self.reset_after:
            raise ValueError("torch.nn.GRU only has the reset_after=True form")
        return super()._torch_kwargs()

    @classmethod
    def from_torch(cls, module: nn.GRU, output_size: int = 1, many_to_one: bool = True,
                   seed: int | None = None) -> "GRU":
        """A ``GRU`` with the recurrent weights of ``module`` (a ``torch.nn.GRU``) and a fresh readout."""
        net = cls(module.input_size, module.hidden_size, output_size, num_layers=module.num_layers,
                  many_to_one=many_to_one, bias=module.bias, seed=seed)
        p = module.weight_ih_l0
        return net.to(dtype=p.dtype, device=p.device).copy_from_torch(module)


def from_torch(module: nn.Module, output_size: int = 1, **kwargs) -> nn.Module:
    """Our counterpart of a ``torch.nn.LSTM``, ``GRU``, ``LSTMCell`` or ``GRUCell``, holding its weights.

    Nets get a fresh readout with ``output_size`` units (``kwargs``: ``many_to_one``, ``seed``).
    """
    if isinstance(module, nn.LSTM):
        return LSTM.from_torch(module, output_size, **kwargs)
    if isinstance(module, nn.GRU):
        return GRU.from_torch(module, output_size, **kwargs)
    p = getattr(module, "weight_ih", None)
    if isinstance(module, nn.LSTMCell):
        cell = LSTMCell(module.input_size, module.hidden_size, bias=module.bias)
    elif isinstance(module, nn.GRUCell):
        cell = GRUCell(module.input_size, module.hidden_size, bias=module.bias)
    else:
        raise ValueError(f"from_torch takes torch.nn.LSTM, GRU, LSTMCell or GRUCell, got {type(module).__name__}")
    return cell.to(dtype=p.dtype, device=p.device).copy_from_torch(module)


def cell_gradient_terms(model: LSTM, x: Tensor, loss_fn: Callable[[Tensor], Tensor], state=None,
                        layer: int = -1) -> dict[str, list[float] | float]:
    """Split de/dC_t into the two terms of survey eq. 59, for t = 1 ... T of one layer.

        de/dC_t = [de/dh_t ⊙ o_t ⊙ tanh'(C_t)]  +  [de/dC_{t+1} ⊙ f_{t+1}]
                   "output" (dynamic) term          "forget" (stable) term

    de/dh_t and de/dC_t are total derivatives read from autograd; with a projection the first
    term uses W_hr^T de/dh_t (the gradient reaching m_t). ``loss_fn(output)`` maps the model's
    output to the scalar e. Returns per-step Frobenius norms over the batch: ``total``
    (||de/dC_t|| from autograd), ``output_term``, ``forget_term`` (0 at t = T), and ``error``, the
    largest |de/dC_t - (sum of the terms)| over all entries (round-off: eq. 59 is exact here).
    Peephole cells add further paths from C_t (through the gates), so they are refused.
    """
    if model.peephole:
        raise ValueError("eq. 59 is the LSTM without peepholes; with peepholes C_t also feeds the gates")
    tr = model.trace(x, state)
    out = model.readout(tr.outputs[:, -1] if model.many_to_one else tr.outputs)
    hs, cs, gates = tr.h[layer][1:], tr.c[layer][1:], tr.gates[layer]
    grads = torch.autograd.grad(loss_fn(out), hs + cs, allow_unused=True)
    T = len(hs)
    dh = [g if g is not None else torch.zeros_like(h) for g, h in zip(grads[:T], hs)]
    dc = [g if g is not None else torch.zeros_like(c) for g, c in zip(grads[T:], cs)]
    cell = model.cells[layer]
    result: dict[str, list[float] | float] = dict(total=[], output_term=[], forget_term=[])
    err = 0.0
    with torch.no_grad():
        for t in range(T):
            dm = dh[t] @ cell.weight_hr if cell.weight_hr is not None else dh[t]
            first = dm * gates[t]["o"] * (1 - torch.tanh(cs[t]) ** 2)
            second = dc[t + 1] * gates[t + 1]["f"] if t + 1 < T else torch.zeros_like(first)
            result["total"].append(float(dc[t].norm()))
            result["output_term"].append(float(first.norm()))
            result["forget_term"].append(float(second.norm()))
            err = max(err, float((dc[t] - first - second).abs().max()))
    result["error"] = err
    return result


class HighwayLayer(nn.Module):
    """One highway layer (Srivastava, Greff & Schmidhuber 2015, eq. 2-3; survey eq. 60-62):

        y = H(x) ⊙ T(x) + x ⊙ C(x),   H(x) = act(W_H x + b_H),   T(x) = sigma(W_T x + b_T)

    with the carry gate coupled to the transform gate, C = 1 - T (``coupled=True``, Srivastava et
    al.'s choice, their eq. 3). ``coupled=False`` gives the survey's general form with a carry gate
    of its own, c = sigma(W_C x + b_C) (eq. 62), b_C starting at ``carry_bias`` (default
    -``gate_bias``, so the layer starts carrying).

    b_T starts at ``gate_bias`` < 0 (default -2; Srivastava et al. §2.2 suggest -1 to -3): the
    layer starts close to the identity, y ≈ x, and the gradient of eq. 63 passes through the
    carry term. The parameters are ``transform`` (W_H, b_H), ``gate`` (W_T, b_T) and ``carry``.

    ``plain=True`` drops the gates: y = H(x), an ordinary layer with the same W_H (the baseline of
    Srivastava et al.'s Fig. 1). After each forward, ``last_transform`` holds the mean of T(x) over
    the batch, per unit (detached; ``None`` before the first pass or for a plain layer).
    """

    def __init__(self, width: int, activation: str = "relu", gate_bias: float = -2.0, coupled: bool = True,
                 carry_bias: float | None = None, plain: bool = False,
                 activation_kwargs: dict | None = None) -> None:
        super().__init__()
        self.width, self.plain, self.coupled = int(width), bool(plain), bool(coupled)
        self.gate_bias = float(gate_bias)
        self.carry_bias = -self.gate_bias if carry_bias is None else float(carry_bias)
        self.transform = nn.Linear(width, width)
        self.activation = get_activation(activation, **(activation_kwargs or {}))
        self.gate = None if plain else nn.Linear(width, width)
        self.carry = None if plain or coupled else nn.Linear(width, width)
        self.last_transform: Tensor | None = None
        self.reset_gate_bias()

    def reset_gate_bias(self) -> None:
        """Set b_T to ``gate_bias`` (and b_C to ``carry_bias``); nets call it after ``initialize``."""
        with torch.no_grad():
            if self.gate is not None:
                self.gate.bias.fill_(self.gate_bias)
            if self.carry is not None:
                self.carry.bias.fill_(self.carry_bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.activation(self.transform(x))  # H(x)
        if self.plain:
            return h
        t = torch.sigmoid(self.gate(x))  # eq. 61
        c = 1 - t if self.carry is None else torch.sigmoid(self.carry(x))  # C = 1 - T, or eq. 62
        self.last_transform = t.detach().mean(0)
        return h * t + x * c  # eq. 60

    def extra_repr(self) -> str:
        return f"{self.width}, gate_bias={self.gate_bias}, coupled={self.coupled}, plain={self.plain}"


class HighwayNet(nn.Module):
    """A fully connected highway network (Srivastava et al. 2015, §3-4.1; survey eq. 60-63).

    An input layer maps the (flattened) input to ``width`` units (x_0 = act(W_0 x + b_0)), then
    ``depth`` highway layers of that width (``HighwayLayer``), then an affine output layer to
    ``out_features`` logits. ``plain=True`` builds the same net without gates (the plain baseline
    with identical W_H and input/output layers; fewer parameters by the gates').

    ``init`` (default He's N(0, 2/n_in), Srivastava et al.'s choice) sets every weight matrix and
    zeroes the biases; then the gate biases are set to ``gate_bias``. ``gate_activity()`` lists
    the mean transform-gate value T of each layer in the last forward pass (Srivastava et al.,
    Fig. 2). ``hidden_modules()`` are the highway layers, whose outputs are x_1 ... x_depth.
    """

    def __init__(self, in_features: int = 784, width: int = 50, depth: int = 10, out_features: int = 10,
                 activation: str = "relu", gate_bias: float = -2.0, coupled: bool = True,
                 carry_bias: float | None = None, plain: bool = False, init: str | None = "he_normal",
                 init_kwargs: dict | None = None, activation_kwargs: dict | None = None,
                 seed: int | None = None) -> None:
        super().__init__()
        if min(in_features, width, out_features) < 1 or depth < 0:
            raise ValueError(f"sizes must be >= 1 and depth >= 0; got in_features={in_features}, width={width}, "
                             f"depth={depth}, out_features={out_features}")
        self.config = dict(kind="highway", in_features=in_features, width=width, depth=depth,
                           out_features=out_features, activation=activation, gate_bias=gate_bias, coupled=coupled,
                           carry_bias=carry_bias, plain=plain, init=init, init_kwargs=dict(init_kwargs or {}),
                           activation_kwargs=dict(activation_kwargs or {}), seed=seed)
        self.depth, self.plain = depth, plain
        self.input_layer = nn.Linear(in_features, width)
        self.input_activation = get_activation(activation, **(activation_kwargs or {}))
        self.layers = nn.ModuleList(
            HighwayLayer(width, activation, gate_bias, coupled, carry_bias, plain, activation_kwargs)
            for _ in range(depth))
        self.output_layer = nn.Linear(width, out_features)
        if init is not None:
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            initialize(self, init, generator=gen, **(init_kwargs or {}))
            for layer in self.layers:
                layer.reset_gate_bias()

    def hidden_modules(self) -> list[tuple[str, nn.Module]]:
        """(name, module) pairs whose outputs are the highway layers' outputs x_1 ... x_depth."""
        return [(f"layer{i + 1}", layer) for i, layer in enumerate(self.layers)]

    def gate_activity(self) -> list[float]:
        """Mean transform-gate activity T of each highway layer in the last forward pass."""
        if self.plain:
            raise ValueError("a plain net has no gates")
        if any(layer.last_transform is None for layer in self.layers):
            raise ValueError("run a forward pass first")
        return [float(layer.last_transform.mean()) for layer in self.layers]

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1) if x.dim() > 2 else x
        x = self.input_activation(self.input_layer(x))
        for layer in self.layers:
            x = layer(x)
        return self.output_layer(x)
