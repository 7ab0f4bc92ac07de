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
