"""Drivers of the pre-training chapter (``experiments.pretraining_exp``): the arm registry and
the unrolling of pre-trained stacks, the recorded greedy pre-training, the depth sweep
(pairing by seed, the long run, reproducibility), the linear probe, and the chapter's plotting
helper and widget. Everything runs on a few hundred MNIST images and layers of 8-16 units."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from unstable_gradients.activations import get_activation  # noqa: E402
from unstable_gradients.experiments import pretraining_exp as pe  # noqa: E402
from unstable_gradients.models import MLP  # noqa: E402
from unstable_gradients.pretraining import DBN, StackedAutoEncoder  # noqa: E402


@pytest.fixture(scope="module")
def small(mnist_small):
    X, y = mnist_small
    return X[:200], y[:200], X[800:900], y[800:900]


@pytest.fixture(scope="module")
def stacks(small):
    X = small[0]
    return {kind: pe.pretrain_stack(kind, [784, 16, 16, 16], X, record_every=50, seed=3)
            for kind in ("rbm", "denoising")}


# --- pretrain_stack --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rbm", "denoising"])
def test_pretrain_stack_records_every_block(stacks, kind):
    res = stacks[kind]
    assert isinstance(res.stack, DBN if kind == "rbm" else StackedAutoEncoder)
    assert res.images_seen == [50, 100, 150, 200]
    assert len(res.curves) == len(res.seconds) == 3 and all(len(c) == 4 for c in res.curves)
    assert all(s > 0 for s in res.seconds) and res.total_seconds == pytest.approx(sum(res.seconds))
    assert res.stack.history is res.curves
    assert res.curves[0][-1] < res.curves[0][0]  # the first layer learns to reconstruct the digits


def test_pretrain_stack_two_epochs_and_k(small):
    X = small[0][:100]
    res = pe.pretrain_stack("rbm", [784, 8], X, epochs=2, k=3, record_every=40, seed=0)
    assert res.images_seen == [40, 80, 100, 140, 180, 200]


@pytest.mark.parametrize("kind", ["rbm", "denoising"])
def test_pretrain_stack_is_reproducible(small, kind):
    X = small[0][:100]
    a = pe.pretrain_stack(kind, [784, 8, 8], X, record_every=50, seed=1)
    b = pe.pretrain_stack(kind, [784, 8, 8], X, record_every=50, seed=1)
    c = pe.pretrain_stack(kind, [784, 8, 8], X, record_every=50, seed=2)
    assert a.curves == b.curves and a.curves != c.curves
    for la, lb in zip(a.stack.layers, b.stack.layers):
        for (Wa, ca), (Wb, cb) in [(la.encoder_params(), lb.encoder_params())]:
            assert torch.equal(Wa, Wb) and torch.equal(ca, cb)


def test_pretrain_stack_rejects_bad_arguments(small):
    X = small[0][:20]
    with pytest.raises(ValueError, match="valid names: rbm, denoising"):
        pe.pretrain_stack("sparse", [784, 8], X)
    with pytest.raises(ValueError, match="epochs >= 1"):
        pe.pretrain_stack("rbm", [784, 8], X, epochs=0)


# --- build_arm -------------------------------------------------------------------------------------


@pytest.mark.parametrize("arm", list(pe.ARMS), ids=list(pe.ARMS))
@pytest.mark.parametrize("depth", [1, 3])
def test_build_arm_shapes_and_units(stacks, arm, depth):
    stack = stacks[pe.PRETRAINED_ARMS[arm]].stack if arm in pe.PRETRAINED_ARMS else None
    net = pe.build_arm(arm, depth, 16, seed=0, stack=stack)
    assert isinstance(net, MLP) and net.sizes == [784] + [16] * depth + [10]
    expected = "relu" if arm == "relu_he" else "sigmoid"
    assert all(type(a) is type(get_activation(expected)) for a in net.activations)


def test_random_arm_is_standard_uniform_and_relu_arm_is_he():
    big = pe.build_arm("random", 2, 400, seed=0)
    W = big.linears[1].weight.detach()
    assert float(W.abs().max()) <= 1 / 400**0.5 and float(W.std()) == pytest.approx(1 / (3 * 400) ** 0.5, rel=0.02)
    assert float(big.linears[1].bias.detach().abs().max()) == 0.0
    he = pe.build_arm("relu_he", 2, 400, seed=0)
    assert float(he.linears[1].weight.detach().std()) == pytest.approx((2 / 400) ** 0.5, rel=0.02)


@pytest.mark.parametrize("arm", list(pe.PRETRAINED_ARMS))
def test_pretrained_arm_copies_the_first_layers_of_its_stack(stacks, arm, small):
    stack = stacks[pe.PRETRAINED_ARMS[arm]].stack
    net = pe.build_arm(arm, 2, 16, seed=0, stack=stack)
    for linear, layer in zip(net.linears[:2], stack.layers):
        W, c = layer.encoder_params()
        assert torch.equal(linear.weight, W) and torch.equal(linear.bias, c)
    # the unrolled net computes exactly the stack's codes (survey §2.1: copy, then fine-tune)
    X = small[0][:32]
    for h_net, h_stack in zip(pe.hidden_representations(net, X), pe.hidden_representations(stack, X)):
        torch.testing.assert_close(h_net, h_stack)
    # the output layer is fresh and follows the seed
    other = pe.build_arm(arm, 2, 16, seed=1, stack=stack)
    assert not torch.equal(net.linears[-1].weight, other.linears[-1].weight)


def test_build_arm_errors(stacks):
    with pytest.raises(ValueError, match="valid names: random, dbn, denoising, relu_he"):
        pe.build_arm("xavier", 1, 16, seed=0)
    with pytest.raises(ValueError, match="needs a pre-trained stack"):
        pe.build_arm("dbn", 1, 16, seed=0)
    with pytest.raises(ValueError, match="need 4 hidden layers of 16 units"):
        pe.build_arm("dbn", 4, 16, seed=0, stack=stacks["rbm"].stack)
    with pytest.raises(ValueError, match="need 2 hidden layers of 32 units"):
        pe.build_arm("denoising", 2, 32, seed=0, stack=stacks["denoising"].stack)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        pe.build_arm("random", 0, 16, seed=0)


def test_hidden_representations_of_an_mlp_is_its_forward_pass(small):
    net = pe.build_arm("relu_he", 3, 16, seed=0)
    X = small[0][:16]
    reps = pe.hidden_representations(net, X)
    assert [tuple(r.shape) for r in reps] == [(16, 16)] * 3
    torch.testing.assert_close(net.linears[-1](reps[-1]), net(X))


# --- depth_sweep -----------------------------------------------------------------------------------


SWEEP = dict(depths=(1, 2), seeds=(0, 1), width=8, pretrain=dict(record_every=100), epochs=1, batch_size=50,
             lr=0.25, profile_images=50)


@pytest.fixture(scope="module")
def sweep(small):
    return pe.depth_sweep(*small, long_epochs=3, **SWEEP)


def test_depth_sweep_runs_every_arm_depth_and_seed(sweep):
    assert len(sweep.runs) == 4 * 2 * 2
    assert sweep.arms == list(pe.ARMS) and sweep.depths == [1, 2] and sweep.seeds == [0, 1]
    assert set(sweep.pretrained) == {("rbm", 0), ("denoising", 0), ("rbm", 1), ("denoising", 1)}
    for r in sweep.runs:
        assert len(r.profile.output_grad) == r.depth and len(r.profile.weight_grad) == r.depth + 1
        assert all(0 <= e <= 100 for e in r.test_error.values())
        longest = r.depth == 2 and r.seed == 0
        assert r.epochs == (3 if longest else 1)
        assert sorted(r.test_error) == ([1, 2, 3] if longest else [1])
        assert (r.model is not None) == longest
    assert sweep.get("dbn", 2, 0).curve() == ([1, 2, 3], [sweep.get("dbn", 2, 0).test_error[e] for e in (1, 2, 3)])
    with pytest.raises(KeyError):
        sweep.get("dbn", 3, 0)


def test_depth_sweep_shares_one_stack_per_seed_across_depths(sweep):
    stack = sweep.pretrained[("rbm", 0)].stack
    assert len(stack.layers) == 2  # pre-trained once, to the largest depth


def test_depth_sweep_errors_table_and_paired_wins(sweep):
    e = sweep.errors("denoising", 1)
    assert e.shape == (2, 2)
    assert e[1, 0] == sweep.get("denoising", 1, 1).test_error[1]
    table = sweep.table(1)
    assert table.splitlines()[0].split()[-2:] == ["depth", "2"] and len(table.splitlines()) == 5
    wins, n, gain = pe.paired_wins(sweep, "dbn", "random", 2, 1)
    a, b = sweep.errors("dbn", 1)[:, 1], sweep.errors("random", 1)[:, 1]
    assert (wins, n) == (int((a < b).sum()), 2) and gain == pytest.approx(float((b - a).mean()))


def test_depth_sweep_long_run_starts_as_the_short_run(small, sweep):
    short = pe.depth_sweep(*small, seeds=(0,), **{k: v for k, v in SWEEP.items() if k != "seeds"})
    for arm in pe.ARMS:
        assert short.get(arm, 2, 0).test_error[1] == sweep.get(arm, 2, 0).test_error[1]
        assert short.get(arm, 1, 0).test_error == sweep.get(arm, 1, 0).test_error  # reproducible


def test_depth_sweep_profiles_match_the_arm_at_initialisation(small, sweep):
    from unstable_gradients.diagnostics import gradient_profile

    X, y = small[0], small[1]
    stack = sweep.pretrained[("denoising", 1)].stack
    prof = gradient_profile(pe.build_arm("denoising", 2, 8, seed=1, stack=stack), X[:50], y[:50])
    assert prof.output_grad == pytest.approx(sweep.get("denoising", 2, 1).profile.output_grad)


def test_depth_sweep_rejects_bad_arguments(small):
    with pytest.raises(ValueError, match="valid names"):
        pe.depth_sweep(*small, arms=("random", "sparse"), **SWEEP)
    with pytest.raises(ValueError, match="long_epochs"):
        pe.depth_sweep(*small, long_epochs=0, **{**SWEEP, "epochs": 2})
    with pytest.raises(ValueError, match="depths >= 1"):
        pe.depth_sweep(*small, **{**SWEEP, "depths": (0, 1)})


# --- linear probe ------------------------------------------------------------------------------------


def test_linear_probe_reads_separable_features_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    F = torch.nn.functional.one_hot(y, 3).float() + 0.1 * torch.randn(300, 3, generator=gen)
    assert pe.linear_probe_accuracy(F[:200], y[:200], F[200:], y[200:]) == 1.0
    noise = torch.randn(300, 5, generator=gen)
    acc = pe.linear_probe_accuracy(noise[:200], y[:200], noise[200:], y[200:])
    assert 0.1 < acc < 0.6
    # a constant feature (zero spread) is harmless
    F0 = torch.cat([F, torch.ones(300, 1)], 1)
    assert pe.linear_probe_accuracy(F0[:200], y[:200], F0[200:], y[200:]) == 1.0
    with pytest.raises(ValueError, match="same number of rows"):
        pe.linear_probe_accuracy(F[:200], y[:100], F[200:], y[200:])


def test_layer_probe_has_one_score_per_layer(stacks, small):
    X, y, Xt, yt = small
    scores = pe.layer_probe(stacks["rbm"].stack, X, y, Xt, yt)
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    assert scores[0] > 0.15  # 16 barely trained RBM features still beat chance (0.1)


# --- plotting and widget -----------------------------------------------------------------------------


def test_plot_filters_draws_a_mosaic(stacks):
    from unstable_gradients.plotting import new_axes, plot_filters

    fig, ax = new_axes()
    assert plot_filters(ax, stacks["rbm"].stack.layers[0].W, n=10, ncols=4, title="RBM") is fig
    mosaic = ax.images[0].get_array()
    assert mosaic.shape == (3 * 29 + 1, 4 * 29 + 1)
    assert np.nanmax(np.abs(mosaic)) == pytest.approx(1.0)  # each filter on its own scale
    with pytest.raises(ValueError, match="784"):
        plot_filters(ax, torch.zeros(4, 100))
    plt.close("all")


def test_rbm_filter_widget_builds(small):
    from unstable_gradients.widgets import rbm_filter_explorer

    w = rbm_filter_explorer(small[0], n_images=100, record_every=50)
    assert len(w.children) == 3
    plt.close("all")
