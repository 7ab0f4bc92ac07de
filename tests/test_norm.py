"""Normalisation (survey §2.2.3): layers against ``torch.nn``, the survey's invariances, models."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from unstable_gradients.backprop import cnn_backward, mlp_backward, rnn_bptt
from unstable_gradients.init import initialize
from unstable_gradients.models import MLP, SmallCNN, VanillaRNN, build_model
from unstable_gradients.norm import (NORMALIZATIONS, BatchNorm, LayerNorm, RecurrentBatchNorm, get_norm,
                                     norm_names, resolve_norm)

D = torch.float64


def _copy_affine(ours: nn.Module, ref: nn.Module) -> None:
    """Give torch's module our gamma/beta (random, so that the affine step is really tested)."""
    with torch.no_grad():
        ours.gamma.copy_(torch.randn_like(ours.gamma))
        ours.beta.copy_(torch.randn_like(ours.beta))
        ref.weight.copy_(ours.gamma)
        ref.bias.copy_(ours.beta)


def _forward_backward(module: nn.Module, x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Output and the gradients of sum(out * r) w.r.t. the input and gamma, beta (weight, bias)."""
    x = x.clone().requires_grad_(True)
    out = module(x)
    params = [p for p in module.parameters()]
    grads = torch.autograd.grad((out * r).sum(), [x, *params])
    return (out.detach(), *grads)


# --- BatchNorm and LayerNorm against torch ------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None], ids=["ema", "cumulative"])
@pytest.mark.parametrize("shape", [(8, 5), (6, 3, 4, 4), (4, 3, 7)], ids=["dense", "conv", "sequence"])
def test_batchnorm_matches_torch_in_train_and_eval(shape, momentum):
    c = shape[1]
    ours = BatchNorm(c, momentum=momentum).to(D)
    ref = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(c, momentum=momentum).to(D)
    _copy_affine(ours, ref)
    for step in range(3):  # several batches so the running averages are really averages
        x = 2.0 + 3.0 * torch.randn(shape, dtype=D)
        r = torch.randn(shape, dtype=D)
        for a, b in zip(_forward_backward(ours, x, r), _forward_backward(ref, x, r)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-12, atol=1e-12)  # unbiased
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    ours.eval(), ref.eval()
    x, r = torch.randn(shape, dtype=D), torch.randn(shape, dtype=D)
    for a, b in zip(_forward_backward(ours, x, r), _forward_backward(ref, x, r)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours(x[:1]), ours(x)[:1])  # evaluation: a sample ignores its batch


def test_batchnorm_without_affine_and_bad_inputs():
    bn = BatchNorm(3, affine=False)
    assert list(bn.parameters()) == []
    out = bn(torch.randn(50, 3) * 4 + 1)
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert [n for n, _ in BatchNorm(3, shift=False).named_parameters()] == ["gamma"]
    with pytest.raises(ValueError, match="more than one value"):
        bn(torch.randn(1, 3))
    with pytest.raises(ValueError, match="expects"):
        bn(torch.randn(4, 2))
    bn.eval()
    assert bn(torch.randn(1, 3)).shape == (1, 3)  # running statistics: a batch of one is fine


@pytest.mark.parametrize("shape", [(5,), (3, 4, 4)], ids=["dense", "map"])
def test_layernorm_matches_torch(shape):
    ours, ref = LayerNorm(shape).to(D), nn.LayerNorm(shape).to(D)
    _copy_affine(ours, ref)
    x, r = 1.5 + 2 * torch.randn(6, *shape, dtype=D), torch.randn(6, *shape, dtype=D)
    for a, b in zip(_forward_backward(ours, x, r), _forward_backward(ref, x, r)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours(x[:1]), ours(x)[:1])  # no batch statistics
    with pytest.raises(ValueError, match="LayerNorm"):
        ours(torch.randn(2, 7, dtype=D))


# --- recurrent batch normalisation -------------------------------------------------------------


def test_recurrent_batchnorm_keeps_statistics_per_step():
    steps, c = 4, 3
    rbn = RecurrentBatchNorm(c, max_steps=steps, momentum=None)  # cumulative: exact averages
    assert rbn.gamma[0].detach().eq(0.1).all() and len(rbn.gamma) == 1  # Cooijmans et al.: gamma_0 = 0.1
    rbn.to(D)
    refs = [nn.BatchNorm1d(c, momentum=None).to(D) for _ in range(steps)]
    for ref in refs:
        with torch.no_grad():
            ref.weight.copy_(rbn.gamma[0])
    for _ in range(3):
        for t in range(steps):  # step t sees inputs of mean t and scale t + 1
            x = t + (t + 1) * torch.randn(64, c, dtype=D)
            torch.testing.assert_close(rbn(x, t), refs[t](x), rtol=1e-10, atol=1e-10)
    for t in range(steps):  # each step has the running statistics of its own distribution only
        torch.testing.assert_close(rbn.running_mean[t], refs[t].running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rbn.running_var[t], refs[t].running_var, rtol=1e-12, atol=1e-12)
        assert (rbn.running_mean[t] - t).abs().max() < 0.5 and (rbn.running_var[t].sqrt() - (t + 1)).abs().max() < 0.6
    rbn.eval()
    x = 2 + 3 * torch.randn(64, c, dtype=D)
    torch.testing.assert_close(rbn(x, 2), refs[2].eval()(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(rbn(x, 9), rbn(x, steps - 1))  # beyond max_steps: the last step's statistics
    with pytest.raises(ValueError, match="time step"):
        rbn(x, -1)


def test_recurrent_batchnorm_beyond_max_steps_and_per_step_affine():
    rbn = RecurrentBatchNorm(2, max_steps=2, per_step_affine=True, momentum=None)
    assert [n for n, _ in rbn.named_parameters()] == ["gamma.0", "gamma.1", "beta.0", "beta.1"]
    for t in range(5):
        rbn(10.0 * t + torch.randn(32, 2), t)
    assert rbn.num_batches_tracked.tolist() == [1, 4]  # steps 1..4 all update slot 1
    assert (rbn.running_mean[1] - 25.0).abs().max() < 1.0  # mean of 10, 20, 30, 40
    with torch.no_grad():
        rbn.gamma[1].fill_(2.0)
    rbn.eval()
    x = torch.randn(5, 2)
    torch.testing.assert_close(rbn(x, 1), 2.0 * (x - rbn.running_mean[1]) / (rbn.running_var[1] + 1e-5).sqrt())
    # initialising a model never touches the per-step gains (they are 1-D, not weight matrices)
    initialize(rbn, "normal", std=5.0)
    assert rbn.gamma[0].detach().eq(0.1).all() and rbn.gamma[1].detach().eq(2.0).all()


# --- the survey's claims (§2.2.3, eq. 48-52) ----------------------------------------------------


def _bn_of(weight: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """BN(W u) in training mode for a batch u of rows, with random gamma and beta.

    eps = 0, so that the survey's identities hold exactly up to rounding (with eps > 0 they hold
    up to a relative eps / Var(W u))."""
    torch.manual_seed(7)
    bn = BatchNorm(weight.shape[0], eps=0.0).to(D)
    with torch.no_grad():
        bn.gamma.uniform_(0.5, 2.0), bn.beta.normal_()
    y = u @ weight.T
    return bn(y if bias is None else y + bias)


@pytest.fixture
def w_u():
    return torch.randn(4, 6, dtype=D), torch.randn(10, 6, dtype=D)


@pytest.mark.parametrize("alpha", [0.01, 0.5, 3.0, 100.0])
def test_bn_is_invariant_to_the_scale_of_w(w_u, alpha):
    """Survey eq. 50: BN((alpha W) u) = BN(W u)."""
    w, u = w_u
    torch.testing.assert_close(_bn_of(alpha * w, u), _bn_of(w, u), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("alpha", [0.1, 5.0])
def test_bn_jacobian_wrt_input_is_unchanged_by_scaling_w(w_u, alpha):
    """Survey eq. 52: dBN((alpha W) u)/du = dBN(W u)/du (the batch couples the rows, so the full
    Jacobian of the (10, 4) output with respect to the (10, 6) input is compared)."""
    w, u = w_u
    j1 = jacobian(lambda v: _bn_of(w, v), u)
    ja = jacobian(lambda v: _bn_of(alpha * w, v), u)
    assert j1.abs().max() > 0.1
    torch.testing.assert_close(ja, j1, rtol=1e-7, atol=1e-9)


def test_bn_backward_multiplies_by_the_bn_jacobian_instead_of_w(w_u):
    """Survey eq. 51 (eq. 3 with BN): for x_l = sigma(BN(W x_{l-1})) (eq. 48-49),
    de/dx_{l-1} = (dBN(W x_{l-1})/dx_{l-1})^T (de/dx_l (.) sigma'(z_l)) -- the BN Jacobian takes W's place."""
    w, u = w_u
    u = u.clone().requires_grad_(True)
    z = _bn_of(w, u)
    r = torch.randn_like(z)  # de/dx_l for the loss e = sum(r * x_l)
    (auto,) = torch.autograd.grad((torch.tanh(z) * r).sum(), u)
    delta = r * (1 - torch.tanh(z.detach()) ** 2)  # de/dx_l (.) sigma'(z_l)
    jac = jacobian(lambda v: _bn_of(w, v), u.detach())  # (batch, C, batch, n_in): rows are coupled
    torch.testing.assert_close(torch.einsum("kc,kcij->ij", delta, jac), auto, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.1, 5.0])
def test_bn_weight_gradient_scales_as_one_over_alpha(w_u, alpha):
    """Ioffe & Szegedy 2015, §3.3: dBN((alpha W) u)/d(alpha W) = 1/alpha dBN(W u)/dW, so larger
    weights take smaller gradient steps (the survey's "larger learning rates")."""
    w, u = w_u
    j1 = jacobian(lambda v: _bn_of(v, u), w)
    ja = jacobian(lambda v: _bn_of(v, u), alpha * w)
    assert j1.abs().max() > 0.1
    torch.testing.assert_close(ja, j1 / alpha, rtol=1e-7, atol=1e-9)


def test_bias_before_bn_is_redundant(w_u):
    """A bias b before BN cancels in y - mu_B: same output, zero gradient for b."""
    w, u = w_u
    b = torch.randn(4, dtype=D, requires_grad=True)
    out = _bn_of(w, u, b)
    torch.testing.assert_close(out, _bn_of(w, u), rtol=1e-9, atol=1e-9)
    (g,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), b)
    assert g.abs().max() < 1e-9


def test_bias_free_batchnorm_mlp_equals_the_biased_one():
    biased = MLP([6, 5, 4, 3], activation="tanh", norm="batch", bias_std=1.0, seed=0).double()
    free = MLP([6, 5, 4, 3], activation="tanh", norm="batch", bias=False, seed=0).double()
    assert biased.linears[0].bias.abs().min() > 0 and free.linears[0].bias is None
    assert free.linears[-1].bias is not None  # the output layer has no BN after it
    with torch.no_grad():
        for a, b in zip(biased.linears, free.linears):
            b.weight.copy_(a.weight)
        free.linears[-1].bias.copy_(biased.linears[-1].bias)
    x = torch.randn(16, 6, dtype=D)
    torch.testing.assert_close(free(x), biased(x), rtol=1e-9, atol=1e-9)
    assert all(n.beta.abs().max() == 0 and n.gamma.eq(1).all() for n in biased.norms)  # bias_std leaves beta alone


# --- registry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NORMALIZATIONS), ids=list(NORMALIZATIONS))
def test_every_registry_entry_builds_and_runs(name):
    kw = {"max_steps": 3} if name == "recurrent_batch" else {}
    dense, conv = get_norm(name, 4, **kw), get_norm(name, (4, 3, 3), **kw)
    for module, x in ((dense, torch.randn(5, 4)), (conv, torch.randn(5, 4, 3, 3))):
        out = module(x, 1) if name == "recurrent_batch" else module(x)
        assert out.shape == x.shape
        if name == "none":
            assert out is x
    if name == "layer":
        assert conv.normalized_shape == (4, 3, 3)  # layer norm over the whole map, batch norm per channel


def test_unknown_norm_names_raise_listing_the_valid_ones():
    with pytest.raises(ValueError) as err:
        get_norm("group", 4)
    assert all(name in str(err.value) for name in norm_names())
    for build in (lambda: MLP([3, 2, 1], norm="group"), lambda: SmallCNN(norm="group"),
                  lambda: VanillaRNN(2, 3, 1, norm="group"), lambda: MLP([3, 1], norm="group")):
        with pytest.raises(ValueError, match="valid names: .*batch.*layer"):
            build()
    with pytest.raises(ValueError, match="not available in MLP"):
        MLP([3, 2, 1], norm="recurrent_batch")
    with pytest.raises(TypeError, match="does not take"):
        get_norm("batch", 4, max_steps=3)
    assert resolve_norm("None") is None and resolve_norm("Batch") == "batch"


# --- models ------------------------------------------------------------------------------------


def _model(kind: str, norm: str | None, **kw):
    if kind == "mlp":
        return MLP([6, 5, 4, 3], activation="tanh", norm=norm, seed=0, **kw), torch.randn(8, 6)
    if kind == "cnn":
        return (SmallCNN(channels=(1, 3, 2), image_size=8, num_classes=3, norm=norm, seed=0, **kw),
                torch.randn(8, 1, 8, 8))
    return VanillaRNN(2, 5, 3, norm=norm, seed=0, **kw), torch.randn(8, 6, 2)


@pytest.mark.parametrize("norm", ["batch", "layer"])
@pytest.mark.parametrize("kind", ["mlp", "cnn", "rnn"])
def test_normalised_models_build_train_and_rebuild(kind, norm):
    model, x = _model(kind, norm)
    target = torch.randint(0, 3, (8,))
    assert model.config["norm"] == norm
    rebuilt = build_model(model.config)
    assert rebuilt.config == model.config
    for (n, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), n
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), target)
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "norm" in n)
    model.eval()
    out = model(x[:1])  # evaluation mode: running statistics, a batch of one works
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    if kind != "rnn":
        assert [m for _, m in model.hidden_modules()] == list(model.activations)
        assert len(model.norms) == len(model.activations)


