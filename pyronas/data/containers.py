"""What a data set is handed over as: :class:`DataSplits` and the two Dataset types."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pyronas.data.formats import read_image_rgb

SPLIT_NAMES: tuple[str, str, str, str] = ("train", "search", "val", "test")
"""The four splits of :class:`DataSplits`, in order."""


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
        The data set name (one of :data:`pyronas.data.DATASETS`).
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
        return {k: len(getattr(self, k)) for k in SPLIT_NAMES}


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
