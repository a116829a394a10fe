"""Image transforms on tensors: resizing, normalisation, DARTS augmentation and cutout.

Batch functions (:func:`resize_images`, :func:`channel_stats`, :func:`normalise`) run once at
load time on ``(N, C, H, W)`` images; the per-item transforms (:class:`Cutout`,
:class:`TensorAugment`, :func:`imagenet_transforms`) run when a Dataset is indexed, drawing
from the global torch RNG unless given a generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------
# Batch transforms (load time)
# ----------------------------------------------------------------------------------------------


def resize_images(images: Tensor, image_size: int | None) -> Tensor:
    """Resize ``(N, C, H, W)`` images in [0, 1] to ``(N, C, image_size, image_size)``.

    Antialiased bilinear, clamped to [0, 1]; ``image_size`` None or the current square size
    returns ``images`` itself.
    """
    if image_size is None or image_size == images.shape[-1] == images.shape[-2]:
        return images
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    out = F.interpolate(
        images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.clamp_(0.0, 1.0)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (floored at 1e-8) of ``(N, C, H, W)`` images."""
    flat = images.transpose(0, 1).reshape(images.shape[1], -1).double()
    std = flat.std(dim=1).clamp_min(1e-8)
    return tuple(flat.mean(dim=1).tolist()), tuple(std.tolist())


def normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(images - mean) / std`` per channel, ``images`` ``(N, C, H, W)``; a new tensor."""
    m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s


# ----------------------------------------------------------------------------------------------
# Per-item transforms (augmentation)
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
