"""Experiments of survey §2.2.3 (``experiments.norm_exp``): the algebra, the deep-net profiles,
Ioffe & Szegedy's Fig. 1 driver and the learning-rate sweep, on tiny inputs."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from unstable_gradients.experiments import norm_exp as ne
from unstable_gradients.plotting import plot_lr_range, plot_percentile_bands

# --- 1. the algebra of eq. 50-52 -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_invariances_hold_to_rounding(seed):
    rows = ne.invariance_checks([0.01, 0.3, 4.0, 100.0], seed=seed)
    assert [r.alpha for r in rows] == [0.01, 0.3, 4.0, 100.0]
    for r in rows:
        assert r.worst() < 1e-13, r
    assert rows[2].bitwise  # a power of two scales exactly
    text = ne.format_invariance_rows(rows, bound=1e-13)
    assert "(!)" not in text and text.count("< 1e-13") == 4 * 4 + 2


def test_invariance_check_detects_a_broken_identity(monkeypatch):
    """With eps > 0 sneaked into the 'exact' BN, small alphas must show up as deviations."""
    real = ne._bn
    monkeypatch.setattr(ne, "_bn", lambda w, u, g, b, bias=None, eps=0.0: real(w, u, g, b, bias, eps=1e-3))
    rows = ne.invariance_checks([0.01])
    assert rows[0].forward > 1e-3 and rows[0].jac_input > 1e-3
    assert "(!)" in ne.format_invariance_rows(rows, bound=1e-13)


def test_eps_breaks_the_invariance_only_for_tiny_weights():
    rows = ne.eps_deviation([1e-3, 1e-2, 0.1, 1.0, 10.0], eps=1e-5)
    alphas, var, dev = map(np.array, zip(*rows))
    assert dev[3] == 0.0  # alpha = 1 is the reference itself
    assert np.all(np.diff(dev[:4]) < 0)  # the smaller the weights, the larger the deviation
    assert dev[0] > 0.5 and dev[2] < 1e-3 and dev[4] < 1e-5
    np.testing.assert_allclose(var / var[3], alphas**2, rtol=1e-12)
    # first order: z changes by about z * eps / (2 Var) for alpha^2 Var >> eps
    assert dev[2] < 10 * 1e-5 / (2 * var[2])


def test_normalisation_axes():
    rows = {r["name"]: r for r in ne.normalisation_axes()}
    assert set(rows) == {"batch (dense)", "batch (conv)", "recurrent batch", "batch, shared t", "layer"}
    for name, r in rows.items():
        if name == "batch, shared t":
            assert r["max_mean"] > 0.5 and r["max_var_dev"] > 0.5  # one set of statistics for a drifting sequence
        else:
            assert r["max_mean"] < 1e-12 and r["max_var_dev"] < 1e-12, name
    assert rows["batch (conv)"]["statistics"] == 6 and rows["recurrent batch"]["statistics"] == 24
    assert rows["layer"]["statistics"] == 64
    table = ne.format_axes_rows(list(rows.values()))
    assert table.count("yes") == 4 and "no: per-step" in table


# --- 2. eq. 51-52 through a deep net ---------------------------------------------------------------


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_scaled_profiles_bn_is_independent_of_the_weight_scale(activation):
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 20, generator=g), torch.randint(0, 3, (64,), generator=g)
    profs = ne.scaled_profiles(X, y, [1.0, 3.0], depth=4, width=16, activation=activation)
    assert set(profs) == {("none", 1.0), ("none", 3.0), ("batch", 1.0), ("batch", 3.0)}
    a, b = profs[("batch", 1.0)], profs[("batch", 3.0)]
    np.testing.assert_allclose(b.output_grad, a.output_grad, rtol=1e-3)  # eq. 52 (up to BN's eps)
    np.testing.assert_allclose(3.0 * np.array(b.weight_grad[:-1]), a.weight_grad[:-1], rtol=1e-3)  # 1/alpha rule
    assert b.loss == pytest.approx(a.loss, rel=1e-5)
    plain = profs[("none", 3.0)].ratio() / profs[("none", 1.0)].ratio()
    assert plain > 3.0  # without BN the scale compounds over the layers (survey eq. 24)


# --- 3. Fig. 1 ----------------------------------------------------------------------------------------


def test_fig1_net_follows_the_paper():
    plain, bn = ne.fig1_net(None, seed=3), ne.fig1_net("batch", seed=3)
    assert plain.sizes == bn.sizes == [784, 100, 100, 100, 10]
    assert all(lin.bias is not None for lin in plain.linears) and len(plain.norms) == 0
    assert all(lin.bias is None for lin in bn.linears[:-1]) and len(bn.norms) == 3
    for a, b in zip(plain.linears, bn.linears):  # same seed, same weights in both arms
        assert torch.equal(a.weight, b.weight)
    assert plain.linears[0].weight.std().item() == pytest.approx(ne.FIG1["init_std"], rel=0.02)


def test_binary_mnist(mnist_small):
    X, y = ne.load_binary_mnist("train", subset=1000)
    assert set(X.unique().tolist()) == {0.0, 1.0} and torch.equal(y, mnist_small[1])
    assert torch.equal(X, (mnist_small[0] >= 0.5).float())


def test_sigmoid_inputs_leave_the_running_statistics_alone():
    net = ne.fig1_net("batch", seed=0)
    x = (torch.rand(50, 784) > 0.8).float()
    before = [n.running_mean.clone() for n in net.norms]
    z = ne._sigmoid_inputs(net, x)
    assert z.shape == (50, 100)
    assert all(torch.equal(a, n.running_mean) for a, n in zip(before, net.norms))
    # training-mode statistics of the probe: gamma = 1, beta = 0 at the start, so mean 0, variance 1
    torch.testing.assert_close(z.mean(0), torch.zeros(100), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(100), atol=1e-3, rtol=0)


@pytest.fixture(scope="module")
def tiny_runs():
    X, y = ne.load_binary_mnist("train", subset=600)  # 10 steps of 60
    Xt, yt = ne.load_binary_mnist("test", subset=200)
    return {(n or "none", 0.5): [ne.run_fig1(X, y, Xt, yt, n, seed=s, epochs=1, every=5, early=(2,), probe=100)
                                 for s in (0, 1)] for n in (None, "batch")}


def test_run_fig1_records_checkpoints(tiny_runs):
    for (norm, _), runs in tiny_runs.items():
        for r in runs:
            assert r.norm == norm and r.steps == [0, 2, 5, 10] and len(r.loss) == 10 and r.diverged is None
            assert r.percentiles.shape == (4, 100, 3) and r.weight_norms.shape == (4, 3)
            assert np.all(np.diff(r.percentiles, axis=2) >= 0)  # 15th <= 50th <= 85th
            assert all(0.0 <= a <= 1.0 for a in r.test_acc)
    bn0 = tiny_runs[("batch", 0.5)][0].percentiles[0]
    assert np.abs(bn0[:, 1]).max() < 0.5 and np.all((bn0[:, 2] - bn0[:, 0] > 1.0) & (bn0[:, 2] - bn0[:, 0] < 3.0))
    # same seed -> same initial weights in both arms
    np.testing.assert_allclose(tiny_runs[("none", 0.5)][0].weight_norms[0], tiny_runs[("batch", 0.5)][0].weight_norms[0])
    table = ne.format_fig1_rows(tiny_runs, at=(2, 5), drift_from=5)
    assert table.count("\n") == 2 and "BN, η = 0.5" in table and "no BN, η = 0.5" in table
    np.testing.assert_array_equal(ne.accuracy_at(tiny_runs[("none", 0.5)], -1),
                                  [r.test_acc[-1] for r in tiny_runs[("none", 0.5)]])


@pytest.mark.parametrize("norm", [None, "batch"])
def test_run_fig1_trains_exactly_like_train(norm):
    """The lean loop of run_fig1 is training.train's: same batches, same updates, same losses."""
    from unstable_gradients.training import train

    X, y = ne.load_binary_mnist("train", subset=300)
    Xt, yt = ne.load_binary_mnist("test", subset=100)
    run = ne.run_fig1(X, y, Xt, yt, norm, seed=5, epochs=2, lr=0.5, every=3, probe=50)
    ref = train(ne.fig1_net(norm, 5), X, y, epochs=2, batch_size=60, lr=0.5, seed=5, eval_every_epoch=False,
                progress=False)
    assert run.loss == ref.loss and len(run.loss) == 10


