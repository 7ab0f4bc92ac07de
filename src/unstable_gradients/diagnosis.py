"""Name the gradient problem of any model: symptom → measurement → cause → remedy.

``diagnose(model, inputs, targets)`` runs one forward and backward pass on a batch and measures
what the book's chapters measure one at a time:

- the *relative* gradient of each weighted layer, ||de/dW_l|| / ||W_l|| (an update of SGD with
  learning rate lr changes W_l by lr times this fraction; layers of different sizes compare
  fairly, unlike raw ||de/dW_l||);
- the forward signal, the root-mean-square of each weighted layer's output (survey §2.2.2:
  the variance recursions of initialisation);
- dead units (ReLU outputs that are zero on every input of the batch) and saturation (the share
  of tanh/sigmoid outputs within 0.01 of their limits) of each activation module;
- with ``time_axis`` set, ||de/dx_t|| for each time step t of the input (survey eq. 17-20: what
  reaches the early steps of a recurrent net);
- with ``lr`` set, the SGD update-to-weight ratio lr ||de/dW_l|| / ||W_l||.

Each measurement outside its threshold becomes a ``Finding`` that names a ``Symptom``; the
symptom carries the likely causes, the remedies and the book's chapters that demonstrate them
(``SYMPTOMS``, also rendered as the closing chapter's table by ``symptom_table``). The thresholds
are rules of thumb, not theorems: ``Thresholds`` documents each and lets you change it.
Works on any ``nn.Module`` (hooks are removed afterwards) in the mode it is in (train mode: batch
statistics and dropout as in training); it changes neither the weights nor the buffers (batch
norm's running statistics are restored), and it leaves the gradients of the pass in ``.grad``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from . import activations as A
from .diagnostics import _first_tensor, weighted_layers
from .losses import get_loss

__all__ = ["Symptom", "SYMPTOMS", "Finding", "Thresholds", "Diagnosis", "diagnose", "symptom_table"]


@dataclass(frozen=True)
class Symptom:
    """One row of the book's symptom table: what you see, how to measure it, why, what helps."""

    name: str
    measurement: str
    causes: str
    remedies: str
    chapters: tuple[str, ...]


