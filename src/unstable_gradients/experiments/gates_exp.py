"""Experiments of survey §2.3.1, "gates": the LSTM, its variants and the GRU (chapter
``structure/01_gates``) and highway networks (chapter ``structure/02_highway``).

Every function returns plain data (dicts, arrays, small dataclasses) that ``plotting`` draws.

Recurrent nets (models in ``models.gated`` and ``models.rnn``):

- ``torch_parity``: our LSTM (also with a projection, Sak et al. 2014) and GRU against
  ``torch.nn.LSTM``/``GRU`` holding the same weights: largest output and gradient differences.
- ``recurrent_parameter_count`` / ``parameter_formula``: parameters of one recurrent layer, counted
  on the modules and from the closed forms of survey eq. 53-57 (four weight blocks per LSTM layer,
  three per GRU layer).
- ``state_gradients`` / ``cell_gradient_profile``: ||de/dh_t|| and ||de/dC_t|| over the time
  steps, and the two terms of survey eq. 59 (``models.gated.cell_gradient_terms``), for an LSTM
  and a vanilla RNN of the same size and initial weight scale.
- ``horizon_gate_bias``: the initial forget (or update) gate bias that keeps half of the stable
  term of eq. 59 over T steps; ``time_gradients``: the profiles of the chapter's widget.
- ``build_recurrent`` / ``long_range_run`` / ``long_range_sweep``: the first-input task of
  ``effects_rnn`` (the sign of x_0, then T-1 noise inputs) learnt by RNN, LSTM, peephole LSTM
  and GRU arms, with the per-step gradient ratios and gradient norms of one run per arm recorded
  along the way (the survey's open question of gradient "fluctuation").
- ``step_time``: milliseconds per forward + backward pass (the survey's open question of cost).

Highway networks (``models.gated.HighwayNet``):

- ``highway_parameter_count``: parameters per layer (Srivastava et al. 2015, §3.1: ≈ 5,000 for 50
  highway blocks or 71 plain units).
- ``highway_backward_terms``: the backward step of a highway layer split into its paths (survey
  eq. 63), against autograd.
- ``highway_depth_sweep``: plain vs highway nets of 10-100 layers on MNIST (Srivastava et al.
  2015, Fig. 1), with the transform gates' biases and mean activity of each trained highway net
  (their Fig. 2) and a lesion of each layer (their Fig. 4).
- ``depth_scaled_gate_bias`` / ``build_highway``: the arms (plain; b_T = -2; b_T scaled with depth).
- ``highway_init_profiles`` / ``init_gradients``: ||de/dx_l|| by layer at initialisation.

Notation. The survey numbers time steps t = 1 ... T; ``state_gradients`` returns arrays whose
entry k is step t = k + 1. The per-step ratio is ||de/ds_t|| / ||de/ds_{t+1}|| (s = h or C): the
factor by which one step back multiplies the gradient's norm, > 1 growing, < 1 shrinking.

Left out on purpose: the gate-activity analysis per class (Srivastava et al. Fig. 3) and
convolutional highway layers; the random hyperparameter search of Srivastava et al. (we train
every depth with one fixed setting and say so).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..models import GRU, LSTM, HighwayNet, VanillaRNN, cell_gradient_terms, from_torch
from ..training import evaluate, train
from ..utils import lookup
from .effects_rnn import first_input_task

__all__ = [
    "torch_parity", "RECURRENT_KINDS", "recurrent_parameter_count", "parameter_formula", "state_gradients",
    "CellGradientProfile", "cell_gradient_profile", "build_recurrent", "TorchBacked", "LONG_RANGE", "horizon_gate_bias", "time_gradients",
    "LONG_RANGE_ARMS", "long_range_run", "LongRangeResult", "long_range_sweep", "fluctuation_stats", "step_time",
    "highway_parameter_count", "highway_backward_terms", "depth_scaled_gate_bias", "HIGHWAY_ARMS", "HIGHWAY_FIG1",
    "build_highway", "HighwayRun", "HighwayDepthResult", "init_gradients",
    "highway_depth_sweep", "highway_init_profiles", "lesion_losses", "closed_gates",
]

_F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Parity with torch.nn
# ---------------------------------------------------------------------------------------------


def torch_parity(kind: str, input_size: int = 3, hidden_size: int = 6, num_layers: int = 2, proj_size: int = 0,
                 steps: int = 7, batch: int = 4, seed: int = 0) -> dict[str, float]:
    """Our ``LSTM``/``GRU`` (survey eq. 53-58; Cho et al. 2014) against ``torch.nn.LSTM``/``GRU``.

    A torch module is built in float64 from ``seed``, our net copies its weights
    (``models.gated.from_torch``), both run the same random input, and the loss
    e = sum(w ⊙ outputs) with a random w is back-propagated through both. Returns the largest
    absolute differences of the outputs (``output``), final states (``state``), and the gradients
    of all recurrent weights and of the input (``grad``), and both parameter counts.
    """
    cls = lookup({"lstm": nn.LSTM, "gru": nn.GRU}, kind, "recurrent kind")
    if proj_size and kind != "lstm":
        raise ValueError("proj_size is an LSTM option (Sak et al. 2014)")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        kw = dict(proj_size=proj_size) if kind == "lstm" else {}
        ref = cls(input_size, hidden_size, num_layers, batch_first=True, **kw).to(_F64)
    ours = from_torch(ref)
    x = torch.randn(batch, steps, input_size, generator=gen, dtype=_F64)
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_ref, st_ref = ref(x_ref)
    out_ours, st_ours = ours.recurrent(x_ours)
    w = torch.randn(out_ref.shape, generator=gen, dtype=_F64)
    (out_ref * w).sum().backward()
    (out_ours * w).sum().backward()
    st_ref = st_ref if isinstance(st_ref, tuple) else (st_ref,)
    st_ours = st_ours if isinstance(st_ours, tuple) else (st_ours,)
    grad = float((x_ref.grad - x_ours.grad).abs().max())
    for l, cell in enumerate(ours.cells):
        for name in cell.torch_names:
            mine = getattr(cell, name, None)
            if mine is not None:
                grad = max(grad, float((mine.grad - getattr(ref, f"{name}_l{l}").grad).abs().max()))
    n_ours = sum(p.numel() for n, p in ours.named_parameters() if not n.startswith("readout"))
    out_ref, out_ours = out_ref.detach(), out_ours.detach()
    return dict(output=float((out_ref - out_ours).abs().max()),
                state=max(float((a - b).detach().abs().max()) for a, b in zip(st_ref, st_ours)),
                grad=grad, params_ours=n_ours, params_torch=sum(p.numel() for p in ref.parameters()))


# ---------------------------------------------------------------------------------------------
# Parameter cost
# ---------------------------------------------------------------------------------------------

#: The recurrent layers whose cost the chapter compares.
RECURRENT_KINDS = ("rnn", "gru", "lstm", "peephole_lstm", "projection_lstm")


def recurrent_parameter_count(kind: str, input_size: int, hidden_size: int, proj_size: int | None = None) -> int:
    """Parameters of one recurrent layer (readout excluded), counted on the modules.

    ``rnn`` is counted on ``torch.nn.RNN``, which like torch's LSTM/GRU (and ours) keeps two bias
    vectors per weight block; our ``VanillaRNN`` keeps one (b_h of survey eq. 14) and so has
    ``hidden_size`` fewer. ``projection_lstm`` defaults to P = H // 2 (``models.gated.CELLS``).
    """
    lookup({k: k for k in RECURRENT_KINDS}, kind, "recurrent kind")
    if kind == "rnn":
        return sum(p.numel() for p in nn.RNN(input_size, hidden_size).parameters())
    if kind == "gru":
        net = GRU(input_size, hidden_size, 1, seed=0)
    else:
        net = LSTM(input_size, hidden_size, 1, peephole=kind == "peephole_lstm", seed=0,
                   proj_size=(proj_size or max(1, hidden_size // 2)) if kind == "projection_lstm" else 0)
    return sum(p.numel() for n, p in net.named_parameters() if not n.startswith("readout"))


def parameter_formula(kind: str, input_size: int, hidden_size: int, proj_size: int | None = None) -> int:
    """The closed form behind ``recurrent_parameter_count``; I inputs, H units, two biases per block.

    One block (a gate or the candidate) is W_x (H x I), W_h (H x H) and two H-vectors:
    b(I, H) = H (I + H) + 2H. RNN: 1 block; GRU: 3 (r, z, n); LSTM: 4 (i, f, C^, o; survey
    eq. 53-57); peepholes add 3H diagonal weights; a projection to P units (Sak et al. 2014)
    makes the recurrent blocks H x P and adds W_hr (P x H).
    """
    I, H = input_size, hidden_size
    block = H * (I + H) + 2 * H
    table = {"rnn": block, "gru": 3 * block, "lstm": 4 * block, "peephole_lstm": 4 * block + 3 * H}
    if kind == "projection_lstm":
        P = proj_size or max(1, H // 2)
        return 4 * (H * (I + P) + 2 * H) + P * H
    return lookup(table, kind, "recurrent kind")


# ---------------------------------------------------------------------------------------------
# Gradients through time: survey eq. 17-18 (RNN) vs eq. 59 (LSTM)
# ---------------------------------------------------------------------------------------------


def state_gradients(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, np.ndarray]:
    """||de/dh_t|| (key ``h``) and, for an LSTM, ||de/dC_t|| (key ``c``), t = 1 ... T, by autograd.

    e is the cross-entropy of the readout of the last step (many-to-one, survey eq. 17); the
    norms are Frobenius norms over the batch of the *total* derivatives. ``model`` is a
    ``VanillaRNN``, ``LSTM`` or ``GRU`` (one layer or the top layer of a stack).
    """
    if isinstance(model, VanillaRNN):
        out, hidden = model(x, return_hidden=True)
        grads = torch.autograd.grad(F.cross_entropy(out, y), hidden[1:])
        return dict(h=np.array([float(g.norm()) for g in grads]))
    tr = model.trace(x, keep_gates=False)
    out = model.readout(tr.outputs[:, -1])
    hs = tr.h[-1][1:]
    cs = tr.c[-1][1:] if tr.c is not None else []
    grads = torch.autograd.grad(F.cross_entropy(out, y), hs + cs, allow_unused=True)
    norm = [float(g.norm()) if g is not None else 0.0 for g in grads]
    result = dict(h=np.array(norm[: len(hs)]))
    if cs:
        result["c"] = np.array(norm[len(hs):])
    return result


@dataclass
class CellGradientProfile:
    """Per-step gradient norms of one batch, t = 1 ... T (index t - 1), at initialisation.

    ``total``/``forget_term``/``output_term``: ||de/dC_t|| and the two terms of survey eq. 59
    (``cell_gradient_terms``; the forget term is 0 at t = T); ``error``: the largest entry of
    |de/dC_t - (sum of the terms)|; ``lstm_h``: the LSTM's ||de/dh_t||; ``rnn_h``: the vanilla
    RNN's ||de/dh_t||; ``forget_gate``: the mean forget-gate value f_t.
    """

    steps: int
    total: np.ndarray
    forget_term: np.ndarray
    output_term: np.ndarray
    error: float
    lstm_h: np.ndarray
    rnn_h: np.ndarray
    forget_gate: np.ndarray
    settings: dict = field(default_factory=dict)

    def first_over_last(self) -> dict[str, float]:
        """||grad at t = 1|| / ||grad at t = T|| of the LSTM's C and h and the RNN's h."""
        return dict(lstm_c=float(self.total[0] / self.total[-1]), lstm_h=float(self.lstm_h[0] / self.lstm_h[-1]),
                    rnn_h=float(self.rnn_h[0] / self.rnn_h[-1]))


def cell_gradient_profile(steps: int = 50, hidden: int = 16, forget_bias: float | None = 1.0, batch: int = 256,
                          noise: float = 1.0, seed: int = 0) -> CellGradientProfile:
    """Survey eq. 59 measured: an LSTM and a vanilla tanh RNN on the same first-input batch.

    Both nets have ``hidden`` units and torch's default initial scale, every weight from
    U[-1/sqrt(H), 1/sqrt(H)] (``init=None``); the LSTM's forget-gate bias is ``forget_bias``
    (``None``: drawn like the other biases). The data is ``effects_rnn.first_input_task``
    (``batch`` sequences of length ``steps``), the loss the cross-entropy of the last step, and
    everything runs in float64 so that nothing underflows.
    """
    x, y = first_input_task(batch, steps, noise, seed=seed)
    x = x.to(_F64)
    lstm = LSTM(1, hidden, 2, forget_bias=forget_bias, seed=seed).to(_F64)
    rnn = VanillaRNN(1, hidden, 2, init=None, seed=seed).to(_F64)
    terms = cell_gradient_terms(lstm, x, lambda out: F.cross_entropy(out, y))
    with torch.no_grad():
        gates = lstm.trace(x).gates[-1]
    return CellGradientProfile(
        steps=steps, total=np.array(terms["total"]), forget_term=np.array(terms["forget_term"]),
        output_term=np.array(terms["output_term"]), error=float(terms["error"]),
        lstm_h=state_gradients(lstm, x, y)["h"], rnn_h=state_gradients(rnn, x, y)["h"],
        forget_gate=np.array([float(g["f"].mean()) for g in gates]),
        settings=dict(steps=steps, hidden=hidden, forget_bias=forget_bias, batch=batch, noise=noise, seed=seed))


def time_gradients(cell: str = "lstm", steps: int = 50, gate_bias: float | None = 1.0, hidden: int = 16,
                   batch: int = 128, noise: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Gradient norms over t = 1 ... T at initialisation for ``build_recurrent(cell, hidden,
    gate_bias)`` and, as the reference, the vanilla RNN of the same size (key ``rnn_h``), on one
    first-input batch in float64 (the widget of chapter ``structure/01_gates``).

    Keys: ``h`` (||de/dh_t||), ``c`` (||de/dC_t||, LSTMs), ``forget_term`` / ``output_term``
    (the two terms of survey eq. 59; LSTMs without peepholes), ``rnn_h``. ``gate_bias`` is ignored
    for ``cell="rnn"``.
    """
    x, y = first_input_task(batch, steps, noise, seed=seed)
    x = x.to(_F64)
    model = build_recurrent(cell, hidden, None if cell == "rnn" else gate_bias, seed).to(_F64)
    out = state_gradients(model, x, y)
    if isinstance(model, LSTM) and not model.peephole:
        terms = cell_gradient_terms(model, x, lambda o: F.cross_entropy(o, y))
        out["forget_term"], out["output_term"] = np.array(terms["forget_term"]), np.array(terms["output_term"])
    out["rnn_h"] = out["h"] if cell == "rnn" else state_gradients(build_recurrent("rnn", hidden, None, seed).to(_F64),
                                                                  x, y)["h"]
    return out


