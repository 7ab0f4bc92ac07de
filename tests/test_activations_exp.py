"""Tests of ``experiments.activations_exp`` (survey §2.2.2; seed 004 §5.2-5.4).

The 1-D views of every activation against the package's modules and autograd, the measured
design-principle scores against values known in closed form, the zig-zag unit's hand-written
gradient against autograd and the sign property it illustrates, the dead-unit definition against
the gradient it implies, the Keras-style MSE loss against autograd, and the drivers on tiny runs.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from unstable_gradients.activations import activation_names, get_activation
from unstable_gradients.experiments import activations_exp as ax
from unstable_gradients.models import MLP
from unstable_gradients.plotting import plot_activation_grid, plot_grouped_bars, plot_paths_on_contour

NAMES = activation_names()
PHI = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))  # noqa: E731  standard normal CDF


@pytest.fixture(scope="module")
def scores() -> dict[str, ax.PrincipleScores]:
    return {n: ax.principle_scores(n) for n in NAMES}


# --- the zoo as 1-D functions ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in NAMES if n != "maxout"])
def test_scalar_activation_matches_module(name):
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    f, d = ax.scalar_activation(name, **ax.BOOK_KWARGS.get(name, {}))(x)
    act = get_activation(name, **ax.BOOK_KWARGS.get(name, {}))
    torch.testing.assert_close(f, act(x).detach())
    torch.testing.assert_close(d, act.derivative(x))


def test_maxout_view_is_max_of_pieces_and_derivative_matches_autograd():
    x = torch.linspace(-4, 4, 801, dtype=torch.float64, requires_grad=True)
    f, d = ax.scalar_activation("maxout")(x.detach())
    pieces = torch.stack([v * x + c for v, c in ax.MAXOUT_PIECES], 1)
    ref = pieces.max(1).values
    torch.testing.assert_close(f, ref.detach())
    (g,) = torch.autograd.grad(ref.sum(), x)
    top2 = pieces.detach().topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-9          # at a tie (a kink) the conventions may differ
    assert clear.sum() >= 798
    torch.testing.assert_close(d[clear], g[clear])


def test_maxout_view_rejects_inconsistent_k():
    with pytest.raises(ValueError, match="pieces"):
        ax.scalar_activation("maxout", k=2)


def test_activation_curves_cover_the_zoo():
    curves = ax.activation_curves(n=101)
    assert list(curves) == NAMES
    for x, f, d in curves.values():
        assert x.shape == f.shape == d.shape == (101,)
        assert np.isfinite(f).all() and np.isfinite(d).all()


# --- design-principle scores ----------------------------------------------------------------------


def test_scores_known_values(scores):
    s = scores
    assert s["sigmoid"].slope_at_0 == pytest.approx(0.25, abs=1e-6)
    assert s["sigmoid"].mean_output == pytest.approx(0.5, abs=1e-9)            # by symmetry
    assert s["tanh"].mean_output == pytest.approx(0.0, abs=1e-12)
    assert s["relu"].saturated == pytest.approx(0.5, abs=1e-4)
    assert s["relu"].zero_grad == pytest.approx(0.5, abs=1e-4)
    assert s["relu"].zero_output == pytest.approx(0.5, abs=1e-4)
    assert s["relu"].rms_derivative == pytest.approx(math.sqrt(0.5), abs=1e-4)
    assert s["relu"].mean_output == pytest.approx(1 / math.sqrt(2 * math.pi), abs=1e-4)  # E max(0, x)
    assert s["leaky_relu"].zero_grad == 0 and s["leaky_relu"].saturated == pytest.approx(0.5, abs=1e-4)
    assert s["hardtanh"].saturated == pytest.approx(2 * (1 - PHI(1)), abs=1e-4)
    # sigmoid' < 0.05 exactly where |x| > x0 with s(1-s) = 0.05
    x0 = math.log((1 + math.sqrt(0.8)) / (1 - math.sqrt(0.8)))
    assert s["sigmoid"].saturated == pytest.approx(2 * (1 - PHI(x0)), abs=1e-4)
    assert s["sigmoid"].saturated_wide == pytest.approx(2 * (1 - PHI(x0 / 3)), abs=1e-4)
    assert s["linear"].near_identity == pytest.approx(1.0)
    assert s["bent_identity"].mean_derivative == pytest.approx(1.0, abs=1e-6)  # f' - 1 is odd


def test_scores_shape_checks(scores):
    s = scores
    assert not s["step"].continuous and s["step"].kinks == 1 and s["step"].saturated == 1
    assert all(s[n].continuous for n in NAMES if n != "step")
    assert s["relu"].kinks == s["leaky_relu"].kinks == s["prelu"].kinks == 1
    assert s["hardtanh"].kinks == 2 and s["maxout"].kinks == len(ax.MAXOUT_PIECES) - 1
    assert s["elu"].kinks == 0                         # alpha = 1: f' is continuous at 0
    assert ax.principle_scores("elu", alpha=2.0).kinks == 1
    for n in ("sigmoid", "tanh", "softplus", "swish", "arctan", "softsign", "bent_identity"):
        assert s[n].kinks == 0, n
    assert not s["swish"].monotone and not s["maxout"].monotone
    assert all(s[n].monotone for n in NAMES if n not in ("swish", "maxout"))
    assert s["prelu"].parameters == 1 and s["relu"].parameters == 0
    assert s["maxout"].extra_weights


def test_scores_match_monte_carlo():
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in ("tanh", "elu", "swish"):
        d = get_activation(name).derivative(z)
        sc = ax.principle_scores(name)
        assert sc.mean_derivative == pytest.approx(float(d.mean()), abs=3e-3)
        assert sc.saturated == pytest.approx(float((d.abs() < 0.05).double().mean()), abs=2e-3)


def test_principle_scores_needs_odd_grid():
    with pytest.raises(ValueError, match="odd"):
        ax.principle_scores("relu", n=1000)


def test_format_scores_has_no_negative_zero(scores):
    text = ax.format_scores(list(scores.values()))
    assert "-0.000" not in text
    assert len(text.splitlines()) == len(NAMES) + 1


def test_time_activation_is_positive():
    assert 0 < ax.time_activation("relu", n=20_000, repeats=2) < 1e6
    assert 0 < ax.time_activation("maxout", n=20_000, repeats=2) < 1e6


# --- zig-zag (seed 004 eq. 5.5-5.6, Fig. 5.4) ------------------------------------------------------


def test_unit_gradient_matches_autograd():
    a = ax.zigzag_data("sigmoid", n=50)
    t = 1 / (1 + np.exp(-(a @ np.array([1.5, -1.5]))))
    w = np.array([0.3, -0.2])
    e, g = ax.unit_loss_grad(w, a, t)
    wt = torch.tensor(w, requires_grad=True)
    o = torch.sigmoid(torch.from_numpy(a) @ wt)
    et = 0.5 * ((o - torch.from_numpy(t)) ** 2).mean()
    et.backward()
    assert e == pytest.approx(float(et.detach()))
    np.testing.assert_allclose(g, wt.grad.numpy(), rtol=1e-12)


def test_zigzag_data():
    s, c = ax.zigzag_data("sigmoid"), ax.zigzag_data("centred")
    assert (s > 0).all() and np.allclose(c, s - 0.5)
    with pytest.raises(ValueError, match="inputs"):
        ax.zigzag_data("relu")


def test_zigzag_signs_and_convergence():
    sig = ax.zigzag("sigmoid", lr=20, steps=300)
    cen = ax.zigzag("centred", lr=20, steps=300)
    assert sig.opposite_sign == 0.0                   # positive inputs: both weights always move together
    assert 0.3 < cen.opposite_sign < 0.7
    for p in (sig, cen):
        assert p.steps_to_target is not None
        np.testing.assert_allclose(p.w[-1], ax.ZIGZAG["w_star"], atol=1e-3)
        assert p.loss[-1] < p.loss[0]
    assert sig.path_ratio > 2 * cen.path_ratio        # the staircase is longer
    assert sig.w.shape == (301, 2)


def test_zigzag_largest_learning_rate_differs():
    sweep = ax.steps_to_target_sweep([160.0], steps=1000)
    assert sweep["sigmoid"] == [None] and sweep["centred"][0] is not None


def test_zigzag_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ax.zigzag(lr=0)
    with pytest.raises(ValueError):
        ax.zigzag(batch_size=10_000)


def test_zigzag_loss_grid_minimum_at_target():
    W0, W1, E = ax.zigzag_loss_grid(num=61, w0_lim=(0.0, 3.0), w1_lim=(-3.0, 0.0))
    i = np.unravel_index(E.argmin(), E.shape)
    assert W0[i] == pytest.approx(1.5, abs=0.06) and W1[i] == pytest.approx(-1.5, abs=0.06)


# --- dead units -------------------------------------------------------------------------------------


def _net_with_a_dead_unit(activation: str) -> MLP:
    net = MLP([5, 4, 3], activation=activation, init="xavier_uniform", seed=0)
    with torch.no_grad():
        net.linears[0].bias[2] = -100.0                # unit 2 of layer 1: pre-activation < 0 everywhere
    return net


def test_inactive_units_and_the_gradient_they_get():
    X = torch.rand(64, 5)
    y = torch.randint(0, 3, (64,))
    for activation, dead in (("relu", True), ("leaky_relu", False)):
        net = _net_with_a_dead_unit(activation)
        masks = ax.inactive_units(net, X, batch_size=10)      # batching must not change the answer
        assert masks[0].tolist() == [False, False, True, False]
        torch.nn.functional.cross_entropy(net(X), y).backward()
        g = net.linears[0].weight.grad[2]
        assert bool(g.abs().max() == 0) is dead                  # ReLU: no gradient at all; leaky: some


def test_inactive_units_rejects_normalised_nets():
    with pytest.raises(ValueError, match="normalisation"):
        ax.inactive_units(MLP([5, 4, 3], norm="batch"), torch.rand(8, 5))


def test_dead_unit_run_tiny(mnist_small):
    X, y = mnist_small
    r = ax.dead_unit_run("relu", 1e-2, X[:300], y[:300], (X[300:400], y[300:400]), sizes=(784, 16, 16, 10),
                         epochs=1, batch_size=50, seeds=(0, 1), record_every=2)
    assert r.inactive.shape == (2, len(r.steps), 2) and r.steps[0] == 0 and list(r.steps[1:3]) == [2, 4]
    assert ((0 <= r.inactive) & (r.inactive <= 1)).all()
    assert r.revived.shape == (2, 2) and r.test_acc.shape == (2,) and r.final().shape == (2,)


def test_prelu_run_tiny(mnist_small):
    X, y = mnist_small
    test = (X[300:400], y[300:400])
    cw = ax.prelu_run(X[:300], y[:300], test, depth=2, width=8, epochs=1, batch_size=50, seeds=(0,), record_every=2)
    assert cw.final.shape == (1, 2, 8) and cw.mean_slope.shape == (1, len(cw.steps), 2)
    assert cw.mean_slope[0, 0].tolist() == [0.25, 0.25] and cw.layer_means().shape == (1, 2)
    sh = ax.prelu_run(X[:300], y[:300], test, depth=2, width=8, channelwise=False, epochs=1, batch_size=50,
                      seeds=(0,), record_every=2)
    assert sh.final.shape == (1, 2, 1)


# --- the Keras experiment ------------------------------------------------------------------------


def test_mse_softmax_value_and_gradient():
    o = torch.randn(7, 10, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 10, (7,))
    e = ax.MSE_SOFTMAX(o, y)
    p = torch.softmax(o, 1).detach()
    ref = ((p - torch.nn.functional.one_hot(y, 10)) ** 2).mean()   # Keras: mean over batch and classes
    assert float(e.detach()) == pytest.approx(float(ref))
    (g,) = torch.autograd.grad(e, o)
    torch.testing.assert_close(ax.MSE_SOFTMAX.grad(o.detach(), y), g)


def test_textbook_mlp_inits():
    net = ax.textbook_mlp("sigmoid", seed=3)
    assert [l.out_features for l in net.linears] == [512, 256, 128, 64, 10]
    for lin in net.linears:
        bound = math.sqrt(6 / (lin.in_features + lin.out_features))
        assert float(lin.weight.detach().abs().max()) <= bound and float(lin.bias.detach().abs().max()) == 0.0
    tn = ax.textbook_mlp("relu", init="torch_default", seed=3)
    assert float(tn.linears[0].bias.detach().abs().max()) > 0
    assert float(tn.linears[0].weight.detach().abs().max()) <= 1 / math.sqrt(784)
    again = ax.textbook_mlp("relu", init="torch_default", seed=3)
    torch.testing.assert_close(tn.linears[2].weight, again.linears[2].weight)


def test_run_arm_tiny_and_roundtrip(mnist_small):
    X, y = mnist_small
    r = ax.run_arm("relu", "mse", X[:512], y[:512], (X[512:612], y[512:612]), epochs=2, seeds=(0, 1),
                   record_grads_every=1, n_eval=100)
    assert r.label == "relu, MSE" and r.loss == "mse_softmax"
    for key in ("epoch_loss", "train_loss", "train_acc", "test_loss", "test_acc"):
        assert getattr(r, key).shape == (2, 2), key
    assert r.grad_norms.shape == (2, 5, 4) and r.initial_loss.shape == (2,)
    assert (ax.relative_decrease(r) < 1).all()
    back = ax.ArmRuns.from_dict(r.as_dict())
    np.testing.assert_array_equal(back.test_acc, r.test_acc)
    assert back.seeds == [0, 1]
    with pytest.raises(ValueError, match="loss"):
        ax.run_arm("relu", "hinge", X[:10], y[:10], (X[:10], y[:10]), epochs=1)


def _fake_arm(activation: str, epoch_loss, test_acc) -> ax.ArmRuns:
    el, ta = np.asarray(epoch_loss, float), np.asarray(test_acc, float)
    return ax.ArmRuns(activation, "cross_entropy", "xavier_uniform", "adam", 1e-3, [0, 1], np.full(2, 2.3), el, el,
                      ta, el, ta, np.arange(1), np.zeros((2, 5, 1)), 0.0)


def test_claim_helpers():
    runs = {"sigmoid": _fake_arm("sigmoid", [[2.0, 1.0, 0.1], [2.0, 1.5, 0.9]], [[0.5, 0.6, 0.9], [0.5, 0.6, 0.7]]),
            "relu": _fake_arm("relu", [[1.0, 0.5, 0.2], [1.0, 0.5, 0.2]], [[0.8, 0.9, 0.8], [0.8, 0.9, 0.95]])}
    assert ax.epochs_above_all(runs, "sigmoid").tolist() == [2, 3]
    assert ax.fraction_below(runs["sigmoid"], runs["relu"]) == pytest.approx(5 / 6)
    np.testing.assert_allclose(ax.relative_decrease(runs["relu"]), 1 - 0.2 / 2.3)
    assert len(ax.format_arms(runs).splitlines()) == 3


# --- plotting helpers -------------------------------------------------------------------------------


def test_plot_helpers_return_figures():
    fig = plot_activation_grid(ax.activation_curves(["relu", "tanh", "maxout"], n=51), ncols=2)
    assert len([a for a in fig.axes if a.get_visible()]) == 3
    plt.close(fig)
    fig, a = plt.subplots()
    W0, W1, E = ax.zigzag_loss_grid(num=21)
    assert plot_paths_on_contour(a, W0, W1, E, {"sigmoid": ax.zigzag(steps=5).w}, target=(1.5, -1.5)) is fig
    plt.close(fig)
    fig, a = plt.subplots()
    assert plot_grouped_bars(a, ["x", "y"], {"train": [np.ones(3), np.ones(1)], "test": np.zeros((2, 3))}, "acc") is fig
    with pytest.raises(ValueError, match="entries"):
        plot_grouped_bars(a, ["x"], {"train": np.ones((2, 3))}, "acc")
    plt.close(fig)


def test_activation_explorer_builds_and_switches():
    from unstable_gradients.widgets import activation_explorer

    w = activation_explorer()
    act_w, par_w = w.children[0].children
    for name in ("softplus", "relu", "prelu", "swish"):
        act_w.value = name
        spec = ax.ACTIVATION_PARAMETERS.get(name)
        assert par_w.disabled is (spec is None)
        if spec:
            assert (par_w.min, par_w.max, par_w.value) == pytest.approx(spec[1:])
    plt.close("all")


def test_save_and_load_runs(tmp_path):
    arm = _fake_arm("relu", [[1.0, 0.5, 0.2], [1.0, 0.5, 0.2]], [[0.8, 0.9, 0.8], [0.8, 0.9, 0.95]])
    path = tmp_path / "runs.json"
    ax.save_runs(str(path), {arm.label: arm}, dict(seed=0, epochs=3))
    cfg, runs = ax.load_runs(str(path))
    assert cfg == dict(seed=0, epochs=3) and list(runs) == ["relu, CE"]
    np.testing.assert_allclose(runs["relu, CE"].test_acc, arm.test_acc)
    assert runs["relu, CE"].label == arm.label and runs["relu, CE"].seeds == [0, 1]


def test_labels_and_paper_arms():
    arm = _fake_arm("sigmoid", [[1.0]], [[0.5]])
    assert arm.label == "sigmoid, CE"
    arm.init = "torch_default"
    assert arm.label == "sigmoid, CE, torch init"
    assert len({(a, l, i) for a, l, i in ax.PAPER_ARMS}) == len(ax.PAPER_ARMS) == 8