SYMPTOMS: dict[str, Symptom] = {
    "vanishing": Symptom(
        "early layers learn orders of magnitude slower than late ones",
        "relative gradient ‖dW_l‖/‖W_l‖ rises by > 10³ from the input-side third of the layers to the output-side third",
        "saturating activations (σ' ≤ 1/4), weights too small for the activation, depth",
        "ReLU-family activations; Xavier/He initialisation; batch/layer norm; residual or highway shortcuts; "
        "layer-wise pre-training",
        ("/book/causes/02_three_factors", "/book/causes/03_learning_speed", "/book/nodes/01_initialisation",
         "/book/nodes/02_activations", "/book/nodes/04_batch_norm", "/book/structure/03_shortcuts")),
    "exploding": Symptom(
        "early layers get far larger gradients than late ones; loss spikes",
        "relative gradient falls by > 10³ from the input-side third of the layers to the output-side third",
        "weights too large for the activation (|w σ'| > 1 per layer); un-normalised residual sums",
        "smaller or orthogonal initialisation; gradient clipping (norm, value, adaptive); normalisation; "
        "Fixup/ReZero for un-normalised residual nets",
        ("/book/causes/02_three_factors", "/book/training/02_clipping", "/book/nodes/01_initialisation",
         "/book/future/05_normalisation_free")),
    "vanishing_in_time": Symptom(
        "a recurrent net ignores early inputs",
        "‖de/dx_t‖ at the first step < 10⁻³ of the last step's",
        "recurrent Jacobian norms below one (small recurrent weights, saturated tanh, closed forget gates)",
        "gated cells (LSTM/GRU) with the forget gate open at the start (bias +1 or more); orthogonal or "
        "unitary recurrent matrices",
        ("/book/effects/01_depth_stops_helping", "/book/structure/01_gates", "/book/future/01_constrained_recurrent")),
    "exploding_in_time": Symptom(
        "a recurrent net's gradient is dominated by its earliest inputs; loss spikes",
        "‖de/dx_t‖ at the first step > 10³ times the last step's",
        "recurrent matrix with spectral radius above one",
        "gradient clipping; orthogonal/unitary recurrent matrices; gated cells",
        ("/book/effects/01_depth_stops_helping", "/book/training/02_clipping", "/book/future/01_constrained_recurrent")),
    "signal_growth": Symptom(
        "activations grow layer after layer",
        "RMS of the hidden layers' outputs rises by > 10² from the input-side third to the output-side third",
        "initial variance above the activation's fixed point (e.g. Var(w) > 2/n_in for ReLU); "
        "un-normalised residual branches adding up",
        "He/Xavier initialisation; normalisation (batch norm, layer norm, pre-LN); Fixup, ReZero or SkipInit",
        ("/book/nodes/01_initialisation", "/book/nodes/04_batch_norm", "/book/future/04_transformers",
         "/book/future/05_normalisation_free")),
    "signal_decay": Symptom(
        "activations shrink layer after layer",
        "RMS of the hidden layers' outputs falls by > 10² from the input-side third to the output-side third",
        "initial variance below the activation's fixed point (e.g. small Gaussian weights)",
        "He/Xavier initialisation; normalisation",
        ("/book/nodes/01_initialisation", "/book/nodes/04_batch_norm")),
    "dead_units": Symptom(
        "ReLU units that never fire",
        "share of units that output zero on every input of a batch > 50% in a layer",
        "a learning rate too large for ReLU nets; negative biases; poor initialisation",
        "a smaller learning rate; leaky ReLU, PReLU or ELU; He initialisation",
        ("/book/nodes/02_activations", "/book/nodes/03_activation_experiment")),
    "saturation": Symptom(
        "sigmoid/tanh units stuck at their limits",
        "share of a layer's outputs (units x inputs) within 0.01 of the activation's limits > 50%",
        "weights or inputs too large for a saturating activation",
        "Xavier initialisation; normalised inputs; batch norm; non-saturating activations",
        ("/book/nodes/01_initialisation", "/book/nodes/02_activations", "/book/nodes/04_batch_norm")),
    "update_too_large": Symptom(
        "training diverges or the loss jumps after a few steps",
        "SGD update-to-weight ratio lr ‖dW_l‖ / ‖W_l‖ > 0.5 in a layer",
        "a learning rate too large for the gradient the layer gets",
        "a smaller learning rate; warm-up; clipping; normalised or adaptive steps",
        ("/book/training/02_clipping", "/book/future/02_optimizers", "/book/nodes/04_batch_norm")),
    "update_too_small": Symptom(
        "training does not move",
        "SGD update-to-weight ratio below 10⁻⁷ in every layer",
        "a learning rate too small for the gradient the net gets, or a vanishing gradient",
        "a larger learning rate; adaptive or normalised steps; the remedies for vanishing gradients",
        ("/book/effects/02_slow_convergence", "/book/future/02_optimizers")),
    "nonfinite": Symptom(
        "the loss or a gradient is inf or NaN",
        "the first module whose output is non-finite, or the first non-finite gradient",
        "exploding activations or gradients, a learning rate far too large, log/exp overflow",
        "everything under 'exploding'; a smaller learning rate; numerically stable losses (log-sum-exp)",
        ("/book/training/02_clipping", "/book/future/02_optimizers")),
}


@dataclass
class Thresholds:
    """Where a measurement becomes a finding (rules of thumb; see ``SYMPTOMS`` for each)."""

    layer_spread: float = 1e3       # relative gradient, output-side third / input-side third (>= 3 layers)
    time_spread: float = 1e3        # ||de/dx_first|| / ||de/dx_last|| or its inverse
    signal_spread: float = 1e2      # RMS of the hidden layers' outputs, output-side third / input-side third
    dead_fraction: float = 0.5      # share of a layer's units that are dead
    saturated_fraction: float = 0.5  # share of a layer's outputs that are saturated
    update_high: float = 0.5        # lr ||dW|| / ||W|| above this in any layer
    update_low: float = 1e-7        # ... below this in every layer

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"threshold {name} must be a finite number > 0, got {v!r}")


@dataclass
class Finding:
    """A measurement outside its threshold: which symptom, where, the value and a sentence."""

    symptom: str
    where: str
    value: float
    detail: str

    def __str__(self) -> str:
        s = SYMPTOMS[self.symptom]
        return f"[{self.symptom}] {self.detail} -> try: {s.remedies}"


