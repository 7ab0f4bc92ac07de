"""Experiments of survey §3.1, model design (chapter ``future/01_constrained_recurrent``):
recurrent matrices that cannot change a norm, and shortcuts between the layers of a stacked LSTM.

Every function returns plain data (arrays, dicts) that ``plotting`` draws.

- ``build_cell`` / ``CELL_ARMS``: the recurrent nets compared (vanilla tanh RNN at torch's default
  scale and at a larger gain, orthogonal RNNs with the exponential or Cayley map and a linear,
  tanh or modReLU unit, the uRNN of Arjovsky et al. 2016, an LSTM).
- ``time_gradients``: ||de/dh_t|| over t = 1 ... T at initialisation, several seeds, on the
  first-input batch of ``effects_rnn`` (float64); ``per_step_factor``: the geometric-mean factor
  by which one step back multiplies the norm; ``tanh_derivative``: the mean tanh'(a_t) of an
  orthogonal tanh cell (why its gradient still shrinks).
- ``recurrent_deviation`` / ``constraint_after_training``: max |W^* W - I| before and after SGD
  steps at a large learning rate (the parametrisation keeps the constraint).
- ``copying_run`` / ``copying_sweep``: the copying-memory task (``tasks.copying_task``) trained
  with RMSProp as Arjovsky et al. did, against the memoryless baseline 10 log 8 / (T + 20).
- ``stacked_depth_gradients``: ||de/dy^{(1)}||, the gradient reaching the bottom layer of a
  ``StackedLSTM`` at initialisation, by depth and connection.

Notation: entry k of a time profile is step t = k + 1; the per-step factor is
(||de/dh_1|| / ||de/dh_T||)^{1/(T-1)}, < 1 when the gradient shrinks going back in time.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..models import LSTM, VanillaRNN
from ..models.stacked import CONNECTIONS, StackedLSTM
from ..models.unitary import OrthogonalRNN, UnitaryRNN
from ..tasks import COPY_SYMBOLS, copying_baseline, copying_task, one_hot
from .effects_rnn import first_input_task

__all__ = ["CELL_ARMS", "build_cell", "time_gradients", "per_step_factor", "tanh_derivative", "recurrent_deviation",
           "constraint_after_training", "COPYING",
           "COPYING_PAPER", "COPY_ARMS", "copying_run", "copying_sweep", "stacked_depth_gradients",
           "SequenceTorchLSTM"]

_F64 = torch.float64
_Builder = Callable[[int, int, int, int, bool], nn.Module]


def _rnn_gain(gain: float) -> _Builder:
    return lambda i, h, o, seed, m2o: VanillaRNN(i, h, o, init=None, recurrent_init="normal",
                                                 recurrent_kwargs=dict(std=gain / math.sqrt(h)),
                                                 many_to_one=m2o, seed=seed)


def _orth(param: str, act: str) -> _Builder:
    return lambda i, h, o, seed, m2o: OrthogonalRNN(i, h, o, parametrisation=param, activation=act,
                                                    many_to_one=m2o, seed=seed)


#: label -> builder(input_size, hidden, output_size, seed, many_to_one). "RNN" has torch's default
#: U[-1/sqrt(H), 1/sqrt(H)] weights; "RNN, gain 3" draws W_hh from N(0, 9/H); LSTM: b_f = 1.
CELL_ARMS: dict[str, _Builder] = {
    "RNN (torch default)": lambda i, h, o, seed, m2o: VanillaRNN(i, h, o, init=None, many_to_one=m2o, seed=seed),
    "RNN, gain 3": _rnn_gain(3.0),
    "orthogonal, linear": _orth("expm", "linear"),
    "orthogonal, tanh": _orth("expm", "tanh"),
    "orthogonal, modReLU": _orth("expm", "modrelu"),
    "orthogonal (Cayley), linear": _orth("cayley", "linear"),
    "uRNN": lambda i, h, o, seed, m2o: UnitaryRNN(i, h, o, many_to_one=m2o, seed=seed),
    "LSTM": lambda i, h, o, seed, m2o: LSTM(i, h, o, many_to_one=m2o, seed=seed),
}


def build_cell(arm: str, input_size: int, hidden: int, output_size: int, seed: int = 0,
               many_to_one: bool = True) -> nn.Module:
    """The net of ``arm`` (``CELL_ARMS``); raises a ``ValueError`` listing the arms for an unknown one."""
    if arm not in CELL_ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid arms: {', '.join(CELL_ARMS)}")
    return CELL_ARMS[arm](input_size, hidden, output_size, seed, many_to_one)


def _hidden_states(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    if isinstance(model, LSTM):
        out, hs, _ = model(x, return_states=True)
        return out, hs
    return model(x, return_hidden=True)


def time_gradients(arm: str, steps: int = 100, hidden: int = 32, batch: int = 64,
                   seeds: Sequence[int] = range(3), noise: float = 1.0) -> np.ndarray:
    """||de/dh_t||, t = 1 ... ``steps``, at initialisation: ``(len(seeds), steps)``.

    e is the cross-entropy of the last step's readout on ``effects_rnn.first_input_task``
    (``batch`` sequences, the same batch for every seed and arm), the norms are Frobenius norms over
    the batch of the total derivatives (for the uRNN, of the complex state, i.e. of [Re h; Im h]);
    float64 so that nothing underflows. Seed s fixes the net's initial weights.
    """
    x, y = first_input_task(batch, steps, noise, seed=0)
    x = x.to(_F64)
    rows = []
    for s in seeds:
        model = build_cell(arm, 1, hidden, 2, seed=int(s)).to(_F64)
        out, hs = _hidden_states(model, x)
        grads = torch.autograd.grad(F.cross_entropy(out, y), hs[1:])
        rows.append([float(g.norm()) for g in grads])
    return np.array(rows)


def per_step_factor(profile: np.ndarray) -> np.ndarray:
    """(||de/dh_1|| / ||de/dh_T||)^{1/(T-1)} of each row of a ``time_gradients`` array."""
    profile = np.atleast_2d(profile)
    return (profile[:, 0] / profile[:, -1]) ** (1.0 / (profile.shape[1] - 1))


def tanh_derivative(steps: int = 100, hidden: int = 32, batch: int = 64, seeds: Sequence[int] = range(3),
                    noise: float = 1.0) -> np.ndarray:
    """Mean of tanh'(a) = 1 - h_t^2 over units, steps and the batch for the orthogonal tanh cell
    at initialisation, one value per seed. Each step back multiplies the gradient by
    W^T diag(tanh'(a_t)), whose norm is at most max tanh'(a_t) <= 1, so with W orthogonal the
    shrinkage comes from tanh' alone."""
    x, _ = first_input_task(batch, steps, noise, seed=0)
    out = []
    with torch.no_grad():
        for s in seeds:
            _, hs = build_cell("orthogonal, tanh", 1, hidden, 2, seed=int(s)).to(_F64)(x.to(_F64), return_hidden=True)
            out.append(float(torch.stack([1 - h ** 2 for h in hs[1:]]).mean()))
    return np.array(out)


def recurrent_deviation(model: nn.Module) -> float:
    """max |W^* W - I| of the recurrent matrix of an ``OrthogonalRNN`` or ``UnitaryRNN``, in its dtype."""
    if isinstance(model, OrthogonalRNN):
        W = model.recurrent_matrix().detach()
    elif isinstance(model, UnitaryRNN):
        W = model.matrix().detach()
    else:
        raise ValueError(f"need an OrthogonalRNN or UnitaryRNN, got {type(model).__name__}")
    eye = torch.eye(W.shape[0], dtype=W.dtype)
    return float((W.conj().T @ W - eye).abs().max())


def constraint_after_training(arm: str, steps: int = 20, lr: float = 1.0, T: int = 10, hidden: int = 32,
                              seed: int = 0) -> dict[str, float]:
    """Train the net of ``arm`` on the copying task with plain SGD at a large learning rate and
    report how far its recurrent matrix is from orthogonal/unitary before and after
    (``recurrent_deviation``, float32) and how far the parameters moved (largest change)."""
    model = build_cell(arm, COPY_SYMBOLS, hidden, COPY_SYMBOLS, seed=seed, many_to_one=False)
    before = recurrent_deviation(model)
    start = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for k in range(steps):
        x, y = copying_task(20, T, seed=seed * 7919 + k)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(one_hot(x)).reshape(-1, COPY_SYMBOLS), y.reshape(-1)).backward()
        opt.step()
    moved = max(float((p.detach() - p0).abs().max()) for p, p0 in zip(model.parameters(), start))
    return dict(before=before, after=recurrent_deviation(model), moved=moved)


