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


def cliff_explorer(w_range: tuple[float, float] = (2.0, 10.0), b_range: tuple[float, float] = (-7.0, 1.0)) -> widgets.Widget:
    """Clipping method x threshold x learning rate x start point -> gradient descent on the error
    surface of Pascanu et al.'s one-unit RNN (2013, eq. 8, Fig. 6), with plain gradient descent
    from the same start drawn for comparison (``experiments.clipping_exp.cliff_descent``)."""
    import numpy as np

    from .experiments.clipping_exp import cliff_descent, cliff_line, cliff_onset, cliff_surface
    from .plotting import plot_paths, plot_surface

    surface = cliff_surface(w_range, b_range, n=241)
    style = dict(continuous_update=False)
    controls = dict(
        method=widgets.Dropdown(options=["norm", "value", "none"], value="norm", description="clip by"),
        threshold=widgets.FloatLogSlider(1.0, base=10, min=-1.5, max=1, step=0.05, description="threshold θ", **style),
        lr=widgets.FloatLogSlider(1.0, base=10, min=-1, max=1, step=0.05, description="learning rate", **style),
        w0=widgets.FloatSlider(5.0, min=4.5, max=9.5, step=0.1, description="start w", **style),
        offset=widgets.FloatSlider(-2.0, min=-3.0, max=-0.1, step=0.05, description="start b - b*(w)", **style),
        steps=widgets.IntSlider(300, min=20, max=600, step=20, description="steps", **style),
    )

    def show(method: str, threshold: float, lr: float, w0: float, offset: float, steps: int) -> None:
        start = np.array([[w0, float(cliff_line(w0)) + offset]])
        plain = cliff_descent(start, lr=lr, steps=steps)
        clipped = cliff_descent(start, lr=lr, steps=steps, clip=None if method == "none" else method,
                                threshold=threshold)
        fig, ax = new_axes(width=6.4, height=4.4)
        plot_surface(ax, surface.w, surface.b, surface.loss, "recurrent weight w", "bias b",
                     r"error $\mathcal{E}=(\sigma(x_{50})-0.7)^2$")
        ww = np.linspace(cliff_onset(), w_range[1], 50)
        ax.plot(ww, cliff_line(ww), ":", color="w", lw=1)
        label = "no clipping (same run)" if method == "none" else f"{method}-clipped, θ = {threshold:.2g}"
        plot_paths(ax, {"plain gradient descent": [plain.path[0]], label: [clipped.path[0]]}, {label: "--"})
        ax.set_title(f"final E: plain {plain.loss[0, -1]:.3g}, clipped {clipped.loss[0, -1]:.3g}; longest step: "
                     f"{plain.step_length.max():.3g} vs {clipped.step_length.max():.3g}", fontsize=9)
        plt.show()

    out = widgets.interactive_output(show, controls)
    items = list(controls.values())
    return widgets.VBox([widgets.HBox(items[:3]), widgets.HBox(items[3:]), out])


__all__ += ["cliff_explorer"]


def penalty_explorer(X: Tensor, y: Tensor, test: tuple[Tensor, Tensor]) -> widgets.Widget:
    """Penalty (L1 or L2) x strength x initial weight gain x epochs -> a deep tanh MLP trained with
    and without the penalty (``experiments.clipping_exp.penalty_run``, the chapter's setting
    otherwise): weight norm, first-over-last layer data-gradient ratio, and test accuracy."""
    from .experiments.clipping_exp import PENALTY, penalty_run
    from .plotting import plot_runs

    style = dict(continuous_update=False)
    controls = dict(
        kind=widgets.Dropdown(options=["L2", "L1"], value="L2", description="penalty"),
        strength=widgets.FloatLogSlider(0.1, base=10, min=-4, max=0.5, step=0.25, description="strength λ", **style),
        gain=widgets.FloatSlider(3.0, min=0.5, max=4.0, step=0.25, description="weight gain", **style),
        epochs=widgets.IntSlider(3, min=1, max=20, description="epochs", **style),
    )

    def show(kind: str, strength: float, gain: float, epochs: int) -> None:
        arm = f"{kind} {strength:.2g}"
        runs = {"no penalty": penalty_run(X, y, test, gain=gain, epochs=epochs, label="no penalty"),
                arm: penalty_run(X, y, test, gain=gain, epochs=epochs, label=arm, **{kind.lower(): strength})}
        steps = runs[arm].probe_steps
        fig, axes = new_axes(ncols=3, width=3.6, height=3.0)
        plot_runs(axes[0], {k: [r.weight_norm] for k, r in runs.items()}, "SGD step", "||W|| (all layers)",
                  logy=False, x=steps)
        plot_runs(axes[1], {k: [r.explosion] for k, r in runs.items()}, "SGD step",
                  r"$\|\partial C/\partial W_1\| / \|\partial C/\partial W_L\|$", x=steps)
        plot_runs(axes[2], {k: [r.test_acc] for k, r in runs.items()}, "SGD step", "test accuracy", logy=False,
                  x=steps)
        fig.suptitle(f"{PENALTY['depth']} tanh layers x {PENALTY['width']}, gain {gain:g}, lr {PENALTY['lr']}", fontsize=10)
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])


