"""Plotting helpers: they take computed data and an ``ax``, return the figure, never ``show()``.

One colour per arm across a chapter (``color_for``); gradient norms by layer on a log axis.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .activations import get_activation
from .diagnostics import GradientProfile

if TYPE_CHECKING:
    from .diagnosis import Diagnosis

__all__ = ["color_for", "plot_profiles", "plot_activations", "plot_series", "plot_seed_spread", "plot_bands",
           "new_axes", "PALETTE"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
_assigned: dict[str, str] = {}


def color_for(label: str) -> str:
    """A stable colour per label for the whole session (the same arm keeps its colour)."""
    if label not in _assigned:
        _assigned[label] = PALETTE[len(_assigned) % len(PALETTE)]
    return _assigned[label]


def new_axes(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2, **kw):
    """``plt.subplots`` with the book's default size per panel and a tight layout."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), layout="constrained", **kw)
    return fig, axes


def plot_profiles(ax: Axes, profiles: Mapping[str, GradientProfile], kind: str = "output",
                  title: str | None = None) -> Figure:
    """Per-layer gradient norms of several arms on a log axis.

    ``kind``: ``"output"`` (||de/dx_l||), ``"weight"`` (||de/dW_l||) or ``"bias"`` (||de/db_l||).
    """
    if kind not in ("output", "weight", "bias"):
        raise ValueError(f"kind must be 'output', 'weight' or 'bias', got {kind!r}")
    for label, prof in profiles.items():
        values = {"output": prof.output_grad, "weight": prof.weight_grad, "bias": prof.bias_grad}[kind]
        ax.semilogy(np.arange(1, len(values) + 1), values, "o-", ms=3, label=label, color=color_for(label))
    symbol = {"output": r"\partial e/\partial x_l", "weight": r"\partial e/\partial W_l", "bias": r"\partial e/\partial b_l"}[kind]
    ax.set_xlabel("layer l (1 = nearest the input)")
    ax.set_ylabel(rf"$\|{symbol}\|$")
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return ax.figure


def plot_activations(ax_f: Axes, ax_d: Axes, names: Sequence[str], x_range: tuple[float, float] = (-6, 6)) -> Figure:
    """Draw each activation f (left axes) and its derivative f' (right axes), as survey Fig. 4."""
    x = torch.linspace(*x_range, 601)
    for name in names:
        act = get_activation(name)
        with torch.no_grad():
            ax_f.plot(x, act(x), label=name, color=color_for(name))
            ax_d.plot(x, act.derivative(x), label=name, color=color_for(name))
    ax_f.set(xlabel="x", ylabel="f(x)", title="(a) function")
    ax_d.set(xlabel="x", ylabel="f'(x)", title="(b) derivative")
    for ax in (ax_f, ax_d):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return ax_f.figure


def _finish(ax: Axes, xlabel: str, ylabel: str, title: str | None) -> Figure:
    """Axis labels, optional title, a light grid and the legend: the common end of a line plot."""
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return ax.figure


def plot_series(ax: Axes, x: Sequence[float], series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str,
                logy: bool = True, title: str | None = None) -> Figure:
    """Several labelled curves against a shared x (e.g. epochs), optionally on a log y axis."""
    for label, ys in series.items():
        (ax.semilogy if logy else ax.plot)(x[: len(ys)], ys, label=label, color=color_for(label))
    return _finish(ax, xlabel, ylabel, title)


def plot_seed_spread(ax: Axes, samples: np.ndarray, reference: Sequence[float] | None = None,
                     labels: Sequence[str] | None = None, ylabel: str = "", ref_label: str = "paper",
                     title: str | None = None) -> Figure:
    """Box plots of ``samples`` (seeds x quantities) on a log axis, with a paper's single-run
    values drawn as red crosses on top."""
    samples = np.asarray(samples)
    pos = np.arange(1, samples.shape[1] + 1)
    ax.boxplot(samples, positions=pos, whis=(5, 95), showfliers=False, widths=0.5)
    if reference is not None:
        ax.plot(pos[: len(reference)], reference, "x", color="#d62728", ms=9, mew=2, label=ref_label)
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(pos, labels or [str(p) for p in pos])
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    return ax.figure


