"""The closing chapter's cases: models the book did not build, broken one way each, then repaired.

Each model is written the way a reader would write it, from ``torch.nn`` parts only, so that the
chapter applies ``diagnosis.diagnose`` to code it has never seen:

- ``SequenceClassifier``: a ``torch.nn.LSTM`` read out at the last step, on the first-input task
  (``effects_rnn.first_input_task``). Broken: an initialisation that leaves the forget gate near
  sigma(0) = 1/2 (torch's default, or small Gaussian weights). Repaired: the forget-gate bias of
  the gates chapter (``gates_exp.horizon_gate_bias``).
- ``TokenTransformer``: ``torch.nn.TransformerEncoder`` on a sequence-reversal task. Broken: the
  layer norms removed. Repaired: pre-LN (``norm_first=True`` and a final LayerNorm).
- ``bn_cnn``: two conv layers with ``torch.nn.BatchNorm2d`` on MNIST. Broken: a learning rate of
  1.0. Repaired: 0.05.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..diagnosis import Diagnosis, diagnose
from ..losses import get_loss
from ..training import evaluate, train
from ..utils import lookup, set_seed
from .effects_rnn import first_input_task
from .gates_exp import horizon_gate_bias
from .transformer_exp import reversal_batch, token_loss

__all__ = ["SequenceClassifier", "TokenTransformer", "bn_cnn", "reversal_task", "lstm_model", "transformer_model", "cnn_model", "token_loss",
           "CASES", "Case", "diagnose_case", "train_case"]


class SequenceClassifier(nn.Module):
    """``torch.nn.LSTM`` (batch first) followed by a linear read-out of the last hidden state."""

    def __init__(self, input_size: int = 1, hidden_size: int = 32, num_classes: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.lstm(x)
        return self.readout(h[:, -1])


class TokenTransformer(nn.Module):
    """Embedding, ``torch.nn.TransformerEncoder`` and a per-token read-out. ``norm``: ``"post"``
    (torch's default, x = LN(x + F(x))), ``"pre"`` (x = x + F(LN(x)) and a final LayerNorm) or
    ``"none"`` (both layer norms of every block replaced by the identity)."""

    def __init__(self, vocab: int = 16, d_model: int = 64, nhead: int = 4, depth: int = 24, norm: str = "post") -> None:
        super().__init__()
        if norm not in ("post", "pre", "none"):
            raise ValueError(f"norm must be one of 'post', 'pre', 'none', got {norm!r}")
        self.embed = nn.Embedding(vocab, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, 2 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=norm == "pre")
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(d_model) if norm == "pre" else None,
                                             enable_nested_tensor=False)
        if norm == "none":
            for block in self.encoder.layers:
                block.norm1, block.norm2 = nn.Identity(), nn.Identity()
        self.readout = nn.Linear(d_model, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.readout(self.encoder(self.embed(tokens)))


def bn_cnn() -> nn.Sequential:
    """Two 3x3 conv layers with ``torch.nn.BatchNorm2d``, ReLU and max-pooling, then a linear layer."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def reversal_task(n: int, length: int = 12, vocab: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` random token sequences and their reversals (``transformer_exp.reversal_batch``, seeded)."""
    return reversal_batch(n, length, vocab, generator=torch.Generator().manual_seed(seed))


def lstm_model(init: str, steps: int = 50, hidden: int = 32, seed: int = 0) -> SequenceClassifier:
    """``init``: ``"torch default"``, ``"small"`` (every parameter N(0, 0.01^2)) or ``"forget bias"``
    (torch's default with the forget-gate bias set to ``horizon_gate_bias(steps)``)."""
    set_seed(seed)
    model = SequenceClassifier(1, hidden, 2)
    lstm = model.lstm
    if init == "small":
        for p in lstm.parameters():
            nn.init.normal_(p, 0.0, 0.01)
    elif init == "forget bias":
        with torch.no_grad():  # torch orders the gates i, f, g, o; the two biases add up
            lstm.bias_ih_l0[hidden:2 * hidden] = horizon_gate_bias(steps)
            lstm.bias_hh_l0[hidden:2 * hidden] = 0.0
    elif init != "torch default":
        raise ValueError(f"unknown init {init!r}; valid: 'torch default', 'small', 'forget bias'")
    return model


def transformer_model(norm: str, depth: int = 24, seed: int = 0) -> TokenTransformer:
    set_seed(seed)
    return TokenTransformer(depth=depth, norm=norm)


@dataclass(frozen=True)
class Case:
    """One model the chapter breaks and repairs: how to build each version, its data and loss."""

    title: str
    build: Callable[[str, int], nn.Module]   # (version setting, seed) -> model
    broken: str
    repaired: str
    data: Callable[[int, int], tuple[Tensor, Tensor]]   # (n, seed) -> X, y
    loss: str | Callable[[Tensor, Tensor], Tensor]
    time_axis: int | None = None
    lr: float | None = None           # SGD learning rate of each version, for the update ratio
    broken_lr: float | None = None


def cnn_model(version: str, seed: int = 0) -> nn.Sequential:
    """``bn_cnn`` with seeded weights (the two versions differ only in their learning rate)."""
    set_seed(seed)
    return bn_cnn()


def _mnist(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` MNIST training images (``seed`` is unused: the order is fixed)."""
    from ..data import load_mnist

    return load_mnist("train", subset=n, flatten=False)


CASES: dict[str, Case] = {
    "lstm": Case("torch.nn.LSTM, first-input task (T = 50)", lambda v, s: lstm_model(v, seed=s), "torch default",
                 "forget bias", lambda n, s: first_input_task(n, 50, seed=s), "cross_entropy", time_axis=1),
    "transformer": Case("torch.nn.TransformerEncoder, 24 layers, sequence reversal", lambda v, s: transformer_model(v, seed=s),
                        "none", "pre", lambda n, s: reversal_task(n, seed=s), token_loss, lr=1e-3, broken_lr=1e-3),
    "cnn": Case("conv net with torch.nn.BatchNorm2d, MNIST", cnn_model, "lr = 1.0",
                "lr = 0.05", _mnist, "cross_entropy", lr=0.05, broken_lr=1.0),
}


def _case_lr(case: Case, version: str) -> float | None:
    return case.broken_lr if version == "broken" else case.lr


def diagnose_case(name: str, version: str, n: int = 256, seed: int = 0, model: nn.Module | None = None) -> Diagnosis:
    """Build the ``version`` (``"broken"`` or ``"repaired"``) of case ``name`` (or take ``model``) and diagnose it."""
    case = lookup(CASES, name, "case")
    if version not in ("broken", "repaired"):
        raise ValueError(f"version must be 'broken' or 'repaired', got {version!r}")
    model = model if model is not None else case.build(getattr(case, version), seed)
    X, y = case.data(n, seed)
    return diagnose(model, X, y, loss=case.loss, lr=_case_lr(case, version), time_axis=case.time_axis)


def train_case(name: str, version: str, steps: int = 150, batch: int = 64, seed: int = 0, lr: float | None = None
               ) -> tuple[nn.Module, list[float], float]:
    """Train one version of a case; returns the model, its training losses and its held-out accuracy.

    LSTM and Transformer: Adam (lr 1e-2 and 1e-3), a fresh batch of the task at every step, accuracy
    on 1,000 new sequences (per token for the reversal task). CNN: SGD with the case's learning
    rate through ``training.train`` on ``steps * batch`` MNIST images, accuracy on 1,000 test images.
    ``lr`` overrides the learning rate.
    """
    case = lookup(CASES, name, "case")
    model = case.build(getattr(case, version), seed)
    if name == "cnn":
        from ..data import load_mnist

        X, y = case.data(steps * batch, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = train(model, X, y, epochs=1, batch_size=batch, lr=lr or _case_lr(case, version), seed=seed,
                        progress=False, eval_every_epoch=False)
        Xt, yt = load_mnist("test", subset=1000, flatten=False)
        return model, res.loss, evaluate(model, Xt, yt)[1]
    lossf = get_loss(case.loss) if isinstance(case.loss, str) else case.loss
    opt = torch.optim.Adam(model.parameters(), lr=lr or (1e-2 if name == "lstm" else 1e-3))
    losses = []
    for k in range(steps):
        xb, yb = case.data(batch, 1_000 + 7919 * seed + k)
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    Xt, yt = case.data(1000, 99)
    with torch.no_grad():
        acc = float((model(Xt).argmax(-1) == yt).float().mean())
    return model, losses, acc
