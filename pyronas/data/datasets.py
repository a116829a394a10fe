"""The data sets: one loader per name, a registry, and :func:`load_dataset`.

Data sets (:data:`DATASETS`):

``digits``
    scikit-learn's 8x8 hand-written digits (1797 images, 1 channel, 16 grey levels), always
    available offline. The test split is a fixed stratified 20% held out once.
``fashion-mnist``
    28x28 grey images from the standard IDX files (plain or ``.gz``), searched for in
    ``data_dir``, ``data_dir/FashionMNIST/raw`` (torchvision layout), ``data_dir/fashion-mnist``
    and the Debian package folder :data:`SYSTEM_FASHION_MNIST_DIR`.
``cifar10``
    The ``cifar-10-batches-py`` pickles, in ``data_dir`` or ``data_dir/cifar-10-batches-py``.
``imagenet``
    An ImageFolder tree ``data_dir/train/<class>/*.JPEG`` and ``data_dir/val/<class>/*``;
    ``search`` and ``val`` are carved from ``train``, ``test`` is the ``val`` folder.
``imagefolder``
    A user's own images (:func:`load_image_folder`): ``data_dir/<class>/<image>``, or
    ``data_dir/train/<class>/...`` and optionally ``data_dir/test/<class>/...``; any size
    (resized to ``image_size`` when given), any number of classes, grey or RGB. The test split
    is the ``test/`` tree, else a fixed stratified 20% held out once, as for ``digits``.

``digits``, ``fashion-mnist``, ``cifar10`` and ``imagefolder`` are held in memory as tensors
(:class:`TensorImageDataset`); the splits without augmentation are normalised once at load time,
so indexing them costs nothing. With ``augment=True`` only ``train`` is augmented, per item:
random crop after zero padding by ``image_size / 8`` (CIFAR-10: 4), horizontal flip (not for
``digits``), normalisation, cutout. Normalisation uses the CIFAR-10 / ImageNet constants for
those sets and the per-channel mean / std of the ``train`` split for ``digits``,
``fashion-mnist`` and ``imagefolder``.

Every loader takes one :class:`DataOptions`; :data:`LOADERS` maps each name to its loader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pyronas.data.containers import DataSplits, ImageFileDataset, TensorImageDataset
from pyronas.data.formats import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DatasetError,
    read_cifar_batch,
    read_cifar_label_names,
    read_idx,
    read_image_array,
    scan_class_folders,
    scan_image_folder,
)
from pyronas.data.splits import (
    DEFAULT_FRACTIONS,
    HOLDOUT_FRACTION,
    HOLDOUT_SEED,
    carve_splits,
    check_fractions,
    hold_out_test,
)
from pyronas.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TensorAugment,
    channel_stats,
    imagenet_transforms,
    normalise,
    resize_images,
)

logger = logging.getLogger(__name__)

DIGITS_TEST_FRACTION = HOLDOUT_FRACTION
DIGITS_TEST_SEED = HOLDOUT_SEED
"""The digits test split: :func:`pyronas.data.splits.hold_out_test` (names kept for
compatibility)."""

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

DEFAULT_DOWNLOAD_DIR = Path("data")
"""Where ``download=True`` puts the files when no ``data_dir`` is given."""


@dataclass(frozen=True)
class DataOptions:
    """How to load a data set; the same for every data set (each reads what applies to it).

    Attributes
    ----------
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

    Raises
    ------
    ValueError
        At construction, for a size or fraction that no data set accepts (what depends on the
        data set's size is checked when it is loaded).
    """

    data_dir: Path | None = None
    download: bool = False
    seed: int = 0
    train_size: int | None = None
    image_size: int | None = None
    augment: bool = False
    cutout: int = 0
    fractions: tuple[float, ...] = field(default=DEFAULT_FRACTIONS)

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "fractions", check_fractions(self.fractions))
        if self.train_size is not None and self.train_size < 1:
            raise ValueError(f"train_size must be >= 1 (or None: all), got {self.train_size}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.cutout < 0:
            raise ValueError(f"cutout size must be >= 0, got {self.cutout}")

    @property
    def download_dir(self) -> Path:
        """Where a download goes: ``data_dir``, else :data:`DEFAULT_DOWNLOAD_DIR`."""
        return DEFAULT_DOWNLOAD_DIR if self.data_dir is None else self.data_dir


def _download_failed(what: str, root: Path, exc: Exception, hint: str) -> DatasetError:
    return DatasetError(
        f"downloading {what} into {root} failed ({type(exc).__name__}: {exc}). "
        f"Is there a network connection? Otherwise {hint}"
    )


def _in_memory_splits(
    name: str,
    train_images: Tensor,
    train_labels: np.ndarray,
    test_images: Tensor,
    test_labels: np.ndarray,
    class_names: Sequence[str],
    options: DataOptions,
    *,
    max_value: float,
    flip: bool,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DataSplits:
    """Split, scale, resize, normalise and wrap integer images ``(N, C, H, W)``.

    Pixels are divided by ``max_value`` (to [0, 1]) and resized to ``options.image_size`` only
    for the images kept. ``mean``/``std`` None: computed per channel on the ``train`` split.
    """

    def prepare(images: Tensor) -> Tensor:
        return resize_images(images.float().div_(max_value), options.image_size)

    parts = carve_splits(train_labels, options.train_size, options.fractions, options.seed)
    split_images = [prepare(train_images[torch.from_numpy(p)]) for p in parts]
    if mean is None or std is None:
        if parts[0].size < 2:
            raise ValueError(f"{name}: the train split needs at least 2 images for its statistics")
        mean, std = channel_stats(split_images[0])
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def wrap(images: Tensor, labels: np.ndarray, aug: bool) -> TensorImageDataset:
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        if aug:
            size = images.shape[-1]
            tf = TensorAugment(max(1, round(size / 8)), flip, mean, std, options.cutout)
            return TensorImageDataset(images.contiguous(), y, tf)
        return TensorImageDataset(normalise(images, mean, std).contiguous(), y)

    datasets = [
        wrap(x, train_labels[p], options.augment and k == 0)
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
# digits
# ----------------------------------------------------------------------------------------------


def load_digits(options: DataOptions) -> DataSplits:
    """scikit-learn's digits, with a fixed 20% test hold-out (:data:`DIGITS_TEST_SEED`)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)  # 0..16
    labels = bunch.target.astype(np.int64)
    rest, test = hold_out_test(labels)
    return _in_memory_splits(
        "digits",
        images[torch.from_numpy(rest)],
        labels[rest],
        images[torch.from_numpy(test)],
        labels[test],
        [str(d) for d in range(10)],
        options,
        max_value=16.0,
        flip=False,
    )


# ----------------------------------------------------------------------------------------------
# fashion-mnist
# ----------------------------------------------------------------------------------------------


def fashion_mnist_dirs(data_dir: str | Path | None) -> list[Path]:
    """The folders searched for the Fashion-MNIST IDX files, in order."""
    dirs = []
    if data_dir is not None:
        d = Path(data_dir)
        dirs += [d, d / "FashionMNIST" / "raw", d / "fashion-mnist"]
    dirs.append(SYSTEM_FASHION_MNIST_DIR)
    return dirs


def _find_fashion_mnist(data_dir: Path | None) -> dict[str, Path] | None:
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


def load_fashion_mnist(options: DataOptions) -> DataSplits:
    """Fashion-MNIST from its four IDX files (found, or downloaded when ``options.download``)."""
    files = _find_fashion_mnist(options.data_dir)
    hint = (
        f"install the Debian package (`apt-get install dataset-fashion-mnist`, files in "
        f"{SYSTEM_FASHION_MNIST_DIR}), put the four files in --data-dir, or pass --download "
        f"where a network exists"
    )
    if files is None and options.download:
        root = options.download_dir
        try:
            from torchvision.datasets import FashionMNIST

            for train in (True, False):
                FashionMNIST(root=str(root), train=train, download=True)
        except Exception as exc:  # any failure of the download is reported
            raise _download_failed("Fashion-MNIST", root, exc, hint) from exc
        files = _find_fashion_mnist(root)
    if files is None:
        searched = ", ".join(str(d) for d in fashion_mnist_dirs(options.data_dir))
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
        options,
        max_value=255.0,
        flip=True,
    )


