"""Drivers of the chapters "Gradient clipping" and "Weight penalties": the one-unit RNN of Pascanu
et al. (2013, eq. 8) against autograd and against its fixed-point analysis, the row-wise clipper
against the package's clippers, and the training drivers on small settings."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from unstable_gradients.clipping import clip_grad_norm, clip_grad_value
from unstable_gradients.experiments import clipping_exp as cx

POINTS = [(3.0, -1.0), (4.5, -2.3), (5.0, -2.6123), (6.0, -3.0), (8.0, -4.48), (-6.0, 4.2), (0.5, 0.3)]


@pytest.mark.parametrize("w,b", POINTS, ids=lambda v: f"{v:g}")
def test_forward_mode_gradient_matches_autograd(w, b):
    ours = np.ravel(cx.cliff_loss(w, b))
    ref = cx.cliff_loss_autograd(w, b)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-300)


def test_one_unit_rnn_derivatives_match_finite_differences():
    w, b, h = 3.3, -1.2, 1e-6
    run = cx.one_unit_rnn(w, b, x0=0.4, steps=20)
    fd = lambda f: (f(h) - f(-h)) / (2 * h)
    assert run.dx_dw == pytest.approx(fd(lambda d: cx.one_unit_rnn(w + d, b, 0.4, 20).x), rel=1e-6)
    assert run.dx_db == pytest.approx(fd(lambda d: cx.one_unit_rnn(w, b + d, 0.4, 20).x), rel=1e-6)
    assert run.dx_dx0 == pytest.approx(fd(lambda d: cx.one_unit_rnn(w, b, 0.4 + d, 20).x), abs=1e-8)


def test_vectorised_surface_equals_pointwise_calls():
    s = cx.cliff_surface((-3, 7), (-5, 2), n=(7, 5))
    assert s.loss.shape == s.grad_norm.shape == s.long_term.shape == (5, 7)
    for i, j in [(0, 0), (2, 3), (4, 6)]:
        e, gw, gb = cx.cliff_loss(s.w[j], s.b[i])
        assert s.loss[i, j] == pytest.approx(float(e))
        assert s.grad_norm[i, j] == pytest.approx(math.hypot(float(gw), float(gb)))


def test_sigmoid_is_stable_and_correct():
    x = np.array([-800.0, -3.0, 0.0, 2.0, 800.0])
    np.testing.assert_allclose(cx.sigmoid(x), 1 / (1 + np.exp(-np.clip(x, -700, 700))), rtol=1e-12, atol=1e-300)
    assert np.isfinite(cx.sigmoid(x)).all()


@pytest.mark.parametrize("w", [-8.0, -5.0, 2.0, 5.0, 9.0])
def test_x0_is_a_fixed_point_on_the_cliff_line(w):
    run = cx.one_unit_rnn(w, cx.cliff_line(w), x0=0.5, steps=50)
    assert float(run.x) == pytest.approx(0.5, abs=1e-12)
    s = float(cx.sigmoid(0.5))
    factor = abs(w * s * (1 - s))
    assert abs(float(run.dx_dx0)) == pytest.approx(factor ** 50, rel=1e-9)  # the long-term factor at b*


def test_cliff_onset_is_one_over_sigmoid_derivative():
    s = float(cx.sigmoid(0.5))
    assert cx.cliff_onset(0.5) == pytest.approx(1 / (s * (1 - s)))
    assert cx.cliff_onset(0.5) == pytest.approx(4.2553, abs=1e-4)
    assert cx.cliff_onset(0.0) == pytest.approx(4.0)  # Pascanu et al.'s 1/gamma


def test_long_term_factor_obeys_pascanu_bound():
    """|dx_T/dx_0| <= (|w| gamma)^T with gamma = 1/4 for the sigmoid (Pascanu et al. 2013, §2.1)."""
    rng = np.random.default_rng(0)
    w, b = rng.uniform(-10, 10, 5000), rng.uniform(-10, 10, 5000)
    run = cx.one_unit_rnn(w, b, steps=30)
    assert (np.abs(run.dx_dx0) <= (np.abs(w) / 4) ** 30 * (1 + 1e-12)).all()


@pytest.mark.parametrize("w", [5.0, 6.0, 8.0])
def test_measured_wall_is_at_the_predicted_line(w):
    grid = np.arange(-8.0, 4.0, 1e-4) + 3.7e-5
    assert cx.locate_cliff(w, grid) == pytest.approx(float(cx.cliff_line(w)), abs=1e-4)


def test_wall_gets_higher_and_narrower_with_w():
    peaks, widths = [], []
    for w in (4.5, 5.0, 5.5):
        cut = cx.cliff_cut(w, half_width=0.01)
        peaks.append(cut.grad_norm.max())
        widths.append(np.ptp(cut.b[cut.grad_norm > cut.grad_norm.max() / 10]))
        assert cut.loss[0] > 0.2 and cut.loss[-1] < 0.05  # below the wall E is large, above it small
    assert peaks[0] < peaks[1] < peaks[2] and widths[0] > widths[1] > widths[2]


@pytest.mark.parametrize("threshold", [0.05, 0.5, 3.0], ids=lambda t: f"theta={t}")
@pytest.mark.parametrize("method", ["norm", "value"])
def test_clip_rows_matches_package_clippers(method, threshold):
    G = np.random.default_rng(1).normal(size=(20, 6)) * np.geomspace(0.01, 10, 20)[:, None]
    out, fired, cos = cx.clip_rows(G, method, threshold)
    clipper = clip_grad_norm if method == "norm" else clip_grad_value
    for row, o, f, c in zip(G, out, fired, cos):
        p = torch.zeros(6, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(row)
        stats = clipper([p], threshold)
        np.testing.assert_allclose(o, p.grad.numpy(), rtol=1e-12, atol=1e-15)
        assert f == stats.clipped
        assert c == pytest.approx(stats.cosine, abs=1e-12)


def test_clip_rows_none_and_errors():
    G = np.array([[3.0, 4.0], [0.0, 0.0]])
    out, fired, cos = cx.clip_rows(G, None, None)
    assert np.array_equal(out, G) and not fired.any() and (cos == 1).all()
    out, fired, cos = cx.clip_rows(G, "value", 1.0)
    assert fired.tolist() == [True, False] and cos[1] == 1.0
    with pytest.raises(ValueError, match="valid"):
        cx.clip_rows(G, "l1", 1.0)
    with pytest.raises(ValueError, match="threshold"):
        cx.clip_rows(G, "norm", 0.0)


def test_descent_plain_steps_follow_the_gradient():
    starts = np.array([[5.0, -4.0], [3.0, -1.0]])
    d = cx.cliff_descent(starts, lr=0.5, steps=2)
    assert d.path.shape == (2, 3, 2) and d.loss.shape == (2, 3) and d.grad_norm.shape == (2, 2)
    _, gw, gb = cx.cliff_loss(starts[:, 0], starts[:, 1])
    np.testing.assert_allclose(d.path[:, 1], starts - 0.5 * np.stack([gw, gb], 1))
    assert not d.clipped.any() and (d.cosine == 1).all()


def test_descent_clipped_steps_are_bounded():
    starts = cx.start_grid(np.linspace(4.5, 9, 4), np.linspace(-2, -0.3, 4))
    assert starts.shape == (16, 2)
    norm = cx.cliff_descent(starts, lr=1.0, steps=150, clip="norm", threshold=1.0)
    assert norm.step_length.max() <= 1.0 + 1e-9 and (norm.cosine == 1).all()
    value = cx.cliff_descent(starts, lr=1.0, steps=150, clip="value", threshold=0.5)
    assert np.abs(np.diff(value.path, axis=1)).max() <= 0.5 + 1e-12
    assert value.cosine.min() < 1.0
    plain = cx.cliff_descent(starts, lr=1.0, steps=150)
    assert plain.step_length.max() > 5 > norm.step_length.max()  # the throw at the wall, prevented


def test_adding_problem():
    X, y = cx.adding_problem(50, 10, seed=3)
    assert X.shape == (50, 10, 2) and y.shape == (50, 1) and X.dtype == torch.float32
    marks = X[..., 1]
    assert (marks.sum(1) == 2).all() and (marks[:, :5].sum(1) == 1).all()
    torch.testing.assert_close(y[:, 0], (X[..., 0] * marks).sum(1))
    X2, y2 = cx.adding_problem(50, 10, seed=3)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    with pytest.raises(ValueError):
        cx.adding_problem(0, 10)


SMALL_RNN = dict(n=64, steps=8, hidden=8, epochs=2, batch_size=16)


@pytest.mark.parametrize("clip,threshold", [(None, None), ("norm", 0.05), ("value", 0.01)])
def test_rnn_run_records_per_step(clip, threshold):
    r = cx.rnn_run(clip, threshold, seed=0, **SMALL_RNN)
    n = 8  # 2 epochs x 4 batches
    assert len(r.loss) == len(r.grad_norm) == len(r.clipped) == len(r.cosine) == n
    assert len(r.recurrent_norm) == n + 1 and r.diverged is None and np.isfinite(r.train_loss)
    assert r.recurrent_norm[0] == pytest.approx(cx.RNN_CLIP["gain"], rel=1e-5)  # orthogonal x gain
    if clip is None:
        assert math.isnan(r.fraction_clipped) and (r.cosine == 1).all() and r.label == "plain SGD"
    elif clip == "norm":
        assert r.clipped.all() and (r.cosine == 1).all()  # a tiny threshold clips every step
    else:
        assert r.clipped.any() and (r.cosine <= 1).all() and r.cosine.min() < 1


def test_rnn_run_same_seed_same_start_and_summary():
    runs = cx.rnn_runs({"plain": {}, "norm": dict(clip="norm", threshold=1e3), "L2": dict(l2=0.1)},
                       seeds=[0, 1], **SMALL_RNN)
    # a threshold that never fires leaves training bit-identical to plain SGD
    for a, b in zip(runs["plain"], runs["norm"]):
        np.testing.assert_array_equal(a.loss, b.loss)
        assert not b.clipped.any()
    assert runs["L2"][0].recurrent_norm[-1] < runs["plain"][0].recurrent_norm[-1]
    rows = cx.rnn_summary(runs)
    assert [r["arm"] for r in rows] == ["plain", "norm", "L2"] and rows[1]["fraction_clipped"] == 0.0
    text = cx.format_rnn_summary(rows)
    assert "plain" in text and len(text.splitlines()) == 4


def test_rnn_run_reports_divergence():
    r = cx.rnn_run(seed=0, lr=1e8, **SMALL_RNN)
    assert r.diverged is not None and r.diverged_step is not None and math.isnan(r.train_loss)
    assert len(r.loss) == r.diverged_step


def _tiny_data(n=64, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g), torch.randint(0, 3, (n,), generator=g)


SMALL_MLP = dict(depth=3, width=10, epochs=2, batch_size=16, probe=32, probe_every=2, lr=0.05)


def test_penalty_run_probes_and_gain():
    X, y = _tiny_data()
    r1 = cx.penalty_run(X, y, (X, y), seed=0, gain=1.0, **SMALL_MLP)
    r2 = cx.penalty_run(X, y, (X, y), seed=0, gain=2.0, **SMALL_MLP)
    assert r2.weight_norm[0] == pytest.approx(2 * r1.weight_norm[0], rel=1e-6)  # same init, scaled
    assert r1.probe_steps.tolist() == [0, 2, 4, 6, 8]
    assert r1.data_grad.shape == r1.layer_weight_norm.shape == (5, 4)
    assert r1.saturated.shape == (5, 3) and ((0 <= r1.saturated) & (r1.saturated <= 1)).all()
    np.testing.assert_allclose(r1.explosion, r1.data_grad[:, 0] / r1.data_grad[:, -1])
    np.testing.assert_allclose(r1.weight_norm, np.sqrt((r1.layer_weight_norm ** 2).sum(1)))
    assert len(r1.test_acc) == len(r1.test_loss) == 5 and r1.label == "no penalty" and r1.diverged is None


def test_l2_penalty_decays_weights_at_least_as_fast_as_predicted_without_data():
    """With lr * l2 large the penalty dominates: ||W|| follows (1 - lr l2)^t up to the data term."""
    X, y = _tiny_data()
    base = cx.penalty_run(X, y, (X, y), seed=0, **SMALL_MLP)
    r = cx.penalty_run(X, y, (X, y), seed=0, l2=5.0, **SMALL_MLP)
    assert r.label == "L2 5"
    predicted = r.weight_norm[0] * (1 - SMALL_MLP["lr"] * 5.0) ** r.probe_steps[-1]
    assert r.weight_norm[-1] < base.weight_norm[-1]
    assert r.weight_norm[-1] == pytest.approx(predicted, rel=0.15)


def test_plotting_helpers_draw():
    from unstable_gradients.plotting import new_axes, plot_paths, plot_runs, plot_surface

    s = cx.cliff_surface((2, 10), (-7, 1), n=(21, 11))
    fig, (a1, a2) = new_axes(ncols=2)
    plot_surface(a1, s.w, s.b, s.loss, "w", "b", "E")
    plot_paths(a1, {"plain": [np.array([[5.0, -4.0], [50.0, 50.0]])]})
    assert a1.get_xlim() == (2.0, 10.0)  # a throw out of the region does not rescale the axes
    plot_runs(a2, {"a": [[1.0, 2.0, 4.0], [1.0, np.inf]]}, "step", "loss", stopped={"a": [False, True]}, x=[0, 10, 20])
    with pytest.raises(ValueError):
        plot_surface(a1, s.w, s.b, s.loss.T, "w", "b", "E")
    matplotlib.pyplot.close(fig)


def test_cliff_explorer_builds():
    from unstable_gradients.widgets import cliff_explorer

    box = cliff_explorer()
    assert len(box.children) == 3  # two rows of controls and the output
