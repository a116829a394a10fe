"""Retraining a genotype from scratch with the published evaluation protocols.

:func:`retrain` builds a DARTS evaluation network (:mod:`pyronas.evalnet`) for a genotype and
trains it with the settings of a config (:mod:`pyronas.config`; presets in
``experiments/configs``):

* CIFAR-10, DARTS protocol (``retrain_cifar10.yaml``): 600 epochs, batch 96, SGD (lr 0.025,
  momentum 0.9, weight decay 3e-4) with a cosine schedule to 0 over the epochs, cutout 16, drop
  path ramped linearly ``drop_path_prob * epoch / epochs``, auxiliary head weighted 0.4,
  gradient-norm clip 5, 36 channels, 20 cells.
* ImageNet mobile setting (``retrain_imagenet.yaml``): 14 cells, 48 channels, 250 epochs, batch
  128, lr 0.1 times 0.97 per epoch, weight decay 3e-5, label smoothing 0.1.
* The BayesNAS authors' variant (``variant: authors``): ``dropout2d`` on the output of every
  operation of every cell, its rate ramped linearly to ``op_dropout``, no auxiliary head. The
  evaluation network has no such dropout of its own, so it is added by forward hooks on the
  cells' operations (:class:`OpDropout`).

A run folder holds ``config.yaml`` (resolved, with versions and git SHA), ``metrics.csv`` (one
row per epoch), ``checkpoint.pt`` (rewritten atomically after every epoch) and, at the end,
``metrics.json``. ``retrain(..., resume=True)`` continues from the checkpoint; on a CPU the
resumed run ends with the same weights as an uninterrupted one.

On CUDA the loop uses mixed precision (``torch.autocast`` + ``GradScaler``), pinned memory and
loader workers, optionally channels-last tensors and ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyronas import distributed
from pyronas.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointMismatchError,
    capture_rng_state,
    check_identity,
    config_hash,
    identity,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from pyronas.config import (
    RETRAIN_DEFAULTS,
    ConfigError,
    load_config,
    merge_config,
    preset_path,
    save_resolved_config,
)
from pyronas.distributed import Ranks, ShardedBatchSampler, all_reduce_sum, barrier
from pyronas.runs import RunFolderError, atomic_write_text, find_artefacts, remove_artefacts
from pyronas.runtime import device_name, progress_enabled, resolve_device, seed_everything

__all__ = [
    "METRICS_COLUMNS",
    "NonFiniteLossError",
    "OpDropout",
    "RetrainOutOfMemoryError",
    "build_network",
    "evaluate",
    "genotype_label",
    "is_out_of_memory",
    "resolve_device",
    "resolved_config",
    "retrain",
    "run_retrain_cli",
]

logger = logging.getLogger(__name__)

METRICS_COLUMNS = ("epoch", "train_loss", "train_acc", "val_acc", "eval_split", "lr", "seconds",
                   "images_per_s")
"""``val_acc`` is measured on ``eval_split``: ``"val"`` (a validation split, ``val_fraction > 0``)
or ``"test"`` (the test split, as in the DARTS evaluation script: fine to report the last epoch,
never to select a budget, a lambda or an epoch on)."""
"""Columns of ``metrics.csv`` (accuracies in %, ``seconds`` of the whole epoch)."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite, or exploded (:data:`EXPLODED_LOSS`); the last
    good checkpoint is kept."""


EXPLODED_LOSS = 100.0
"""An epoch whose mean training loss is above ``EXPLODED_LOSS * log(num_classes)`` counts as
diverged (a network that predicts uniformly scores ``log(num_classes)``)."""


class RetrainOutOfMemoryError(MemoryError):
    """The device ran out of memory; the message names a smaller batch size to try."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch running out of device or host memory."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


class OpDropout:
    """``dropout2d`` on the output of every operation of every cell, through forward hooks.

    The BayesNAS authors' evaluation networks drop whole channels of each operation's output
    (identities included) instead of DARTS drop path. :class:`pyronas.evalnet.Cell` keeps its
    operations in ``cell.ops``; a hook on each one replaces the output by
    ``F.dropout2d(output, p, training=op.training)``.

    Parameters
    ----------
    net
        An evaluation network whose ``cells`` each have an ``ops`` ModuleList.
    p
        Initial rate; set :attr:`p` per epoch.
    """

    def __init__(self, net: nn.Module, p: float = 0.0) -> None:
        self.p = float(p)
        cells = getattr(net, "cells", None)
        if cells is None or not all(hasattr(c, "ops") for c in cells):
            raise TypeError("OpDropout needs a network whose `cells` each have an `ops` list")
        self.handles = [op.register_forward_hook(self._hook) for c in cells for op in c.ops]

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        if self.p > 0.0 and module.training:
            return F.dropout2d(output, self.p, training=True)
        return output

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self.handles:
            h.remove()
        self.handles = []


