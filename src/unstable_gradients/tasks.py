"""Synthetic sequence tasks for recurrent nets.

The copying-memory task (Hochreiter & Schmidhuber 1997, §5 experiment 2 in a different form;
Arjovsky, Shah & Bengio 2016, §5.1). An alphabet of 10 symbols: 0 is the blank, 1-8 are data,
9 is the delimiter. A sequence has length T + 20:

    positions 0 ... 9          10 data symbols drawn uniformly from 1-8 (what is to be remembered)
    positions 10 ... T + 8     T - 1 blanks
    position  T + 9            the delimiter
    positions T + 10 ... T + 19  blanks, during which the net must output the 10 data symbols

The target is the blank everywhere except the last 10 positions, which hold the data symbols in
order. The net reads one symbol per step (one-hot, 10 inputs) and outputs a distribution over the
10 symbols at every step; the loss is the cross-entropy averaged over all T + 20 steps.

The memoryless baseline (Arjovsky et al. 2016, §5.1). Without memory of the first 10 inputs the best
one can do is predict the blank with probability 1 before the delimiter's successor and the uniform
distribution over the 8 data symbols for the last 10 steps: cross-entropy 0 on T + 10 steps and
log 8 on 10, i.e. 10 log(8) / (T + 20) per step. ``memoryless_logits`` builds exactly that
prediction (blanks as a hard 0/1 distribution, via -inf logits) so that the formula can be checked
against the measured cross-entropy.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["COPY_SYMBOLS", "BLANK", "DELIMITER", "N_MEMORISE", "copying_task", "copying_baseline",
           "memoryless_logits", "one_hot"]

COPY_SYMBOLS = 10      # alphabet size: blank, 8 data symbols, delimiter
BLANK, DELIMITER = 0, 9
N_MEMORISE = 10        # symbols to remember
N_DATA = 8             # data symbols 1 ... 8


def copying_task(batch: int, T: int, seed: int | None = None, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
    """``batch`` copying-memory sequences of length T + 20 (module docstring): returns the input
    symbols ``x`` and the targets ``y``, both ``(batch, T + 20)`` int64. ``seed`` (or a
    ``generator``) makes the draw reproducible without touching the global RNG."""
    if T < 1 or batch < 1:
        raise ValueError(f"need T >= 1 and batch >= 1, got T={T}, batch={batch}")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    length = T + 2 * N_MEMORISE
    data = torch.randint(1, N_DATA + 1, (batch, N_MEMORISE), generator=generator)
    x = torch.full((batch, length), BLANK, dtype=torch.long)
    x[:, :N_MEMORISE] = data
    x[:, T + N_MEMORISE - 1] = DELIMITER
    y = torch.full((batch, length), BLANK, dtype=torch.long)
    y[:, -N_MEMORISE:] = data
    return x, y


def one_hot(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Symbols ``(batch, L)`` -> one-hot inputs ``(batch, L, 10)``."""
    return F.one_hot(x, COPY_SYMBOLS).to(dtype)


def copying_baseline(T: int) -> float:
    """The memoryless cross-entropy 10 log(8) / (T + 20) (Arjovsky et al. 2016, §5.1)."""
    return N_MEMORISE * math.log(N_DATA) / (T + 2 * N_MEMORISE)


def memoryless_logits(batch: int, T: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Logits ``(batch, T + 20, 10)`` of the memoryless strategy: the blank with probability 1 on the
    first T + 10 steps, uniform over the symbols 1-8 on the last 10 (impossible symbols at -inf)."""
    length = T + 2 * N_MEMORISE
    logits = torch.full((batch, length, COPY_SYMBOLS), -math.inf, dtype=dtype)
    logits[:, : length - N_MEMORISE, BLANK] = 0.0
    logits[:, length - N_MEMORISE:, 1: N_DATA + 1] = 0.0
    return logits