def plot_bands(ax: Axes, x: Sequence[float], runs: Mapping[str, np.ndarray], xlabel: str, ylabel: str,
               logy: bool = True, title: str | None = None) -> Figure:
    """Median over runs (rows) of each labelled array, with the min-max band shaded."""
    for label, arr in runs.items():
        arr = np.asarray(arr)
        c = color_for(label)
        ax.plot(x, np.median(arr, 0), color=c, label=label)
        ax.fill_between(x, arr.min(0), arr.max(0), color=c, alpha=0.2, lw=0)
    if logy:
        ax.set_yscale("log")
    return _finish(ax, xlabel, ylabel, title)


# --- §1.4.1 (chapter "effects/01_depth_stops_helping"): heat-maps and seed spreads -------------


def plot_heatmap(ax: Axes, x: Sequence[float], y: Sequence[float], values: np.ndarray, xlabel: str, ylabel: str,
                 colorbar_label: str, title: str | None = None, center: float = 0.0, floor: float | None = None,
                 contour: bool = True) -> Figure:
    """``values[i, j]`` at (x[j], y[i]) on a diverging colour scale split at ``center`` (blue below,
    red above, each side stretched to its own range), with the contour ``values = center`` drawn
    in black. ``floor`` clips the lowest values (e.g. log10 ratios of 1e-300) for the colour scale."""
    values = np.asarray(values, dtype=float)
    if values.shape != (len(y), len(x)):
        raise ValueError(f"values has shape {values.shape}, expected (len(y), len(x)) = {(len(y), len(x))}")
    from matplotlib.colors import TwoSlopeNorm

    shown = np.maximum(values, floor) if floor is not None else values
    lo, hi = float(np.nanmin(shown)), float(np.nanmax(shown))
    norm = TwoSlopeNorm(vcenter=center, vmin=min(lo, center - 1e-9), vmax=max(hi, center + 1e-9))
    mesh = ax.pcolormesh(x, y, shown, cmap="RdBu_r", norm=norm, shading="nearest")
    if contour and lo < center < hi:
        ax.contour(x, y, values, levels=[center], colors="k", linewidths=1.0)
    ax.figure.colorbar(mesh, ax=ax, label=colorbar_label)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    return ax.figure


def plot_mean_spread(ax: Axes, x: Sequence[float], runs: Mapping[str, np.ndarray], xlabel: str, ylabel: str,
                     logy: bool = False, title: str | None = None) -> Figure:
    """Mean over runs (rows) of each labelled array with a +-1 standard deviation band, and every
    run as a faint dot (so a bimodal spread over seeds stays visible)."""
    for label, arr in runs.items():
        arr = np.asarray(arr, dtype=float)
        c = color_for(label)
        mean, std = arr.mean(0), arr.std(0)
        ax.plot(x, mean, "o-", ms=3, color=c, label=f"{label} (mean ± sd, {arr.shape[0]} runs)")
        ax.fill_between(x, mean - std, mean + std, color=c, alpha=0.2, lw=0)
        for row in arr:
            ax.plot(x, row, ".", color=c, alpha=0.35, ms=4)
    if logy:
        ax.set_yscale("log")
    return _finish(ax, xlabel, ylabel, title)


__all__ += ["plot_heatmap", "plot_mean_spread"]


# --- §1.4.2 (chapter "effects/02_slow_convergence"): Fig. 7 loss surfaces and steps ---------


