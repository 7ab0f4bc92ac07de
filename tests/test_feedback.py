"""Feedback alignment and direct feedback alignment (``feedback``): FA with B = W^T is
back-propagation exactly, the hand-written delta formulas of FA and DFA against what autograd sees
under each rule, fixed feedback matrices, angles, and clear errors. Everything in float64."""
from __future__ import annotations

import math

import pytest
import torch

from unstable_gradients.feedback import (RULES, FeedbackMLP, alignment, angle_deg, feedback_linear, hidden_deltas,
                                         using_rule)
from unstable_gradients.losses import get_loss
from unstable_gradients.models import MLP
from unstable_gradients.training import train

SIZES = [6, 9, 8, 7, 4]
LOSSES = ["cross_entropy", "mse"]


def _data(loss: str = "cross_entropy", n: int = 11):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, SIZES[0], generator=g, dtype=torch.float64)
    y = torch.randn(n, SIZES[-1], generator=g, dtype=torch.float64) if loss == "mse" else \
        torch.randint(0, SIZES[-1], (n,), generator=g)
    return x, y


def _net(rule: str, activation: str = "tanh", **kw) -> FeedbackMLP:
    return FeedbackMLP(SIZES, rule=rule, activation=activation, seed=0, **kw).double()


def _grads(model, x, y, loss="cross_entropy") -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    get_loss(loss)(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


# --- FA with B = W^T is back-propagation -------------------------------------------------------

@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("loss", LOSSES)
def test_fa_with_transposed_weights_is_backprop(activation, loss):
    x, y = _data(loss)
    fa = _net("fa", activation)
    with torch.no_grad():
        for B, lin in zip(fa.feedbacks, fa.linears[1:]):
            B.copy_(lin.weight.T)
    ref = MLP(SIZES, activation=activation, seed=0).double()
    ref.load_state_dict({k: v for k, v in fa.state_dict().items() if not k.startswith("feedback")})
    got, want = _grads(fa, x, y, loss), _grads(ref, x, y, loss)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-13)


def test_random_feedback_changes_the_hidden_gradients_only():
    x, y = _data()
    fa, bp = _net("fa"), _net("bp")
    g_fa, g_bp = _grads(fa, x, y), _grads(bp, x, y)
    n = len(SIZES) - 2
    torch.testing.assert_close(g_fa[f"linears.{n}.weight"], g_bp[f"linears.{n}.weight"])  # output layer: true grad
    assert not torch.allclose(g_fa["linears.0.weight"], g_bp["linears.0.weight"])


def test_feedback_linear_gradcheck_with_b_equal_w_transpose():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x_, w_, b_: feedback_linear(x_, w_, b_, w.detach().T), (x, w, b))


def test_feedback_linear_sends_b_not_w():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w, B = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    g = torch.randn(5, 3, dtype=torch.float64)
    feedback_linear(x, w, None, B).backward(g)
    torch.testing.assert_close(x.grad, g @ B.T)


# --- the delta formulas ----------------------------------------------------------------------------

def _output_error(model, x, y, loss):
    out, pre, inputs = model.trace(x)
    return get_loss(loss).grad(out.detach(), y), pre, inputs


@pytest.mark.parametrize("loss", LOSSES)
def test_dfa_delta_is_b_times_e_times_fprime(loss):
    x, y = _data(loss)
    net = _net("dfa")
    e, pre, inputs = _output_error(net, x, y, loss)
    deltas, _ = hidden_deltas(net, x, y, loss)
    for l, (B, a) in enumerate(zip(net.feedbacks, pre)):
        want = (e @ B.T) * net.activations[l].derivative(a.detach())  # Nøkland 2016, §2
        torch.testing.assert_close(deltas[l], want, rtol=0, atol=1e-14)
    grads = _grads(net, x, y, loss)
    for l, (d, i) in enumerate(zip(deltas, inputs)):
        torch.testing.assert_close(grads[f"linears.{l}.weight"], d.T @ i.detach())  # eq. 5 with the DFA delta
        torch.testing.assert_close(grads[f"linears.{l}.bias"], d.sum(0))


def test_fa_delta_recursion():
    x, y = _data()
    net = _net("fa")
    e, pre, _ = _output_error(net, x, y, "cross_entropy")
    deltas, _ = hidden_deltas(net, x, y)
    delta = e
    for l in range(len(pre) - 1, -1, -1):  # Lillicrap et al. 2016: B_{l+1} in place of W_{l+1}^T
        delta = (delta @ net.feedbacks[l].T) * net.activations[l].derivative(pre[l].detach())
        torch.testing.assert_close(deltas[l], delta, rtol=0, atol=1e-14)


def test_forward_is_the_same_under_every_rule():
    x, _ = _data()
    outs = [_net(r)(x) for r in RULES]
    ref = MLP(SIZES, activation="tanh", seed=0).double()(x)
    for out in outs:
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


# --- feedback matrices -----------------------------------------------------------------------------

