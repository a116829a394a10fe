"""Data-parallel runs under ``torchrun``: the process group, the rank's share of each batch.

``torchrun --nproc_per_node N -m pyronas retrain ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set. :func:`start` joins them into one process group (NCCL on
CUDA, gloo on the CPU) and says which device this rank uses; without those variables (or with
``WORLD_SIZE=1``) it does nothing and the run is the ordinary single-process one.

The data are split so that a run on N ranks takes the same optimisation steps as one process:
:class:`ShardedBatchSampler` draws the global order of an epoch from the run's seeded generator
exactly as a single process would, cuts it into the same global batches of ``batch_size`` and
gives rank ``r`` the ``r``-th equal slice of each. With the mean loss per rank and
DistributedDataParallel's averaging of the gradients, a step uses the gradient of the global
batch. What differs: batch-norm statistics are per rank unless synchronised (SyncBatchNorm,
used on CUDA; the CPU runs keep per-rank statistics), and per-sample random augmentation draws
from each rank's own stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["Ranks", "ShardedBatchSampler", "all_reduce_sum", "barrier", "refuse_data_parallel",
           "start", "stop"]


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this rank writes the run folder (rank 0)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def start(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group ``torchrun`` set up; returns the ranks and this rank's device.

    On CUDA each rank takes GPU ``LOCAL_RANK``. Calling it again in the same process (a second
    run) reuses the group.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Ranks(), device
    ranks = Ranks(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0))
    if device.type == "cuda":
        if torch.cuda.device_count() <= ranks.local_rank:
            raise ValueError(f"rank {ranks.rank} needs GPU {ranks.local_rank}, but only "
                             f"{torch.cuda.device_count()} are visible; start at most that "
                             "many processes per node")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def refuse_data_parallel(what: str) -> None:
    """Raise ``ValueError`` when started by ``torchrun`` with several processes: ``what``
    (a search, a compression) runs in one process, and N copies would write one run folder."""
    world = _env_int("WORLD_SIZE", 1)
    if world > 1:
        raise ValueError(f"{what} runs in one process, but torchrun started {world} "
                         f"(WORLD_SIZE={world}); start it without torchrun (only retraining "
                         "is data-parallel)")


def stop() -> None:
    """Leave the process group (after the last collective of the run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (nothing to do in a single process)."""
    if ranks.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (unchanged in a single process)."""
    if ranks.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class ShardedBatchSampler(Sampler[list[int]]):
    """This rank's slice of every global batch of a seeded random order.

    Parameters
    ----------
    num_items
        Items in the data set.
    batch_size
        The global batch (over all ranks); a multiple of ``world_size``.
    ranks
        This process's rank and the world size.
    generator
        The run's data-order generator: the order of an epoch is
        ``torch.randperm(num_items, generator=generator)``, as a single process's shuffled
        loader draws it.
    drop_last
        Drop a last global batch smaller than ``batch_size``. A last batch smaller than the
        world (some rank would get nothing) is always dropped.
    """

    def __init__(self, num_items: int, batch_size: int, ranks: Ranks,
                 generator: torch.Generator, drop_last: bool = False) -> None:
        if batch_size % ranks.world_size:
            raise ValueError(f"batch_size {batch_size} is not a multiple of the "
                             f"{ranks.world_size} processes: each rank takes an equal share "
                             "of every batch")
        self.num_items, self.batch_size, self.ranks = num_items, batch_size, ranks
        self.generator, self.drop_last = generator, drop_last

    def _sizes(self) -> list[int]:
        full, rest = divmod(self.num_items, self.batch_size)
        sizes = [self.batch_size] * full
        if rest and not self.drop_last and rest >= self.ranks.world_size:
            sizes.append(rest)
        return sizes

    def __len__(self) -> int:
        return len(self._sizes())

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.num_items, generator=self.generator)
        start = 0
        for size in self._sizes():
            batch = order[start:start + size]
            start += size
            yield torch.tensor_split(batch, self.ranks.world_size)[self.ranks.rank].tolist()
