"""Gated networks (survey §2.3.1): LSTM / GRU against torch.nn, peepholes, eq. 59, highway layers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from unstable_gradients.models import MODELS, build_model
from unstable_gradients.models.gated import (CELLS, GRU, LSTM, GRUCell, HighwayLayer, HighwayNet, LSTMCell,
                                             cell_gradient_terms, from_torch, get_cell)

DT = torch.float64
ATOL = 1e-10


def _loss_and_grads(outputs, final, params, x):
    """A loss touching every output and final state, and its gradients w.r.t. ``params`` and ``x``."""
    g = torch.Generator().manual_seed(5)
    loss = (outputs * torch.randn(outputs.shape, generator=g, dtype=DT)).sum()
    for s in final if isinstance(final, tuple) else (final,):
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=DT)).sum()
    return torch.autograd.grad(loss, list(params) + [x])


def _pairs(ours: nn.Module, theirs: nn.Module):
    """(our parameter, torch's parameter) pairs, matched by torch's naming (weight_ih_l0 <-> cells.0.weight_ih)."""
    mine = dict(ours.named_parameters())
    out = []
    for name, p in theirs.named_parameters():
        base, layer = name.rsplit("_l", 1)
        out.append((mine[f"cells.{layer}.{base}"], p))
    return out


LSTM_CASES = [dict(num_layers=1), dict(num_layers=2), dict(num_layers=2, proj_size=3), dict(num_layers=1, bias=False)]


@pytest.mark.parametrize("kw", LSTM_CASES, ids=["one_layer", "two_layers", "projection", "no_bias"])
def test_lstm_matches_torch_outputs_and_gradients(kw):
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, batch_first=True, **kw).to(DT)
    ours = LSTM.from_torch(ref, output_size=2)
    assert ours.proj_size == kw.get("proj_size", 0)
    x = torch.randn(4, 6, 3, dtype=DT, requires_grad=True)
    h0 = torch.randn(kw["num_layers"], 4, kw.get("proj_size") or 5, dtype=DT)
    c0 = torch.randn(kw["num_layers"], 4, 5, dtype=DT)
    out_ref, (h_ref, c_ref) = ref(x, (h0, c0))
    out, (h, c) = ours.recurrent(x, (h0, c0))
    for a, b in ((out, out_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    pairs = _pairs(ours, ref)
    g_ours = _loss_and_grads(out, (h, c), [p for p, _ in pairs], x)
    g_ref = _loss_and_grads(out_ref, (h_ref, c_ref), [q for _, q in pairs], x)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_gru_matches_torch_outputs_and_gradients(num_layers):
    torch.manual_seed(0)
    ref = nn.GRU(3, 5, num_layers=num_layers, batch_first=True).to(DT)
    ours = from_torch(ref, output_size=2)
    assert isinstance(ours, GRU)
    x = torch.randn(4, 6, 3, dtype=DT, requires_grad=True)
    h0 = torch.randn(num_layers, 4, 5, dtype=DT)
    out_ref, h_ref = ref(x, h0)
    out, h = ours.recurrent(x, h0)
    torch.testing.assert_close(out, out_ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=ATOL, rtol=0)
    pairs = _pairs(ours, ref)
    for a, b in zip(_loss_and_grads(out, h, [p for p, _ in pairs], x),
                    _loss_and_grads(out_ref, h_ref, [q for _, q in pairs], x)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell], ids=["lstm_cell", "gru_cell"])
def test_cells_match_torch_cells(cls):
    ref = cls(3, 4).to(DT)
    ours = from_torch(ref)
    assert isinstance(ours, LSTMCell if cls is nn.LSTMCell else GRUCell)
    x = torch.randn(5, 3, dtype=DT)
    if cls is nn.LSTMCell:
        state = (torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT))
        for a, b in zip(ours(x, state), ref(x, state)):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    else:
        h = torch.randn(5, 4, dtype=DT)
        torch.testing.assert_close(ours(x, h), ref(x, h), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "lstm_proj", "gru"])
def test_to_torch_round_trip(kind):
    if kind == "gru":
        ours = GRU(3, 5, 2, num_layers=2, init="xavier_uniform", recurrent_init="orthogonal", seed=1).double()
    else:
        ours = LSTM(3, 5, 2, num_layers=2, proj_size=2 if kind == "lstm_proj" else 0, init="xavier_uniform",
                    recurrent_init="orthogonal", seed=1).double()
    ref = ours.to_torch()
    assert ref.batch_first and next(ref.parameters()).dtype == DT
    x = torch.randn(2, 4, 3, dtype=DT)
    a, b = ours.recurrent(x), ref(x)
    torch.testing.assert_close(a[0], b[0], atol=ATOL, rtol=0)


def test_to_torch_refuses_what_torch_lacks():
    with pytest.raises(ValueError, match="peephole"):
        LSTM(3, 4, 1, peephole=True).to_torch()
    with pytest.raises(ValueError, match="reset_after"):
        GRU(3, 4, 1, reset_after=False).to_torch()


def test_copy_from_torch_checks_shapes_and_options():
    with pytest.raises(ValueError, match="shape"):
        LSTM(3, 4, 1).copy_from_torch(nn.LSTM(3, 5))
    with pytest.raises(ValueError, match="layers"):
        LSTM(3, 4, 1).copy_from_torch(nn.LSTM(3, 4, num_layers=2))
    with pytest.raises(ValueError, match="bias"):
        LSTM(3, 4, 1, bias=False).copy_from_torch(nn.LSTM(3, 4))
    with pytest.raises(ValueError, match="bidirectional"):
        LSTM(3, 4, 1).copy_from_torch(nn.LSTM(3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="from_torch takes"):
        from_torch(nn.Linear(2, 2))


def test_peephole_lstm_with_zero_peepholes_is_the_plain_lstm():
    x = torch.randn(3, 5, 2)
    plain, peep = LSTM(2, 4, 3, seed=0), LSTM(2, 4, 3, peephole=True, seed=0)
    cell = peep.cells[0]
    assert all(torch.count_nonzero(getattr(cell, n)) == 0 for n in ("weight_ci", "weight_cf", "weight_co"))
    assert len(list(peep.parameters())) == len(list(plain.parameters())) + 3
    torch.testing.assert_close(peep(x), plain(x), atol=0, rtol=0)


def test_peephole_cell_against_the_formulas():
    """Gers & Schmidhuber 2000: w_ci, w_cf see C_{t-1}; w_co sees the new C_t."""
    cell = LSTMCell(3, 4, peephole=True).double()
    with torch.no_grad():
        for n in ("weight_ci", "weight_cf", "weight_co"):
            getattr(cell, n).normal_()
    x, h, c = (torch.randn(2, k, dtype=DT) for k in (3, 4, 4))
    a = x @ cell.weight_ih.T + h @ cell.weight_hh.T + cell.bias_ih + cell.bias_hh
    ai, af, ag, ao = a.chunk(4, 1)
    i, f = torch.sigmoid(ai + cell.weight_ci * c), torch.sigmoid(af + cell.weight_cf * c)
    c_new = f * c + i * torch.tanh(ag)
    h_new = torch.sigmoid(ao + cell.weight_co * c_new) * torch.tanh(c_new)
    h_got, c_got = cell(x, (h, c))
    torch.testing.assert_close(c_got, c_new, atol=ATOL, rtol=0)
    torch.testing.assert_close(h_got, h_new, atol=ATOL, rtol=0)


def test_cho_gru_applies_the_reset_gate_before_the_matrix():
    cell = GRUCell(3, 4, reset_after=False).double()
    x, h = torch.randn(2, 3, dtype=DT), torch.randn(2, 4, dtype=DT)
    (w_r, w_z, w_n), (u_r, u_z, u_n) = cell.weight_ih.chunk(3), cell.weight_hh.chunk(3)
    (b_r, b_z, b_n), (c_r, c_z, c_n) = cell.bias_ih.chunk(3), cell.bias_hh.chunk(3)
    r = torch.sigmoid(x @ w_r.T + b_r + h @ u_r.T + c_r)
    z = torch.sigmoid(x @ w_z.T + b_z + h @ u_z.T + c_z)
    n = torch.tanh(x @ w_n.T + b_n + (r * h) @ u_n.T + c_n)  # Cho et al. 2014, eq. 8
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h, atol=ATOL, rtol=0)
    after = GRUCell(3, 4).double()
    after.load_state_dict(cell.state_dict())
    assert not torch.allclose(after(x, h), cell(x, h))  # the two forms differ


def test_forget_bias_and_per_gate_init():
    net = LSTM(3, 4, 1, init="xavier_uniform", recurrent_init="orthogonal", forget_bias=1.0, seed=0)
    cell = net.cells[0]
    assert torch.all(cell.gate_block("bias_ih", "f") == 1) and torch.all(cell.gate_block("bias_hh", "f") == 0)
    for gate in "igo":
        assert torch.count_nonzero(cell.gate_block("bias_ih", gate)) == 0
    for gate in "ifgo":
        w = cell.gate_block("weight_hh", gate).detach()
        torch.testing.assert_close(w @ w.T, torch.eye(4), atol=1e-5, rtol=0)  # each gate's block orthogonal
    default = LSTM(3, 4, 1, forget_bias=None, seed=0).cells[0]  # torch's U[-1/sqrt(H), 1/sqrt(H)]
    assert default.bias_ih.abs().max() <= 0.5 and default.bias_ih.std() > 0.1
    assert torch.all(LSTM(3, 4, 1, seed=0).cells[0].gate_block("bias_ih", "f") == 1)
    with pytest.raises(ValueError, match="gate"):
        cell.gate_block("bias_ih", "x")


def test_states_are_graph_nodes_and_shapes():
    net = LSTM(2, 4, 3, seed=0)
    x = torch.randn(5, 6, 2)
    h0, c0 = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    out, hs, cs = net(x, (h0, c0), return_states=True)
    assert out.shape == (5, 3) and len(hs) == len(cs) == 7 and hs[0] is h0 and cs[0] is c0
    grads = torch.autograd.grad(out.sum(), cs)  # de/dC_t for t = 0 ... T, read off the returned nodes
    assert all(g.shape == (5, 4) for g in grads)
    seq = LSTM(2, 4, 3, many_to_one=False, seed=0)
    torch.testing.assert_close(seq(x)[:, -1], LSTM(2, 4, 3, seed=0)(x))
    assert seq(x).shape == (5, 6, 3)
    gru_out, gru_hs = GRU(2, 4, 3, seed=0)(x, return_states=True)
    assert gru_out.shape == (5, 3) and len(gru_hs) == 7
    with pytest.raises(ValueError, match="batch, T, input_size"):
        net(torch.randn(5, 2))
    with pytest.raises(ValueError, match="initial state"):
        net(x, (torch.randn(2, 5, 4), torch.randn(2, 5, 4)))


@pytest.mark.parametrize("proj_size", [0, 2], ids=["plain", "projection"])
def test_cell_gradient_terms_reproduce_eq59(proj_size):
    net = LSTM(2, 4, 1, num_layers=2, proj_size=proj_size, seed=0).double()
    x = torch.randn(3, 7, 2, dtype=DT)
    loss = lambda out: (out**2).sum()  # noqa: E731
    terms = cell_gradient_terms(net, x, loss, layer=0)
    assert terms["error"] < 1e-12 and len(terms["total"]) == 7 and terms["forget_term"][-1] == 0
    out, _, cs = net(x, return_states=True)  # top layer: totals agree with autograd on the returned nodes
    top = cell_gradient_terms(net, x, loss)
    grads = torch.autograd.grad(loss(out), cs[1:])
    assert top["total"] == pytest.approx([float(g.norm()) for g in grads], rel=1e-12)
    with pytest.raises(ValueError, match="peephole"):
        cell_gradient_terms(LSTM(2, 4, 1, peephole=True), x.float(), loss)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_seeded_construction_leaves_the_global_rng_alone(cls):
    state = torch.get_rng_state()
    a = cls(3, 4, 2, num_layers=2, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    b = cls(3, 4, 2, num_layers=2, seed=7)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_every_cell_builds_and_runs(name):
    cell = get_cell(name, 3, 4)
    out = cell(torch.randn(2, 3))
    h = out[0] if isinstance(out, tuple) else out
    assert h.shape == (2, 2 if name == "projection_lstm" else 4)
    h.sum().backward()


def test_registries_raise_listing_names():
    with pytest.raises(ValueError) as err:
        get_cell("elman", 3, 4)
    assert all(n in str(err.value) for n in CELLS)
    with pytest.raises(ValueError, match="initializer"):
        LSTM(3, 4, 1, init="nope")
    with pytest.raises(ValueError, match="proj_size"):
        LSTMCell(3, 4, proj_size=4)


# ---------------------------------------------------------------- highway networks

def test_highway_gate_bias_is_negative_after_init():
    net = HighwayNet(10, 6, 3, 2, gate_bias=-2.0, seed=0)
    for layer in net.layers:
        assert torch.all(layer.gate.bias == -2.0)
        assert torch.count_nonzero(layer.transform.bias) == 0
    net(torch.randn(8, 10))
    act = net.gate_activity()
    assert len(act) == 3 and all(0 < a < 0.5 for a in act)  # starts closed-ish: T near sigma(-2) = 0.12


def test_highway_with_closed_transform_gate_is_the_identity():
    layer = HighwayLayer(5, gate_bias=-1e3).double()  # T = sigma(-1000) = 0 exactly
    x = torch.randn(4, 5, dtype=DT, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, x, atol=0, rtol=0)
    (g,) = torch.autograd.grad(y.sum(), x)  # eq. 63: only the carry path is left
    torch.testing.assert_close(g, torch.ones_like(g), atol=0, rtol=0)
    assert torch.all(layer.last_transform == 0)
    net = HighwayNet(6, 5, 4, 3, gate_bias=-1e3, seed=0).double()
    x = torch.randn(2, 6, dtype=DT)
    skip = net.output_layer(net.input_activation(net.input_layer(x)))
    torch.testing.assert_close(net(x), skip, atol=0, rtol=0)


def test_highway_formula_uncoupled_gate_and_plain_variant():
    layer = HighwayLayer(4, activation="tanh", coupled=False, gate_bias=-1.0).double()
    assert torch.all(layer.carry.bias == 1.0)
    x = torch.randn(3, 4, dtype=DT)
    h = torch.tanh(layer.transform(x))
    expected = h * torch.sigmoid(layer.gate(x)) + x * torch.sigmoid(layer.carry(x))  # eq. 60-62
    torch.testing.assert_close(layer(x), expected, atol=ATOL, rtol=0)
    gated, plain = HighwayNet(7, 5, 3, 2, seed=0), HighwayNet(7, 5, 3, 2, plain=True, seed=0)
    gates = sum(p.numel() for layer in gated.layers for p in layer.gate.parameters())
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in gated.parameters()) - gates
    assert all(layer.gate is None for layer in plain.layers)
    plain(torch.randn(2, 7)).sum().backward()
    with pytest.raises(ValueError, match="no gates"):
        plain.gate_activity()
    with pytest.raises(ValueError, match="forward"):
        HighwayNet(7, 5, 2, 2).gate_activity()
    assert [n for n, _ in gated.hidden_modules()] == ["layer1", "layer2", "layer3"]


# ---------------------------------------------------------------- configs

def _gated_models():
    return {
        "lstm": (LSTM(3, 4, 2, num_layers=2, peephole=True, init="xavier_uniform", recurrent_init="orthogonal",
                      recurrent_kwargs={"gain": 1.1}, seed=3), torch.randn(2, 5, 3)),
        "lstm_proj": (LSTM(3, 4, 2, proj_size=2, many_to_one=False, forget_bias=2.0, seed=3), torch.randn(2, 5, 3)),
        "gru": (GRU(3, 4, 2, reset_after=False, seed=3), torch.randn(2, 5, 3)),
        "highway": (HighwayNet(9, 5, 3, 2, activation="tanh", gate_bias=-3.0, coupled=False, seed=3),
                    torch.randn(2, 9)),
    }


@pytest.mark.parametrize("name", ["lstm", "lstm_proj", "gru", "highway"])
def test_build_model_round_trips(name):
    model, x = _gated_models()[name]
    rebuilt = build_model(model.config)
    assert type(rebuilt) is type(model) and rebuilt.config == model.config
    for (n, p), q in zip(model.named_parameters(), rebuilt.parameters()):
        assert torch.equal(p, q), n
    torch.testing.assert_close(rebuilt(x), model(x), atol=0, rtol=0)
    assert model.config["kind"] in MODELS
