"""Data sets and seeded, stratified splits for search, retraining and evaluation.

``load_dataset(name, ...)`` returns a :class:`DataSplits` with four torch Datasets that yield
``(image, label)`` pairs, ``image`` a float32 tensor of shape ``(channel, height, width)`` and
``label`` an ``int``:

``train``
    Fits the network weights (BayesNAS MAP epochs, DARTS weight steps).
``search``
    Held out from ``train``: BayesNAS computes the switch curvature on its batches, DARTS takes
    its architecture steps on it.
``val``
    Held out from both, for model selection and early stopping during the search.
``test``
    The official test set (``digits``: a fixed stratified 20% held out once).

``train``, ``search`` and ``val`` are carved from the official training set (optionally first
subsampled to ``train_size`` images) in the proportions ``fractions`` (default 50% / 25% / 25%),
stratified by class and seeded by ``seed``. ``fractions=(1, 0, 0)`` gives the whole training set
to ``train`` (the DARTS retraining protocol); zero fractions give empty splits.

Data sets (:data:`DATASETS`):

``digits``
    scikit-learn's 8x8 hand-written digits (1797 images, 1 channel, 16 grey levels), always
    available offline.
``fashion-mnist``
    28x28 grey images from the standard IDX files (plain or ``.gz``), searched for in
    ``data_dir``, ``data_dir/FashionMNIST/raw`` (torchvision layout), ``data_dir/fashion-mnist``
    and the Debian package folder :data:`SYSTEM_FASHION_MNIST_DIR`.
``cifar10``
    The ``cifar-10-batches-py`` pickles, in ``data_dir`` or ``data_dir/cifar-10-batches-py``.
``imagenet``
    An ImageFolder tree ``data_dir/train/<class>/*.JPEG`` and ``data_dir/val/<class>/*``;
    ``search`` and ``val`` are carved from ``train``, ``test`` is the ``val`` folder.

``digits``, ``fashion-mnist`` and ``cifar10`` are held in memory as tensors
(:class:`TensorImageDataset`); the splits without augmentation are normalised once at load time,
so indexing them costs nothing. With ``augment=True`` only ``train`` is augmented, per item:
random crop after zero padding by ``image_size / 8`` (CIFAR-10: 4), horizontal flip (not for
``digits``), normalisation, cutout. Normalisation uses the CIFAR-10 / ImageNet constants for
those sets and the per-channel mean / std of the ``train`` split for ``digits`` and
``fashion-mnist``.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "cifar10", "imagenet")
"""Names accepted by :func:`load_dataset`."""

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.5, 0.25, 0.25)
"""Default (train, search, val) shares of the official training set."""

DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 0
"""The digits test split is drawn once with this seed, whatever ``seed`` is, so that runs with
different seeds are scored on the same images."""

SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files."""

FASHION_MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_MEAN: tuple[float, float, float] = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD: tuple[float, float, float] = (0.24703233, 0.24348505, 0.26158768)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
)  # fmt: skip

IDX_LABELS_MAGIC = 2049
IDX_IMAGES_MAGIC = 2051


class DatasetError(FileNotFoundError, ValueError):
    """A data set is missing or corrupt; the message says what was expected where."""


# ----------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------


