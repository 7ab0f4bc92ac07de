"""Unstable Gradients: the package behind the executable book.

Models, activations, initialisers and gradient diagnostics for reproducing *Survey of Unstable
Gradients in Deep Neural Network Training* (Chen & Xiang, Journal of Software 29(7), 2018).

Modules: ``activations``, ``init``, ``losses``, ``models``, ``backprop`` (hand-written backward
passes), ``training``, ``diagnostics``, ``data``, ``plotting``, ``reproduce`` (the ledger),
``report`` (execution report and generated pages), ``experiments`` (chapter drivers),
``pretraining`` (RBM, DBN, auto-encoders, greedy layer-wise pre-training), ``clipping``
(gradient clipping by norm, by value and adaptive, L1/L2 weight penalties), ``norm`` (batch,
recurrent batch and layer normalisation), ``optim`` (normalised and block-normalised gradient
descent, the optimizer registry, learning-rate schedules, update-to-weight ratios), ``feedback``
(feedback alignment and direct feedback alignment), ``gan`` (generator losses), ``tasks``
(synthetic sequence tasks) and ``diagnosis`` (``diagnose``: names the gradient problem of any model).
"""
from .activations import ACTIVATIONS, get_activation
from .diagnosis import diagnose
from .diagnostics import GradientProfile, gradient_profile, learning_speed
from .init import INITIALIZERS, initialize
from .norm import NORMALIZATIONS, get_norm
from .models import MLP, SmallCNN, VanillaRNN, build_model, deep_mlp
from .training import TrainResult, train
from .utils import get_device, set_seed

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "get_activation", "INITIALIZERS", "initialize", "NORMALIZATIONS", "get_norm", "MLP",
    "SmallCNN", "VanillaRNN", "build_model", "deep_mlp", "GradientProfile", "gradient_profile", "diagnose", "learning_speed", "TrainResult",
    "train", "set_seed", "get_device", "__version__",
]