__all__ += ["penalty_explorer"]


def batchnorm_explorer(X: Tensor, y: Tensor, n_images: int = 500) -> widgets.Widget:
    """Weight scale alpha x normalisation x activation x depth -> the per-layer profile of
    ||de/dx_l|| at initialisation (survey eq. 51-52), on the first ``n_images`` rows of ``X``.

    Every hidden weight matrix is multiplied by alpha (LeCun-normal weights, He-normal for ReLU);
    solid lines: the chosen alpha, dashed: alpha = 1, each with and without the chosen
    normalisation. With batch norm the solid and dashed lines coincide whatever alpha (eq. 52).
    Float32; one update takes a fraction of a second.
    """
    import torch

    from .experiments.norm_exp import scaled_profiles

    Xs, ys = X[:n_images], y[:n_images]
    style = dict(continuous_update=False)
    controls = dict(
        alpha=widgets.FloatLogSlider(4.0, base=10, min=-1, max=1, step=0.05, description="weight scale α", **style),
        norm=widgets.Dropdown(options=["batch", "layer"], value="batch", description="normalisation"),
        activation=widgets.Dropdown(options=["sigmoid", "tanh", "relu"], value="sigmoid", description="activation"),
        depth=widgets.IntSlider(10, min=2, max=30, description="hidden layers", **style),
    )

    def show(alpha: float, norm: str, activation: str, depth: int) -> None:
        init = "he_normal" if activation == "relu" else "lecun_normal"
        profs = scaled_profiles(Xs, ys, [1.0, alpha], norms=(None, norm), depth=depth, activation=activation,
                                init=init, dtype=torch.float32)
        fig, ax = new_axes(width=6.4, height=3.6)
        for (nm, a), prof in profs.items():
            label = f"{'no norm' if nm == 'none' else nm + ' norm'}, α = {a:.2g}"
            ls = "--" if a == 1.0 and alpha != 1.0 else "-"
            ax.semilogy(range(1, depth + 1), prof.output_grad, ls, marker="o", ms=3, label=label,
                        color="#1f77b4" if nm == "none" else "#d62728", alpha=0.55 if ls == "--" else 1.0)
        ax.set(xlabel="hidden layer l (1 = nearest the input)", ylabel=r"$\|\partial e/\partial x_l\|$",
               title=f"{activation}, {depth} x 100: first/last layer ratio "
                     f"{profs[('none', float(alpha))].ratio():.2g} without, {profs[(norm, float(alpha))].ratio():.2g} with")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:]), out])


__all__ += ["batchnorm_explorer"]


