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

Run folders: :func:`claim_run_folder` decides whether a strategy may write into ``out``: a
folder that holds a run (or files that pyronas did not write) is refused unless ``run.resume``
(continue it: the folder must hold a run of the same strategy and settings) or
``run.overwrite`` (its files are replaced). A resumed run restores every random stream from its
checkpoint (:func:`capture_run_rng` / :func:`restore_run_rng`: the global generators and each
loader's ``torch.Generator``), so that it goes on exactly as the uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyronas.checkpoint import capture_rng_state, restore_rng_state
from pyronas.config import save_resolved_config
from pyronas.data import DataSplits, load_dataset, make_loader
from pyronas.distributed import Ranks, ShardedBatchSampler
from pyronas.runs import (
    RUN_FILE,
    MetricsCSV,
    RunFolderError,
    atomic_write_text,
    find_artefacts,
    remove_artefacts,
    remove_temporaries,
)
from pyronas.runtime import resolve_device, seed_everything
from pyronas.settings import SearchSettings
from pyronas.space import SearchSpace, get_space
from pyronas.supernet import SuperNet

__all__ = [
    "RESUMABLE_CHANGES",
    "RUN_FORMAT",
    "STREAMS",
    "RunContext",
    "SeedStreams",
    "build_loaders",
    "capture_run_rng",
    "claim_run_folder",
    "config_difference",
    "prepare_run",
    "read_run_file",
    "refuse_existing_run",
    "restore_run_rng",
    "run_folder",
]

RUN_FORMAT = "pyronas-run/1"
"""The ``format`` of ``run.json``."""

RESUMABLE_CHANGES = {"resume", "overwrite", "progress", "device", "num_threads", "out", "t_max"}
"""Flat setting keys that may change between a run and its resumption (more type-II iterations
continue a BayesNAS run; where and how it runs does not change its numbers). ``search_epochs``
is not one: the baselines' cosine schedule depends on it."""

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
        released schedule); None / empty when the strategy trains nothing. In a data-parallel
        run each loader gives this rank's share of every batch.
    seconds_before
        Search seconds of the earlier processes of a resumed run (0 for a new run).
    ranks
        This process's rank in a data-parallel run (rank 0 of 1 otherwise); rank 0 writes.
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
    seconds_before: float = 0.0
    ranks: Ranks = field(default_factory=Ranks)

    def seconds(self) -> float:
        """Search seconds so far: this process since :attr:`start` plus
        :attr:`seconds_before` (the time of the work a resumed run did not redo)."""
        return self.seconds_before + time.perf_counter() - self.start


def run_folder(settings: SearchSettings, out_dir: str | Path | None, prefix: str) -> Path:
    """``out_dir``, else ``run.out``, else ``runs/<prefix>-<time>``."""
    return Path(out_dir or settings.run.out or time.strftime(f"runs/{prefix}-%Y%m%d-%H%M%S"))


def refuse_existing_run(out: Path, markers: tuple[str, ...], hint: str) -> None:
    """Raise :class:`~pyronas.runs.RunFolderError` when ``out`` holds any of ``markers``
    (nothing is overwritten); ``hint`` says what to do instead."""
    found = [name for name in markers if (out / name).exists()]
    if found:
        raise RunFolderError(
            f"{out} already holds a search run ({', '.join(found)}); {hint} (nothing was "
            "overwritten)"
        )


