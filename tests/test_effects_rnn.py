"""Survey §1.4.1 (``experiments.effects_rnn``): Table 1 against the paper and against autograd,
the per-step factor of eq. 18, the first-input task, and clear errors for bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unstable_gradients.experiments.effects_rnn import (
    TABLE1_DIFFERENCES_PAPER, TABLE1_PAPER, TABLE1_SAMPLES, crossings, first_input_accuracy, first_input_task,
    format_table1, input_sensitivity, output_differences, step_gradient_map, step_gradients, table1, table1_autograd, table1_rnn,
)

# The paper prints two decimals: a correctly rounded number lies within 0.005 of the exact one;
# 1e-4 more covers round-half cases.
TOL = 0.0051
CASES = [(w, s) for w in TABLE1_PAPER for s in TABLE1_SAMPLES]


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


@pytest.mark.parametrize("w_hh,sample", CASES, ids=[f"whh{w:g}-x{s[0]}{s[1]}" for w, s in CASES])
def test_table1_reproduces_paper(w_hh, sample):
    row = next(r for r in table1(w_hh) if r.sample == sample)
    dh0, dh1, out = TABLE1_PAPER[w_hh][sample]
    assert row.dh[0] == pytest.approx(dh0, abs=TOL)
    assert row.dh[1] == pytest.approx(dh1, abs=TOL)
    assert row.output == pytest.approx(out, abs=TOL)


@pytest.mark.parametrize("w_hh", sorted(TABLE1_DIFFERENCES_PAPER))
def test_output_differences_reproduce_paper(w_hh):
    diffs = output_differences(table1(w_hh))
    for key, paper in TABLE1_DIFFERENCES_PAPER[w_hh].items():
        assert diffs[key] == pytest.approx(paper, abs=TOL)


def test_table1_closed_form_for_one_sample():
    """(1,1), w_hh = 2 by hand: h_0 = s(-1), h_1 = s(1 + 2 h_0 - 2), de/dh_1 = h_1 - 1,
    de/dh_0 = de/dh_1 s'(y_1) w_hh (survey eq. 18 for one unit), e = (h_1 - 1)^2 / 2."""
    h0 = _sigmoid(-1)
    y1 = 1 + 2 * h0 - 2
    h1 = _sigmoid(y1)
    row = table1(2.0)[0]
    assert row.sample == (1, 1)
    assert row.output == pytest.approx(h1, abs=1e-14)
    assert row.dh[1] == pytest.approx(h1 - 1, abs=1e-14)
    assert row.dh[0] == pytest.approx((h1 - 1) * h1 * (1 - h1) * 2, abs=1e-14)
    assert row.loss == pytest.approx(0.5 * (h1 - 1) ** 2, abs=1e-14)
    assert row.factor == pytest.approx(row.dh[0] / row.dh[1], abs=1e-14)
    assert row.dy[1] == pytest.approx(row.dh[1] * h1 * (1 - h1), abs=1e-14)


ACTS = ["sigmoid", "tanh", "relu", "softsign", "elu"]


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("w_hh", [-3.0, 0.5, 2.0, 8.0])
def test_table1_gradients_equal_autograd(activation, w_hh):
    samples = [(1, 1, 0, 1), (0, 1, 1, 1), (0.5, -1, 2, 0.3)]
    ours = [r.dh for r in table1(w_hh, samples, target=0.3, w_xh=0.7, b_h=0.4, activation=activation)]
    ref = table1_autograd(w_hh, samples, target=0.3, w_xh=0.7, b_h=0.4, activation=activation)
    np.testing.assert_allclose(ours, ref, atol=1e-12, rtol=0)


def test_table1_rnn_is_the_survey_network():
    net = table1_rnn(8.0)
    assert net.W_xh.item() == 1.0 and net.W_hh.item() == 8.0 and net.b_h.item() == -2.0
    assert net.W_ho.item() == 1.0 and net.b_o.item() == 0.0 and net.W_hh.dtype == torch.float64
    x = torch.tensor([[[1.0], [0.0]]], dtype=torch.float64)
    assert net(x).item() == pytest.approx(_sigmoid(0 + 8 * _sigmoid(1 - 2) - 2), abs=1e-14)


def test_format_table1_shows_ours_and_paper():
    text = format_table1({w: table1(w) for w in (2.0, 8.0)})
    assert "w_hh = 2 (vanishing)" in text and "w_hh = 8 (exploding)" in text
    assert "-1.023 (-1.02)" in text and "0.386 (0.39)" in text
    assert len(text.splitlines()) == 3 + len(TABLE1_SAMPLES)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_step_factor_is_w_times_derivative(activation):
    """The factor read off BPTT equals w_hh f'(y_t) computed from the forward pass (eq. 18)."""
    sg = step_gradients(5.0, steps=12, activation=activation, n_sequences=16, seed=3)
    net = table1_rnn(5.0, activation=activation)
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 2, (16, 12, 1), generator=gen).double()
    _, hidden = net(x, return_hidden=True)
    with torch.no_grad():
        ys = [x[:, t] @ net.W_xh.T + hidden[t] @ net.W_hh.T + net.b_h for t in range(12)]
        expected = torch.cat([5.0 * net.activation.derivative(y) for y in ys[1:]], 1).abs().numpy()
    np.testing.assert_allclose(sg.factor, expected, rtol=1e-10)
    assert sg.dh.shape == (16, 12)