def plot_surface3d(ax, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, points: Mapping[str, Sequence[float]] | None = None,
                   xlabel: str = "$b_1$", ylabel: str = "$b_2$", zlabel: str = "loss $e$", title: str | None = None,
                   cmap: str = "viridis", color: str = "#d62728", elev: float = 35, azim: float = -60) -> Figure:
    """A loss surface Z(X, Y) on 3-D axes (``projection="3d"``), as the survey's Fig. 7 a-c, with
    optional labelled points ``{label: (x, y, z)}`` drawn on top of it and joined in order (a
    step from the first point to the second). ``elev``, ``azim``: the viewing angles."""
    ax.computed_zorder = False  # draw the points after (above) the surface, not depth-sorted
    ax.plot_surface(X, Y, Z, cmap=cmap, rstride=2, cstride=2, linewidth=0, antialiased=False, alpha=0.8, zorder=1)
    pts = list((points or {}).items())
    if len(pts) > 1:
        ax.plot(*zip(*[p for _, p in pts]), color=color, lw=2, zorder=3)
    for label, (x, y, z) in pts:
        ax.scatter([x], [y], [z], color=color, s=20, depthshade=False, zorder=4)
        ax.text(x, y, z + 0.08, label, color=color, fontsize=10, weight="bold", zorder=5)
    ax.set(xlabel=xlabel, ylabel=ylabel, zlabel=zlabel)
    ax.view_init(elev=elev, azim=azim)
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


def plot_contour_steps(ax: Axes, X: np.ndarray, Y: np.ndarray, Z: np.ndarray,
                       steps: Sequence[tuple[Sequence[float], Sequence[float], str, str]] = (), levels: int = 16,
                       xlabel: str = "$b_1$", ylabel: str = "$b_2$", title: str | None = None,
                       color: str = "#d62728") -> Figure:
    """Contour lines of Z(X, Y) with optimisation steps drawn as arrows, as the survey's Fig. 7 d-f.

    ``steps``: ``(start, end, start_label, end_label)`` tuples of 2-D points."""
    cs = ax.contour(X, Y, Z, levels=levels, cmap="viridis", linewidths=0.8)
    ax.clabel(cs, cs.levels[::3], fontsize=7, fmt="%.2f")
    for start, end, p, q in steps:
        ax.annotate("", xy=tuple(end), xytext=tuple(start),
                    arrowprops=dict(arrowstyle="->", color=color, lw=1.8, shrinkA=0, shrinkB=0))
        ax.plot(*zip(start, end), "o", color=color, ms=4)
        ax.annotate(p, tuple(start), textcoords="offset points", xytext=(4, 4), color=color, weight="bold")
        ax.annotate(q, tuple(end), textcoords="offset points", xytext=(4, -11), color=color, weight="bold")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


__all__ += ["plot_surface3d", "plot_contour_steps"]


# --- §2.1 (chapter "training/01_pretraining"): filters as images ---------------------------------


