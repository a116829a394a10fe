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
    The official test set (``digits``, and ``imagefolder`` without a ``test/`` folder: a fixed
    stratified 20% held out once).

``train``, ``search`` and ``val`` are carved from the official training set (optionally first
subsampled to ``train_size`` images) in the proportions ``fractions`` (default 50% / 25% / 25%),
stratified by class and seeded by ``seed``. ``fractions=(1, 0, 0)`` gives the whole training set
to ``train`` (the DARTS retraining protocol); zero fractions give empty splits.

The modules, lowest first (each imports only those above it):

``formats``
    File readers: IDX, CIFAR-10 pickles, image files, ImageFolder trees; :class:`DatasetError`.
``transforms``
    Resizing, normalisation, DARTS augmentation, cutout.
``splits``
    Seeded stratified splits and the train / search / val carving.
``containers``
    :class:`DataSplits`, :class:`TensorImageDataset`, :class:`ImageFileDataset`.
``datasets``
    One loader per data set taking a :class:`DataOptions` (``imagefolder``: a user's own
    ImageFolder tree), the registry :data:`LOADERS`, :func:`load_splits` and
    :func:`load_dataset`.
``custom``
    :func:`from_torch_datasets`: a user's own map-style torch Datasets split by the same rules.
``batches``
    :func:`make_loader`, seeded DataLoaders.

Module constants are read where they are defined: to point the Fashion-MNIST search elsewhere,
patch ``pyronas.data.datasets.SYSTEM_FASHION_MNIST_DIR``, not the name re-exported here.
"""

from pyronas.data.batches import DeviceBatches, make_loader
from pyronas.data.containers import SPLIT_NAMES, DataSplits, ImageFileDataset, TensorImageDataset
from pyronas.data.custom import dataset_labels, from_torch_datasets
from pyronas.data.datasets import (
    CIFAR10_CLASSES,
    CIFAR10_FOLDER,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
    DATASETS,
    DEFAULT_DOWNLOAD_DIR,
    DIGITS_TEST_FRACTION,
    DIGITS_TEST_SEED,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    IMAGE_FOLDER_LAYOUT,
    LOADERS,
    SYSTEM_FASHION_MNIST_DIR,
    DataOptions,
    check_dataset_name,
    dataset_names,
    fashion_mnist_dirs,
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    load_imagenet,
    load_splits,
)
from pyronas.data.formats import (
    GREY_MODES,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    IMAGE_EXTENSIONS,
    DatasetError,
    read_cifar_batch,
    read_cifar_label_names,
    read_idx,
    read_image_array,
    read_image_rgb,
    scan_class_folders,
    scan_image_folder,
)
from pyronas.data.splits import (
    CARVE_SEED_OFFSET,
    DEFAULT_FRACTIONS,
    HOLDOUT_FRACTION,
    HOLDOUT_SEED,
    carve_splits,
    check_fractions,
    hold_out_test,
    split_counts,
    stratified_split,
)
from pyronas.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Cutout,
    TensorAugment,
    channel_stats,
    imagenet_transforms,
    normalise,
    resize_images,
)

__all__ = [
    "DeviceBatches",
    "CARVE_SEED_OFFSET",
    "CIFAR10_CLASSES",
    "CIFAR10_FOLDER",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_TEST_FILE",
    "CIFAR10_TRAIN_FILES",
    "DATASETS",
    "DEFAULT_DOWNLOAD_DIR",
    "DEFAULT_FRACTIONS",
    "DIGITS_TEST_FRACTION",
    "DIGITS_TEST_SEED",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "GREY_MODES",
    "HOLDOUT_FRACTION",
    "HOLDOUT_SEED",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "IMAGE_FOLDER_LAYOUT",
    "LOADERS",
    "SPLIT_NAMES",
    "SYSTEM_FASHION_MNIST_DIR",
    "Cutout",
    "DataOptions",
    "DataSplits",
    "DatasetError",
    "ImageFileDataset",
    "TensorAugment",
    "TensorImageDataset",
    "carve_splits",
    "channel_stats",
    "check_dataset_name",
    "check_fractions",
    "dataset_labels",
    "dataset_names",
    "fashion_mnist_dirs",
    "hold_out_test",
    "from_torch_datasets",
    "imagenet_transforms",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_imagenet",
    "load_splits",
    "make_loader",
    "normalise",
    "read_cifar_batch",
    "read_cifar_label_names",
    "read_idx",
    "read_image_array",
    "read_image_rgb",
    "resize_images",
    "scan_class_folders",
    "scan_image_folder",
    "split_counts",
    "stratified_split",
]
