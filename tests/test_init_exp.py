"""Tests of ``experiments.init_exp`` (survey §2.2.1, eq. 30-41; Glorot & Bengio 2010; He et al. 2015).

The predicted profiles against the closed forms written out by hand (eq. 32, 35, 38-41); the
measured profiles against the predictions on small nets (tolerances from the sampling error),
and against a naive per-example computation; the per-layer statistics against autograd; the
side-by-side trainer against ``training.train``; the helpers' edge cases and error messages.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import unstable_gradients as ug
from unstable_gradients.experiments import init_exp as ie
from unstable_gradients.plotting import plot_layer_histograms, plot_variance_profile

# --- formulas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("act,expected", [("linear", (1.0, 1.0)), ("relu", (0.5, 0.5)), ("tanh", (1.0, 1.0)),
                                          ("leaky_relu", ((1 + 0.01**2) / 2,) * 2)], ids=str)
def test_activation_factors(act, expected):
    assert ie.activation_factors(act) == pytest.approx(expected, rel=1e-12)


def test_activation_factors_leaky_slope_and_linear_regime():
    assert ie.activation_factors("leaky_relu", negative_slope=0.5) == pytest.approx((0.625, 0.625))
    assert ie.activation_factors("sigmoid") == pytest.approx((1 / 16, 1 / 16))  # sigmoid'(0)^2


def test_arm_registry_and_error():
    assert ie.arm("he_fan_out") == ("he_normal", {"mode": "fan_out"})
    ie.arm("he_fan_out")[1]["mode"] = "changed"  # a copy: the registry is not modified
    assert ie.INIT_ARMS["he_fan_out"][1]["mode"] == "fan_out"
    with pytest.raises(ValueError, match="valid names: .*he_fan_in"):
        ie.arm("kaiming")


def test_weight_variances_match_init_formulas():
    widths = [30, 50, 20]
    np.testing.assert_allclose(ie.weight_variances(widths, "xavier_uniform"), [2 / 80, 2 / 70], rtol=1e-12)
    np.testing.assert_allclose(ie.weight_variances(widths, "he_normal", mode="fan_out"), [2 / 50, 2 / 20], rtol=1e-12)
    np.testing.assert_allclose(ie.weight_variances(widths, "standard_uniform"), [1 / 90, 1 / 150], rtol=1e-12)
    with pytest.raises(ValueError, match="two layer sizes"):
        ie.weight_variances([5], "xavier_uniform")


def test_predicted_standard_init_is_eq32():
    L, n = 6, 40
    p = ie.predicted_profile([n] * (L + 1), "standard_uniform", "linear")
    third = 1 / 3
    np.testing.assert_allclose(p.forward, [third**l for l in range(1, L + 1)], rtol=1e-12)  # eq. 30
    np.testing.assert_allclose(p.backward, [third ** (L - l) for l in range(L + 1)], rtol=1e-12)  # eq. 31
    np.testing.assert_allclose(p.weight_grad, np.full(L, third ** (L - 1)), rtol=1e-12)  # eq. 32: equal in every layer


def test_predicted_xavier_compromise_eq35():
    widths = [100, 300, 100]
    p = ie.predicted_profile(widths, "xavier_uniform", "linear")
    assert p.forward[1] / p.forward[0] == pytest.approx(2 * 300 / 400)  # 2 n_{l-1} / (n_{l-1} + n_l)
    assert p.backward[1] / p.backward[2] == pytest.approx(2 * 100 / 400)  # 2 n_l / (n_{l-1} + n_l)


def test_predicted_he_relu_eq38_to_41():
    widths = [16, 32, 64, 128, 256]
    fan_in = ie.predicted_profile(widths, "he_normal", "relu", init_kwargs=dict(mode="fan_in"))
    np.testing.assert_allclose(fan_in.forward, np.full(4, 2.0), rtol=1e-12)  # eq. 38; layer 1 sees an unrectified input
    assert fan_in.backward[0] / fan_in.backward[-1] == pytest.approx(widths[-1] / widths[0])  # eq. 41 telescopes
    # eq. 41, weight gradient: (1/4) (n_L / n_l) Var[y_1] Var[de/dx_L] for l >= 2
    np.testing.assert_allclose(fan_in.weight_grad[1:], [0.25 * widths[-1] / widths[l] * 2.0 for l in range(2, 5)], rtol=1e-12)
    fan_out = ie.predicted_profile(widths, "he_normal", "relu", init_kwargs=dict(mode="fan_out"))
    np.testing.assert_allclose(fan_out.backward, np.ones(5), rtol=1e-12)  # eq. 39


# --- measured profiles ---------------------------------------------------------------------------


def _gain(measured, direction):
    return ie.layer_gains(measured)[direction]


@pytest.mark.parametrize("init,act,expected", [("standard_uniform", "linear", 1 / 3), ("xavier_uniform", "linear", 1.0),
                                               ("lecun_normal", "linear", 1.0), ("he_normal", "relu", 1.0)],
                         ids=["standard-linear", "xavier-linear", "lecun-linear", "he-relu"])
def test_measured_gains_match_formula(init, act, expected):
    m = ie.measure_profile([96] * 7, init, act, batch=192, seeds=4)
    for direction in ("forward", "backward"):
        g = _gain(m, direction)
        assert g.predicted == pytest.approx(expected, rel=1e-12)
        # the standard error is printed by layer_gains; 6 of them is a failure rate far below 1e-6
        assert abs(g.measured / g.predicted - 1) < max(6 * g.rel_se, 0.01), (direction, g)


def test_orthogonal_linear_net_preserves_every_norm_exactly():
    m = ie.measure_profile([64] * 6, "orthogonal", "linear", batch=32, seeds=2)
    g = ie.layer_gains(m)
    assert g["forward"].measured == pytest.approx(1.0, abs=1e-12)
    assert g["forward"].rel_se < 1e-12


def test_measure_profile_against_naive_computation():
    """Moments of one small float64 net, recomputed by hand with explicit loops over layers."""
    widths, batch = [5, 7, 4], 11
    m = ie.measure_profile(widths, "xavier_normal", "tanh", batch=batch, seeds=[3])
    gen = torch.Generator().manual_seed(3)
    Ws = [ug.init.xavier_normal_(torch.empty(o, i, dtype=torch.float64), generator=gen) for i, o in zip(widths[:-1], widths[1:])]
    x0 = torch.randn(batch, widths[0], generator=gen, dtype=torch.float64)
    G = torch.randn(batch, widths[-1], generator=gen, dtype=torch.float64)
    ys, xs = [], [x0]
    for W in Ws:
        ys.append(xs[-1] @ W.T)
        xs.append(torch.tanh(ys[-1]))
    gx = [None] * 3
    gx[2] = G
    gW = [None] * 2
    for l in (1, 0):
        gy = gx[l + 1] * (1 - torch.tanh(ys[l]) ** 2)
        gW[l] = gy.T @ xs[l]
        gx[l] = gy @ Ws[l]
    np.testing.assert_allclose(m.forward, [float((y**2).mean()) for y in ys], rtol=1e-12)
    np.testing.assert_allclose(m.backward, [float((g**2).mean()) for g in gx], rtol=1e-12)
    np.testing.assert_allclose(m.weight_grad, [float((g**2).mean()) / batch for g in gW], rtol=1e-12)
    assert m.input_sq == pytest.approx(float((x0**2).mean())) and m.top_sq == pytest.approx(float((G**2).mean()))


def test_compare_profile_starts_from_measured_moments():
    m, p = ie.compare_profile([32, 32, 32], "he_fan_out", "relu", seeds=2, batch=16)
    assert p.input_sq == m.input_sq and p.top_sq == m.top_sq
    assert p.backward[-1] == pytest.approx(m.top_sq)


def test_measure_profile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        ie.measure_profile([4, 4], "lecun_normal", seeds=[])
    with pytest.raises(ValueError, match="initializer"):
        ie.measure_profile([4, 4], "glorot")


def test_layer_gains_on_exact_geometric_profile():
    prof = ie.predicted_profile([10] * 5, "standard_uniform", "linear")
    prof.per_seed = {"forward": prof.forward[None, :].repeat(3, 0), "backward": prof.backward[None, :].repeat(3, 0)}
    g = ie.layer_gains(prof)
    assert g["forward"].measured == pytest.approx(1 / 3) and g["backward"].measured == pytest.approx(1 / 3)
    assert g["forward"].rel_se == pytest.approx(0, abs=1e-12) and g["forward"].count == 9
    text = ie.format_gain_rows({"exact": g})
    assert "0.3333" in text and "exact" in text


def test_weight_grad_vs_depth_eq32():
    sweep = ie.weight_grad_vs_depth([1, 2, 4, 6], width=64, seeds=4, batch=128)
    ours, eq = sweep.factor_per_layer()
    assert eq == pytest.approx(1 / 3, rel=1e-9)
    assert ours == pytest.approx(1 / 3, rel=0.05)
    assert np.isnan(sweep.measured[0, :, 1:]).all() and sweep.layer_mean().shape == (4,)


# --- Glorot & Bengio statistics --------------------------------------------------------------------


def test_glorot_layer_stats_against_autograd(mnist_small):
    X, y = mnist_small[0][:64], mnist_small[1][:64]
    net = ug.deep_mlp(3, 20, activation="tanh", init="standard_uniform", seed=1).double()
    st = ie.glorot_layer_stats(net, X, y)
    assert len(st.activations) == len(st.backprop) == len(st.weight_grad) == 3
    # independent recomputation: pre-activations as leaves of a hand-written forward pass
    x = X.double()
    pres = []
    for lin in net.linears[:-1]:
        s = (x @ lin.weight.detach().T + lin.bias.detach()).requires_grad_(True)
        pres.append(s)
        x = torch.tanh(s)
    out = x @ net.linears[-1].weight.detach().T + net.linears[-1].bias.detach()
    loss = torch.nn.functional.cross_entropy(out, y)
    grads = torch.autograd.grad(loss, pres)
    for l in range(3):
        np.testing.assert_allclose(st.backprop[l], grads[l].numpy().ravel(), rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(st.activations[l], torch.tanh(pres[l]).detach().numpy().ravel(), rtol=1e-12)
    assert st.loss == pytest.approx(float(loss.detach()))
    assert st.std("backprop").shape == (3,)
    # hooks were removed: the net runs as before
    assert torch.allclose(net(X.double()), out.detach())


def test_glorot_layer_stats_needs_an_mlp(mnist_small):
    with pytest.raises(TypeError, match="MLP"):
        ie.glorot_layer_stats(torch.nn.Linear(784, 10), *mnist_small)


def test_histograms_are_densities_on_shared_bins():
    rng = np.random.default_rng(0)
    centres, dens = ie.histograms([rng.normal(size=1000), 3 * rng.normal(size=1000)], bins=51, limit=5.0)
    assert centres.shape == (51,) and dens.shape == (2, 51)
    width = centres[1] - centres[0]
    np.testing.assert_allclose(dens.sum(1) * width, 1.0, rtol=1e-9)
    assert dens[0].max() > dens[1].max()  # the narrower distribution peaks higher


# --- He et al. deep ReLU nets ----------------------------------------------------------------------


def test_relu_net_shape_and_init():
    net = ie.relu_net(5, "he_fan_in", width=200, seed=0)
    assert net.sizes == [784, 200, 200, 200, 200, 10] and net.config["activation"] == "relu"
    assert float(net.linears[2].weight.detach().std()) == pytest.approx(math.sqrt(2 / 200), rel=0.03)
    assert float(net.linears[2].bias.detach().abs().max()) == 0.0
    with pytest.raises(ValueError, match="layers must be >= 2"):
        ie.relu_net(1, "he_fan_in")


@pytest.mark.parametrize("layers", [4, 7])
def test_homogeneity_ratio_is_two_to_minus_half_L(layers):
    ours, eq = ie.homogeneity_ratio(layers, width=32)
    assert eq == pytest.approx(2 ** (-layers / 2), rel=1e-12)
    assert ours == pytest.approx(eq, rel=1e-5)  # weights drawn in float32


def test_homogeneity_ratio_on_real_inputs(mnist_small):
    ours, eq = ie.homogeneity_ratio(5, "lecun", inputs=mnist_small[0][:50], width=30)
    assert eq == pytest.approx(2 ** (-5 / 2), rel=1e-12)  # He's "Xavier" N(0, 1/n_in) is 1/sqrt(2) of He in every layer
    assert ours == pytest.approx(eq, rel=1e-5)


def test_init_grad_norms(mnist_small):
    g = ie.init_grad_norms(6, "xavier_normal", *[t[:100] for t in mnist_small], width=30)
    h = ie.init_grad_norms(6, "he_fan_in", *[t[:100] for t in mnist_small], width=30)
    assert g["weight_grad"].shape == (6,)
    assert g["logit_std"] < h["logit_std"]


def _train_reference(net, X, y, seed, lr, epochs, batch_size):
    res = ug.train(net, X, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer="momentum", seed=seed,
                   progress=False, eval_every_epoch=False)
    return np.array(res.loss)


def test_side_by_side_equals_train(mnist_small):
    X, y = mnist_small[0][:240].double(), mnist_small[1][:240]
    plan = [(0, 0.01), (1, 0.05), (0, 0.002)]
    nets = [ie.relu_net(4, "he_fan_in", 16, s, dtype=torch.float64) for s, _ in plan]
    res = ie.train_side_by_side(nets, X, y, [s for s, _ in plan], lrs=[lr for _, lr in plan], epochs=2, batch_size=50,
                                test_data=(X[:30], y[:30]))
    assert res.loss.shape == (3, 10) and (res.diverged == -1).all()
    for i, (s, lr) in enumerate(plan):
        ref = _train_reference(ie.relu_net(4, "he_fan_in", 16, s, dtype=torch.float64), X, y, s, lr, 2, 50)
        np.testing.assert_allclose(res.loss[i], ref, rtol=1e-10)
    assert np.all((res.test_acc >= 0) & (res.test_acc <= 1))
    # the nets handed in are not modified
    assert torch.equal(nets[0].linears[0].weight, ie.relu_net(4, "he_fan_in", 16, 0, dtype=torch.float64).linears[0].weight)


def test_side_by_side_divergence_is_isolated(mnist_small):
    X, y = mnist_small[0][:200].double(), mnist_small[1][:200]
    nets = [ie.relu_net(3, "he_fan_in", 16, 0, dtype=torch.float64) for _ in range(2)]
    with torch.no_grad():
        nets[1].linears[0].weight.mul_(1e200)  # the second net's loss overflows at once
    res = ie.train_side_by_side(nets, X, y, [0, 0], lrs=[0.01, 0.01], epochs=1, batch_size=50, test_data=(X, y))
    with pytest.warns(RuntimeWarning, match="diverged"):  # training.train stops at the same step
        alone = ug.train(nets[1], X, y, epochs=1, batch_size=50, lr=0.01, optimizer="momentum", seed=0, progress=False,
                         eval_every_epoch=False)
    assert res.diverged.tolist() == [-1, alone.diverged.step]
    assert np.isnan(res.loss[1, alone.diverged.step:]).all() and np.isnan(res.test_acc[1])
    np.testing.assert_allclose(res.loss[1, : alone.diverged.step], alone.loss, rtol=1e-10)
    ref = _train_reference(ie.relu_net(3, "he_fan_in", 16, 0, dtype=torch.float64), X, y, 0, 0.01, 1, 50)
    np.testing.assert_allclose(res.loss[0], ref, rtol=1e-10)


def test_side_by_side_rejects_mixed_nets(mnist_small):
    X, y = mnist_small
    nets = [ie.relu_net(3, "he_fan_in", 16, 0), ie.relu_net(4, "he_fan_in", 16, 0)]
    with pytest.raises(ValueError, match="one shape"):
        ie.train_side_by_side(nets, X[:10], y[:10], [0, 1], lrs=[0.1, 0.1])
    with pytest.raises(ValueError, match="one seed and one learning rate"):
        ie.train_side_by_side(nets[:1], X[:10], y[:10], [0, 1], lrs=[0.1])


def test_train_relu_groups_arms_and_seeds(mnist_small):
    X, y = mnist_small[0][:200], mnist_small[1][:200]
    runs = ie.train_relu(3, [("xavier_normal", 0.01), ("he_fan_in", 0.02)], X, y, seeds=[0, 1], width=16, epochs=2,
                         batch_size=50, test_data=(X[:50], y[:50]))
    assert list(runs) == [("xavier_normal", 0.01), ("he_fan_in", 0.02)]
    r = runs["he_fan_in", 0.02]
    assert r.loss.shape == (2, 8) and r.final_loss.shape == (2,) and r.lr == 0.02 and r.layers == 3
    ref = _train_reference(ie.relu_net(3, "he_fan_in", 16, 1), X, y, 1, 0.02, 2, 50)
    np.testing.assert_allclose(r.loss[1], ref, rtol=1e-4)  # float32: batched and single matmuls round differently


def test_running_mean_and_steps_to_loss():
    np.testing.assert_allclose(ie.running_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1, 2, 4, 6])
    loss = np.array([[3.0, 3.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0, 3.0], [3.0, 1.0, np.nan, np.nan, np.nan]])
    assert ie.steps_to_loss(loss, 2.0, window=2) == [3, None, None]


# --- plotting and widget ---------------------------------------------------------------------------


def test_plot_helpers_return_the_figure():
    fig, (a1, a2) = plt.subplots(1, 2)
    assert plot_variance_profile(a1, {"x": ([1, 2, 3], [1, 0.3, 0.1], [1, 1 / 3, 1 / 9])}, "layer", "var") is fig
    assert a1.get_yscale() == "log"
    centres, dens = ie.histograms([np.zeros(10) + 0.1, np.ones(10)], bins=5, limit=1.0)
    assert plot_layer_histograms(a2, centres, dens, "value") is fig
    assert [t.get_text() for t in a2.get_legend().get_texts()] == ["layer 1", "layer 2"]
    plt.close(fig)


def test_variance_profile_explorer_builds():
    from unstable_gradients.widgets import variance_profile_explorer

    box = variance_profile_explorer(batch=32)
    assert len(box.children) == 3  # two rows of controls and the output
    plt.close("all")
