"""Small shared utilities: seeding, device choice and registry look-ups."""
from __future__ import annotations

import os
import random
from typing import Mapping, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a fresh ``torch.Generator`` seeded the same way.

    Re-seed before building each arm of a comparison so that every arm starts from the
    same random state (STYLE.md, "seeds in the open").
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Resolve ``"auto"``/``None`` to CUDA when present, else CPU. ``UG_DEVICE`` overrides."""
    device = device or os.environ.get("UG_DEVICE", "auto")
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``registry[name]`` or raise a ``ValueError`` that lists the valid names."""
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in registry:
        valid = ", ".join(sorted(registry))
        raise ValueError(f"unknown {kind} {name!r}; valid names: {valid}")
    return registry[key]
