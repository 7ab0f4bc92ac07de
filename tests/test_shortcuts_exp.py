"""Experiment drivers of survey §2.3.2 (chapters structure/03_shortcuts and structure/04_unraveled)."""
from __future__ import annotations

import itertools
import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from unstable_gradients.experiments import shortcuts_exp as se  # noqa: E402
from unstable_gradients.models.residual import SHORTCUTS, path_counts  # noqa: E402
from unstable_gradients.norm import BatchNorm  # noqa: E402
from unstable_gradients.training import evaluate  # noqa: E402

DT = torch.float64


@pytest.fixture(scope="module")
def batch(mnist_small):
    X, y = mnist_small
    return X[:64], y[:64]


# ---------------------------------------------------------------- nets and settings

@pytest.mark.parametrize("setting", list(se.SETTINGS), ids=list(se.SETTINGS))
@pytest.mark.parametrize("arm", list(se.ARMS), ids=list(se.ARMS))
def test_make_net_is_seeded_and_follows_setting(arm, setting):
    a, b = (se.make_net(arm, depth=2, width=8, setting=setting, seed=3) for _ in range(2))
    for (n1, p1), (_, p2) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=0, msg=n1)
    has_bn = any(isinstance(m, BatchNorm) for m in a.modules())
    assert has_bn == (se.SETTINGS[setting]["norm"] == "batch")
    assert a.plain == (arm == "plain")


def test_make_net_rejects_unknown_names():
    with pytest.raises(ValueError, match="he2016"):
        se.make_net(setting="nope")
    with pytest.raises(ValueError, match="plain"):
        se.make_net(arm="nope")


@pytest.mark.parametrize("training", [True, False], ids=["train_mode", "eval_mode"])
def test_fast_batchnorm_computes_the_same_function_and_gradient(training):
    ref = se.make_net("residual", depth=2, width=8, seed=0).double()
    with torch.no_grad():  # non-trivial gamma, beta and running statistics
        for m in ref.modules():
            if isinstance(m, BatchNorm):
                m.gamma.uniform_(0.5, 1.5)
                m.beta.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    fast = se.make_net("residual", depth=2, width=8, seed=0).double()
    fast.load_state_dict(ref.state_dict())
    se.fast_batchnorm(fast)
    assert not any(isinstance(m, BatchNorm) for m in fast.modules())
    x = torch.randn(16, 784, dtype=DT)
    ref.train(training), fast.train(training)
    out_r, out_f = ref(x), fast(x)
    torch.testing.assert_close(out_f, out_r)
    out_r.square().sum().backward()
    out_f.square().sum().backward()
    torch.testing.assert_close(fast.stem.weight.grad, ref.stem.weight.grad)
    if training:  # running statistics updated the same way (torch and Ioffe & Szegedy, Alg. 1-2)
        torch.testing.assert_close(fast.stem_norm.running_var, ref.stem_norm.running_var)


# ---------------------------------------------------------------- 03: equations and counts

def test_unit_jacobians_match_eq66_and_he2016b_eq5():
    check = se.unit_jacobian_check(width=5, depth=4, seed=1)
    assert check["eq66"] < 1e-12 and check["he2016b_eq5"] < 1e-12


def test_dense_connection_table_is_m_m_plus_1_over_2():
    for r in se.dense_connection_table(ms=range(1, 8), in_features=5, growth_rate=3):
        assert r["connections"] == r["formula"] == r["m"] * (r["m"] + 1) // 2
        assert r["inputs"] == list(range(1, r["m"] + 1))
        assert r["out_features"] == 5 + 3 * r["m"]


def test_parameter_table_counts_the_shortcuts():
    width, depth = 8, 3
    rows = {r["arm"]: r for r in se.parameter_table(width=width, depth=depth)}
    assert set(rows) == {"plain", *SHORTCUTS}
    base = rows["plain"]["params"]
    for name in ("identity", "constant_scaling", "dropout"):
        assert rows[name]["params"] == base and rows[name]["shortcut_params"] == 0
    for name in ("exclusive_gating", "shortcut_only_gating"):  # W_g and b_g per unit
        assert rows[name]["shortcut_params"] == depth * (width * width + width)
    assert rows["conv1x1"]["shortcut_params"] == depth * width * width
    assert rows["plain"]["weight_layers"] == 2 * depth + 2


# ---------------------------------------------------------------- 03: gradients at initialisation