def variance_profile_explorer(batch: int = 256, seed: int = 0) -> widgets.Widget:
    """Depth x width x activation x initialisation -> the per-layer variance profile at
    initialisation (survey eq. 30-31): E[y_l^2] of the pre-activations (left) and
    E[(de/dx_l)^2] of the back-propagated gradients (right), measured on one random net fed
    ``batch`` N(0, 1) inputs with an N(0, 1) gradient at the top (points), against the formula
    (lines; exact for linear and ReLU units, the linear-regime approximation otherwise)."""
    from .experiments.init_exp import INIT_ARMS, arm, layer_gains, measure_profile, predicted_profile
    import torch

    from .plotting import plot_variance_profile

    style = dict(continuous_update=False)
    controls = dict(
        depth=widgets.IntSlider(10, min=2, max=50, description="layers L", **style),
        width=widgets.IntSlider(256, min=16, max=512, step=16, description="width", **style),
        activation=widgets.Dropdown(options=["linear", "tanh", "relu", "leaky_relu", "sigmoid", "elu"], value="relu",
                                    description="activation"),
        init=widgets.Dropdown(options=list(INIT_ARMS), value="he_fan_in", description="init"),
    )

    def show(depth: int, width: int, activation: str, init: str) -> None:
        name, kw = arm(init)
        widths = [width] * (depth + 1)
        m = measure_profile(widths, name, activation, batch=batch, seeds=[seed], init_kwargs=kw, dtype=torch.float32)
        p = predicted_profile(widths, name, activation, input_sq=m.input_sq, top_sq=m.top_sq, init_kwargs=kw)
        g = layer_gains(m, p)
        fig, (ax1, ax2) = new_axes(ncols=2, width=4.6, height=3.4)
        layers = list(range(1, depth + 1))
        plot_variance_profile(ax1, {f"{init}, {activation}": (layers, m.forward, p.forward)}, "layer l",
                              r"$E[y_l^2]$ (pre-activations)",
                              title=f"forward: x{g['forward'].measured:.3g} per layer (eq. {g['forward'].predicted:.3g})")
        plot_variance_profile(ax2, {f"{init}, {activation}": (list(range(0, depth + 1)), m.backward, p.backward)},
                              "layer l (gradient de/dx_l)", r"$E[(\partial e/\partial x_l)^2]$",
                              title=f"backward: x{g['backward'].measured:.3g} per layer (eq. {g['backward'].predicted:.3g})")
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:]), out])


__all__ += ["variance_profile_explorer"]


def activation_explorer(x_range: tuple[float, float] = (-4.0, 4.0)) -> widgets.Widget:
    """Activation x its parameter (leaky slope, PReLU slope, ELU alpha, softplus / Swish beta) ->
    f and f' on ``x_range`` and the design-principle scores of chapter "nodes/02_activations"
    (``experiments.activations_exp.principle_scores``: saturation, mean derivative, monotonicity,
    kinks, ... under a unit-variance Gaussian input). Activations without a parameter grey the
    slider out; maxout is drawn with the chapter's three fixed pieces."""
    import torch

    from .experiments.activations_exp import (ACTIVATION_PARAMETERS, BOOK_KWARGS, format_scores, principle_scores,
                                              scalar_activation)

    style = dict(continuous_update=False)
    act_w = widgets.Dropdown(options=activation_names(), value="leaky_relu", description="activation")
    par_w = widgets.FloatSlider(0.01, min=0.0, max=0.5, step=0.01, description="negative_slope", **style)

    def retarget(change) -> None:
        spec = ACTIVATION_PARAMETERS.get(change["new"])
        with par_w.hold_trait_notifications():
            if spec:
                _, lo, hi, value = spec
                par_w.min, par_w.max, par_w.step, par_w.value = lo, hi, (hi - lo) / 100, value
            par_w.description = spec[0] if spec else "(no parameter)"
            par_w.disabled = spec is None

    act_w.observe(retarget, names="value")

    def show(activation: str, parameter: float) -> None:
        spec = ACTIVATION_PARAMETERS.get(activation)
        kw = {spec[0]: min(max(parameter, spec[1]), spec[2])} if spec else {}
        try:
            opts = {**BOOK_KWARGS.get(activation, {}), **kw}
            x = torch.linspace(*x_range, 801, dtype=torch.float64)
            f, d = scalar_activation(activation, **opts)(x)
            scores = principle_scores(activation, **kw)
        except ValueError as err:  # e.g. a parameter outside the activation's domain
            print(err)
            return
        fig, ax = new_axes(width=6, height=3.2)
        ax.plot(x, f, label="f(x)", color="#1f77b4")
        ax.plot(x, d, "--", label="f'(x)", color="#d62728")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="x", ylabel="f(x), f'(x)", title=f"{activation} {kw or ''}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        plt.show()
        print(format_scores([scores]))

    out = widgets.interactive_output(show, dict(activation=act_w, parameter=par_w))
    return widgets.VBox([widgets.HBox([act_w, par_w]), out])


__all__ += ["activation_explorer"]


