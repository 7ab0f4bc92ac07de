"""Survey §3.1 (``tasks``, ``experiments.recurrent_exp``): the copying-memory task and its memoryless
baseline, gradients through time at initialisation against autograd, the stacked-LSTM depth sweep
and small runs of the copying driver."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from unstable_gradients import tasks
from unstable_gradients.experiments import recurrent_exp as rx
from unstable_gradients.experiments.effects_rnn import first_input_task


# --- the copying task -----------------------------------------------------------------------

def test_copying_task_layout():
    x, y = tasks.copying_task(6, 7, seed=0)
    assert x.shape == y.shape == (6, 27)
    data = x[:, :10]
    assert data.min() >= 1 and data.max() <= 8
    assert torch.all(x[:, 10:16] == 0) and torch.all(x[:, 16] == 9) and torch.all(x[:, 17:] == 0)
    assert torch.all(y[:, :17] == 0) and torch.equal(y[:, 17:], data)
    assert torch.equal(tasks.copying_task(6, 7, seed=0)[0], x)          # seeded
    assert not torch.equal(tasks.copying_task(6, 7, seed=1)[0], x)
    assert tasks.one_hot(x).shape == (6, 27, 10)
    with pytest.raises(ValueError, match="T >= 1"):
        tasks.copying_task(2, 0)


@pytest.mark.parametrize("T", [1, 20, 100, 500])
def test_memoryless_strategy_scores_the_baseline_exactly(T):
    x, y = tasks.copying_task(50, T, seed=T)
    ce = F.cross_entropy(tasks.memoryless_logits(50, T).reshape(-1, 10), y.reshape(-1))
    assert abs(float(ce) - tasks.copying_baseline(T)) < 1e-12
    assert tasks.copying_baseline(T) == pytest.approx(10 * math.log(8) / (T + 20), rel=1e-15)


def test_data_symbols_are_uniform():
    x, _ = tasks.copying_task(4000, 3, seed=0)
    freq = np.bincount(x[:, :10].flatten().numpy(), minlength=9)[1:] / 40_000
    assert np.abs(freq - 1 / 8).max() < 0.01        # 40,000 draws: sd of a frequency ~0.0017


# --- gradients through time -----------------------------------------------------------------

@pytest.mark.parametrize("arm", ["RNN (torch default)", "orthogonal, tanh", "uRNN", "LSTM"])
def test_time_gradients_match_retain_grad(arm):
    got = rx.time_gradients(arm, steps=8, hidden=6, batch=5, seeds=[1])
    x, y = first_input_task(5, 8, seed=0)
    model = rx.build_cell(arm, 1, 6, 2, seed=1).double()
    if arm == "LSTM":
        out, hs, _ = model(x.double(), return_states=True)
    else:
        out, hs = model(x.double(), return_hidden=True)
    for h in hs[1:]:
        h.retain_grad()
    F.cross_entropy(out, y).backward()
    np.testing.assert_allclose(got[0], [float(h.grad.norm()) for h in hs[1:]], rtol=1e-12)


def test_norm_preserving_cells_are_flat_and_vanilla_rnn_is_not():
    f = {arm: rx.per_step_factor(rx.time_gradients(arm, steps=40, hidden=16, batch=16, seeds=[0, 1]))
         for arm in ("RNN (torch default)", "RNN, gain 3", "orthogonal, linear", "orthogonal (Cayley), linear",
                     "orthogonal, modReLU", "uRNN", "orthogonal, tanh")}
    for arm in ("orthogonal, linear", "orthogonal (Cayley), linear", "orthogonal, modReLU", "uRNN"):
        np.testing.assert_allclose(f[arm], 1.0, atol=1e-9)   # modReLU with b = 0 is the identity
    assert f["RNN (torch default)"].max() < 0.9 and f["RNN, gain 3"].min() > 1.1
    assert f["orthogonal, tanh"].max() < 1.0
    d = rx.tanh_derivative(steps=40, hidden=16, batch=16, seeds=[0])
    assert 0 < d[0] < 1


def test_build_cell_rejects_unknown_arms():
    with pytest.raises(ValueError, match="valid arms"):
        rx.build_cell("GRU", 1, 4, 2)


# --- stacked LSTM ---------------------------------------------------------------------------

def test_stacked_depth_gradients_shapes_and_shortcut_effect():
    g = rx.stacked_depth_gradients(depths=(2, 6), seeds=[0, 1], steps=6, hidden=8, batch=8)
    assert set(g) == {"none", "residual", "highway"} and g["none"].shape == (2, 2)
    assert np.all(g["residual"][:, 1] > g["none"][:, 1])      # at 6 layers the shortcut carries more
    with pytest.raises(ValueError, match="valid"):
        rx.stacked_depth_gradients(connections=["dense"])


# --- copying runs ---------------------------------------------------------------------------

@pytest.mark.parametrize("arm", list(rx.COPY_ARMS))
def test_copying_run_small(arm):
    r = rx.copying_run(arm, seed=0, T=3, steps=3, n_test=8, hidden=6)
    assert len(r["losses"]) == 3 and np.isfinite(r["losses"]).all()
    assert r["baseline"] == pytest.approx(10 * math.log(8) / 23)
    assert 0 <= r["recall_accuracy"] <= 1 and r["params"] > 0 and math.isfinite(r["test_loss"])
    r2 = rx.copying_run(arm, seed=0, T=3, steps=3, n_test=8, hidden=6)
    np.testing.assert_array_equal(r["losses"], r2["losses"])   # seeded


def test_copying_run_errors_and_sweep():
    with pytest.raises(ValueError, match="valid arms"):
        rx.copying_run("GRU")
    with pytest.raises(ValueError, match="unknown settings"):
        rx.copying_run("uRNN", epochs=3)
    s = rx.copying_sweep(["RNN", "uRNN"], seeds=[0, 1], T=2, steps=2, n_test=4, hidden=4)
    assert list(s) == ["RNN", "uRNN"] and len(s["uRNN"]) == 2


@pytest.mark.parametrize("arm", ["orthogonal, modReLU", "orthogonal (Cayley), linear", "uRNN"])
def test_constraint_survives_large_sgd_steps(arm):
    r = rx.constraint_after_training(arm, steps=5, lr=2.0, T=4, hidden=12)
    assert r["moved"] > 0.1 and r["before"] < 1e-5 and r["after"] < 1e-5


def test_recurrent_deviation_detects_a_non_orthogonal_matrix():
    net = rx.build_cell("orthogonal, linear", 1, 5, 2)
    assert rx.recurrent_deviation(net) < 1e-5
    with pytest.raises(ValueError, match="OrthogonalRNN or UnitaryRNN"):
        rx.recurrent_deviation(rx.build_cell("LSTM", 1, 5, 2))
    urnn = rx.build_cell("uRNN", 1, 6, 2)
    with torch.no_grad():
        urnn.theta[0, 0] = float("nan")
    assert not rx.recurrent_deviation(urnn) < 1e-5
