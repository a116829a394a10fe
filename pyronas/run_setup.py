"""The run skeleton: what every search strategy needs before its first step.

:func:`prepare_run` turns validated :class:`~pyronas.settings.SearchSettings` into a
:class:`RunContext`: the device, the run folder (with ``config.yaml``), the seed streams, the
search space, the data splits, the supernet and the loaders. BayesNAS
(:func:`pyronas.search.run_search`) and the baselines (:mod:`pyronas.strategies`) are peers
that each call it once; neither imports the other.

Seeds: one ``numpy.random.SeedSequence(run.seed)`` is the root of every random stream of a run
(:class:`SeedStreams`); each consumer (torch's global generator, the data splits, the order of
each loader, the random cells, the ArviZ draws) gets its own spawned child, so adding a consumer
or drawing more from one never shifts another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyronas.config import save_resolved_config
from pyronas.data import DataSplits, load_dataset, make_loader
from pyronas.runs import MetricsCSV
from pyronas.runtime import resolve_device, seed_everything
from pyronas.settings import SearchSettings
from pyronas.space import SearchSpace, get_space
from pyronas.supernet import SuperNet

__all__ = [
    "STREAMS",
    "RunContext",
    "SeedStreams",
    "build_loaders",
    "prepare_run",
    "refuse_existing_run",
    "run_folder",
]

log = logging.getLogger(__name__)

STREAMS = (
    "torch",  # torch's, NumPy's and Python's global generators (initial weights, augmentation)
    "splits",  # subsample and train / search / val / test split of the data set
    "train_order",
    "search_order",
    "val_order",
    "warmup_split",  # released schedule: which 10% of the training split warms up
    "warmup_order",
    "bn_batches",  # fixed batches that recalibrate batch norms (random search)
    "candidates",  # random cells scored by random search
    "paths",  # random cell of each weight-sharing training step
    "report",  # posterior and prior draws of the ArviZ export
)
"""The named seed streams of a run, in spawn order (append new ones at the end)."""


@dataclass(frozen=True)
class SeedStreams:
    """Independent seeds of one run, spawned from ``numpy.random.SeedSequence(root)``."""

    root: int

    def sequence(self, name: str) -> np.random.SeedSequence:
        """The child :class:`numpy.random.SeedSequence` of stream ``name``."""
        if name not in STREAMS:
            raise KeyError(f"unknown seed stream {name!r}; streams: {', '.join(STREAMS)}")
        return np.random.SeedSequence(self.root).spawn(len(STREAMS))[STREAMS.index(name)]

    def seed(self, name: str) -> int:
        """A 32-bit integer seed of stream ``name`` (for ``torch.Generator`` and friends)."""
        return int(self.sequence(name).generate_state(1, dtype=np.uint32)[0])

    def numpy(self, name: str) -> np.random.Generator:
        """A NumPy generator of stream ``name``."""
        return np.random.default_rng(self.sequence(name))


@dataclass
class RunContext:
    """The shared pieces of one search run (see :func:`prepare_run`).

    Attributes
    ----------
    settings
        The validated settings.
    out
        The run folder (holds ``config.yaml``).
    device
        Where the supernet and the batches live.
    seeds
        The seed streams.
    space
        The search space.
    start
        ``time.perf_counter()`` when preparation began (the search cost counts from here).
    metrics
        ``metrics.csv`` of the run folder.
    splits, net, loaders
        Data splits, supernet and loaders (``train``, ``search``, ``val``; ``warmup`` for the
        released schedule); None / empty when the strategy trains nothing.
    """

    settings: SearchSettings
    out: Path
    device: torch.device
    seeds: SeedStreams
    space: SearchSpace
    start: float
    metrics: MetricsCSV
    splits: DataSplits | None = None
    net: SuperNet | None = None
    loaders: dict[str, Any] = field(default_factory=dict)


def run_folder(settings: SearchSettings, out_dir: str | Path | None, prefix: str) -> Path:
    """``out_dir``, else ``run.out``, else ``runs/<prefix>-<time>``."""
    return Path(out_dir or settings.run.out or time.strftime(f"runs/{prefix}-%Y%m%d-%H%M%S"))


def refuse_existing_run(out: Path, markers: tuple[str, ...], hint: str) -> None:
    """Raise :class:`FileExistsError` when ``out`` holds any of ``markers`` (nothing is
    overwritten); ``hint`` says what to do instead."""
    found = [name for name in markers if (out / name).exists()]
    if found:
        raise FileExistsError(
            f"{out} already holds a search run ({', '.join(found)}); {hint} (nothing was "
            "overwritten)"
        )


def build_loaders(
    splits: DataSplits, settings: SearchSettings, seeds: SeedStreams, device: torch.device,
    warmup: bool = False,
) -> dict[str, Any]:
    """The ``train``, ``search`` and ``val`` loaders (``val`` with twice the batch size).

    With ``warmup`` (the authors' released schedule) the training split is cut in two: 10% for
    the ``warmup`` loader, the rest for ``train``.
    """
    pin = device.type == "cuda"
    bs = settings.training.batch_size

    def loader(data: Any, stream: str, shuffle: bool = True, batch_size: int = bs) -> Any:
        return make_loader(data, batch_size, shuffle=shuffle, seed=seeds.seed(stream),
                           pin_memory=pin)

    train: Any = splits.train
    loaders = {}
    if warmup:
        n = len(splits.train)
        generator = torch.Generator().manual_seed(seeds.seed("warmup_split"))
        order = torch.randperm(n, generator=generator).tolist()
        cut = max(1, n // 10)
        loaders["warmup"] = loader(torch.utils.data.Subset(splits.train, order[:cut]),
                                   "warmup_order")
        train = torch.utils.data.Subset(splits.train, order[cut:])
    loaders["train"] = loader(train, "train_order")
    loaders["search"] = loader(splits.search, "search_order")
    loaders["val"] = loader(splits.val, "val_order", shuffle=False, batch_size=2 * bs)
    return loaders


def prepare_run(
    settings: SearchSettings, out: Path, *, data: bool = True, warmup: bool = False
) -> RunContext:
    """Resolve the device, create the run folder, seed, and build space, data and supernet.

    Parameters
    ----------
    settings
        Validated settings (:func:`pyronas.settings.load_search_settings`).
    out
        The run folder (the caller has checked it may be written, :func:`refuse_existing_run`).
    data
        Load the data splits and build the supernet and loaders (``False`` for strategies that
        train nothing).
    warmup
        Also build the ``warmup`` loader of the released schedule.

    Returns
    -------
    RunContext
        Everything a strategy needs; ``config.yaml`` is written.
    """
    start = time.perf_counter()
    device = resolve_device(settings.run.device)  # before any folder is written
    space = get_space(settings.supernet.space)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved_config(settings.to_dict(), out, seed=settings.run.seed)
    if settings.run.num_threads:
        torch.set_num_threads(settings.run.num_threads)
    seeds = SeedStreams(settings.run.seed)
    seed_everything(seeds.seed("torch"))
    ctx = RunContext(settings, out, device, seeds, space, start, MetricsCSV(out / "metrics.csv"))
    if not data:
        return ctx
    d = settings.data
    ctx.splits = load_dataset(d.dataset, data_dir=d.data_dir, download=d.download,
                              seed=seeds.seed("splits"), train_size=d.train_size,
                              image_size=d.image_size)
    ctx.net = SuperNet(
        space, C=settings.supernet.channels, layers=settings.supernet.layers,
        num_classes=ctx.splits.num_classes, in_channels=ctx.splits.in_channels,
        tied=settings.supernet.tied,
    ).to(device)
    ctx.loaders = build_loaders(ctx.splits, settings, seeds, device, warmup=warmup)
    return ctx