def test_feedback_shapes_and_scale():
    fa, dfa = FeedbackMLP(SIZES, rule="fa", seed=1), FeedbackMLP(SIZES, rule="dfa", seed=1, feedback_scale=2.0)
    assert [tuple(B.shape) for B in fa.feedbacks] == [(n_in, n_out) for n_in, n_out in zip(SIZES[1:-1], SIZES[2:])]
    assert [tuple(B.shape) for B in dfa.feedbacks] == [(n, SIZES[-1]) for n in SIZES[1:-1]]
    assert all(float(B.abs().max()) <= 1 / math.sqrt(B.shape[1]) for B in fa.feedbacks)
    assert all(float(B.abs().max()) <= 2 / math.sqrt(B.shape[0]) for B in dfa.feedbacks)  # Nøkland: 1/sqrt(n_l)
    big = FeedbackMLP([3, 400, 100], rule="dfa", seed=0).feedbacks[0]  # U[-b, b]: std b / sqrt(3), b = 1/sqrt(400)
    assert abs(float(big.std()) - 1 / math.sqrt(3 * 400)) < 0.01 / math.sqrt(400)
    big_fa = FeedbackMLP([3, 100, 400], rule="fa", seed=0).feedbacks[0]  # B_2 ~ W_2^T: (100, 400), b = 1/sqrt(400)
    assert abs(float(big_fa.std()) - 1 / math.sqrt(3 * 400)) < 0.01 / math.sqrt(400)
    assert not any(n.startswith("feedback") for n, _ in fa.named_parameters())
    assert _net("bp").feedbacks == []


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_feedback_stays_fixed_while_the_weights_learn(rule):
    net = FeedbackMLP([10, 16, 16, 3], rule=rule, seed=0)
    before = [B.clone() for B in net.feedbacks]
    w0 = net.linears[0].weight.detach().clone()
    X, y = torch.randn(60, 10), torch.randint(0, 3, (60,))
    res = train(net, X, y, epochs=3, batch_size=10, lr=0.1, optimizer="momentum", progress=False,
                eval_every_epoch=False)
    assert res.ok and res.loss[-1] < res.loss[0]
    assert all(torch.equal(a, b) for a, b in zip(before, net.feedbacks))
    assert not torch.equal(w0, net.linears[0].weight)


def test_same_seed_same_feedback_and_config_round_trip():
    net = FeedbackMLP(SIZES, rule="dfa", seed=4, feedback_scale=0.5)
    again = FeedbackMLP.from_config(net.config)
    assert net.config["kind"] == "feedback_mlp" and net.config["rule"] == "dfa"
    for k, v in net.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    other = FeedbackMLP(SIZES, rule="dfa", seed=4, feedback_seed=9)
    assert not torch.equal(net.feedback0, other.feedback0)


def test_zero_init_and_using_rule():
    net = _net("dfa", zero_init=True)
    assert all(float(p.detach().abs().max()) == 0 for p in net.parameters())
    with pytest.raises(RuntimeError):
        with using_rule(net, "bp"):
            assert net.rule == "bp" and net.feedbacks == []
            raise RuntimeError("boom")
    assert net.rule == "dfa"


# --- angles -------------------------------------------------------------------------------------

def test_angle_deg():
    u, v = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert angle_deg(u, v) == pytest.approx(90.0)
    assert angle_deg(u, 3 * u) == pytest.approx(0.0, abs=1e-6)
    assert angle_deg(u, -u) == pytest.approx(180.0)
    assert angle_deg(torch.tensor([1.0, 1.0]), u) == pytest.approx(45.0)
    assert math.isnan(angle_deg(u, torch.zeros(2)))


def test_alignment_is_zero_for_bp_and_matches_the_deltas():
    x, y = _data()
    a = alignment(_net("bp"), x, y)
    assert a["delta_angle"].max() < 1e-5 and a["weight_angle"].max() < 1e-5
    net = _net("dfa")
    a = alignment(net, x, y)
    d, _ = hidden_deltas(net, x, y)
    with using_rule(net, "bp"):
        b, _ = hidden_deltas(net, x, y)
    assert a["delta_angle"].shape == (len(SIZES) - 2,)
    assert a["delta_angle"][0] == pytest.approx(angle_deg(d[0], b[0]))
    assert a["rule_norm"][1] == pytest.approx(float(d[1].norm()))
    assert net.rule == "dfa"


# --- bad input ----------------------------------------------------------------------------------

def test_bad_input_is_rejected_clearly():
    with pytest.raises(ValueError, match="valid names: bp, dfa, fa"):
        FeedbackMLP(SIZES, rule="target_prop")
    with pytest.raises(ValueError, match="norm"):
        FeedbackMLP(SIZES, norm="batch")
    with pytest.raises(ValueError, match="output_activation"):
        FeedbackMLP(SIZES, output_activation="sigmoid")
    with pytest.raises(ValueError, match="elementwise"):
        FeedbackMLP(SIZES, activation="maxout")
    with pytest.raises(ValueError, match="feedback_scale"):
        FeedbackMLP(SIZES, feedback_scale=0.0)
    with pytest.raises(ValueError, match="shape of W"):
        feedback_linear(torch.randn(2, 4), torch.randn(3, 4), None, torch.randn(3, 4))
    with pytest.raises(TypeError, match="FeedbackMLP"):
        hidden_deltas(MLP([4, 3, 2]), torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="valid names"):
        with using_rule(_net("fa"), "hebb"):
            pass