def build_network(cfg: Mapping[str, Any], genotype: Any, num_classes: int, in_channels: int):
    """The evaluation network of ``cfg["network"]`` (``cifar``, ``imagenet`` or ``pyramidnet``:
    a tree genotype in a PyramidNet of ``pyramid_depth`` and ``pyramid_alpha``)."""
    from pyronas.evalnet import NetworkCIFAR, NetworkImageNet
    from pyronas.proxyless.tree import TreeGenotype

    if isinstance(genotype, TreeGenotype) != (cfg["network"] == "pyramidnet"):
        raise ValueError(
            "network 'pyramidnet' takes a tree genotype (pyronas-tree/1, e.g. TreeCell-A) and "
            "the cell networks take cell genotypes; got network "
            f"{cfg['network']!r} with a {'tree' if isinstance(genotype, TreeGenotype) else 'cell'}"
            " genotype"
        )
    if cfg["network"] == "pyramidnet":
        from pyronas.proxyless.pyramidnet import PyramidTreeNet

        return PyramidTreeNet(genotype, cfg["pyramid_depth"], cfg["pyramid_alpha"], num_classes,
                              in_channels)
    if cfg["network"] == "imagenet":
        if in_channels != 3:
            raise ValueError(f"the ImageNet network takes 3-channel images, got {in_channels}")
        return NetworkImageNet(
            genotype, cfg["C"], num_classes, cfg["layers"], cfg["auxiliary"], 0.0
        )
    return NetworkCIFAR(
        genotype,
        cfg["C"],
        num_classes,
        cfg["layers"],
        cfg["auxiliary"],
        0.0,
        in_channels,
        cfg["stem_multiplier"],
    )


def load_network_genotype(cfg: Mapping[str, Any]) -> Any:
    """``cfg["genotype"]`` as a tree genotype for ``network: pyramidnet``, else a cell one."""
    if cfg["network"] == "pyramidnet":
        from pyronas.proxyless.tree import load_tree_genotype

        return load_tree_genotype(cfg["genotype"])
    from pyronas.genotype import GenotypeError, load_genotype
    from pyronas.proxyless.draw import is_tree_genotype

    if is_tree_genotype(cfg["genotype"]):
        raise GenotypeError(f"{cfg['genotype']} is a tree genotype: retrain it with network: "
                            "pyramidnet (--network pyramidnet)")
    return load_genotype(cfg["genotype"])


def genotype_as_dict(genotype: Any) -> dict[str, Any]:
    """The JSON dict of a cell or tree genotype."""
    from pyronas.genotype import genotype_to_dict
    from pyronas.proxyless.tree import TreeGenotype, tree_genotype_to_dict

    if isinstance(genotype, TreeGenotype):
        return tree_genotype_to_dict(genotype)
    return genotype_to_dict(genotype)


def genotype_label(cfg: Mapping[str, Any]) -> str:
    """A short name for tables: ``cfg["name"]``, a bundled genotype's name, a file's stem (or
    its folder's name for a file called ``genotype.json``)."""
    if cfg.get("name"):
        return str(cfg["name"])
    value = str(cfg["genotype"])
    path = Path(value)
    if not path.is_file():
        return value
    if path.stem == "genotype":
        return path.resolve().parent.name
    return path.stem


