"""A stacked LSTM with shortcuts between its layers (survey §3.1: "carry highway and residual ideas
into LSTMs"; Kim, El-Khamy & Lee 2017, residual LSTM; Zhang et al. 2016, highway LSTM; Wu et al.
2016, residual connections between the layers of GNMT).

Layer l reads the sequence y^{(l-1)}_1 ... y^{(l-1)}_T below it (y^{(0)} = x), runs an LSTM cell
over it (survey eq. 53-58) to get h^{(l)}_t, and passes up

    "none":      y^{(l)}_t = h^{(l)}_t
    "residual":  y^{(l)}_t = h^{(l)}_t + y^{(l-1)}_t                          (He et al. 2016, between layers)
    "highway":   y^{(l)}_t = g ⊙ h^{(l)}_t + (1 - g) ⊙ y^{(l-1)}_t,  g = sigma(W_g y^{(l-1)}_t + b_g)
                                                                               (Srivastava et al. 2015, eq. 2-3)

The first layer changes the width (input -> hidden), so shortcuts start at layer 2 (GNMT's
choice too). b_g starts at ``gate_bias`` (default -2: the layer starts carrying, as
``HighwayLayer``). The readout is applied to the top layer's y_T (``many_to_one``) or every y_t.

Our shortcuts sit *between* layers, in the spirit of the survey's sentence; Kim et al.'s residual
LSTM and Zhang et al.'s highway LSTM put them inside the cell (onto the output projection and the
cell state), which we leave out.

The cells are ``models.gated.LSTMCell`` (torch's default init, forget-gate bias ``forget_bias``);
``engine="torch"`` runs each layer with torch's fused LSTM kernel holding those very parameters
(``torch.func.functional_call``), ``engine="cells"`` with the Python loop over ``LSTMCell``; the two
agree to round-off (``tests/test_stacked.py``). ``forward(..., return_layers=True)`` also returns
the layer outputs y^{(1)} ... y^{(L)}, each ``(batch, T, hidden)`` and a graph node whose gradient
can be read.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..utils import lookup
from .gated import LSTMCell, Readout

__all__ = ["StackedLSTM", "CONNECTIONS"]

#: the connections between layers
CONNECTIONS = ("none", "residual", "highway")
ENGINES = ("torch", "cells")


class StackedLSTM(nn.Module):
    """``num_layers`` LSTM layers of ``hidden_size`` cells joined by ``connection`` (module docstring)."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_layers: int = 2,
                 connection: str = "none", gate_bias: float = -2.0, forget_bias: float | None = 1.0,
                 many_to_one: bool = True, engine: str = "torch", seed: int | None = None) -> None:
        super().__init__()
        if num_layers < 1 or min(input_size, hidden_size, output_size) < 1:
            raise ValueError(f"need num_layers >= 1 and sizes >= 1; got {num_layers}, {input_size}, "
                             f"{hidden_size}, {output_size}")
        self.connection = lookup({c: c for c in CONNECTIONS}, connection, "connection")
        self.engine = lookup({e: e for e in ENGINES}, engine, "engine")
        self.config = dict(kind="stacked_lstm", input_size=input_size, hidden_size=hidden_size,
                           output_size=output_size, num_layers=num_layers, connection=connection, gate_bias=gate_bias,
                           forget_bias=forget_bias, many_to_one=many_to_one, engine=engine, seed=seed)
        self.hidden_size, self.num_layers, self.many_to_one = hidden_size, num_layers, many_to_one
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.cells = nn.ModuleList()
        for l in range(num_layers):
            cell = LSTMCell(input_size if l == 0 else hidden_size, hidden_size, generator=gen)
            cell.reset_parameters(generator=gen, forget_bias=forget_bias)
            self.cells.append(cell)
        self.gates = nn.ModuleList()
        if connection == "highway":
            bound = 1 / math.sqrt(hidden_size)
            for _ in range(num_layers - 1):
                g = nn.Linear(hidden_size, hidden_size)
                with torch.no_grad():
                    g.weight.uniform_(-bound, bound, generator=gen)
                    g.bias.fill_(gate_bias)
                self.gates.append(g)
        self.readout = Readout(hidden_size, output_size)
        with torch.no_grad():
            self.readout.weight.uniform_(-1 / math.sqrt(hidden_size), 1 / math.sqrt(hidden_size), generator=gen)
        # parameter-free templates for the fused kernel (their own weights are never used)
        self._kernels = [nn.LSTM(c.input_size, hidden_size, batch_first=True) for c in self.cells]

    def _run_layer(self, l: int, x: Tensor) -> Tensor:
        cell = self.cells[l]
        if self.engine == "torch":
            params = {f"{n}_l0": getattr(cell, n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            kernel = self._kernels[l].to(dtype=x.dtype, device=x.device)
            return functional_call(kernel, params, (x,))[0]
        h = c = None
        outs = []
        for t in range(x.shape[1]):
            h, c = cell(x[:, t], None if h is None else (h, c))
            outs.append(h)
        return torch.stack(outs, 1)

    def layers(self, x: Tensor) -> list[Tensor]:
        """The layer outputs y^{(1)} ... y^{(L)}, each ``(batch, T, hidden)``."""
        if x.dim() != 3:
            raise ValueError(f"StackedLSTM expects (batch, T, input_size), got shape {tuple(x.shape)}")
        ys, y = [], x
        for l in range(self.num_layers):
            h = self._run_layer(l, y)
            if l > 0 and self.connection == "residual":
                h = h + y
            elif l > 0 and self.connection == "highway":
                g = torch.sigmoid(self.gates[l - 1](y))
                h = g * h + (1 - g) * y
            ys.append(h)
            y = h
        return ys

    def forward(self, x: Tensor, return_layers: bool = False):
        ys = self.layers(x)
        out = self.readout(ys[-1][:, -1] if self.many_to_one else ys[-1])
        return (out, ys) if return_layers else out