def plot_filters(ax: Axes, weights: torch.Tensor | np.ndarray, n: int = 64, ncols: int = 8,
                 shape: tuple[int, int] = (28, 28), title: str | None = None) -> Figure:
    """The first ``n`` rows of ``weights`` (one unit's incoming weights per row, e.g. an RBM's
    ``W`` of shape (n_hidden, 784)) as a mosaic of ``shape`` images, ``ncols`` per row. Each
    filter has its own grey scale, symmetric about 0 (mid-grey = 0, white = its largest positive
    weight), so the pattern is visible whatever the filter's scale."""
    W = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=float)
    if W.ndim != 2 or W.shape[1] != shape[0] * shape[1]:
        raise ValueError(f"weights must have shape (units, {shape[0] * shape[1]}), got {W.shape}")
    n = min(n, len(W))
    nrows = -(-n // ncols)
    h, w = shape
    mosaic = np.full((nrows * (h + 1) + 1, ncols * (w + 1) + 1), np.nan)
    for i in range(n):
        f = W[i] / (np.abs(W[i]).max() or 1.0)
        r, c = divmod(i, ncols)
        mosaic[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = f.reshape(h, w)
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


__all__ += ["plot_filters"]


# --- Training methods: clipping and weight penalties (chapters "training/02_clipping", "03_weight_penalties")


def plot_surface(ax: Axes, x: Sequence[float], y: Sequence[float], values: np.ndarray, xlabel: str, ylabel: str,
                 colorbar_label: str, title: str | None = None, cmap: str = "viridis") -> Figure:
    """``values[i, j]`` at (x[j], y[i]) on a sequential colour scale with a colour bar (a loss
    surface, say); unlike ``plot_heatmap`` there is no centre value."""
    values = np.asarray(values, dtype=float)
    if values.shape != (len(y), len(x)):
        raise ValueError(f"values has shape {values.shape}, expected (len(y), len(x)) = {(len(y), len(x))}")
    mesh = ax.pcolormesh(x, y, values, cmap=cmap, shading="nearest", rasterized=True)
    ax.figure.colorbar(mesh, ax=ax, label=colorbar_label)
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(min(x), max(x)), ylim=(min(y), max(y)))
    if title:
        ax.set_title(title)
    return ax.figure


def plot_paths(ax: Axes, paths: Mapping[str, Sequence[np.ndarray]], linestyles: Mapping[str, str] | None = None,
               lw: float = 1.4) -> Figure:
    """Optimisation paths on a 2-D parameter plane, drawn without changing the axes' limits (a
    step that leaves the plotted region is cut at its border). ``paths[label]`` is a list of
    (steps + 1, 2) arrays, drawn in that label's colour; 'o' marks each start, 'x' each end that
    lies inside the axes."""
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    for label, runs in paths.items():
        c = color_for(label)
        ls = (linestyles or {}).get(label, "-")
        for k, p in enumerate(runs):
            p = np.asarray(p, dtype=float)
            ax.plot(p[:, 0], p[:, 1], ls, color=c, lw=lw, label=label if k == 0 else None)
            ax.plot(*p[0], "o", color=c, ms=4)
            if xlim[0] <= p[-1, 0] <= xlim[1] and ylim[0] <= p[-1, 1] <= ylim[1]:
                ax.plot(*p[-1], "x", color=c, ms=7, mew=2)
    ax.set(xlim=xlim, ylim=ylim)
    ax.legend(fontsize=8, loc="lower left")
    return ax.figure


def plot_runs(ax: Axes, runs: Mapping[str, Sequence[Sequence[float]]], xlabel: str, ylabel: str, logy: bool = True,
              title: str | None = None, stopped: Mapping[str, Sequence[bool]] | None = None,
              x: Sequence[float] | None = None) -> Figure:
    """Every run (e.g. one per seed) of each labelled arm as a thin line in the arm's colour,
    against ``x`` (default: the index, e.g. the step; a shorter run uses the start of ``x``).
    ``stopped[label][k]`` marks run k's last finite point with a black 'x' (a run that diverged
    and stopped early)."""
    for label, rs in runs.items():
        c = color_for(label)
        for k, r in enumerate(rs):
            r = np.asarray(r, dtype=float)
            xs = np.arange(len(r)) if x is None else np.asarray(x, dtype=float)[: len(r)]
            ax.plot(xs, r, color=c, lw=1.0, alpha=0.8, label=label if k == 0 else None)
            ok = np.isfinite(r)
            if stopped and stopped.get(label) is not None and stopped[label][k] and ok.any():
                ax.plot(xs[ok][-1], r[ok][-1], "x", color="k", ms=7, mew=2)
    if logy:
        ax.set_yscale("log")
    return _finish(ax, xlabel, ylabel, title)


__all__ += ["plot_surface", "plot_paths", "plot_runs"]


# --- §2.2.3 (chapter "nodes/04_batch_norm"): percentiles over training, learning-rate ranges ----


def plot_percentile_bands(ax: Axes, steps: Sequence[float], percentiles: np.ndarray, label: str,
                          xlabel: str = "training step", ylabel: str = "sigmoid input",
                          title: str | None = None) -> Figure:
    """Percentiles over training, as Ioffe & Szegedy's Fig. 1 (b, c): ``percentiles`` is
    (checkpoints, 3) -- low, median, high (e.g. the 15th, 50th, 85th) -- drawn as three lines in
    ``label``'s colour with the band between low and high shaded."""
    p = np.asarray(percentiles, dtype=float)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) != len(steps):
        raise ValueError(f"percentiles must have shape (len(steps), 3) = ({len(steps)}, 3), got {p.shape}")
    c = color_for(label)
    ax.fill_between(steps, p[:, 0], p[:, 2], color=c, alpha=0.15, lw=0)
    ax.plot(steps, p[:, 1], color=c, lw=1.8, label=label)
    for j in (0, 2):
        ax.plot(steps, p[:, j], color=c, lw=0.9, ls="--")
    return _finish(ax, xlabel, ylabel, title)