def _search_cost(cfg: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """``search_seconds`` and ``search_device`` from the config, else from ``metrics.json`` next
    to a genotype file written by a search run."""
    if cfg.get("search_seconds") is not None:
        return float(cfg["search_seconds"]), cfg.get("search_device")
    path = Path(str(cfg["genotype"]))
    metrics = path.parent / "metrics.json"
    if path.is_file() and metrics.is_file():
        try:
            data = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None, None
        if isinstance(data, dict) and data.get("search_seconds") is not None:
            return float(data["search_seconds"]), data.get("search_device", data.get("device"))
    return None, None


# --------------------------------------------------------------------------------------------
# Devices and loops
# --------------------------------------------------------------------------------------------


def _autocast(device: torch.device, cfg: Mapping[str, Any]):
    if device.type == "cuda" and cfg["amp"]:
        dtype = torch.bfloat16 if cfg["amp_dtype"] == "bfloat16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _show_progress(cfg: Mapping[str, Any]) -> bool:
    return progress_enabled(cfg["progress"])


def _to_device(x: Tensor, y: Tensor, device: torch.device, channels_last: bool):
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    cfg: Mapping[str, Any] | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (%) of ``model`` (eval mode) over ``loader``.

    Returns
    -------
    dict
        ``top1``, ``top5`` (in %) and ``n`` (images seen).
    """
    cfg = dict(RETRAIN_DEFAULTS if cfg is None else cfg)
    was_training = model.training
    model.eval()
    correct1 = torch.zeros((), dtype=torch.long, device=device)
    correct5 = torch.zeros((), dtype=torch.long, device=device)
    n = 0
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = _to_device(x, y, device, cfg["channels_last"])
            with _autocast(device, cfg):
                logits, _ = model(x)
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hit = top == y[:, None]
            correct1 += hit[:, 0].sum()
            correct5 += hit.any(dim=1).sum()
            n += y.shape[0]
    finally:
        model.train(was_training)
    if n == 0:
        return {"top1": float("nan"), "top5": float("nan"), "n": 0}
    return {
        "top1": 100.0 * correct1.item() / n,
        "top5": 100.0 * correct5.item() / n,
        "n": n,
    }


def _check_finite(losses: list[Tensor], first_step: int, epoch: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first step whose loss is not finite."""
    if not losses:
        return
    finite = torch.isfinite(torch.stack(losses))
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0, 0])
    value = float(losses[bad])
    raise NonFiniteLossError(
        f"non-finite training loss ({value}) at epoch {epoch + 1}, step {first_step + bad + 1}"
    )