def test_model_norm_modules_follow_the_papers():
    mlp, _ = _model("mlp", "batch")
    assert [n.num_features for n in mlp.norms] == [5, 4]
    cnn, _ = _model("cnn", "layer")
    assert [n.normalized_shape for n in cnn.norms] == [(3, 6, 6), (2, 4, 4)]
    # the 3-D gains of a layer norm over maps are not conv kernels: initialisation leaves them at 1
    assert all(n.gamma.eq(1).all() and n.beta.eq(0).all() for n in cnn.norms)
    initialize(cnn, "normal", std=3.0)
    assert all(n.gamma.eq(1).all() for n in cnn.norms)
    rnn, _ = _model("rnn", "batch", norm_kwargs={"max_steps": 4})
    assert isinstance(rnn.norm_hh, RecurrentBatchNorm) and rnn.norm_hh.max_steps == 4
    assert rnn.norm_hh.beta is None and rnn.norm_hh.gamma[0].detach().eq(0.1).all()  # Cooijmans et al.
    assert [n for n, _ in rnn.named_parameters()] == ["W_xh", "W_hh", "b_h", "W_ho", "b_o",
                                                      "norm_hh.gamma.0", "norm_xh.gamma.0"]
    assert isinstance(VanillaRNN(2, 5, 3, norm="recurrent_batch").norm_xh, RecurrentBatchNorm)
    assert isinstance(VanillaRNN(2, 5, 3, norm="layer").norm_xh, LayerNorm)


