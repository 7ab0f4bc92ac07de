"""Post-LN vs pre-LN Transformers (chapter ``future/04_transformers``; beyond the survey).

Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture" (ICML): at
initialisation the gradients of a post-LN Transformer's weights grow toward the output, and the
last layer's stays O(d sqrt(ln d)) whatever the depth L, while a pre-LN Transformer's are flat in
the layer index and shrink as O(d sqrt(ln d / L)) (their Theorem 1, Fig. 3); hence post-LN needs a
learning-rate warm-up and pre-LN does not (their §3.1 and §4).

Every function returns plain data that ``plotting`` draws:

- ``torch_parity``: our ``EncoderBlock`` against ``torch.nn.TransformerEncoderLayer`` with the same
  weights (float64, dropout 0): largest output and gradient differences.
- ``reversal_batch``: the toy task, reverse a sequence of random tokens.
- ``layer_gradients`` / ``depth_sweep`` / ``depth_exponent``: ||dL/dW|| of one weight of each block
  (``WEIGHTS``) at initialisation, by layer, depth and placement, and the slope of
  log ||dL/dW^{2,L}|| against log L; ``stream_scale``: the mean square of the residual stream.
- ``warmup_lambda`` / ``train_reversal`` / ``warmup_sweep``: Adam on the reversal task with and
  without a linear warm-up (Xiong et al. eq. 3, lr_t = t / T_warmup * lr_max for t <= T_warmup),
  via ``torch.optim.lr_scheduler.LambdaLR``.

Left out on purpose: translation (IWSLT14/WMT14) and BERT pre-training of the paper, the
inverse-square-root decay after warm-up (we hold lr_max), dropout and label smoothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..models.transformer import EncoderBlock, SequenceTransformer, from_torch_layer
from ..utils import lookup

__all__ = ["torch_parity", "reversal_batch", "token_loss", "WEIGHTS", "layer_gradients", "stream_scale", "depth_sweep", "depth_exponent",
           "warmup_lambda", "ReversalRun", "train_reversal", "warmup_sweep", "WARMUP_ARMS"]

_F64 = torch.float64

#: Which weight of block l to read the gradient of (Xiong et al. Theorem 1 bounds ``ffn_w2``).
WEIGHTS: dict[str, Callable[[EncoderBlock], Tensor]] = {
    "ffn_w2": lambda b: b.ffn.linear2.weight, "ffn_w1": lambda b: b.ffn.linear1.weight,
    "w_q": lambda b: b.attn.w_q.weight, "w_k": lambda b: b.attn.w_k.weight,
    "w_v": lambda b: b.attn.w_v.weight, "w_o": lambda b: b.attn.w_o.weight,
}


def torch_parity(norm_first: bool, d_model: int = 16, n_heads: int = 4, d_ff: int = 32, steps: int = 5,
                 batch: int = 3, seed: int = 0) -> dict[str, float]:
    """Our block vs ``torch.nn.TransformerEncoderLayer(dropout=0, batch_first=True, activation="relu")``.

    Both hold the same float64 weights (``models.transformer.from_torch_layer``), run the same
    input and back-propagate e = sum(w ⊙ output) for a random w. Returns the largest absolute
    differences of the outputs (``output``) and of the gradients of the input and of every
    weight (``grad``), and both parameter counts.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ref = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, activation="relu", batch_first=True,
                                         norm_first=norm_first).to(_F64)
        for p in ref.parameters():   # move LayerNorm away from gamma = 1, beta = 0 so it is tested too
            nn.init.normal_(p, std=0.3) if p.dim() == 1 else None
    ours = from_torch_layer(ref)
    x = torch.randn(batch, steps, d_model, generator=gen, dtype=_F64)
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_ref, out_ours = ref(x_ref), ours(x_ours)
    w = torch.randn(out_ref.shape, generator=gen, dtype=_F64)
    (out_ref * w).sum().backward()
    (out_ours * w).sum().backward()
    mha = ref.self_attn
    pairs = [(x_ours.grad, x_ref.grad), (torch.cat([ours.attn.w_q.weight.grad, ours.attn.w_k.weight.grad,
                                                    ours.attn.w_v.weight.grad]), mha.in_proj_weight.grad),
             (ours.attn.w_o.weight.grad, mha.out_proj.weight.grad), (ours.ffn.linear1.weight.grad, ref.linear1.weight.grad),
             (ours.ffn.linear2.weight.grad, ref.linear2.weight.grad), (ours.norm1.gamma.grad, ref.norm1.weight.grad),
             (ours.norm2.beta.grad, ref.norm2.bias.grad)]
    return dict(output=float((out_ref - out_ours).detach().abs().max()),
                grad=max(float((a - b).abs().max()) for a, b in pairs),
                params_ours=sum(p.numel() for p in ours.parameters()), params_torch=sum(p.numel() for p in ref.parameters()))