@dataclass
class DataSplits:
    """The four splits of a data set and what a network needs to know about it.

    Attributes
    ----------
    train, search, val, test
        Datasets of ``(image, label)``; ``image`` float32 ``(in_channels, image_size,
        image_size)``, ``label`` an int in ``[0, num_classes)``.
    num_classes, in_channels, image_size
        Network input / output sizes.
    name
        The data set name (one of :data:`DATASETS`).
    class_names
        Human-readable class names, indexed by label.
    mean, std
        Per-channel normalisation applied to every image.
    indices
        ``{"train", "search", "val"}`` -> sorted positions of the split's images in the official
        training set (``digits``: in the 80% left after the test hold-out).
    """

    train: Dataset
    search: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    indices: dict[str, np.ndarray] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Number of images per split."""
        return {k: len(getattr(self, k)) for k in ("train", "search", "val", "test")}


class TensorImageDataset(Dataset):
    """Images held in memory as one tensor.

    Parameters
    ----------
    images
        ``(N, C, H, W)`` float tensor: normalised when ``transform`` is None, else whatever
        ``transform`` expects (here: pixel values in [0, 1]).
    labels
        ``(N,)`` integer labels.
    transform
        Optional per-item callable ``(C, H, W) -> (C, H, W)``.
    """

    def __init__(
        self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor] | None = None
    ):
        if images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images must be (N, C, H, W) with N = len(labels); got {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])


class ImageFileDataset(Dataset):
    """Images read from files on demand (ImageNet).

    Parameters
    ----------
    samples
        ``(path, label)`` pairs.
    transform
        Callable from a ``uint8`` tensor ``(3, H, W)`` to a float tensor ``(3, S, S)``.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable[[Tensor], Tensor]):
        self.samples = list(samples)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.samples[i]
        return self.transform(read_image_rgb(path)), label


# ----------------------------------------------------------------------------------------------
# Transforms (tensor only)
# ----------------------------------------------------------------------------------------------


class Cutout:
    """Zero one square hole of side ``size`` centred uniformly in the image.

    The centre ``(y, x)`` is uniform over all pixels; the hole is clipped at the borders, so
    near an edge fewer than ``size**2`` pixels are zeroed. ``size=0`` is the identity.

    Parameters
    ----------
    size
        Side of the hole in pixels.
    generator
        Optional torch Generator; the global RNG is used otherwise.
    """

    def __init__(self, size: int, generator: torch.Generator | None = None):
        if size < 0:
            raise ValueError(f"cutout size must be >= 0, got {size}")
        self.size = int(size)
        self.generator = generator

    def __call__(self, image: Tensor) -> Tensor:
        """``image`` (C, H, W) -> (C, H, W) with the hole zeroed (a new tensor)."""
        if self.size == 0:
            return image
        h, w = image.shape[-2:]
        y = int(torch.randint(h, (1,), generator=self.generator))
        x = int(torch.randint(w, (1,), generator=self.generator))
        half = self.size // 2
        y0, y1 = max(y - half, 0), min(y - half + self.size, h)
        x0, x1 = max(x - half, 0), min(x - half + self.size, w)
        out = image.clone()
        out[..., y0:y1, x0:x1] = 0.0
        return out


class TensorAugment:
    """DARTS-style augmentation of an in-memory image with pixel values in [0, 1].

    Random crop of the original size from the image zero-padded by ``padding`` on each side,
    horizontal flip with probability 1/2 (if ``flip``), per-channel normalisation, then
    :class:`Cutout` (applied to the normalised image, as in DARTS).

    Parameters
    ----------
    padding
        Zero padding before the random crop (CIFAR-10: 4).
    flip
        Whether to flip horizontally at random.
    mean, std
        Per-channel normalisation.
    cutout
        Cutout hole size (0: none).
    """

    def __init__(
        self,
        padding: int,
        flip: bool,
        mean: Sequence[float],
        std: Sequence[float],
        cutout: int = 0,
    ):
        self.padding = int(padding)
        self.flip = flip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.cutout = Cutout(cutout)

    def __call__(self, image: Tensor) -> Tensor:
        """``image`` (C, H, W) in [0, 1] -> augmented, normalised (C, H, W)."""
        h, w = image.shape[-2:]
        p = self.padding
        if p > 0:
            padded = F.pad(image, (p, p, p, p))
            top = int(torch.randint(2 * p + 1, (1,)))
            left = int(torch.randint(2 * p + 1, (1,)))
            image = padded[:, top : top + h, left : left + w]
        if self.flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        image = (image - self.mean) / self.std
        return self.cutout(image)


