"""Training rules that do not back-propagate the error through W^T (survey §3.2; beyond the survey).

The survey names "training without back-propagated gradients" as a future direction. Two rules
published after it (2016) are implemented here for fully connected nets, as backward passes of
custom ``torch.autograd.Function``s, so that ``loss.backward()`` and the package's ``train`` work
unchanged. With pre-activations a_l = W_l x_{l-1} + b_l, hidden outputs x_l = f(a_l), logits
a_L and the output error e = de/da_L, the teaching signal delta_l = de/da_l of hidden layer l is

- ``bp``  (back-propagation, survey eq. 3-4):  delta_l = (W_{l+1}^T delta_{l+1}) ⊙ f'(a_l)
- ``fa``  (feedback alignment, Lillicrap et al. 2016, Fig. 1):
           delta_l = (B_{l+1} delta_{l+1}) ⊙ f'(a_l), B_{l+1} a fixed random matrix of the shape of W_{l+1}^T
- ``dfa`` (direct feedback alignment, Nøkland 2016, §2):
           delta_l = (B_l e) ⊙ f'(a_l), B_l a fixed random (n_l x n_L) matrix: the output error
           reaches every hidden layer directly, through no other layer.

Every rule then updates W_l by -lr delta_l x_{l-1}^T (survey eq. 5) and b_l by -lr delta_l (eq. 6);
the output layer always gets its true gradient e x_{L-1}^T.

Notation. ``FeedbackLinearFunction`` takes the feedback matrix as B (shape (n_in, n_out), the
shape of W^T), so B = W^T gives back-propagation exactly. The feedback matrices are buffers, not
parameters: no optimiser sees them and they never change. Their entries are drawn from
U[-b, b] with b = ``feedback_scale`` / sqrt(k): for FA k = n_{l+1}, the dimension of the error
B_{l+1} multiplies (a fan-out scale: torch draws the W_{l+1} whose place B takes at 1/sqrt(n_l),
so the two agree only between layers of equal width; Lillicrap et al. tune a scale by hand); for DFA k = n_l, the width of the layer that receives B_l e (Nøkland's code,
``ErrorFeedback.lua``: U[-1/sqrt(n_l), 1/sqrt(n_l)]).

Left out on purpose: convolutional layers, normalised or maxout MLPs, output activations (the
loss takes logits), and the sign-symmetric and other later variants.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from .losses import get_loss
from .models.mlp import MLP
from .utils import lookup

__all__ = ["RULES", "FeedbackLinearFunction", "feedback_linear", "DirectFeedbackFunction", "FeedbackMLP",
           "using_rule", "hidden_deltas", "angle_deg", "alignment"]

#: The training rules by name (what each sends back to hidden layer l).
RULES: dict[str, str] = {
    "bp": "back-propagation: W_{l+1}^T delta_{l+1}",
    "fa": "feedback alignment: B_{l+1} delta_{l+1}, B fixed and random",
    "dfa": "direct feedback alignment: B_l e, straight from the output error",
}


class FeedbackLinearFunction(torch.autograd.Function):
    """y = x W^T + b whose backward sends grad_y @ B^T to the input instead of grad_y @ W
    (Lillicrap et al. 2016: B replaces W^T). The weight and bias get their true gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor) -> Tensor:
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        out = x @ weight.T
        return out + bias if bias is not None else out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, feedback = ctx.saved_tensors
        grad_x = grad_out @ feedback.T if ctx.needs_input_grad[0] else None
        grad_w = grad_out.T @ x  # eq. 5
        grad_b = grad_out.sum(0) if ctx.has_bias else None  # eq. 6
        return grad_x, grad_w, grad_b, None


def feedback_linear(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor) -> Tensor:
    """``FeedbackLinearFunction.apply`` with shape checks: ``feedback`` must have the shape of W^T."""
    if feedback.shape != weight.T.shape:
        raise ValueError(f"feedback must have the shape of W^T, {tuple(weight.T.shape)}; got {tuple(feedback.shape)}")
    return FeedbackLinearFunction.apply(x, weight, bias, feedback)


