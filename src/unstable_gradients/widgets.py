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


def rnn_step_explorer(n_sequences: int = 256) -> widgets.Widget:
    """w_hh x T x activation x b_h -> BPTT through the one-unit RNN of survey Table 1 (w_xh = 1,
    output h_{T-1}, squared loss, random 0/1 input bits): |de/dh_t| over the steps (left) and the
    per-step factor |w_hh f'(y_t)| of survey eq. 18 (right), median and 10-90% band over
    ``n_sequences`` sequences. b_h = -2 and T = 2 is the survey's own setting."""
    import numpy as np

    from .activations import get_activation
    from .experiments.effects_rnn import step_gradients

    names = [a for a in activation_names() if get_activation(a).elementwise and a not in ("step", "linear")]
    style = dict(continuous_update=False)
    controls = dict(
        w_hh=widgets.FloatSlider(8.0, min=0.25, max=24, step=0.25, description="w_hh", **style),
        steps=widgets.IntSlider(10, min=2, max=50, description="T (steps)", **style),
        activation=widgets.Dropdown(options=names, value="sigmoid", description="activation"),
        b_h=widgets.FloatSlider(-2.0, min=-12, max=4, step=0.5, description="b_h", **style),
    )

    def show(w_hh: float, steps: int, activation: str, b_h: float) -> None:
        sg = step_gradients(w_hh, steps, activation, b_h=b_h, n_sequences=n_sequences)
        fig, (ax1, ax2) = new_axes(ncols=2, width=4.6, height=3.2)
        for ax, data, t0, ylabel in ((ax1, sg.dh, 0, r"$|\partial e/\partial h_t|$"),
                                     (ax2, sg.factor, 1, r"factor $|w_{hh}\,f'(y_t)|$")):
            t = np.arange(t0, t0 + data.shape[1])
            lo, med, hi = np.percentile(data, [10, 50, 90], axis=0)
            ax.plot(t, med, "o-", ms=3, color="#1f77b4")
            ax.fill_between(t, lo, hi, color="#1f77b4", alpha=0.2, lw=0)
            if (med > 0).any():
                ax.set_yscale("log")
            ax.set(xlabel=f"time step t (output at t = {steps - 1})", ylabel=ylabel)
            ax.grid(True, alpha=0.3)
        ax2.axhline(1, color="k", lw=0.8)
        alive = sg.dh[:, -1] > 0  # a dead ReLU passes no gradient at all
        ratio = f"{np.median(sg.dh[alive, 0] / sg.dh[alive, -1]):.2g}" if alive.any() else "n/a (all zero)"
        fig.suptitle(f"{activation}, w_hh = {w_hh:g}, b_h = {b_h:g}: median |de/dh_0| / |de/dh_T-1| = {ratio}")
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:]), out])


__all__ += ["rnn_step_explorer"]


def convergence_step_explorer(grid_n: int = 101) -> widgets.Widget:
    """w2 x learning rate x start point (b1, b2) -> one gradient-descent step (survey eq. 26) of the
    one-unit net of survey Fig. 6 (tanh, e = (o - y)^2, sample (0, 0), w1 = 1), drawn as an arrow on
    the contour plot of its loss, with the actual loss change and the first-order one of eq. 27.
    The sliders start at the reconstructed point C of Fig. 7 (w2 = 1, learning rate 0.5)."""
    from .experiments.effects_convergence import FIG7_LR, OneUnitNet, loss_grid, reconstruct_start_points
    from .plotting import plot_contour_steps

    c = reconstruct_start_points().points["stable"]
    style = dict(continuous_update=False)
    controls = dict(
        w2=widgets.FloatSlider(1.0, min=0.1, max=3.0, step=0.05, description="w2", **style),
        lr=widgets.FloatLogSlider(FIG7_LR, base=10, min=-2, max=0.5, step=0.05, description="learning rate", **style),
        b1=widgets.FloatSlider(round(c[0], 2), min=-2, max=2, step=0.01, description="start b1", **style),
        b2=widgets.FloatSlider(round(c[1], 2), min=-2, max=2, step=0.01, description="start b2", **style),
    )

    def show(w2: float, lr: float, b1: float, b2: float) -> None:
        s = OneUnitNet(w2).step(b1, b2, lr)
        lim1 = (min(-2.0, s.end[0] - 0.3), max(2.0, s.end[0] + 0.3))
        lim2 = (min(-2.0, s.end[1] - 0.3), max(2.0, s.end[1] + 0.3))
        fig, ax = new_axes(width=5.2, height=4.2)
        plot_contour_steps(ax, *loss_grid(w2, lim1, lim2, n=grid_n), [(s.start, s.end, "start", "end")],
                           title=f"w2 = {w2:g}, learning rate {lr:.3g}")
        plt.show()
        print(f"e: {s.loss_start:.3f} -> {s.loss_end:.3f}   Δe = {s.delta:+.3f}   "
              f"(eq. 27 predicts {s.predicted_delta:+.3f});  |∇e| = {s.grad_norm:.3f}, de/db2 = {s.grad[1]:.3f}")

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:]), out])


__all__ += ["convergence_step_explorer"]


def rbm_filter_explorer(X: Tensor, n_images: int = 2000, record_every: int = 250) -> widgets.Widget:
    """CD-k steps x epochs x learning rate x hidden units -> an RBM trained on the first
    ``n_images`` rows of ``X`` (values in [0, 1]; Hinton 2002, survey §2.1): its reconstruction
    error during training (left) and its first filters as 28 x 28 images (right). Mini-batches of
    20, weights from N(0, 0.01^2), seed 0; a run takes a second or less."""
    from .experiments.pretraining_exp import pretrain_stack
    from .plotting import plot_filters

    data = X[:n_images].flatten(1)
    style = dict(continuous_update=False)
    controls = dict(
        k=widgets.IntSlider(1, min=1, max=10, description="CD-k steps", **style),
        epochs=widgets.IntSlider(1, min=1, max=5, description="epochs", **style),
        lr=widgets.FloatLogSlider(0.1, base=10, min=-2, max=0, step=0.1, description="learning rate", **style),
        n_hidden=widgets.Dropdown(options=[16, 36, 64, 100], value=36, description="hidden units"),
    )

    def show(k: int, epochs: int, lr: float, n_hidden: int) -> None:
        res = pretrain_stack("rbm", [data.shape[1], n_hidden], data, epochs=epochs, lr=lr, k=k,
                             record_every=record_every, seed=0)
        fig, (ax1, ax2) = new_axes(ncols=2, width=4.4, height=3.4)
        ax1.plot(res.images_seen, res.curves[0], "o-", ms=3, color="#1f77b4")
        ax1.set(xlabel="training images seen", ylabel="reconstruction error (MSE per pixel)",
                title=f"CD-{k}, lr {lr:.2g}: {res.seconds[0]:.2f} s")
        ax1.grid(True, alpha=0.3)
        rbm = res.stack.layers[0]
        plot_filters(ax2, rbm.W, n=min(n_hidden, 36), ncols=6, title=f"first filters of {n_hidden}")
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:]), out])


__all__ += ["rbm_filter_explorer"]