def plot_lr_range(ax: Axes, lrs: Sequence[float], losses: Mapping[str, Sequence[float]],
                  diverged: Mapping[str, Sequence[int]] | None = None, chance: float | None = None,
                  threshold: float | None = None, ylabel: str = "final training loss",
                  title: str | None = None) -> Figure:
    """Final loss against the learning rate (log x axis), one line per arm; runs that diverged
    (``diverged[label][i] >= 0``, their loss is nan) are drawn as crosses on the top edge.
    ``chance``: a dotted line at the loss of guessing (ln 10 for ten classes); ``threshold``: a
    dashed line at the loss that counts as "trained"."""
    top = max([float(np.nanmax(np.asarray(v, dtype=float))) for v in losses.values()
               if np.isfinite(np.asarray(v, dtype=float)).any()] + [chance or 0.0]) * 1.1
    for label, vals in losses.items():
        vals = np.asarray(vals, dtype=float)
        c = color_for(label)
        ax.plot(lrs, vals, "o-", ms=4, color=c, label=label)
        if diverged is not None:
            bad = np.asarray(diverged[label]) >= 0
            if bad.any():
                ax.plot(np.asarray(lrs)[bad], np.full(bad.sum(), top), "x", ms=8, mew=2, color=c,
                        label=f"{label}: diverged", clip_on=False)
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=0.8, label="chance (ln 10)" if abs(chance - np.log(10)) < 1e-9 else "chance")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=0.6)
    ax.set_xscale("log")
    ax.set_ylim(0, top * 1.02)
    return _finish(ax, "learning rate $\\eta$", ylabel, title)


__all__ += ["plot_percentile_bands", "plot_lr_range"]


# --- §2.2.1 (chapter "nodes/01_initialisation"): variance profiles and per-layer histograms ----


def plot_variance_profile(ax: Axes, curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
                          xlabel: str, ylabel: str, title: str | None = None) -> Figure:
    """Measured per-layer second moments as points on their predicted lines, on a log axis.

    ``curves[label] = (layers, measured, predicted)``: one colour per label (``color_for``); the
    points are the measurement, the line through the same layers is the formula."""
    for label, (x, measured, predicted) in curves.items():
        c = color_for(label)
        ax.semilogy(x, predicted, "-", color=c, lw=1.2, alpha=0.8)
        ax.semilogy(x, measured, "o", color=c, ms=4, label=label)
    ax.plot([], [], "-", color="k", lw=1.2, label="lines: formula")
    return _finish(ax, xlabel, ylabel, title)


def plot_layer_histograms(ax: Axes, centres: Sequence[float], densities: np.ndarray, xlabel: str,
                          title: str | None = None, labels: Sequence[str] | None = None) -> Figure:
    """Normalised histograms (rows of ``densities`` on shared bin ``centres``) drawn as lines, one
    per layer, coloured from dark (layer 1, input side) to light, as Glorot & Bengio's Fig. 6-7."""
    densities = np.asarray(densities)
    cmap = plt.get_cmap("viridis")
    n = len(densities)
    for i, d in enumerate(densities):
        ax.plot(centres, d, color=cmap(i / max(n - 1, 1) * 0.9), lw=1.2,
                label=labels[i] if labels is not None else f"layer {i + 1}")
    return _finish(ax, xlabel, "density (normalised histogram)", title)


__all__ += ["plot_variance_profile", "plot_layer_histograms"]


