"""Networks of the book, each built from the package's activations and initialisers.

Every model keeps a plain ``config`` dict, so ``build_model(model.config)`` rebuilds it.
Kinds: ``mlp``, ``cnn``, ``rnn`` (survey §1), ``lstm``, ``gru``, ``highway`` (gates, §2.3.1;
``models.gated``), ``resnet`` (also plain nets, ``plain=True``) and ``densenet`` (shortcuts,
§2.3.2; ``models.residual``).
"""
from __future__ import annotations

from torch import nn

from ..utils import lookup
from .cnn import SmallCNN
from .gated import (CELLS, GRU, LSTM, GRUCell, HighwayLayer, HighwayNet, LSTMCell, cell_gradient_terms, from_torch,
                    get_cell)
from .mlp import MLP, deep_mlp
from .residual import (BLOCKS, SHORTCUTS, DenseBlock, DenseNet, PlainNet, PreActResidualBlock, ResidualBlock,
                       ResidualNet, get_block, get_shortcut, path_counts)
from .rnn import VanillaRNN

__all__ = ["MLP", "deep_mlp", "SmallCNN", "VanillaRNN", "MODELS", "build_model",
           "LSTMCell", "GRUCell", "LSTM", "GRU", "CELLS", "get_cell", "cell_gradient_terms", "from_torch",
           "HighwayLayer", "HighwayNet", "ResidualBlock", "PreActResidualBlock", "BLOCKS", "get_block", "SHORTCUTS",
           "get_shortcut", "ResidualNet", "PlainNet", "DenseBlock", "DenseNet", "path_counts"]

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": SmallCNN, "rnn": VanillaRNN, "lstm": LSTM, "gru": GRU,
                                      "highway": HighwayNet, "resnet": ResidualNet, "densenet": DenseNet}


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from its ``config`` (which names its ``kind``)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind is None:
        raise ValueError(f"config has no 'kind'; valid kinds: {', '.join(MODELS)}")
    return lookup(MODELS, kind, "model kind")(**config)
