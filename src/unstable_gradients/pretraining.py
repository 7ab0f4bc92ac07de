"""Unsupervised greedy layer-wise pre-training (survey §2.1, Fig. 8; chapter "Training methods").

The survey's first remedy: train a deep net one layer at a time without labels, each layer
modelling the representation of the layer below, then unroll the stack into a feed-forward net
and fine-tune it with back-propagation. Three kinds of layer are implemented:

- ``RBM``: a restricted Boltzmann machine with Bernoulli visible and hidden units, trained by
  contrastive divergence CD-k (Hinton 2002) or persistent CD (Tieleman 2008); stacked into a deep
  belief net, ``DBN`` (Hinton, Osindero & Teh 2006).
- ``AutoEncoder``: one hidden layer trained to reconstruct its input (Bengio et al. 2007), with the
  ``DenoisingAutoEncoder`` (masking noise, Vincent et al. 2008) and ``SparseAutoEncoder`` (L1
  penalty on the code as in Ranzato et al. 2007's sparse encoding symmetric machine, or the KL
  penalty toward a target activation ρ of Ng's sparse auto-encoder notes) variants; stacked by
  ``StackedAutoEncoder``.
- ``greedy_layerwise_pretrain`` pre-trains a stack of any kind and returns the package's ``MLP``
  initialised from it; DBN and auto-encoder stacks share one unrolling function,
  ``unroll_to_mlp``.

Notation: the RBM energy is E(v, h) = -b^T v - c^T h - h^T W v (Bengio 2009, "Learning Deep
Architectures for AI", §5), with ``W`` of shape (n_hidden, n_visible) -- the layout of
``nn.Linear`` -- so that W and c copy straight into an MLP layer. Hinton's "practical guide"
(2010) calls the biases a (visible) and b (hidden).

Left out on purpose: momentum, the learning-rate schedules and the sparsity targets of Hinton's
practical guide for RBMs; Gaussian visible units; the DBN's generative up-down fine-tuning
(the survey and this book fine-tune discriminatively with ``training.train``); SESM's free code
variable and its L1 penalty on the weights (we keep the L1 penalty on the code only).
The unrolled ``MLP``'s ``config`` describes its architecture, not the pre-trained weights:
``build_model(mlp.config)`` gives a randomly initialised net of the same shape.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .activations import get_activation
from .init import initialize
from .models.mlp import MLP
from .training import OPTIMIZERS
from .utils import lookup

__all__ = [
    "RBM", "train_rbm", "DBN", "AutoEncoder", "DenoisingAutoEncoder", "SparseAutoEncoder",
    "AUTOENCODERS", "train_autoencoder", "StackedAutoEncoder", "unroll_to_mlp",
    "greedy_layerwise_pretrain", "PRETRAIN_KINDS",
]


def _check_unit_interval(X: Tensor, who: str) -> None:
    if X.numel() and (float(X.min()) < 0 or float(X.max()) > 1):
        raise ValueError(f"{who} needs data in [0, 1] (probabilities or binary pixels); got values in "
                         f"[{float(X.min()):.3g}, {float(X.max()):.3g}]")


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    order = torch.randperm(n, generator=gen, device=gen.device)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _logit_of_mean(X: Tensor, eps: float = 1e-3) -> Tensor:
    """log(p_i / (1 - p_i)) of the mean p_i of each column, p clamped to [eps, 1 - eps]."""
    p = X.mean(0).clamp(eps, 1 - eps)
    return torch.log(p / (1 - p))


def _check_loop_args(epochs: int, batch_size: int, lr: float) -> None:
    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")


# --------------------------------------------------------------------------------------------- RBM

class RBM(nn.Module):
    """Restricted Boltzmann machine with Bernoulli visible units v and hidden units h.

    E(v, h) = -b^T v - c^T h - h^T W v; p(h_j = 1 | v) = σ(c_j + W_j v) and
    p(v_i = 1 | h) = σ(b_i + W_{:,i}^T h) (Hinton 2010, eq. 7-8).
    Weights start from N(0, ``weight_std``^2) (Hinton 2010 §8: 0.01), biases at 0.

    Training does not use autograd: ``phase_gradient`` writes the log-likelihood gradient as
    positive (data) minus negative (model sample) statistics, and ``cd_step`` applies it. The
    parameters are still ``nn.Parameter`` so that ``free_energy`` and ``log_likelihood`` can be
    differentiated to check those formulas (tests) and so that the module moves with ``.to()``.
    """

    def __init__(self, n_visible: int, n_hidden: int, *, weight_std: float = 0.01, seed: int | None = None) -> None:
        super().__init__()
        if n_visible < 1 or n_hidden < 1:
            raise ValueError(f"need n_visible, n_hidden >= 1; got {n_visible}, {n_hidden}")
        self.n_visible, self.n_hidden = int(n_visible), int(n_hidden)
        self.config = dict(kind="rbm", n_visible=self.n_visible, n_hidden=self.n_hidden,
                           weight_std=weight_std, seed=seed)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.W = nn.Parameter(torch.randn(self.n_hidden, self.n_visible, generator=gen) * weight_std)
        self.b = nn.Parameter(torch.zeros(self.n_visible))  # visible bias
        self.c = nn.Parameter(torch.zeros(self.n_hidden))   # hidden bias
        self.register_buffer("chains", None, persistent=False)  # PCD fantasy particles

    # ---- conditionals and energies
    def hidden_probs(self, v: Tensor) -> Tensor:
        """p(h = 1 | v) = σ(W v + c), one row per visible vector."""
        return torch.sigmoid(F.linear(v, self.W, self.c))

    def visible_probs(self, h: Tensor) -> Tensor:
        """p(v = 1 | h) = σ(W^T h + b)."""
        return torch.sigmoid(h @ self.W + self.b)

    def sample_h_given_v(self, v: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(p(h = 1 | v), a Bernoulli sample of h)."""
        p = self.hidden_probs(v)
        return p, torch.bernoulli(p, generator=generator)

    def sample_v_given_h(self, h: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(p(v = 1 | h), a Bernoulli sample of v)."""
        p = self.visible_probs(h)
        return p, torch.bernoulli(p, generator=generator)

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """E(v, h) = -b^T v - c^T h - h^T W v, one value per row."""
        return -(v @ self.b) - (h @ self.c) - ((h @ self.W) * v).sum(-1)

    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) = -log sum_h exp(-E(v, h)) = -b^T v - sum_j softplus(c_j + W_j v), so that
        p(v) = exp(-F(v)) / Z (Bengio 2009, §5, for binary hidden units)."""
        return -(v @ self.b) - F.softplus(F.linear(v, self.W, self.c)).sum(-1)

    def log_partition(self) -> Tensor:
        """log Z by brute force over all 2^n states of the smaller layer (n <= 20): a reference
        for tiny RBMs, e.g. to follow the exact log-likelihood during training."""
        n = min(self.n_visible, self.n_hidden)
        if n > 20:
            raise ValueError(f"log_partition enumerates 2^{n} states; only for RBMs with a layer of <= 20 units")
        states = _all_binary(n, self.W.dtype, self.W.device)
        if self.n_visible <= self.n_hidden:
            return torch.logsumexp(-self.free_energy(states), 0)
        # the same sum taken over h: log sum_h exp(c^T h + sum_i softplus(b_i + (W^T h)_i))
        return torch.logsumexp(states @ self.c + F.softplus(states @ self.W + self.b).sum(-1), 0)

    def log_likelihood(self, v: Tensor) -> Tensor:
        """Mean exact log p(v) = -F(v) - log Z over the rows of ``v`` (tiny RBMs only)."""
        return (-self.free_energy(v)).mean() - self.log_partition()

    # ---- sampling
    @torch.no_grad()
    def gibbs(self, v: Tensor, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """k steps of block Gibbs sampling v -> h -> v; returns the binary visible sample v_k."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        for _ in range(k):
            _, h = self.sample_h_given_v(v, generator)
            _, v = self.sample_v_given_h(h, generator)
        return v

    @torch.no_grad()
    def reconstruct(self, v: Tensor) -> Tensor:
        """Mean-field reconstruction p(v = 1 | h = p(h = 1 | v)) (deterministic)."""
        return self.visible_probs(self.hidden_probs(v))

    @torch.no_grad()
    def reconstruction_error(self, v: Tensor) -> float:
        """Mean squared error per visible unit between ``v`` and ``reconstruct(v)`` (Hinton 2010
        §5: a rough, cheap progress signal, not the likelihood)."""
        return float(((v - self.reconstruct(v)) ** 2).mean())

    # ---- learning
    @torch.no_grad()
    def phase_gradient(self, v_pos: Tensor, v_neg: Tensor) -> dict[str, Tensor]:
        """Positive minus negative phase statistics (Hinton 2002; Hinton 2010, eq. 5 and 9):

        dW = <p(h|v) v^T>_pos - <p(h|v) v^T>_neg, db = <v>_pos - <v>_neg, dc = <p(h|v)>_pos - <p(h|v)>_neg,

        each <.> a mean over the rows of its batch. Equals -d/dθ [mean F(v_pos) - mean F(v_neg)];
        with v_neg drawn from the model it is an unbiased estimate of d mean log p(v_pos) / dθ.
        """
        ph_pos, ph_neg = self.hidden_probs(v_pos), self.hidden_probs(v_neg)
        return {
            "W": ph_pos.T @ v_pos / len(v_pos) - ph_neg.T @ v_neg / len(v_neg),
            "b": v_pos.mean(0) - v_neg.mean(0),
            "c": ph_pos.mean(0) - ph_neg.mean(0),
        }

    @torch.no_grad()
    def cd_gradient(self, v: Tensor, k: int = 1, persistent: bool = False,
                    generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """CD-k estimate of the log-likelihood gradient: the negative sample is k Gibbs steps from
        the data (Hinton 2002) or, with ``persistent``, from the chains left by the previous call
        (PCD, Tieleman 2008; the chains start from the first batch seen and keep their number)."""
        if persistent:
            start = self.chains if self.chains is not None else v
            v_neg = self.gibbs(start, k, generator)
            self.chains = v_neg
        else:
            v_neg = self.gibbs(v, k, generator)
        return self.phase_gradient(v, v_neg)

    @torch.no_grad()
    def init_bias_from_data(self, X: Tensor) -> None:
        """Set the visible biases to b_i = log(p_i / (1 - p_i)), p_i the fraction of rows of ``X``
        with unit i on (Hinton 2010, §8), so that the RBM starts from the data's marginals."""
        self.b.copy_(_logit_of_mean(X.flatten(1)))

    def reset_chains(self) -> None:
        """Forget the persistent chains (the next PCD step restarts them from its batch)."""
        self.chains = None

    @torch.no_grad()
    def cd_step(self, v: Tensor, k: int = 1, lr: float = 0.1, persistent: bool = False,
                generator: torch.Generator | None = None, weight_decay: float = 0.0) -> float:
        """One gradient-ascent step θ <- θ + lr (CD-k gradient - weight_decay W) on the batch ``v``;
        returns the reconstruction error of ``v`` before the step."""
        err = self.reconstruction_error(v)
        grad = self.cd_gradient(v, k, persistent, generator)
        self.W.add_(lr * (grad["W"] - weight_decay * self.W))
        self.b.add_(lr * grad["b"])
        self.c.add_(lr * grad["c"])
        return err

    def encode(self, v: Tensor) -> Tensor:
        """p(h = 1 | v): the representation passed to the next layer of a DBN."""
        return self.hidden_probs(v.flatten(1))

    def encoder_params(self) -> tuple[Tensor, Tensor]:
        """(W, c): the affine map of ``encode``, copied into an MLP layer by ``unroll_to_mlp``."""
        return self.W.detach(), self.c.detach()

    def forward(self, v: Tensor) -> Tensor:
        """Same as ``encode``."""
        return self.encode(v)


def _all_binary(n: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
    """All 2^n binary vectors of length n, one per row."""
    codes = torch.arange(2**n, device=device)
    return ((codes[:, None] >> torch.arange(n, device=device)) & 1).to(dtype)


def train_rbm(rbm: RBM, X: Tensor, epochs: int = 5, batch_size: int = 20, lr: float = 0.1, k: int = 1,
              persistent: bool = False, seed: int = 0, progress: bool = False,
              weight_decay: float = 0.0, bias_from_data: bool = False) -> list[float]:
    """Train ``rbm`` on the rows of ``X`` (values in [0, 1]) by CD-k / PCD-k with mini-batch SGD.

    Returns the per-epoch reconstruction error (mean over the epoch's batches, each measured just
    before its update). The batch order and every Gibbs sample depend only on ``seed``; the
    persistent chains are reset at the start. ``bias_from_data`` first sets the visible biases
    from the data (``RBM.init_bias_from_data``); off by default, as in Hinton 2002.
    """
    _check_loop_args(epochs, batch_size, lr)
    X = X.flatten(1)
    _check_unit_interval(X, "train_rbm")
    if bias_from_data:
        rbm.init_bias_from_data(X)
    gen = torch.Generator(device=X.device).manual_seed(seed)
    rbm.reset_chains()
    history: list[float] = []
    steps = math.ceil(len(X) / batch_size)
    with tqdm(total=epochs * steps, disable=not progress, desc="RBM (CD-%d)" % k, leave=False) as bar:
        for _ in range(epochs):
            total = 0.0
            for idx in _batches(len(X), batch_size, gen):
                total += rbm.cd_step(X[idx], k, lr, persistent, gen, weight_decay) * len(idx)
                bar.update(1)
            history.append(total / len(X))
    return history


# ------------------------------------------------------------------------------------ auto-encoders

class AutoEncoder(nn.Module):
    """One-hidden-layer auto-encoder: h = f(W x + c), x_hat = σ(W' h + b') (Bengio et al. 2007).

    ``activation`` f is any elementwise activation of the package's registry; the decoder output
    is a sigmoid (inputs in [0, 1]). ``tied`` sets W' = W^T. ``loss``: ``"bce"`` (cross-entropy of
    Vincent et al. 2008) or ``"mse"``, summed over the input units, averaged over the batch.
    ``corruption`` ν > 0 turns it into a denoising auto-encoder (``corrupt``); ``sparsity``
    (``"l1"`` or ``"kl"``) with ``sparsity_weight`` > 0 adds a sparsity penalty on the code
    (``sparsity_penalty``). The subclasses below only set these defaults.
    """

    def __init__(self, n_in: int, n_hidden: int, activation: str = "sigmoid", tied: bool = False, *,
                 corruption: float = 0.0, sparsity: str | None = None, sparsity_weight: float = 0.0,
                 sparsity_target: float = 0.05, loss: str = "bce", init: str = "xavier_uniform",
                 seed: int | None = None) -> None:
        super().__init__()
        if n_in < 1 or n_hidden < 1:
            raise ValueError(f"need n_in, n_hidden >= 1; got {n_in}, {n_hidden}")
        if not 0.0 <= corruption < 1.0:
            raise ValueError(f"corruption must be in [0, 1), got {corruption}")
        if sparsity not in (None, "l1", "kl"):
            raise ValueError(f"unknown sparsity {sparsity!r}; valid choices: None, 'l1', 'kl'")
        if sparsity_weight < 0 or not 0.0 < sparsity_target < 1.0:
            raise ValueError(f"need sparsity_weight >= 0 and 0 < sparsity_target < 1; got {sparsity_weight}, "
                             f"{sparsity_target}")
        if loss not in ("bce", "mse"):
            raise ValueError(f"unknown loss {loss!r}; valid choices: bce, mse")
        self.act = get_activation(activation)
        if not self.act.elementwise:
            raise ValueError(f"auto-encoders need an elementwise activation, got {activation!r}")
        if sparsity == "kl" and activation != "sigmoid":
            raise ValueError("the KL sparsity penalty treats codes as probabilities: use activation='sigmoid'")
        self.n_in, self.n_hidden, self.activation, self.tied = int(n_in), int(n_hidden), activation, tied
        self.corruption, self.sparsity, self.sparsity_weight = corruption, sparsity, sparsity_weight
        self.sparsity_target, self.loss_name = sparsity_target, loss
        self.config = dict(kind="autoencoder", n_in=self.n_in, n_hidden=self.n_hidden, activation=activation,
                           tied=tied, corruption=corruption, sparsity=sparsity, sparsity_weight=sparsity_weight,
                           sparsity_target=sparsity_target, loss=loss, init=init, seed=seed)
        self.encoder = nn.Linear(self.n_in, self.n_hidden)
        if tied:
            self.decoder_bias = nn.Parameter(torch.zeros(self.n_in))
        else:
            self.decoder = nn.Linear(self.n_hidden, self.n_in)
        initialize(self, init, generator=torch.Generator().manual_seed(seed) if seed is not None else None)

    def encode(self, x: Tensor) -> Tensor:
        """The code h = f(W x + c)."""
        return self.act(self.encoder(x))

    def decode_logits(self, h: Tensor) -> Tensor:
        """W' h + b' (pre-sigmoid reconstruction)."""
        return F.linear(h, self.encoder.weight.T, self.decoder_bias) if self.tied else self.decoder(h)

    def decode(self, h: Tensor) -> Tensor:
        """x_hat = σ(W' h + b')."""
        return torch.sigmoid(self.decode_logits(h))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of the clean input (no corruption)."""
        return self.decode(self.encode(x.flatten(1)))

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Masking noise (Vincent et al. 2008): in every row, exactly round(ν d) of the d
        components, chosen at random, are set to 0. The identity when ``corruption`` ν is 0."""
        m = round(self.corruption * x.shape[-1])
        if m == 0:
            return x
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        drop = noise.argsort(dim=-1)[..., :m]
        return x.scatter(-1, drop, 0.0)

    def sparsity_penalty(self, h: Tensor) -> Tensor:
        """``"l1"``: weight * mean_batch sum_j |h_j| (the L1 code penalty of Ranzato et al. 2007's
        SESM); ``"kl"``: weight * sum_j KL(ρ || ρ_hat_j), ρ_hat_j the batch mean of h_j (Ng's sparse
        auto-encoder); 0 without sparsity."""
        if self.sparsity is None or self.sparsity_weight == 0:
            return h.new_zeros(())
        if self.sparsity == "l1":
            return self.sparsity_weight * h.abs().sum(-1).mean()
        rho, rho_hat = self.sparsity_target, h.mean(0).clamp(1e-6, 1 - 1e-6)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return self.sparsity_weight * kl.sum()

    def loss_terms(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The training objective on the batch ``x``: corrupt (if denoising), encode, decode.

        Returns ``total`` = ``reconstruction`` + ``sparsity`` (differentiable), ``mse``: the mean
        squared error per input unit between the clean ``x`` and its reconstruction (the progress
        measure shared with ``RBM.reconstruction_error``) and ``code``: the hidden activations.
        """
        x = x.flatten(1)
        h = self.encode(self.corrupt(x, generator))
        logits = self.decode_logits(h)
        if self.loss_name == "bce":
            rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1).mean()
        else:
            rec = ((torch.sigmoid(logits) - x) ** 2).sum(-1).mean()
        pen = self.sparsity_penalty(h)
        mse = ((torch.sigmoid(logits.detach()) - x) ** 2).mean()
        return {"total": rec + pen, "reconstruction": rec, "sparsity": pen, "mse": mse, "code": h}

    def encoder_params(self) -> tuple[Tensor, Tensor]:
        """(W, c): the affine map of ``encode``, copied into an MLP layer by ``unroll_to_mlp``."""
        return self.encoder.weight.detach(), self.encoder.bias.detach()

    @torch.no_grad()
    def init_bias_from_data(self, X: Tensor) -> None:
        """Set the decoder biases to b'_i = log(p_i / (1 - p_i)), p_i the mean of input i, so the
        first reconstruction is the mean input (the RBM recipe of Hinton 2010, §8, applied to b')."""
        (self.decoder_bias if self.tied else self.decoder.bias).copy_(_logit_of_mean(X.flatten(1)))

    @torch.no_grad()
    def reconstruction_error(self, x: Tensor) -> float:
        """Mean squared error per input unit between ``x`` and the reconstruction of clean ``x``."""
        x = x.flatten(1)
        return float(((self(x) - x) ** 2).mean())


class DenoisingAutoEncoder(AutoEncoder):
    """Auto-encoder trained to reconstruct x from a copy with a fraction ``corruption`` of its
    components set to 0 (Vincent et al. 2008; their experiments also tie W' = W^T)."""

    def __init__(self, n_in: int, n_hidden: int, activation: str = "sigmoid", tied: bool = False, *,
                 corruption: float = 0.25, **kwargs) -> None:
        if corruption <= 0:
            raise ValueError(f"a denoising auto-encoder needs corruption > 0, got {corruption}")
        super().__init__(n_in, n_hidden, activation, tied, corruption=corruption, **kwargs)
        self.config["kind"] = "denoising"


class SparseAutoEncoder(AutoEncoder):
    """Auto-encoder with a sparsity penalty on the code: ``sparsity="kl"`` (default; target
    activation ``sparsity_target`` ρ, Ng's notes) or ``"l1"`` (Ranzato et al. 2007, whose SESM
    also ties W' = W^T: pass ``tied=True``)."""

    def __init__(self, n_in: int, n_hidden: int, activation: str = "sigmoid", tied: bool = False, *,
                 sparsity: str = "kl", sparsity_weight: float = 1.0, sparsity_target: float = 0.05,
                 **kwargs) -> None:
        if sparsity is None or sparsity_weight <= 0:
            raise ValueError("a sparse auto-encoder needs sparsity 'l1' or 'kl' and sparsity_weight > 0")
        super().__init__(n_in, n_hidden, activation, tied, sparsity=sparsity, sparsity_weight=sparsity_weight,
                         sparsity_target=sparsity_target, **kwargs)
        self.config["kind"] = "sparse"


#: name -> auto-encoder class (the ``kind`` of ``StackedAutoEncoder`` / ``greedy_layerwise_pretrain``)
AUTOENCODERS: dict[str, type[AutoEncoder]] = {
    "autoencoder": AutoEncoder, "denoising": DenoisingAutoEncoder, "sparse": SparseAutoEncoder,
}


def train_autoencoder(ae: AutoEncoder, X: Tensor, epochs: int = 5, batch_size: int = 20, lr: float = 0.1,
                      optimizer: str = "sgd", seed: int = 0, progress: bool = False,
                      optimizer_kwargs: dict | None = None, bias_from_data: bool = True) -> list[float]:
    """Train ``ae`` on the rows of ``X`` (values in [0, 1]) by mini-batch gradient descent on its
    objective (``AutoEncoder.loss_terms``). Returns the per-epoch reconstruction error: the mean
    squared error per input unit of each batch before its update (for a denoising auto-encoder,
    of the clean batch reconstructed from its corrupted copy). Order and noise depend on ``seed``.

    ``bias_from_data`` (default on) first sets the decoder biases to the logit of the mean input
    (``AutoEncoder.init_bias_from_data``). Without it a sigmoid auto-encoder with an untied decoder
    spends its first updates pulling every output from 0.5 towards the mostly-black mean image,
    drives all its codes to saturation at 1 and only learns the mean image (on 500 binarised
    MNIST digits: mean code 0.99 after 4 epochs of SGD, reconstruction error stuck at 0.085).
    """
    _check_loop_args(epochs, batch_size, lr)
    X = X.flatten(1)
    _check_unit_interval(X, "train_autoencoder")
    if bias_from_data:
        ae.init_bias_from_data(X)
    opt = lookup(OPTIMIZERS, optimizer, "optimizer")(ae.parameters(), lr=lr, **(optimizer_kwargs or {}))
    gen = torch.Generator(device=X.device).manual_seed(seed)
    history: list[float] = []
    steps = math.ceil(len(X) / batch_size)
    ae.train()
    with tqdm(total=epochs * steps, disable=not progress, desc=type(ae).__name__, leave=False) as bar:
        for _ in range(epochs):
            total = 0.0
            for idx in _batches(len(X), batch_size, gen):
                terms = ae.loss_terms(X[idx], gen)
                opt.zero_grad(set_to_none=True)
                terms["total"].backward()
                opt.step()
                total += float(terms["mse"]) * len(idx)
                bar.update(1)
            history.append(total / len(X))
    return history


# ------------------------------------------------------------------------------- stacks, unrolling

def unroll_to_mlp(encoders: Sequence[tuple[Tensor, Tensor]], num_classes: int, activation: str = "sigmoid",
                  *, seed: int | None = None, init: str = "lecun_normal") -> MLP:
    """An ``MLP`` whose hidden layer l computes f(W_l x + c_l) with the given pre-trained
    ``(W_l, c_l)`` (``W_l`` of shape (n_l, n_{l-1})), plus a fresh output layer of ``num_classes``
    logits initialised by ``init`` -- the "unrolled" net of Hinton et al. 2006 / Bengio et al.
    2007, ready for fine-tuning with ``training.train``."""
    if not encoders:
        raise ValueError("need at least one pre-trained layer")
    sizes = [int(encoders[0][0].shape[1])]
    for i, (W, c) in enumerate(encoders):
        if W.dim() != 2 or W.shape[1] != sizes[-1] or c.shape != (W.shape[0],):
            raise ValueError(f"layer {i}: weight {tuple(W.shape)} and bias {tuple(c.shape)} do not follow a layer "
                             f"of {sizes[-1]} units")
        sizes.append(int(W.shape[0]))
    mlp = MLP(sizes + [int(num_classes)], activation=activation, init=init, seed=seed)
    with torch.no_grad():
        for linear, (W, c) in zip(mlp.linears, encoders):
            linear.weight.copy_(W)
            linear.bias.copy_(c)
    return mlp.to(encoders[0][0].device)


class _LayerwiseStack(nn.Module):
    """Shared greedy loop (train layer l on the representation of layer l-1) and unrolling. Its
    layers (``RBM`` or ``AutoEncoder``) expose ``encode`` and ``encoder_params``."""

    layers: nn.ModuleList
    activation: str

    def _greedy(self, X: Tensor, seed: int, fit: Callable[[nn.Module, Tensor, int], list[float]]) -> list[list[float]]:
        h = X.flatten(1)
        self.history: list[list[float]] = []
        for i, layer in enumerate(self.layers):
            self.history.append(fit(layer, h, seed + i))
            with torch.no_grad():
                h = layer.encode(h)
        return self.history

    @torch.no_grad()
    def transform(self, X: Tensor) -> list[Tensor]:
        """The representation of ``X`` at every layer of the stack (deterministic codes /
        hidden probabilities), input side first."""
        out, h = [], X.flatten(1)
        for layer in self.layers:
            h = layer.encode(h)
            out.append(h)
        return out

    def to_mlp(self, num_classes: int, *, seed: int | None = None, init: str = "lecun_normal") -> MLP:
        """Unroll into an ``MLP`` (``unroll_to_mlp``): pre-trained hidden layers, fresh output layer."""
        return unroll_to_mlp([layer.encoder_params() for layer in self.layers], num_classes, self.activation,
                             seed=seed, init=init)


class DBN(_LayerwiseStack):
    """Deep belief net as a stack of RBMs with ``sizes = [n_visible, n_1, ..., n_L]``, pre-trained
    greedily (Hinton, Osindero & Teh 2006; survey Fig. 8): RBM l is trained on the hidden
    probabilities p(h_{l-1} | data) of RBM l-1. ``to_mlp`` unrolls it into a sigmoid ``MLP``."""

    activation = "sigmoid"

    def __init__(self, sizes: Sequence[int], *, weight_std: float = 0.01, seed: int | None = None) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"a DBN needs a visible and at least one hidden size, got {sizes}")
        self.sizes = sizes
        self.config = dict(kind="dbn", sizes=sizes, weight_std=weight_std, seed=seed)
        self.layers = nn.ModuleList(
            RBM(a, b, weight_std=weight_std, seed=None if seed is None else seed + i)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))

    @property
    def rbms(self) -> list[RBM]:
        return list(self.layers)

    def pretrain(self, X: Tensor, *, epochs: int = 5, batch_size: int = 20, lr: float = 0.1, k: int = 1,
                 persistent: bool = False, weight_decay: float = 0.0, seed: int = 0,
                 progress: bool = False, bias_from_data: bool = False) -> list[list[float]]:
        """Greedy layer-wise CD-k / PCD-k training (``train_rbm`` for each layer); returns each RBM's
        per-epoch reconstruction error (also kept as ``self.history``). RBM l uses seed ``seed + l``."""
        return self._greedy(X, seed, lambda rbm, h, s: train_rbm(
            rbm, h, epochs, batch_size, lr, k, persistent, s, progress, weight_decay, bias_from_data))


class StackedAutoEncoder(_LayerwiseStack):
    """A stack of auto-encoders of one ``kind`` (``AUTOENCODERS``) with ``sizes = [n_in, n_1, ...,
    n_L]``, pre-trained greedily (Bengio et al. 2007; Vincent et al. 2008): auto-encoder l
    learns to reconstruct the (clean) code of auto-encoder l-1. ``layer_kwargs`` go to every
    auto-encoder (``corruption``, ``sparsity_weight``, ``loss``, ...)."""

    def __init__(self, sizes: Sequence[int], kind: str = "autoencoder", activation: str = "sigmoid",
                 tied: bool = False, *, seed: int | None = None, **layer_kwargs) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"a stack needs an input and at least one hidden size, got {sizes}")
        cls = lookup(AUTOENCODERS, kind, "auto-encoder kind")
        self.sizes, self.kind, self.activation = sizes, kind, activation
        self.config = dict(kind="stacked_autoencoder", sizes=sizes, layer_kind=kind, activation=activation,
                           tied=tied, seed=seed, **layer_kwargs)
        self.layers = nn.ModuleList(
            cls(a, b, activation, tied, seed=None if seed is None else seed + i, **layer_kwargs)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))

    def pretrain(self, X: Tensor, *, epochs: int = 5, batch_size: int = 20, lr: float = 0.1,
                 optimizer: str = "sgd", optimizer_kwargs: dict | None = None, seed: int = 0,
                 progress: bool = False, bias_from_data: bool = True) -> list[list[float]]:
        """Greedy layer-wise training (``train_autoencoder`` for each layer); returns each
        auto-encoder's per-epoch reconstruction error (also kept as ``self.history``). Layer l
        uses seed ``seed + l``."""
        return self._greedy(X, seed, lambda ae, h, s: train_autoencoder(
            ae, h, epochs, batch_size, lr, optimizer, s, progress, optimizer_kwargs, bias_from_data))


#: the ``kind`` values of ``greedy_layerwise_pretrain``
PRETRAIN_KINDS: tuple[str, ...] = ("rbm", *AUTOENCODERS)


def greedy_layerwise_pretrain(sizes: Sequence[int], X: Tensor, kind: str = "rbm", num_classes: int = 10, *,
                              epochs: int = 5, batch_size: int = 20, lr: float = 0.1, seed: int = 0,
                              progress: bool = False, return_stack: bool = False, k: int = 1,
                              persistent: bool = False, optimizer: str = "sgd", bias_from_data: bool | None = None,
                              **layer_kwargs) -> MLP | tuple[MLP, _LayerwiseStack]:
    """Pre-train a stack with ``sizes = [n_in, n_1, ..., n_L]`` on ``X`` without labels and return
    an ``MLP`` of sizes ``sizes + [num_classes]`` initialised from it (survey §2.1).

    ``kind``: ``"rbm"`` (a ``DBN``; ``k``, ``persistent`` apply) or an auto-encoder kind,
    ``"autoencoder"``, ``"denoising"``, ``"sparse"`` (a ``StackedAutoEncoder``; ``optimizer``
    applies). ``layer_kwargs`` go to the stack's constructor (e.g. ``corruption=0.3``,
    ``activation="tanh"``, ``weight_std=0.01``). ``seed`` fixes the stack's initial weights, the
    batch order and noise, and the output layer's initialisation. With ``return_stack`` the
    pre-trained stack (whose ``history`` holds the per-layer reconstruction errors) comes too.
    ``bias_from_data``: see ``train_rbm`` / ``train_autoencoder`` (``None``: their defaults, off
    for RBMs, on for auto-encoders).
    """
    kind = kind.lower() if isinstance(kind, str) else kind
    if kind not in PRETRAIN_KINDS:
        raise ValueError(f"unknown pre-training kind {kind!r}; valid names: {', '.join(PRETRAIN_KINDS)}")
    if kind == "rbm":
        if optimizer != "sgd":
            raise ValueError("RBMs are trained by CD-k with plain SGD; 'optimizer' applies to auto-encoders")
        stack: _LayerwiseStack = DBN(sizes, seed=seed, **layer_kwargs)
        stack.pretrain(X, epochs=epochs, batch_size=batch_size, lr=lr, k=k, persistent=persistent, seed=seed,
                       progress=progress, bias_from_data=bool(bias_from_data))
    else:
        if k != 1 or persistent:
            raise ValueError("'k' and 'persistent' apply to kind='rbm' only")
        stack = StackedAutoEncoder(sizes, kind, seed=seed, **layer_kwargs)
        stack.pretrain(X, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
                       progress=progress, bias_from_data=bias_from_data is not False)
    mlp = stack.to_mlp(num_classes, seed=seed)
    return (mlp, stack) if return_stack else mlp
