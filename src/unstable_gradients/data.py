"""MNIST, shipped with the project (``data/mnist``), loaded into tensors with checksums verified.

The four IDX files of the MNIST database (LeCun, Cortes & Burges) are distributed under the
Creative Commons Attribution-Share Alike 3.0 license; see ``data/mnist/README.md``.
Nothing is downloaded: the loader reads the gzip files next to ``SHA256SUMS`` and refuses a
missing or corrupt file with an error that says which one and where it looked.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["MNIST_FILES", "mnist_root", "verify_mnist", "load_mnist", "MNIST_MEAN", "MNIST_STD",
           "DataIntegrityError"]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: Mean and standard deviation of the training pixels scaled to [0, 1].
MNIST_MEAN, MNIST_STD = 0.1306604762738431, 0.30810780385646314
NORMALIZATIONS = ("unit", "standard", "none")


class DataIntegrityError(RuntimeError):
    """A data file is missing or does not match its recorded checksum."""


def mnist_root(root: str | os.PathLike | None = None) -> Path:
    """Where the MNIST files are: ``root``, else ``$UG_DATA/mnist``, else the repo's ``data/mnist``."""
    if root is not None:
        return Path(root)
    if os.environ.get("UG_DATA"):
        return Path(os.environ["UG_DATA"]) / "mnist"
    return Path(__file__).resolve().parents[2] / "data" / "mnist"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=None)
def _verified(root: Path, name: str) -> bool:
    sums_file = root / "SHA256SUMS"
    if not sums_file.exists():
        raise DataIntegrityError(f"no SHA256SUMS in {root}; pass root= the folder holding the MNIST files")
    sums = dict(line.split()[::-1] for line in sums_file.read_text().splitlines() if line.strip())
    path = root / name
    if not path.exists():
        raise DataIntegrityError(f"MNIST file {name} is missing from {root}")
    if name not in sums:
        raise DataIntegrityError(f"{name} has no entry in {sums_file}")
    digest = _sha256(path)
    if digest != sums[name]:
        raise DataIntegrityError(f"{path} is corrupt: sha256 {digest} != recorded {sums[name]}")
    return True


def verify_mnist(root: str | os.PathLike | None = None) -> None:
    """Check all four MNIST files against ``SHA256SUMS``; raise ``DataIntegrityError`` if not."""
    base = mnist_root(root)
    for names in MNIST_FILES.values():
        for name in names:
            _verified(base, name)


@lru_cache(maxsize=4)
def _read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_name, lbl_name = MNIST_FILES[split]
    _verified(root, img_name)
    _verified(root, lbl_name)
    with gzip.open(root / img_name, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = np.frombuffer(raw[:16], ">i4")
    if magic != 2051:
        raise DataIntegrityError(f"{img_name}: bad IDX magic number {magic}")
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows * cols)
    with gzip.open(root / lbl_name, "rb") as f:
        raw = f.read()
    magic, m = np.frombuffer(raw[:8], ">i4")
    if magic != 2049 or m != n:
        raise DataIntegrityError(f"{lbl_name}: bad IDX header (magic {magic}, {m} labels for {n} images)")
    labels = np.frombuffer(raw, np.uint8, offset=8)
    return images, labels


def load_mnist(split: str = "train", subset: int | None = None, normalize: str = "unit", flatten: bool = True,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Load MNIST into tensors ``(X, y)``.

    ``split``: ``"train"`` (60,000) or ``"test"`` (10,000). ``subset``: keep the first n images
    (Nielsen's experiments use the first 1,000 training images). ``normalize``: ``"unit"``
    scales pixels to [0, 1] (Nielsen, Glorot & Bengio), ``"standard"`` also subtracts the training
    mean and divides by the training standard deviation, ``"none"`` keeps 0..255 as floats.
    ``flatten``: rows of 784 values, else ``(n, 1, 28, 28)``. Labels are ``int64``.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(MNIST_FILES)}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; valid choices: {', '.join(NORMALIZATIONS)}")
    images, labels = _read_split(mnist_root(root).resolve(), split)
    if subset is not None:
        if not 0 < subset <= len(labels):
            raise ValueError(f"subset must be in 1..{len(labels)}, got {subset}")
        images, labels = images[:subset], labels[:subset]
    X = torch.from_numpy(images.astype(np.float32))
    if normalize != "none":
        X /= 255.0
    if normalize == "standard":
        X = (X - MNIST_MEAN) / MNIST_STD
    if not flatten:
        X = X.reshape(-1, 1, 28, 28)
    return X.to(device=device, dtype=dtype), torch.from_numpy(labels.astype(np.int64)).to(device)
