"""Seeded DataLoaders: the same seed gives the same batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


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


class DeviceBatches:
    """Re-iterable ``(x, y)`` batches of a loader moved to ``device``, at most ``limit`` per
    pass (``None``: all)."""

    def __init__(self, loader: Iterable[Any], device: torch.device, limit: int | None) -> None:
        self.loader, self.device, self.limit = loader, device, limit

    def __len__(self) -> int:
        size = len(self.loader)  # type: ignore[arg-type]
        return size if self.limit is None else min(self.limit, size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i, (x, y) in enumerate(self.loader):
            if self.limit is not None and i >= self.limit:
                return
            yield x.to(self.device), y.to(self.device)
