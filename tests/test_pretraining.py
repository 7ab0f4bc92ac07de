"""Layer-wise pre-training: the RBM's energies and CD gradients against brute-force enumeration and
autograd on a tiny RBM, CD/PCD training on MNIST, DBN unrolling, the three auto-encoders, and
``greedy_layerwise_pretrain``."""
from __future__ import annotations

import pytest
import torch

from unstable_gradients.models import MLP
from unstable_gradients.pretraining import (
    AUTOENCODERS,
    DBN,
    PRETRAIN_KINDS,
    RBM,
    AutoEncoder,
    DenoisingAutoEncoder,
    SparseAutoEncoder,
    StackedAutoEncoder,
    _all_binary,
    greedy_layerwise_pretrain,
    train_autoencoder,
    train_rbm,
    unroll_to_mlp,
)
from unstable_gradients.training import train


def _tiny_rbm(n_visible=4, n_hidden=3, seed=0) -> RBM:
    """A float64 RBM with O(1) weights and biases, so that its distribution is far from uniform."""
    rbm = RBM(n_visible, n_hidden, weight_std=1.0, seed=seed).double()
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        rbm.b.copy_(torch.randn(n_visible, generator=gen, dtype=torch.float64) * 0.5)
        rbm.c.copy_(torch.randn(n_hidden, generator=gen, dtype=torch.float64) * 0.5)
    return rbm


V_DATA = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)


def _bernoulli_table(p: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """P[row, s] = prod_j p_j^{s_j} (1 - p_j)^{1 - s_j} for every row of probabilities p."""
    return torch.exp(states @ torch.log(p).T + (1 - states) @ torch.log1p(-p).T).T


# ------------------------------------------------------------------------- energies, partition fn

def test_free_energy_is_the_marginal_of_the_energy():
    rbm = _tiny_rbm()
    vs, hs = _all_binary(4, torch.float64), _all_binary(3, torch.float64)
    assert vs.shape == (16, 4) and len(set(map(tuple, vs.tolist()))) == 16
    with torch.no_grad():
        brute = torch.stack([-torch.logsumexp(-rbm.energy(v.expand(8, 4), hs), 0) for v in vs])
        torch.testing.assert_close(rbm.free_energy(vs), brute)


@pytest.mark.parametrize("shape", [(4, 3), (3, 5)], ids=["sum_over_h", "sum_over_v"])
def test_log_partition_against_the_joint_enumeration(shape):
    nv, nh = shape
    rbm = _tiny_rbm(nv, nh)
    vs, hs = _all_binary(nv, torch.float64), _all_binary(nh, torch.float64)
    V, H = vs.repeat_interleave(len(hs), 0), hs.repeat(len(vs), 1)  # every (v, h) pair
    with torch.no_grad():
        log_z = torch.logsumexp(-rbm.energy(V, H), 0)
        torch.testing.assert_close(rbm.log_partition(), log_z)
        p = torch.exp(-rbm.free_energy(vs) - rbm.log_partition())
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)


def test_conditionals_are_the_normalised_joint():
    rbm = _tiny_rbm()
    hs = _all_binary(3, torch.float64)
    v = V_DATA[:1]
    with torch.no_grad():
        joint = torch.exp(-rbm.energy(v.expand(8, 4), hs))
        p_h = (joint / joint.sum())[:, None] * hs  # p(h | v) weighted states
        torch.testing.assert_close(rbm.hidden_probs(v)[0], p_h.sum(0))


# ----------------------------------------------------------------------------------- CD gradients

def test_phase_gradient_is_the_free_energy_difference_gradient():
    """Positive minus negative statistics = -d/dθ [mean F(v_pos) - mean F(v_neg)] on fixed samples."""
    rbm = _tiny_rbm()
    v_neg = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    grad = rbm.phase_gradient(V_DATA, v_neg)
    objective = -(rbm.free_energy(V_DATA).mean() - rbm.free_energy(v_neg).mean())
    auto = dict(zip("Wbc", torch.autograd.grad(objective, [rbm.W, rbm.b, rbm.c])))
    for name in "Wbc":
        torch.testing.assert_close(grad[name], auto[name], rtol=1e-12, atol=1e-12)


def _cd1_expectation(rbm: RBM, v0: torch.Tensor) -> dict[str, torch.Tensor]:
    """E[CD-1 gradient] exactly: the one-step kernel T(v0 -> v1) = sum_h p(h | v0) p(v1 | h) by
    enumeration of all h and v1."""
    vs, hs = _all_binary(rbm.n_visible, torch.float64), _all_binary(rbm.n_hidden, torch.float64)
    with torch.no_grad():
        T = _bernoulli_table(rbm.hidden_probs(v0), hs) @ _bernoulli_table(rbm.visible_probs(hs), vs)
        w = T.mean(0)  # weight of each v1, averaged over the batch
        ph_pos, ph_neg = rbm.hidden_probs(v0), rbm.hidden_probs(vs)
        return {"W": ph_pos.T @ v0 / len(v0) - (ph_neg * w[:, None]).T @ vs,
                "b": v0.mean(0) - w @ vs, "c": ph_pos.mean(0) - w @ ph_neg}


