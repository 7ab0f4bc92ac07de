"""Survey §3.1 (``models.stacked``): a stacked LSTM with none, residual or highway connections
between layers, against torch's multi-layer LSTM and against its own Python cell loop."""
from __future__ import annotations

import pytest
import torch

from unstable_gradients.models import CONNECTIONS, StackedLSTM, build_model

_F64 = torch.float64


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_fused_kernel_matches_the_cell_loop(connection):
    net = StackedLSTM(3, 6, 2, num_layers=3, connection=connection, many_to_one=False, seed=0).double()
    x = torch.randn(4, 7, 3, dtype=_F64)
    out_t, ys_t = net(x, return_layers=True)
    g_t = torch.autograd.grad(out_t.sum(), list(net.parameters()))
    net.engine = "cells"
    out_c, ys_c = net(x, return_layers=True)
    g_c = torch.autograd.grad(out_c.sum(), list(net.parameters()))
    torch.testing.assert_close(out_t, out_c, rtol=0, atol=1e-12)
    for a, b in zip(g_t + tuple(ys_t), g_c + tuple(ys_c)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_no_connection_is_torch_s_multilayer_lstm():
    net = StackedLSTM(3, 5, 2, num_layers=4, connection="none", many_to_one=False, seed=1).double()
    ref = torch.nn.LSTM(3, 5, num_layers=4, batch_first=True).double()
    for l, cell in enumerate(net.cells):
        cell.copy_to_torch(ref, layer=l)
    x = torch.randn(2, 6, 3, dtype=_F64)
    _, ys = net(x, return_layers=True)
    torch.testing.assert_close(ys[-1], ref(x)[0], rtol=0, atol=1e-12)


def test_residual_and_highway_add_the_layer_below():
    x = torch.randn(3, 5, 4, dtype=_F64)
    res = StackedLSTM(4, 6, 2, num_layers=3, connection="residual", seed=2).double()
    plain = StackedLSTM(4, 6, 2, num_layers=3, connection="none", seed=2).double()
    ys = res.layers(x)
    layer2_alone = plain._run_layer(1, ys[0])        # same weights: same seed
    torch.testing.assert_close(ys[1], layer2_alone + ys[0])
    shut = StackedLSTM(4, 6, 2, num_layers=5, connection="highway", gate_bias=-60.0, seed=2).double()
    ys = shut.layers(x)                               # gates shut: every layer carries y^{(1)}
    torch.testing.assert_close(ys[-1], ys[0], rtol=0, atol=1e-20)
    assert len(shut.gates) == 4 and len(res.gates) == 0


def test_forget_bias_and_config():
    net = StackedLSTM(2, 4, 3, num_layers=2, forget_bias=1.5, seed=3)
    assert torch.all(net.cells[1].gate_block("bias_ih", "f") == 1.5)
    assert torch.all(net.cells[1].gate_block("bias_hh", "f") == 0)
    twin = build_model(net.config)
    x = torch.randn(2, 3, 2)
    torch.testing.assert_close(twin(x), net(x))
    assert net(x).shape == (2, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid names: highway, none, residual"):
        StackedLSTM(2, 4, 3, connection="dense")
    with pytest.raises(ValueError, match="valid names"):
        StackedLSTM(2, 4, 3, engine="cuda")
    with pytest.raises(ValueError, match="num_layers"):
        StackedLSTM(2, 4, 3, num_layers=0)
    with pytest.raises(ValueError, match="batch, T"):
        StackedLSTM(2, 4, 3)(torch.zeros(2, 3))