def test_step_gradient_map_horizons_equal_separate_runs():
    m = step_gradient_map([2.0, 8.0], steps=9, n_sequences=32, seed=1)
    assert m.log10_factor.shape == m.log10_first_over_last.shape == (2, 8)
    assert list(m.horizons) == list(range(2, 10))
    for i, w in enumerate((2.0, 8.0)):
        for T in (2, 3, 6, 9):
            # a T-step run sees the first T inputs of the 9-step sequences (same seed, same draws)
            full = step_gradients(w, steps=9, n_sequences=32, seed=1)
            net = table1_rnn(w)
            from unstable_gradients.backprop import rnn_bptt

            gen = torch.Generator().manual_seed(1)
            x = torch.randint(0, 2, (32, 9, 1), generator=gen).double()[:, :T]
            g = rnn_bptt(net, x, torch.ones(32, 1, dtype=torch.float64), loss="mse")
            direct = np.mean(np.log10(np.abs(g.outputs[0].numpy() / g.outputs[-1].numpy())))
            assert m.log10_first_over_last[i, T - 2] == pytest.approx(direct, abs=1e-10)
            assert full.dh.shape == (32, 9)


def test_one_unit_sigmoid_gradient_cannot_keep_exploding():
    """w_hh sigma' <= w_hh / 4, so no factor exceeds 1 below w_hh = 4; above it, only the first
    backward steps can (the state saturates): the chapter's reading of the heat-map."""
    m = step_gradient_map(np.arange(0.5, 24.01, 0.5), steps=30, n_sequences=64)
    assert (m.log10_factor[m.w_hh <= 4] < 0).all()
    assert m.log10_first_over_last[:, 0].max() > 0  # T = 2: Table 1's exploding case exists
    assert (m.log10_first_over_last[:, 3:] < 0).all()  # T >= 5: vanishing for every w_hh


def test_crossings():
    assert crossings([0, 1, 2, 3], [-1, 1, 1, -1]) == pytest.approx([0.5, 2.5])
    assert crossings([0, 1, 2], [0.0, 1, 2]) == [0.0]
    assert crossings([0, 1], [1, 2]) == []


def test_first_input_task():
    X, y = first_input_task(200, 7, noise=0.5, seed=4)
    assert X.shape == (200, 7, 1) and y.shape == (200,) and y.dtype == torch.int64
    assert torch.equal(X[:, 0, 0], 2.0 * y - 1)
    assert 0.3 < y.float().mean() < 0.7
    X2, y2 = first_input_task(200, 7, noise=0.5, seed=4)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    X0, _ = first_input_task(10, 3, noise=0.0)
    assert (X0[:, 1:] == 0).all()


def test_first_input_accuracy_short_sequence_is_learnt():
    res = first_input_accuracy([2], "tanh", seeds=[0], n_train=300, n_test=300)
    assert res.accuracy.shape == res.grad_ratio.shape == (1, 1)
    assert res.accuracy[0, 0] > 0.95 and res.diverged == 0
    assert res.mean().shape == res.spread().shape == (1,)
    assert 0 < res.grad_ratio[0, 0] < 10


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(w_hh=float("nan")), "w_hh must be a finite number"),
    (dict(w_hh="8"), "w_hh must be a finite number"),
    (dict(w_hh=2.0, b_h=float("inf")), "b_h must be a finite number"),
    (dict(w_hh=2.0, activation="sigmod"), "unknown activation 'sigmod'; valid names: .*sigmoid"),
], ids=["nan", "string", "inf-bias", "typo-activation"])
def test_table1_rnn_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        table1_rnn(**kwargs)


@pytest.mark.parametrize("samples", [[], [(1, 1), (1,)], [()], [(1, float("nan"))]], ids=["empty", "ragged", "zero-length", "nan"])
def test_table1_rejects_bad_samples(samples):
    with pytest.raises(ValueError, match="samples"):
        table1(2.0, samples)


def test_output_differences_needs_the_three_samples():
    with pytest.raises(ValueError, match="missing"):
        output_differences(table1(2.0, [(1, 1), (0, 1)]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=1), "steps >= 2"),
    (dict(n_sequences=0), "n_sequences >= 1"),
    (dict(inputs="gauss"), "unknown inputs 'gauss'"),
], ids=["one-step", "no-sequences", "bad-inputs"])
def test_step_gradients_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        step_gradients(2.0, **kwargs)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        step_gradient_map([])
    with pytest.raises(ValueError, match="shape"):
        crossings([0, 1, 2], [1, 2])
    with pytest.raises(ValueError, match="noise >= 0"):
        first_input_task(10, 5, noise=-1)
    with pytest.raises(ValueError, match="unknown settings \\['hiden'\\]"):
        first_input_accuracy([2], hiden=8)
    with pytest.raises(ValueError, match="unknown activation"):
        first_input_accuracy([2], "sigmod")
    with pytest.raises(ValueError, match="one T >= 1"):
        first_input_accuracy([], "tanh")


def test_input_sensitivity_closed_form():
    """Survey-network eq. (sens): dh_1/dx_1 = s'(y_1) w_xh, dh_1/dx_0 = s'(y_1) w_hh s'(y_0) w_xh."""
    h0 = _sigmoid(1 - 2)
    y1 = 1 + 8 * h0 - 2
    d1 = _sigmoid(y1) * (1 - _sigmoid(y1))
    d0 = h0 * (1 - h0)
    s0, s1 = input_sensitivity(8.0, (1, 1))
    assert s1 == pytest.approx(d1, abs=1e-14)
    assert s0 == pytest.approx(d1 * 8 * d0, abs=1e-14)


def test_table1_rejects_bad_target():
    with pytest.raises(ValueError, match="target must be a finite number"):
        table1(2.0, target=float("nan"))