def shortcut_profile_explorer(X: Tensor, y: Tensor, n_images: int = 128) -> widgets.Widget:
    """Depth x shortcut x setting -> the per-unit profile of ||de/dx_l|| at initialisation
    (survey eq. 66; chapter "structure/03_shortcuts"), on the first ``n_images`` rows of (X, y).

    Shortcuts: ``plain`` (none), the six of ``models.residual.SHORTCUTS`` on original units, and
    ``pre-activation`` (identity shortcut, He et al. 2016b). Settings: ``shortcuts_exp.SETTINGS``.
    The dashed line is the identity shortcut in the same setting. Float64; one update takes well
    under a second for 50 units.
    """
    from .experiments.shortcuts_exp import SETTINGS, init_profiles
    from .models.residual import SHORTCUTS

    Xs, ys = X[:n_images], y[:n_images]
    style = dict(continuous_update=False)
    controls = dict(
        depth=widgets.IntSlider(16, min=2, max=50, description="units", **style),
        shortcut=widgets.Dropdown(options=["plain", *SHORTCUTS, "pre-activation"], value="identity",
                                  description="shortcut"),
        setting=widgets.Dropdown(options=list(SETTINGS), value="he2016", description="setting"),
    )

    def show(depth: int, shortcut: str, setting: str) -> None:
        arm = shortcut if shortcut in ("plain", "pre-activation") else "residual"
        sc = shortcut if arm == "residual" else "identity"
        prof = init_profiles(Xs, ys, [depth], arms=[arm], setting=setting, shortcut=sc)[(arm, depth)]
        ref = init_profiles(Xs, ys, [depth], arms=["residual"], setting=setting)[("residual", depth)]
        fig, ax = new_axes(width=6.4, height=3.6)
        units = range(1, depth + 1)
        ax.semilogy(units, ref.output_grad, "--", color="#7f7f7f", label="identity (reference)")
        ax.semilogy(units, prof.output_grad, "o-", ms=3, color="#d62728", label=shortcut)
        ax.set(xlabel="unit l (1 = nearest the input)", ylabel=r"$\|\partial e/\partial x_l\|$",
               title=f"{setting}: first/last unit ratio {prof.ratio():.2g} (identity {ref.ratio():.2g})")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])


def lesion_explorer(accuracies: dict, baseline: dict, chance: float | None = None) -> widgets.Widget:
    """Net x deleted unit -> test accuracy, from precomputed lesion accuracies (chapter
    "structure/04_unraveled"; ``shortcuts_exp.lesion_accuracies``): ``accuracies[net]`` is the
    accuracy with unit i deleted, ``baseline[net]`` without deletion. Nothing is recomputed."""
    from .plotting import plot_lesions

    names = list(accuracies)
    net_w = widgets.Dropdown(options=names, value=names[0], description="net")
    unit_w = widgets.IntSlider(1, min=1, max=len(accuracies[names[0]]), description="delete unit",
                               continuous_update=False)

    def sync(change) -> None:
        unit_w.max = len(accuracies[change["new"]])

    net_w.observe(sync, names="value")

    def show(net: str, unit: int) -> None:
        i = min(unit, len(accuracies[net])) - 1
        acc, base = float(accuracies[net][i]), float(baseline[net])
        fig, ax = new_axes(width=6.4, height=3.6)
        plot_lesions(ax, accuracies, baseline, chance=chance, highlight=(net, i),
                     title=f"{net}, unit {i + 1} deleted: accuracy {acc:.3f} (whole net {base:.3f}, change {acc - base:+.3f})")
        plt.show()

    out = widgets.interactive_output(show, dict(net=net_w, unit=unit_w))
    return widgets.VBox([widgets.HBox([net_w, unit_w]), out])


__all__ += ["shortcut_profile_explorer", "lesion_explorer"]