class DirectFeedbackFunction(torch.autograd.Function):
    """Identity on the logits; its backward hands e = de/d(logits) on unchanged and sends B_l e
    to every hidden output x_l (Nøkland 2016, §2). The caller detaches each layer's input, so
    nothing flows between the hidden layers."""

    @staticmethod
    def forward(ctx, logits: Tensor, feedbacks: tuple[Tensor, ...], *hidden: Tensor) -> Tensor:
        ctx.feedbacks = feedbacks
        return logits.clone()

    @staticmethod
    def backward(ctx, e: Tensor):
        return (e, None, *[e @ B.T for B in ctx.feedbacks])


class FeedbackMLP(MLP):
    """The package's ``MLP`` (eq. 1-2) trained by ``rule`` (``RULES``: ``bp``, ``fa``, ``dfa``).

    The forward values are those of the ``MLP`` with the same weights whatever the rule; only the
    backward pass differs. ``feedback_seed`` (default ``seed + 1``, or fresh randomness when
    ``seed`` is None) draws the fixed matrices, kept as buffers ``feedback0, feedback1, ...``
    (``feedbacks``): for FA one per layer above the first (shape of W_l^T), for DFA one per
    hidden layer (n_l x n_L). ``rule`` can be switched later (``using_rule``); matrices for both
    rules are drawn up front so a switch never draws new ones. ``zero_init`` sets every weight
    and bias to 0 (Nøkland's "zero initial condition"). Other keywords go to ``MLP``.
    """

    def __init__(self, sizes: Sequence[int], rule: str = "fa", activation: str = "tanh",
                 init: str | None = "lecun_normal",
                 feedback_scale: float = 1.0, seed: int | None = None, feedback_seed: int | None = None,
                 zero_init: bool = False, **mlp_kwargs) -> None:
        for key in ("norm", "output_activation"):
            if mlp_kwargs.get(key) not in (None, "none"):
                raise ValueError(f"FeedbackMLP implements plain MLPs (eq. 1-2); "
                                 f"{key}={mlp_kwargs[key]!r} is not supported")
        super().__init__(sizes, activation=activation, init=init, seed=seed, **mlp_kwargs)
        if any(not act.elementwise for act in self.activations):
            raise ValueError("FeedbackMLP needs an elementwise activation; maxout is not one")
        if not (math.isfinite(feedback_scale) and feedback_scale > 0):
            raise ValueError(f"feedback_scale must be a finite number > 0, got {feedback_scale}")
        self.rule = lookup({k: k for k in RULES}, rule, "training rule")
        fseed = feedback_seed if feedback_seed is not None else (seed + 1 if seed is not None else None)
        gen = torch.Generator().manual_seed(fseed) if fseed is not None else None
        n_out = self.sizes[-1]
        shapes = [(tuple(lin.weight.T.shape), lin.out_features) for lin in self.linears[1:]]  # FA: B_{l+1} ~ W_{l+1}^T
        shapes += [((n, n_out), n) for n in self.sizes[1:-1]]  # DFA: B_l, n_l x n_L, Nøkland's 1/sqrt(n_l)
        for i, ((rows, cols), k) in enumerate(shapes):
            bound = feedback_scale / math.sqrt(k)
            self.register_buffer(f"feedback{i}", (torch.rand(rows, cols, generator=gen) * 2 - 1) * bound)
        self._n_fa = len(self.linears) - 1
        if zero_init:
            with torch.no_grad():
                for p in self.parameters():
                    p.zero_()
        self.config.update(kind="feedback_mlp", rule=self.rule, feedback_scale=feedback_scale,
                           feedback_seed=feedback_seed, zero_init=zero_init)

    @classmethod
    def from_config(cls, config: dict) -> "FeedbackMLP":
        """Rebuild from ``config`` (weights and feedback matrices redrawn from the seeds)."""
        cfg = {k: v for k, v in config.items() if k != "kind"}
        return cls(**cfg)

    @property
    def feedbacks(self) -> list[Tensor]:
        """The fixed matrices of the current rule: FA's B_2 ... B_L or DFA's B_1 ... B_{L-1}; none for BP."""
        bufs = [getattr(self, f"feedback{i}") for i in range(self._n_fa + len(self.activations))]
        return {"bp": [], "fa": bufs[: self._n_fa], "dfa": bufs[self._n_fa:]}[self.rule]

    def trace(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Logits, the hidden pre-activations a_1 ... a_{L-1} and the layer inputs x_0 ... x_{L-1}."""
        x = x.flatten(1) if x.dim() > 2 else x
        pre, inputs = [], [x]  # inputs: x_0 ... x_{L-1}
        B = self.feedbacks
        for l, (lin, act) in enumerate(zip(self.linears[:-1], self.activations)):
            if self.rule == "fa" and l > 0:
                a = feedback_linear(x, lin.weight, lin.bias, B[l - 1])
            else:
                a = lin(x.detach() if self.rule == "dfa" else x)  # DFA: nothing flows between layers
            x = act(a)
            pre.append(a)
            inputs.append(x)
        last = self.linears[-1]
        if self.rule == "fa":
            out = feedback_linear(x, last.weight, last.bias, B[-1])
        elif self.rule == "dfa":
            out = DirectFeedbackFunction.apply(last(x.detach()), tuple(B), *inputs[1:])
        else:
            out = last(x)
        return out, pre, inputs

    def forward(self, x: Tensor) -> Tensor:
        return self.trace(x)[0]


@contextlib.contextmanager
def using_rule(model: FeedbackMLP, rule: str) -> Iterator[FeedbackMLP]:
    """Temporarily train ``model`` by another rule (same weights), e.g. ``bp`` for the true gradient."""
    lookup({k: k for k in RULES}, rule, "training rule")
    old, model.rule = model.rule, rule
    try:
        yield model
    finally:
        model.rule = old


def hidden_deltas(model: FeedbackMLP, x: Tensor, y: Tensor,
                  loss: str = "cross_entropy") -> tuple[list[Tensor], list[Tensor]]:
    """The rule's teaching signals delta_l = de/da_l of every hidden layer (the de/da_l autograd
    sees under the rule's backward) and the layer inputs x_{l-1}, l = 1 ... L-1."""
    if not isinstance(model, FeedbackMLP):
        raise TypeError(f"hidden_deltas needs a FeedbackMLP, got {type(model).__name__}")
    out, pre, inputs = model.trace(x)
    deltas = torch.autograd.grad(get_loss(loss)(out, y), pre)
    return [d.detach() for d in deltas], [i.detach() for i in inputs[: len(pre)]]


def angle_deg(u: Tensor, v: Tensor) -> float:
    """The angle in degrees between two tensors taken as flat vectors, in float64; nan if one is 0."""
    u, v = u.detach().double().flatten(), v.detach().double().flatten()
    nu, nv = float(u.norm()), float(v.norm())
    if nu == 0 or nv == 0:
        return float("nan")
    return math.degrees(math.acos(max(-1.0, min(1.0, float(u @ v) / (nu * nv)))))


def alignment(model: FeedbackMLP, x: Tensor, y: Tensor, loss: str = "cross_entropy") -> dict[str, np.ndarray]:
    """How far the rule's updates are from back-propagation's, per hidden layer l = 1 ... L-1.

    Keys: ``delta_angle`` (angle between the rule's delta_l and BP's, over the whole batch:
    Lillicrap et al.'s Δh_FA ∠ Δh_BP), ``weight_angle`` (angle between the weight updates
    delta_l^T x_{l-1} of the rule and of BP, i.e. between the update and the true gradient),
    ``rule_norm`` / ``bp_norm`` (||delta_l|| of the rule and of BP).
    """
    rule_d, inputs = hidden_deltas(model, x, y, loss)
    with using_rule(model, "bp"):
        bp_d, _ = hidden_deltas(model, x, y, loss)
    return dict(
        delta_angle=np.array([angle_deg(r, b) for r, b in zip(rule_d, bp_d)]),
        weight_angle=np.array([angle_deg(r.T @ i, b.T @ i) for r, b, i in zip(rule_d, bp_d, inputs)]),
        rule_norm=np.array([float(r.double().norm()) for r in rule_d]),
        bp_norm=np.array([float(b.double().norm()) for b in bp_d]),
    )
