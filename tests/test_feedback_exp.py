"""Survey §3.2 drivers (``experiments.feedback_exp``): small runs of the rule comparison (shapes,
shared initial weights, BP's zero angles), the signal profiles by depth (BP's vanishes through a
deep tanh net at torch's default scale, DFA's does not) and the zero initial condition."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from unstable_gradients.experiments import feedback_exp as fe


@pytest.fixture
def toy():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 12, generator=g)
    y = (X[:, :3].argmax(1)).long()
    return X[:90], y[:90], (X[90:], y[90:])


def test_compare_rules_shapes_and_bp_angles(toy):
    X, y, test = toy
    c = fe.compare_rules(X, y, test, seeds=(0, 1), depth=2, width=16, epochs=2, batch_size=15, lr=0.1,
                         probe_size=30, probe_every=4)
    assert c.rules == ["bp", "fa", "dfa"] and c.seeds == [0, 1]
    run = c.runs[("dfa", 1)]
    assert run.test_error.shape == run.train_error.shape == run.epoch_loss.shape == (2,)
    assert list(run.probe_steps) == [0, 4, 8, 12]  # 12 steps: at init and every 4
    assert run.weight_angle.shape == run.delta_angle.shape == run.rule_norm.shape == (4, 2)
    assert np.all(c.stack("bp", "weight_angle") < 1e-5)
    assert np.all((c.final()["fa"] >= 0) & (c.final()["fa"] <= 100))
    np.testing.assert_allclose(c.runs[("bp", 0)].bp_norm[0], c.runs[("dfa", 0)].bp_norm[0])  # same initial weights
    assert c.late_angle("dfa", probes=2).shape == (2,)
    assert c.settings["n_train"] == 90 and c.settings["depth"] == 2


def test_compare_rules_learns(toy):
    X, y, test = toy
    c = fe.compare_rules(X, y, test, rules=["dfa"], seeds=(0,), depth=2, width=32, epochs=8, batch_size=10, lr=0.1,
                         probe_size=30, probe_every=1000)
    loss = c.runs[("dfa", 0)].epoch_loss
    assert loss[-1] < 0.7 * loss[0]


def test_compare_rules_rejects_bad_settings(toy):
    X, y, test = toy
    with pytest.raises(ValueError, match="unknown settings"):
        fe.compare_rules(X, y, test, learning_rate=0.1)
    with pytest.raises(ValueError, match="valid names"):
        fe.compare_rules(X, y, test, rules=["bp", "ff"])
    with pytest.raises(ValueError, match="at least one"):
        fe.compare_rules(X, y, test, seeds=())
    with pytest.raises(ValueError, match="depth"):
        fe.build_feedback_net("bp", 0, 10, 0)


def test_signal_profiles_bp_vanishes_dfa_does_not(mnist_small):
    X, y = mnist_small
    p = fe.signal_profiles(X[:64], y[:64], depth=30, width=32, seeds=range(2))
    assert p["bp"].shape == p["dfa"].shape == p["fa"].shape == (2, 30)
    bp_ratio = p["bp"][:, 0] / p["bp"][:, -1]
    dfa_ratio = p["dfa"][:, 0] / p["dfa"][:, -1]
    assert np.all(bp_ratio < 1e-4) and np.all((dfa_ratio > 0.1) & (dfa_ratio < 10))
    assert all(np.isfinite(v).all() and (v > 0).all() for v in p.values())


def test_signal_profile_top_layer_matches_w_transpose_e(mnist_small):
    X, y = mnist_small
    X, y = X[:16].double(), y[:16]
    net = fe.build_feedback_net("bp", 3, 8, 5, init=None).double()
    out, pre, _ = net.trace(X)
    e = (torch.softmax(out, 1) - torch.nn.functional.one_hot(y, 10)) / len(y)
    top = (e @ net.linears[-1].weight) * (1 - torch.tanh(pre[-1]) ** 2)
    p = fe.signal_profiles(X, y, depth=3, width=8, rules=["bp"], seeds=[5])
    assert p["bp"][0, -1] == pytest.approx(float(top.detach().norm()), rel=1e-12)


def test_zero_init_signals(mnist_small):
    X, y = mnist_small
    z = fe.zero_init_signals(X[:32], y[:32], depth=4, width=16)
    assert np.all(z["bp"] == 0)
    assert np.all(z["fa"] > 0) and np.all(z["dfa"] > 0)


def test_rule_checks_are_exact():
    c = fe.rule_checks()
    assert set(c) == {"fa_is_bp", "fa_delta", "dfa_delta"}
    assert max(c.values()) < 1e-14


def test_feedback_signal_explorer_builds_and_switches(mnist_small):
    import matplotlib.pyplot as plt

    from unstable_gradients.widgets import feedback_signal_explorer

    X, y = mnist_small
    box = feedback_signal_explorer(X[:16], y[:16], seeds=1)
    depth, width, activation, init = box.children[0].children
    assert init.value == "torch_default" and set(init.options) >= {"torch_default", "he_normal"}
    depth.value, init.value = 4, "he_normal"  # redraws with the new settings without error
    plt.close("all")