def test_init_profiles_and_ratios(batch):
    X, y = batch
    profs = se.init_profiles(X, y, [3, 6], setting="default_init", width=16)
    assert set(profs) == {(a, d) for a in se.ARMS for d in (3, 6)}
    assert all(len(p.output_grad) == d for (_, d), p in profs.items())
    ratios = se.profile_ratios(profs)
    # default init: the plain net's gradient vanishes towards the input, the residual net's does not
    assert ratios["plain"][6] < ratios["plain"][3] < 0.1
    assert ratios["residual"][6] > 0.3


def test_branch_gain_predicts_the_per_unit_factor(batch):
    X, y = batch
    g = se.branch_gain(X, y, "default_init", width=32, depth=6)
    assert 0 < g < 0.1  # two ReLU layers with Var(w) = 1/(3n): about (1/6)^2
    prof = se.init_profiles(X, y, [6], arms=["plain"], setting="default_init", width=32)[("plain", 6)]
    per_unit = prof.ratio() ** (1 / 5)
    assert per_unit == pytest.approx(math.sqrt(g), rel=0.5)


# ---------------------------------------------------------------- 03: training

def test_train_arm_is_deterministic_and_reports_errors(mnist_small):
    X, y = mnist_small[0][:200], mnist_small[1][:200]
    kw = dict(arm="residual", depth=2, seeds=[0, 1], width=16, epochs=1, batch_size=50, test_data=(X[:50], y[:50]))
    a, b = se.train_arm(X, y, **kw), se.train_arm(X, y, **kw)
    np.testing.assert_array_equal(a.train_error, b.train_error)
    assert a.loss.shape == (2, 4) and a.diverged == 0 and len(a.nets) == 2
    assert np.all((a.train_error >= 0) & (a.train_error <= 1)) and np.isfinite(a.test_error).all()
    assert a.config["depth"] == 2 and a.median() == pytest.approx(float(np.median(a.train_error)))


def test_train_arm_counts_divergence(mnist_small):
    X, y = mnist_small[0][:200], mnist_small[1][:200]
    runs = se.train_arm(X, y, arm="residual", depth=12, seeds=[0], width=16, setting="he_init", lr=10.0,
                        epochs=1, batch_size=50)
    assert runs.diverged == 1 and np.isnan(runs.train_error).all() and np.isnan(runs.median())


def test_sweeps_and_tables(mnist_small):
    X, y = mnist_small[0][:100], mnist_small[1][:100]
    runs = se.depth_sweep(X, y, [1, 2], seeds=[0, 1], width=8, epochs=1, batch_size=50)
    assert set(runs) == {(a, d) for a in ("plain", "residual") for d in (1, 2)}
    assert se.error_matrix(runs, "plain", [1, 2]).shape == (2, 2)
    text = se.format_runs(runs, label="arm, units")
    assert len(text.splitlines()) == 5 and "residual, 2" in text


def test_gate_means_and_error_without_units(batch):
    X, y = batch
    net = se.make_net("residual", depth=3, width=8, shortcut="exclusive_gating", seed=0)
    g = se.gate_means(net, X)
    assert g.shape == (3,) and np.allclose(g, 1 / (1 + math.exp(6)), atol=0.01)  # b_g = -6 at init
    with pytest.raises(ValueError, match="gated"):
        se.gate_means(se.make_net("residual", depth=2, width=8), X)
    full, bare = se.error_without_units(net, X, y)
    assert 0 <= full <= 1 and 0 <= bare <= 1
    assert not any(b.lesioned for b in net.blocks)


# ---------------------------------------------------------------- 04: paths

@pytest.mark.parametrize("arm", ["residual", "pre-activation"])
def test_path_gradients_sum_to_the_full_gradient(arm, batch):
    """The backward pass through n units expands into 2^n paths (Veit et al. 2016, eq. 3-4): the
    gradients of all paths, as vectors, add up to the gradient of the whole net (naive reference)."""
    X, y = batch
    net = se.make_net(arm, depth=3, width=8, seed=0).double().eval()
    with torch.no_grad():
        x0 = net.stem_act(net.stem_norm(net.stem(X.double())))
    total = torch.zeros_like(x0)
    for k in range(4):
        for branch in itertools.combinations(range(3), k):
            x = x0.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(se._path_logits(net, x, set(branch)), y)
            total += torch.autograd.grad(loss, x)[0]
    x = x0.clone().requires_grad_(True)
    out = x
    for b in net.blocks:
        out = b(out)
    full = torch.autograd.grad(torch.nn.functional.cross_entropy(net.head(net.final_act(net.final_norm(out))), y), x)[0]
    torch.testing.assert_close(total, full)