def _train_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    cfg: Mapping[str, Any],
    device: torch.device,
    epoch: int,
    ranks: Ranks | None = None,
) -> dict[str, float]:
    """One epoch of training; returns mean loss, accuracy (%), images, seconds.

    Under data parallelism (``ranks``) the figures are over all ranks' images, and a
    non-finite loss on any rank stops every rank at the same step.
    """
    ranks = ranks or Ranks()
    model.train()
    steps = len(loader)
    if cfg["max_steps_per_epoch"] is not None:
        steps = min(steps, int(cfg["max_steps_per_epoch"]))
    check_every = 1 if device.type == "cpu" else 25
    params = [p for p in model.parameters() if p.requires_grad]
    aux_weight = float(cfg["auxiliary_weight"])
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    pending: list[Tensor] = []
    pending_start = 0
    n = 0
    bar = None
    if _show_progress(cfg):
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg['epochs']}", leave=False)
    start = time.perf_counter()
    try:
        for step, (x, y) in enumerate(loader):
            if step >= steps:
                break
            x, y = _to_device(x, y, device, cfg["channels_last"])
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, cfg):
                logits, logits_aux = model(x)
                loss = criterion(logits, y)
                if logits_aux is not None and aux_weight > 0:
                    loss = loss + aux_weight * criterion(logits_aux, y)
            scaler.scale(loss).backward()
            if cfg["grad_clip"]:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, float(cfg["grad_clip"]))
            scaler.step(optimizer)
            scaler.update()
            batch = y.shape[0]
            n += batch
            loss_d = loss.detach().float()
            loss_sum += loss_d.double() * batch
            correct += (logits.detach().argmax(dim=1) == y).sum()
            pending.append(loss_d)
            if len(pending) >= check_every or step + 1 == steps:
                if ranks.distributed:  # the same verdict on every rank
                    pending = list(all_reduce_sum(torch.stack(pending), ranks))
                _check_finite(pending, pending_start, epoch)
                if bar is not None:
                    elapsed = time.perf_counter() - start
                    bar.update(len(pending))
                    bar.set_postfix(
                        loss=f"{float(loss_d):.3f}", img_s=f"{n / max(elapsed, 1e-9):.0f}"
                    )
                pending_start = step + 1
                pending = []
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    if ranks.distributed:
        totals = torch.stack([loss_sum, correct.double(),
                              torch.tensor(float(n), dtype=torch.float64, device=device)])
        all_reduce_sum(totals, ranks)
        loss_sum, correct, n = totals[0], totals[1].long(), int(totals[2].item())
    if n == 0:
        raise ValueError("the training loader yielded no batches")
    return {
        "train_loss": loss_sum.item() / n,
        "train_acc": 100.0 * correct.item() / n,
        "images": n,
        "seconds": seconds,
    }


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the data order of one epoch (independent of how the run was interrupted)."""
    return (int(seed) * 1_000_003 + epoch) % (2**63)


def _write_csv_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METRICS_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(text.getvalue(), path)


def _read_csv_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _fmt(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


@dataclass
class RetrainData:
    """The loaders of one retraining run.

    ``val`` is the held-out split that ``val_acc`` is measured on (the test split when
    ``val_fraction`` is 0, then ``eval_split == "test"``).
    """

    train: Any
    val: Any
    test: Any
    eval_split: str
    num_classes: int
    in_channels: int
    image_size: int


@dataclass
class Training:
    """What the epochs of a retraining run update: network, optimiser, schedule, scaler."""

    net: nn.Module
    model: nn.Module  # ``net`` or its ``torch.compile`` wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    use_scaler: bool
    criterion: nn.Module
    op_dropout: OpDropout | None
    params: int
    mult_adds: int


def _open_run_folder(
    out_dir: str | Path, resume: bool, overwrite: bool = False
) -> tuple[Path, Path | None]:
    """The run folder (created later, by the first file written) and its checkpoint.

    With ``overwrite`` the files of an earlier run are deleted first. Without ``resume`` a
    folder holding a checkpoint is refused, and so is one holding files of a run's names that
    pyronas did not write (no ``config.yaml`` with its ``run_info``). A retraining that stopped
    before its first checkpoint starts over.
    """
    out = Path(out_dir)
    if overwrite:
        removed = remove_artefacts(out)
        if removed:
            logger.info("--overwrite: deleted %s from %s", ", ".join(removed), out)
    existing = latest_checkpoint(out)
    if existing is not None and not resume:
        raise FileExistsError(
            f"{out} already holds a checkpoint; pass resume=True (--resume) to continue it, "
            "--overwrite to start over, or choose a new output folder"
        )
    found = find_artefacts(out)
    if existing is None and found and not _written_by_pyronas(out):
        raise RunFolderError(
            f"{out} holds {', '.join(found)}, not written by pyronas; choose a new output "
            "folder or pass --overwrite to replace them"
        )
    return out, existing


def _written_by_pyronas(out: Path) -> bool:
    """Whether ``out/config.yaml`` is a resolved config that pyronas wrote (with ``run_info``)."""
    import yaml

    try:
        data = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and isinstance(data.get("run_info"), dict)


def _configure_process(cfg: Mapping[str, Any]) -> torch.device:
    """Device, cuDNN flags, CPU threads and global seeds of the run."""
    device = resolve_device(cfg["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg["deterministic"]
        torch.backends.cudnn.deterministic = bool(cfg["deterministic"])
    if cfg["num_threads"] is not None:
        torch.set_num_threads(int(cfg["num_threads"]))
    seed_everything(int(cfg["seed"]))
    return device


def _num_workers(cfg: Mapping[str, Any], device: torch.device) -> int:
    workers = cfg["num_workers"]
    if workers == "auto":
        return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"num_workers must be 'auto' or an integer >= 0, got {workers!r}")
    return workers


def load_retrain_data(cfg: Mapping[str, Any], device: torch.device,
                      ranks: Ranks | None = None) -> RetrainData:
    """The data set of ``cfg`` split into train / val / test loaders (seeded by ``cfg["seed"]``).

    Under data parallelism (``ranks``) the train loader yields this rank's share of every
    global batch of ``batch_size`` (:class:`~pyronas.distributed.ShardedBatchSampler`); the
    evaluation loaders stay whole on every rank.
    """
    from torch.utils.data import DataLoader

    from pyronas.data import load_dataset, make_loader

    seed = int(cfg["seed"])
    fractions = (1.0 - cfg["val_fraction"], 0.0, cfg["val_fraction"])
    splits = load_dataset(
        cfg["dataset"],
        data_dir=cfg["data_dir"],
        download=cfg["download"],
        seed=seed,
        train_size=cfg["train_size"],
        image_size=cfg["image_size"],
        augment=cfg["augment"],
        cutout=cfg["cutout"] if cfg["augment"] else 0,
        fractions=fractions,
    )
    on_cuda = device.type == "cuda"
    workers = _num_workers(cfg, device)
    bs = int(cfg["batch_size"])
    eval_bs = int(cfg["eval_batch_size"] or 2 * bs)
    # a last batch of one image breaks batch norm in training mode
    drop_last = len(splits.train) % bs == 1
    train = make_loader(
        splits.train, bs, shuffle=True, seed=seed, num_workers=workers,
        pin_memory=on_cuda, drop_last=drop_last,
    )  # fmt: skip
    if ranks is not None and ranks.distributed:
        # the same generator draws the same global order as the single-process loader
        rest = len(splits.train) % bs
        # each rank needs two images or more of a last, partial batch (batch norm)
        sampler = ShardedBatchSampler(len(splits.train), bs, ranks, train.generator,
                                      drop_last=0 < rest < 2 * ranks.world_size)
        train = DataLoader(splits.train, batch_sampler=sampler, num_workers=workers,
                           pin_memory=on_cuda, generator=train.generator,
                           persistent_workers=workers > 0)
    test = make_loader(splits.test, eval_bs, False, seed, num_workers=workers, pin_memory=on_cuda)
    val, eval_split = test, "test"
    if cfg["val_fraction"] > 0:
        val = make_loader(splits.val, eval_bs, False, seed, num_workers=workers,
                          pin_memory=on_cuda)  # fmt: skip
        eval_split = "val"
    return RetrainData(train, val, test, eval_split, splits.num_classes, splits.in_channels,
                       splits.image_size)  # fmt: skip


def build_training(
    cfg: Mapping[str, Any], genotype: Any, data: RetrainData, device: torch.device,
    ranks: Ranks | None = None,
) -> Training:
    """The evaluation network of ``genotype`` on ``device`` and its optimiser and schedule.

    Under data parallelism (``ranks``) ``model`` is the network wrapped in
    DistributedDataParallel (batch norms synchronised over the ranks); ``net`` stays the plain
    network whose state dict the checkpoints hold.
    """
    from pyronas.evalnet import count_mult_adds, count_parameters

    if cfg["variant"] == "authors" and (cfg["auxiliary"] or cfg["drop_path_prob"] > 0):
        logger.warning(
            "variant 'authors' normally runs without auxiliary head and drop path "
            "(auxiliary=%s, drop_path_prob=%s here)", cfg["auxiliary"], cfg["drop_path_prob"]
        )
    net = build_network(cfg, genotype, data.num_classes, data.in_channels)
    op_dropout = OpDropout(net) if cfg["variant"] == "authors" else None
    params = count_parameters(net, exclude_auxiliary=True)
    mult_adds = count_mult_adds(net, (data.in_channels, data.image_size, data.image_size))
    net = net.to(device)
    if cfg["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    model: nn.Module = net
    if ranks is not None and ranks.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = distributed.synchronise_batchnorm(net, device)  # global-batch statistics
        model = DistributedDataParallel(
            net, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=bool(cfg["drop_path_prob"] > 0 or op_dropout is not None),
        )  # fmt: skip
    if cfg["compile"]:
        model = torch.compile(model)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
    )
    epochs = int(cfg["epochs"])
    if cfg["lr_schedule"] == "cosine":
        scheduler: torch.optim.lr_scheduler.LRScheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=cfg["lr_min"])
        )
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, int(cfg["lr_step_size"]), gamma=cfg["lr_gamma"]
        )
    use_scaler = device.type == "cuda" and cfg["amp"] and cfg["amp_dtype"] == "float16"
    return Training(
        net=net,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda", enabled=use_scaler),
        use_scaler=use_scaler,
        criterion=nn.CrossEntropyLoss(label_smoothing=float(cfg["label_smoothing"])),
        op_dropout=op_dropout,
        params=params,
        mult_adds=mult_adds,
    )


def _restore(
    checkpoint: Path, ident: dict[str, Any], training: Training, data: RetrainData
) -> tuple[int, float]:
    """Load a checkpoint into ``training``; return the epochs done and the seconds spent."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    check_identity(state["identity"], ident, where=str(checkpoint))
    saved_classes = state.get("num_classes")
    if saved_classes is not None and int(saved_classes) != data.num_classes:
        raise CheckpointMismatchError(
            f"refusing to resume from {checkpoint}: its network has {saved_classes} classes, "
            f"the data set now has {data.num_classes}. Resume with the original data or start "
            "a new run folder."
        )
    try:
        training.net.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointMismatchError(
            f"refusing to resume from {checkpoint}: its weights do not fit the network of this "
            f"configuration ({first})"
        ) from err
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") and training.use_scaler:
        training.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"], data.train.generator)
    return int(state["epoch"]), float(state.get("elapsed", 0.0))


