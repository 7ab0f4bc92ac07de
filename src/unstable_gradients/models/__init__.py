"""Networks of the book, each built from the package's activations and initialisers.

Every model keeps a plain ``config`` dict, so ``build_model(model.config)`` rebuilds it.
Kinds: ``mlp``, ``cnn``, ``rnn`` (survey §1), ``lstm``, ``gru``, ``highway`` (gates, §2.3.1;
``models.gated``), ``resnet`` (also plain nets, ``plain=True``) and ``densenet`` (shortcuts,
§2.3.2; ``models.residual``), ``orthogonal_rnn``, ``urnn`` and ``stacked_lstm`` (future
directions, §3.1; ``models.unitary``, ``models.stacked``); beyond the survey, ``normfree``
(Fixup, ReZero, SkipInit; ``models.normfree``) and ``transformer`` (post-/pre-LN;
``models.transformer``).
"""
from __future__ import annotations

from torch import nn

from ..utils import lookup
from .cnn import SmallCNN
from .gated import (CELLS, GRU, LSTM, GRUCell, HighwayLayer, HighwayNet, LSTMCell, cell_gradient_terms, from_torch,
                    get_cell)
from .mlp import MLP, deep_mlp
from .normfree import NORMFREE_BLOCKS, NormFreeResNet, fixup_scale
from .residual import (BLOCKS, SHORTCUTS, DenseBlock, DenseNet, PlainNet, PreActResidualBlock, ResidualBlock,
                       ResidualNet, get_block, get_shortcut, path_counts)
from .rnn import VanillaRNN
from .stacked import CONNECTIONS, StackedLSTM
from .transformer import (PLACEMENTS, EncoderBlock, MultiHeadSelfAttention, SequenceTransformer,
                          TransformerEncoder)
from .unitary import ORTHOGONAL_MAPS, OrthogonalRNN, UnitaryRNN, modrelu

__all__ = ["MLP", "deep_mlp", "SmallCNN", "VanillaRNN", "MODELS", "build_model",
           "LSTMCell", "GRUCell", "LSTM", "GRU", "CELLS", "get_cell", "cell_gradient_terms", "from_torch",
           "HighwayLayer", "HighwayNet", "ResidualBlock", "PreActResidualBlock", "BLOCKS", "get_block", "SHORTCUTS",
           "get_shortcut", "ResidualNet", "PlainNet", "DenseBlock", "DenseNet", "path_counts",
           "NormFreeResNet", "NORMFREE_BLOCKS", "fixup_scale",
           "OrthogonalRNN", "UnitaryRNN", "ORTHOGONAL_MAPS", "modrelu", "StackedLSTM", "CONNECTIONS"]

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": SmallCNN, "rnn": VanillaRNN, "lstm": LSTM, "gru": GRU,
                                      "highway": HighwayNet, "resnet": ResidualNet, "densenet": DenseNet,
                                      "normfree": NormFreeResNet}
MODELS.update({"orthogonal_rnn": OrthogonalRNN, "urnn": UnitaryRNN, "stacked_lstm": StackedLSTM})  # §3.1
MODELS["transformer"] = SequenceTransformer  # beyond the survey (Xiong et al. 2020)
__all__ += ["MultiHeadSelfAttention", "EncoderBlock", "TransformerEncoder", "SequenceTransformer", "PLACEMENTS"]


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from its ``config`` (which names its ``kind``)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind is None:
        raise ValueError(f"config has no 'kind'; valid kinds: {', '.join(MODELS)}")
    return lookup(MODELS, kind, "model kind")(**config)
