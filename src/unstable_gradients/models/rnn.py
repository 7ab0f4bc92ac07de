"""A vanilla recurrent net written from the survey's equations 14-16 (Fig. 3)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..activations import get_activation
from ..init import initialize


class VanillaRNN(nn.Module):
    """h_t = sigma(W_xh x_t + W_hh h_{t-1} + b_h) (eq. 14-15), o = W_ho h_T + b_o (eq. 16).

    The input is ``(batch, T, input_size)``; ``forward`` returns the output at the last step
    (``many_to_one=True``, the survey's BPTT setting "the loss depends on the last output only")
    or at every step. ``forward(..., return_hidden=True)`` also returns the list of hidden states
    h_0 ... h_T (h_0 is the initial state ``h0``, zeros by default), each a graph node whose
    gradient ``diagnostics`` can read.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, activation: str = "tanh",
                 init: str | None = "xavier_uniform", recurrent_init: str | None = None,
                 init_kwargs: dict | None = None, recurrent_kwargs: dict | None = None,
                 many_to_one: bool = True, seed: int | None = None) -> None:
        super().__init__()
        self.config = dict(kind="rnn", input_size=input_size, hidden_size=hidden_size, output_size=output_size,
                           activation=activation, init=init, recurrent_init=recurrent_init,
                           init_kwargs=dict(init_kwargs or {}), recurrent_kwargs=dict(recurrent_kwargs or {}),
                           many_to_one=many_to_one, seed=seed)
        self.hidden_size = hidden_size
        self.many_to_one = many_to_one
        self.W_xh = nn.Parameter(torch.empty(hidden_size, input_size))
        self.W_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.b_h = nn.Parameter(torch.zeros(hidden_size))
        self.W_ho = nn.Parameter(torch.empty(output_size, hidden_size))
        self.b_o = nn.Parameter(torch.zeros(output_size))
        self.activation = get_activation(activation)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        bound = 1 / hidden_size**0.5  # torch.nn.RNN's default, used when init is None
        for p in (self.W_xh, self.W_hh, self.W_ho):
            with torch.no_grad():
                p.uniform_(-bound, bound, generator=gen)
        if init is not None:
            initialize(self, init, generator=gen, **(init_kwargs or {}))
            with torch.no_grad():
                self.b_h.zero_()
                self.b_o.zero_()
        if recurrent_init is not None:
            holder = nn.Module()
            holder.W_hh = self.W_hh
            initialize(holder, recurrent_init, generator=gen, **(recurrent_kwargs or {}))

    def forward(self, x: Tensor, h0: Tensor | None = None, return_hidden: bool = False):
        if x.dim() != 3:
            raise ValueError(f"VanillaRNN expects (batch, T, input_size), got shape {tuple(x.shape)}")
        batch, steps, _ = x.shape
        h = h0 if h0 is not None else x.new_zeros(batch, self.hidden_size)
        hidden = [h]
        outputs = []
        for t in range(steps):
            h = self.activation(x[:, t] @ self.W_xh.T + h @ self.W_hh.T + self.b_h)
            hidden.append(h)
            if not self.many_to_one:
                outputs.append(h @ self.W_ho.T + self.b_o)
        out = h @ self.W_ho.T + self.b_o if self.many_to_one else torch.stack(outputs, 1)
        return (out, hidden) if return_hidden else out