def _save(
    path: Path, epoch: int, elapsed: float, ident: dict[str, Any], training: Training,
    data: RetrainData,
) -> None:  # fmt: skip
    save_checkpoint(
        {
            "epoch": epoch,
            "model": training.net.state_dict(),
            "optimizer": training.optimizer.state_dict(),
            "scheduler": training.scheduler.state_dict(),
            "scaler": training.scaler.state_dict() if training.use_scaler else None,
            "rng": capture_rng_state(data.train.generator),
            "identity": ident,
            "config_hash": config_hash(ident, ident.keys()),
            "elapsed": elapsed,
            "num_classes": data.num_classes,
        },
        path,
    )


def _train_one_epoch(
    cfg: Mapping[str, Any], epoch: int, training: Training, data: RetrainData,
    device: torch.device, ranks: Ranks | None = None,
) -> tuple[dict[str, Any], float]:  # fmt: skip
    """One epoch with its drop-path / op-dropout ramps; the metrics row and the val accuracy."""
    epochs = int(cfg["epochs"])
    t0 = time.perf_counter()
    training.net.drop_path_prob = float(cfg["drop_path_prob"]) * epoch / epochs
    if training.op_dropout is not None:
        training.op_dropout.p = float(cfg["op_dropout"]) * epoch / epochs
    if data.train.generator is not None:
        data.train.generator.manual_seed(_epoch_seed(int(cfg["seed"]), epoch))
    lr = training.optimizer.param_groups[0]["lr"]
    stats = _train_epoch(training.model, data.train, training.optimizer, training.scaler,
                         training.criterion, cfg, device, epoch, ranks=ranks)  # fmt: skip
    chance = math.log(data.num_classes)
    if stats["train_loss"] > EXPLODED_LOSS * chance:
        raise NonFiniteLossError(
            f"the training loss exploded to {stats['train_loss']:.4g} in epoch {epoch + 1} "
            f"(chance level is {chance:.2f})"
        )
    val_acc = float("nan")
    if epoch + 1 == epochs or (epoch + 1) % max(1, int(cfg["eval_every"])) == 0:
        val_acc = evaluate(training.model, data.val, device, cfg, cfg["max_eval_batches"])["top1"]
    training.scheduler.step()
    seconds = time.perf_counter() - t0
    row = {
        "epoch": epoch + 1,
        "train_loss": _fmt(stats["train_loss"]),
        "train_acc": _fmt(stats["train_acc"]),
        "val_acc": _fmt(val_acc),
        "eval_split": data.eval_split,
        "lr": _fmt(lr),
        "seconds": _fmt(seconds),
        "images_per_s": _fmt(stats["images"] / max(stats["seconds"], 1e-9)),
    }
    logger.info(
        "epoch %d/%d: loss %.4f, train acc %.2f%%, %s acc %s, lr %.5g, %.1f s",
        epoch + 1, epochs, stats["train_loss"], stats["train_acc"], data.eval_split,
        "-" if math.isnan(val_acc) else f"{val_acc:.2f}%", lr, seconds,
    )  # fmt: skip
    return row, val_acc


