"""Survey §2.3.1 (``experiments.gates_exp``): parity with torch.nn, parameter formulas, gradients
through time against autograd, the highway backward step (eq. 63) against autograd, the gate-bias
rules, and small runs of the training drivers (shapes, early stopping, clear errors)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unstable_gradients.experiments import gates_exp as ge
from unstable_gradients.models import HighwayLayer, VanillaRNN


# --- parity and parameter counts ------------------------------------------------------------

@pytest.mark.parametrize("kind,proj", [("lstm", 0), ("lstm", 3), ("gru", 0)], ids=["lstm", "lstmp", "gru"])
def test_torch_parity_is_exact_in_float64(kind, proj):
    p = ge.torch_parity(kind, proj_size=proj)
    assert p["output"] < 1e-12 and p["state"] < 1e-12 and p["grad"] < 1e-12
    assert p["params_ours"] == p["params_torch"]


def test_torch_parity_rejects_bad_options():
    with pytest.raises(ValueError, match="valid names"):
        ge.torch_parity("rnn2")
    with pytest.raises(ValueError, match="proj_size"):
        ge.torch_parity("gru", proj_size=2)


@pytest.mark.parametrize("kind", ge.RECURRENT_KINDS)
@pytest.mark.parametrize("I,H", [(1, 16), (64, 128), (7, 3)])
def test_parameter_formula_matches_the_modules(kind, I, H):
    assert ge.recurrent_parameter_count(kind, I, H) == ge.parameter_formula(kind, I, H)


def test_gates_multiply_the_parameters():
    rnn = ge.parameter_formula("rnn", 10, 32)
    assert ge.parameter_formula("lstm", 10, 32) == 4 * rnn  # four blocks of eq. 53-57
    assert ge.parameter_formula("gru", 10, 32) == 3 * rnn
    assert ge.parameter_formula("peephole_lstm", 10, 32) == 4 * rnn + 3 * 32
    with pytest.raises(ValueError, match="valid names"):
        ge.parameter_formula("transformer", 1, 1)


# --- gradients through time -----------------------------------------------------------------

def _autograd_state_norms(model, x, y):
    """Reference: retain_grad on every state of a plain loop over the cells."""
    if isinstance(model, VanillaRNN):
        out, hidden = model(x, return_hidden=True)
        states = hidden[1:]
    else:
        out, hs, *rest = model(x, return_states=True)
        states = hs[1:] + (rest[0][1:] if rest else [])
    for s in states:
        s.retain_grad()
    torch.nn.functional.cross_entropy(out, y).backward()
    return np.array([float(s.grad.norm()) for s in states])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "peephole_lstm", "gru"])
def test_state_gradients_match_autograd(cell):
    model = ge.build_recurrent(cell, hidden=5, gate_bias=None if cell == "rnn" else 2.0, seed=3).double()
    x = torch.randn(6, 9, 1, dtype=torch.float64)
    y = torch.randint(0, 2, (6,))
    got = ge.state_gradients(model, x, y)
    ref = _autograd_state_norms(model, x, y)
    mine = np.concatenate([got["h"], got.get("c", np.array([]))])
    np.testing.assert_allclose(mine, ref, rtol=1e-12, atol=1e-300)
    assert len(got["h"]) == 9 and ("c" in got) == (cell in ("lstm", "peephole_lstm"))


def test_cell_gradient_profile_is_eq59_and_beats_the_rnn():
    p = ge.cell_gradient_profile(steps=30, hidden=8, forget_bias=3.0, batch=32)
    assert p.error < 1e-12
    assert p.forget_term[-1] == 0 and p.forget_term[:-1].min() > 0
    assert len(p.total) == len(p.rnn_h) == len(p.forget_gate) == 30
    r = p.first_over_last()
    assert r["lstm_c"] > 1e3 * r["rnn_h"]  # an open forget gate keeps the gradient, tanh'W does not
    assert 0.9 < p.forget_gate.mean() < 0.99  # sigma(3) = 0.953 plus the other terms


@pytest.mark.parametrize("cell", ["rnn", "lstm", "projection_lstm", "peephole_lstm", "gru"])
def test_time_gradients_keys(cell):
    d = ge.time_gradients(cell, steps=6, gate_bias=1.0, hidden=4, batch=8)
    assert {"h", "rnn_h"} <= set(d) and all(len(v) == 6 for v in d.values())
    assert ("forget_term" in d) == (cell in ("lstm", "projection_lstm"))


def test_gate_bias_rules_keep_half_the_gradient():
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    for T in (2, 10, 50, 100):
        assert sig(ge.horizon_gate_bias(T)) ** (T - 1) == pytest.approx(0.5, rel=1e-12)
        assert (1 - sig(ge.depth_scaled_gate_bias(T))) ** (T - 1) == pytest.approx(0.5, rel=1e-12)
    assert ge.horizon_gate_bias(100) == pytest.approx(4.958, abs=1e-3)
    with pytest.raises(ValueError):
        ge.depth_scaled_gate_bias(1)


# --- the long-range task --------------------------------------------------------------------

def test_build_recurrent_sets_the_gate_that_keeps_the_state():
    lstm = ge.build_recurrent("lstm", 4, gate_bias=2.5, seed=0)
    assert torch.all(lstm.cells[0].gate_block("bias_ih", "f") == 2.5)
    assert torch.all(lstm.cells[0].gate_block("bias_hh", "f") == 0)
    gru = ge.build_recurrent("gru", 4, gate_bias=-1.0, seed=0)
    assert torch.all(gru.cells[0].gate_block("bias_ih", "z") == -1.0)
    assert torch.all(gru.cells[0].gate_block("bias_hh", "z") == 0)
    assert ge.build_recurrent("projection_lstm", 6).proj_size == 3
    with pytest.raises(ValueError, match="no gate"):
        ge.build_recurrent("rnn", 4, gate_bias=1.0)
    with pytest.raises(ValueError, match="valid names"):
        ge.build_recurrent("lstm2", 4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_backed_computes_the_same_function(cell):
    model = ge.build_recurrent(cell, 5, gate_bias=1.0, seed=1).double()
    tb = ge.TorchBacked(model)
    x = torch.randn(3, 7, 1, dtype=torch.float64)
    torch.testing.assert_close(tb(x), model(x), rtol=0, atol=1e-12)
    with torch.no_grad():
        tb.rnn.weight_hh_l0.add_(0.1)
    tb.sync()
    torch.testing.assert_close(tb(x), model(x), rtol=0, atol=1e-12)


def test_long_range_run_smoke_and_early_stopping():
    small = dict(hidden=4, batch=8, max_steps=12, n_test=16, probe_every=5, probe_batch=8)
    r = ge.long_range_run("lstm", 6, seed=0, gate_bias=2.0, probe=True, **small)
    assert 0 <= r["accuracy"] <= 1 and len(r["losses"]) == len(r["grad_norms"]) <= 12
    assert r["probes"]["h"].shape[1] == 5 and r["probes"]["c"].shape[1] == 5
    stop = ge.long_range_run("gru", 6, seed=0, solved_loss=10.0, **small)  # any loss counts as solved
    assert stop["solved"] == ge.LONG_RANGE["window"] == len(stop["losses"])
    with pytest.raises(ValueError, match="unknown settings"):
        ge.long_range_run("lstm", 6, bogus=1)


def test_long_range_sweep_and_fluctuation_stats():
    small = dict(hidden=4, batch=8, max_steps=6, n_test=16, probe_every=2, probe_batch=8)
    res = ge.long_range_sweep([4, 6], seeds=(0, 1), arms=["RNN", "LSTM"], probe_steps=6, **small)
    assert res.accuracy.shape == (2, 2, 2) and res.mean().shape == (2, 2) and res.solved().shape == (2, 2)
    assert set(res.probes) == {"RNN", "LSTM"} and res.probes["RNN"]["h"].shape == (3, 5)
    stats = ge.fluctuation_stats(res, "h")
    assert set(stats) == {"RNN", "LSTM"} and 0 <= stats["LSTM"]["growing"] <= 1
    assert set(ge.fluctuation_stats(res, "c")) == {"LSTM"}
    with pytest.raises(ValueError, match="unknown arms"):
        ge.long_range_sweep([4], arms=["Transformer"])


def test_step_time():
    assert ge.step_time("gru", steps=5, batch=4, hidden=3, repeats=1) > 0
    assert ge.step_time("rnn", steps=5, batch=4, hidden=3, repeats=1, engine="torch") > 0
    with pytest.raises(ValueError, match="peephole"):
        ge.step_time("peephole_lstm", engine="torch")
    with pytest.raises(ValueError, match="engine"):
        ge.step_time("lstm", engine="cuda")


# --- highway networks -----------------------------------------------------------------------

def test_highway_parameter_counts():
    assert ge.highway_parameter_count(50) == 2 * (50 * 50 + 50) == 5100
    assert ge.highway_parameter_count(71, plain=True) == 71 * 71 + 71 == 5112
    assert ge.highway_parameter_count(10, coupled=False) == 3 * (100 + 10)


@pytest.mark.parametrize("activation,coupled", [("relu", True), ("tanh", True), ("tanh", False)],
                         ids=["relu", "tanh", "tanh-uncoupled"])
def test_highway_backward_terms_sum_to_autograd(activation, coupled):
    layer = HighwayLayer(6, activation=activation, coupled=coupled, gate_bias=-1.0).double()
    x, g = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    terms = ge.highway_backward_terms(layer, x, g)
    assert terms["error"] < 1e-12 and terms["sum"] == pytest.approx(terms["autograd"], rel=1e-12)
    assert ("carry_gate" in terms) == (not coupled)
    with pytest.raises(ValueError, match="plain"):
        ge.highway_backward_terms(HighwayLayer(6, plain=True), x.float(), g.float())


def test_closed_gates_copy_the_input_and_restore_the_weights():
    layer = HighwayLayer(5, gate_bias=-1.0)
    w = layer.gate.weight.detach().clone()
    x = torch.randn(3, 5)
    with ge.closed_gates(layer):
        torch.testing.assert_close(layer(x), x, rtol=0, atol=0)
    assert torch.equal(layer.gate.weight, w) and torch.all(layer.gate.bias == -1.0)


def test_build_highway_arms():
    assert ge.build_highway("plain", 5).plain
    assert float(ge.build_highway("highway, b_T = -2", 5).layers[0].gate.bias[0].detach()) == -2.0
    b = ge.build_highway("highway, b_T(depth)", 10).layers[0].gate.bias[0].detach()
    assert float(b) == pytest.approx(ge.depth_scaled_gate_bias(10), abs=1e-6)
    with pytest.raises(ValueError, match="unknown arm"):
        ge.build_highway("resnet", 5)


def test_highway_depth_sweep_small(mnist_small):
    X, y = mnist_small
    res = ge.highway_depth_sweep(X, y, seeds=(0,), lesion_depth=3, depths=(2, 3), n_train=60, n_probe=30,
                                 epochs=1, batch_size=20)
    assert set(res.runs) == {(a, d) for a in ge.HIGHWAY_ARMS for d in (2, 3)}
    run = res.runs[("highway, b_T = -2", 3)][0]
    assert len(run.gate_activity) == len(run.gate_bias) == 2 and run.lesion.shape == (2,)
    assert 0 <= run.fraction_bias_decreased <= 1 and run.initial_bias == -2.0
    assert res.runs[("plain", 3)][0].gate_activity is None
    assert res.final_loss("plain").shape == (1, 2)
    short = ge.highway_depth_sweep(X, y, arms=["plain", "highway, b_T = -2"], arm_depths={"highway, b_T = -2": (2,)},
                                   depths=(2, 3), n_train=40, n_probe=20, epochs=1, batch_size=20)
    assert short.depths_of("highway, b_T = -2") == [2] and short.depths_of("plain") == [2, 3]
    assert short.final_loss("highway, b_T = -2").shape == (1, 1)
    with pytest.raises(ValueError, match="unknown settings"):
        ge.highway_depth_sweep(X, y, width=3)


def test_init_gradient_profiles(mnist_small):
    X, y = mnist_small
    prof = ge.highway_init_profiles(X[:50], y[:50], depth=4, seeds=range(2))
    assert set(prof) == set(ge.HIGHWAY_ARMS) and all(v.shape == (2, 3) for v in prof.values())
    g = ge.init_gradients(X[:50], y[:50], depth=4, gate_bias=-3.0, seeds=range(2))
    assert g["plain"].shape == g["highway"].shape == (2, 3)
