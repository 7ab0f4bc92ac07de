"""Survey §3.2 (``experiments.optim_exp``): the first-step profiles (same gradients, different
updates), the step-length checks against the definitions, and small runs of the training drivers
(shapes, seeds, divergence counting, clear errors)."""
from __future__ import annotations

import math

import pytest
import torch

from unstable_gradients.experiments import optim_exp as oe


@pytest.fixture
def data(mnist_small):
    X, y = mnist_small
    return X[:300], y[:300]


def test_first_step_profiles_share_gradients_not_updates(data):
    X, y = data
    profs = oe.first_step_profiles(X[:64], y[:64], optimizers=["sgd", "adam", "bngd"], depth=4, width=16)
    sgd, adam, bngd = profs["sgd"], profs["adam"], profs["bngd"]
    assert sgd.layers == adam.layers and len(sgd.layers) == 5
    assert sgd.grad_norm == pytest.approx(adam.grad_norm, rel=1e-6)
    assert sgd.update_norm == pytest.approx([0.1 * g for g in sgd.grad_norm], rel=1e-4)
    assert bngd.update_norm == pytest.approx([0.1] * 5, rel=1e-5)  # one block per layer
    # a deep sigmoid net: the first layer's gradient is the smallest, so SGD's ratio is too;
    # Adam's first step is about lr per weight whatever the gradient's size
    assert sgd.grad_norm[0] < sgd.grad_norm[-1] and sgd.ratio[0] < 0.1 * sgd.ratio[-1]
    assert max(adam.ratio) / min(adam.ratio) < max(sgd.ratio) / min(sgd.ratio)


def test_step_length_checks_match_definitions(data):
    X, y = data
    c = oe.step_length_checks(X[:64], y[:64], depth=3, width=16)
    assert c["ngd"] == pytest.approx(1.0, abs=1e-6)
    assert c["bngd_max_dev"] < 1e-5
    assert 0.9 < c["adam_median"] <= 1.0 + 1e-6 and 0.0 <= c["adam_below_eps"] < 1.0


def test_make_optimizer_uses_the_stated_defaults():
    net = oe.build_net(2, 8)
    for name in oe.ARMS:
        opt = oe.make_optimizer(name, net)
        assert opt.param_groups[0]["lr"] == oe.DEFAULT_LRS[name]
    assert len(oe.make_optimizer("bngd", net).param_groups) == 3  # per layer
    assert oe.make_optimizer("adam", net, lr=0.5).param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="valid names"):
        oe.make_optimizer("adamw2", net)


def test_build_net_is_seeded():
    a, b, c = oe.build_net(2, 8, seed=3), oe.build_net(2, 8, seed=3), oe.build_net(2, 8, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.linears[0].weight, c.linears[0].weight)


def test_optimizer_runs_shapes(data):
    runs = oe.optimizer_runs(*data, optimizers=["sgd", "ngd"], seeds=(0, 1), depth=2, width=8, epochs=1, batch_size=100)
    assert set(runs) == {"sgd", "ngd"}
    for r in runs.values():
        assert len(r["loss"]) == 2 and all(len(l) == 3 for l in r["loss"])
        assert r["diverged"] == [False, False] and all(math.isfinite(f) for f in r["final"])
    assert runs["sgd"]["loss"][0] != runs["sgd"]["loss"][1]  # seeds differ


def test_warmup_runs_count_divergences(data):
    rows = oe.warmup_runs(*data, lrs=(0.05, 1e30), seeds=(0,), depth=2, width=16, epochs=1, batch_size=50, warmup=2)
    assert len(rows) == 2 * len(oe.SCHEDULE_ARMS)
    table = oe.warmup_table(rows)
    small, huge = table[:3], table[3:]
    assert all(t["diverged"] == 0 and t["runs"] == 1 for t in small)
    assert huge[0]["diverged"] == 1 and huge[0]["first_divergence"] is not None
    assert all(t["runs"] == t["diverged"] + t["stuck"] + t["learnt"] for t in table)
    with pytest.raises(ValueError, match="valid names"):
        oe.warmup_runs(*data, schedules=("triangle",), seeds=(0,), depth=1, width=4, epochs=1)


def test_predicted_ratio_matches_the_first_step(data):
    X, y = data
    profs = oe.first_step_profiles(X[:128], y[:128], optimizers=["adagrad", "rmsprop", "adam", "bngd"], depth=4, width=32)
    for name, prof in profs.items():
        pred = oe.predicted_hidden_ratio(name, oe.DEFAULT_LRS[name], 32, 32)
        for r in prof.ratio[1:-1]:  # hidden layers: fan-in 32, fan-out 32
            assert r == pytest.approx(pred, rel=0.15)
    assert oe.predicted_hidden_ratio("rmsprop", 0.01, 64, 64) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="valid names"):
        oe.predicted_hidden_ratio("sgd", 0.1, 4, 4)


def test_smooth_is_a_running_mean():
    assert oe.smooth([1, 2, 3, 4], k=2).tolist() == [1.0, 1.5, 2.5, 3.5]


def test_update_ratio_explorer_builds(data):
    pytest.importorskip("ipywidgets")
    from unstable_gradients.widgets import update_ratio_explorer
    assert update_ratio_explorer(*data, n_images=32) is not None