def reversal_batch(batch: int, seq_len: int, vocab: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random tokens x in [0, vocab) of shape (batch, seq_len) and the target y = x reversed."""
    if batch < 1 or seq_len < 1 or vocab < 2:
        raise ValueError(f"need batch >= 1, seq_len >= 1, vocab >= 2; got {batch}, {seq_len}, {vocab}")
    x = torch.randint(0, vocab, (batch, seq_len), generator=generator)
    return x, x.flip(1)


def token_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy over every position of a (batch, length, vocab) output."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _model(num_layers: int, placement: str, d_model: int, n_heads: int, d_ff: int, vocab: int, seq_len: int,
           seed: int, dtype: torch.dtype = torch.float32) -> SequenceTransformer:
    torch.manual_seed(seed)
    return SequenceTransformer(vocab, seq_len, num_layers, d_model, n_heads, d_ff, placement).to(dtype)


def layer_gradients(num_layers: int, placement: str, seed: int = 0, weight: str = "ffn_w2", d_model: int = 64,
                    n_heads: int = 4, d_ff: int = 256, vocab: int = 16, seq_len: int = 12,
                    batch: int = 32) -> np.ndarray:
    """||dL/dW_l||_F of ``weight`` in each block l = 1..L at initialisation (float64), L: cross-entropy
    on one reversal batch. The model is built after ``torch.manual_seed(seed)``; the batch is drawn from
    a generator seeded with ``seed + 10_000``."""
    get = lookup(WEIGHTS, weight, "transformer weight")
    model = _model(num_layers, placement, d_model, n_heads, d_ff, vocab, seq_len, seed, _F64)
    x, y = reversal_batch(batch, seq_len, vocab, torch.Generator().manual_seed(seed + 10_000))
    token_loss(model(x), y).backward()
    return np.array([float(get(b).grad.norm()) for b in model.encoder.blocks])


def stream_scale(num_layers: int, placement: str, seed: int = 0, d_model: int = 64, n_heads: int = 4, d_ff: int = 256,
                 vocab: int = 16, seq_len: int = 12, batch: int = 32) -> float:
    """Mean square of the residual stream x_{L+1} entering the final LayerNorm (pre-LN) or the readout
    (post-LN) at initialisation, the same model and batch as ``layer_gradients``. Xiong et al.'s Lemma 2:
    for pre-LN it grows linearly in L, and the final LN divides the gradient by its square root."""
    model = _model(num_layers, placement, d_model, n_heads, d_ff, vocab, seq_len, seed, _F64)
    x, _ = reversal_batch(batch, seq_len, vocab, torch.Generator().manual_seed(seed + 10_000))
    with torch.no_grad():
        h = model.token(x) + model.position[:seq_len]
        for block in model.encoder.blocks:
            h = block(h)
    return float(h.pow(2).mean())


def depth_sweep(depths: Sequence[int], placements: Sequence[str] = ("post_ln", "pre_ln"), seeds: Sequence[int] = (0, 1, 2),
                **kw) -> dict[tuple[str, int], np.ndarray]:
    """``layer_gradients`` for every placement, depth and seed: {(placement, L): array (seeds, L)}."""
    return {(p, L): np.stack([layer_gradients(L, p, s, **kw) for s in seeds]) for p in placements for L in depths}


def depth_exponent(sweep: Mapping[tuple[str, int], np.ndarray], placement: str) -> float:
    """Least-squares slope of log(median over seeds of the last block's gradient norm) against log L.

    Xiong et al.'s Theorem 1 bounds predict 0 for post-LN and -1/2 for pre-LN.
    """
    depths = sorted(L for p, L in sweep if p == placement)
    if len(depths) < 2:
        raise ValueError(f"need at least two depths for {placement!r}, got {depths}")
    last = [np.median(sweep[(placement, L)][:, -1]) for L in depths]
    return float(np.polyfit(np.log(depths), np.log(last), 1)[0])


def warmup_lambda(warmup_steps: int) -> Callable[[int], float]:
    """The factor lr_t / lr_max of a linear warm-up: (t + 1) / T_warmup up to T_warmup, then 1 (Xiong et al. eq. 3).

    Step t counts from 0, so the first update already uses lr_max / T_warmup (not 0); ``warmup_steps=0``: constant.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    return lambda t: 1.0 if warmup_steps == 0 else min(1.0, (t + 1) / warmup_steps)


@dataclass
class ReversalRun:
    """One training run on the reversal task: loss per step, token accuracy on a held-out batch at the end,
    and the global gradient norm per step (before the update)."""

    placement: str
    lr: float
    warmup_steps: int
    seed: int
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    accuracy: float = float("nan")

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10% of the steps."""
        k = max(1, len(self.losses) // 10)
        return float(np.mean(self.losses[-k:]))


def train_reversal(placement: str, lr: float, warmup_steps: int = 0, steps: int = 300, seed: int = 0, num_layers: int = 6,
                   d_model: int = 64, n_heads: int = 4, d_ff: int = 128, vocab: int = 16, seq_len: int = 12,
                   batch: int = 64, betas: tuple[float, float] = (0.9, 0.98), device: str | torch.device = "cpu",
                   progress: bool = False) -> ReversalRun:
    """Adam (betas 0.9, 0.98 as Vaswani et al. and Xiong et al.) on fresh reversal batches; returns a ``ReversalRun``.

    The model is built after ``torch.manual_seed(seed)``; the batches come from a generator seeded with ``seed``.
    """
    if steps < 1 or lr <= 0:
        raise ValueError(f"need steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    model = _model(num_layers, placement, d_model, n_heads, d_ff, vocab, seq_len, seed).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, fused=True)   # fused: ~20% faster per step on a CPU
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(warmup_steps))
    gen = torch.Generator().manual_seed(seed)
    run = ReversalRun(placement, lr, warmup_steps, seed)
    for _ in tqdm(range(steps), disable=not progress, desc=f"{placement} warm-up {warmup_steps}"):
        x, y = (t.to(device) for t in reversal_batch(batch, seq_len, vocab, gen))
        loss = token_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        run.grad_norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), math.inf)))   # the norm, unclipped
        opt.step()
        sched.step()
        run.losses.append(float(loss.detach()))
    x, y = (t.to(device) for t in reversal_batch(1000, seq_len, vocab, torch.Generator().manual_seed(seed + 10_000)))
    with torch.no_grad():
        run.accuracy = float((model(x).argmax(-1) == y).float().mean())
    return run


#: The arms of Xiong et al.'s Fig. 2 / §4: (placement, warm-up steps as a fraction of the run).
WARMUP_ARMS: dict[str, tuple[str, float]] = {"post-LN, no warm-up": ("post_ln", 0.0),
                                             "post-LN, warm-up": ("post_ln", 0.25),
                                             "pre-LN, no warm-up": ("pre_ln", 0.0)}


def warmup_sweep(lr: float, seeds: Sequence[int] = (0, 1), steps: int = 300, arms: Mapping[str, tuple[str, float]] | None = None,
                 **kw) -> dict[str, list[ReversalRun]]:
    """``train_reversal`` for every arm and seed: {arm: [run per seed]}; warm-up = fraction x steps."""
    arms = WARMUP_ARMS if arms is None else arms
    return {name: [train_reversal(p, lr, int(round(frac * steps)), steps, s, **kw) for s in seeds]
            for name, (p, frac) in arms.items()}