def test_rnn_batchnorm_is_per_step():
    rnn, x = _model("rnn", "batch", norm_kwargs={"max_steps": 3, "momentum": None})
    rnn(x)
    assert rnn.norm_xh.num_batches_tracked.tolist() == [1, 1, 4]  # 6 steps: steps 2..5 share slot 2
    x2 = x.clone()
    x2[:, 0] += 100.0  # shifting the first step's inputs changes only step 0's statistics
    rnn2, _ = _model("rnn", "batch", norm_kwargs={"max_steps": 3, "momentum": None})
    rnn2(x2)
    torch.testing.assert_close(rnn2.norm_xh.running_mean[1:], rnn.norm_xh.running_mean[1:])
    assert (rnn2.norm_xh.running_mean[0] - rnn.norm_xh.running_mean[0]).abs().max() > 1.0


@pytest.mark.parametrize("kind", ["mlp", "cnn", "rnn"])
def test_default_and_none_norm_leave_the_model_plain(kind):
    plain, x = _model(kind, None)
    none, _ = _model(kind, "none")
    assert plain.config["norm"] is None and plain.config["norm_kwargs"] == {}
    assert list(plain.state_dict()) == list(none.state_dict())
    assert not any("norm" in n for n in plain.state_dict())
    torch.testing.assert_close(none(x), plain(x), rtol=0, atol=0)


def test_hand_written_backward_passes_refuse_normalised_models():
    target = torch.randint(0, 3, (8,))
    for backward, kind in ((mlp_backward, "mlp"), (cnn_backward, "cnn")):
        model, x = _model(kind, "batch")
        with pytest.raises(ValueError, match="normalised"):
            backward(model, x, target)
    model, x = _model("rnn", "layer")
    with pytest.raises(ValueError, match="normalised"):
        rnn_bptt(model, x, torch.randn(8, 3))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_hand_written_backward_of_a_bias_free_model_matches_autograd(kind):
    model, x = _model(kind, None, bias=False)
    model.double()
    x, target = x.double(), torch.randint(0, 3, (8,))
    hand = (mlp_backward if kind == "mlp" else cnn_backward)(model, x, target)
    nn.functional.cross_entropy(model(x), target).backward()
    assert sorted(hand.params) == sorted(n for n, _ in model.named_parameters())
    for n, p in model.named_parameters():
        torch.testing.assert_close(hand.params[n], p.grad, rtol=1e-9, atol=1e-12)