def _final_metrics(
    cfg: Mapping[str, Any], test: dict[str, Any], training: Training, data: RetrainData,
    device: torch.device, elapsed: float, rows: list[dict[str, Any]], val_acc: float,
    ident: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The contents of ``metrics.json``."""
    search_seconds, search_device = _search_cost(cfg)
    metrics: dict[str, Any] = {
        "genotype": genotype_label(cfg),
        "dataset": cfg["dataset"],
        "network": cfg["network"],
        "variant": cfg["variant"],
        "seed": int(cfg["seed"]),
        "epochs": int(cfg["epochs"]),
        "test_error": 100.0 - test["top1"],
        "test_acc": test["top1"],
        "test_images": test["n"],
        "params": training.params,
        "params_M": training.params / 1e6,
        "mult_adds": training.mult_adds,
        "mult_adds_M": training.mult_adds / 1e6,
        "wall_time_s": elapsed,
        "device": device.type,
        "device_name": device_name(device),
        "final_train_loss": float(rows[-1]["train_loss"]) if rows else None,
        "final_val_acc": None if math.isnan(val_acc) else val_acc,
        "final_val_split": data.eval_split,
        "config_hash": config_hash(ident, ident.keys()),
    }
    if cfg["network"] == "imagenet":
        metrics["test_top5_error"] = 100.0 - test["top5"]
        metrics["test_top5_acc"] = test["top5"]
    if search_seconds is not None:
        metrics["search_seconds"] = search_seconds
        metrics["search_device"] = search_device
    return metrics


def retrain(
    cfg: Mapping[str, Any], out_dir: str | Path, resume: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Train a genotype's evaluation network from scratch and score it on the test split.

    Parameters
    ----------
    cfg
        Config (see :data:`pyronas.config.RETRAIN_DEFAULTS`; missing keys take the defaults,
        unknown keys are an error).
    out_dir
        Run folder; created if needed. Without ``resume`` it must not hold a checkpoint.
    resume
        Continue from ``out_dir/checkpoint.pt`` (refused if its config identity differs);
        without a checkpoint the run starts from scratch.
    overwrite
        Delete the files of an earlier run in ``out_dir`` first (other files stay).

    Returns
    -------
    dict
        The contents of ``metrics.json``; if the run stopped early (``stop_after_epoch``), a
        dict with ``stopped: True`` and ``epochs_done``.

    Raises
    ------
    NonFiniteLossError
        The loss became NaN/inf; names the epoch and step; the last checkpoint is kept.
    pyronas.checkpoint.CheckpointMismatchError
        ``resume`` with a checkpoint written under another configuration.
    FileExistsError
        ``out_dir`` holds a checkpoint but ``resume`` is False.
    pyronas.runs.RunFolderError
        ``out_dir`` holds files of a run's names that pyronas did not write.
    """
    cfg = merge_config(RETRAIN_DEFAULTS, cfg)
    genotype = load_network_genotype(cfg)
    device = _configure_process(cfg)
    ranks, device = distributed.start(device)
    if ranks.is_main:
        out, existing = _open_run_folder(out_dir, resume, overwrite)
    barrier(ranks)  # rank 0 has checked (and with overwrite cleared) the folder
    if not ranks.is_main:
        out, existing = Path(out_dir), latest_checkpoint(Path(out_dir))
        cfg = {**cfg, "progress": False}
        logging.getLogger("pyronas").setLevel(logging.WARNING)
    ident = identity(cfg)
    ident["genotype"] = json.dumps(genotype_as_dict(genotype), sort_keys=True)
    data = load_retrain_data(cfg, device, ranks)
    training = build_training(cfg, genotype, data, device, ranks)
    try:
        return _run_epochs(cfg, out, existing, resume, ranks, device, ident, data, training)
    finally:
        if ranks.distributed:
            distributed.stop()


def _run_epochs(
    cfg: Mapping[str, Any], out: Path, existing: Path | None, resume: bool, ranks: Ranks,
    device: torch.device, ident: dict[str, Any], data: RetrainData, training: Training,
) -> dict[str, Any]:  # fmt: skip
    """The epochs of :func:`retrain`, its checkpoints and ``metrics.json`` (rank 0 writes)."""
    epochs = int(cfg["epochs"])
    start_epoch, elapsed = 0, 0.0
    csv_path = out / "metrics.csv"
    rows: list[dict[str, Any]] = []
    if resume and existing is not None:
        start_epoch, elapsed = _restore(existing, ident, training, data)
        rows = [r for r in _read_csv_rows(csv_path) if int(r["epoch"]) <= start_epoch]
        logger.info("resuming %s after epoch %d of %d", out, start_epoch, epochs)
    elif resume and ranks.is_main:
        logger.warning("no checkpoint in %s; starting from scratch", out)
    if ranks.is_main:
        save_resolved_config(cfg, out)
        _write_csv_rows(csv_path, rows)

    logger.info(
        "retraining %s on %s (%s): %.3f M params, %.1f M mult-adds, %d epochs",
        genotype_label(cfg), cfg["dataset"], device_name(device), training.params / 1e6,
        training.mult_adds / 1e6, epochs,
    )  # fmt: skip
    val_acc = float("nan")
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        try:
            row, val_acc = _train_one_epoch(cfg, epoch, training, data, device, ranks)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"{err}; {_kept(out, epoch)}. {_nan_advice(cfg)}") from err
        except (RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err):
                raise
            raise RetrainOutOfMemoryError(_oom_advice(cfg, device, epoch, out)) from err
        elapsed += time.perf_counter() - t0
        rows.append(row)
        if ranks.is_main:
            _write_csv_rows(csv_path, rows)
            _save(out / CHECKPOINT_NAME, epoch + 1, elapsed, ident, training, data)
        stop = cfg["stop_after_epoch"]
        if stop is not None and epoch + 1 >= int(stop) and epoch + 1 < epochs:
            logger.info("stopping after epoch %d (stop_after_epoch); resume to go on", epoch + 1)
            return {"stopped": True, "epochs_done": epoch + 1}

    t0 = time.perf_counter()
    test = evaluate(training.model, data.test, device, cfg, cfg["max_eval_batches"])
    elapsed += time.perf_counter() - t0
    metrics = _final_metrics(cfg, test, training, data, device, elapsed, rows, val_acc, ident)
    metrics["world_size"] = ranks.world_size
    if ranks.is_main:
        atomic_write_text(json.dumps(metrics, indent=2) + "\n", out / "metrics.json")
    barrier(ranks)  # metrics.json is there before any rank returns
    logger.info("test error %.2f%% (%s)", metrics["test_error"], out)
    return metrics