# ---------------------------------------------------------------------------------------------
# The copying-memory task (Arjovsky et al. 2016, §5.1)
# ---------------------------------------------------------------------------------------------


class SequenceTorchLSTM(nn.Module):
    """Our ``LSTM`` (many-to-many) run by torch's fused kernel with the same weights, for speed; the
    readout is shared. ``sync()`` copies the trained recurrent weights back into the model."""

    def __init__(self, model: LSTM) -> None:
        super().__init__()
        self.model = [model]   # not registered: its readout is
        self.rnn = model.to_torch()
        self.readout = model.readout

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.rnn(x)[0])

    def sync(self) -> LSTM:
        return self.model[0].copy_from_torch(self.rnn)


#: Arjovsky et al.'s training setting, with our CPU-sized defaults: RMSProp (lr 1e-3, decay 0.9),
#: mini-batches of ``batch`` fresh sequences per step, element-wise gradient clipping at 1 for
#: the RNN and LSTM (as in their code; none for the unitary nets), the loss averaged over all
#: T + 20 steps, final loss on ``n_test`` new sequences.
COPYING = dict(T=20, steps=300, batch=20, lr=1e-3, alpha=0.9, clip=1.0, n_test=500,
               hidden={"RNN": 40, "LSTM": 20, "orthogonal RNN": 40, "uRNN": 64})
