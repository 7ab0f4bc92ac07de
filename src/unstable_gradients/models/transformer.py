"""A Transformer encoder written from its equations, with post-LN and pre-LN blocks.

Beyond the survey (2018): Vaswani et al. 2017 (§3.2 attention, §3.3 feed-forward) and the two
places for layer normalisation compared by Xiong et al. 2020, "On Layer Normalization in the
Transformer Architecture" (ICML), Fig. 1 / Table 1:

    post-LN (Vaswani et al.):  x_{l,1} = LN(x_l + MHA(x_l)),      x_{l+1} = LN(x_{l,1} + FFN(x_{l,1}))
    pre-LN  (Xiong et al.):    x_{l,1} = x_l + MHA(LN(x_l)),      x_{l+1} = x_{l,1} + FFN(LN(x_{l,1}))
                               and a final LN(x_{L+1}) before the readout (their Table 1)

with MHA(x) = Concat(head_1 ... head_h) W^O, head_i = softmax(x W^Q_i (x W^K_i)^T / sqrt(d_k)) x W^V_i,
and FFN(x) = max(0, x W^1 + b^1) W^2 + b^2. The layer norm is the package's ``norm.LayerNorm``
(Ba et al. 2016). Xiong et al.'s Theorem 1 bounds the gradient of the last block's W^2 at
initialisation: O(d sqrt(ln d)) for post-LN whatever the depth L, O(d sqrt(ln d / L)) for pre-LN.

Notation and departures: weights act on row vectors (x W), as in both papers, stored as
``nn.Linear`` (which holds W^T). ``norm_first`` follows ``torch.nn.TransformerEncoderLayer``;
with dropout 0, ReLU and the same weights a block equals that module (``tests/test_transformer.py``).
Weights start Xavier-uniform with zero biases (Xiong et al. §3.2, "Xavier initialization").

Left out on purpose: dropout, masks other than an optional causal one, the decoder and
cross-attention; the toy models here are encoders with a per-position readout.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..norm import LayerNorm
from ..utils import lookup

__all__ = ["MultiHeadSelfAttention", "FeedForward", "EncoderBlock", "TransformerEncoder", "SequenceTransformer",
           "PLACEMENTS", "norm_first_of", "from_torch_layer"]

#: Where the layer norm sits: name -> ``norm_first`` (Xiong et al. 2020, Fig. 1).
PLACEMENTS: dict[str, bool] = {"post_ln": False, "pre_ln": True}

_FFN_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def norm_first_of(placement: str | bool) -> bool:
    """``"post_ln"`` -> False, ``"pre_ln"`` -> True (a bool passes through); unknown names list the valid ones."""
    return placement if isinstance(placement, bool) else lookup(PLACEMENTS, placement, "layer-norm placement")


def _xavier(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every ``nn.Linear`` inside ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MultiHeadSelfAttention(nn.Module):
    """MHA(x) = Concat(head_1..head_h) W^O with scaled dot-product heads (Vaswani et al. 2017, eq. 1 and §3.2.2).

    Input and output ``(batch, T, d_model)``; d_k = d_v = d_model / n_heads. ``causal=True`` masks
    the attention to later positions.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True) -> None:
        super().__init__()
        if d_model < 1 or n_heads < 1 or d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a positive multiple of n_heads ({n_heads})")
        self.d_model, self.n_heads = d_model, n_heads
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d_model, d_model, bias=bias) for _ in range(4))
        _xavier(self)

    def attention(self, x: Tensor, causal: bool = False) -> Tensor:
        """The attention weights softmax(Q K^T / sqrt(d_k)), shape ``(batch, heads, T, T)``."""
        q, k = self._heads(self.w_q(x)), self._heads(self.w_k(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_model // self.n_heads)
        if causal:
            T = x.shape[1]
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        return scores.softmax(-1)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected (batch, T, {self.d_model}) input, got shape {tuple(x.shape)}")
        heads = self.attention(x, causal) @ self._heads(self.w_v(x))       # (B, h, T, d_k)
        return self.w_o(heads.transpose(1, 2).reshape(x.shape))

    def _heads(self, t: Tensor) -> Tensor:
        B, T, _ = t.shape
        return t.reshape(B, T, self.n_heads, self.d_model // self.n_heads).transpose(1, 2)


class FeedForward(nn.Module):
    """FFN(x) = act(x W^1 + b^1) W^2 + b^2, position-wise (Vaswani et al. 2017, eq. 2); act: relu or gelu."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu") -> None:
        super().__init__()
        self.act = lookup(_FFN_ACTIVATIONS, activation, "feed-forward activation")
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        _xavier(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.act(self.linear1(x)))


class EncoderBlock(nn.Module):
    """One encoder layer, post-LN (``norm_first=False``) or pre-LN (``norm_first=True``); Xiong et al. 2020, Fig. 1."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, norm_first: bool = False, activation: str = "relu",
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.norm_first = bool(norm_first)
        self.attn = MultiHeadSelfAttention(d_model, n_heads)
        self.ffn = FeedForward(d_model, d_ff, activation)
        self.norm1, self.norm2 = LayerNorm(d_model, eps=eps), LayerNorm(d_model, eps=eps)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        if self.norm_first:                                   # x + F(LN(x))
            x = x + self.attn(self.norm1(x), causal)
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.attn(x, causal))             # LN(x + F(x))
        return self.norm2(x + self.ffn(x))


class TransformerEncoder(nn.Module):
    """``num_layers`` encoder blocks; a pre-LN stack ends with the final LayerNorm it needs (Xiong et al., Table 1)."""

    def __init__(self, num_layers: int, d_model: int, n_heads: int, d_ff: int, norm_first: bool = False,
                 activation: str = "relu", final_norm: bool | None = None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_heads, d_ff, norm_first, activation)
                                    for _ in range(num_layers))
        final_norm = norm_first if final_norm is None else final_norm
        self.final_norm = LayerNorm(d_model) if final_norm else nn.Identity()

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        for block in self.blocks:
            x = block(x, causal)
        return self.final_norm(x)


class SequenceTransformer(nn.Module):
    """Token + learned position embeddings -> ``TransformerEncoder`` -> a linear readout at every position.

    For toy sequence tasks (copy, reverse, sort): input ``(batch, T)`` integer tokens < ``vocab``,
    output ``(batch, T, n_out)`` logits (``n_out`` defaults to ``vocab``). ``placement``: ``"post_ln"``
    or ``"pre_ln"`` (``PLACEMENTS``). Embeddings start N(0, 1), as the scaled embeddings of Vaswani
    et al.; keeps a plain ``config`` (``models.build_model``).
    """

    def __init__(self, vocab: int, max_len: int, num_layers: int = 2, d_model: int = 32, n_heads: int = 4,
                 d_ff: int = 64, placement: str = "post_ln", n_out: int | None = None, activation: str = "relu") -> None:
        super().__init__()
        if vocab < 2 or max_len < 1:
            raise ValueError(f"need vocab >= 2 and max_len >= 1, got vocab={vocab}, max_len={max_len}")
        self.config = dict(kind="transformer", vocab=vocab, max_len=max_len, num_layers=num_layers, d_model=d_model,
                           n_heads=n_heads, d_ff=d_ff, placement=placement, n_out=n_out, activation=activation)
        self.token = nn.Embedding(vocab, d_model)
        self.position = nn.Parameter(torch.randn(max_len, d_model))
        self.encoder = TransformerEncoder(num_layers, d_model, n_heads, d_ff, norm_first_of(placement), activation)
        self.readout = nn.Linear(d_model, n_out or vocab)
        _xavier(self.readout)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.position.shape[0]:
            raise ValueError(f"expected (batch, T <= {self.position.shape[0]}) tokens, got shape {tuple(tokens.shape)}")
        x = self.token(tokens) + self.position[: tokens.shape[1]]
        return self.readout(self.encoder(x))


def from_torch_layer(layer: nn.TransformerEncoderLayer) -> EncoderBlock:
    """Our ``EncoderBlock`` holding the weights of a ``torch.nn.TransformerEncoderLayer`` (batch_first, ReLU).

    torch keeps W^Q, W^K, W^V stacked in ``self_attn.in_proj_weight``; we split them.
    """
    mha = layer.self_attn
    d, h = mha.embed_dim, mha.num_heads
    block = EncoderBlock(d, h, layer.linear1.out_features, layer.norm_first, eps=layer.norm1.eps)
    block = block.to(dtype=mha.in_proj_weight.dtype)
    with torch.no_grad():
        for lin, w, b in zip((block.attn.w_q, block.attn.w_k, block.attn.w_v), mha.in_proj_weight.chunk(3),
                             mha.in_proj_bias.chunk(3)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        for ours, theirs in ((block.attn.w_o, mha.out_proj), (block.ffn.linear1, layer.linear1),
                             (block.ffn.linear2, layer.linear2)):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        for ours, theirs in ((block.norm1, layer.norm1), (block.norm2, layer.norm2)):
            ours.gamma.copy_(theirs.weight)
            ours.beta.copy_(theirs.bias)
    return block