def _kept(out: Path, epoch: int) -> str:
    """What survives a run stopped in ``epoch`` (0-based)."""
    if epoch == 0:
        return "no epoch finished, so there is no checkpoint to keep"
    return f"the checkpoint of epoch {epoch} and metrics.csv are kept in {out}"


def _nan_advice(cfg: Mapping[str, Any]) -> str:
    """What to try after a non-finite loss."""
    lr = float(cfg["lr"])
    clip = "" if cfg["grad_clip"] else " or turn on gradient clipping (grad_clip: 5)"
    return (f"Try a smaller learning rate (lr: {lr / 10:g} instead of {lr:g} in the config)"
            f"{clip}, in a new run folder")


def _oom_advice(cfg: Mapping[str, Any], device: torch.device, epoch: int, out: Path) -> str:
    """The message of :class:`RetrainOutOfMemoryError`."""
    bs = int(cfg["batch_size"])
    return (f"out of memory on {device.type} at batch size {bs} in epoch {epoch + 1}: try "
            f"--batch-size {max(1, bs // 2)}; {_kept(out, epoch)}")


DATASET_PRESETS: dict[str, str] = {
    "cifar10": "retrain_cifar10",
    "imagenet": "retrain_imagenet",
    "digits": "retrain_digits",
    "fashion-mnist": "retrain_fashion_mnist",
}
"""The preset used by ``pyronas retrain --dataset NAME`` without ``--config``."""