def test_cd1_estimate_is_unbiased_for_its_exact_expectation():
    rbm = _tiny_rbm()
    exact = _cd1_expectation(rbm, V_DATA)
    gen = torch.Generator().manual_seed(0)
    estimate = rbm.cd_gradient(V_DATA.repeat(5000, 1), k=1, generator=gen)  # 20,000 chains
    for name in "Wbc":  # entries have sd <= 0.5, so the standard error is <= 0.0035
        torch.testing.assert_close(estimate[name], exact[name], rtol=0, atol=0.015)


def test_cd_k_approaches_the_exact_log_likelihood_gradient_and_cd1_is_biased():
    rbm = _tiny_rbm()
    exact = dict(zip("Wbc", torch.autograd.grad(rbm.log_likelihood(V_DATA), [rbm.W, rbm.b, rbm.c])))
    gen = torch.Generator().manual_seed(1)
    long_chains = rbm.cd_gradient(V_DATA.repeat(5000, 1), k=50, generator=gen)
    for name in "Wbc":
        torch.testing.assert_close(long_chains[name], exact[name], rtol=0, atol=0.02)
    cd1 = _cd1_expectation(rbm, V_DATA)
    assert float((cd1["W"] - exact["W"]).abs().max()) > 0.05  # CD-1's bias, well above the MC error


def test_persistent_chains_carry_over_and_reset():
    rbm = _tiny_rbm()
    gen = torch.Generator().manual_seed(0)
    assert rbm.chains is None
    rbm.cd_gradient(V_DATA, k=1, persistent=True, generator=gen)
    first = rbm.chains.clone()
    assert first.shape == V_DATA.shape and set(first.unique().tolist()) <= {0.0, 1.0}
    rbm.cd_gradient(V_DATA[:2], k=1, persistent=True, generator=gen)  # the chains keep their number
    assert rbm.chains.shape == V_DATA.shape
    rbm.reset_chains()
    assert rbm.chains is None
    rbm.cd_gradient(V_DATA, k=1, generator=gen)  # plain CD leaves no chains
    assert rbm.chains is None


def test_cd_step_applies_the_gradient():
    rbm = _tiny_rbm()
    W0, b0, c0 = (p.detach().clone() for p in (rbm.W, rbm.b, rbm.c))
    err0 = float(((V_DATA - torch.sigmoid(torch.sigmoid(V_DATA @ W0.T + c0) @ W0 + b0)) ** 2).mean())
    grad = rbm.cd_gradient(V_DATA, k=2, generator=torch.Generator().manual_seed(5))
    err = rbm.cd_step(V_DATA, k=2, lr=0.1, weight_decay=0.01, generator=torch.Generator().manual_seed(5))
    assert err == pytest.approx(err0, rel=1e-12)  # mean-field reconstruction error before the step
    torch.testing.assert_close(rbm.W.detach(), W0 + 0.1 * (grad["W"] - 0.01 * W0))
    torch.testing.assert_close(rbm.b.detach(), b0 + 0.1 * grad["b"])
    torch.testing.assert_close(rbm.c.detach(), c0 + 0.1 * grad["c"])