# ---------------------------------------------------------------------------------------------
# A long-range task: the first input
# ---------------------------------------------------------------------------------------------


def build_recurrent(cell: str, hidden: int = 16, gate_bias: float | None = None, seed: int = 0,
                    input_size: int = 1, output_size: int = 2) -> nn.Module:
    """A one-layer recurrent classifier with torch's default initial scale (U[-1/sqrt(H), 1/sqrt(H)]).

    ``cell``: ``rnn`` (``VanillaRNN``, tanh, zero bias), ``lstm``, ``peephole_lstm``,
    ``projection_lstm`` (P = H // 2) or ``gru``. ``gate_bias`` sets the initial bias of the gate
    that keeps the old state: the LSTM's forget gate b_f (survey eq. 53), or the GRU's update gate
    b_z (z_t weights h_{t-1}, Cho et al. 2014, eq. 7); ``None`` keeps the default draw. An RNN
    has no such gate (``gate_bias`` must be ``None``).
    """
    kinds = ("rnn", "lstm", "peephole_lstm", "projection_lstm", "gru")
    lookup({k: k for k in kinds}, cell, "cell")
    if cell == "rnn":
        if gate_bias is not None:
            raise ValueError("a vanilla RNN has no gate; pass gate_bias=None")
        return VanillaRNN(input_size, hidden, output_size, init=None, seed=seed)
    if cell == "gru":
        net = GRU(input_size, hidden, output_size, seed=seed)
        if gate_bias is not None:
            with torch.no_grad():
                net.cells[0].gate_block("bias_ih", "z").fill_(float(gate_bias))
                net.cells[0].gate_block("bias_hh", "z").zero_()
        return net
    return LSTM(input_size, hidden, output_size, peephole=cell == "peephole_lstm", forget_bias=gate_bias, seed=seed,
                proj_size=max(1, hidden // 2) if cell == "projection_lstm" else 0)


class TorchBacked(nn.Module):
    """Our LSTM or GRU run by torch's kernels: ``rnn`` is ``model.to_torch()`` (the same weights),
    the readout is ``model``'s own (shared). It computes exactly what ``model`` computes (checked by
    ``torch_parity``), about twice as fast on a CPU; ``sync()`` copies the trained recurrent
    weights back into ``model``. Peephole cells have no torch counterpart."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = [model]  # a list: not registered as a submodule (its readout is)
        self.rnn = model.to_torch()
        self.readout = model.readout

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.rnn(x)[0][:, -1])

    def sync(self) -> nn.Module:
        return self.model[0].copy_from_torch(self.rnn)


#: Settings of the long-range experiment: 16 units, Adam (lr 0.02, as in ``effects_rnn``),
#: mini-batches of 100 fresh sequences per step for at most ``max_steps`` steps; a run stops early
#: once its mean training loss over the last ``window`` steps is below ``solved_loss``; test on
#: ``n_test`` new sequences; noise N(0, 1) after the first input.
LONG_RANGE = dict(hidden=16, batch=100, max_steps=150, lr=0.02, noise=1.0, n_test=1000, solved_loss=0.05,
                  window=10, probe_every=10, probe_batch=100, engine="torch")

def horizon_gate_bias(steps: int, keep: float = 0.5) -> float:
    """The initial bias of the gate that keeps the old state (LSTM forget gate, GRU update gate) at
    which the stable term of survey eq. 59 alone keeps the fraction ``keep`` of the gradient over
    ``steps - 1`` steps back, if the gate sat at sigma(b): sigma(b)^(steps - 1) = keep, so
    b = logit(keep^(1 / (steps - 1))) = -``depth_scaled_gate_bias(steps, keep)``. For keep = 1/2:
    3.29 at T = 20, 4.25 at T = 50, 4.96 at T = 100. (A fixed-horizon cousin of Tallec & Ollivier's
    2018 "chrono" initialisation, which draws b_f from log U[1, T_max - 1].)"""
    return -depth_scaled_gate_bias(steps, keep)


#: label -> (cell, initial bias of the gate that keeps the old state) of the long-range arms:
#: a number, ``None`` (the default draw of ``build_recurrent``) or ``"horizon"``
#: (``horizon_gate_bias(T)`` for a sequence of length T). The first four are the main comparison;
#: the last two keep the default gate biases (b_f = 1, Jozefowicz et al. 2015; torch's GRU).
LONG_RANGE_ARMS: dict[str, tuple[str, float | str | None]] = {
    "RNN": ("rnn", None),
    "LSTM": ("lstm", "horizon"),
    "peephole LSTM": ("peephole_lstm", "horizon"),
    "GRU": ("gru", "horizon"),
    "LSTM, b_f = 1": ("lstm", 1.0),
    "GRU, default init": ("gru", None),
}


def _arm_bias(spec: float | str | None, steps: int) -> float | None:
    if spec == "horizon":
        return horizon_gate_bias(steps)
    if spec is None or isinstance(spec, (int, float)):
        return spec
    raise ValueError(f"gate bias must be None, a number or 'horizon', got {spec!r}")


def _log10_ratios(norms: np.ndarray) -> np.ndarray:
    """log10 ||g_t|| / ||g_{t+1}|| for consecutive steps (nan where a norm is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log10(norms[:-1]) - np.log10(norms[1:])
    return np.where(np.isfinite(r), r, np.nan)


def long_range_run(cell: str, steps: int, seed: int = 0, gate_bias: float | None = None, probe: bool = False,
                   **overrides) -> dict:
    """Train one ``build_recurrent(cell, gate_bias=...)`` on the first-input task of length ``steps``.

    Seed s fixes the initial weights, the training stream (step k draws ``batch`` fresh sequences
    from ``first_input_task`` with seed 100,003 (100 + s) + k, so that a run's first k batches do
    not depend on ``max_steps``) and the test set (seed 10,000 + s). Returns the test
    accuracy, the number of steps until the early-stopping rule fired (``None``: it did not),
    the training losses and global gradient norms ||de/dθ|| of every step, and the wall time.
    ``probe=True`` also records, every ``probe_every`` steps, the log10 per-step ratios of
    ||de/dh_t|| (and ||de/dC_t||) on a fixed probe batch (seed 20,000), as ``probes`` =
    {"h": (n_probes, T - 1), "c": ...}. ``overrides`` replace entries of ``LONG_RANGE``.
    """
    unknown = set(overrides) - set(LONG_RANGE)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; valid: {sorted(LONG_RANGE)}")
    cfg = {**LONG_RANGE, **overrides}
    if steps < 2:
        raise ValueError(f"need at least 2 steps, got {steps}")
    model = build_recurrent(cell, cfg["hidden"], gate_bias, seed)
    fast = cfg["engine"] == "torch" and isinstance(model, (LSTM, GRU)) and not getattr(model, "peephole", False)
    net = TorchBacked(model) if fast else model
    B = cfg["batch"]
    Xp, yp = first_input_task(cfg["probe_batch"], steps, cfg["noise"], seed=20_000)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    losses, norms, probes, solved = [], [], {}, None
    start = time.perf_counter()
    for step in range(cfg["max_steps"]):
        if probe and step % cfg["probe_every"] == 0:
            if fast:
                net.sync()
            for key, v in state_gradients(model, Xp, yp).items():
                probes.setdefault(key, []).append(_log10_ratios(v))
        xb, yb = first_input_task(B, steps, cfg["noise"], seed=100_003 * (100 + seed) + step)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        norms.append(float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in net.parameters() if p.grad is not None))))
        opt.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
        if len(losses) >= cfg["window"] and np.mean(losses[-cfg["window"]:]) < cfg["solved_loss"]:
            solved = step + 1
            break
    seconds = time.perf_counter() - start
    if fast:
        net.sync()
    Xt, yt = first_input_task(cfg["n_test"], steps, cfg["noise"], seed=10_000 + seed)
    acc = evaluate(net, Xt, yt)[1]
    return dict(accuracy=acc, solved=solved, losses=np.array(losses), grad_norms=np.array(norms), seconds=seconds,
                probes={k: np.array(v) for k, v in probes.items()}, settings=dict(cfg, cell=cell, gate_bias=gate_bias,
                                                                                   steps=steps, seed=seed))