def gate_gradient_explorer(hidden: int = 16, batch: int = 128) -> widgets.Widget:
    """Cell x T x gate bias -> gradient norms over the time steps at initialisation (survey eq. 59):
    ||de/dC_t|| with its forget and output terms for an LSTM, ||de/dh_t|| for every cell, and the
    vanilla RNN of the same size as the reference (``gates_exp.time_gradients``; first-input
    batch, float64). The gate bias is the LSTM's forget-gate b_f or the GRU's update-gate b_z."""
    from .experiments.gates_exp import horizon_gate_bias, time_gradients
    from .plotting import plot_time_gradients

    style = dict(continuous_update=False)
    controls = dict(
        cell=widgets.Dropdown(options=["lstm", "peephole_lstm", "projection_lstm", "gru", "rnn"], value="lstm",
                              description="cell"),
        steps=widgets.IntSlider(50, min=5, max=200, step=5, description="T (steps)", **style),
        gate_bias=widgets.FloatSlider(1.0, min=-3.0, max=8.0, step=0.25, description="gate bias", **style),
    )

    def show(cell: str, steps: int, gate_bias: float) -> None:
        d = time_gradients(cell, steps, gate_bias, hidden, batch)
        names = {"c": r"$\|\partial e/\partial C_t\|$", "forget_term": "forget (stable) term",
                 "output_term": "output (dynamic) term", "h": rf"{cell}: $\|\partial e/\partial h_t\|$",
                 "rnn_h": r"RNN: $\|\partial e/\partial h_t\|$"}
        curves = {names[k]: v for k, v in d.items() if not (cell == "rnn" and k == "rnn_h")}
        fig, ax = new_axes(width=7, height=3.6)
        plot_time_gradients(ax, curves, styles={names["forget_term"]: "--", names["output_term"]: ":"})
        kept = {k: v[0] / v[-1] for k, v in d.items() if k in ("c", "h") and v[-1] > 0}
        ax.set_title(f"{cell}, T = {steps}, gate bias {gate_bias:g} (T-rule: {horizon_gate_bias(steps):.2f}); "
                     + ", ".join(f"first/last {k}: {v:.2g}" for k, v in kept.items()), fontsize=8)
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])


def highway_gradient_explorer(X: Tensor, y: Tensor, seeds: int = 3) -> widgets.Widget:
    """Depth x transform-gate bias x activation -> ||de/dx_l|| by layer at initialisation of the
    plain net (71 units) and the highway net (50 blocks) of Srivastava et al.'s Fig. 1, median and
    range over ``seeds`` nets (``gates_exp.init_gradients``)."""
    import numpy as np

    from .experiments.gates_exp import depth_scaled_gate_bias, init_gradients
    from .plotting import plot_bands

    style = dict(continuous_update=False)
    controls = dict(
        depth=widgets.IntSlider(50, min=3, max=150, description="layers", **style),
        gate_bias=widgets.FloatSlider(-2.0, min=-10.0, max=2.0, step=0.25, description="b_T", **style),
        activation=widgets.Dropdown(options=["relu", "tanh", "sigmoid", "elu"], value="relu", description="activation"),
    )

    def show(depth: int, gate_bias: float, activation: str) -> None:
        g = init_gradients(X, y, depth, gate_bias, activation, seeds=range(seeds))
        fig, ax = new_axes(width=7, height=3.6)
        plot_bands(ax, np.arange(1, depth), {f"plain ({activation})": g["plain"],
                                            f"highway, b_T = {gate_bias:g}": g["highway"]},
                   xlabel="hidden layer l (after the first)", ylabel=r"$\|\partial e/\partial x_l\|$")
        ax.set_title(f"depth-scaled b_T for {depth} layers: {depth_scaled_gate_bias(depth):.2f}", fontsize=9)
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])


__all__ += ["gate_gradient_explorer", "highway_gradient_explorer"]


def feedback_signal_explorer(X: Tensor, y: Tensor, seeds: int = 2) -> widgets.Widget:
    """Depth x width x activation x initialisation -> ||delta_l|| by hidden layer at initialisation
    under back-propagation, feedback alignment and direct feedback alignment, median and range over
    ``seeds`` nets (``feedback_exp.signal_profiles``; chapter ``future/03_without_backprop``)."""
    import numpy as np

    from .experiments.feedback_exp import signal_profiles
    from .plotting import plot_bands

    style = dict(continuous_update=False)
    controls = dict(
        depth=widgets.IntSlider(30, min=2, max=100, description="layers", **style),
        width=widgets.IntSlider(64, min=8, max=256, step=8, description="width", **style),
        activation=widgets.Dropdown(options=["tanh", "sigmoid", "relu"], value="tanh", description="activation"),
        init=widgets.Dropdown(options=["torch_default", "lecun_normal", "xavier_normal", "he_normal"],
                              value="torch_default", description="init"),
    )

    def show(depth: int, width: int, activation: str, init: str) -> None:
        init_name = None if init == "torch_default" else init  # None: torch's U[-1/sqrt(n), 1/sqrt(n)]
        prof = signal_profiles(X, y, depth, width, activation=activation, init=init_name, seeds=range(seeds))
        fig, ax = new_axes(width=7, height=3.6)
        plot_bands(ax, np.arange(1, depth + 1), {rule.upper(): v for rule, v in prof.items()},
                   xlabel="hidden layer l (1 = nearest the input)", ylabel=r"$\|\delta_l\| = \|\partial e/\partial a_l\|$")
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])