# ----------------------------------------------------------------------------------------------
# cifar10
# ----------------------------------------------------------------------------------------------


def _find_cifar10(data_dir: Path | None) -> Path | None:
    if data_dir is None:
        return None
    for d in (data_dir, data_dir / CIFAR10_FOLDER):
        if all((d / f).is_file() for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)):
            return d
    return None


def _cifar10_class_names(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return CIFAR10_CLASSES
    try:
        return read_cifar_label_names(meta)
    except Exception:  # names are cosmetic: fall back
        logger.warning("could not read class names from %s; using the standard ones", meta)
        return CIFAR10_CLASSES


def load_cifar10(options: DataOptions) -> DataSplits:
    """CIFAR-10 from the ``cifar-10-batches-py`` pickles (or downloaded)."""
    data_dir = options.data_dir
    folder = _find_cifar10(data_dir)
    hint = f"pass --download where a network exists, or put {CIFAR10_FOLDER} in --data-dir"
    if folder is None and options.download:
        root = options.download_dir
        try:
            from torchvision.datasets import CIFAR10

            CIFAR10(root=str(root), train=True, download=True)
        except Exception as exc:  # any failure of the download is reported
            raise _download_failed("CIFAR-10", root, exc, hint) from exc
        folder = _find_cifar10(root)
    if folder is None:
        if data_dir is None:
            searched = "no --data-dir given"
        else:
            searched = f"{data_dir}, {data_dir / CIFAR10_FOLDER}"
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
        options,
        max_value=255.0,
        flip=True,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )


# ----------------------------------------------------------------------------------------------
# imagenet
# ----------------------------------------------------------------------------------------------


def load_imagenet(options: DataOptions) -> DataSplits:
    """ImageNet from an ImageFolder tree; images are read from disk per item."""
    layout = (
        "the ImageFolder layout <data-dir>/train/<class>/*.JPEG and <data-dir>/val/<class>/*"
        " (ImageNet cannot be downloaded automatically; get it from image-net.org and sort the"
        " validation images into class folders)"
    )
    if options.data_dir is None:
        raise DatasetError(f"ImageNet needs --data-dir pointing at {layout}")
    root = options.data_dir
    train_dir, val_dir = root / "train", root / "val"
    missing = [str(d) for d in (train_dir, val_dir) if not d.is_dir()]
    if missing:
        raise DatasetError(f"ImageNet not found: missing {', '.join(missing)}; expected {layout}")
    if options.download:
        logger.warning("ImageNet cannot be downloaded; reading %s", root)
    train_samples, classes = scan_image_folder(train_dir)
    test_samples, _ = scan_image_folder(val_dir, classes)
    if not train_samples or not test_samples:
        empty = train_dir if not train_samples else val_dir
        raise DatasetError(f"ImageNet: no images under {empty}; expected {layout}")
    size = 224 if options.image_size is None else int(options.image_size)
    train_tf, eval_tf = imagenet_transforms(size, options.augment, options.cutout)
    labels = np.array([label for _, label in train_samples], dtype=np.int64)
    parts = carve_splits(labels, options.train_size, options.fractions, options.seed)
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


# ----------------------------------------------------------------------------------------------
# imagefolder: a user's own images
# ----------------------------------------------------------------------------------------------

IMAGE_FOLDER_LAYOUT = (
    "an ImageFolder tree: <data-dir>/<class>/<image>, or <data-dir>/train/<class>/<image> with "
    "an optional <data-dir>/test/<class>/<image>"
)


def _image_folder_dirs(root: Path) -> tuple[Path, Path | None]:
    """The train tree and the test tree (None: hold the test split out) of an ``imagefolder``."""
    if not (root / "train").is_dir():
        return root, None
    others = sorted(
        e.name for e in root.iterdir()
        if e.is_dir() and not e.name.startswith(".") and e.name not in ("train", "test")
    )  # fmt: skip
    if others:
        raise DatasetError(
            f"{root} holds train/ and also {', '.join(f'{o}/' for o in others)}: beside a train/ "
            f"folder only test/ may be; expected {IMAGE_FOLDER_LAYOUT}"
        )
    test = root / "test"
    return root / "train", test if test.is_dir() else None


def _read_image_files(
    samples: Sequence[tuple[str, int]], size: int, resize: bool
) -> list[np.ndarray]:
    """Decode ``samples`` to ``uint8`` arrays ``(size, size)`` (grey) or ``(size, size, 3)``.

    An image of another size is resized (bilinear, antialiased) when ``resize``, else an
    error that names it.
    """
    from PIL import Image

    arrays = []
    for path, _ in samples:
        array = read_image_array(path)
        h, w = array.shape[:2]
        if (h, w) != (size, size):
            if not resize:
                raise DatasetError(
                    f"{path}: {w}x{h} pixels, but the first image is {size}x{size}; pass "
                    "--image-size (image_size) to resize every image to one square size"
                )
            resample = Image.Resampling.BILINEAR
            array = np.asarray(Image.fromarray(array).resize((size, size), resample))
        arrays.append(array)
    return arrays


