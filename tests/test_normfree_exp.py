"""Experiments of chapter future/05_normalisation_free: the variance recursion at init, its closed
forms, the training and clipping drivers (small), the plots and the widget."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from unstable_gradients.experiments import normfree_exp as nf  # noqa: E402


def test_he_residual_units_double_the_variance():
    q = nf.variance_profile("he", depth=12, width=256, batch=512, seeds=(0, 1, 2))
    ratios = q[:, 1:] / q[:, :-1]
    assert ratios.mean() == pytest.approx(2.0, rel=0.08)  # Var(x_{l+1}) = Var(x_l) (1 + 1)
    assert nf.growth_per_unit(q) == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("arm", ["fixup", "rezero"])
def test_zero_branch_schemes_are_flat(arm):
    q = nf.variance_profile(arm, depth=10, width=32, batch=64, seeds=(0,))
    np.testing.assert_allclose(q[0], q[0, 0], rtol=1e-12)


def test_batch_norm_grows_linearly_and_skipinit_stays_below_e():
    q = nf.variance_profile("batch_norm", depth=20, width=128, batch=256, seeds=(0, 1))
    assert nf.linear_slope(q) == pytest.approx(1.0, abs=0.1)
    s = nf.variance_profile("skipinit", depth=20, width=128, batch=256, seeds=(0, 1, 2))
    assert 1.0 < float(np.mean(s[:, -1] / s[:, 0])) < math.e


def test_closed_forms():
    np.testing.assert_allclose(nf.predicted_profile("he", 3, 2.0), [2, 4, 8, 16])
    np.testing.assert_allclose(nf.predicted_profile("batch_norm", 3, 2.0), [2, 3, 4, 5])
    np.testing.assert_allclose(nf.predicted_profile("fixup", 3, 2.0), [2, 2, 2, 2])
    assert nf.predicted_profile("skipinit", 50, 1.0)[-1] == pytest.approx((1 + 1 / 50) ** 50)
    with pytest.raises(ValueError, match="valid arms"):
        nf.branch_gain("default", 3)


def test_arm_options_and_registry_errors():
    assert nf.arm_options("skipinit", 16)["alpha"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="valid names"):
        nf.arm_options("layernorm", 4)


def test_growth_and_slope_helpers_on_exact_data():
    q = 3.0 * 2.0 ** np.arange(6)[None, :]
    assert nf.growth_per_unit(q) == pytest.approx(2.0)
    assert nf.linear_slope(np.arange(5.0) + 2) == pytest.approx(1.0)


def test_train_and_clip_drivers_small(mnist_small):
    X, y = mnist_small
    test = (X[:100], y[:100])
    runs = nf.train_arms(["he", "rezero"], X[:200], y[:200], test, seeds=(0,), depth=32, width=32, epochs=1)
    rows = {r["arm"]: r for r in nf.summarise(runs)}
    assert runs["he"][0].loss[0] > 100 * runs["rezero"][0].loss[0]  # logits of variance ~ 2^32 at init
    assert rows["rezero"]["diverged"] == 0 and runs["rezero"][0].loss[0] == pytest.approx(math.log(10), rel=0.1)
    assert math.isfinite(rows["rezero"]["test_acc"])
    clipped = nf.clip_arms("rezero", X[:200], y[:200], test, seeds=(0,), depth=4, width=16, epochs=1,
                           clips={"agc": dict(clip="agc", clip_value=0.01, clip_exclude=("head",))})
    assert clipped["agc"][0].fraction_clipped >= 0


def test_plots_and_widget(mnist_small):
    from unstable_gradients.plotting import new_axes

    q = nf.variance_profile("he", 4, 16, 32, seeds=(0, 1))
    fig, ax = new_axes()
    nf.plot_variance_by_depth(ax, {"he": q}, {"he": nf.predicted_profile("he", 4, float(q[:, 0].mean()))})
    assert ax.get_yscale() == "log"
    run = nf.Run("he", 0, [2.0, 1e3], diverged_at=2)
    fig, ax = new_axes()
    nf.plot_loss_curves(ax, {"he": [run]})
    assert ax.get_xlabel() == "SGD step"
    pytest.importorskip("ipywidgets")
    assert nf.init_variance_explorer(width=16, batch=16) is not None