def test_argument_checks():
    rbm = _tiny_rbm()
    with pytest.raises(ValueError, match="k must be"):
        rbm.gibbs(V_DATA, k=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_rbm(rbm, V_DATA * 2)
    with pytest.raises(ValueError, match="<= 20"):
        RBM(30, 25).log_partition()
    with pytest.raises(ValueError, match="batch_size"):
        train_rbm(rbm, V_DATA, batch_size=0)


# ------------------------------------------------------------------------------------ MNIST runs

@pytest.fixture(scope="module")
def binary_mnist(mnist_small):
    """The first 500 training images, binarised at 0.5 (as load_mnist(subset=500) > 0.5)."""
    return (mnist_small[0][:500] > 0.5).float()


@pytest.mark.parametrize("persistent", [False, True], ids=["cd1", "pcd1"])
def test_rbm_reconstruction_error_falls_on_mnist(binary_mnist, persistent):
    history = train_rbm(RBM(784, 64, seed=0), binary_mnist, epochs=3, batch_size=20, lr=0.1,
                        persistent=persistent, seed=0)
    assert len(history) == 3 and history[0] > history[1] > history[2]
    assert history[-1] < 0.8 * history[0]
    again = train_rbm(RBM(784, 64, seed=0), binary_mnist, epochs=3, batch_size=20, lr=0.1,
                      persistent=persistent, seed=0)
    assert again == history  # deterministic given the seeds


def test_dbn_unrolls_into_an_mlp_with_the_rbm_hidden_probabilities(binary_mnist):
    dbn = DBN([784, 32, 16], seed=0)
    history = dbn.pretrain(binary_mnist, epochs=1, batch_size=50, lr=0.1, seed=0)
    assert len(history) == 2 and dbn.history is history
    mlp = dbn.to_mlp(10, seed=3)
    assert isinstance(mlp, MLP) and mlp.sizes == [784, 32, 16, 10] and mlp.config["activation"] == "sigmoid"
    x = binary_mnist[:50]
    outs = []
    hooks = [act.register_forward_hook(lambda _m, _i, o: outs.append(o.detach())) for act in mlp.activations]
    mlp(x)
    for h in hooks:
        h.remove()
    rbm1, rbm2 = dbn.rbms
    p1 = rbm1.hidden_probs(x).detach()
    torch.testing.assert_close(outs[0], p1)
    torch.testing.assert_close(outs[1], rbm2.hidden_probs(p1).detach())
    torch.testing.assert_close(dbn.transform(x)[1], outs[1])
    # the output layer is fresh (from MLP's own seeded initialiser), and the net fine-tunes
    fresh = MLP([784, 32, 16, 10], activation="sigmoid", seed=3)
    torch.testing.assert_close(mlp.linears[-1].weight, fresh.linears[-1].weight)
    res = train(mlp, binary_mnist, torch.arange(500) % 10, epochs=1, batch_size=50, lr=0.5, progress=False)
    assert res.ok


# ----------------------------------------------------------------------------------- auto-encoders

@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("kind", sorted(AUTOENCODERS))
def test_autoencoders_reduce_reconstruction_error(binary_mnist, kind, tied):
    ae = AUTOENCODERS[kind](784, 32, tied=tied, seed=0)
    start = ae.reconstruction_error(binary_mnist)
    history = train_autoencoder(ae, binary_mnist, epochs=2, batch_size=20, lr=0.1, seed=0)
    assert len(history) == 2 and history[1] < history[0]
    assert ae.reconstruction_error(binary_mnist) < 0.5 * start
    n_params = sum(p.numel() for p in ae.parameters())
    assert n_params == 784 * 32 + 32 + 784 + (0 if tied else 784 * 32)


def test_bias_from_data_avoids_the_saturated_code_trap(binary_mnist):
    """The claim in ``train_autoencoder``'s docstring: without the decoder-bias initialisation the
    untied sigmoid auto-encoder saturates its codes at 1 and learns only the mean image."""
    codes, errors = {}, {}
    for flag in (False, True):
        ae = AutoEncoder(784, 32, seed=0)
        errors[flag] = train_autoencoder(ae, binary_mnist, epochs=4, batch_size=20, lr=0.1, seed=0,
                                         bias_from_data=flag)[-1]
        codes[flag] = float(ae.encode(binary_mnist).detach().mean())
    assert codes[False] > 0.95 and errors[False] > 0.08
    assert codes[True] < 0.6 and errors[True] < 0.07
    p = binary_mnist.mean(0).clamp(1e-3, 1 - 1e-3)
    for tied in (False, True):
        ae = AutoEncoder(784, 8, tied=tied)
        ae.init_bias_from_data(binary_mnist)
        torch.testing.assert_close(torch.sigmoid(ae.decode_logits(torch.zeros(1, 8))[0].detach()), p)
    rbm = RBM(784, 8)
    rbm.init_bias_from_data(binary_mnist)
    torch.testing.assert_close(torch.sigmoid(rbm.b.detach()), p)


@pytest.mark.parametrize("sparsity", ["kl", "l1"])
def test_sparse_penalty_lowers_the_mean_activation(binary_mnist, sparsity):
    weight = {"kl": 1.0, "l1": 0.3}[sparsity]
    kw = dict(epochs=2, batch_size=20, lr=0.1, seed=0)
    plain, sparse = AutoEncoder(784, 32, seed=0), SparseAutoEncoder(784, 32, sparsity=sparsity,
                                                                    sparsity_weight=weight, seed=0)
    train_autoencoder(plain, binary_mnist, **kw)
    train_autoencoder(sparse, binary_mnist, **kw)
    with torch.no_grad():
        mean_plain, mean_sparse = float(plain.encode(binary_mnist).mean()), float(sparse.encode(binary_mnist).mean())
    assert mean_sparse < 0.5 * mean_plain


def test_sparsity_penalty_formulas():
    h = torch.tensor([[0.1, 0.5], [0.3, 0.9]])
    kl = SparseAutoEncoder(3, 2, sparsity="kl", sparsity_weight=2.0, sparsity_target=0.2)
    rho_hat = torch.tensor([0.2, 0.7])
    expected = 2.0 * (0.2 * torch.log(0.2 / rho_hat) + 0.8 * torch.log(0.8 / (1 - rho_hat))).sum()
    torch.testing.assert_close(kl.sparsity_penalty(h), expected)
    l1 = SparseAutoEncoder(3, 2, sparsity="l1", sparsity_weight=0.5)
    torch.testing.assert_close(l1.sparsity_penalty(h), torch.tensor(0.5 * (0.6 + 1.2) / 2))
    assert float(AutoEncoder(3, 2).sparsity_penalty(h)) == 0.0


@pytest.mark.parametrize("corruption", [0.1, 0.25, 0.5])
def test_denoising_masks_exactly_the_requested_fraction(corruption):
    dae = DenoisingAutoEncoder(200, 8, corruption=corruption)
    x = torch.rand(64, 200) * 0.9 + 0.1  # no zeros before corruption
    out = dae.corrupt(x, torch.Generator().manual_seed(0))
    zeros = (out == 0).sum(1)
    assert (zeros == round(corruption * 200)).all()  # the same number in every row (Vincent et al. 2008)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept])
    masks = [(dae.corrupt(x, torch.Generator().manual_seed(s)) == 0) for s in (0, 1)]
    assert not torch.equal(*masks)  # fresh noise per seed
    assert torch.equal(AutoEncoder(200, 8).corrupt(x), x)  # plain AE: no corruption


def test_autoencoder_argument_checks():
    with pytest.raises(ValueError, match="corruption > 0"):
        DenoisingAutoEncoder(4, 2, corruption=0.0)
    with pytest.raises(ValueError, match="valid choices"):
        AutoEncoder(4, 2, sparsity="l2")
    with pytest.raises(ValueError, match="sigmoid"):
        SparseAutoEncoder(4, 2, activation="relu", sparsity="kl")
    with pytest.raises(ValueError, match="elementwise"):
        AutoEncoder(4, 2, activation="maxout")
    with pytest.raises(ValueError, match="valid names: autoencoder, denoising, sparse"):
        StackedAutoEncoder([4, 2], kind="contractive")


# ---------------------------------------------------------------------------- stacks and unrolling

@pytest.mark.parametrize("kind", PRETRAIN_KINDS)
def test_greedy_layerwise_pretrain_every_kind(binary_mnist, kind):
    X = binary_mnist[:200]
    mlp, stack = greedy_layerwise_pretrain([784, 24, 12], X, kind=kind, num_classes=10, epochs=1,
                                           batch_size=20, seed=0, return_stack=True)
    assert mlp.sizes == [784, 24, 12, 10]
    assert len(stack.history) == 2 and all(len(h) == 1 for h in stack.history)
    for linear, layer in zip(mlp.linears, stack.layers):
        W, c = layer.encoder_params()
        assert torch.equal(linear.weight, W) and torch.equal(linear.bias, c)
    with torch.no_grad():  # the unrolled net computes the stack's top code
        top = mlp.activations[1](mlp.linears[1](mlp.activations[0](mlp.linears[0](X))))
    torch.testing.assert_close(top, stack.transform(X)[-1])


def test_stacked_autoencoder_passes_layer_options_and_activation():
    stack = StackedAutoEncoder([20, 8, 4], kind="denoising", activation="tanh", corruption=0.3, seed=0)
    assert all(isinstance(ae, DenoisingAutoEncoder) and ae.corruption == 0.3 for ae in stack.layers)
    mlp = stack.to_mlp(3)
    assert mlp.config["activation"] == "tanh" and mlp.sizes == [20, 8, 4, 3]


def test_pretrain_and_unroll_argument_checks():
    X = torch.rand(10, 6)
    with pytest.raises(ValueError, match="valid names: rbm, autoencoder, denoising, sparse"):
        greedy_layerwise_pretrain([6, 3], X, kind="boltzmann")
    with pytest.raises(ValueError, match="kind='rbm' only"):
        greedy_layerwise_pretrain([6, 3], X, kind="sparse", k=5)
    with pytest.raises(ValueError, match="do not follow"):
        unroll_to_mlp([(torch.zeros(3, 6), torch.zeros(3)), (torch.zeros(2, 4), torch.zeros(2))], 2)
    with pytest.raises(ValueError, match="at least one"):
        DBN([6])