#: their sizes (§5.1 as we read it: hidden sizes chosen for roughly equal parameter counts) and a
#: longer run; T = 100, 200, 300 and 500 in their Fig. 1.
COPYING_PAPER = dict(COPYING, T=100, steps=3000, hidden={"RNN": 80, "LSTM": 40, "orthogonal RNN": 128, "uRNN": 128})

#: copying arms: label -> (CELL_ARMS arm, clip the gradient?)
COPY_ARMS: dict[str, tuple[str, bool]] = {"RNN": ("RNN (torch default)", True), "LSTM": ("LSTM", True),
                                          "orthogonal RNN": ("orthogonal, modReLU", False),
                                          "uRNN": ("uRNN", False)}


def copying_run(arm: str, seed: int = 0, progress: bool = False, **overrides) -> dict:
    """Train the net of ``arm`` (``COPY_ARMS``) on the copying task; settings from ``COPYING``.

    Seed s fixes the initial weights and the training stream (step k draws ``batch`` sequences with
    seed 1,000,003 s + k); the test set has seed 99,991 + s. Returns the per-step training losses,
    the test cross-entropy and accuracy on the 10 recalled symbols, the baseline
    10 log 8 / (T + 20), the number of parameters and the wall time.
    """
    if arm not in COPY_ARMS:
        raise ValueError(f"unknown copying arm {arm!r}; valid arms: {', '.join(COPY_ARMS)}")
    unknown = set(overrides) - set(COPYING)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; valid: {sorted(COPYING)}")
    cfg = {**COPYING, **overrides}
    hidden = cfg["hidden"][arm] if isinstance(cfg["hidden"], dict) else int(cfg["hidden"])
    T = int(cfg["T"])
    model = build_cell(COPY_ARMS[arm][0], COPY_SYMBOLS, hidden, COPY_SYMBOLS, seed=seed, many_to_one=False)
    net = SequenceTorchLSTM(model) if isinstance(model, LSTM) else model
    opt = torch.optim.RMSprop(net.parameters(), lr=cfg["lr"], alpha=cfg["alpha"])
    losses = []
    iterator = range(cfg["steps"])
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, desc=arm, leave=False)
    start = time.perf_counter()
    for k in iterator:
        x, y = copying_task(cfg["batch"], T, seed=1_000_003 * seed + k)
        loss = F.cross_entropy(net(one_hot(x)).reshape(-1, COPY_SYMBOLS), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if COPY_ARMS[arm][1] and cfg["clip"]:
            nn.utils.clip_grad_value_(net.parameters(), cfg["clip"])
        opt.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    if isinstance(net, SequenceTorchLSTM):
        net.sync()
    x, y = copying_task(cfg["n_test"], T, seed=99_991 + seed)
    with torch.no_grad():
        logits = net(one_hot(x))
        test = float(F.cross_entropy(logits.reshape(-1, COPY_SYMBOLS), y.reshape(-1)))
        recall = float((logits[:, -10:].argmax(-1) == y[:, -10:]).float().mean())
    return dict(arm=arm, losses=np.array(losses), test_loss=test, recall_accuracy=recall,
                baseline=copying_baseline(T), params=sum(p.numel() for p in model.parameters()),
                seconds=seconds, settings=dict(cfg, hidden=hidden, seed=seed))


def copying_sweep(arms: Sequence[str] | None = None, seeds: Sequence[int] = (0,), progress: bool = False,
                  **overrides) -> dict[str, list[dict]]:
    """``copying_run`` for every arm and seed: {arm: [run per seed]}."""
    return {arm: [copying_run(arm, int(s), progress=progress, **overrides) for s in seeds]
            for arm in (list(arms) if arms is not None else list(COPY_ARMS))}


# ---------------------------------------------------------------------------------------------
# Shortcuts between the layers of a stacked LSTM
# ---------------------------------------------------------------------------------------------


def stacked_depth_gradients(depths: Sequence[int] = (2, 4, 8, 16), connections: Sequence[str] = CONNECTIONS,
                            seeds: Sequence[int] = range(3), steps: int = 20, hidden: int = 32, batch: int = 32,
                            gate_bias: float = -2.0) -> dict[str, np.ndarray]:
    """||de/dy^{(1)}||, the gradient reaching the bottom layer's output sequence, at initialisation:
    {connection: (len(seeds), len(depths))}. e is the cross-entropy of the top layer's last-step
    readout on one first-input batch (``steps`` long, float64); seed s fixes the weights."""
    bad = [c for c in connections if c not in CONNECTIONS]
    if bad:
        raise ValueError(f"unknown connections {bad}; valid: {', '.join(CONNECTIONS)}")
    x, y = first_input_task(batch, steps, seed=0)
    x = x.to(_F64)
    out = {}
    for conn in connections:
        rows = []
        for s in seeds:
            row = []
            for d in depths:
                net = StackedLSTM(1, hidden, 2, num_layers=int(d), connection=conn, gate_bias=gate_bias,
                                  seed=int(s)).to(_F64)
                logits, ys = net(x, return_layers=True)
                (g,) = torch.autograd.grad(F.cross_entropy(logits, y), ys[0])
                row.append(float(g.norm()))
            rows.append(row)
        out[conn] = np.array(rows)
    return out
