"""Survey §3.1 (``models.unitary``): the orthogonal maps, the orthogonal RNN kept orthogonal by its
parametrisation through training, modReLU, and the uRNN of Arjovsky, Shah & Bengio (2016)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from unstable_gradients.models import build_model
from unstable_gradients.models.unitary import (ORTHOGONAL_MAPS, OrthogonalRNN, UnitaryRNN, modrelu,
                                               orthogonal_matrix, skew)

_F64 = torch.float64


def _max_dev(W: torch.Tensor) -> float:
    eye = torch.eye(W.shape[0], dtype=W.dtype)
    W = W.detach()
    return float((W.conj().T @ W - eye).abs().max())


@pytest.mark.parametrize("name", list(ORTHOGONAL_MAPS))
def test_maps_give_orthogonal_matrices(name):
    A = torch.randn(12, 12, dtype=_F64) * 3
    S = skew(A)
    assert torch.equal(S.T, -S)
    W = orthogonal_matrix(A, name)
    assert _max_dev(W) < 1e-12


def test_cayley_is_the_formula_and_expm_matches_torch():
    A = torch.randn(8, 8, dtype=_F64)
    S, eye = skew(A), torch.eye(8, dtype=_F64)
    W = orthogonal_matrix(A, "cayley")
    torch.testing.assert_close(W @ (eye + S), eye - S)              # W = (I - S)(I + S)^{-1}
    # torch's parametrisation (no trivialisation) builds exp(X.tril() - X.tril()^T); with X = A^T
    # strictly lower, that is exp(-S) = exp(S)^T
    A = torch.triu(A, 1)
    lin = torch.nn.Linear(8, 8, bias=False).double()
    torch.nn.utils.parametrizations.orthogonal(lin, orthogonal_map="matrix_exp", use_trivialization=False)
    with torch.no_grad():
        lin.parametrizations.weight.original.copy_(A.T)
    torch.testing.assert_close(lin.weight, orthogonal_matrix(A, "expm").T)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: cayley, expm"):
        orthogonal_matrix(torch.zeros(3, 3), "qr")
    with pytest.raises(ValueError, match="valid names"):
        OrthogonalRNN(1, 4, 2, activation="relu6")
    with pytest.raises(ValueError, match="square"):
        skew(torch.zeros(2, 3))


@pytest.mark.parametrize("name", list(ORTHOGONAL_MAPS))
def test_orthogonal_rnn_stays_orthogonal_after_large_steps(name):
    net = OrthogonalRNN(3, 24, 4, parametrisation=name, activation="tanh", seed=0)
    A0 = net.A.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=20.0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        x, y = torch.randn(16, 10, 3, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    assert float((net.A.detach() - A0).abs().max()) > 0.1          # the steps did move A
    W = net.recurrent_matrix().detach()
    assert W.dtype == torch.float32 and _max_dev(W) < 1e-5


def test_linear_orthogonal_rnn_preserves_gradient_norm():
    net = OrthogonalRNN(2, 10, 3, activation="linear", seed=2).double()
    x = torch.randn(5, 30, 2, dtype=_F64)
    out, hs = net(x, return_hidden=True)
    grads = torch.autograd.grad(out.sum(), hs[1:])
    norms = torch.stack([g.norm() for g in grads])
    torch.testing.assert_close(norms, norms[-1].expand_as(norms))  # dh_{t}/dh_{t-1} = W: norm-preserving


def test_modrelu_definition():
    z = torch.tensor([3 + 4j, -0.3 + 0.4j, 1j], dtype=torch.complex128)
    b = torch.tensor([-1.0, -1.0, 0.5], dtype=_F64)
    out = modrelu(z, b)
    expected = torch.tensor([(5 - 1) * (3 + 4j) / 5, 0, 1.5j], dtype=torch.complex128)
    torch.testing.assert_close(out, expected)
    r = modrelu(torch.tensor([-2.0, 0.5, 3.0], dtype=_F64), torch.tensor(-1.0, dtype=_F64))
    torch.testing.assert_close(r, torch.tensor([-1.0, 0.0, 2.0], dtype=_F64))   # sign(z) ReLU(|z| + b)
    z0 = torch.zeros(3, dtype=_F64, requires_grad=True)
    modrelu(z0, torch.zeros(3, dtype=_F64)).sum().backward()
    assert torch.isfinite(z0.grad).all()


def test_urnn_preserves_norm_and_is_unitary():
    net = UnitaryRNN(3, 32, 2, seed=0)
    h = torch.randn(7, 32, dtype=torch.complex64)
    Wh = net.apply_recurrent(h)
    torch.testing.assert_close(Wh.abs().norm(dim=1), h.abs().norm(dim=1), rtol=1e-5, atol=0)
    W = net.double().matrix()
    assert W.dtype == torch.complex128 and _max_dev(W) < 1e-12
    torch.testing.assert_close(net.apply_recurrent(h.to(torch.complex128)), h.to(torch.complex128) @ W.T)


def test_urnn_factors_are_the_paper_s():
    net = UnitaryRNN(1, 6, 1, seed=3).double()
    with torch.no_grad():   # every factor but one is the identity: W = F^{-1} Π F
        net.theta.zero_()
        net.reflection.zero_()
        net.reflection[:, 0, 0] = 1.0   # R = I - 2 e_0 e_0^T, v = e_0
    eye = torch.eye(6, dtype=torch.complex128)
    Fm = torch.fft.fft(eye, norm="ortho")  # DFT matrix (symmetric)
    R = torch.diag(torch.tensor([-1.0, 1, 1, 1, 1, 1], dtype=torch.complex128))
    P = eye[net.perm]
    expected = R @ Fm.conj() @ P @ R @ Fm      # D = I; F^{-1} = conj(F)
    torch.testing.assert_close(net.matrix(), expected)


def test_urnn_dense_forward_matches_factored_and_gradients_reach_every_parameter():
    net = UnitaryRNN(4, 8, 3, many_to_one=False, seed=1).double()
    with torch.no_grad():
        net.b.fill_(-0.05)       # make the modReLU bias matter
    x = torch.randn(5, 9, 4, dtype=_F64)
    torch.testing.assert_close(net(x), net.forward_factored(x))
    F.cross_entropy(net(x).reshape(-1, 3), torch.randint(0, 3, (45,))).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and float(p.grad.abs().max()) > 0, name


def test_urnn_initialisation_follows_the_paper():
    net = UnitaryRNN(10, 400, 10, seed=0).requires_grad_(False)
    assert float(net.theta.abs().max()) <= math.pi and float(net.reflection.abs().max()) <= 1
    assert float(net.b.abs().max()) == 0
    h0 = torch.complex(net.h0_re, net.h0_im)
    assert abs(float(h0.abs().pow(2).sum()) - 1.0) < 0.15   # E||h_0||^2 = 1
    assert sorted(net.perm.tolist()) == list(range(400))


@pytest.mark.parametrize("net", [OrthogonalRNN(3, 5, 2, parametrisation="cayley", activation="modrelu", seed=4),
                                 UnitaryRNN(3, 5, 2, seed=4)], ids=["orthogonal_rnn", "urnn"])
def test_config_rebuilds_the_same_net(net):
    twin = build_model(net.config)
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(twin(x), net(x))