@dataclass
class Diagnosis:
    """Everything ``diagnose`` measured (plain lists, forward order) and what it concluded."""

    loss: float
    layers: list[str] = field(default_factory=list)
    weight_norm: list[float] = field(default_factory=list)
    weight_grad: list[float] = field(default_factory=list)
    relative_grad: list[float] = field(default_factory=list)
    signal_layers: list[str] = field(default_factory=list)
    signal_rms: list[float] = field(default_factory=list)
    unit_layers: list[str] = field(default_factory=list)
    dead_fraction: list[float] = field(default_factory=list)
    saturated_fraction: list[float] = field(default_factory=list)
    time_grad: list[float] | None = None
    update_ratio: list[float] | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def symptoms(self) -> list[str]:
        """The names of the symptoms found, in order, without repeats."""
        return list(dict.fromkeys(f.symptom for f in self.findings))

    def as_dict(self) -> dict:
        return asdict(self)

    def report(self, digits: int = 2, max_rows: int | None = 12) -> str:
        """A short text report: one line per weighted layer (the first and last ``max_rows // 2``
        when there are more than ``max_rows``; ``None`` for all), then the findings."""
        fmt = lambda v: f"{v:.{digits}e}" if v is not None and math.isfinite(v) else "n/a"  # noqa: E731
        rows = [f"loss {fmt(self.loss)}",
                f"{'layer':<36}{'||dW||/||W||':>13}" + (f"{'lr-update/W':>13}" if self.update_ratio else "")]
        shown = list(range(len(self.layers)))
        if max_rows is not None and len(shown) > max_rows:
            shown = shown[: max_rows // 2] + [-1] + shown[-(max_rows - max_rows // 2):]
        for i in shown:
            if i < 0:
                rows.append(f"{'... ' + str(len(self.layers) - max_rows) + ' more layers':<36}")
                continue
            name = self.layers[i] if len(self.layers[i]) <= 35 else "..." + self.layers[i][-32:]
            upd = f"{fmt(self.update_ratio[i]):>13}" if self.update_ratio else ""
            rows.append(f"{name:<36}{fmt(self.relative_grad[i]):>13}{upd}")
        if self.time_grad:
            rows.append(f"||de/dx_t||: first step {fmt(self.time_grad[0])}, last step {fmt(self.time_grad[-1])}")
        rows += [str(f) for f in self.findings] or ["no findings"]
        return "\n".join(rows)


_SATURATING = {A.Tanh: (-1.0, 1.0), A.Sigmoid: (0.0, 1.0), nn.Tanh: (-1.0, 1.0), nn.Sigmoid: (0.0, 1.0)}
_RECTIFIERS = (A.ReLU, nn.ReLU, nn.ReLU6)


def _unit_view(t: Tensor) -> Tensor:
    """(units, everything else): features of (N, F) and (N, T, F), channels of (N, C, H, W) and
    higher. A 3-D output is read as (batch, time, features), so the channels of a ``Conv1d`` net's
    (N, C, L) activations are not told apart (dead channels are then undercounted)."""
    if t.dim() == 2 or t.dim() == 3:
        return t.reshape(-1, t.shape[-1]).T
    return t.transpose(0, 1).reshape(t.shape[1], -1)


def _weights(module: nn.Module) -> list[Tensor]:
    return [p for p in module.parameters(recurse=False) if p.dim() >= 2]


def _norm(ts: Sequence[Tensor]) -> float:
    return float(torch.sqrt(sum((t.detach().double() ** 2).sum() for t in ts))) if ts else float("nan")


def _end_ratio(values: Sequence[float]) -> float:
    """Geometric mean of the output-side third of the finite, positive ``values`` over that of the
    input-side third: > 1 rises toward the output. Thirds, not single layers, so that one odd layer
    (a query matrix with a tiny gradient at initialisation, a sparse embedding) decides nothing."""
    v = [math.log10(x) for x in values if math.isfinite(x) and x > 0]
    if len(v) < 2:
        return float("nan")
    k = max(1, len(v) // 3)
    return 10 ** (sum(v[-k:]) / k - sum(v[:k]) / k)


def _extreme(names: Sequence[str], values: Sequence[float], largest: bool) -> str:
    ok = [(v, n) for v, n in zip(values, names) if math.isfinite(v) and v > 0]
    return (max(ok) if largest else min(ok))[1] if ok else "?"


def _forward_order(layers: list[tuple[str, nn.Module]], fired: dict[str, int]) -> list[tuple[str, nn.Module]]:
    """``layers`` in the order their forward hooks fired (registration order says nothing about
    the order of ``forward``). A layer that never ran as a module (e.g. attention's ``out_proj``,
    used functionally) stays right after the layer registered before it."""
    keys, last = [], -1.0
    for i, (name, _) in enumerate(layers):
        last = fired.get(name, last)
        keys.append((last, name not in fired, i))
    return [layers[i] for *_, i in sorted(keys)]


def diagnose(model: nn.Module, inputs: Tensor, targets: Tensor | None = None,
             loss: str | Callable[[Tensor, Tensor | None], Tensor] = "cross_entropy", *, lr: float | None = None,
             time_axis: int | None = None, thresholds: Thresholds | None = None) -> Diagnosis:
    """Measure one forward/backward pass of ``model`` on ``inputs`` and name what is wrong.

    ``loss``: a name from ``losses.LOSSES`` or a callable ``loss(output, targets) -> scalar``
    (applied to the model's first output tensor). ``lr``: the SGD learning rate you intend to use
    (adds update-to-weight ratios). ``time_axis``: the time dimension of ``inputs`` for recurrent
    or sequence models (adds ||de/dx_t|| per step). Returns a ``Diagnosis``; ``.report()`` prints it.
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}")
    if time_axis is not None and not -inputs.dim() <= time_axis < inputs.dim():
        raise ValueError(f"time_axis={time_axis} is not a dimension of inputs with shape {tuple(inputs.shape)}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    th = thresholds or Thresholds()
    lossf = get_loss(loss) if isinstance(loss, str) else loss
    layers = weighted_layers(model)
    units = [(n, m) for n, m in model.named_modules() if isinstance(m, (*_RECTIFIERS, *_SATURATING))]
    rms: dict[str, float] = {}
    fired: dict[str, int] = {}           # the order in which the weighted layers ran
    unit_stats: dict[str, tuple[float, float]] = {}

    def watch_signal(name: str):
        def hook(_m, _i, out):
            fired.setdefault(name, len(fired))
            t = _first_tensor(out)
            if t is not None and name not in rms:
                rms[name] = float(t.detach().double().pow(2).mean().sqrt())
        return hook

    def watch_units(name: str, module: nn.Module):
        calls = [0]

        def hook(_m, _i, out):
            u = _unit_view(out.detach())
            dead = float((u == 0).all(dim=1).double().mean()) if isinstance(module, _RECTIFIERS) else float("nan")
            lo, hi = next((v for k, v in _SATURATING.items() if isinstance(module, k)), (None, None))
            sat = (float(((u - lo < 0.01) | (hi - u < 0.01)).double().mean())
                   if lo is not None else float("nan"))
            unit_stats[name if not calls[0] else f"{name}#{calls[0] + 1}"] = (dead, sat)   # one module, many calls
            calls[0] += 1
        return hook

    x = inputs.detach().clone().requires_grad_(time_axis is not None and inputs.is_floating_point())
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}   # e.g. batch norm's running statistics
    handles = [m.register_forward_hook(watch_signal(n)) for n, m in layers]
    handles += [m.register_forward_hook(watch_units(n, m)) for n, m in units]
    try:
        model.zero_grad(set_to_none=True)
        value = lossf(_first_tensor(model(x)), targets)
        if torch.isfinite(value):
            value.backward()
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in buffers:
                    b.copy_(buffers[n])

    layers = _forward_order(layers, fired)
    d = Diagnosis(loss=float(value.detach()))
    d.layers = [n for n, _ in layers]
    d.weight_norm = [_norm(_weights(m)) for _, m in layers]
    grads = [[p.grad for p in _weights(m) if p.grad is not None] for _, m in layers]
    d.weight_grad = [_norm(g) if g else float("nan") for g in grads]
    finite = math.isfinite(d.loss) and all(math.isfinite(n) for n, g in zip(d.weight_grad, grads) if g)
    d.relative_grad = [g / w if w > 0 else float("nan") for g, w in zip(d.weight_grad, d.weight_norm)]
    hidden = [n for n, _ in layers if n in rms][:-1] if len(rms) > 2 else [n for n, _ in layers if n in rms]
    d.signal_layers, d.signal_rms = hidden, [rms[n] for n in hidden]
    d.unit_layers = list(unit_stats)
    d.dead_fraction = [unit_stats[n][0] for n in d.unit_layers]
    d.saturated_fraction = [unit_stats[n][1] for n in d.unit_layers]
    if time_axis is not None and x.grad is not None:
        g = x.grad.detach().double().movedim(time_axis, 0)
        d.time_grad = [float(g[t].norm()) for t in range(g.shape[0])]
    if lr is not None:
        d.update_ratio = [lr * r for r in d.relative_grad]
    d.findings = _findings(d, model, x, th, finite)
    return d


def _findings(d: Diagnosis, model: nn.Module, x: Tensor, th: Thresholds, finite: bool) -> list[Finding]:
    out: list[Finding] = []
    if not finite:
        from .training import first_nonfinite_layer  # training imports diagnostics; import here

        where = first_nonfinite_layer(model, x.detach()) or "loss"
        out.append(Finding("nonfinite", where, d.loss, f"non-finite {'output at ' + where if where != 'loss' else 'loss or gradient'}"))
        return out
    if len(d.layers) >= 3:
        r = _end_ratio(d.relative_grad)
        if r > th.layer_spread or r < 1 / th.layer_spread:
            key = "vanishing" if r > 1 else "exploding"
            where = _extreme(d.layers, d.relative_grad, largest=key == "exploding")
            out.append(Finding(key, where, max(r, 1 / r), f"relative gradient of the output-side third of the layers is "
                               f"{r:.1e}x that of the input-side third ({'smallest' if r > 1 else 'largest'} at {where})"))
    if d.time_grad and len(d.time_grad) >= 2 and d.time_grad[-1] > 0:
        r = d.time_grad[0] / d.time_grad[-1]
        if r < 1 / th.time_spread:
            out.append(Finding("vanishing_in_time", "input", r, f"||de/dx_1|| / ||de/dx_T|| = {r:.1e}"))
        elif r > th.time_spread:
            out.append(Finding("exploding_in_time", "input", r, f"||de/dx_1|| / ||de/dx_T|| = {r:.1e}"))
    if len(d.signal_rms) >= 3:
        r = _end_ratio(d.signal_rms)
        if r > th.signal_spread or r < 1 / th.signal_spread:
            key = "signal_growth" if r > 1 else "signal_decay"
            where = _extreme(d.signal_layers, d.signal_rms, largest=r > 1)
            out.append(Finding(key, where, max(r, 1 / r), f"output RMS of the output-side third of the hidden layers is "
                               f"{r:.1e}x that of the input-side third ({'largest' if r > 1 else 'smallest'} at {where})"))
    for name, dead, sat in zip(d.unit_layers, d.dead_fraction, d.saturated_fraction):
        if dead > th.dead_fraction:
            out.append(Finding("dead_units", name, dead, f"{dead:.0%} of the units after {name} are dead"))
        if sat > th.saturated_fraction:
            out.append(Finding("saturation", name, sat, f"{sat:.0%} of the outputs of {name} are saturated"))
    if d.update_ratio:
        finite = [(r, n) for r, n in zip(d.update_ratio, d.layers) if math.isfinite(r)]
        if finite and max(finite)[0] > th.update_high:
            r, n = max(finite)
            out.append(Finding("update_too_large", n, r, f"one SGD step would change {n} by {r:.1e} of its norm"))
        elif finite and max(finite)[0] < th.update_low:
            r, n = max(finite)
            out.append(Finding("update_too_small", n, r, f"one SGD step changes no layer by more than {r:.1e} of its norm"))
    return out


_PARTS = {"causes": 1, "effects": 2, "training": 3, "nodes": 4, "structure": 5, "future": 6}


def chapter_number(path: str) -> str:
    """``"/book/nodes/02_activations"`` -> ``"4.2"`` (part.chapter, as the book's table of contents)."""
    _, _, part, name = path.split("/", 3)
    return f"{_PARTS[part]}.{int(name.split('_', 1)[0])}"


def symptom_table(link: Callable[[str], str] | None = None) -> str:
    """``SYMPTOMS`` as a Markdown table (symptom | measurement | causes | remedies | chapters);
    ``link`` formats a chapter path (default: a MyST ``{doc}`` role whose text is the chapter's
    part.chapter number, e.g. 4.2)."""
    link = link or (lambda p: f"{{doc}}`{chapter_number(p)} <{p}>`")
    esc = lambda text: text.replace("|", "\\|")  # noqa: E731  (a bare | would split the cell)
    rows = ["| symptom | measurement | likely causes | remedies | demonstrated in |", "|---|---|---|---|---|"]
    for key, s in SYMPTOMS.items():
        rows.append(f"| **{esc(s.name)}** (`{key}`) | {esc(s.measurement)} | {esc(s.causes)} | {esc(s.remedies)} | "
                    f"{', '.join(link(c) for c in s.chapters)} |")
    return "\n".join(rows)