# --- §2.2.2 and seed 004 (chapters "nodes/02_activations", "nodes/03_activation_experiment") ---


def plot_activation_grid(curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], ncols: int = 5,
                         width: float = 2.3, height: float = 1.9, ylim: tuple[float, float] = (-1.5, 3.0)) -> Figure:
    """One small panel per activation: f(x) (solid) and f'(x) (dashed) against x, from
    ``{name: (x, f, f')}`` (e.g. ``experiments.activations_exp.activation_curves``). Shared axes
    limits, so the panels compare directly."""
    names = list(curves)
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), layout="constrained",
                             sharex=True, sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, names):
        x, f, d = curves[name]
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        ax.plot(x, f, color=color_for(name), lw=1.6, label="f(x)")
        ax.plot(x, d, color=color_for(name), lw=1.2, ls="--", label="f'(x)")
        ax.set_title(name, fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("x")
    for ax in axes[:, 0]:
        ax.set_ylabel("f (solid), f' (dashed)", fontsize=8)
    axes.flat[0].set_ylim(*ylim)
    return fig


def plot_paths_on_contour(ax: Axes, X: np.ndarray, Y: np.ndarray, Z: np.ndarray,
                          paths: Mapping[str, np.ndarray], target: Sequence[float] | None = None,
                          xlabel: str = "$w_0$", ylabel: str = "$w_1$", title: str | None = None,
                          levels: int = 14) -> Figure:
    """Contour lines of Z(X, Y) (when Z > 0: ``levels`` levels spaced evenly on a log scale over
    the top three decades of Z) with optimisation paths ``{label: (steps + 1, 2) array}`` drawn as
    polylines from a start dot, and the target as a star."""
    Zp = np.asarray(Z)
    if (Zp > 0).all():
        lv = np.geomspace(max(Zp.min() * 1.5, Zp.max() * 1e-3), Zp.max(), levels)
        ax.contour(X, Y, Zp, levels=lv, cmap="viridis", linewidths=0.7)
    else:
        ax.contour(X, Y, Zp, levels=levels, cmap="viridis", linewidths=0.7)
    for label, P in paths.items():
        P = np.asarray(P)
        c = color_for(label)
        ax.plot(P[:, 0], P[:, 1], "-", color=c, lw=1.0, label=label)
        ax.plot(P[0, 0], P[0, 1], "o", color=c, ms=4)
    if target is not None:
        ax.plot(*target, "*", color="k", ms=10, label="optimum")
    return _finish(ax, xlabel, ylabel, title)


def plot_grouped_bars(ax: Axes, labels: Sequence[str], groups: Mapping[str, np.ndarray], ylabel: str,
                      ylim: tuple[float, float] | None = None, title: str | None = None) -> Figure:
    """Grouped bars: for each x label, one bar per group — the mean of ``groups[g][i]``, the values
    of label i over seeds (lists may differ in length) — with every seed's value as a dot, and
    the mean printed above it."""
    n = len(groups)
    width = 0.8 / n
    xs = np.arange(len(labels))
    for i, (g, vals) in enumerate(groups.items()):
        vals = [np.atleast_1d(np.asarray(v, dtype=float)) for v in vals]
        if len(vals) != len(labels):
            raise ValueError(f"group {g!r} has {len(vals)} entries for {len(labels)} labels")
        pos = xs - 0.4 + width * (i + 0.5)
        c = PALETTE[i % len(PALETTE)]
        ax.bar(pos, [v.mean() for v in vals], width, color=c, alpha=0.75, label=g)
        for p, row in zip(pos, vals):
            ax.plot(np.full(len(row), p), row, ".", color="k", ms=3)
            ax.annotate(f"{row.mean():.3f}", (p, row.mean()), textcoords="offset points", xytext=(0, 2),
                        ha="center", fontsize=6.5)
    ax.set_xticks(xs, labels)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return ax.figure


__all__ += ["plot_activation_grid", "plot_paths_on_contour", "plot_grouped_bars"]


# --- §2.3.2 (chapters "structure/03_shortcuts", "structure/04_unraveled"): shortcut variants, paths, lesions


def plot_strip(ax: Axes, groups: Mapping[str, Sequence[float]], ylabel: str, title: str | None = None,
               logy: bool = False, chance: float | None = None) -> Figure:
    """One column per label: every run (seed) as a dot in the label's colour and the median as a
    short black bar; runs that are nan (diverged) are drawn as crosses on the top edge and counted
    in the tick label. ``chance``: a dotted line (e.g. the error of always guessing one class)."""
    labels = list(groups)
    values = {k: np.asarray(v, dtype=float) for k, v in groups.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()] + [np.array([chance or 0.0])])
    top = float(finite.max()) * (3.0 if logy else 1.1) if finite.size else 1.0
    ticks = []
    for i, label in enumerate(labels):
        v, c = values[label], color_for(label)
        ok = np.isfinite(v)
        jitter = np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else np.zeros(1)
        ax.plot(i + jitter[ok], v[ok], "o", ms=5, color=c, alpha=0.8)
        if ok.any():
            ax.plot([i - 0.25, i + 0.25], [np.median(v[ok])] * 2, color="k", lw=2)
        if (~ok).any():
            ax.plot(i + jitter[~ok], np.full((~ok).sum(), top), "x", ms=8, mew=2, color=c, clip_on=False)
        ticks.append(label.replace("_", "\n", 1).replace("_", " ") + (f"\n({(~ok).sum()} diverged)" if (~ok).any() else ""))
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=0.8)
    ax.set_xticks(range(len(labels)), ticks, fontsize=8)
    if logy:
        ax.set_yscale("log")
    ax.set_ylim(top=top * (1.5 if logy else 1.03), **({} if logy else {"bottom": 0}))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    return ax.figure


