"""ipywidgets controls for the chapters: each wraps an experiment driver and a plotting helper.

The controls need a running kernel (Binder, Colab, a local Jupyter); the published HTML keeps
the state of the last run, and each chapter also draws a static figure of a few settings.
"""
from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
from torch import Tensor

from .activations import activation_names
from .experiments.causes import backward_gain, mlp_profile
from .plotting import new_axes, plot_profiles

__all__ = ["gradient_profile_explorer", "learning_speed_explorer"]


def gradient_profile_explorer(X: Tensor, y: Tensor, activations: list[str] | None = None) -> widgets.Widget:
    """Depth x width x activation x weight gain -> the per-layer profile of ||de/dx_l|| at init.

    Weights are LeCun-normal N(0, 1/n_in) times the chosen gain; 0 layers = the input side.
    """
    names = activations or [a for a in activation_names() if a not in ("step", "maxout")]
    style = dict(continuous_update=False)
    controls = dict(
        depth=widgets.IntSlider(10, min=2, max=50, description="depth", **style),
        width=widgets.IntSlider(100, min=10, max=400, step=10, description="width", **style),
        activation=widgets.Dropdown(options=names, value="tanh", description="activation"),
        gain=widgets.FloatLogSlider(1.0, base=10, min=-1, max=1, step=0.05, description="weight gain", **style),
    )

    def show(depth: int, width: int, activation: str, gain: float) -> None:
        prof = mlp_profile(X, y, depth=depth, width=width, activation=activation, gain=gain)
        fig, ax = new_axes(width=6, height=3.4)
        plot_profiles(ax, {f"{activation}, gain {gain:.2g}": prof},
                      title=f"per-layer gain {backward_gain(prof):.3g} (x{backward_gain(prof) ** (depth - 1):.2g} over the net)")
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:]), out])


def learning_speed_explorer(X: Tensor, y: Tensor, seeds: int = 20) -> widgets.Widget:
    """Hidden layers x width x activation -> Nielsen's speed of learning of each hidden layer at
    initialisation, as box plots over ``seeds`` random nets (Nielsen's init and cost)."""
    from .experiments.causes import nielsen_initial_speeds
    from .plotting import plot_seed_spread

    style = dict(continuous_update=False)
    controls = dict(
        hidden_layers=widgets.IntSlider(4, min=1, max=8, description="hidden layers", **style),
        width=widgets.IntSlider(30, min=10, max=200, step=10, description="width", **style),
        activation=widgets.Dropdown(options=["sigmoid", "tanh", "relu", "elu", "softsign"], value="sigmoid",
                                    description="activation"),
    )

    def show(hidden_layers: int, width: int, activation: str) -> None:
        speeds = nielsen_initial_speeds(X, y, hidden_layers, range(seeds), width, activation)
        fig, ax = new_axes(width=6, height=3.4)
        plot_seed_spread(ax, speeds, labels=[f"layer {i + 1}" for i in range(hidden_layers)],
                         ylabel=r"$\|\partial C/\partial b_l\|$",
                         title=f"{activation}, {hidden_layers} x {width} units, {seeds} seeds")
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])
