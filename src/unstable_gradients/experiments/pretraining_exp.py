"""Experiments of survey §2.1, "better training methods": unsupervised greedy layer-wise
pre-training followed by supervised fine-tuning (chapter ``training/01_pretraining``).

The chapter compares four *arms* of one fully connected net (``ARMS``, ``build_arm``):

- ``"random"``: sigmoid units, weights from the "standard" U[-1/sqrt(n), 1/sqrt(n)] (survey eq. 32;
  the random initialisation of Erhan et al. 2010, and the weight init of PyTorch's ``nn.Linear``),
  zero biases;
- ``"dbn"``: sigmoid units initialised from a deep belief net, a stack of RBMs trained by CD-k
  (Hinton, Osindero & Teh 2006; survey Fig. 8);
- ``"denoising"``: sigmoid units initialised from a stack of denoising auto-encoders (masking
  noise, Vincent et al. 2008; the auto-encoder pre-training of Bengio et al. 2007);
- ``"relu_he"``: ReLU units with He-normal weights N(0, 2/n_in) (survey eq. 38) and no
  pre-training: the "better initialiser" of the survey's §2.2, the baseline of caveat (2).

``pretrain_stack`` runs the greedy loop of ``pretraining`` with a finer record than
``DBN.pretrain`` (the reconstruction error every ``record_every`` images, and the wall-clock time
of each layer). A stack pre-trained to depth L also gives every shallower pre-trained net, since
greedy training never looks at the layers above: ``build_arm`` unrolls its first ``depth`` layers.
``depth_sweep`` fine-tunes every arm at every depth and seed, with the seed shared by all arms
(same batch order, same output-layer initialisation), and records the test error at the end
(after every epoch for the longer runs), the per-layer gradient norms at the start of
fine-tuning and the time taken.
``linear_probe_accuracy`` / ``layer_probe`` measure how much label information each layer's
representation carries, with a linear classifier fitted to the frozen features (caveat (1)).

Left out on purpose: the learning-rate search and early stopping on a validation set of Erhan et
al. (one set of hyper-parameters for every arm here, stated in the chapter), momentum and
weight decay during pre-training, and the DBN's generative up-down fine-tuning. The output layer
of the pre-trained arms is LeCun-normal N(0, 1/n_in) (``pretraining.unroll_to_mlp``); the random
arm's is standard-uniform like its hidden layers.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..diagnostics import GradientProfile, gradient_profile
from ..models import MLP, deep_mlp
from ..pretraining import DBN, StackedAutoEncoder, train_autoencoder, train_rbm, unroll_to_mlp
from ..training import evaluate, train

__all__ = [
    "ARMS", "PRETRAINED_ARMS", "PretrainResult", "pretrain_stack", "build_arm", "ArmRun", "Sweep",
    "depth_sweep", "hidden_representations", "linear_probe_accuracy", "layer_probe", "paired_wins",
]

#: arm name -> short description (the legend of the chapter's figures)
ARMS: dict[str, str] = {
    "random": "sigmoid, random U(±1/√n)",
    "dbn": "sigmoid, DBN pre-trained (RBMs, CD-1)",
    "denoising": "sigmoid, denoising-AE pre-trained",
    "relu_he": "ReLU, He init, no pre-training",
}
#: arms that need a pre-trained stack: arm -> stack kind of ``pretrain_stack``
PRETRAINED_ARMS: dict[str, str] = {"dbn": "rbm", "denoising": "denoising"}


def _check_arm(arm: str) -> str:
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid names: {', '.join(ARMS)}")
    return arm


@dataclass
class PretrainResult:
    """A greedily pre-trained stack and its record.

    ``curves[l]``: reconstruction error of layer l (mean squared error per visible unit, the
    mean over each block of ``record_every`` images, measured on each mini-batch just before its
    update) after ``images_seen[i]`` images; ``seconds[l]``: wall-clock time to train layer l
    (including passing the data through it for the next layer).
    """

    kind: str
    stack: DBN | StackedAutoEncoder
    images_seen: list[int]
    curves: list[list[float]]
    seconds: list[float]

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))


def pretrain_stack(kind: str, sizes: Sequence[int], X: Tensor, *, epochs: int = 1, batch_size: int = 20,
                   lr: float = 0.1, k: int = 1, corruption: float = 0.25, record_every: int = 500,
                   seed: int = 0) -> PretrainResult:
    """Greedy layer-wise pre-training of a stack with ``sizes = [n_in, n_1, ..., n_L]`` on ``X``.

    ``kind``: ``"rbm"`` (a ``DBN`` trained by CD-``k``, Hinton 2002) or ``"denoising"`` (a
    ``StackedAutoEncoder`` of denoising auto-encoders with masking ``corruption``, trained by SGD on
    the cross-entropy reconstruction loss). Each layer sees ``epochs`` passes over the codes of
    the layer below, in blocks of ``record_every`` images: within an epoch the data are shuffled
    once and each block goes through ``train_rbm`` / ``train_autoencoder`` for one epoch, which
    with plain SGD is the same algorithm as one long epoch, but leaves a point of the
    reconstruction curve after every block. Layer l uses seed ``seed + l`` for its weights.
    """
    if kind not in ("rbm", "denoising"):
        raise ValueError(f"unknown stack kind {kind!r}; valid names: rbm, denoising")
    if epochs < 1 or record_every < 1:
        raise ValueError(f"need epochs >= 1 and record_every >= 1; got {epochs}, {record_every}")
    if kind == "rbm":
        stack: DBN | StackedAutoEncoder = DBN(sizes, seed=seed)
    else:
        stack = StackedAutoEncoder(sizes, "denoising", seed=seed, corruption=corruption)
    gen = torch.Generator().manual_seed(seed)
    h = X.flatten(1)
    curves, seconds, seen = [], [], []
    for i, layer in enumerate(stack.layers):
        start = time.perf_counter()
        curve: list[float] = []
        seen = []
        if kind == "denoising":
            layer.init_bias_from_data(h)
        for epoch in range(epochs):
            order = torch.randperm(len(h), generator=gen)
            for b, first in enumerate(range(0, len(h), record_every)):
                block = h[order[first : first + record_every]]
                block_seed = seed + 1000 * i + 100 * epoch + b
                if kind == "rbm":
                    err = train_rbm(layer, block, 1, batch_size, lr, k, seed=block_seed)
                else:
                    err = train_autoencoder(layer, block, 1, batch_size, lr, seed=block_seed, bias_from_data=False)
                curve.append(err[0])
                seen.append(epoch * len(h) + first + len(block))
        with torch.no_grad():
            h = layer.encode(h)
        seconds.append(time.perf_counter() - start)
        curves.append(curve)
    stack.history = curves
    return PretrainResult(kind, stack, seen, curves, seconds)


def build_arm(arm: str, depth: int, width: int, *, seed: int, stack: DBN | StackedAutoEncoder | None = None,
              in_features: int = 784, num_classes: int = 10) -> MLP:
    """The net of one arm with ``depth`` hidden layers of ``width`` units (``ARMS``).

    Pre-trained arms need the ``stack`` (at least ``depth`` layers of ``width`` units); their
    first ``depth`` layers are unrolled into an ``MLP`` with a fresh output layer seeded ``seed``.
    """
    _check_arm(arm)
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if arm in PRETRAINED_ARMS:
        if stack is None:
            raise ValueError(f"arm {arm!r} needs a pre-trained stack")
        if len(stack.layers) < depth or any(s != width for s in stack.sizes[1 : depth + 1]):
            raise ValueError(f"the stack has sizes {stack.sizes}; need {depth} hidden layers of {width} units")
        return unroll_to_mlp([layer.encoder_params() for layer in stack.layers[:depth]], num_classes,
                             stack.activation, seed=seed)
    if arm == "random":
        return deep_mlp(depth, width, in_features, num_classes, activation="sigmoid", init="standard_uniform",
                        seed=seed)
    return deep_mlp(depth, width, in_features, num_classes, activation="relu", init="he_normal", seed=seed)


@dataclass
class ArmRun:
    """One fine-tuning run of ``epochs`` epochs: ``test_error[e]`` is the test error (%) after
    epoch e (only the epochs that were evaluated); ``profile`` the per-layer gradient norms on the
    first ``profile_images`` training images before the first update; ``seconds`` the wall-clock
    time of fine-tuning, test evaluations included."""

    arm: str
    depth: int
    seed: int
    epochs: int
    test_error: dict[int, float]
    profile: GradientProfile
    seconds: float
    model: MLP | None = None

    def curve(self) -> tuple[list[int], list[float]]:
        """(evaluated epochs, test error (%) after each), in epoch order."""
        epochs = sorted(self.test_error)
        return epochs, [self.test_error[e] for e in epochs]


@dataclass
class Sweep:
    """All runs of ``depth_sweep`` plus the pre-trained stacks, keyed ``(kind, seed)``."""

    runs: list[ArmRun] = field(default_factory=list)
    pretrained: dict[tuple[str, int], PretrainResult] = field(default_factory=dict)

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(r.arm for r in self.runs))

    @property
    def depths(self) -> list[int]:
        return sorted({r.depth for r in self.runs})

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    def get(self, arm: str, depth: int, seed: int) -> ArmRun:
        for r in self.runs:
            if (r.arm, r.depth, r.seed) == (arm, depth, seed):
                return r
        raise KeyError(f"no run for arm={arm!r}, depth={depth}, seed={seed}")

    def errors(self, arm: str, epoch: int) -> np.ndarray:
        """Test error (%) after ``epoch`` epochs, shape (seeds, depths)."""
        return np.array([[self.get(arm, d, s).test_error[epoch] for d in self.depths] for s in self.seeds])

    def table(self, epoch: int, decimals: int = 1) -> str:
        """Mean ± standard deviation over seeds of the test error (%) after ``epoch`` epochs, one
        row per arm, one column per depth (deterministic text for checked cells)."""
        head = f"{'arm (test error %, mean ± sd)':<34}" + "".join(f"{f'depth {d}':>15}" for d in self.depths)
        rows = [head]
        for arm in self.arms:
            e = self.errors(arm, epoch)
            cells = "".join(f"{f'{m:.{decimals}f} ± {s:.{decimals}f}':>15}" for m, s in zip(e.mean(0), e.std(0)))
            rows.append(f"{arm:<34}{cells}")
        return "\n".join(rows)


def depth_sweep(X: Tensor, y: Tensor, X_test: Tensor, y_test: Tensor, *, depths: Sequence[int] = (1, 3, 5),
                seeds: Sequence[int] = (0, 1, 2), width: int = 200, arms: Sequence[str] = tuple(ARMS),
                pretrain: dict | None = None, epochs: int = 5, long_epochs: int | None = None,
                batch_size: int = 20, lr: float = 0.1, profile_images: int = 500,
                keep_models: bool = True) -> Sweep:
    """Fine-tune every arm at every depth and seed with plain SGD (cross-entropy, ``batch_size``,
    ``lr``; one setting for all arms) and record the test error after ``epochs`` epochs.

    For each seed the pre-trained arms' stacks are pre-trained once to the largest depth
    (``pretrain_stack`` with ``pretrain`` as keyword arguments and the same seed). Runs at the
    largest depth with the first seed train for ``long_epochs`` (when given) instead of
    ``epochs``, with the test error after every epoch: their first ``epochs`` epochs are exactly
    the short run (same batch order, no schedule), the rest shows what longer fine-tuning does.
    ``keep_models`` keeps the fine-tuned nets of the first seed at the largest depth.
    """
    for arm in arms:
        _check_arm(arm)
    depths, seeds = sorted(depths), list(seeds)
    if not depths or not seeds or depths[0] < 1:
        raise ValueError(f"need depths >= 1 and at least one seed; got {depths}, {seeds}")
    if long_epochs is not None and long_epochs < epochs:
        raise ValueError(f"long_epochs ({long_epochs}) must be >= epochs ({epochs})")
    sweep = Sweep()
    n_classes = int(y.max()) + 1
    steps_per_epoch = math.ceil(len(X) / batch_size)
    for seed in seeds:
        for arm in arms:
            if arm in PRETRAINED_ARMS and (PRETRAINED_ARMS[arm], seed) not in sweep.pretrained:
                kind = PRETRAINED_ARMS[arm]
                sweep.pretrained[(kind, seed)] = pretrain_stack(kind, [X.shape[1]] + [width] * depths[-1], X,
                                                                seed=seed, **(pretrain or {}))
        for depth in depths:
            longest = depth == depths[-1] and seed == seeds[0]
            for arm in arms:
                stack = sweep.pretrained[(PRETRAINED_ARMS[arm], seed)].stack if arm in PRETRAINED_ARMS else None
                net = build_arm(arm, depth, width, seed=seed, stack=stack, in_features=X.shape[1],
                                num_classes=n_classes)
                profile = gradient_profile(net, X[:profile_images], y[:profile_images])
                net.zero_grad(set_to_none=True)
                n_epochs = long_epochs if (longest and long_epochs) else epochs
                evaluated = set(range(1, n_epochs + 1)) if n_epochs != epochs else {epochs}
                errors: dict[int, float] = {}

                def record(step: int, model, errors=errors, evaluated=evaluated) -> None:
                    epoch, end = divmod(step + 1, steps_per_epoch)
                    if end == 0 and epoch in evaluated:
                        errors[epoch] = 100 * (1 - evaluate(model, X_test, y_test)[1])

                start = time.perf_counter()
                train(net, X, y, epochs=n_epochs, batch_size=batch_size, lr=lr, seed=seed, callback=record,
                      eval_every_epoch=False, progress=False, on_divergence="raise")
                sweep.runs.append(ArmRun(arm, depth, seed, n_epochs, errors, profile, time.perf_counter() - start,
                                         net if (keep_models and longest) else None))
    return sweep


@torch.no_grad()
def hidden_representations(net: MLP | DBN | StackedAutoEncoder, X: Tensor) -> list[Tensor]:
    """The output x_l of every hidden layer of ``net`` for the inputs ``X``, input side first: an
    ``MLP``'s hidden activations, or a stack's codes (``transform``)."""
    if isinstance(net, MLP):
        out, h = [], X.flatten(1)
        for linear, act in zip(net.linears[:-1], net.activations):
            h = act(linear(h))
            out.append(h)
        return out
    return net.transform(X)


def linear_probe_accuracy(F_train: Tensor, y_train: Tensor, F_test: Tensor, y_test: Tensor, *,
                          max_iter: int = 30, l2: float = 1e-3) -> float:
    """Test accuracy of a linear classifier (multinomial logistic regression) fitted to the frozen
    features ``F_train`` (rows): each feature standardised with the training mean and standard
    deviation, softmax weights fitted by full-batch L-BFGS (``max_iter`` iterations, strong Wolfe
    line search) on cross-entropy + ``l2`` * ||W||^2, starting from zero. The features are not
    changed, so the score says how linearly the classes can be read off a representation as it
    stands (a "linear probe")."""
    if len(F_train) != len(y_train) or len(F_test) != len(y_test):
        raise ValueError("features and labels must have the same number of rows")
    F_train, F_test = F_train.detach().float(), F_test.detach().float()
    mu, sd = F_train.mean(0), F_train.std(0).clamp_min(1e-3)
    Z_train, Z_test = (F_train - mu) / sd, (F_test - mu) / sd
    n_classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    W = torch.zeros(Z_train.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Z_train @ W + b, y_train) + l2 * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((Z_test @ W + b).argmax(1) == y_test).double().mean())


def layer_probe(net: MLP | DBN | StackedAutoEncoder, X: Tensor, y: Tensor, X_test: Tensor,
                y_test: Tensor) -> list[float]:
    """``linear_probe_accuracy`` of each hidden layer's representation (input side first)."""
    train_reps, test_reps = hidden_representations(net, X), hidden_representations(net, X_test)
    return [linear_probe_accuracy(a, y, b, y_test) for a, b in zip(train_reps, test_reps)]


def paired_wins(sweep: Sweep, arm: str, baseline: str, depth: int, epoch: int) -> tuple[int, int, float]:
    """(seeds where ``arm`` has the lower test error than ``baseline``, number of seeds, mean of
    baseline - arm in percentage points) after ``epoch`` epochs at ``depth``; runs are paired by
    seed (same batch order and output-layer seed)."""
    a = np.array([sweep.get(arm, depth, s).test_error[epoch] for s in sweep.seeds])
    b = np.array([sweep.get(baseline, depth, s).test_error[epoch] for s in sweep.seeds])
    return int((a < b).sum()), len(a), float((b - a).mean())
