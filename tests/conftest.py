"""Shared fixtures for the unit tests of ``unstable_gradients``.

The tests run on CPU in a few tens of seconds: every model is tiny, and the MNIST tensors are
loaded once per session (the package caches the decoded files as well).
"""
from __future__ import annotations

import pytest
import torch

from unstable_gradients.data import load_mnist

# The tensors in these tests are tiny: intra-op threads only add synchronisation cost, and on a
# busy 2-core machine they make a 10-step training run 100x slower (seconds instead of ~10 ms).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fixed_global_seed():
    """Every test starts from the same global RNG state, so random inputs are reproducible."""
    torch.manual_seed(1234)
    yield


@pytest.fixture(scope="session")
def mnist_small():
    """The first 1,000 training images (Nielsen's subset), pixels in [0, 1], flat rows."""
    return load_mnist("train", subset=1000)

