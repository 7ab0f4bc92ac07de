"""Tests of ``experiments.effects_convergence`` (survey §1.4.2, eq. 26-29, Fig. 6-7).

Hand-written gradients of the one-unit net against autograd, the reconstruction of Fig. 7's start
points against the survey's stated constraint and numbers, the MNIST-regime drivers on tiny nets,
and clear errors for bad inputs.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from unstable_gradients.experiments import effects_convergence as ec
from unstable_gradients.plotting import plot_contour_steps, plot_surface3d


@pytest.fixture(scope="module")
def rec() -> ec.Reconstruction:
    return ec.reconstruct_start_points()


# --- the one-unit net of Fig. 6 ------------------------------------------------------------------


def _autograd(net: ec.OneUnitNet, b1: float, b2: float) -> tuple[float, float, float]:
    t1 = torch.tensor(b1, dtype=torch.float64, requires_grad=True)
    t2 = torch.tensor(b2, dtype=torch.float64, requires_grad=True)
    h = torch.tanh(net.w1 * net.x + t1)
    o = torch.tanh(net.w2 * h + t2)
    e = net.loss_scale * (o - net.y) ** 2
    e.backward()
    return float(e.detach()), float(t1.grad), float(t2.grad)


@pytest.mark.parametrize("w2", [0.5, 1.0, 2.0, -1.3], ids=lambda w: f"w2={w}")
@pytest.mark.parametrize("setting", [dict(), dict(loss_scale=0.5), dict(x=0.7, y=-0.2, w1=1.5)],
                         ids=["survey", "half-loss", "nonzero-sample"])
def test_grad_matches_autograd(w2, setting):
    net = ec.OneUnitNet(w2, **setting)
    rng = np.random.default_rng(0)
    for b1, b2 in rng.uniform(-2.5, 2.5, size=(20, 2)):
        e, g1, g2 = _autograd(net, b1, b2)
        ours1, ours2 = net.grad(b1, b2)
        assert float(net.loss(b1, b2)) == pytest.approx(e, abs=1e-15)
        assert float(ours1) == pytest.approx(g1, abs=1e-13)
        assert float(ours2) == pytest.approx(g2, abs=1e-13)


def test_grad_is_vectorised():
    net = ec.OneUnitNet(2.0)
    b1, b2 = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 4))
    g1, g2 = net.grad(b1, b2)
    assert g1.shape == g2.shape == (4, 5)
    assert g1[2, 3] == pytest.approx(float(net.grad(b1[2, 3], b2[2, 3])[0]))


def test_w1_has_no_effect_at_zero_input():
    a, b = ec.OneUnitNet(1.0, w1=1.0), ec.OneUnitNet(1.0, w1=-7.0)
    assert float(a.loss(0.3, -0.2)) == float(b.loss(0.3, -0.2))


def test_step_is_eq26_and_eq27_is_its_first_order():
    net = ec.OneUnitNet(1.0)
    s = net.step(0.4, 0.5, lr=0.5)
    g1, g2 = s.grad
    assert s.end == pytest.approx((0.4 - 0.5 * g1, 0.5 - 0.5 * g2))
    assert s.predicted_delta == pytest.approx(-0.5 * (g1**2 + g2**2))
    tiny = net.step(0.4, 0.5, lr=1e-6)
    assert tiny.delta == pytest.approx(tiny.predicted_delta, rel=1e-4)


def test_loss_changes_agree_with_steps(rec):
    d = ec.loss_changes(rec.o, rec.b1)
    assert d.shape == (3,)
    assert d == pytest.approx([rec.steps[k].delta for k in ec.FIG7_W2], abs=1e-12)


# --- the reconstruction of A, C, E -------------------------------------------------------------


def test_reconstruction_satisfies_the_survey_constraint(rec):
    g2 = [s.grad[1] for s in rec.steps.values()]
    assert max(g2) - min(g2) < 1e-12  # equal de/db2 at A, C, E
    assert len({round(p[0], 12) for p in rec.points.values()}) == 1  # shared b1
    losses = [s.loss_start for s in rec.steps.values()]
    assert max(losses) - min(losses) < 1e-12  # shared starting loss


def test_reconstruction_reproduces_the_loss_changes(rec):
    for k, paper in ec.FIG7_PAPER.items():
        assert rec.steps[k].delta == pytest.approx(paper, abs=0.005)  # rounds to the survey's two decimals
    assert rec.max_deviation < 0.005
    assert rec.steps["stable"].loss_end < 0.01  # D near the minimum 0


def test_reconstruction_shows_the_survey_qualitative_claims(rec):
    norms = [rec.steps[k].grad_norm for k in ("vanishing", "stable", "exploding")]
    assert norms == sorted(norms)  # |grad| at A < C < E
    s = rec.steps["exploding"]  # E -> F crosses the valley w2 tanh(b1) + b2 = 0
    pre = [2.0 * math.tanh(b1) + b2 for b1, b2 in (s.start, s.end)]
    assert pre[0] > 0 > pre[1]
    assert s.delta > 0


def test_reconstruction_table_is_rounded(rec):
    table = rec.table()
    assert "A (+0.357, +0.542)" in table and "-0.314" in table and "+0.19" in table


def test_solution_set_is_one_small_piece(rec):
    r = ec.agreement_region(0.01)
    assert r["pieces"] == 1
    assert r["o"][0] <= rec.o <= r["o"][1] + 0.003 and r["b1"][0] - 0.01 <= rec.b1 <= r["b1"][1] + 0.01
    assert r["o"][1] - r["o"][0] < 0.03 and r["b1"][1] - r["b1"][0] < 0.15


def test_half_squared_loss_cannot_give_the_survey_numbers():
    for w2, paper in zip(ec.FIG7_W2.values(), ec.FIG7_PAPER.values()):
        best, _ = ec.max_one_step_decrease(w2, loss_scale=0.5, n=201)
        assert best < 0.3  # the survey's decreases are 0.31 and 0.38
    assert ec.max_one_step_decrease(1.0, n=201)[0] > 0.38


def test_single_shared_point_misses():
    b2, d, dev = ec.same_point_fit(n=4001)
    assert d.shape == (3,) and 0.01 < dev < 0.02


def test_loss_grid_shape_and_valley():
    B1, B2, E = ec.loss_grid(2.0, n=11)
    assert B1.shape == B2.shape == E.shape == (11, 11)
    assert float(ec.OneUnitNet(2.0).loss(0.5, -2.0 * math.tanh(0.5))) == pytest.approx(0.0, abs=1e-15)


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: ec.OneUnitNet(float("nan")), "w2 must be a finite"),
    (lambda: ec.OneUnitNet(1.0, loss_scale=0.0), "loss_scale must be > 0"),
    (lambda: ec.OneUnitNet(1.0).step(0.0, 0.0, lr=0.0), "lr must be > 0"),
    (lambda: ec.OneUnitNet(1.0).step(float("inf"), 0.0), "b1 must be a finite"),
    (lambda: ec.start_point(1.0, 1.0, 0.0), r"o must lie in \(-1, 1\)"),
    (lambda: ec.loss_changes(np.array([0.5, 1.2]), 0.0), r"o must lie in \(-1, 1\)"),
    (lambda: ec.reconstruct_start_points(paper={"vanishing": -0.31}), "must name the same nets"),
    (lambda: ec.reconstruct_start_points(o_range=(0.5, 1.5)), "o_range"),
    (lambda: ec.agreement_region(0.0), "tolerance must be > 0"),
    (lambda: ec.loss_grid(1.0, n=1), "n must be >= 2"),
    (lambda: ec.regime_net("chaotic", 2, 4, 0), "unknown regime 'chaotic'; valid names: vanishing, stable"),
    (lambda: ec.regime_net({"gain": 2.0}, 2, 4, 0), "a regime is a dict with 'activation'"),
    (lambda: ec.regime_net({"activation": "tanh", "gain": -1.0}, 2, 4, 0), "gain must be > 0"),
    (lambda: ec.steps_to_loss(np.ones(5), 1.0, window=0), "window >= 1"),
    (lambda: ec.running_mean(np.ones(5), window=0), "window must be >= 1"),
], ids=["w2-nan", "loss-scale", "lr", "b1-inf", "o-range", "o-array", "paper-keys", "o_range", "tolerance",
        "grid-n", "regime-name", "regime-dict", "gain"] + ["steps-window", "running-window"])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_run_regime_needs_seeds(mnist_small):
    X, y = mnist_small
    with pytest.raises(ValueError, match="at least one seed"):
        ec.run_regime("stable", X, y, depth=2, width=8, epochs=1, lr=0.1, seeds=[])


# --- MNIST regimes (tiny nets) -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vanishing", "stable", "exploding"])
def test_regime_gain_sets_weight_std(name):
    net = ec.regime_net(name, depth=3, width=200, seed=0)
    w = net.linears[1].weight.detach()
    expected = ec.REGIMES[name]["gain"] / math.sqrt(200)
    assert float(w.std()) == pytest.approx(expected, rel=0.03)
    assert float(net.linears[1].bias.detach().abs().max()) == 0.0


def test_torch_default_regime_is_nn_linear_default():
    net = ec.regime_net("torch default", depth=2, width=50, seed=3)
    w, b = net.linears[1].weight.detach(), net.linears[1].bias.detach()
    bound = 1 / math.sqrt(50)
    assert float(w.abs().max()) <= bound and float(b.abs().max()) <= bound
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)  # U(-a, a): std a / sqrt(3)
    again = ec.regime_net("torch default", depth=2, width=50, seed=3)
    assert torch.equal(again.linears[1].weight, net.linears[1].weight)


def test_run_regime_shapes_and_ordering(mnist_small):
    X, y = mnist_small
    runs = {k: ec.run_regime(k, X[:400], y[:400], depth=4, width=16, epochs=2, lr=0.1, seeds=[0, 1],
                             test_data=(X[400:600], y[400:600]), record_grads_every=2)
            for k in ("vanishing", "stable", "exploding")}
    r = runs["stable"]
    assert r.loss.shape == (2, 8) and r.epoch_loss.shape == (2, 2) and r.test_acc.shape == (2,)
    assert r.weight_grad.shape == (2, 4, 5) and list(r.grad_steps) == [0, 2, 4, 6]
    assert r.total_grad_norm().shape == (2, 4) and r.diverged == [None, None]
    first = [np.median(runs[k].weight_grad[:, 0, 0]) for k in ("vanishing", "stable", "exploding")]
    assert first == sorted(first)  # survey eq. 28-29 at initialisation
    rows = ec.convergence_rows(runs, threshold=2.0, window=2)
    text = ec.format_convergence_rows(rows, threshold=2.0)
    assert all(k in text for k in runs) and "steps to loss < 2" in text


def test_lr_sweep_reuses_known_values_exactly(mnist_small):
    X, y = mnist_small
    X, y = X[:300], y[:300]
    run = ec.run_regime("stable", X, y, depth=3, width=12, epochs=2, lr=0.05, seeds=[0])
    fresh = ec.lr_sweep(["stable"], [0.05], X, y, depth=3, width=12, epochs=2)
    assert fresh[0, 0] == run.epoch_loss[0, 1]  # same seed, init and batches: identical
    reused = ec.lr_sweep(["stable"], [0.05], X, y, depth=3, width=12, epochs=2, known={("stable", 0.05): -1.0})
    assert reused[0, 0] == -1.0


def test_steps_to_loss_and_running_mean():
    loss = np.array([3.0, 2.0, 1.0, 0.5, 0.4])
    assert ec.steps_to_loss(loss, 1.5, window=2) == 3  # means 2.5, 1.5, 0.75, ...: 1.5 is not < 1.5
    assert ec.steps_to_loss(loss, 0.1, window=2) is None
    assert ec.steps_to_loss(loss, 5.0, window=10) is None
    rm = ec.running_mean(loss, window=2)
    assert rm.shape == (1, 5) and rm[0] == pytest.approx([3.0, 2.5, 1.5, 0.75, 0.45])


# --- plotting and widget -----------------------------------------------------------------------


def test_plot_helpers_return_figures(rec):
    B1, B2, E = ec.loss_grid(1.0, n=21)
    s = rec.steps["stable"]
    fig = plt.figure()
    assert plot_surface3d(fig.add_subplot(1, 2, 1, projection="3d"), B1, B2, E,
                          {"C": (*s.start, s.loss_start), "D": (*s.end, s.loss_end)}) is fig
    assert plot_contour_steps(fig.add_subplot(1, 2, 2), B1, B2, E, [(s.start, s.end, "C", "D")]) is fig
    plt.close(fig)


def test_convergence_widget_builds():
    from unstable_gradients.widgets import convergence_step_explorer

    w = convergence_step_explorer(grid_n=21)
    assert len(w.children) == 3
    plt.close("all")
