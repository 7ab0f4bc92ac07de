"""Per-layer gradient diagnostics for any ``nn.Module``.

Two views of "how big is the gradient at layer l" (survey §1.3):

- the gradient of the loss with respect to a layer's *output*, de/dx_l (the quantity the
  survey's eq. 3, 10 and 17 propagate), read with forward/tensor hooks that are removed again;
- the gradient with respect to its *parameters*, de/dW_l and de/db_l; the norm of the bias
  gradient is Nielsen's "speed of learning" of a layer (NNDL ch. 5).

Everything returns plain data (``GradientProfile``); ``plotting`` draws it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from .losses import get_loss

__all__ = ["GradientProfile", "default_layers", "gradient_profile", "parameter_grad_norms",
           "learning_speed", "weighted_layers"]

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase, nn.RNNCellBase, nn.Embedding,
             nn.MultiheadAttention)


@dataclass
class GradientProfile:
    """Per-layer gradient norms from one backward pass (forward order: input side first).

    ``output_grad``: ||de/dx_l|| (Frobenius, whole batch) for each watched layer output;
    ``weight_grad`` / ``bias_grad``: ||de/dW_l||, ||de/db_l|| for each weighted layer.
    """

    loss: float
    layers: list[str] = field(default_factory=list)
    output_grad: list[float] = field(default_factory=list)
    param_layers: list[str] = field(default_factory=list)
    weight_grad: list[float] = field(default_factory=list)
    bias_grad: list[float] = field(default_factory=list)

    def ratio(self) -> float:
        """First-to-last output-gradient ratio: << 1 vanishing, >> 1 exploding."""
        return self.output_grad[0] / self.output_grad[-1] if self.output_grad and self.output_grad[-1] else float("nan")

    def as_dict(self) -> dict:
        return dict(loss=self.loss, layers=self.layers, output_grad=self.output_grad,
                    param_layers=self.param_layers, weight_grad=self.weight_grad, bias_grad=self.bias_grad)


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf-most modules that own weights (Linear, Conv, RNN, ...), in registration order."""
    found = [(n or type(model).__name__, m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED)]
    if not found:  # models written with bare nn.Parameters (e.g. VanillaRNN): the model itself
        found = [(n or type(model).__name__, m) for n, m in model.named_modules()
                 if any(p.dim() >= 2 for p in m.parameters(recurse=False))]
    return found


def default_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs a profile watches: ``model.hidden_modules()`` when the model
    defines it (the hidden x_l of the package's models), else every weighted layer (y_l)."""
    if hasattr(model, "hidden_modules"):
        return list(model.hidden_modules())
    return weighted_layers(model)


def _first_tensor(out) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    return None


def gradient_profile(model: nn.Module, inputs: Tensor | Sequence, targets: Tensor | None = None,
                     loss: str | Callable = "cross_entropy", layers: Iterable[tuple[str, nn.Module]] | None = None,
                     zero_grad: bool = True) -> GradientProfile:
    """Run one forward/backward pass and return per-layer gradient norms.

    ``loss`` is a name from ``losses.LOSSES``, or a callable ``loss(output, targets) -> scalar``
    (``targets`` may be ``None`` for a callable that needs none). ``layers`` overrides which
    module outputs are watched. The model's ``.grad`` fields hold the gradients afterwards;
    all hooks are removed, also when the pass raises.
    """
    watch = list(layers) if layers is not None else default_layers(model)
    captured: dict[str, Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module, _inp, out):
            t = _first_tensor(out)
            if t is not None and t.requires_grad:
                t.register_hook(lambda g: captured.__setitem__(name, g.detach()))
        return hook

    lossf = get_loss(loss) if isinstance(loss, str) else loss
    try:
        for name, module in watch:
            handles.append(module.register_forward_hook(make_hook(name)))
        if zero_grad:
            model.zero_grad(set_to_none=True)
        out = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
        out = _first_tensor(out)
        value = lossf(out, targets)
        value.backward()
    finally:
        for h in handles:
            h.remove()
    names = [n for n, _ in watch if n in captured]
    prof = GradientProfile(loss=float(value.detach()), layers=names,
                           output_grad=[float(captured[n].norm()) for n in names])
    for pname, w, b in parameter_grad_norms(model):
        prof.param_layers.append(pname)
        prof.weight_grad.append(w)
        prof.bias_grad.append(b)
    return prof


def parameter_grad_norms(model: nn.Module) -> list[tuple[str, float, float]]:
    """(layer, ||de/dW||, ||de/db||) for each weighted layer after a backward pass (nan if absent)."""
    rows = []
    for name, module in weighted_layers(model):
        ws = [p.grad for p in module.parameters(recurse=False) if p.dim() >= 2 and p.grad is not None]
        bs = [p.grad for n, p in module.named_parameters(recurse=False)
              if ("bias" in n or n.startswith("b_")) and p.grad is not None]  # b_h, b_o: VanillaRNN
        w = float(torch.sqrt(sum((g.double() ** 2).sum() for g in ws))) if ws else float("nan")
        b = float(torch.sqrt(sum((g.double() ** 2).sum() for g in bs))) if bs else float("nan")
        rows.append((name, w, b))
    return rows


def learning_speed(model: nn.Module, inputs: Tensor, targets: Tensor, loss: str | Callable = "bce_with_logits") -> list[float]:
    """Nielsen's speed of learning of each hidden layer: ||de/db_l||, with e the loss averaged
    over ``inputs`` (NNDL ch. 5: the norm of the average bias gradient over the first 1,000
    training images). The output layer is left out, as in Nielsen's figures."""
    prof = gradient_profile(model, inputs, targets, loss=loss, layers=[])
    return prof.bias_grad[:-1]
