"""Experiments of survey §3.2, "training without back-propagated gradients" (chapter
``future/03_without_backprop``): back-propagation against feedback alignment (Lillicrap et al.
2016) and direct feedback alignment (Nøkland 2016), with the rules of ``feedback``.

Every function returns plain data that ``plotting`` draws.

- ``rule_checks``: the rules against their formulas: FA with B = W^T is back-propagation, and
  the FA and DFA teaching signals are the recursions of ``feedback``'s docstring.
- ``compare_rules``: the same tanh MLP (same initial weights per seed) trained on MNIST by each
  rule with ``training.train``; per epoch the training loss and train/test error, and every
  ``probe_every`` steps the angle between each hidden layer's update under the rule and the true
  gradient (``feedback.alignment``) on a fixed probe batch.
- ``signal_profiles``: ||delta_l|| by hidden layer at initialisation for each rule, the picture
  that ties the rules to unstable gradients: BP's signal is multiplied by W^T diag(f') once per
  layer on its way down, DFA's reaches layer l through B_l alone.
- ``zero_init_signals``: with every weight 0 (Nøkland's "zero initial condition") BP sends
  exactly nothing to the hidden layers, FA and DFA send signals through their fixed B.

Left out on purpose: convolutional nets and CIFAR (both papers have them); dropout (Nøkland's
1.45 % MNIST result uses it); the linear and non-linear regression tasks of Lillicrap et al.;
forward-forward (Hinton 2022), described in the chapter only. One fixed learning rate and
optimiser for every rule (no per-rule search as in the papers), and we say so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..feedback import RULES, FeedbackMLP, alignment, hidden_deltas
from ..training import evaluate, train
from ..utils import lookup, set_seed

__all__ = ["RULE_COMPARISON", "RuleRun", "RuleComparison", "build_feedback_net", "rule_checks", "compare_rules",
           "signal_profiles", "zero_init_signals"]

#: Book-scale defaults of ``compare_rules``: Nøkland's 7 x 240 tanh net on an MNIST subset.
RULE_COMPARISON: dict = dict(width=240, depth=7, activation="tanh", init="lecun_normal", epochs=4, batch_size=50,
                             lr=0.05, optimizer="sgd", probe_size=100, probe_every=30, zero_init=False,
                             feedback_scale=1.0)


def _check_rules(rules: Sequence[str]) -> list[str]:
    return [lookup({k: k for k in RULES}, r, "training rule") for r in rules]


def build_feedback_net(rule: str, depth: int, width: int, seed: int, n_in: int = 784, n_out: int = 10,
                       activation: str = "tanh", init: str | None = "lecun_normal", zero_init: bool = False,
                       feedback_scale: float = 1.0) -> FeedbackMLP:
    """``depth`` hidden layers of ``width`` units. ``seed`` fixes the initial weights (the same for
    every rule) and, through ``seed + 1``, the feedback matrices. ``init=None`` keeps torch's
    default U[-1/sqrt(fan_in), 1/sqrt(fan_in)] for weights and biases, drawn after ``set_seed(seed)``."""
    if depth < 1 or width < 1:
        raise ValueError(f"need depth >= 1 and width >= 1; got depth={depth}, width={width}")
    set_seed(seed)
    return FeedbackMLP([n_in] + [width] * depth + [n_out], rule=rule, activation=activation, init=init, seed=seed,
                       zero_init=zero_init, feedback_scale=feedback_scale)


def rule_checks(sizes: Sequence[int] = (20, 16, 12, 8, 5), batch: int = 9, seed: int = 0) -> dict[str, float]:
    """Largest absolute differences, in float64, between autograd under each rule and its formula:
    ``fa_is_bp`` (all parameter gradients of FA with every B set to W^T vs back-propagation),
    ``fa_delta`` (delta_l = (delta_{l+1} B_{l+1}^T) ⊙ f'(a_l)) and ``dfa_delta``
    (delta_l = (e B_l^T) ⊙ f'(a_l)), e = de/d(logits) of the mean cross-entropy."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, sizes[0], generator=g, dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (batch,), generator=g)
    nets = {r: FeedbackMLP(sizes, rule=r, seed=seed).double() for r in RULES}
    with torch.no_grad():
        for B, lin in zip(nets["fa"].feedbacks, nets["fa"].linears[1:]):
            B.copy_(lin.weight.T)
    grads = {}
    for r in ("bp", "fa"):
        torch.nn.functional.cross_entropy(nets[r](x), y).backward()
        grads[r] = [p.grad for p in nets[r].parameters()]
    out = dict(fa_is_bp=max(float((a - b).abs().max()) for a, b in zip(grads["fa"], grads["bp"])))
    nets["fa"] = FeedbackMLP(sizes, rule="fa", seed=seed).double()  # random B again
    for rule in ("fa", "dfa"):
        net = nets[rule]
        logits, pre, _ = net.trace(x)
        e = (torch.softmax(logits, 1) - torch.nn.functional.one_hot(y, sizes[-1])).detach() / batch
        deltas, _ = hidden_deltas(net, x, y)
        diff, delta = 0.0, e
        for l in range(len(pre) - 1, -1, -1):
            back = delta @ net.feedbacks[l].T if rule == "fa" else e @ net.feedbacks[l].T
            delta = back * net.activations[l].derivative(pre[l].detach())
            diff = max(diff, float((deltas[l] - delta).abs().max()))
        out[f"{rule}_delta"] = diff
    return out


@dataclass
class RuleRun:
    """One training run. Errors in %; per-epoch arrays have one entry per epoch (``train_error``
    is measured after the last epoch only, earlier entries are nan); the probe arrays are
    (probes, hidden layers), probe k taken after ``probe_steps[k]`` optimiser steps."""

    rule: str
    seed: int
    epoch_loss: np.ndarray
    train_error: np.ndarray
    test_error: np.ndarray
    probe_steps: np.ndarray
    delta_angle: np.ndarray
    weight_angle: np.ndarray
    rule_norm: np.ndarray
    bp_norm: np.ndarray
    diverged: bool = False


@dataclass
class RuleComparison:
    """``runs[(rule, seed)]``: the ``RuleRun`` of each arm and seed; ``settings``: what was run."""

    rules: list[str]
    seeds: list[int]
    runs: dict[tuple[str, int], RuleRun]
    settings: dict = field(default_factory=dict)

    def stack(self, rule: str, key: str) -> np.ndarray:
        """``getattr(run, key)`` of every seed of ``rule``, stacked (seeds first)."""
        return np.stack([getattr(self.runs[(rule, s)], key) for s in self.seeds])

    def final(self, key: str = "test_error") -> dict[str, np.ndarray]:
        """The last entry of a per-epoch key for every rule, one value per seed."""
        return {r: self.stack(r, key)[:, -1] for r in self.rules}

    def late_angle(self, rule: str, key: str = "weight_angle", probes: int = 3) -> np.ndarray:
        """Per-layer angle averaged over the last ``probes`` probes and the seeds."""
        return self.stack(rule, key)[:, -probes:].mean((0, 1))


def compare_rules(X: Tensor, y: Tensor, test: tuple[Tensor, Tensor], rules: Sequence[str] = tuple(RULES),
                  seeds: Sequence[int] = (0, 1), **overrides) -> RuleComparison:
    """Train one net per rule and seed (``build_feedback_net``; settings ``RULE_COMPARISON``
    updated by ``overrides``) on (X, y) with ``training.train`` (cross-entropy, mini-batch order
    fixed by the seed), recording the test error each epoch and ``feedback.alignment`` on the first
    ``probe_size`` training images at initialisation and every ``probe_every`` steps. The test error
    is measured after every epoch, the training error after the last."""
    unknown = set(overrides) - set(RULE_COMPARISON)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; valid: {sorted(RULE_COMPARISON)}")
    cfg = {**RULE_COMPARISON, **overrides}
    rules, seeds = _check_rules(rules), [int(s) for s in seeds]
    if not seeds or not rules:
        raise ValueError("need at least one rule and one seed")
    Xp, yp = X[: cfg["probe_size"]], y[: cfg["probe_size"]]
    steps_per_epoch = math.ceil(len(X) / cfg["batch_size"])
    runs = {}
    for rule in rules:
        for s in seeds:
            net = build_feedback_net(rule, cfg["depth"], cfg["width"], s, X.shape[1], int(y.max()) + 1,
                                     cfg["activation"], cfg["init"], cfg["zero_init"], cfg["feedback_scale"])
            probes, test_acc = [(0, alignment(net, Xp, yp))], []

            def probe(step: int, model: FeedbackMLP) -> None:
                if (step + 1) % cfg["probe_every"] == 0:
                    probes.append((step + 1, alignment(model, Xp, yp)))
                if (step + 1) % steps_per_epoch == 0:  # the test error after each epoch
                    with torch.no_grad():
                        test_acc.append(evaluate(model, *test)[1])

            res = train(net, X, y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                        optimizer=cfg["optimizer"], seed=s, progress=False, eval_every_epoch=False, callback=probe)
            nan = np.full(cfg["epochs"] - len(res.epoch_loss), np.nan)  # a diverged run stops early: pad with nan
            train_error = np.full(cfg["epochs"], np.nan)
            if res.ok:
                with torch.no_grad():
                    train_error[-1] = 100 * (1 - evaluate(net, X, y)[1])
            runs[(rule, s)] = RuleRun(
                rule, s, np.concatenate([res.epoch_loss, nan]), train_error,
                100 * (1 - np.concatenate([test_acc, nan])), np.array([p[0] for p in probes]),
                *(np.stack([p[1][k] for p in probes]) for k in ("delta_angle", "weight_angle", "rule_norm", "bp_norm")),
                diverged=not res.ok)
    return RuleComparison(rules, seeds, runs, dict(cfg, n_train=len(X), n_test=len(test[0])))


def signal_profiles(X: Tensor, y: Tensor, depth: int = 50, width: int = 64, rules: Sequence[str] = tuple(RULES),
                    activation: str = "tanh", init: str | None = None, seeds: Sequence[int] = range(3),
                    dtype: torch.dtype = torch.float64) -> dict[str, np.ndarray]:
    """||delta_l|| = ||de/da_l|| (Frobenius over the batch) of hidden layers l = 1 ... depth at
    initialisation, under each rule: {rule: (seeds, depth)}. The nets of one seed share their
    weights across rules (``build_feedback_net``); float64 so that nothing underflows."""
    out = {}
    for rule in _check_rules(rules):
        rows = []
        for s in seeds:
            net = build_feedback_net(rule, depth, width, s, X.shape[1], int(y.max()) + 1, activation, init).to(dtype)
            rows.append([float(d.norm()) for d in hidden_deltas(net, X.to(dtype), y)[0]])
        out[rule] = np.array(rows)
    return out


def zero_init_signals(X: Tensor, y: Tensor, depth: int = 7, width: int = 240, rules: Sequence[str] = tuple(RULES),
                      seed: int = 0) -> dict[str, np.ndarray]:
    """||delta_l|| of every hidden layer when all weights and biases are 0 (float64, tanh): BP
    gives exactly 0 (the error passes through W_{l+1}^T = 0); FA and DFA do not (their B are not
    0; f'(0) = 1). At the first step only W_1 and the biases get a non-zero update (x_l = tanh(0) = 0
    above the input); from the second step, with x_l = tanh(b_l) != 0, every layer does."""
    out = {}
    for rule in _check_rules(rules):
        net = build_feedback_net(rule, depth, width, seed, X.shape[1], int(y.max()) + 1, zero_init=True).double()
        out[rule] = np.array([float(d.norm()) for d in hidden_deltas(net, X.double(), y)[0]])
    return out
