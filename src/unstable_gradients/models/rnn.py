"""A vanilla recurrent net written from the survey's equations 14-16 (Fig. 3), optionally normalised."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..activations import get_activation
from ..init import initialize
from ..norm import RecurrentBatchNorm, get_norm, resolve_norm


class VanillaRNN(nn.Module):
    """h_t = sigma(W_xh x_t + W_hh h_{t-1} + b_h) (eq. 14-15), o = W_ho h_T + b_o (eq. 16).

    The input is ``(batch, T, input_size)``; ``forward`` returns the output at the last step
    (``many_to_one=True``, the survey's BPTT setting "the loss depends on the last output only")
    or at every step. ``forward(..., return_hidden=True)`` also returns the list of hidden states
    h_0 ... h_T (h_0 is the initial state ``h0``, zeros by default), each a graph node whose
    gradient ``diagnostics`` can read.

    ``norm`` normalises the recurrent and the input pre-activations separately (Cooijmans et al.
    2017, eq. 6 for the LSTM, here for eq. 14):

        h_t = sigma(N(W_hh h_{t-1}; t) + N(W_xh x_t; t) + b_h)

    ``"batch"`` (alias ``"recurrent_batch"``): N is batch normalisation with separate statistics
    at every time step (``norm.RecurrentBatchNorm``; Laurent et al. 2016, who shared them and
    normalised only the input term, saw no gain), gamma shared across time and initialised to
    0.1, beta dropped since b_h already shifts (Cooijmans et al. 2017). ``norm_kwargs`` go to the norms; ``max_steps``
    (default 100) is the number of steps that keep their own statistics, later steps reuse the
    last. ``"layer"``: N is layer normalisation of each term (Ba et al. 2016, their LSTM form),
    gain 1 and no shift. The norms are ``norm_hh`` and ``norm_xh``; with ``norm=None`` they are
    absent and the net is exactly eq. 14-16. ``backprop.rnn_bptt`` covers the plain net only.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, activation: str = "tanh",
                 init: str | None = "xavier_uniform", recurrent_init: str | None = None,
                 init_kwargs: dict | None = None, recurrent_kwargs: dict | None = None,
                 many_to_one: bool = True, seed: int | None = None, norm: str | None = None,
                 norm_kwargs: dict | None = None) -> None:
        super().__init__()
        self.config = dict(kind="rnn", input_size=input_size, hidden_size=hidden_size, output_size=output_size,
                           activation=activation, init=init, recurrent_init=recurrent_init,
                           init_kwargs=dict(init_kwargs or {}), recurrent_kwargs=dict(recurrent_kwargs or {}),
                           many_to_one=many_to_one, seed=seed, norm=norm, norm_kwargs=dict(norm_kwargs or {}))
        norm_name = resolve_norm(norm, ("none", "batch", "recurrent_batch", "layer"), "VanillaRNN")
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
        self.normalized = norm_name is not None
        if self.normalized:
            kw = dict(shift=False, **({"max_steps": 100} if norm_name != "layer" else {}))
            kw.update(norm_kwargs or {})
            name = "recurrent_batch" if norm_name == "batch" else norm_name
            self.norm_hh = get_norm(name, hidden_size, **kw)
            self.norm_xh = get_norm(name, hidden_size, **kw)

    def forward(self, x: Tensor, h0: Tensor | None = None, return_hidden: bool = False):
        if x.dim() != 3:
            raise ValueError(f"VanillaRNN expects (batch, T, input_size), got shape {tuple(x.shape)}")
        batch, steps, _ = x.shape
        h = h0 if h0 is not None else x.new_zeros(batch, self.hidden_size)
        hidden = [h]
        outputs = []
        for t in range(steps):
            if self.normalized:  # Cooijmans et al. 2017, eq. 6
                h = self.activation(self._norm(self.norm_xh, x[:, t] @ self.W_xh.T, t)
                                    + self._norm(self.norm_hh, h @ self.W_hh.T, t) + self.b_h)
            else:  # eq. 14-15
                h = self.activation(x[:, t] @ self.W_xh.T + h @ self.W_hh.T + self.b_h)
            hidden.append(h)
            if not self.many_to_one:
                outputs.append(h @ self.W_ho.T + self.b_o)
        out = h @ self.W_ho.T + self.b_o if self.many_to_one else torch.stack(outputs, 1)
        return (out, hidden) if return_hidden else out

    @staticmethod
    def _norm(module: nn.Module, y: Tensor, t: int) -> Tensor:
        return module(y, t) if isinstance(module, RecurrentBatchNorm) else module(y)
