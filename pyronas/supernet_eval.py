"""Running a trained supernet at given switches: batch-norm statistics, accuracy, device batches.

Every strategy (BayesNAS, DARTS, random search) evaluates its supernet with these, so that the
validation accuracies of ``metrics.csv`` mean the same thing for all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from pyronas.distributed import Ranks, all_reduce_sum
from pyronas.supernet import SuperNet

__all__ = ["DeviceLoader", "evaluate_supernet", "recalibrate_batchnorm"]

Batch = tuple[Tensor, Tensor]


@torch.no_grad()
def recalibrate_batchnorm(
    net: torch.nn.Module, sites: dict[str, Tensor], batches: Iterable[Batch], device: torch.device
) -> None:
    """Re-estimate every batch norm's running statistics at the current weights and switches.

    The curvature, the Laplace fit and the validation accuracy run the supernet in eval mode,
    where batch norms use running statistics; after a few SGD steps the exponential moving
    averages still remember the initial weights. This resets them and takes the exact average
    of the batch statistics over ``batches`` (a forward pass each, no gradients).

    Parameters
    ----------
    net
        The supernet, called as ``net(x, edge_switch, op_switch)``.
    sites
        ``edge_switch`` ``(group, edge)`` and ``op_switch`` ``(group, edge, op)``.
    batches
        ``(x, y)`` batches, ``x`` of shape ``(batch, channels, height, width)``.
    device
        Where the batches are moved to.
    """
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = net.training
    net.train()
    for x, _ in batches:
        net(x.to(device), sites["edge_switch"].detach(), sites["op_switch"].detach())
    net.train(was_training)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum


@torch.no_grad()
def evaluate_supernet(
    net: SuperNet, sites: dict[str, Tensor], loader: Iterable[Batch], device: torch.device,
    ranks: Ranks | None = None,
) -> float:
    """Accuracy (in ``[0, 1]``) of the supernet with the given switches, in eval mode.

    In a data-parallel run (``ranks``) each rank scores its share of the images and the
    counts are summed, so every rank returns the accuracy over all of them.
    """
    was_training = net.training
    net.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = net(x, sites["edge_switch"], sites["op_switch"])
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    net.train(was_training)
    if ranks is not None and ranks.distributed:
        counts = all_reduce_sum(
            torch.tensor([correct, total], dtype=torch.float64, device=device), ranks)
        correct, total = int(counts[0]), int(counts[1])
    return correct / max(total, 1)


class DeviceLoader:
    """Moves each batch of a loader to a device (the type-II engine moves ``x, y`` itself for
    MAP epochs, but uses the curvature batches as given)."""

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self) -> Iterator[Batch]:
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.loader)