def plot_path_gradients(axes: Sequence[Axes], lengths: Sequence[int], counts: Sequence[float],
                        per_path: Sequence[float], total: Sequence[float],
                        per_path_samples: Sequence[Sequence[float]] | None = None,
                        bulk: tuple[int, int] | None = None, effective: tuple[int, int] | None = None,
                        label: str = "residual net") -> Figure:
    """Veit et al. 2016, Fig. 6, on three axes: (a) the number of paths of each length, C(n, k);
    (b) the gradient norm of one path of length k (log axis; dots: the sampled paths, line: their
    mean); (c) the total gradient of all paths of length k, counts x per-path, as a share of its
    sum. ``bulk`` and ``effective`` shade length ranges on (a) and (c)."""
    lengths = np.asarray(lengths)
    c = color_for(label)
    ax_a, ax_b, ax_c = axes
    ax_a.bar(lengths, np.asarray(counts, dtype=float), color="#7f7f7f", width=0.8)
    ax_a.set(xlabel="path length k (residual branches passed)", ylabel="number of paths C(n, k)",
             title="(a) distribution of path lengths")
    if per_path_samples is not None:
        for k, s in zip(lengths, per_path_samples):
            ax_b.plot(np.full(len(s), k), s, ".", color=c, alpha=0.3, ms=3)
    ax_b.semilogy(lengths, per_path, "o-", ms=3, color=c, label=label)
    ax_b.set(xlabel="path length k", ylabel=r"$\|\partial e/\partial x_0\|$ of one path",
             title="(b) gradient of a single path")
    share = np.asarray(total, dtype=float) / np.sum(total)
    ax_c.bar(lengths, share, color=c, width=0.8)
    ax_c.set(xlabel="path length k", ylabel="share of the total gradient",
             title="(c) total gradient by path length")
    for ax, span, text in [(ax_a, bulk, "bulk of paths"), (ax_c, effective, "effective paths")]:
        if span is not None:
            ax.axvspan(span[0] - 0.5, span[1] + 0.5, color="#ff7f0e", alpha=0.15, lw=0, label=f"{text}: {span[0]}–{span[1]}")
            ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return ax_a.figure


