"""Plotting helpers: they take computed data and an ``ax``, return the figure, never ``show()``.

One colour per arm across a chapter (``color_for``); gradient norms by layer on a log axis.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .activations import get_activation
from .diagnostics import GradientProfile

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


def plot_filters(ax: Axes, weights, n: int = 64, ncols: int = 8, shape: tuple[int, int] = (28, 28),
                 title: str | None = None) -> Figure:
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
    cmap = plt.get_cmap("gray").copy()
    cmap.set_bad("white")
    ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


__all__ += ["plot_filters"]