def test_distribution_drift_and_weight_growth():
    run = ne.Fig1Run(norm="none", seed=0, lr=1.0, steps=[0, 10, 20])
    # one unit: median 0 -> 1 -> 3, width 2 -> 2 -> 4
    run.percentiles = np.array([[[-1.0, 0.0, 1.0]], [[0.0, 1.0, 2.0]], [[1.0, 3.0, 5.0]]])
    run.weight_norms = np.array([[1.0, 2.0], [1.5, 2.0], [2.0, 3.0]])
    d = ne.distribution_drift(run)
    np.testing.assert_allclose(d["median_travel"], [3.0 / (8.0 / 3.0)])
    np.testing.assert_allclose(d["width_ratio"], [2.0])
    late = ne.distribution_drift(run, from_step=10)
    np.testing.assert_allclose(late["median_travel"], [2.0 / 3.0])
    np.testing.assert_allclose(ne.weight_growth(run), [2.0, 1.5])
    assert ne.arm_label("batch", 2.0) == "BN, η = 2" and ne.arm_label(None, 0.5) == "no BN, η = 0.5"


# --- 4. the learning-rate sweep --------------------------------------------------------------------


def test_lr_range_records_losses_and_divergence():
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(200, 20, generator=g), torch.randint(0, 4, (200,), generator=g)
    nets = {"relu": dict(depth=6, width=16, activation="relu", init="normal", init_kwargs=dict(std=1.0))}
    res = ne.lr_range(X, y, nets, lrs=[1e-3, 1e3], steps=10, batch_size=20, tail=5)
    assert res.norms == ["none", "batch"] and res.steps == 10
    plain = ("relu", "none")
    assert math.isfinite(res.loss[plain][0]) and res.diverged_at[plain][0] == -1
    assert math.isnan(res.loss[plain][1]) and 0 <= res.diverged_at[plain][1] < 10  # std 1 (He: 0.35) and eta 1000 overflow
    assert ne.trainable_range(res, plain, threshold=res.loss[plain][0] + 1.0) == (1e-3, 1e-3)
    assert ne.trainable_range(res, plain, threshold=0.0) is None
    with pytest.raises(ValueError, match="need 2000 images"):
        ne.lr_range(X, y, nets, lrs=[0.1], steps=100, batch_size=20)


# --- plotting and widget -----------------------------------------------------------------------------


def test_plot_helpers():
    fig, (ax1, ax2) = plt.subplots(1, 2)
    p = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.5, 2.0]])
    assert plot_percentile_bands(ax1, [0, 10], p, "arm") is fig
    with pytest.raises(ValueError, match="shape"):
        plot_percentile_bands(ax1, [0, 10, 20], p, "arm")
    out = plot_lr_range(ax2, [0.1, 1.0, 10.0], {"a": [0.5, 0.3, np.nan], "b": [2.3, 2.3, 2.3]},
                        {"a": [-1, -1, 4], "b": [-1, -1, -1]}, chance=math.log(10), threshold=1.0)
    assert out is fig and ax2.get_xscale() == "log"
    assert any(line.get_label() == "a: diverged" for line in ax2.lines)
    plt.close(fig)


def test_batchnorm_explorer_builds(mnist_small):
    from unstable_gradients.widgets import batchnorm_explorer

    w = batchnorm_explorer(*mnist_small, n_images=100)
    assert len(w.children) == 3
    plt.close("all")