def _stack_images(arrays: Sequence[np.ndarray], channels: int) -> Tensor:
    """``uint8`` arrays ``(S, S)`` / ``(S, S, 3)`` -> one ``uint8`` tensor ``(N, channels, S, S)``
    (grey images repeated on 3 channels when ``channels`` is 3)."""
    stacked = np.stack(
        [a[..., None].repeat(channels, axis=-1) if a.ndim == 2 else a for a in arrays]
    )
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def load_image_folder(options: DataOptions) -> DataSplits:
    """A user's own images from an ImageFolder tree, held in memory like ``digits``.

    ``options.data_dir`` holds one folder per class (``<class>/<image>``, sub-folders allowed),
    or ``train/<class>/...`` and optionally ``test/<class>/...``. Labels follow the sorted
    class folder names of the train tree. ``search`` and ``val`` are carved from the train tree;
    ``test`` is the ``test/`` tree, else a fixed stratified 20% of the train tree held out
    once (:func:`pyronas.data.splits.hold_out_test`), as for ``digits``.

    Images may have any size: every image is resized to ``options.image_size`` when it is
    given, else all must have the (square) size of the first one. They are grey (1 channel)
    when every image is grey, else RGB (grey images repeated on 3 channels; alpha dropped).
    Pixels are scaled to [0, 1] and normalised by the per-channel mean / std of the ``train``
    split; augmentation is that of CIFAR-10 (crop after padding by ``image_size / 8``, flip,
    cutout). The images are held as ``uint8``: ``N * C * S * S`` bytes.

    Raises
    ------
    DatasetError
        No ``data_dir``, a missing folder, a folder without class folders, an empty class
        folder, a file that is not an image (named), images of different sizes without
        ``image_size``, fewer than 2 classes, a test class unknown to the train tree.
    """
    if options.data_dir is None:
        raise DatasetError(f"the imagefolder data set needs --data-dir pointing at "
                           f"{IMAGE_FOLDER_LAYOUT}")  # fmt: skip
    root = options.data_dir
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found; expected {IMAGE_FOLDER_LAYOUT}")
    if options.download:
        logger.warning("an imagefolder data set cannot be downloaded; reading %s", root)
    train_dir, test_dir = _image_folder_dirs(root)
    train_samples, classes = scan_class_folders(train_dir)
    if len(classes) < 2:
        raise DatasetError(
            f"{train_dir}: {len(classes)} class folder ({', '.join(classes)}); a classifier "
            f"needs at least 2, one sub-folder per class"
        )
    test_samples = None if test_dir is None else scan_class_folders(test_dir, classes)[0]
    logger.info("reading %d images of %d classes from %s", len(train_samples), len(classes), root)

    size = options.image_size
    if size is None:
        first_path = train_samples[0][0]
        h, w = read_image_array(first_path).shape[:2]
        if h != w:
            raise DatasetError(
                f"{first_path}: {w}x{h} pixels, not square; pass --image-size (image_size) to "
                "resize every image to one square size"
            )
        size = h
    resize = options.image_size is not None
    train_arrays = _read_image_files(train_samples, size, resize)
    test_arrays = [] if test_samples is None else _read_image_files(test_samples, size, resize)
    channels = 1 if all(a.ndim == 2 for a in (*train_arrays, *test_arrays)) else 3
    images = _stack_images(train_arrays, channels)
    labels = np.array([label for _, label in train_samples], dtype=np.int64)
    if test_samples is None:
        rest, test = hold_out_test(labels)
        test_images, test_labels = images[torch.from_numpy(test)], labels[test]
        images, labels = images[torch.from_numpy(rest)], labels[rest]
    else:
        test_images = _stack_images(test_arrays, channels)
        test_labels = np.array([label for _, label in test_samples], dtype=np.int64)
    return _in_memory_splits(
        "imagefolder", images, labels, test_images, test_labels, classes, options,
        max_value=255.0, flip=True,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------

LOADERS: dict[str, Callable[[DataOptions], DataSplits]] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "imagenet": load_imagenet,
    "imagefolder": load_image_folder,
}
"""Data set name -> loader."""

DATASETS: tuple[str, ...] = tuple(LOADERS)
"""Names accepted by :func:`load_dataset`."""


def dataset_names() -> tuple[str, ...]:
    """The names of the known data sets, in the order of :data:`LOADERS`."""
    return tuple(LOADERS)


def check_dataset_name(name: str) -> str:
    """``name`` if it is a known data set, else a ValueError that lists the known ones."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(LOADERS)}")
    return name


def load_splits(name: str, options: DataOptions) -> DataSplits:
    """Load data set ``name`` with ``options`` and split it into train / search / val / test.

    Raises
    ------
    ValueError
        Unknown ``name`` or bad sizes.
    DatasetError
        Missing or corrupt files; the message lists the folders searched and how to get them.
    """
    check_dataset_name(name)
    if options.cutout and not options.augment:
        logger.warning("cutout=%d has no effect without augment=True", options.cutout)
    splits = LOADERS[name](options)
    logger.info(
        "%s: %s, %d classes, %d x %dpx",
        name,
        splits.sizes(),
        splits.num_classes,
        splits.image_size,
        splits.image_size,
    )
    return splits


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

    The keywords are the fields of :class:`DataOptions` (see there); this is
    ``load_splits(name, DataOptions(...))``.

    Parameters
    ----------
    name
        One of :data:`DATASETS`.

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
    options = DataOptions(
        data_dir=None if data_dir is None else Path(data_dir),
        download=download,
        seed=seed,
        train_size=train_size,
        image_size=image_size,
        augment=augment,
        cutout=cutout,
        fractions=tuple(fractions),
    )
    return load_splits(name, options)
