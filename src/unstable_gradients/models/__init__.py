"""Networks of the book, each built from the package's activations and initialisers.

Every model keeps a plain ``config`` dict, so ``build_model(model.config)`` rebuilds it.
"""
from __future__ import annotations

from torch import nn

from ..utils import lookup
from .cnn import SmallCNN
from .mlp import MLP, deep_mlp
from .rnn import VanillaRNN

__all__ = ["MLP", "deep_mlp", "SmallCNN", "VanillaRNN", "MODELS", "build_model"]

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": SmallCNN, "rnn": VanillaRNN}


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from its ``config`` (which names its ``kind``)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind is None:
        raise ValueError(f"config has no 'kind'; valid kinds: {', '.join(MODELS)}")
    return lookup(MODELS, kind, "model kind")(**config)
