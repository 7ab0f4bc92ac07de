"""Experiments of the activation chapters (survey §2.2.2; textbook chapter 5, seed 004).

Part A, chapter ``nodes/02_activations``:

- ``scalar_activation`` / ``activation_curves``: every activation of the package as a function of
  one real input, with its derivative. Maxout is not elementwise (it takes the maximum over ``k``
  affine pieces of the previous layer); as a function of one input it is drawn as the maximum of
  the fixed pieces ``MAXOUT_PIECES`` (v_i x + c_i), one example of what it can learn.
- ``principle_scores``: the hidden-unit design principles of seed 004 §5.2 (near-linear,
  continuous, almost differentiable, monotone, small saturation region, cheap) scored by
  measurement on a fine grid, with expectations under a unit-variance Gaussian input computed by
  quadrature (deterministic, no sampling). ``time_activation`` measures the forward + backward
  cost per element (machine-dependent: never print it in a checked cell).
- ``zigzag``: the non-zero-centred-input argument of seed 004 eq. 5.5-5.6 and Fig. 5.4, as a real
  optimisation: one sigmoid unit with two weights fed by positive sigmoid outputs, trained by
  per-sample gradient descent, against the same inputs shifted to zero mean.
- ``dead_unit_run``: the fraction of hidden units that are inactive on every training image during
  training of an MNIST MLP (for ReLU these are the "dead" units of seed 004 §5.3 and survey
  §2.2.2), and how many inactive units come back.
- ``prelu_run``: the slopes a PReLU net learns, layer by layer (He et al. 2015, §2.1-2.2).

Part B, chapter ``nodes/03_activation_experiment``: the Keras experiment of seed 004 §5.4 in
PyTorch (``TEXTBOOK``, ``textbook_mlp``, ``run_arm``): MLP 784-512-256-128-64-10, softmax
output, Adam (lr 1e-3), batch 256, 10 epochs, MSE (``MSE_SOFTMAX``) vs cross-entropy and five
activations; ``sign_coherence`` measures the zig-zag of Part A in these nets; ``paper_runs`` runs
the exact setup and ``save_runs`` / ``load_runs`` store it as data (``python -m
unstable_gradients.experiments.activations_exp SEED OUT.json``).
Where our setup departs from Keras: the softmax and the cross-entropy are fused
(``cross_entropy`` on logits, the same function); Keras reports the *training* accuracy as a
running mean over the epoch's mini-batches while we evaluate it at the end of each epoch on the
first ``n_eval`` training images; the training *loss* is the running mean in both. Keras's Adam
uses epsilon 1e-7 (torch: 1e-8); ``run_arm`` passes 1e-7 by default.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..activations import Maxout, activation_names, get_activation
from ..losses import Loss, get_loss
from ..models import MLP
from ..training import evaluate, train

__all__ = [
    # part A
    "MAXOUT_PIECES", "BOOK_KWARGS", "ACTIVATION_PARAMETERS", "scalar_activation", "activation_curves", "PrincipleScores", "principle_scores",
    "format_scores", "time_activation", "ZIGZAG", "ZigzagPath", "zigzag_data", "unit_loss_grad", "zigzag", "zigzag_loss_grid",
    "steps_to_target_sweep", "inactive_units", "DeadUnitRuns", "dead_unit_run", "PReLURuns", "prelu_run",
    # part B
    "TEXTBOOK", "KERAS_ADAM_EPS", "MSE_SOFTMAX", "textbook_mlp", "ArmRuns", "run_arm", "relative_decrease",
    "fraction_below", "epochs_above_all", "format_arms", "first_epoch_below", "sign_coherence",
    "PAPER_ARMS", "save_runs", "load_runs", "paper_runs",
]

# --- Part A: the zoo as functions of one input ------------------------------------------------

#: (slope v_i, intercept c_i) of the three affine pieces of the maxout drawn as a 1-D function:
#: f(x) = max_i (v_i x + c_i). A convex, non-monotone example (Goodfellow et al. 2013, Fig. 1).
MAXOUT_PIECES: tuple[tuple[float, float], ...] = ((-0.5, -1.0), (0.2, 0.0), (1.2, -1.0))

#: Keyword arguments with which the book builds each activation (the package defaults, made
#: explicit): leaky slope 0.01 (survey eq. 44), PReLU's initial slope 0.25 (He et al. 2015),
#: ELU alpha 1, softplus and Swish beta 1, maxout with 3 pieces.
BOOK_KWARGS: dict[str, dict] = {"leaky_relu": dict(negative_slope=0.01), "prelu": dict(init=0.25),
                                "elu": dict(alpha=1.0), "softplus": dict(beta=1.0), "swish": dict(beta=1.0),
                                "maxout": dict(k=3)}


#: The parameter of each parametrised activation the widget varies: (keyword, min, max, book value).
ACTIVATION_PARAMETERS: dict[str, tuple[str, float, float, float]] = {
    "leaky_relu": ("negative_slope", 0.0, 0.5, 0.01), "prelu": ("init", -0.5, 1.0, 0.25),
    "elu": ("alpha", 0.0, 3.0, 1.0), "softplus": ("beta", 0.1, 10.0, 1.0), "swish": ("beta", 0.0, 10.0, 1.0)}


def scalar_activation(name: str, **kwargs) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """``g(x) -> (f(x), f'(x))`` for a 1-D tensor ``x``, from the package's activation ``name``.

    Elementwise activations use their ``forward`` and closed-form ``derivative``. Maxout uses
    ``Maxout(k)`` on the pieces ``v_i x + c_i`` (``pieces=``, default ``MAXOUT_PIECES``; ``k`` is
    their number) and the chain rule f'(x) = sum_i v_i [piece i wins].
    """
    if name == "maxout":
        pieces = kwargs.pop("pieces", MAXOUT_PIECES)
        if kwargs.get("k", len(pieces)) != len(pieces):
            raise ValueError(f"maxout k={kwargs['k']} does not match the {len(pieces)} pieces")
        act = Maxout(k=len(pieces))
        v = torch.tensor([p[0] for p in pieces], dtype=torch.float64)
        c = torch.tensor([p[1] for p in pieces], dtype=torch.float64)

        def g(x: Tensor) -> tuple[Tensor, Tensor]:
            z = x[:, None] * v.to(x.dtype) + c.to(x.dtype)          # (n, k): the k pieces of one unit
            return act(z)[:, 0], (act.derivative(z) * v.to(x.dtype)).sum(1)
        return g
    act = get_activation(name, **kwargs)

    def g(x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return act(x), act.derivative(x)
    return g


def activation_curves(names: Sequence[str] | None = None, x_range: tuple[float, float] = (-4.0, 4.0),
                      n: int = 801) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{name: (x, f(x), f'(x))}`` for each activation (default: all, built with ``BOOK_KWARGS``)."""
    x = torch.linspace(*x_range, n, dtype=torch.float64)
    out = {}
    for name in names or activation_names():
        f, d = scalar_activation(name, **BOOK_KWARGS.get(name, {}))(x)
        out[name] = (x.numpy(), f.detach().numpy(), d.detach().numpy())
    return out


@dataclass(frozen=True)
class PrincipleScores:
    """Seed 004's design principles (§5.2), measured for one activation f.

    Expectations are over x ~ N(0, 1) (a unit-variance pre-activation):

    - near-linear: ``slope_at_0`` = f'(0+), the slope just right of 0 (at a kink the package's
      derivative takes torch's convention, e.g. ReLU'(0) = 0; the right slope is the informative
      one); ``near_identity`` = P(|f'(x) - 1| < 0.1);
    - small saturation region: ``saturated`` = P(|f'(x)| < ``threshold``), and ``saturated_wide``
      the same under x ~ N(0, ``wide_std``^2) (large pre-activations); ``zero_grad`` = P(f'(x) = 0),
      ``zero_output`` = P(f(x) = 0) (the textbook also wants few zero outputs);
    - gradient transmitted: ``mean_derivative`` = E f'(x) and ``rms_derivative`` = sqrt(E f'(x)^2),
      the factor step 1 of the backward pass (survey eq. 21) applies on average;
    - zero-centred output: ``mean_output`` = E f(x);
    - continuous: the largest jump of f between neighbouring grid points is below 1e-3;
    - almost differentiable: ``kinks`` = points where the left and right difference quotients of f
      differ by more than 0.05 (a jump of f counts as one);
    - monotone: f never decreases along the grid;
    - cheap: ``parameters`` = trainable parameters of one activation module as the book builds it
      (a maxout layer instead multiplies the previous layer's weights by k; see ``extra_weights``).
    """

    name: str
    slope_at_0: float
    near_identity: float
    saturated: float
    saturated_wide: float
    zero_grad: float
    zero_output: float
    mean_derivative: float
    rms_derivative: float
    mean_output: float
    continuous: bool
    kinks: int
    monotone: bool
    parameters: int
    extra_weights: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _runs(mask: np.ndarray) -> int:
    """Number of maximal runs of consecutive True values."""
    m = np.asarray(mask, dtype=bool)
    return int(m[0]) + int(np.count_nonzero(m[1:] & ~m[:-1])) if m.size else 0


def principle_scores(name: str, threshold: float = 0.05, wide_std: float = 3.0, lim: float = 20.0,
                     n: int = 400_001, **kwargs) -> PrincipleScores:
    """Score activation ``name`` (built with ``BOOK_KWARGS`` updated by ``kwargs``) against the
    design principles, on a float64 grid of ``n`` points over [-lim, lim] (spacing 1e-4 by
    default; x = 0 is a grid point). Gaussian expectations are quadrature sums with weights
    proportional to exp(-x^2/(2 s^2)), normalised over the grid (the mass of N(0, 3^2) beyond
    |x| = 20 is 3e-11)."""
    if n % 2 == 0:
        raise ValueError("n must be odd so that x = 0 is a grid point")
    opts = {**BOOK_KWARGS.get(name, {}), **kwargs}
    x = torch.linspace(-lim, lim, n, dtype=torch.float64)
    f_t, d_t = scalar_activation(name, **opts)(x)
    f, d, xs = f_t.detach().numpy(), d_t.detach().numpy(), x.numpy()
    h = xs[1] - xs[0]
    w = np.exp(-xs**2 / 2)
    w /= w.sum()
    w_wide = np.exp(-xs**2 / (2 * wide_std**2))
    w_wide /= w_wide.sum()
    slopes = np.diff(f) / h                                   # difference quotient on each interval
    kink_mask = np.abs(slopes[1:] - slopes[:-1]) > 0.05        # at interior grid points
    if name == "maxout":
        params, extra = 0, f"x{opts.get('k', len(opts.get('pieces', MAXOUT_PIECES)))} weights of the layer below"
    else:
        params, extra = sum(p.numel() for p in get_activation(name, **opts).parameters()), ""
    return PrincipleScores(
        name=name, slope_at_0=float(d[n // 2 + 1]), near_identity=float(w[np.abs(d - 1) < 0.1].sum()),
        saturated=float(w[np.abs(d) < threshold].sum()), saturated_wide=float(w_wide[np.abs(d) < threshold].sum()),
        zero_grad=float(w[d == 0].sum()),
        zero_output=float(w[f == 0].sum()), mean_derivative=float((w * d).sum()),
        rms_derivative=float(np.sqrt((w * d**2).sum())), mean_output=float((w * f).sum()),
        continuous=bool(np.abs(np.diff(f)).max() < 1e-3), kinks=_runs(kink_mask),
        monotone=bool(np.diff(f).min() >= -1e-12), parameters=int(params), extra_weights=extra)


def format_scores(rows: Sequence[PrincipleScores]) -> str:
    """The scores as an aligned text table (rounded; deterministic for an nbval-checked cell).

    Columns (d = f', x ~ N(0, 1) unless noted): d(0+); P(|d-1|<.1); P(|d|<.05); the same for
    x ~ N(0, 3^2); P(d=0); P(f=0); E d; rms d; E f; continuous; kinks; monotone; parameters."""
    yn = {True: "yes", False: "no"}
    lines = [f"{'activation':<14}{'d(0+)':>6}{'P(d~1)':>8}{'P(sat)':>8}{'sat,3σ':>8}{'P(d=0)':>8}{'P(f=0)':>8}"
             f"{'E d':>7}{'rms d':>7}{'E f':>7}  {'contin.':<8}{'kinks':>5}  {'monot.':<7}{'params':>7}"]
    for r in rows:
        v = {k: round(x, 3) + 0.0 for k, x in r.as_dict().items() if isinstance(x, float)}  # + 0.0: no "-0.000"
        lines.append(f"{r.name:<14}{v['slope_at_0']:>6.2f}{v['near_identity']:>8.3f}{v['saturated']:>8.3f}"
                     f"{v['saturated_wide']:>8.3f}{v['zero_grad']:>8.3f}{v['zero_output']:>8.3f}"
                     f"{v['mean_derivative']:>7.3f}{v['rms_derivative']:>7.3f}{v['mean_output']:>7.3f}  "
                     f"{yn[r.continuous]:<8}{r.kinks:>5}  {yn[r.monotone]:<7}{r.parameters if not r.extra_weights else 'x k W':>7}")
    return "\n".join(lines)


def time_activation(name: str, n: int = 1_000_000, repeats: int = 9, **kwargs) -> float:
    """Fastest of ``repeats`` wall times, in nanoseconds per input element, of one forward +
    backward pass of the activation module on about ``n`` float32 standard-normal inputs (rows of
    999 = 3 x 333 values, so that maxout's k = 3 pieces group evenly). The minimum, not the mean,
    because on a shared machine other work only ever adds time. Machine- and load-dependent: rank
    coarsely, never print it in a checked cell."""
    act = get_activation(name, **{**BOOK_KWARGS.get(name, {}), **kwargs})
    x = torch.randn(max(1, n // 999), 999, generator=torch.Generator().manual_seed(0))
    if not act.elementwise and x.shape[1] % act.k:
        raise ValueError(f"maxout k={act.k} must divide 999")
    times = []
    for _ in range(repeats + 1):  # the first pass warms up
        xi = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        act(xi).sum().backward()
        times.append(time.perf_counter() - t0)
    return float(min(times[1:]) / x.numel() * 1e9)


# --- Part A: the zig-zag of non-zero-centred inputs (seed 004 eq. 5.5-5.6, Fig. 5.4) ---------

#: The zig-zag problem: one sigmoid unit o = sigmoid(w0 a0 + w1 a1) learns the teacher weights
#: ``w_star`` from ``w_start``: w0 must grow and w1 shrink, the case of Fig. 5.4.
ZIGZAG: dict = dict(w_star=(1.5, -1.5), w_start=(0.0, 0.0), n=500, seed=0, tol=0.1)


def zigzag_data(inputs: str = "sigmoid", n: int = ZIGZAG["n"], seed: int = ZIGZAG["seed"]) -> np.ndarray:
    """``n`` two-dimensional inputs a = sigmoid(z), z ~ N(0, I) (``"sigmoid"``: the positive outputs
    of a sigmoid layer), or the same values shifted to zero mean, a = sigmoid(z) - 1/2 =
    tanh(z/2)/2 (``"centred"``: a rescaled tanh layer). Both share z, so they differ only by the
    shift. float64, shape (n, 2)."""
    if inputs not in ("sigmoid", "centred"):
        raise ValueError(f"inputs must be 'sigmoid' or 'centred', got {inputs!r}")
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    a = 1 / (1 + np.exp(-z))
    return a if inputs == "sigmoid" else a - 0.5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def unit_loss_grad(w: np.ndarray, a: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean loss e = 1/2 (o - t)^2 of the unit o = sigmoid(a w) over the rows of ``a``, and its
    gradient by hand (seed 004 eq. 5.5-5.6): de/dw_i = (o - t) sigma'(a w) a_i. With a_i > 0 both
    components share the sign of (o - t) for every single sample."""
    o = _sigmoid(a @ w)
    delta = (o - t) * o * (1 - o)
    return float(0.5 * np.mean((o - t) ** 2)), (delta[:, None] * a).mean(0)


@dataclass
class ZigzagPath:
    """Gradient descent on the zig-zag problem. ``w``: the path (steps + 1, 2); ``loss``: the mean
    loss over all ``n`` inputs along it; ``opposite_sign``: share of updates whose two components
    have opposite signs (the only kind that moves w0 up and w1 down at once);
    ``steps_to_target``: first step with ||w - w_star|| < tol (None: never); ``path_ratio``: path
    length up to that step over the straight distance ||w_star - w_start|| (nan if never)."""

    inputs: str
    lr: float
    batch_size: int
    w: np.ndarray
    loss: np.ndarray
    opposite_sign: float
    steps_to_target: int | None
    path_ratio: float


def zigzag(inputs: str = "sigmoid", lr: float = 20.0, steps: int = 200, batch_size: int = 1,
           w_star: Sequence[float] = ZIGZAG["w_star"], w_start: Sequence[float] = ZIGZAG["w_start"],
           n: int = ZIGZAG["n"], seed: int = ZIGZAG["seed"], tol: float = ZIGZAG["tol"],
           stop_at_target: bool = False, track_loss: bool = True) -> ZigzagPath:
    """Train the unit's two weights by (mini-batch) gradient descent on ``zigzag_data(inputs)``,
    targets t = sigmoid(a w_star) (so the optimum is exactly ``w_star``). ``batch_size=1`` is
    per-sample SGD, the textbook's "for one given datum", cycling through a seeded permutation;
    ``batch_size=n`` is full-batch gradient descent. Stops early when the weights overflow, and
    at the target with ``stop_at_target``. ``track_loss=False`` skips the full-data loss along the
    path (``loss`` then holds only the start), which makes sweeps fast."""
    if lr <= 0 or steps < 1 or not 1 <= batch_size <= n:
        raise ValueError("need lr > 0, steps >= 1 and 1 <= batch_size <= n")
    a = zigzag_data(inputs, n, seed)
    ws, w = np.asarray(w_star, dtype=float), np.asarray(w_start, dtype=float)
    t = _sigmoid(a @ ws)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1)).numpy()
    path, losses, opposite, hit = [w], [unit_loss_grad(w, a, t)[0]], 0, None
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(steps):
            idx = order[np.arange(s * batch_size, (s + 1) * batch_size) % n]
            g = unit_loss_grad(w, a[idx], t[idx])[1]
            w = w - lr * g
            if not np.isfinite(w).all():
                break
            opposite += int(g[0] * g[1] < 0)
            path.append(w)
            if track_loss:
                losses.append(unit_loss_grad(w, a, t)[0])
            if hit is None and np.linalg.norm(w - ws) < tol:
                hit = s + 1
                if stop_at_target:
                    break
    P = np.stack(path)
    ratio = float("nan")
    if hit is not None:
        ratio = float(np.linalg.norm(np.diff(P[: hit + 1], axis=0), axis=1).sum() / np.linalg.norm(ws - P[0]))
    return ZigzagPath(inputs, lr, batch_size, P, np.asarray(losses), opposite / max(len(path) - 1, 1), hit, ratio)


def zigzag_loss_grid(inputs: str = "sigmoid", w0_lim: tuple[float, float] = (-0.5, 2.5),
                     w1_lim: tuple[float, float] = (-2.5, 0.5), num: int = 121,
                     w_star: Sequence[float] = ZIGZAG["w_star"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W0, W1, E): the mean loss of the zig-zag problem on a ``num`` x ``num`` grid of weights."""
    a = zigzag_data(inputs)
    t = _sigmoid(a @ np.asarray(w_star, dtype=float))
    W0, W1 = np.meshgrid(np.linspace(*w0_lim, num), np.linspace(*w1_lim, num))
    O = _sigmoid(a @ np.stack([W0.ravel(), W1.ravel()]))          # (n, grid points)
    return W0, W1, (0.5 * ((O - t[:, None]) ** 2).mean(0)).reshape(W0.shape)


def steps_to_target_sweep(lrs: Sequence[float], inputs: Sequence[str] = ("sigmoid", "centred"),
                          batch_size: int = 1, steps: int = 2000) -> dict[str, list[int | None]]:
    """For each input kind, the steps ``zigzag`` needs to come within ``tol`` of ``w_star`` at each
    learning rate (None: not within ``steps``, e.g. because the path oscillates or diverges)."""
    return {kind: [zigzag(kind, lr=lr, steps=steps, batch_size=batch_size, stop_at_target=True,
                          track_loss=False).steps_to_target
                   for lr in lrs] for kind in inputs}


# --- Part A: dead units (seed 004 §5.3; survey §2.2.2) ----------------------------------------


@torch.no_grad()
def inactive_units(net: MLP, X: Tensor, batch_size: int = 10_000) -> list[Tensor]:
    """For each hidden layer, a boolean mask of the units whose pre-activation y = W x + b is <= 0
    for *every* row of ``X``. For ReLU these units output 0 and pass no gradient on any of these
    inputs: they are dead on the data set. For leaky ReLU, PReLU and ELU the same units are only
    inactive: their derivative on the negative side is not 0. (Normalised nets are not handled.)"""
    if net.norms:
        raise ValueError("inactive_units expects an MLP without normalisation")
    masks: list[Tensor] | None = None
    for i in range(0, len(X), batch_size):
        h, found = X[i : i + batch_size].flatten(1), []
        for lin, act in zip(net.linears[:-1], net.activations):
            y = lin(h)
            found.append((y <= 0).all(0))
            h = act(y)
        masks = found if masks is None else [m & f for m, f in zip(masks, found)]
    return masks or []


@dataclass
class DeadUnitRuns:
    """Inactive hidden units during training, per seed. ``steps``: the record points (0 = at
    initialisation); ``inactive``: (seeds, records, layers) fraction of each layer's units inactive
    on all training images; ``revived``: (seeds, layers) number of units inactive at some record
    and active at the end; ``test_acc``, ``final_loss``: (seeds,) at the end (nan if diverged)."""

    activation: str
    lr: float
    seeds: list[int]
    steps: np.ndarray
    inactive: np.ndarray
    revived: np.ndarray
    test_acc: np.ndarray
    final_loss: np.ndarray
    diverged: list[str] = field(default_factory=list)

    def final(self) -> np.ndarray:
        """(seeds,) fraction of all hidden units inactive at the end."""
        return self.inactive[:, -1, :].mean(1)


def dead_unit_run(activation: str, lr: float, X: Tensor, y: Tensor, test_data: tuple[Tensor, Tensor], *,
                  sizes: Sequence[int] = (784, 256, 256, 256, 10), epochs: int = 2, batch_size: int = 100,
                  seeds: Sequence[int] = (0, 1), record_every: int = 20, optimizer: str = "adam",
                  init: str = "he_normal") -> DeadUnitRuns:
    """Train ``MLP(sizes, activation)`` (He-normal weights, zero biases) with ``optimizer`` at
    learning rate ``lr`` on ``(X, y)`` for each seed, and record ``inactive_units`` on all of ``X``
    at initialisation and every ``record_every`` steps. The seed fixes the weights and the batch
    order, so all activations and learning rates start from the same weights."""
    all_frac, revived, accs, losses, diverged, steps = [], [], [], [], [], None
    for seed in seeds:
        net = MLP(list(sizes), activation=activation, init=init, seed=seed)
        masks = [torch.stack([m.float() for m in inactive_units(net, X)])]   # (layers, units) per record
        rec = [0]

        def cb(step: int, model: torch.nn.Module) -> None:
            if (step + 1) % record_every == 0:
                masks.append(torch.stack([m.float() for m in inactive_units(model, X)]))
                rec.append(step + 1)

        res = train(net, X, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
                    progress=False, eval_every_epoch=False, callback=cb)
        M = torch.stack(masks)                      # (records, layers, units)
        all_frac.append(M.mean(2).numpy())
        revived.append((M.max(0).values * (1 - M[-1])).sum(1).numpy())
        if res.diverged:
            diverged.append(f"seed {seed}: {res.diverged}")
            accs.append(float("nan"))
            losses.append(float("nan"))
        else:
            accs.append(evaluate(net, *test_data)[1])
            losses.append(float(np.mean(res.loss[-record_every:])))
        steps = rec if steps is None or len(rec) > len(steps) else steps
    n = min(len(f) for f in all_frac)
    return DeadUnitRuns(activation, lr, list(seeds), np.asarray(steps[:n]), np.stack([f[:n] for f in all_frac]),
                        np.stack(revived), np.asarray(accs), np.asarray(losses), diverged)


# --- Part A: PReLU's learned slopes by depth (He et al. 2015, §2.1-2.2; survey eq. 45) -------


@dataclass
class PReLURuns:
    """Learned PReLU slopes, per seed. ``steps``: record points (0 = init); ``mean_slope``:
    (seeds, records, layers) mean slope of each hidden layer; ``final``: (seeds, layers, units)
    the slopes at the end (units = 1 when channel-shared); ``test_acc``: (seeds,)."""

    channelwise: bool
    seeds: list[int]
    steps: np.ndarray
    mean_slope: np.ndarray
    final: np.ndarray
    test_acc: np.ndarray

    def layer_means(self) -> np.ndarray:
        """(seeds, layers) mean final slope of each layer."""
        return self.final.mean(2)


def prelu_run(X: Tensor, y: Tensor, test_data: tuple[Tensor, Tensor], *, depth: int = 6, width: int = 128,
              channelwise: bool = True, epochs: int = 6, lr: float = 0.05, optimizer: str = "momentum",
              batch_size: int = 100, seeds: Sequence[int] = (0, 1, 2), record_every: int = 50,
              init: str = "he_normal") -> PReLURuns:
    """Train a ``depth`` x ``width`` PReLU MLP (slopes initialised to 0.25 as in He et al.; one
    slope per unit when ``channelwise``, the MLP analogue of their channel-wise variant, else one
    per layer) and record the slopes. The slopes get no weight penalty (as in He et al.)."""
    means, finals, accs, steps = [], [], [], None
    for seed in seeds:
        net = MLP([X.shape[1]] + [width] * depth + [10], activation="prelu", init=init, seed=seed,
                  activation_kwargs=dict(num_parameters=width if channelwise else 1, init=0.25))
        rec, hist = [0], [[float(a.weight.detach().mean()) for a in net.activations]]

        def cb(step: int, model: torch.nn.Module) -> None:
            if (step + 1) % record_every == 0:
                hist.append([float(a.weight.detach().mean()) for a in model.activations])
                rec.append(step + 1)

        train(net, X, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
              progress=False, eval_every_epoch=False, callback=cb, on_divergence="raise")
        means.append(np.asarray(hist))
        finals.append(np.stack([a.weight.detach().numpy().copy() for a in net.activations]))
        accs.append(evaluate(net, *test_data)[1])
        steps = rec
    return PReLURuns(channelwise, list(seeds), np.asarray(steps), np.stack(means), np.stack(finals), np.asarray(accs))


# --- Part B: the Keras experiment of seed 004 §5.4 ---------------------------------------------

#: The textbook's setup: MLP 784-512-256-128-64-10 with softmax output, Keras defaults
#: (Dense: glorot_uniform weights, zero biases; Adam lr 1e-3), batch 256, 10 epochs, all of MNIST.
TEXTBOOK: dict = dict(sizes=(784, 512, 256, 128, 64, 10), init="xavier_uniform", optimizer="adam", lr=1e-3,
                      batch_size=256, epochs=10, n_train=60_000, n_test=10_000)
#: Keras's Adam epsilon (``keras.backend.epsilon()``); torch's default is 1e-8.
KERAS_ADAM_EPS = 1e-7


def _mse_softmax(o: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(torch.softmax(o, dim=1), F.one_hot(y.long(), o.shape[1]).to(o.dtype))


def _mse_softmax_grad(o: Tensor, y: Tensor) -> Tensor:
    p = torch.softmax(o, dim=1)
    g = 2 * (p - F.one_hot(y.long(), o.shape[1]).to(o.dtype)) / o.numel()   # de/dp
    return p * (g - (g * p).sum(1, keepdim=True))                          # softmax Jacobian^T g


#: Keras's ``mean_squared_error`` after a softmax output layer, on logits: e = mean over the batch
#: and the 10 classes of (softmax(o) - onehot(y))^2. Its gradient carries the softmax Jacobian
#: diag(p) - p p^T, which is small wherever p saturates: the textbook's reason MSE learns slowly.
MSE_SOFTMAX = Loss("mse_softmax", _mse_softmax, _mse_softmax_grad)


def textbook_mlp(activation: str, init: str = "xavier_uniform", seed: int = 0,
                 sizes: Sequence[int] = TEXTBOOK["sizes"]) -> MLP:
    """The textbook's MLP with ``activation`` in every hidden layer; logits out (the softmax is in
    the loss). ``init="xavier_uniform"`` with zero biases is Keras's Dense default;
    ``init="torch_default"`` keeps ``nn.Linear``'s own: U(-1/sqrt(n_in), 1/sqrt(n_in)) for weights
    *and* biases (kaiming_uniform with a = sqrt 5), drawn from the global RNG seeded with ``seed``."""
    if init == "torch_default":
        torch.manual_seed(seed)
        return MLP(list(sizes), activation=activation, init=None)
    return MLP(list(sizes), activation=activation, init=init, seed=seed)


@dataclass
class ArmRuns:
    """One arm of the experiment over seeds. Per-epoch arrays are (seeds, epochs): ``epoch_loss``
    (running mean over the epoch's mini-batches, as Keras's ``loss``), ``train_acc`` and
    ``train_loss`` (on the first ``n_eval`` training images at the epoch's end), ``test_loss``,
    ``test_acc``. ``initial_loss``: (seeds,) on those training images before any step.
    ``grad_norms``: (seeds, layers, records) weight-gradient norm of each layer (input side first)
    at ``grad_steps``. ``seconds``: wall time of all seeds."""

    activation: str
    loss: str
    init: str
    optimizer: str
    lr: float
    seeds: list[int]
    initial_loss: np.ndarray
    epoch_loss: np.ndarray
    train_loss: np.ndarray
    train_acc: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    grad_steps: np.ndarray
    grad_norms: np.ndarray
    seconds: float

    @property
    def label(self) -> str:
        """E.g. ``"sigmoid, MSE"``; ``", torch init"`` is appended for PyTorch's default init."""
        init = ", torch init" if self.init == "torch_default" else ""
        return f"{self.activation}, {'MSE' if self.loss == 'mse_softmax' else 'CE'}{init}"

    def as_dict(self) -> dict:
        """Plain, JSON-serialisable data (arrays as nested lists)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ArmRuns":
        return cls(**{k: (np.asarray(v) if isinstance(v, list) and k != "seeds" else v) for k, v in d.items()})


def run_arm(activation: str, loss: str, X: Tensor, y: Tensor, test_data: tuple[Tensor, Tensor], *, epochs: int,
            seeds: Sequence[int] = (0,), init: str = TEXTBOOK["init"], optimizer: str = TEXTBOOK["optimizer"],
            lr: float = TEXTBOOK["lr"], batch_size: int = TEXTBOOK["batch_size"], record_grads_every: int = 10,
            adam_eps: float = KERAS_ADAM_EPS, n_eval: int | None = 2000) -> ArmRuns:
    """Train ``textbook_mlp(activation, init, seed)`` with ``loss`` (``"mse"``: ``MSE_SOFTMAX``;
    ``"cross_entropy"``: softmax cross-entropy) for each seed; the seed fixes the initial weights
    and the batch order, so arms with the same seed see the same batches. At the end of every
    epoch the loss and accuracy are evaluated on the first ``n_eval`` training images (all when
    None) and on ``test_data``."""
    lossf = {"mse": MSE_SOFTMAX, "cross_entropy": "cross_entropy"}.get(loss)
    if lossf is None:
        raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    kw = dict(eps=adam_eps) if optimizer == "adam" else {}
    X_eval, y_eval = X[:n_eval], y[:n_eval]
    steps_per_epoch = -(-len(X) // batch_size)
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    out: dict[str, list] = {k: [] for k in keys + ("epoch_loss", "initial", "grads")}
    t0, grad_steps = time.perf_counter(), None
    for seed in seeds:
        net = textbook_mlp(activation, init, seed)
        out["initial"].append(evaluate(net, X_eval, y_eval, lossf)[0])
        per_epoch: dict[str, list[float]] = {k: [] for k in keys}

        def at_epoch_end(step: int, model: torch.nn.Module) -> None:
            if (step + 1) % steps_per_epoch == 0:
                for split, (Xs, ys) in (("train", (X_eval, y_eval)), ("test", test_data)):
                    l_, a_ = evaluate(model, Xs, ys, lossf)
                    per_epoch[f"{split}_loss"].append(l_)
                    per_epoch[f"{split}_acc"].append(a_)

        res = train(net, X, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, loss=lossf, seed=seed,
                    optimizer_kwargs=kw, record_grads_every=record_grads_every, progress=False,
                    eval_every_epoch=False, callback=at_epoch_end, on_divergence="raise")
        for k in keys:
            out[k].append(per_epoch[k])
        out["epoch_loss"].append(res.epoch_loss)
        out["grads"].append([res.grad_norms[name] for name in res.grad_norms])
        grad_steps = res.grad_steps
    name = lossf if isinstance(lossf, str) else lossf.name
    return ArmRuns(activation, name, init, optimizer, lr, list(seeds), np.asarray(out["initial"]),
                   np.asarray(out["epoch_loss"]), *(np.asarray(out[k]) for k in keys), np.asarray(grad_steps),
                   np.asarray(out["grads"]), time.perf_counter() - t0)


def relative_decrease(arm: ArmRuns) -> np.ndarray:
    """(seeds,) 1 - (last epoch's loss) / (loss at initialisation): the share of its starting
    value the loss has lost, comparable between MSE and cross-entropy."""
    return 1 - arm.epoch_loss[:, -1] / arm.initial_loss


def fraction_below(a: ArmRuns, b: ArmRuns, key: str = "test_acc") -> float:
    """Share of (seed, epoch) pairs at which arm ``a``'s ``key`` is below arm ``b``'s (same seed)."""
    va, vb = getattr(a, key), getattr(b, key)
    return float((va < vb).mean())


def epochs_above_all(runs: Mapping[str, ArmRuns], target: str, key: str = "epoch_loss") -> np.ndarray:
    """(seeds of ``target``,) number of epochs at which that seed of arm ``target`` has a ``key``
    above every seed of every other arm (arms may have different numbers of seeds)."""
    mine = getattr(runs[target], key)                                                   # (seeds, epochs)
    others = np.max([getattr(r, key).max(0) for k, r in runs.items() if k != target], axis=0)   # (epochs,)
    return (mine > others).sum(1)


def format_arms(runs: Mapping[str, ArmRuns]) -> str:
    """One line per arm: loss at init and per epoch (first, last), final train/test accuracy
    (mean and min-max over seeds), all rounded."""
    w = max([3] + [len(k) for k in runs]) + 2
    lines = [f"{'arm':<{w}}{'loss: init':>10}{'ep. 1':>8}{'last':>8}{'drop':>7}   {'train acc':<21}{'test acc':<21}"]
    for k, r in runs.items():
        ta, te = r.train_acc[:, -1], r.test_acc[:, -1]
        lines.append(f"{k:<{w}}{r.initial_loss.mean():>10.4f}{r.epoch_loss[:, 0].mean():>8.4f}"
                     f"{r.epoch_loss[:, -1].mean():>8.4f}{relative_decrease(r).mean():>7.0%}   "
                     f"{ta.mean():.3f} ({ta.min():.3f}-{ta.max():.3f})  {te.mean():.3f} ({te.min():.3f}-{te.max():.3f})")
    return "\n".join(lines)


def first_epoch_below(arm: ArmRuns, level: float, key: str = "epoch_loss") -> np.ndarray:
    """(seeds,) the first epoch (1-based) at which ``key`` is at or below ``level``; nan if never."""
    vals = getattr(arm, key)
    hit = vals <= level
    return np.where(hit.any(1), hit.argmax(1) + 1, np.nan)


def sign_coherence(net: torch.nn.Module, X: Tensor, y: Tensor, loss: str = "cross_entropy") -> list[float]:
    """For each weight matrix of ``net`` (input side first), after one backward pass on ``(X, y)``:
    the mean over units (rows) of |sum_i sign(g_ji)| / #{i: g_ji != 0}, where g_j is the gradient
    of unit j's incoming weights. 1 means every incoming weight of a unit is pushed the same way
    (the zig-zag of seed 004 Fig. 5.4, which per sample is exact when the inputs are positive),
    0 means half up, half down. Adam's first step is -lr * sign(g) per entry, so this is the
    share of Adam's first update that moves a unit's weights in lockstep."""
    lossf = MSE_SOFTMAX if loss == "mse" else get_loss(loss)
    net.zero_grad(set_to_none=True)
    lossf(net(X), y).backward()
    out = []
    for lin in net.linears:
        s = torch.sign(lin.weight.grad)
        out.append(float((s.sum(1).abs() / (s != 0).sum(1).clamp(min=1)).mean()))
    return out


# --- Part B: the exact setup, run once and stored as data ------------------------------------------

#: The arms of the textbook's experiment (its five activations, MSE vs cross-entropy for the
#: sigmoid) plus the sigmoid pair under PyTorch's default initialisation: (activation, loss, init).
PAPER_ARMS: list[tuple[str, str, str]] = [
    ("sigmoid", "mse", "xavier_uniform"), ("sigmoid", "cross_entropy", "xavier_uniform"),
    ("tanh", "cross_entropy", "xavier_uniform"), ("softsign", "cross_entropy", "xavier_uniform"),
    ("relu", "cross_entropy", "xavier_uniform"), ("elu", "cross_entropy", "xavier_uniform"),
    ("sigmoid", "mse", "torch_default"), ("sigmoid", "cross_entropy", "torch_default")]


def _rounded(v, digits: int = 6):
    if isinstance(v, float):
        return float(f"{v:.{digits}g}")
    if isinstance(v, list):
        return [_rounded(x, digits) for x in v]
    return v


def save_runs(path: str, runs: Mapping[str, ArmRuns], config: Mapping) -> None:
    """Write ``runs`` and the ``config`` that produced them as JSON, floats to 6 significant digits."""
    import json

    data = dict(config=dict(config), runs={k: {f: _rounded(v) for f, v in r.as_dict().items()} for k, r in runs.items()})
    with open(path, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.write("\n")


def load_runs(path: str) -> tuple[dict, dict[str, ArmRuns]]:
    """(config, {label: ArmRuns}) as written by ``save_runs``."""
    import json

    with open(path) as fh:
        data = json.load(fh)
    return data["config"], {k: ArmRuns.from_dict(v) for k, v in data["runs"].items()}


def paper_runs(seed: int, n_eval: int = 10_000) -> tuple[dict, dict[str, ArmRuns]]:
    """The textbook's exact setup (``TEXTBOOK``: all 60,000 training images, 10 epochs, the full
    test set) for every arm of ``PAPER_ARMS`` with one ``seed``; training accuracy on the first
    ``n_eval`` images. 10-30 minutes on one shared CPU core. Returns (config, runs) for ``save_runs``."""
    import platform

    from ..data import load_mnist

    X, y = load_mnist("train")
    test = load_mnist("test")
    runs = {}
    for act, loss, init in PAPER_ARMS:
        r = run_arm(act, loss, X, y, test, epochs=TEXTBOOK["epochs"], seeds=(seed,), init=init, n_eval=n_eval)
        runs[r.label] = r
    config = dict(TEXTBOOK, n_eval=n_eval, seed=seed, adam_eps=KERAS_ADAM_EPS, torch=torch.__version__,
                  machine=platform.machine(), threads=torch.get_num_threads())
    return config, runs


if __name__ == "__main__":  # python -m unstable_gradients.experiments.activations_exp SEED OUT.json
    import sys

    torch.set_num_threads(1)
    cfg, result = paper_runs(int(sys.argv[1]))
    save_runs(sys.argv[2], result, cfg)