def test_path_gradients_counts_and_totals(batch):
    X, y = batch
    net = se.make_net("residual", depth=4, width=8, seed=0)
    net.train()
    pg = se.path_gradients(net, X, y, samples=3, seed=0)
    assert net.training  # mode restored
    assert pg.counts.tolist() == path_counts(4) and pg.lengths.tolist() == list(range(5))
    assert [len(s) for s in pg.per_path_samples] == [1, 3, 3, 3, 1]
    np.testing.assert_allclose(pg.total, pg.counts * pg.per_path)
    assert pg.share().sum() == pytest.approx(1.0) and pg.count_share().sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="identity"):
        se.path_gradients(se.make_net("plain", depth=2, width=8), X, y)
    with pytest.raises(ValueError, match="identity"):
        se.path_gradients(se.make_net("residual", depth=2, width=8, shortcut="conv1x1"), X, y)


def test_effective_range():
    assert se.effective_range([0, 1, 8, 1, 0], 0.8) == (2, 2)
    assert se.effective_range([0, 1, 8, 1, 0], 0.9) == (1, 2)  # ties: the lowest start
    assert se.effective_range([1, 1, 1, 1], 1.0) == (0, 3)
    counts = path_counts(54)
    lo, hi = se.effective_range(counts, 0.9)
    assert sum(counts[lo:hi + 1]) >= 0.9 * 2**54 and sum(counts[lo + 1:hi + 1]) < 0.9 * 2**54
    for bad in ([], [-1, 2], [0, 0]):
        with pytest.raises(ValueError):
            se.effective_range(bad, 0.9)


# ---------------------------------------------------------------- 04: lesions

def test_lesion_accuracies_and_random_lesions(batch):
    X, y = batch
    net = se.make_net("residual", depth=4, width=8, seed=0)
    base, accs = se.lesion_accuracies(net, X, y)
    assert accs.shape == (4,) and 0 <= base <= 1
    assert not any(b.lesioned for b in net.blocks)
    multi = se.random_lesions(net, X, y, ks=[0, 2, 4], samples=3)
    assert multi.shape == (3, 3) and np.allclose(multi[0], base)
    np.testing.assert_allclose(multi[2], se.error_without_units(net, X, y)[1] * -1 + 1)  # all 4 deleted
    kept = se.random_lesions(net, X, y, ks=[3], samples=2, candidates=range(1, 4))
    with net.lesion([1, 2, 3]):
        only = evaluate(net, X, y)[1]
    assert np.allclose(kept, only)
    with pytest.raises(ValueError, match="candidate"):
        se.random_lesions(net, X, y, ks=[4], candidates=range(1, 4))


# ---------------------------------------------------------------- plotting and widgets

def test_plotting_helpers_return_figures():
    from matplotlib.figure import Figure

    from unstable_gradients.plotting import new_axes, plot_lesions, plot_path_gradients, plot_strip

    _, ax = new_axes()
    assert isinstance(plot_strip(ax, {"a": [0.1, 0.2, np.nan], "b": [0.3]}, ylabel="error", chance=0.9), Figure)
    _, axes = new_axes(ncols=3)
    c = np.array(path_counts(4), dtype=float)
    per = np.array([1, 0.5, 0.2, 0.1, 0.05])
    assert isinstance(plot_path_gradients(axes, range(5), c, per, c * per, [[p] for p in per], bulk=(1, 3),
                                          effective=(0, 2)), Figure)
    _, ax = new_axes()
    assert isinstance(plot_lesions(ax, {"r": [0.9, 0.8]}, {"r": 0.95}, chance=0.1, highlight=("r", 1)), Figure)


def test_widgets_build(batch):
    import ipywidgets as widgets

    from unstable_gradients.widgets import lesion_explorer, shortcut_profile_explorer

    X, y = batch
    assert isinstance(shortcut_profile_explorer(X, y, n_images=16), widgets.Widget)
    assert isinstance(lesion_explorer({"r": np.array([0.9, 0.8]), "p": np.array([0.1])}, {"r": 0.95, "p": 0.9}),
                      widgets.Widget)
