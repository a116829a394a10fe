"""Data-parallel runs under ``torchrun``: the process group, the rank's share of each batch.

``torchrun --nproc_per_node N -m pyronas retrain ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set. :func:`start` joins them into one process group (NCCL on
CUDA, gloo on the CPU) and says which device this rank uses; without those variables (or with
``WORLD_SIZE=1``) it does nothing and the run is the ordinary single-process one.

The data are split so that a run on N ranks takes the same optimisation steps as one process:
:class:`ShardedBatchSampler` draws the global order of an epoch from the run's seeded generator
exactly as a single process's shuffled loader would (the same draws from the same generator, so
the generator's state after an epoch, or after the first batches of one, is the same too), cuts
it into the same global batches of ``batch_size`` and gives rank ``r`` the ``r``-th equal slice
of each. With the mean loss per rank and the gradients averaged over the ranks
(DistributedDataParallel for retraining, :func:`average_` for a search), a step uses the
gradient of the global batch. Batch norms in training mode must see the global batch too:
:func:`synchronise_batchnorm` replaces them by torch's SyncBatchNorm on CUDA and by
:class:`CrossRankBatchNorm` on the CPU (torch's supports accelerators only), which take the
statistics of the global batch with a differentiable all-reduce. What still differs from one
process: floating-point rounding, and per-sample random augmentation, which draws from each
rank's own stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, RandomSampler, Sampler, SequentialSampler

__all__ = ["CrossRankBatchNorm", "Ranks", "ShardedBatchSampler", "all_reduce_sum", "average_",
           "barrier", "broadcast_", "ranks_from_env", "refuse_data_parallel", "start", "stop",
           "synchronise_batchnorm"]


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


def ranks_from_env() -> Ranks:
    """The ranks ``torchrun`` announced in the environment (a single process without them)."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Ranks()
    return Ranks(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0))


def start(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group ``torchrun`` set up; returns the ranks and this rank's device.

    On CUDA each rank takes GPU ``LOCAL_RANK``. Calling it again in the same process (a second
    run) reuses the group.
    """
    ranks = ranks_from_env()
    if not ranks.distributed:
        return ranks, device
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
                         "and the BayesNAS search are data-parallel)")


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


def average_(tensors: list[torch.Tensor], ranks: Ranks, weight: float = 1.0) -> None:
    """Replace each tensor by its ``weight``-weighted mean over the ranks, in place.

    ``weight`` is this rank's share (e.g. the images of its slice of a batch; equal weights
    give the plain mean). The tensors (gradients, curvatures, per-rank means) are packed into
    one flat buffer of the first one's dtype with the weight, summed by one all-reduce and
    divided by the summed weight; every rank ends with the same bits. Nothing happens in a
    single process.
    """
    if not ranks.distributed or not tensors:
        return
    dtype = tensors[0].dtype
    flat = torch.cat([t.detach().reshape(-1).to(dtype) * weight for t in tensors]
                     + [tensors[0].new_full((1,), weight, dtype=dtype)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= flat[-1].clone()
    start = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[start:start + n].view_as(t))
        start += n


def broadcast_(tensors: list[torch.Tensor], ranks: Ranks) -> None:
    """Overwrite each tensor with rank 0's, in place (nothing to do in a single process)."""
    if ranks.distributed:
        for t in tensors:
            dist.broadcast(t, src=0)


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
        The run's data-order generator: the order of an epoch is drawn from it by the same
        :class:`~torch.utils.data.RandomSampler` a single process's shuffled loader uses;
        ``None`` keeps the data's order (an unshuffled loader, e.g. for evaluation).
    drop_last
        Drop a last global batch smaller than ``batch_size``. A last batch smaller than the
        world (some rank would get nothing) is always dropped.
    """

    def __init__(self, num_items: int, batch_size: int, ranks: Ranks,
                 generator: torch.Generator | None, drop_last: bool = False) -> None:
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
        items = range(self.num_items)
        order = (SequentialSampler(items) if self.generator is None
                 else RandomSampler(items, generator=self.generator))
        # lazily, as the single process's loader: a pass stopped after k batches leaves the
        # generator where that loader would leave it
        for batch in BatchSampler(order, self.batch_size, self.drop_last):
            if len(batch) < self.ranks.world_size:
                return
            yield torch.tensor_split(torch.tensor(batch), self.ranks.world_size)[
                self.ranks.rank].tolist()


class _SummedOverRanks(torch.autograd.Function):
    """``y = sum over ranks of x``; the gradient of ``x`` is the sum over ranks of ``dy``
    (every rank's loss depends on every rank's ``x`` through ``y``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CrossRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training-mode statistics are those of the global batch over all ranks.

    In training mode with a process group of several ranks, the per-channel sums of ``x`` and
    ``x**2`` and the element count are summed over the ranks (in float64, with the
    differentiable all-reduce :class:`_SummedOverRanks`, so the backward pass carries the
    gradients of every rank's loss through the shared statistics), and the input is normalised
    with the global mean and biased variance; the running statistics are updated with the
    global mean and unbiased variance, as :class:`~torch.nn.BatchNorm2d` does for one process.
    Otherwise (eval mode, one process) it is an ordinary batch norm. Works with the gloo
    backend (CPU), where torch's :class:`~torch.nn.SyncBatchNorm` does not.

    Input: ``(batch, channels, *spatial)``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (batch, channels, ...), got "
                             f"{input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        synchronised = (self.training and dist.is_available() and dist.is_initialized()
                        and dist.get_world_size() > 1)
        if not synchronised:
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        wide = x.double()
        count = wide.new_full((1,), x.numel() // x.shape[1])
        stats = _SummedOverRanks.apply(torch.cat([wide.sum(dims), (wide * wide).sum(dims),
                                                  count]))
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels:2 * channels] / total - mean * mean  # biased
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                          else self.momentum)
                unbiased = var * total / (total - 1).clamp(min=1)
                self.running_mean.mul_(1 - factor).add_(factor * mean.to(x.dtype))
                self.running_var.mul_(1 - factor).add_(factor * unbiased.to(x.dtype))
        shape = (1, channels) + (1,) * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps).to(x.dtype).view(shape)
        y = (x - mean.to(x.dtype).view(shape)) * scale
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def synchronise_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every batch norm synchronised over the ranks (in place where possible):
    torch's :class:`~torch.nn.SyncBatchNorm` on CUDA, :class:`CrossRankBatchNorm` elsewhere.
    Parameters, buffers and state-dict keys stay the same."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _swap_batchnorm(module)


def _swap_batchnorm(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, CrossRankBatchNorm | nn.SyncBatchNorm):
        like = next(iter([*module.parameters(), *module.buffers()]), torch.empty(0))
        dtype = like.dtype if like.is_floating_point() else None
        swapped = CrossRankBatchNorm(module.num_features, module.eps, module.momentum,
                                     module.affine, module.track_running_stats,
                                     device=like.device, dtype=dtype)
        swapped.load_state_dict(module.state_dict())
        swapped.train(module.training)
        return swapped
    for name, child in module.named_children():
        swapped = _swap_batchnorm(child)
        if swapped is not child:
            setattr(module, name, swapped)
    return module