__all__ += ["feedback_signal_explorer"]


def diagnosis_explorer(n: int = 256) -> widgets.Widget:
    """Case x version (broken / repaired) -> ``diagnosis.diagnose`` of the closing chapter's models
    (``practice_exp.CASES``): the relative gradient and output RMS by layer, the gradient over
    time for the LSTM, and the text report naming what is wrong."""
    from .experiments.practice_exp import CASES, diagnose_case
    from .plotting import plot_diagnosis, plot_time_gradients

    controls = dict(case=widgets.Dropdown(options=[(c.title, k) for k, c in CASES.items()], description="model"),
                    version=widgets.ToggleButtons(options=["broken", "repaired"], description="version"))

    def show(case: str, version: str) -> None:
        d = diagnose_case(case, version, n=n)
        fig, axes = new_axes(ncols=3, width=4.0, height=3.2)
        plot_diagnosis(axes[0], axes[1], {version: d})
        if d.time_grad:
            plot_time_gradients(axes[2], {version: d.time_grad})
        else:
            axes[2].set_axis_off()
        plt.show()
        print(d.report())

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])


__all__ += ["diagnosis_explorer"]


def update_ratio_explorer(X: Tensor, y: Tensor, n_images: int = 256) -> widgets.Widget:
    """Optimizer x learning rate x depth x activation -> the first step's per-layer gradient norm
    ||g_l|| and update/weight ratio ||Δw_l||/||w_l|| of a deep MLP, next to SGD at its default
    rate (``optim_exp.first_step_profiles``; chapter ``future/02_optimizers``). One step: cheap."""
    import numpy as np

    from .experiments.optim_exp import ARMS, DEFAULT_LRS, first_step_profiles
    from .plotting import plot_series

    style = dict(continuous_update=False)
    controls = dict(
        optimizer=widgets.Dropdown(options=[a for a in ARMS if a != "sgd"] + ["nesterov"], value="adam",
                                   description="optimizer"),
        lr=widgets.FloatLogSlider(1e-3, base=10, min=-5, max=0, step=0.25, description="lr", **style),
        depth=widgets.IntSlider(6, min=2, max=20, description="layers", **style),
        activation=widgets.Dropdown(options=["sigmoid", "tanh", "relu"], value="sigmoid", description="activation"),
    )

    def show(optimizer: str, lr: float, depth: int, activation: str) -> None:
        profs = first_step_profiles(X[:n_images], y[:n_images], ["sgd", optimizer], depth=depth, activation=activation,
                                    lrs={optimizer: lr})
        labels = {"sgd": f"sgd, lr {DEFAULT_LRS['sgd']:g}", optimizer: f"{optimizer}, lr {lr:.2g}"}
        x = np.arange(1, depth + 2)
        fig, (a1, a2) = new_axes(ncols=2, width=4.6, height=3.4)
        plot_series(a1, x, {labels["sgd"]: profs["sgd"].grad_norm}, "layer l (1 = input side)",
                    r"$\|\partial e/\partial w_l\|$", title="gradient (the same for every optimizer)")
        plot_series(a2, x, {labels[k]: p.ratio for k, p in profs.items()}, "layer l (1 = input side)",
                    r"$\|\Delta w_l\| / \|w_l\|$", title="first step relative to the weights")
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:]), out])


__all__ += ["update_ratio_explorer"]