@dataclass
class LongRangeResult:
    """``accuracy[a, s, j]``: test accuracy of arm ``arms[a]``, seed ``seeds[s]``, length ``steps[j]``;
    ``solved_at``: steps until the early-stopping rule fired (nan: never); ``seconds``: wall time.
    ``grad_norms[arm]`` / ``probes[arm]``: from the run with seed ``seeds[0]`` at ``probe_steps``."""

    arms: list[str]
    steps: list[int]
    seeds: list[int]
    accuracy: np.ndarray
    solved_at: np.ndarray
    seconds: np.ndarray
    probe_steps: int
    grad_norms: dict[str, np.ndarray]
    probes: dict[str, dict[str, np.ndarray]]
    settings: dict = field(default_factory=dict)

    def mean(self) -> np.ndarray:
        """Mean accuracy over seeds, (arms, steps)."""
        return self.accuracy.mean(1)

    def solved(self, threshold: float = 0.9) -> np.ndarray:
        """Fraction of seeds whose test accuracy reaches ``threshold``, (arms, steps)."""
        return (self.accuracy >= threshold).mean(1)


def long_range_sweep(steps: Sequence[int], seeds: Sequence[int] = (0, 1), arms: Sequence[str] | None = None,
                     probe_steps: int | None = None, **overrides) -> LongRangeResult:
    """``long_range_run`` for every arm (labels of ``LONG_RANGE_ARMS``; default: the first four),
    length T in ``steps`` and seed; the first seed's run at T = ``probe_steps`` (default: the
    middle T) records the gradient probes."""
    labels = list(arms) if arms is not None else list(LONG_RANGE_ARMS)[:4]
    unknown = [a for a in labels if a not in LONG_RANGE_ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; valid: {', '.join(LONG_RANGE_ARMS)}")
    steps, seeds = [int(t) for t in steps], [int(s) for s in seeds]
    if not steps or not seeds:
        raise ValueError("need at least one sequence length and one seed")
    probe_steps = steps[len(steps) // 2] if probe_steps is None else int(probe_steps)
    shape = (len(labels), len(seeds), len(steps))
    acc, solved, secs = np.zeros(shape), np.full(shape, np.nan), np.zeros(shape)
    norms, probes, cfg = {}, {}, {}
    for a, label in enumerate(labels):
        cell, spec = LONG_RANGE_ARMS[label]
        for i, s in enumerate(seeds):
            for j, T in enumerate(steps):
                probe = i == 0 and T == probe_steps
                r = long_range_run(cell, T, s, _arm_bias(spec, T), probe=probe, **overrides)
                acc[a, i, j], secs[a, i, j] = r["accuracy"], r["seconds"]
                solved[a, i, j] = np.nan if r["solved"] is None else r["solved"]
                cfg = {k: v for k, v in r["settings"].items() if k not in ("cell", "gate_bias", "steps", "seed")}
                if probe:
                    norms[label], probes[label] = r["grad_norms"], r["probes"]
    return LongRangeResult(labels, steps, seeds, acc, solved, secs, probe_steps, norms, probes, cfg)


def fluctuation_stats(result: LongRangeResult, state: str = "h") -> dict[str, dict[str, float]]:
    """The survey's open question (1), gradient fluctuation, as numbers per arm (probe runs).

    ``growing``: fraction of backward steps whose ratio ||de/ds_t|| / ||de/ds_{t+1}|| exceeds 1
    (all probes, all t); ``spread``: standard deviation of log10 of that ratio over t, averaged
    over the probes (how unevenly one step back scales the gradient); ``first_over_last``: median
    over probes of log10 ||de/ds_1|| / ||de/ds_T||; ``norm_jitter``: standard deviation over
    training steps of log10 (||de/dθ||_k+1 / ||de/dθ||_k), the step-to-step change of the whole
    gradient's norm; ``probes``: how many probes there are. ``state`` is ``h`` or ``c`` (LSTMs).
    """
    out = {}
    for arm, p in result.probes.items():
        if state not in p:
            continue
        r = p[state]
        g = np.log10(result.grad_norms[arm])
        out[arm] = dict(growing=float(np.nanmean(r > 0)), spread=float(np.nanmean(np.nanstd(r, axis=1))),
                        first_over_last=float(np.nanmedian(np.nansum(r, axis=1))),
                        norm_jitter=float(np.std(np.diff(g))) if len(g) > 2 else float("nan"), probes=int(len(r)))
    return out


def step_time(cell: str, steps: int = 100, batch: int = 100, hidden: int = 16, repeats: int = 5,
              engine: str = "ours") -> float:
    """Milliseconds of one forward + backward pass (cross-entropy at the last step) of
    ``build_recurrent(cell)`` on a (batch, steps, 1) input: the minimum over ``repeats`` timed
    runs after one warm-up, the least disturbed by other processes. ``engine="torch"`` times
    ``torch.nn.RNN``/``LSTM``/``GRU`` of the same size instead (no peepholes)."""
    if engine not in ("ours", "torch"):
        raise ValueError(f"engine must be 'ours' or 'torch', got {engine!r}")
    model = build_recurrent(cell, hidden, seed=0)
    if engine == "torch":
        if cell == "peephole_lstm":
            raise ValueError("torch has no peephole LSTM")
        if cell == "rnn":
            rnn, readout = nn.RNN(1, hidden, batch_first=True), nn.Linear(hidden, 2)
            net = lambda v: readout(rnn(v)[0][:, -1])  # noqa: E731
            params = list(rnn.parameters()) + list(readout.parameters())
        else:
            net = TorchBacked(model)
            params = list(net.parameters())
    else:
        net, params = model, list(model.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, 1, generator=gen)
    y = torch.randint(0, 2, (batch,), generator=gen)
    best = float("inf")
    for k in range(repeats + 1):
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        F.cross_entropy(net(x), y).backward()
        dt = time.perf_counter() - t0
        if k:
            best = min(best, dt)
    return 1000 * best


# ---------------------------------------------------------------------------------------------
# Highway networks
# ---------------------------------------------------------------------------------------------


def highway_parameter_count(width: int, plain: bool = False, coupled: bool = True) -> int:
    """Parameters of one hidden layer of ``HighwayNet``, counted on a ``HighwayLayer``.

    Plain: W_H and b_H, n^2 + n. Highway (Srivastava et al. 2015, eq. 3): W_H, b_H, W_T, b_T,
    2 (n^2 + n); with a carry gate of its own (survey eq. 62) 3 (n^2 + n).
    """
    from ..models.gated import HighwayLayer

    return sum(p.numel() for p in HighwayLayer(width, plain=plain, coupled=coupled).parameters())


def highway_backward_terms(layer: nn.Module, x: Tensor, grad_out: Tensor) -> dict[str, float]:
    """One backward step through a highway layer, split into its paths (survey eq. 63).

    With a = W_H x + b_H, H = act(a), t = sigma(W_T x + b_T) and y = H ⊙ t + x ⊙ c:

        de/dx =  W_H^T (g ⊙ t ⊙ act'(a))           "transform" (through H)
               + W_T^T (g ⊙ (H - x) ⊙ t (1 - t))    "gate" (through t; c = 1 - t)
               + g ⊙ c                              "carry" (the highway)

    for g = de/dy and the coupled carry gate c = 1 - t (Srivastava et al.). With a carry gate of
    its own, c = sigma(W_C x + b_C) (survey eq. 62), the gate term uses H alone and a fourth,
    "carry gate" term W_C^T (g ⊙ x ⊙ c (1 - c)) appears. Returns the Frobenius norm of each term,
    of their sum and of de/dx from autograd, and ``error``, the largest entry of their difference.
    """
    if layer.plain:
        raise ValueError("a plain layer has no gates: its backward step is the transform term alone")
    x = x.detach().requires_grad_(True)
    y = layer(x)
    (ref,) = torch.autograd.grad(y, x, grad_out)
    with torch.no_grad():
        a = layer.transform(x)
        h = layer.activation(a)
        t = torch.sigmoid(layer.gate(x))
        g = grad_out
        terms = {"transform": (g * t * layer.activation.derivative(a)) @ layer.transform.weight}
        if layer.carry is None:
            c = 1 - t
            terms["gate"] = (g * (h - x) * t * (1 - t)) @ layer.gate.weight
        else:
            c = torch.sigmoid(layer.carry(x))
            terms["gate"] = (g * h * t * (1 - t)) @ layer.gate.weight
            terms["carry_gate"] = (g * x * c * (1 - c)) @ layer.carry.weight
        terms["carry"] = g * c
        total = sum(terms.values())
    out = {k: float(v.norm()) for k, v in terms.items()}
    out.update(sum=float(total.norm()), autograd=float(ref.norm()), error=float((total - ref).abs().max()))
    return out


def depth_scaled_gate_bias(depth: int, keep: float = 0.5) -> float:
    """The transform-gate bias b_T at which the carry terms of eq. 63 alone pass the fraction
    ``keep`` of the gradient through the ``depth - 1`` highway layers of a net at initialisation,
    if every gate sat at T = sigma(b_T): (1 - sigma(b_T))^(depth - 1) = keep, so
    b_T = logit(1 - keep^(1 / (depth - 1))). For keep = 1/2: -2.53 at 10 layers, -4.96 at 100."""
    if depth < 2 or not 0 < keep < 1:
        raise ValueError(f"need depth >= 2 and 0 < keep < 1, got depth={depth}, keep={keep}")
    p = 1 - keep ** (1 / (depth - 1))
    return float(math.log(p / (1 - p)))


#: label -> initial transform-gate bias of the arms of the depth experiment: ``None`` is the plain
#: net; a number is b_T at every depth (-2: Srivastava et al.'s MNIST net of Fig. 2, our
#: ``HighwayNet`` default); ``"depth"`` is ``depth_scaled_gate_bias(depth)``.
HIGHWAY_ARMS: dict[str, float | str | None] = {"plain": None, "highway, b_T = -2": -2.0,
                                               "highway, b_T(depth)": "depth"}

#: Srivastava et al. (2015, §3.1, Fig. 1) at the book's size: 10-100 layers (a plain first layer
#: then depth - 1 highway or plain layers, then softmax), 50 highway blocks or 71 plain units per
#: layer, ReLU, He-normal weights; SGD with momentum 0.9 at a fixed learning rate on the first
#: ``n_train`` training images, mini-batches of ``batch_size``. (Theirs: a random search of 100
#: runs per configuration over learning rate, momentum, its exponential decay, ReLU or tanh, and
#: b_T in [-10, -1].)
HIGHWAY_FIG1 = dict(depths=(10, 20, 50, 100), highway_width=50, plain_width=71, activation="relu", lr=0.01,
                    momentum=0.9, batch_size=100, epochs=2, n_train=5000, n_probe=1000)


def _gate_bias(spec: float | str | None, depth: int) -> float | None:
    if spec is None or isinstance(spec, (int, float)):
        return spec
    if spec == "depth":
        return depth_scaled_gate_bias(depth) if depth > 1 else -2.0
    raise ValueError(f"gate bias must be None, a number or 'depth', got {spec!r}")


def build_highway(arm: str, depth: int, seed: int = 0, in_features: int = 784, **overrides) -> HighwayNet:
    """The net of arm ``arm`` (``HIGHWAY_ARMS``) with ``depth`` layers: a plain first layer, then
    ``depth - 1`` highway (or plain) layers, then the output layer; widths and activation from
    ``HIGHWAY_FIG1`` (``overrides`` replace them)."""
    if arm not in HIGHWAY_ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(HIGHWAY_ARMS)}")
    cfg = {**HIGHWAY_FIG1, **overrides}
    bias = _gate_bias(HIGHWAY_ARMS[arm], depth)
    plain = bias is None
    return HighwayNet(in_features, cfg["plain_width" if plain else "highway_width"], depth - 1, 10,
                      activation=cfg["activation"], gate_bias=-2.0 if plain else bias, plain=plain, seed=seed)


@dataclass
class HighwayRun:
    """One trained net: per-step training loss, per-epoch mean loss, final training-set loss and
    accuracy (on the first ``n_probe`` training images), wall time, and for a highway net the
    per-layer transform-gate biases (mean over units) and mean gate activity, the fraction of gate
    biases below their initial value, and the lesion losses (``lesion_losses``)."""

    arm: str
    depth: int
    seed: int
    step_loss: np.ndarray
    epoch_loss: np.ndarray
    final_loss: float
    final_acc: float
    seconds: float
    diverged: bool = False
    initial_bias: float | None = None
    gate_bias: np.ndarray | None = None
    gate_activity: np.ndarray | None = None
    fraction_bias_decreased: float | None = None
    lesion: np.ndarray | None = None


@dataclass
class HighwayDepthResult:
    """``runs[(arm, depth)]`` lists the runs over seeds (arms: labels of ``HIGHWAY_ARMS``)."""

    arms: list[str]
    depths: list[int]
    seeds: list[int]
    runs: dict[tuple[str, int], list[HighwayRun]]
    settings: dict = field(default_factory=dict)

    def depths_of(self, arm: str) -> list[int]:
        """The depths at which ``arm`` was trained."""
        return [d for d in self.depths if (arm, d) in self.runs]

    def final_loss(self, arm: str) -> np.ndarray:
        """(seeds, depths of the arm) final training losses of one arm."""
        return np.array([[r.final_loss for r in self.runs[(arm, d)]] for d in self.depths_of(arm)]).T


@contextlib.contextmanager
def closed_gates(layer: nn.Module) -> Iterator[None]:
    """Temporarily shut a highway layer's transform gate, T(x) = 0, so that it copies its input
    (Srivastava et al.'s lesion, §4.2): W_T = 0 and b_T = -inf (sigma(-inf) = 0 exactly)."""
    if layer.gate is None or layer.carry is not None:
        raise ValueError("closed_gates needs a highway layer with the coupled carry gate C = 1 - T")
    w, b = layer.gate.weight.detach().clone(), layer.gate.bias.detach().clone()
    try:
        with torch.no_grad():
            layer.gate.weight.zero_()
            layer.gate.bias.fill_(-math.inf)
        yield
    finally:
        with torch.no_grad():
            layer.gate.weight.copy_(w)
            layer.gate.bias.copy_(b)


def lesion_losses(net: HighwayNet, X: Tensor, y: Tensor) -> np.ndarray:
    """Training loss with the transform gates of one layer closed at a time (``closed_gates``), by
    layer (Srivastava et al. 2015, Fig. 4)."""
    out = []
    for layer in net.layers:
        with closed_gates(layer):
            out.append(evaluate(net, X, y)[0])
    return np.array(out)


def highway_depth_sweep(X: Tensor, y: Tensor, seeds: Sequence[int] = (0,), arms: Sequence[str] | None = None,
                        lesion_depth: int | None = 50, arm_depths: dict[str, Sequence[int]] | None = None,
                        **overrides) -> HighwayDepthResult:
    """Train the nets of every arm (``HIGHWAY_ARMS``) and depth in ``HIGHWAY_FIG1['depths']``
    (Srivastava et al. 2015, Fig. 1) with ``training.train`` (cross-entropy, SGD with momentum).

    Seed s fixes the initial weights (``HighwayNet(seed=s)``) and the mini-batch order. After
    training, the loss on the first ``n_probe`` training images is recorded; for highway nets also
    the gates (Fig. 2: per-layer mean b_T and mean T over those images), and for depth
    ``lesion_depth`` the loss with each layer lesioned (Fig. 4). ``arm_depths`` restricts an arm
    to some of the depths (e.g. to skip runs whose outcome a shallower run already settles).
    ``overrides`` replace entries of ``HIGHWAY_FIG1``.
    """
    unknown = set(overrides) - set(HIGHWAY_FIG1)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; valid: {sorted(HIGHWAY_FIG1)}")
    cfg = {**HIGHWAY_FIG1, **overrides}
    arm_depths = dict(arm_depths or {})
    labels = list(arms) if arms is not None else list(HIGHWAY_ARMS)
    bad = [a for a in labels + list(arm_depths) if a not in HIGHWAY_ARMS]
    if bad:
        raise ValueError(f"unknown arms {bad}; valid: {', '.join(HIGHWAY_ARMS)}")
    depths, seeds = [int(d) for d in cfg["depths"]], [int(s) for s in seeds]
    if not seeds or min(depths) < 1:
        raise ValueError(f"need at least one seed and depths >= 1; got seeds={seeds}, depths={depths}")
    X, y = X[: cfg["n_train"]], y[: cfg["n_train"]]
    Xp, yp = X[: cfg["n_probe"]], y[: cfg["n_probe"]]
    runs: dict[tuple[str, int], list[HighwayRun]] = {}
    for arm in labels:
        for d in (depths if arm not in arm_depths else [int(v) for v in arm_depths[arm]]):
            for s in seeds:
                net = build_highway(arm, d, s, X.shape[1], **overrides)
                b0 = _gate_bias(HIGHWAY_ARMS[arm], d)
                t0 = time.perf_counter()
                res = train(net, X, y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                            optimizer="momentum", optimizer_kwargs=dict(momentum=cfg["momentum"]), seed=s,
                            eval_every_epoch=False, progress=False)
                secs = time.perf_counter() - t0
                loss, acc = evaluate(net, Xp, yp)
                run = HighwayRun(arm, d, s, np.array(res.loss), np.array(res.epoch_loss), loss, acc, secs,
                                 diverged=not res.ok, initial_bias=b0)
                if not net.plain and d > 1:
                    biases = np.stack([l.gate.bias.detach().numpy() for l in net.layers])
                    run.gate_bias = biases.mean(1)
                    run.gate_activity = np.array(net.gate_activity())  # set by the evaluate() pass above
                    run.fraction_bias_decreased = float((biases < b0).mean())
                    if d == lesion_depth:
                        run.lesion = lesion_losses(net, Xp, yp)
                runs.setdefault((arm, d), []).append(run)
    return HighwayDepthResult(labels, depths, seeds, runs, cfg)


def highway_init_profiles(X: Tensor, y: Tensor, depth: int = 50, seeds: Sequence[int] = range(3),
                          arms: Sequence[str] | None = None, **overrides) -> dict[str, np.ndarray]:
    """||de/dx_l|| of every hidden layer x_1 ... x_{depth-1} after the first, at initialisation,
    for each arm of ``HIGHWAY_ARMS`` as built by ``build_highway``; returns {arm: (seeds, depth - 1)}
    from one backward pass of the cross-entropy over (X, y) per seed."""
    from ..diagnostics import gradient_profile

    out = {}
    for arm in (list(arms) if arms is not None else list(HIGHWAY_ARMS)):
        out[arm] = np.array([gradient_profile(build_highway(arm, depth, s, X.shape[1], **overrides), X, y).output_grad
                             for s in seeds])
    return out


def init_gradients(X: Tensor, y: Tensor, depth: int = 50, gate_bias: float = -2.0, activation: str = "relu",
                   seeds: Sequence[int] = range(3), **overrides) -> dict[str, np.ndarray]:
    """||de/dx_l|| by hidden layer at initialisation of the plain and the highway net of ``depth``
    layers (widths of ``HIGHWAY_FIG1``), the highway net with transform-gate bias ``gate_bias``:
    {"plain": (seeds, depth - 1), "highway": ...} (the widget of chapter ``structure/02_highway``)."""
    from ..diagnostics import gradient_profile

    cfg = {**HIGHWAY_FIG1, **overrides}
    out = {}
    for arm, plain in (("plain", True), ("highway", False)):
        out[arm] = np.array([gradient_profile(HighwayNet(X.shape[1], cfg["plain_width" if plain else "highway_width"],
                                                         depth - 1, 10, activation=activation, gate_bias=gate_bias,
                                                         plain=plain, seed=s), X, y).output_grad for s in seeds])
    return out