def resolved_config(config: str | Path | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The validated config of ``pyronas retrain``: the file (or the data set's preset, see
    :func:`run_retrain_cli`) with the command-line keys over it (``out``, ``resume`` and
    ``overwrite`` are not config keys and are ignored here)."""
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()
                 if k not in ("out", "resume", "overwrite")}
    if config is not None:
        return load_config(config, overrides)
    dataset = str(overrides.get("dataset", "cifar10"))
    preset = DATASET_PRESETS.get(dataset, "retrain_cifar10")
    if dataset not in DATASET_PRESETS:
        logger.warning(
            "no retraining preset for data set %r: using %s (the CIFAR-10 protocol, sized for "
            "32 x 32 images and hundreds of epochs); pass --config retrain_digits or "
            "retrain_fashion_mnist for small images, or a YAML file of your own", dataset,
            preset,
        )  # fmt: skip
    try:
        preset_path(preset)
    except ConfigError:
        logger.warning("preset %s not found; using the built-in defaults", preset)
        preset = None
    return load_config(preset, overrides)


def run_retrain_cli(config: str | Path | None, overrides: Mapping[str, Any]) -> int:
    """Entry point of ``pyronas retrain``: resolve the config, retrain, print the metrics.

    Parameters
    ----------
    config
        YAML file or preset name; None picks the preset of ``overrides["dataset"]`` (see
        :data:`DATASET_PRESETS`; CIFAR-10 by default), or the built-in defaults if the presets
        are not available (an installed, non-editable package).
    overrides
        Config keys given on the command line, plus ``out`` (run folder), ``resume`` and
        ``overwrite``.
    """
    out = overrides.get("out")
    resume = bool(overrides.get("resume", False))
    overwrite = bool(overrides.get("overwrite", False))
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out, --overwrite replaces it: "
                          "pass one of them")
    cfg = resolved_config(config, overrides)
    if out is None:
        label = genotype_label(cfg)
        out = Path("runs") / "retrain" / f"{label}_{cfg['dataset']}_seed{cfg['seed']}"
    if resume and latest_checkpoint(Path(out)) is None:
        raise RunFolderError(
            f"--resume: {out} holds no checkpoint to continue from; run without --resume to "
            "start a new run there"
        )
    metrics = retrain(cfg, out, resume=resume, overwrite=overwrite)
    print(json.dumps(metrics, indent=2))
    print(f"run folder: {out}")
    return 0