def plot_lesions(ax: Axes, accuracies: Mapping[str, Sequence[float]], baseline: Mapping[str, float],
                 chance: float | None = None, highlight: tuple[str, int] | None = None,
                 title: str | None = None) -> Figure:
    """Test accuracy after deleting unit i (1-based on the x axis), one line per net, with each
    net's accuracy before any deletion as a dashed line (Veit et al. 2016, Fig. 3).
    ``highlight=(label, i)`` circles the deletion of unit i (0-based) of that net."""
    for label, acc in accuracies.items():
        acc = np.asarray(acc, dtype=float)
        c = color_for(label)
        ax.plot(np.arange(1, len(acc) + 1), acc, "o-", ms=4, color=c, label=f"{label}: unit deleted")
        ax.axhline(baseline[label], color=c, ls="--", lw=1, label=f"{label}: no deletion")
    if highlight is not None:
        label, i = highlight
        ax.plot(i + 1, accuracies[label][i], "o", ms=14, mfc="none", mec="k", mew=1.5)
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=0.8, label="chance")
    ax.set_ylim(0, 1)
    return _finish(ax, "deleted unit i (1 = nearest the input)", "test accuracy", title)


__all__ += ["plot_strip", "plot_path_gradients", "plot_lesions"]


# --- §2.3.1 (chapters "structure/01_gates", "structure/02_highway"): gradients through time, histograms --


def plot_time_gradients(ax: Axes, curves: Mapping[str, Sequence[float]], title: str | None = None,
                        styles: Mapping[str, str] | None = None, xlabel: str = "time step t") -> Figure:
    """Gradient norms over the time steps t = 1 ... T (entry k is step k + 1) on a log axis, one
    line per labelled curve (``styles[label]`` an optional matplotlib line style). Zeros (e.g. the
    forget term of survey eq. 59 at t = T) are left out."""
    for label, ys in curves.items():
        ys = np.asarray(ys, dtype=float)
        t = np.arange(1, len(ys) + 1)
        keep = ys > 0
        ax.semilogy(t[keep], ys[keep], (styles or {}).get(label, "-"), color=color_for(label), label=label, lw=1.3)
    ax.set(xlabel=xlabel, ylabel="gradient norm")
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    return ax.figure


def plot_histograms(ax: Axes, samples: Mapping[str, Sequence[float]], xlabel: str, bins: int | Sequence[float] = 40,
                    title: str | None = None, density: bool = True) -> Figure:
    """Overlaid step histograms of several labelled samples (NaNs dropped), one colour per label."""
    for label, vals in samples.items():
        vals = np.asarray(vals, dtype=float).ravel()
        vals = vals[np.isfinite(vals)]
        ax.hist(vals, bins=bins, histtype="step", density=density, lw=1.4, color=color_for(label), label=label)
    return _finish(ax, xlabel, "density" if density else "count", title)


__all__ += ["plot_time_gradients", "plot_histograms"]


def plot_diagnosis(ax_grad: Axes, ax_signal: Axes, diagnoses: Mapping[str, Diagnosis], title: str | None = None) -> Figure:
    """Two views of ``diagnosis.diagnose`` results, one line per labelled diagnosis: the relative
    gradient ||dW_l|| / ||W_l|| of each weighted layer (left) and the RMS of each hidden layer's
    output (right), both on log axes against the layer's position (input side first)."""
    for label, d in diagnoses.items():
        ax_grad.semilogy(np.arange(1, len(d.relative_grad) + 1), d.relative_grad, "o-", ms=3, label=label,
                         color=color_for(label))
        ax_signal.semilogy(np.arange(1, len(d.signal_rms) + 1), d.signal_rms, "o-", ms=3, label=label,
                           color=color_for(label))
    _finish(ax_signal, "hidden layer (input side first)", "RMS of the layer's output", None)
    return _finish(ax_grad, "weighted layer (input side first)", r"$\|\partial e/\partial W_l\| \,/\, \|W_l\|$", title)


__all__ += ["plot_diagnosis"]