def read_run_file(out: str | Path) -> dict[str, Any] | None:
    """The contents of ``out/run.json`` (strategy, settings), or None when there is none."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path} cannot be read ({err}); it is not a pyronas run "
                             "file") from None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise RunFolderError(f"{path} is not a pyronas run file of format {RUN_FORMAT}")
    return data


def config_difference(saved: Mapping[str, Any], current: SearchSettings) -> list[str]:
    """``key: saved -> current`` for every setting that differs, except
    :data:`RESUMABLE_CHANGES` (``saved``: nested or flat settings, e.g. of a checkpoint)."""
    try:
        before = SearchSettings.from_mapping(saved).flat()
    except ValueError:  # settings of an older version: compare what is there
        before = dict(saved)
    now = current.flat()
    keys = (set(before) | set(now)) - RESUMABLE_CHANGES
    return sorted(
        f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in keys if before.get(k) != now.get(k)
    )


def _describe(out: Path, found: list[str], run: dict[str, Any] | None) -> str:
    shown = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "")
    if run is None:
        return f"{out} holds files that no pyronas search of this version wrote ({shown})"
    state = "finished" if "metrics.json" in found else "not finished"
    return f"{out} already holds a {run.get('strategy')} search run, {state} ({shown})"


def _check_writable(out: Path) -> None:
    """Create ``out`` (and its parents) and make sure a file can be written there."""
    probe = out / f".write-test-{os.getpid()}.tmp"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise RunFolderError(
            f"cannot write the run folder {out}: {err.strerror or err}; choose a writable --out"
        ) from None


def claim_run_folder(settings: SearchSettings, out: Path, strategy: str) -> bool:
    """Check that a ``strategy`` search may write into ``out``; returns whether it resumes.

    Without ``run.resume`` or ``run.overwrite`` a folder that holds any file a search writes
    (:data:`~pyronas.runs.ARTEFACT_PATTERNS`) is refused, naming what is there; with
    ``run.overwrite`` those files are deleted first (other files stay). A new run writes
    ``run.json`` (strategy and settings) before anything else.

    With ``run.resume`` the folder must exist and hold a run of ``strategy`` with the same
    settings (up to :data:`RESUMABLE_CHANGES`); the temporaries of an interrupted write are
    removed. A folder with nothing of a run in it (the run was stopped before it wrote
    anything) starts the run afresh.

    Returns
    -------
    bool
        True when ``out`` holds a run to continue (``run.json`` is there).

    Raises
    ------
    RunFolderError
        The folder may not be written, holds another run or other files, or (``--resume``)
        does not exist or holds a run of another strategy or settings.
    """
    resolve_device(settings.run.device)  # a bad device fails before anything is written
    if settings.run.resume and settings.run.overwrite:
        raise RunFolderError("--resume continues the run in --out and --overwrite replaces it: "
                             "pass one of them")
    out = Path(out)
    run = read_run_file(out) if out.is_dir() else None
    found = find_artefacts(out)
    if settings.run.resume:
        if not out.is_dir():
            raise RunFolderError(
                f"--resume: {out} does not exist, so there is no run to resume; drop --resume "
                "to start one there"
            )
        if run is None and found:
            raise RunFolderError(f"--resume: {_describe(out, found, run)}; it is not a run "
                                 "to resume (choose its own --out, or --overwrite)")
        if run is not None:
            if run.get("strategy") != strategy:
                raise RunFolderError(
                    f"--resume: {out} holds a {run.get('strategy')} search, not a {strategy} "
                    f"one; resume it with --strategy {run.get('strategy')}"
                )
            differ = config_difference(run.get("settings", {}), settings)
            if differ:
                raise RunFolderError(
                    f"--resume: the run in {out} was started with other settings "
                    f"({', '.join(differ)}); resume it with the same options or start a new "
                    "run folder"
                )
            _check_writable(out)
            remove_temporaries(out)
            return True
        log.info("--resume: %s holds no run yet; starting it", out)
    elif found and not settings.run.overwrite:
        raise RunFolderError(
            f"{_describe(out, found, run)}; pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out (nothing was changed)"
        )
    _check_writable(out)
    if found:
        log.info("--overwrite: removing %s from %s", ", ".join(remove_artefacts(out)), out)
    remove_temporaries(out)
    data = {"format": RUN_FORMAT, "strategy": strategy, "settings": settings.to_dict()}
    atomic_write_text(json.dumps(data, indent=2, default=str) + "\n", out / RUN_FILE)
    return False


def capture_run_rng(loaders: Mapping[str, Any]) -> dict[str, Any]:
    """The global generators' states and the ``torch.Generator`` state of each loader.

    Taken between two steps of a run (no loader iterator alive), this is all the randomness a
    run carries forward: a fresh loader restored to it (:func:`restore_run_rng`) gives the same
    batches as the old one would have.
    """
    return {
        "global": capture_rng_state(),
        "loaders": {name: loader.generator.get_state() for name, loader in loaders.items()
                    if getattr(loader, "generator", None) is not None},
    }


def restore_run_rng(state: Mapping[str, Any], loaders: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_run_rng` (for the loaders of a freshly prepared run)."""
    restore_rng_state(state["global"])
    for name, generator_state in state.get("loaders", {}).items():
        if name not in loaders:
            raise RunFolderError(f"the checkpoint has a {name!r} loader this run does not have")
        loaders[name].generator.set_state(generator_state)


