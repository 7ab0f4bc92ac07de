"""Post-LN / pre-LN Transformer blocks (``models.transformer``) and their experiments
(``experiments.transformer_exp``): parity with torch.nn.TransformerEncoderLayer, the block
equations, the warm-up schedule, the depth-exponent fit, clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unstable_gradients.experiments import transformer_exp as te
from unstable_gradients.models import build_model
from unstable_gradients.models.transformer import (EncoderBlock, MultiHeadSelfAttention, SequenceTransformer,
                                                   TransformerEncoder, norm_first_of)
from unstable_gradients.norm import LayerNorm

F64 = torch.float64


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_block_matches_torch_encoder_layer(norm_first):
    p = te.torch_parity(norm_first)
    assert p["output"] < 1e-12 and p["grad"] < 1e-12
    assert p["params_ours"] == p["params_torch"]


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_block_follows_its_equation(norm_first):
    torch.manual_seed(0)
    b = EncoderBlock(8, 2, 16, norm_first=norm_first).to(F64)
    x = torch.randn(2, 5, 8, dtype=F64)
    if norm_first:   # x + F(LN(x))
        h = x + b.attn(b.norm1(x))
        want = h + b.ffn(b.norm2(h))
    else:            # LN(x + F(x))
        h = b.norm1(x + b.attn(x))
        want = b.norm2(h + b.ffn(h))
    assert torch.allclose(b(x), want, atol=1e-14)


def test_attention_rows_are_distributions_and_causal_mask_hides_the_future():
    torch.manual_seed(0)
    mha = MultiHeadSelfAttention(8, 2).to(F64)
    x = torch.randn(3, 6, 8, dtype=F64)
    att = mha.attention(x, causal=True)
    assert torch.allclose(att.sum(-1), torch.ones(3, 2, 6, dtype=F64))
    assert float(att.detach().triu(1).abs().max()) == 0.0
    x2 = x.clone()
    x2[:, 4:] += 1.0                      # change the last two positions only
    assert torch.allclose(mha(x, causal=True)[:, :4], mha(x2, causal=True)[:, :4])
    assert not torch.allclose(mha(x)[:, :4], mha(x2)[:, :4])


def test_pre_ln_stack_ends_with_a_layer_norm_and_post_ln_does_not():
    assert isinstance(TransformerEncoder(2, 8, 2, 16, norm_first=True).final_norm, LayerNorm)
    assert isinstance(TransformerEncoder(2, 8, 2, 16, norm_first=False).final_norm, nn.Identity)
    torch.manual_seed(0)
    out = TransformerEncoder(3, 8, 2, 16, norm_first=True).to(F64)(torch.randn(2, 4, 8, dtype=F64))
    assert torch.allclose(out.mean(-1), torch.zeros(2, 4, dtype=F64), atol=1e-12)


def test_sequence_model_shape_and_config_round_trip():
    torch.manual_seed(0)
    m = SequenceTransformer(vocab=7, max_len=5, num_layers=2, d_model=8, n_heads=2, d_ff=16, placement="pre_ln")
    x = torch.randint(0, 7, (3, 5))
    assert m(x).shape == (3, 5, 7)
    m2 = build_model(m.config)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m(x), m2(x))


def test_weights_start_xavier_with_zero_biases():
    torch.manual_seed(0)
    lin = MultiHeadSelfAttention(64, 4).w_v.requires_grad_(False)
    bound = math.sqrt(6 / 128)
    assert float(lin.weight.abs().max()) <= bound and float(lin.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert float(lin.bias.abs().max()) == 0.0


def test_bad_configurations_raise_clear_errors():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        MultiHeadSelfAttention(10, 3)
    with pytest.raises(ValueError, match="valid names: post_ln, pre_ln"):
        norm_first_of("sandwich")
    with pytest.raises(ValueError, match="valid names"):
        EncoderBlock(8, 2, 16, activation="swishy")
    with pytest.raises(ValueError, match="num_layers"):
        TransformerEncoder(0, 8, 2, 16)
    with pytest.raises(ValueError, match="tokens"):
        SequenceTransformer(5, 4, 1, 8, 2, 16)(torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="batch, T"):
        MultiHeadSelfAttention(8, 2)(torch.randn(4, 8))
    with pytest.raises(ValueError, match="valid names"):
        te.layer_gradients(2, "post_ln", weight="w_z")


def test_reversal_batch_reverses():
    x, y = te.reversal_batch(4, 6, 5, torch.Generator().manual_seed(0))
    assert x.shape == (4, 6) and int(x.max()) < 5 and torch.equal(y, x.flip(1))
    with pytest.raises(ValueError):
        te.reversal_batch(4, 6, 1)


def test_layer_gradients_are_the_autograd_norms_of_each_blocks_weight():
    g = te.layer_gradients(3, "post_ln", seed=1, weight="w_v", d_model=8, n_heads=2, d_ff=16, vocab=5, seq_len=4, batch=6)
    torch.manual_seed(1)
    m = SequenceTransformer(5, 4, 3, 8, 2, 16, "post_ln").to(F64)
    x, y = te.reversal_batch(6, 4, 5, torch.Generator().manual_seed(1 + 10_000))
    nn.functional.cross_entropy(m(x).reshape(-1, 5), y.reshape(-1)).backward()
    assert np.allclose(g, [float(b.attn.w_v.weight.grad.norm()) for b in m.encoder.blocks], rtol=1e-12)


def test_depth_exponent_recovers_a_power_law():
    sweep = {("pre_ln", L): np.full((2, L), 3.0 * L ** -0.5) for L in (4, 8, 32)}
    sweep.update({("post_ln", L): np.full((2, L), 2.0) for L in (4, 8, 32)})
    assert te.depth_exponent(sweep, "pre_ln") == pytest.approx(-0.5, abs=1e-12)
    assert te.depth_exponent(sweep, "post_ln") == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="two depths"):
        te.depth_exponent({("pre_ln", 4): np.ones((1, 4))}, "pre_ln")


def test_linear_warmup_factor():
    f = te.warmup_lambda(4)
    assert [f(t) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert te.warmup_lambda(0)(0) == 1.0
    with pytest.raises(ValueError):
        te.warmup_lambda(-1)


def test_train_reversal_records_every_step_and_warms_up():
    kw = dict(steps=4, num_layers=1, d_model=8, n_heads=2, d_ff=16, vocab=5, seq_len=4, batch=8)
    run = te.train_reversal("post_ln", 1e-3, warmup_steps=2, **kw)
    assert len(run.losses) == len(run.grad_norms) == 4 and 0.0 <= run.accuracy <= 1.0
    assert all(math.isfinite(v) for v in run.losses)
    again = te.train_reversal("post_ln", 1e-3, warmup_steps=2, **kw)
    assert run.losses == again.losses                                    # seeded
    assert te.train_reversal("post_ln", 1e-3, warmup_steps=0, **kw).losses[1] != run.losses[1]
    with pytest.raises(ValueError):
        te.train_reversal("post_ln", 0.0, **kw)


def test_stream_scale_is_the_mean_square_before_the_final_norm():
    kw = dict(d_model=8, n_heads=2, d_ff=16, vocab=5, seq_len=4, batch=6)
    s = te.stream_scale(2, "pre_ln", seed=3, **kw)
    torch.manual_seed(3)
    m = SequenceTransformer(5, 4, 2, 8, 2, 16, "pre_ln").to(F64)
    x, _ = te.reversal_batch(6, 4, 5, torch.Generator().manual_seed(3 + 10_000))
    h = m.token(x) + m.position[:4]
    for b in m.encoder.blocks:
        h = b(h)
    assert s == pytest.approx(float(h.detach().pow(2).mean()), rel=1e-12)
    assert te.stream_scale(8, "pre_ln", seed=3, **kw) > s        # pre-LN: the stream grows with depth