def recurrent_gradient_explorer(seeds: int = 3, batch: int = 64) -> widgets.Widget:
    """Cell x T x hidden size -> ||de/dh_t|| over the time steps at initialisation, median and range
    over ``seeds`` (``recurrent_exp.time_gradients``: first-input batch, float64), next to the
    vanilla RNN at torch's default scale (survey §3.1: norm-preserving recurrent matrices)."""
    import numpy as np

    from .experiments.recurrent_exp import CELL_ARMS, per_step_factor, time_gradients
    from .plotting import plot_bands

    style = dict(continuous_update=False)
    controls = dict(
        arm=widgets.Dropdown(options=list(CELL_ARMS), value="uRNN", description="cell"),
        steps=widgets.IntSlider(100, min=10, max=300, step=10, description="T (steps)", **style),
        hidden=widgets.IntSlider(32, min=4, max=128, step=4, description="hidden", **style),
    )

    def show(arm: str, steps: int, hidden: int) -> None:
        ref = "RNN (torch default)"
        runs = {a: time_gradients(a, steps, hidden, batch, range(seeds)) for a in dict.fromkeys([ref, arm])}
        fig, ax = new_axes(width=7, height=3.6)
        plot_bands(ax, range(1, steps + 1), runs, "time step t", r"$\|\partial e/\partial h_t\|$")
        ax.set_title("per-step factor (median over seeds): " + ", ".join(
            f"{a}: {np.median(per_step_factor(v)):.3f}" for a, v in runs.items()), fontsize=8)
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])


__all__ += ["recurrent_gradient_explorer"]


def transformer_gradient_explorer(seeds: int = 2) -> widgets.Widget:
    """Depth x weight -> ||dL/dW_l|| of that weight in each block at initialisation, post-LN against pre-LN,
    median and range over ``seeds`` (``transformer_exp.layer_gradients``; Xiong et al. 2020, Fig. 3)."""
    import numpy as np

    from .experiments.transformer_exp import WEIGHTS, layer_gradients
    from .plotting import plot_bands

    style = dict(continuous_update=False)
    controls = dict(depth=widgets.IntSlider(6, min=1, max=48, step=1, description="layers L", **style),
                    weight=widgets.Dropdown(options=list(WEIGHTS), value="ffn_w2", description="weight"))

    def show(depth: int, weight: str) -> None:
        runs = {p: np.stack([layer_gradients(depth, p, s, weight) for s in range(seeds)]) for p in ("post_ln", "pre_ln")}
        fig, ax = new_axes(width=7, height=3.6)
        plot_bands(ax, np.arange(1, depth + 1), runs, "block l (1 = nearest the input)", rf"$\|\partial L/\partial W_l\|$ ({weight})")
        ax.set_title("last / first block: " + ", ".join(f"{p} {np.median(v[:, -1] / v[:, 0]):.2f}" for p, v in runs.items()),
                     fontsize=8)
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])


def gan_gradient_explorer() -> widgets.Widget:
    """Discriminator training steps x seed -> D(G(z)) and G's gradient norm under each generator loss
    (``gan_exp.confidence_sweep``), drawn on the analytic |dl/da| curves (Goodfellow et al. 2014, §3)."""
    import numpy as np

    from .experiments.gan_exp import analytic_slopes, confidence_sweep
    from .plotting import color_for

    style = dict(continuous_update=False)
    controls = dict(d_steps=widgets.IntSlider(100, min=0, max=500, step=10, description="D steps", **style),
                    seed=widgets.IntSlider(1, min=0, max=9, description="seed", **style))

    def show(d_steps: int, seed: int) -> None:
        m = confidence_sweep(checkpoints=(d_steps,), seeds=(seed,))
        d = np.logspace(-5, -1e-5, 200)
        fig, (ax1, ax2) = new_axes(ncols=2, width=4.2, height=3.4)
        for name, slope in analytic_slopes(d).items():
            ax1.loglog(d, slope, color=color_for(name), label=name)
        ax1.axvline(m["d_fake"][0, 0], color="k", ls="--", lw=1, label="mean D(G(z)) now")
        ax1.set(xlabel="D(G(z))", ylabel=r"$|\partial l/\partial a|$")
        ax1.legend(fontsize=8)
        names = ["saturating", "non_saturating"]
        ax2.bar(names, [m[n][0, 0] for n in names], color=[color_for(n) for n in names])
        ax2.set(yscale="log", ylabel=r"$\|\partial l/\partial \theta_G\|$", title=f"after {d_steps} D steps")
        plt.show()

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])


__all__ += ["transformer_gradient_explorer", "gan_gradient_explorer"]