def imagenet_transforms(
    image_size: int, augment: bool, cutout: int = 0
) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """The DARTS ImageNet transforms on ``uint8`` tensors ``(3, H, W)``.

    Returns
    -------
    (train_transform, eval_transform)
        Train: RandomResizedCrop(image_size), horizontal flip, ColorJitter(0.4, 0.4, 0.4, 0.2),
        normalise, cutout (when ``augment``; otherwise the eval transform). Eval: resize the
        shorter side to ``round(image_size * 256 / 224)``, centre crop ``image_size``,
        normalise.
    """
    from torchvision.transforms import v2

    to_float = [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    resize = round(image_size * 256 / 224)
    eval_tf = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(image_size), *to_float])
    if not augment:
        return eval_tf, eval_tf
    train_tf = v2.Compose(
        [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
            *to_float,
            Cutout(cutout),
        ]
    )
    return train_tf, eval_tf


def read_image_rgb(path: str | Path) -> Tensor:
    """Decode an image file to a ``uint8`` tensor ``(3, H, W)`` (grey, CMYK, ... -> RGB)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        raise DatasetError(f"{path}: cannot decode image ({exc})") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray | Sequence[int], counts: Sequence[int], seed: int
) -> list[np.ndarray]:
    """Split indices ``0..N-1`` into parts of given sizes, stratified by label, seeded.

    Items are shuffled within each class, then interleaved so that the ``r``-th item of a class
    of ``n_c`` items sits at position ``(r + u) / n_c`` of a common ordering (``u`` uniform
    jitter); the ordering is cut into consecutive parts. Every part then holds each class in
    proportion to its size, within one item.

    Parameters
    ----------
    labels
        ``(N,)`` class labels.
    counts
        Part sizes, adding up to at most ``N`` (items left over belong to no part).
    seed
        Seed of the shuffle.

    Returns
    -------
    list of np.ndarray
        Sorted index arrays, one per part, pairwise disjoint.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) > n:
        raise ValueError(f"split sizes {counts} must be >= 0 and add up to at most {n}")
    rng = np.random.default_rng(seed)
    keys = np.empty(n, dtype=np.float64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_c = idx.size
        keys[idx] = (rng.permutation(n_c) + rng.random(n_c)) / n_c
    order = np.argsort(keys, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def split_counts(n: int, sizes: Sequence[float]) -> list[int]:
    """Part sizes for ``n`` items from fractions or counts.

    ``sizes`` are fractions when they add up to 1 (e.g. ``(0.5, 0.25, 0.25)`` or ``(1, 0, 0)``),
    rounded by largest remainder so that the parts add up to ``n``; otherwise integer counts
    adding up to at most ``n``.
    """
    sizes = list(sizes)
    if any(s < 0 for s in sizes):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    if math.isclose(sum(sizes), 1.0, abs_tol=1e-6):
        exact = [s * n for s in sizes]
        counts = [math.floor(e) for e in exact]
        by_remainder = sorted(range(len(sizes)), key=lambda i: counts[i] - exact[i])
        for i in by_remainder[: n - sum(counts)]:
            counts[i] += 1
        return counts
    if not all(float(s).is_integer() for s in sizes):
        raise ValueError(f"split fractions must add up to 1, got {sizes} (sum {sum(sizes)})")
    if sum(sizes) > n:
        raise ValueError(f"split sizes {sizes} add up to more than the {n} items available")
    return [int(s) for s in sizes]


def _carve(
    labels: np.ndarray, train_size: int | None, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Indices of (train, search, val) in the official train set ``labels``.

    A stratified subsample of ``train_size`` items is drawn first (all items if None), then cut
    into the three parts with a second, independent random stream.
    """
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, search, val), got {tuple(fractions)}")
    n = labels.shape[0]
    if train_size is None:
        pool = np.arange(n)
    elif not 0 < train_size <= n:
        raise ValueError(
            f"train_size must be in [1, {n}] (the official train set), got {train_size}"
        )
    else:
        pool = stratified_split(labels, [train_size], seed)[0]
    counts = split_counts(pool.size, fractions)
    if counts[0] == 0:
        raise ValueError(f"fractions {tuple(fractions)} leave the train split empty")
    parts = stratified_split(labels[pool], counts, seed + 1_000_003)
    return [pool[p] for p in parts]


# ----------------------------------------------------------------------------------------------
# File readers
# ----------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """Read a file, transparently gunzipping it (detected by its magic bytes)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST format) of unsigned bytes, plain or gzipped.

    Parameters
    ----------
    path
        The file.
    magic
        Expected magic number: 2049 for labels (1 dim), 2051 for images (3 dims); None accepts
        any unsigned-byte IDX file.

    Returns
    -------
    np.ndarray
        ``uint8`` array with the file's dimensions (labels ``(N,)``, images ``(N, H, W)``).

    Raises
    ------
    DatasetError
        Naming the file, for a wrong magic number, a short header, or a data size that does not
        match the dimensions.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"{path}: file too short for an IDX header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise DatasetError(f"{path}: wrong magic number {found}, expected {magic}")
    if raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (magic number {found})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dims)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DatasetError(
            f"{path}: {what}: dims {dims} need {expected} data bytes, found {actual}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds NumPy arrays and plain containers (no arbitrary code)."""

    _ALLOWED = {"_reconstruct", "ndarray", "dtype", "_frombuffer", "scalar"}

    def find_class(self, module: str, name: str):
        if (module.startswith("numpy") and name in self._ALLOWED) or (
            module == "_codecs" and name == "encode"
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``cifar-10-batches-py`` pickle.

    Returns
    -------
    (images, labels)
        ``uint8`` images ``(N, 3, 32, 32)`` and ``int64`` labels ``(N,)``.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: not a CIFAR-10 batch pickle ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: expected a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


# ----------------------------------------------------------------------------------------------
# Helpers shared by the in-memory data sets
# ----------------------------------------------------------------------------------------------


def _resize(images: Tensor, image_size: int | None) -> Tensor:
    """Resize ``(N, C, H, W)`` images in [0, 1] to ``image_size`` (antialiased bilinear)."""
    if image_size is None or image_size == images.shape[-1] == images.shape[-2]:
        return images
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    out = F.interpolate(
        images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.clamp_(0.0, 1.0)


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``(N, C, H, W)`` images."""
    flat = images.transpose(0, 1).reshape(images.shape[1], -1).double()
    std = flat.std(dim=1).clamp_min(1e-8)
    return tuple(flat.mean(dim=1).tolist()), tuple(std.tolist())


def _normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s


def _in_memory_splits(
    name: str,
    train_images: Tensor,
    train_labels: np.ndarray,
    test_images: Tensor,
    test_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    max_value: float,
    image_size: int | None,
    seed: int,
    train_size: int | None,
    fractions: Sequence[float],
    augment: bool,
    cutout: int,
    flip: bool,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DataSplits:
    """Split, scale, resize, normalise and wrap integer images ``(N, C, H, W)``.

    Pixels are divided by ``max_value`` (to [0, 1]) and resized to ``image_size`` only for the
    images kept. ``mean``/``std`` None: computed per channel on the ``train`` split.
    """

    def prepare(images: Tensor) -> Tensor:
        return _resize(images.float().div_(max_value), image_size)

    parts = _carve(train_labels, train_size, fractions, seed)
    split_images = [prepare(train_images[torch.from_numpy(p)]) for p in parts]
    if mean is None or std is None:
        if parts[0].size < 2:
            raise ValueError(f"{name}: the train split needs at least 2 images for its statistics")
        mean, std = _channel_stats(split_images[0])
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def wrap(images: Tensor, labels: np.ndarray, aug: bool) -> TensorImageDataset:
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        if aug:
            size = images.shape[-1]
            tf = TensorAugment(max(1, round(size / 8)), flip, mean, std, cutout)
            return TensorImageDataset(images.contiguous(), y, tf)
        return TensorImageDataset(_normalise(images, mean, std).contiguous(), y)

    datasets = [
        wrap(x, train_labels[p], augment and k == 0)
        for k, (x, p) in enumerate(zip(split_images, parts, strict=True))
    ]
    test = wrap(prepare(test_images), test_labels, False)
    _, c, h, _ = split_images[0].shape
    return DataSplits(
        *datasets,
        test,
        num_classes=len(class_names),
        in_channels=c,
        image_size=h,
        name=name,
        class_names=tuple(class_names),
        mean=mean,
        std=std,
        indices=dict(zip(("train", "search", "val"), parts, strict=True)),
    )


# ----------------------------------------------------------------------------------------------
# The data sets
# ----------------------------------------------------------------------------------------------


def _load_digits(
    *,
    data_dir: str | Path | None,
    download: bool,
    seed: int,
    train_size: int | None,
    image_size: int | None,
    augment: bool,
    cutout: int,
    fractions: Sequence[float],
) -> DataSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)  # 0..16
    labels = bunch.target.astype(np.int64)
    counts = split_counts(len(labels), [1 - DIGITS_TEST_FRACTION, DIGITS_TEST_FRACTION])
    rest, test = stratified_split(labels, counts, DIGITS_TEST_SEED)
    return _in_memory_splits(
        "digits",
        images[torch.from_numpy(rest)],
        labels[rest],
        images[torch.from_numpy(test)],
        labels[test],
        [str(d) for d in range(10)],
        max_value=16.0,
        image_size=image_size,
        seed=seed,
        train_size=train_size,
        fractions=fractions,
        augment=augment,
        cutout=cutout,
        flip=False,
    )


def fashion_mnist_dirs(data_dir: str | Path | None) -> list[Path]:
    """The folders searched for the Fashion-MNIST IDX files, in order."""
    dirs = []
    if data_dir is not None:
        d = Path(data_dir)
        dirs += [d, d / "FashionMNIST" / "raw", d / "fashion-mnist"]
    dirs.append(SYSTEM_FASHION_MNIST_DIR)
    return dirs


def _find_fashion_mnist(data_dir: str | Path | None) -> dict[str, Path] | None:
    """Paths of the four IDX files in the first folder that holds all four, else None."""
    for d in fashion_mnist_dirs(data_dir):
        found = {}
        for key, base in FASHION_MNIST_FILES.items():
            for candidate in (d / base, d / f"{base}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FASHION_MNIST_FILES):
            return found
    return None


def _download_failed(what: str, root: Path, exc: Exception, hint: str) -> DatasetError:
    return DatasetError(
        f"downloading {what} into {root} failed ({type(exc).__name__}: {exc}). "
        f"Is there a network connection? Otherwise {hint}"
    )


def _load_fashion_mnist(
    *,
    data_dir: str | Path | None,
    download: bool,
    seed: int,
    train_size: int | None,
    image_size: int | None,
    augment: bool,
    cutout: int,
    fractions: Sequence[float],
) -> DataSplits:
    files = _find_fashion_mnist(data_dir)
    hint = (
        f"install the Debian package (`apt-get install dataset-fashion-mnist`, files in "
        f"{SYSTEM_FASHION_MNIST_DIR}), put the four files in --data-dir, or pass --download "
        f"where a network exists"
    )
    if files is None and download:
        root = Path(data_dir if data_dir is not None else "data")
        try:
            from torchvision.datasets import FashionMNIST

            for train in (True, False):
                FashionMNIST(root=str(root), train=train, download=True)
        except Exception as exc:  # any failure of the download is reported
            raise _download_failed("Fashion-MNIST", root, exc, hint) from exc
        files = _find_fashion_mnist(root)
    if files is None:
        searched = ", ".join(str(d) for d in fashion_mnist_dirs(data_dir))
        names = ", ".join(f"{b}[.gz]" for b in FASHION_MNIST_FILES.values())
        raise DatasetError(
            f"Fashion-MNIST not found: expected {names} in one of: {searched}. To get it, {hint}."
        )
    logger.info("reading Fashion-MNIST from %s", files["train_images"].parent)
    arrays = {}
    for key, path in files.items():
        magic = IDX_IMAGES_MAGIC if key.endswith("images") else IDX_LABELS_MAGIC
        arrays[key] = read_idx(path, magic)
    for split in ("train", "test"):
        imgs, labs = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.shape[0] != labs.shape[0]:
            raise DatasetError(
                f"{files[f'{split}_images']} holds {imgs.shape[0]} images but "
                f"{files[f'{split}_labels']} holds {labs.shape[0]} labels"
            )
        if labs.size and labs.max() >= len(FASHION_MNIST_CLASSES):
            raise DatasetError(f"{files[f'{split}_labels']}: labels outside 0..9")

    return _in_memory_splits(
        "fashion-mnist",
        torch.from_numpy(arrays["train_images"]).unsqueeze(1),
        arrays["train_labels"].astype(np.int64),
        torch.from_numpy(arrays["test_images"]).unsqueeze(1),
        arrays["test_labels"].astype(np.int64),
        FASHION_MNIST_CLASSES,
        max_value=255.0,
        image_size=image_size,
        seed=seed,
        train_size=train_size,
        fractions=fractions,
        augment=augment,
        cutout=cutout,
        flip=True,
    )


def _find_cifar10(data_dir: str | Path | None) -> Path | None:
    if data_dir is None:
        return None
    for d in (Path(data_dir), Path(data_dir) / CIFAR10_FOLDER):
        if all((d / f).is_file() for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)):
            return d
    return None


def _cifar10_class_names(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return CIFAR10_CLASSES
    try:
        with meta.open("rb") as f:
            names = _ArrayUnpickler(f, encoding="bytes").load()[b"label_names"]
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except Exception:  # names are cosmetic: fall back
        logger.warning("could not read class names from %s; using the standard ones", meta)
        return CIFAR10_CLASSES


def _load_cifar10(
    *,
    data_dir: str | Path | None,
    download: bool,
    seed: int,
    train_size: int | None,
    image_size: int | None,
    augment: bool,
    cutout: int,
    fractions: Sequence[float],
) -> DataSplits:
    folder = _find_cifar10(data_dir)
    hint = f"pass --download where a network exists, or put {CIFAR10_FOLDER} in --data-dir"
    if folder is None and download:
        root = Path(data_dir if data_dir is not None else "data")
        try:
            from torchvision.datasets import CIFAR10

            CIFAR10(root=str(root), train=True, download=True)
        except Exception as exc:  # any failure of the download is reported
            raise _download_failed("CIFAR-10", root, exc, hint) from exc
        folder = _find_cifar10(root)
    if folder is None:
        searched = (
            "no --data-dir given"
            if data_dir is None
            else f"{Path(data_dir)}, {Path(data_dir) / CIFAR10_FOLDER}"
        )
        files = ", ".join((*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE))
        raise DatasetError(
            f"CIFAR-10 not found: expected the {CIFAR10_FOLDER} pickles ({files}) in one of: "
            f"{searched}. To get it, {hint}."
        )
    logger.info("reading CIFAR-10 from %s", folder)
    batches = [read_cifar_batch(folder / f) for f in CIFAR10_TRAIN_FILES]
    train_x = np.concatenate([b[0] for b in batches])
    train_y = np.concatenate([b[1] for b in batches])
    test_x, test_y = read_cifar_batch(folder / CIFAR10_TEST_FILE)

    return _in_memory_splits(
        "cifar10",
        torch.from_numpy(train_x),
        train_y,
        torch.from_numpy(test_x),
        test_y,
        _cifar10_class_names(folder),
        max_value=255.0,
        image_size=image_size,
        seed=seed,
        train_size=train_size,
        fractions=fractions,
        augment=augment,
        cutout=cutout,
        flip=True,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )


def _scan_image_folder(
    root: Path, classes: Sequence[str] | None = None
) -> tuple[list[tuple[str, int]], list[str]]:
    """``(path, label)`` pairs of ``root/<class>/<image>``; classes sorted by name."""
    if classes is None:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in sorted(e.name for e in os.scandir(root) if e.is_dir()):
        if c not in index:
            raise DatasetError(f"{root / c}: class folder not present in the train folder")
        for dirpath, _, filenames in sorted(os.walk(root / c, followlinks=True)):
            for fname in sorted(filenames):
                if fname.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((os.path.join(dirpath, fname), index[c]))
    return samples, list(classes)


def _load_imagenet(
    *,
    data_dir: str | Path | None,
    download: bool,
    seed: int,
    train_size: int | None,
    image_size: int | None,
    augment: bool,
    cutout: int,
    fractions: Sequence[float],
) -> DataSplits:
    layout = (
        "the ImageFolder layout <data-dir>/train/<class>/*.JPEG and <data-dir>/val/<class>/*"
        " (ImageNet cannot be downloaded automatically; get it from image-net.org and sort the"
        " validation images into class folders)"
    )
    if data_dir is None:
        raise DatasetError(f"ImageNet needs --data-dir pointing at {layout}")
    root = Path(data_dir)
    train_dir, val_dir = root / "train", root / "val"
    missing = [str(d) for d in (train_dir, val_dir) if not d.is_dir()]
    if missing:
        raise DatasetError(f"ImageNet not found: missing {', '.join(missing)}; expected {layout}")
    if download:
        logger.warning("ImageNet cannot be downloaded; reading %s", root)
    train_samples, classes = _scan_image_folder(train_dir)
    test_samples, _ = _scan_image_folder(val_dir, classes)
    if not train_samples or not test_samples:
        empty = train_dir if not train_samples else val_dir
        raise DatasetError(f"ImageNet: no images under {empty}; expected {layout}")
    size = 224 if image_size is None else int(image_size)
    train_tf, eval_tf = imagenet_transforms(size, augment, cutout)
    labels = np.array([label for _, label in train_samples], dtype=np.int64)
    parts = _carve(labels, train_size, fractions, seed)
    datasets = [
        ImageFileDataset([train_samples[i] for i in p], train_tf if k == 0 else eval_tf)
        for k, p in enumerate(parts)
    ]
    return DataSplits(
        *datasets,
        ImageFileDataset(test_samples, eval_tf),
        num_classes=len(classes),
        in_channels=3,
        image_size=size,
        name="imagenet",
        class_names=tuple(classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        indices=dict(zip(("train", "search", "val"), parts, strict=True)),
    )


_LOADERS = {
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "imagenet": _load_imagenet,
}


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    train_size: int | None = None,
    image_size: int | None = None,
    augment: bool = False,
    cutout: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> DataSplits:
    """Load a data set and split it into train / search / val / test.

    Parameters
    ----------
    name
        One of :data:`DATASETS`.
    data_dir
        Where the files are (see the module docstring for the folders searched). Not needed for
        ``digits``, nor for ``fashion-mnist`` when the Debian package is installed.
    download
        Fetch ``fashion-mnist`` / ``cifar10`` with torchvision into ``data_dir`` (default
        ``./data``) when not found locally; needs a network.
    seed
        Seeds the subsample and the stratified carving of train / search / val.
    train_size
        Number of official training images to keep (stratified subsample) before carving; None
        keeps all.
    image_size
        Resize to ``image_size`` x ``image_size`` at load time (antialiased); None keeps the
        native size (ImageNet: 224 crops).
    augment
        Augment the ``train`` split per item (DARTS recipes: random crop with padding, flip,
        cutout; ImageNet: random resized crop, flip, colour jitter). Other splits never are.
    cutout
        Cutout hole size for the augmented ``train`` split (0: none).
    fractions
        ``(train, search, val)`` shares of the (subsampled) official training set, adding up to
        1, or integer counts.

    Returns
    -------
    DataSplits

    Raises
    ------
    ValueError
        Unknown ``name`` or bad sizes.
    DatasetError
        Missing or corrupt files; the message lists the folders searched and how to get them.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if cutout and not augment:
        logger.warning("cutout=%d has no effect without augment=True", cutout)
    splits = _LOADERS[name](
        data_dir=data_dir,
        download=download,
        seed=seed,
        train_size=train_size,
        image_size=image_size,
        augment=augment,
        cutout=cutout,
        fractions=tuple(fractions),
    )
    logger.info(
        "%s: %s, %d classes, %d x %dpx",
        name,
        splits.sizes(),
        splits.num_classes,
        splits.image_size,
        splits.image_size,
    )
    return splits


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose order (and worker seeds) come from a ``torch.Generator(seed)``.

    The same seed gives the same batches. With ``num_workers=0``, per-item augmentation draws
    from the global torch RNG (seed it with ``torch.manual_seed``); with workers, each worker's
    RNG is seeded from the generator.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=num_workers > 0,
    )
