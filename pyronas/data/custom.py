"""A user's own map-style torch Datasets as :class:`DataSplits`: :func:`from_torch_datasets`.

The images are used as the Datasets yield them (no resizing, normalisation or augmentation is
added: put those in the Datasets' own transforms); only the splits are made here, by the rules
of the registered data sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from pyronas.data.containers import DataSplits
from pyronas.data.splits import (
    DEFAULT_FRACTIONS,
    carve_splits,
    hold_out_test,
)


def dataset_labels(dataset: Dataset, what: str = "dataset") -> np.ndarray:
    """The ``(N,)`` int64 labels of a map-style Dataset of ``(image, label)`` items.

    Read from a ``targets`` attribute of length ``N`` when there is one (torchvision's
    datasets), else from every item (which decodes every image once).

    Raises
    ------
    TypeError
        ``dataset`` has no length, or a label is not an integer.
    ValueError
        A negative label.
    """
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"{what} must be a map-style Dataset with a length") from exc
    targets = getattr(dataset, "targets", None)
    raw = list(targets) if targets is not None and len(targets) == n else [
        dataset[i][1] for i in range(n)
    ]
    labels = np.empty(n, dtype=np.int64)
    for i, label in enumerate(raw):
        if isinstance(label, torch.Tensor) and label.numel() == 1:
            label = label.item()
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise TypeError(
                f"{what}[{i}]: the label must be an int class index, got {type(label).__name__}"
            )
        labels[i] = int(label)
    if n and labels.min() < 0:
        raise ValueError(f"{what}: labels must be >= 0, got {int(labels.min())}")
    return labels


def _image_shape(dataset: Dataset, what: str) -> tuple[int, int, int]:
    image = dataset[0][0]
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        got = (f"{image.dtype} tensor of shape {tuple(image.shape)}"
               if isinstance(image, torch.Tensor) else type(image).__name__)  # fmt: skip
        raise TypeError(
            f"{what}[0]: the image must be a float tensor (C, H, W), got {got} (a PIL image "
            "becomes one with torchvision.transforms.ToTensor())"
        )
    c, h, w = image.shape
    return int(c), int(h), int(w)


def from_torch_datasets(
    train: Dataset,
    test: Dataset | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    train_size: int | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "custom",
) -> DataSplits:
    """Split a user's own map-style Datasets into train / search / val / test.

    Parameters
    ----------
    train
        Map-style Dataset of ``(image, label)``: ``image`` a float tensor ``(C, H, W)`` (the
        same shape for every item), ``label`` an int in ``[0, num_classes)``.
    test
        The test Dataset, of the same kind; None holds out a fixed stratified 20% of ``train``
        (:func:`pyronas.data.hold_out_test`).
    num_classes
        Number of classes; None: the largest label plus one.
    seed
        Seeds the ``train_size`` subsample and the stratified carving of ``train`` / ``search``
        / ``val`` (:func:`pyronas.data.carve_splits`).
    fractions
        ``(train, search, val)`` shares adding up to 1, or integer counts; ``(1, 0, 0)`` gives
        everything to ``train`` (retraining).
    train_size
        Items of ``train`` (after the test hold-out) to keep before carving; None keeps all.
    class_names
        Names indexed by label; None: ``"0"``, ``"1"``, ...
    name
        The data set name recorded in :attr:`DataSplits.name`.

    Returns
    -------
    DataSplits
        ``train`` / ``search`` / ``val`` (and ``test`` when held out) are
        :class:`torch.utils.data.Subset` views of ``train``; ``in_channels`` and
        ``image_size`` (the height) come from the first image; ``mean`` / ``std`` are empty
        (the Datasets normalise, if at all); ``indices`` are positions in ``train`` (after the
        hold-out: in what is left of it).

    Raises
    ------
    TypeError
        An item that is not ``(float tensor (C, H, W), int)``.
    ValueError
        An empty ``train``, fewer than 2 classes, a label outside ``[0, num_classes)``, bad
        fractions or ``train_size``.

    Examples
    --------
    A BayesNAS search on a torchvision data set (``run_search`` takes the splits with the
    ``splits`` keyword; the ``data`` settings other than the data set are then unused):

    >>> from torchvision import datasets, transforms
    >>> from pyronas.data import from_torch_datasets
    >>> from pyronas.search import run_search
    >>> from pyronas.settings import load_search_settings
    >>> tf = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
    >>> train = datasets.SVHN("data", split="train", transform=tf)
    >>> test = datasets.SVHN("data", split="test", transform=tf)
    >>> splits = from_torch_datasets(train, test, seed=0)
    >>> settings = load_search_settings("search_cifar10", {"batch_size": 64})
    >>> result = run_search(settings, "runs/svhn", splits=splits)
    >>> print(result.genotype)
    """
    if len(train) == 0:  # type: ignore[arg-type]
        raise ValueError("train is empty")
    labels = dataset_labels(train, "train")
    test_labels = None if test is None else dataset_labels(test, "test")
    c, h, _ = _image_shape(train, "train")
    if test is not None and len(test):  # type: ignore[arg-type]
        tc = _image_shape(test, "test")[0]
        if tc != c:
            raise ValueError(f"test images have {tc} channels, train images {c}")
    largest = int(max(labels.max(), -1 if test_labels is None or not test_labels.size
                      else test_labels.max()))  # fmt: skip
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"label {largest} is outside [0, {num_classes}) (num_classes)")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    names = tuple(str(k) for k in range(num_classes)) if class_names is None else tuple(
        class_names)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class_names for {num_classes} classes")

    if test is None:
        rest, held = hold_out_test(labels)
        test = Subset(train, held.tolist())
    else:
        rest = np.arange(len(labels))
    parts = carve_splits(labels[rest], train_size, tuple(fractions), seed)
    subsets = [Subset(train, rest[p].tolist()) for p in parts]
    return DataSplits(
        *subsets,
        test,
        num_classes=num_classes,
        in_channels=c,
        image_size=h,
        name=name,
        class_names=names,
        indices=dict(zip(("train", "search", "val"), parts, strict=True)),
    )
