"""MNIST loader: shapes, dtypes, known label counts and pixel statistics, argument checks, and
checksum verification on copies of the data folder.

``data._verified`` and ``data._read_split`` are ``lru_cache``d on the (resolved) folder, so each
corruption test works on its own fresh ``tmp_path`` copy: a cached success for another folder
cannot hide the failure.
"""
from __future__ import annotations

import shutil

import pytest
import torch

from unstable_gradients.data import (
    MNIST_FILES,
    MNIST_MEAN,
    MNIST_STD,
    DataIntegrityError,
    load_mnist,
    mnist_root,
    verify_mnist,
)

# Published class counts of MNIST (LeCun et al.), digits 0..9
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def train_unit():
    return load_mnist("train")


def test_default_root_holds_the_four_files():
    root = mnist_root()
    assert (root / "SHA256SUMS").exists()
    for names in MNIST_FILES.values():
        for name in names:
            assert (root / name).exists(), name
    verify_mnist()


def test_train_split_shapes_dtypes_and_counts(train_unit):
    X, y = train_unit
    assert X.shape == (60000, 784) and X.dtype == torch.float32
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == TRAIN_COUNTS
    assert X.min().item() == 0.0 and X.max().item() == 1.0


def test_test_split_shapes_and_counts():
    X, y = load_mnist("test")
    assert X.shape == (10000, 784) and y.shape == (10000,)
    assert torch.bincount(y, minlength=10).tolist() == TEST_COUNTS


def test_unit_normalisation_has_the_known_training_mean(train_unit):
    X, _ = train_unit
    # the mean training pixel is 33.318 on the 0..255 scale (rounded to 3 decimals: +-0.0005/255)
    assert X.double().mean().item() == pytest.approx(33.318 / 255, abs=3e-6)
    assert X.double().mean().item() == pytest.approx(MNIST_MEAN, abs=1e-6)
    assert X.double().std().item() == pytest.approx(MNIST_STD, abs=1e-5)


def test_none_normalisation_keeps_raw_pixels():
    X, _ = load_mnist("test", normalize="none", subset=100)
    assert X.dtype == torch.float32 and X.max().item() == 255.0
    assert torch.equal(X, X.round())  # integer-valued
    Xu, _ = load_mnist("test", normalize="unit", subset=100)
    torch.testing.assert_close(Xu, X / 255)


def test_standard_normalisation_is_zero_mean_unit_std_on_train():
    X, _ = load_mnist("train", normalize="standard")
    assert X.double().mean().item() == pytest.approx(0.0, abs=1e-4)
    assert X.double().std().item() == pytest.approx(1.0, abs=1e-4)


def test_subset_keeps_the_first_images(train_unit):
    X, y = load_mnist("train", subset=1000)
    assert X.shape == (1000, 784) and y.shape == (1000,)
    assert torch.equal(X, train_unit[0][:1000]) and torch.equal(y, train_unit[1][:1000])
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the well-known first training labels


def test_flatten_false_gives_image_tensors():
    X, y = load_mnist("test", subset=7, flatten=False)
    assert X.shape == (7, 1, 28, 28) and y.shape == (7,)
    Xf, _ = load_mnist("test", subset=7)
    torch.testing.assert_close(X.reshape(7, -1), Xf)


def test_dtype_argument():
    X, y = load_mnist("test", subset=5, dtype=torch.float64)
    assert X.dtype == torch.float64 and y.dtype == torch.int64


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(split="validation"), "split"),
        (dict(normalize="zscore"), "normalize"),
        (dict(subset=0), "subset"),
        (dict(subset=-3), "subset"),
        (dict(split="test", subset=10001), "subset"),
    ],
    ids=["bad_split", "bad_normalize", "subset_zero", "subset_negative", "subset_too_large"],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_mnist(**kwargs)


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------


def _copy_mnist(dest):
    shutil.copytree(mnist_root(), dest)
    return dest


def _corrupt(path, offset=-100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_clean_copy_loads_and_verifies(tmp_path):
    root = _copy_mnist(tmp_path / "mnist")
    verify_mnist(root)
    X, y = load_mnist("test", subset=10, root=root)
    assert X.shape == (10, 784)


@pytest.mark.parametrize("split,which", [("test", 0), ("test", 1), ("train", 1)],
                         ids=["test_images", "test_labels", "train_labels"])
def test_corrupt_file_raises_naming_it(tmp_path, split, which):
    root = _copy_mnist(tmp_path / "mnist")
    name = MNIST_FILES[split][which]
    _corrupt(root / name)
    with pytest.raises(DataIntegrityError, match=name.replace(".", r"\.")) as err:
        load_mnist(split, root=root)
    assert "corrupt" in str(err.value)
    with pytest.raises(DataIntegrityError, match=name.replace(".", r"\.")):
        verify_mnist(root)


@pytest.mark.parametrize("name", [n for names in MNIST_FILES.values() for n in names])
def test_missing_file_raises_naming_it(tmp_path, name):
    root = _copy_mnist(tmp_path / "mnist")
    (root / name).unlink()
    split = next(s for s, names in MNIST_FILES.items() if name in names)
    with pytest.raises(DataIntegrityError, match=name.replace(".", r"\.")) as err:
        load_mnist(split, root=root)
    assert "missing" in str(err.value)
    with pytest.raises(DataIntegrityError, match=name.replace(".", r"\.")):
        verify_mnist(root)


def test_missing_checksum_file_raises(tmp_path):
    root = _copy_mnist(tmp_path / "mnist")
    (root / "SHA256SUMS").unlink()
    with pytest.raises(DataIntegrityError, match="SHA256SUMS"):
        load_mnist("test", root=root)


def test_file_without_checksum_entry_raises(tmp_path):
    root = _copy_mnist(tmp_path / "mnist")
    sums = root / "SHA256SUMS"
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines() if "t10k-labels" not in line))
    with pytest.raises(DataIntegrityError, match="t10k-labels"):
        load_mnist("test", root=root)


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("UG_DATA", str(tmp_path))
    assert mnist_root() == tmp_path / "mnist"
    assert mnist_root(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(DataIntegrityError):  # nothing there
        load_mnist("test")