def build_loaders(
    splits: DataSplits, settings: SearchSettings, seeds: SeedStreams, device: torch.device,
    warmup: bool = False, ranks: Ranks | None = None,
) -> dict[str, Any]:
    """The ``train``, ``search`` and ``val`` loaders (``val`` with twice the batch size).

    With ``warmup`` (the authors' released schedule) the training split is cut in two: 10% for
    the ``warmup`` loader, the rest for ``train``. With ``ranks`` of a data-parallel run each
    loader gives this rank's slice of every batch the single-process loader would give
    (:class:`~pyronas.distributed.ShardedBatchSampler`, drawing from the same seeded
    generator).
    """
    pin = device.type == "cuda"
    bs = settings.training.batch_size
    sharded = ranks is not None and ranks.distributed

    def loader(data: Any, stream: str, shuffle: bool = True, batch_size: int = bs) -> Any:
        single = make_loader(data, batch_size, shuffle=shuffle, seed=seeds.seed(stream),
                             pin_memory=pin)
        if not sharded:
            return single
        assert ranks is not None
        sampler = ShardedBatchSampler(len(data), batch_size, ranks,
                                      single.generator if shuffle else None)
        return torch.utils.data.DataLoader(data, batch_sampler=sampler,
                                           generator=single.generator, pin_memory=pin)

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
    settings: SearchSettings, out: Path, *, data: bool = True, warmup: bool = False,
    ranks: Ranks | None = None, device: torch.device | None = None,
) -> RunContext:
    """Resolve the device, create the run folder, seed, and build space, data and supernet.

    Parameters
    ----------
    settings
        Validated settings (:func:`pyronas.settings.load_search_settings`).
    out
        The run folder (the caller has claimed it, :func:`claim_run_folder`).
    data
        Load the data splits and build the supernet and loaders (``False`` for strategies that
        train nothing).
    warmup
        Also build the ``warmup`` loader of the released schedule.
    ranks, device
        A data-parallel run: this process's rank (only rank 0 writes ``config.yaml``; the
        loaders are sharded) and the device :func:`pyronas.distributed.start` gave it.

    Returns
    -------
    RunContext
        Everything a strategy needs; ``config.yaml`` is written.
    """
    start = time.perf_counter()
    ranks = ranks or Ranks()
    device = device or resolve_device(settings.run.device)  # before any folder is written
    space = get_space(settings.supernet.space)
    if ranks.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved_config(settings.to_dict(), out, seed=settings.run.seed)
    if settings.run.num_threads:
        torch.set_num_threads(settings.run.num_threads)
    seeds = SeedStreams(settings.run.seed)
    seed_everything(seeds.seed("torch"))
    ctx = RunContext(settings, out, device, seeds, space, start, MetricsCSV(out / "metrics.csv"),
                     ranks=ranks)
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
    ctx.loaders = build_loaders(ctx.splits, settings, seeds, device, warmup=warmup, ranks=ranks)
    return ctx
