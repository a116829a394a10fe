"""A compression run: the BayesNAS engine over groups of network weights, then physical pruning.

:func:`run_compress` trains a network (:mod:`pyronas.compress.networks`) densely, then runs the
generic type-II loop :func:`pyronas.inference.type2.run_type2` with the group-HARD prior
(:mod:`pyronas.models.group_hard`), whose sites are the network's weight tensors: MAP epochs with
the proximal group-lasso step, curvature of the mean loss per weight, diagonal Laplace fit,
closed-form ARD update per output and input unit, pruning of the groups whose variance reached
zero. The dead units are then removed physically (:func:`pyronas.compress.surgery.prune_units`)
and the smaller network is fine-tuned briefly.

A hidden unit of layer ``L`` is dead when its output group (row / filter of ``L``) or all its
input groups in layer ``L + 1`` (columns / channels, ``in_block`` columns per filter after a
flatten) are; the prior links the two so they die together. Input features of the first layer
go with their column group (``prune_inputs``); the classifier keeps its outputs (the classes).
A linear layer after a flatten also loses the single columns (positions of a live channel's
feature map) whose input group died: a selection in front of it reads only the live ones.

Run folder::

    config.yaml          the settings and run information
    metrics.csv          one row per type-II iteration: iteration, log_evidence,
                         train_objective, val_acc, units_<layer> (alive output units; inputs for
                         the first layer's ``units_input``), weights_kept, seconds
    posterior.pt         the weight posterior (format pyronas-compress-posterior/1, see
                         :func:`posterior_dict`)
    posterior.nc         its ArviZ export, dims named after layers and units
                         (:func:`pyronas.compress.report.compress_to_arviz`)
    pruned_state.pt      state dict of the pruned, fine-tuned network
    architecture.json    its architecture (:func:`pyronas.compress.networks.describe_network`)
    metrics.json         dense and pruned sizes, FLOPs, test errors, wall time
    dense.pt             the dense network after its training and the random generators'
                         states at that point (format pyronas-compress-dense/1): a run
                         stopped later restarts from it in the same folder, and
                         ``dense_from`` gives it to other runs (:data:`DENSE_KEYS` must agree);
                         either way the run computes what it would have computed uninterrupted
    type2.pt             the type-II loop after its latest iteration (format
                         pyronas-compress-type2/1: the network, the weight sites, masks,
                         hyperparameters, optimiser and random generators): a run stopped
                         inside or after the loop restarts from it in the same folder when
                         the :data:`LOOP_KEYS` agree (``t_max`` may grow); with other loop
                         settings the loop starts again from the dense network
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pyronas.arviz_export import save_arviz
from pyronas.checkpoint import identity, load_checkpoint, save_checkpoint
from pyronas.compress.baselines import (
    FineTune,
    evaluate,
    fine_tune,
    magnitude_prune,
    structured_prune,
)
from pyronas.compress.networks import (
    NETWORKS,
    PrunableLayer,
    build_network,
    describe_network,
    prunable_layers,
)
from pyronas.compress.report import POSTERIOR_FORMAT, compress_to_arviz
from pyronas.compress.surgery import count_flops, count_weights, prune_units
from pyronas.config import save_resolved_config
from pyronas.data import DeviceBatches, check_dataset_name, load_dataset, make_loader
from pyronas.dataclass_flags import check_setting_keys
from pyronas.distributed import refuse_data_parallel
from pyronas.inference import BACKENDS
from pyronas.inference.type2 import Type2Config, Type2State, run_type2
from pyronas.models import group_hard
from pyronas.run_setup import SeedStreams, capture_run_rng, restore_run_rng
from pyronas.runs import MetricsCSV, atomic_write_bytes, atomic_write_text
from pyronas.runtime import progress_enabled, resolve_device, seed_everything

log = logging.getLogger(__name__)

__all__ = [
    "POSTERIOR_FORMAT",
    "CompressResult",
    "CompressSettings",
    "alive_units",
    "posterior_dict",
    "pruned_weight_masks",
    "run_compress",
    "weight_spec",
]


FINETUNE_FROM = ("map", "dense")
"""Where the pruned network's fine-tuning starts (:class:`CompressSettings`)."""

DENSE_CHECKPOINT = "dense.pt"
"""The dense network's checkpoint in a run folder."""

DENSE_FORMAT = "pyronas-compress-dense/1"

DENSE_KEYS = ("network", "dataset", "train_size", "fractions", "seed", "batch_size",
              "pretrain_epochs", "pretrain_schedule", "lr", "momentum", "weight_decay",
              "max_batches")
"""The settings that decide the dense network and the random streams after it: a dense
checkpoint serves a run only when these agree (``data_dir`` and ``device`` may differ)."""

LOOP_CHECKPOINT = "type2.pt"
"""The type-II loop's checkpoint in a run folder, rewritten after every iteration."""

LOOP_FORMAT = "pyronas-compress-type2/1"

LOOP_KEYS = DENSE_KEYS + ("map_lr", "epochs_per_iter", "backend", "curvature_batches",
                          "threshold", "lambda_weight", "curvature_multiplier",
                          "ard_iterations", "prune_inputs", "prune_weights", "group_prices")
"""The settings that decide the type-II loop's iterations: a run continues its folder's loop
checkpoint only when these agree. The others (``t_max``, which may grow, the fine-tuning, the
baselines, ``device``, ``data_dir``, ``dense_from``) act after the loop or not on its numbers."""


@dataclass(frozen=True)
class CompressSettings:
    """Everything a compression run reads; every choice is checked when built.

    Attributes
    ----------
    network, dataset, data_dir, train_size, fractions
        The network (:data:`~pyronas.compress.networks.NETWORKS`), the data set and how it is
        split (``(train, search, val)`` shares of the official training set; ``search`` gives
        the curvature batches).
    seed, device, out
        Root seed of the run's streams, ``auto`` / ``cpu`` / ``cuda``, the run folder.
    batch_size, pretrain_epochs, lr, momentum, weight_decay
        Dense training before the type-II loop (SGD), and the SGD of its MAP epochs.
    pretrain_schedule
        The dense training's learning rate: ``constant`` at ``lr``, or ``cosine`` from ``lr``
        to 0 (a dense network trained to convergence, so that fine-tuning after pruning
        gains nothing from extra training alone).
    t_max, epochs_per_iter, backend, curvature_batches, threshold
        The type-II loop (:class:`~pyronas.inference.type2.Type2Config`).
    map_lr
        Learning rate of the loop's MAP epochs (``None``: ``lr``); a lower rate moves the
        weights less from the dense ones, and prunes less (docs/results.md).
    lambda_weight, curvature_multiplier, ard_iterations, prune_inputs
        The group-HARD prior's options; ``prune_inputs`` groups the first layer's inputs too.
    prune_weights
        Also give every weight its own variance (the ``weight`` grouping: unstructured ARD on
        top of the units): single weights are pruned inside the units that stay, kept at zero
        while fine-tuning, and counted as removed (the pruned network stores them as zeros).
    group_prices
        ``{"LAYER:GROUPING": price}`` (grouping ``out``, ``in`` or ``weight``, price > 0):
        that grouping's group-lasso weights are multiplied by the price in the type-II update
        (above 1: its units pruned harder; e.g. ``{"fc1:in": 0.3}`` prices the input pixels
        below the hidden units, ``{"conv1:out": 4}`` prunes the first filters harder).
    max_units
        ``{"LAYER": m}``: after the type-II loop, a hidden layer that keeps more than ``m``
        units also loses its live units of smallest group variance (the prior's least
        relevant ones) beyond ``m``; a hardware rule on top of the posterior's choice, off by
        default (on this CPU conv2 runs at ~60 % of its rate with 17 input channels
        instead of 16: docs/results.md).
    finetune_epochs, finetune_lr, finetune_schedule
        Fine-tuning of the pruned network (and of the baselines): ``constant`` at
        ``finetune_lr``, or ``cosine`` from it to 0.
    finetune_distill, distill_temperature
        Weight in ``[0, 1]`` of knowledge distillation from the dense network in the
        fine-tuning of ours and of the baselines (the loss is ``(1 - w) * CE + w * T^2 *
        KL`` at temperature ``T``; 0: plain cross-entropy).
    finetune_from
        The weights the pruned network starts fine-tuning from: ``map`` (those of the type-II
        loop's last MAP epoch, shrunk by its group lasso) or ``dense`` (the dense network's, cut
        to the architecture and weight masks the prior chose: the prior selects, the dense
        training supplies the weights, as the magnitude baselines do).
    baselines
        Also prune the dense network by magnitude (global, unstructured, to the same number of
        weights) and by unit norm (structured, to the same hidden units and, after a flatten,
        as many input positions by column norm), each fine-tuned for
        the epochs this run trained after the dense phase (``t_max * epochs_per_iter +
        finetune_epochs``, at ``finetune_lr`` with ``finetune_schedule``); their test errors
        go into ``metrics.json``.
    scratch_baseline
        Also train the pruned architecture from fresh weights with the dense phase's budget
        (``pretrain_epochs`` at ``lr`` with ``pretrain_schedule``): what the architecture reaches
        without the weights the prior kept (its test error goes into ``metrics.json``).
    max_batches
        At most this many batches per epoch (``None``: all; small values for smoke runs).
    dense_from
        A run folder (or its ``dense.pt``) whose dense network this run starts from instead of
        training its own; the :data:`DENSE_KEYS` settings must agree, and the random streams
        continue from where that run's dense phase left them, so the run computes exactly what
        it would have with its own dense phase (a lambda sweep trains the network once).
    progress
        Progress bars for the epochs of the dense training, the type-II loop and the
        fine-tuning (on a terminal only; ``PYRONAS_NO_PROGRESS`` turns them off).
    """

    network: str = "lenet300"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    train_size: int | None = None
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    batch_size: int = 128
    pretrain_epochs: int = 5
    pretrain_schedule: str = "constant"
    lr: float = 0.05
    map_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    t_max: int = 4
    epochs_per_iter: int = 1
    backend: str = "ggn_lean"
    curvature_batches: int = 4
    threshold: float = 1e-12
    lambda_weight: float = 1e-6
    curvature_multiplier: float = 1.0
    ard_iterations: int = 2000
    prune_inputs: bool = True
    prune_weights: bool = False
    group_prices: dict[str, float] = dataclasses.field(default_factory=dict)
    max_units: dict[str, int] = dataclasses.field(default_factory=dict)
    finetune_epochs: int = 2
    finetune_lr: float = 0.01
    finetune_schedule: str = "constant"
    finetune_distill: float = 0.0
    distill_temperature: float = 4.0
    finetune_from: str = "map"
    baselines: bool = False
    scratch_baseline: bool = False
    max_batches: int | None = None
    dense_from: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"unknown network {self.network!r}; choose one of "
                             f"{', '.join(NETWORKS)}")
        check_dataset_name(self.dataset)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown curvature backend {self.backend!r}; known: "
                             f"{', '.join(sorted(BACKENDS))}")
        counts = {"batch_size": self.batch_size, "t_max": self.t_max,
                  "epochs_per_iter": self.epochs_per_iter,
                  "curvature_batches": self.curvature_batches}
        for name, value in counts.items():
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        FineTune(schedule=self.pretrain_schedule)  # an unknown schedule fails here
        FineTune(schedule=self.finetune_schedule)
        if not 0.0 <= self.finetune_distill <= 1.0:
            raise ValueError(f"finetune_distill must be in [0, 1] (the weight of the "
                             f"distillation term), got {self.finetune_distill!r}")
        if not self.distill_temperature > 0:
            raise ValueError(f"distill_temperature must be positive, got "
                             f"{self.distill_temperature!r}")
        if self.finetune_from not in FINETUNE_FROM:
            raise ValueError(f"finetune_from must be one of {', '.join(FINETUNE_FROM)}, got "
                             f"{self.finetune_from!r}")
        for name in ("pretrain_epochs", "finetune_epochs"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches must be positive or None, got {self.max_batches}")
        if self.map_lr is not None and not self.map_lr > 0:
            raise ValueError(f"map_lr must be positive or None, got {self.map_lr!r}")
        for name in ("lr", "lambda_weight", "curvature_multiplier", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        object.__setattr__(self, "fractions", tuple(self.fractions))
        prices = {}
        for key, price in dict(self.group_prices or {}).items():
            layer, _, grouping = str(key).partition(":")
            if not layer or grouping not in group_hard.GROUPINGS:
                raise ValueError(f"group_prices key {key!r}: expected 'LAYER:out', 'LAYER:in' "
                                 "or 'LAYER:weight'")
            if not isinstance(price, int | float) or not price > 0:
                raise ValueError(f"group_prices[{key!r}] must be a positive number, got "
                                 f"{price!r}")
            prices[f"{layer}:{grouping}"] = float(price)
        object.__setattr__(self, "group_prices", prices)
        caps = {}
        for layer, cap in dict(self.max_units or {}).items():
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                raise ValueError(f"max_units[{layer!r}] must be a positive integer, got "
                                 f"{cap!r}")
            caps[str(layer)] = cap
        object.__setattr__(self, "max_units", caps)

    @classmethod
    def from_mapping(cls, values: CompressSettings | Mapping[str, Any]) -> CompressSettings:
        """Settings from a flat mapping; an unknown key names the closest valid one."""
        if isinstance(values, CompressSettings):
            return values
        check_setting_keys(cls, values, "compression")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (``config.yaml``)."""
        data = dataclasses.asdict(self)
        data["fractions"] = list(self.fractions)
        data["group_prices"] = dict(self.group_prices)
        data["max_units"] = dict(self.max_units)
        return data


@dataclass
class CompressResult:
    """What :func:`run_compress` returns: the run folder, the pruned network, the metrics."""

    out: Path
    net: nn.Module
    metrics: dict[str, Any]
    state: Type2State


def weight_spec(layers: list[PrunableLayer], net: nn.Module, prune_inputs: bool = True,
                group_prices: Mapping[str, float] | None = None, prune_weights: bool = False
                ) -> dict[str, Any]:
    """The group-HARD options of a network: weight shapes, groupings, links and prices.

    The classifier is grouped by its inputs only, the first layer by its outputs and (with
    ``prune_inputs``) its inputs, every other layer by both; consecutive layers are linked.
    ``prune_weights`` adds the ``weight`` grouping (one variance per weight) to every layer.

    Parameters
    ----------
    group_prices
        ``{"LAYER:GROUPING": price}`` (:class:`CompressSettings`).

    Returns
    -------
    dict
        ``{"weights": {site: shape}, "groupings": {site: names}, "links": [(a, b), ...],
        "prices": {site: {grouping: price}}}`` with ``site = f"{layer.name}.weight"``.

    Raises
    ------
    ValueError
        A price for a layer the network does not have, or for a grouping the layer is not
        grouped by (the classifier's outputs, the first layer's inputs without
        ``prune_inputs``).
    """
    sites = [f"{layer.name}.weight" for layer in layers]
    weights = {s: tuple(net.get_submodule(layer.name).weight.shape)
               for s, layer in zip(sites, layers, strict=True)}
    groupings = {s: ("out", "in") for s in sites}
    if not prune_inputs:
        groupings[sites[0]] = ("out",)
    groupings[sites[-1]] = ("in",)
    if len(sites) == 1:
        groupings[sites[0]] = ("in",) if prune_inputs else ()
    if prune_weights:
        groupings = {s: (*names, "weight") for s, names in groupings.items()}
    links = list(zip(sites[:-1], sites[1:], strict=True))
    prices: dict[str, dict[str, float]] = {}
    for key, price in (group_prices or {}).items():
        layer, _, grouping = key.partition(":")
        site = f"{layer}.weight"
        if site not in weights:
            raise ValueError(f"group_prices names the layer {layer!r}; the network's prunable "
                             f"layers: {', '.join(x.name for x in layers)}")
        if grouping not in groupings[site]:
            raise ValueError(f"group_prices[{key!r}]: layer {layer!r} is grouped by "
                             f"{list(groupings[site])} only"
                             + (" (the weight grouping needs prune_weights)"
                                if grouping == "weight" else ""))
        prices.setdefault(site, {})[grouping] = float(price)
    return {"weights": weights, "groupings": groupings, "links": links, "prices": prices}


def alive_units(hypers: Mapping[str, Any], layers: list[PrunableLayer]
                ) -> tuple[dict[str, Tensor], Tensor | None]:
    """``(alive_out, alive_in)`` for :func:`~pyronas.compress.surgery.prune_units`.

    A hidden unit lives when its output group and at least one of the input groups it feeds
    in the next layer live; ``alive_in`` are the first layer's live input groups (``None``
    when they are not grouped).
    """
    alive_out = {}
    for layer, after in zip(layers[:-1], layers[1:], strict=True):
        own = group_hard.alive_units(hypers, f"{layer.name}.weight")["out"]
        fed = group_hard.alive_units(hypers, f"{after.name}.weight")["in"]
        alive_out[layer.name] = own & fed.reshape(layer.out_units, -1).any(1)
    first = group_hard.alive_units(hypers, f"{layers[0].name}.weight")
    return alive_out, first.get("in")


def cap_units(alive_out: Mapping[str, Tensor], hypers: Mapping[str, Any],
              caps: Mapping[str, int]) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Keep at most ``caps[layer]`` live units in some layers (:class:`CompressSettings`'s
    ``max_units``).

    Parameters
    ----------
    alive_out
        ``{layer: bool (out_units,)}`` from :func:`alive_units`.
    hypers
        The group-HARD hyperparameters; ``gamma_group[f"{layer}.weight"]["out"]`` ranks the
        live units.
    caps
        ``{layer: m}``; a layer with ``k > m`` live units keeps the ``m`` of largest group
        variance (ties: the lower index stays).

    Returns
    -------
    (alive_out, dropped)
        The new live units, and ``{layer: units dropped}`` for the layers that lost some.
    """
    capped, dropped = dict(alive_out), {}
    for layer, cap in caps.items():
        alive = alive_out[layer]
        extra = int(alive.sum()) - cap
        if extra <= 0:
            continue
        variance = hypers["gamma_group"][f"{layer}.weight"]["out"].detach().cpu().tolist()
        live = [i for i, on in enumerate(alive.tolist()) if on]
        keep = torch.zeros_like(alive)
        keep[sorted(live, key=lambda i: (-variance[i], i))[:cap]] = True
        capped[layer], dropped[layer] = keep, extra
    return capped, dropped


def alive_columns(hypers: Mapping[str, Any], layers: list[PrunableLayer]) -> dict[str, Tensor]:
    """``alive_columns`` for :func:`~pyronas.compress.surgery.prune_units`: the live input groups
    of every linear layer after a flatten (``in_block > 1``) where the prior switched off single
    positions of a live channel's feature map (``{layer: bool (in_features,)}``; a layer whose
    dead columns all belong to dead channels needs no entry)."""
    out = {}
    for before, layer in zip(layers[:-1], layers[1:], strict=True):
        groups = group_hard.alive_units(hypers, f"{layer.name}.weight")
        if layer.in_block == 1 or "in" not in groups:
            continue
        own = groups["in"]
        channel = group_hard.alive_units(hypers, f"{before.name}.weight")["out"]
        live_channel = own.reshape(before.out_units, -1).any(1) & channel
        if not bool(own.reshape(before.out_units, -1)[live_channel].all()):
            out[layer.name] = own
    return out


def pruned_weight_masks(net: nn.Module, masks: Mapping[str, Tensor], layers: list[PrunableLayer],
                       alive_out: Mapping[str, Tensor], alive_in: Tensor | None,
                       alive_columns: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The engine's weight masks cut down to the layers of the physically pruned network.

    Parameters
    ----------
    net
        The network before surgery; ``masks[f"{layer}.weight"]``: bool of its weight shapes.
    alive_out, alive_in, alive_columns
        What :func:`~pyronas.compress.surgery.prune_units` removes.

    Returns
    -------
    dict
        ``{layer name: bool}`` of the pruned network's weight shapes, for the layers that still
        hold pruned single weights (those of the ``weight`` grouping); an empty dict when the
        surgery removed every pruned weight.
    """
    carrier = copy.deepcopy(net)  # same layout, the masks in place of the weights
    with torch.no_grad():
        for layer in layers:
            weight = carrier.get_submodule(layer.name).weight
            weight.copy_(masks[f"{layer.name}.weight"].to(weight))
    cut = prune_units(carrier, dict(alive_out), alive_in, dict(alive_columns))
    out = {}
    for layer in layers:
        keep = cut.get_submodule(layer.name).weight.detach() > 0.5
        if not bool(keep.all()):
            out[layer.name] = keep
    return out


def posterior_dict(settings: CompressSettings, state: Type2State, layers: list[PrunableLayer],
                   history: list[dict[str, Any]], num_data: int) -> dict[str, Any]:
    """The ``posterior.pt`` content: per site the MAP weights, Laplace variances, curvature
    (weight shape), and the group variances, weights and alive flags per grouping."""
    fit = state.posterior
    assert fit is not None
    hypers = state.hypers
    return {
        "format": POSTERIOR_FORMAT,
        "network": settings.network,
        "dataset": settings.dataset,
        "layers": [dataclasses.asdict(layer) for layer in layers],
        "num_data": num_data,
        "mean": {k: v.detach().cpu() for k, v in fit.mean.items()},
        "var": {k: v.detach().cpu() for k, v in fit.var.items()},
        "curvature": {k: v.detach().cpu() for k, v in fit.curvature.items()},
        "gamma_group": hypers["gamma_group"],
        "omega": hypers["omega"],
        "alive": {s: group_hard.alive_units(hypers, s) for s in hypers["sites"]},
        "lambda": hypers["lambda"],
        "history": history,
    }


def _units_row(hypers: Mapping[str, Any], layers: list[PrunableLayer]) -> dict[str, int]:
    alive_out, alive_in = alive_units(hypers, layers)
    row = {}
    if alive_in is not None:
        row["units_input"] = int(alive_in.sum())
    for layer in layers[:-1]:
        row[f"units_{layer.name}"] = int(alive_out[layer.name].sum())
    for name, live in alive_columns(hypers, layers).items():
        row[f"columns_{name}"] = int(live.sum())
    return row


def _copy_sites(net: nn.Module, sites: Mapping[str, Tensor]) -> None:
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, value in sites.items():
            params[name].copy_(value)


def _loaders(settings: CompressSettings, seeds: SeedStreams, device: torch.device
             ) -> tuple[Any, dict[str, DeviceBatches]]:
    splits = load_dataset(settings.dataset, data_dir=settings.data_dir,
                          seed=seeds.seed("splits"), train_size=settings.train_size,
                          fractions=settings.fractions)
    bs, limit = settings.batch_size, settings.max_batches

    def batches(data: Any, stream: str | None, size: int = bs) -> DeviceBatches:
        seed = seeds.seed(stream) if stream else 0
        return DeviceBatches(make_loader(data, size, shuffle=stream is not None, seed=seed,
                                    pin_memory=device.type == "cuda"), device, limit)

    return splits, {
        "train": batches(splits.train, "train_order"),
        "search": batches(splits.search, "search_order"),
        "val": batches(splits.val, None, 2 * bs),
        "test": DeviceBatches(make_loader(splits.test, 2 * bs, shuffle=False, seed=0), device,
                         None if limit is None else 4 * limit),
    }


def run_compress(cfg: CompressSettings | Mapping[str, Any], out_dir: str | Path | None = None
                 ) -> CompressResult:
    """Train, compress by type-II group ARD, prune physically and fine-tune one network.

    Parameters
    ----------
    cfg
        :class:`CompressSettings` or a flat mapping of its fields (checked before anything is
        written).
    out_dir
        Run folder; default ``cfg.out`` or ``runs/compress-<time>``.

    Returns
    -------
    CompressResult

    Raises
    ------
    FileExistsError
        The folder already holds a finished compression run.
    ValueError
        Bad settings, or the prior pruned every unit of a layer (try a smaller
        ``lambda_weight``).
    """
    refuse_data_parallel("a compression")
    settings = CompressSettings.from_mapping(cfg)
    out = Path(out_dir or settings.out or time.strftime("runs/compress-%Y%m%d-%H%M%S"))
    if (out / "metrics.json").exists():
        raise FileExistsError(f"{out} already holds a compression run (metrics.json); choose "
                              "another folder (nothing was overwritten)")
    start = time.perf_counter()
    device = resolve_device(settings.device)
    seeds = SeedStreams(settings.seed)
    seed_everything(seeds.seed("torch"))
    splits, loaders = _loaders(settings, seeds, device)
    input_shape = (splits.in_channels, splits.image_size, splits.image_size)
    net = build_network(settings.network, *input_shape[:2], splits.num_classes).to(device)
    layers = prunable_layers(net)
    spec = weight_spec(layers, net, settings.prune_inputs, settings.group_prices,
                       settings.prune_weights)
    hidden = [layer.name for layer in layers[:-1]]
    for layer in settings.max_units:
        if layer not in hidden:
            raise ValueError(f"max_units names the layer {layer!r}; the network's hidden "
                             f"prunable layers: {', '.join(hidden)}")
    generators = {name: batches.loader for name, batches in loaders.items()}
    dense_checkpoint = _dense_checkpoint(settings, out)
    out.mkdir(parents=True, exist_ok=True)  # the data and the spec are good: start the run
    save_resolved_config({"compress": settings.to_dict()}, out, seed=settings.seed)

    dense_budget = FineTune(settings.pretrain_epochs, settings.lr, settings.momentum,
                            settings.weight_decay, settings.pretrain_schedule,
                            progress=progress_enabled(settings.progress))
    if dense_checkpoint is None:
        dense_start = time.perf_counter()
        fine_tune(net, loaders["train"], dense_budget, phase="dense training (lr)")
        dense_seconds = time.perf_counter() - dense_start
    else:
        net.load_state_dict(dense_checkpoint["state_dict"])
        restore_run_rng(dense_checkpoint["rng"], generators)
        dense_seconds = float(dense_checkpoint["seconds"])
    own_checkpoint = (out / DENSE_CHECKPOINT).resolve()
    if dense_checkpoint is None or dense_checkpoint["path"].resolve() != own_checkpoint:
        dense_settings = identity(settings.to_dict(), DENSE_KEYS)
        save_checkpoint({"format": DENSE_FORMAT, "settings": dense_settings,
                         "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                         "rng": capture_run_rng(generators), "seconds": dense_seconds},
                        out / DENSE_CHECKPOINT)
    _, dense_acc = evaluate(net, loaders["test"])
    dense_weights, dense_flops = count_weights(net), count_flops(net, input_shape)
    log.info("dense %s: test error %.4f, %d weights", settings.network, 1 - dense_acc,
             dense_weights)
    keep_dense = (settings.baselines or settings.finetune_from == "dense"
                  or settings.finetune_distill > 0)
    dense = copy.deepcopy(net) if keep_dense else None

    hypers = group_hard.init_hypers(
        spec["weights"], lambda_weight=settings.lambda_weight,
        curvature_multiplier=settings.curvature_multiplier,
        ard_iterations=settings.ard_iterations, groupings=spec["groupings"],
        links=spec["links"], prices=spec["prices"],
    )
    group_hard.check_weights(net, hypers)
    params = dict(net.named_parameters())
    sites = {s: params[s].detach().clone() for s in hypers["sites"]}
    for s in hypers["sites"]:
        params[s].requires_grad_(False)  # the sites stand in for them during the loop
    loop = _loop_checkpoint(settings, out)
    metrics = MetricsCSV(out / "metrics.csv")
    # rows of an earlier attempt in this folder that its loop checkpoint does not cover
    metrics.truncate_after("iteration", 0 if loop is None else loop["type2"]["iteration"])
    history: list[dict[str, Any]] = [] if loop is None else list(loop["history"])
    resume = None
    if loop is not None:
        net.load_state_dict(loop["net"])
        resume = {**loop["type2"],
                  "sites": {k: v.to(device) for k, v in loop["type2"]["sites"].items()},
                  "masks": {k: v.to(device) for k, v in loop["type2"]["masks"].items()}}
        restore_run_rng(loop["rng"], generators)
        log.info("type-II loop: continuing %s after iteration %d", out, resume["iteration"])
    loop_start = time.perf_counter()
    loop_seconds_before = 0.0 if loop is None else float(loop["seconds"])

    def record(row: dict[str, Any], state: Type2State) -> None:
        _copy_sites(net, state.sites)
        _, val_acc = evaluate(net, loaders["val"])
        kept = sum(int(m.sum()) for m in state.masks.values())
        metrics.append({
            "iteration": row["iteration"], "log_evidence": row["log_evidence"],
            "train_objective": row["objective"], "val_acc": val_acc,
            **_units_row(state.hypers, layers), "weights_kept": kept,
            "seconds": row["wall_time"],
        })
        history.append({"iteration": row["iteration"], "val_acc": val_acc,
                        "log_evidence": row["log_evidence"], "weights_kept": kept,
                        "gamma_group": state.hypers["gamma_group"]})
        log.info("iteration %d: val acc %.4f, weights kept %d, units %s", row["iteration"],
                 val_acc, kept, _units_row(state.hypers, layers))
        _save_loop_checkpoint(out / LOOP_CHECKPOINT, settings, net, state, history, generators,
                              loop_seconds_before + time.perf_counter() - loop_start)

    type2 = Type2Config(
        t_max=settings.t_max, epochs_per_iter=settings.epochs_per_iter,
        lr=settings.lr if settings.map_lr is None else settings.map_lr,
        momentum=settings.momentum, weight_decay=settings.weight_decay,
        backend=settings.backend, curvature_batches=settings.curvature_batches,
        threshold=settings.threshold, progress=progress_enabled(settings.progress),
    )
    num_data = len(splits.train)
    state = run_type2(group_hard, net, sites, hypers, loaders["train"], loaders["search"],
                      num_data, config=type2, forward=group_hard.weight_forward(net),
                      callback=record, resume=resume)
    _copy_sites(net, state.sites)
    for s in hypers["sites"]:
        params[s].requires_grad_(True)

    alive_out, alive_in = alive_units(state.hypers, layers)
    empty = [name for name, alive in alive_out.items() if not bool(alive.any())]
    if alive_in is not None and not bool(alive_in.any()):
        empty.insert(0, "input")
    if empty:
        raise ValueError(f"the prior pruned every unit of {', '.join(empty)} at lambda_weight="
                         f"{settings.lambda_weight}; try a smaller lambda_weight")
    alive_out, capped = cap_units(alive_out, state.hypers, settings.max_units)
    if capped:
        log.info("max_units: dropped %s live units", capped)
    columns = alive_columns(state.hypers, layers)
    pruned = prune_units(net, alive_out, alive_in, columns)
    masks = pruned_weight_masks(net, state.masks, layers, alive_out, alive_in, columns)
    _, pruned_acc = evaluate(pruned, loaders["test"])
    if settings.finetune_from == "dense":  # fine_tune zeroes the masked weights first
        assert dense is not None
        pruned = prune_units(dense, alive_out, alive_in, columns)
    fine_tune(pruned, loaders["train"], _finetune_budget(settings, settings.finetune_epochs),
              weight_masks=masks, teacher=dense, phase="fine-tuning (finetune_lr)")
    _, final_acc = evaluate(pruned, loaders["test"])
    stored_weights = count_weights(pruned)
    kept_weights = stored_weights - sum(int((~m).sum()) for m in masks.values())
    seconds = time.perf_counter() - start + loop_seconds_before
    summary = {
        "network": settings.network,
        "dataset": settings.dataset,
        "seed": settings.seed,
        "units_before": _units(net, layers),
        "units_after": _units(pruned, layers),
        "weights_before": dense_weights,
        "weights_kept": kept_weights,
        "weights_stored": stored_weights,
        "weights_removed_fraction": 1 - kept_weights / dense_weights,
        "compression_ratio": dense_weights / kept_weights,
        "flops_before": dense_flops,
        "flops_after": count_flops(pruned, input_shape),
        "test_error_before": 1 - dense_acc,
        "test_error_pruned": 1 - pruned_acc,
        "test_error_after": 1 - final_acc,
        "iterations": state.iteration,
        "wall_seconds": seconds,
        "dense_seconds": dense_seconds,
        "dense_reused": dense_checkpoint is not None,
        "resumed_iteration": 0 if resume is None else int(resume["iteration"]),
        "units_capped": capped,
        "device": str(device),
    }
    if settings.baselines:
        assert dense is not None
        summary.update(_baselines(dense, pruned, layers, settings, loaders, kept_weights))
    if settings.scratch_baseline:
        summary["baseline_scratch_test_error"] = _scratch_error(pruned, dense_budget, loaders,
                                                                masks)
    _save(out, settings, state, layers, history, num_data, pruned, summary)
    log.info("compressed %s: %s units, %.1fx fewer weights, test error %.4f -> %.4f (%.0f s)",
             settings.network, summary["units_after"], summary["compression_ratio"],
             summary["test_error_before"], summary["test_error_after"], seconds)
    return CompressResult(out, pruned, summary, state)


def _dense_checkpoint(settings: CompressSettings, out: Path) -> dict[str, Any] | None:
    """The dense checkpoint this run starts from, checked, or None to train the dense network.

    ``settings.dense_from`` names it (a run folder or the file); otherwise a ``dense.pt`` left in
    ``out`` by a run stopped after its dense phase is taken up.

    Raises
    ------
    FileNotFoundError
        ``dense_from`` holds no dense checkpoint.
    ValueError
        The checkpoint is of another format or was trained with other :data:`DENSE_KEYS`.
    """
    if settings.dense_from is not None:
        path = Path(settings.dense_from)
        if path.is_dir():
            path = path / DENSE_CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"dense_from: no dense checkpoint at {path} (a compression "
                                    f"run folder holds one, {DENSE_CHECKPOINT}, once its dense "
                                    "training is done)")
        where = f"dense_from {path}"
    else:
        path = out / DENSE_CHECKPOINT
        if not path.is_file():
            return None
        where = f"the run folder's {path}"
    state = load_checkpoint(path, weights_only=False)
    if state.get("format") != DENSE_FORMAT:
        raise ValueError(f"{where} is not a dense checkpoint of this version (format "
                         f"{state.get('format')!r}, expected {DENSE_FORMAT!r})")
    details = _settings_differences(state["settings"], settings, DENSE_KEYS)
    if details:
        hint = ("" if settings.dense_from is not None else
                " (it is kept: use another --out, or the same dense settings)")
        raise ValueError(f"{where} was trained with other dense settings ({details}){hint}")
    log.info("dense %s: taken from %s (trained in %.0f s)", settings.network, path,
             state["seconds"])
    state["path"] = path
    return state


def _settings_differences(saved: Mapping[str, Any], settings: CompressSettings,
                          keys: tuple[str, ...]) -> str:
    """``"KEY: checkpoint X, this run Y; ..."`` for the ``keys`` where a checkpoint's saved
    settings and this run's differ; ``""`` when they agree."""
    wanted = identity(settings.to_dict(), keys)
    return "; ".join(f"{key}: checkpoint {saved.get(key)!r}, this run {wanted[key]!r}"
                     for key in keys if saved.get(key) != wanted[key])


def _loop_checkpoint(settings: CompressSettings, out: Path) -> dict[str, Any] | None:
    """The folder's type-II loop checkpoint if this run continues it, else None.

    A checkpoint of other :data:`LOOP_KEYS` settings, of another format or with more
    iterations than ``t_max`` is left out (the loop starts again from the dense network and
    overwrites it), with a warning that names why.
    """
    path = out / LOOP_CHECKPOINT
    if not path.is_file():
        return None
    state = load_checkpoint(path, weights_only=False)
    why = None
    if state.get("format") != LOOP_FORMAT:
        why = f"its format is {state.get('format')!r}, not {LOOP_FORMAT!r}"
    else:
        details = _settings_differences(state["settings"], settings, LOOP_KEYS)
        if details:
            why = f"it was written with other settings ({details})"
        elif state["type2"]["iteration"] > settings.t_max:
            why = (f"it is at iteration {state['type2']['iteration']}, beyond this run's "
                   f"t_max {settings.t_max}")
    if why is not None:
        log.warning("type-II loop: not continuing %s: %s; the loop starts again from the "
                    "dense network", path, why)
        return None
    return state


def _save_loop_checkpoint(path: Path, settings: CompressSettings, net: nn.Module,
                          state: Type2State, history: list[dict[str, Any]],
                          generators: Mapping[str, Any], seconds: float) -> None:
    """``type2.pt`` after an iteration (no loader being iterated): what the loop carries on
    with, and ``seconds``, the loop's time over every attempt so far."""
    save_checkpoint({
        "format": LOOP_FORMAT,
        "settings": identity(settings.to_dict(), LOOP_KEYS),
        "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "type2": state.resume_dict(),
        "history": history,
        "rng": capture_run_rng(generators),
        "seconds": seconds,
    }, path)


def _finetune_budget(settings: CompressSettings, epochs: int) -> FineTune:
    """The fine-tuning of ours (``finetune_epochs``) and of the baselines (``epochs``)."""
    return FineTune(epochs, settings.finetune_lr, settings.momentum,
                    schedule=settings.finetune_schedule, distill=settings.finetune_distill,
                    temperature=settings.distill_temperature,
                    progress=progress_enabled(settings.progress))


def _baselines(dense: nn.Module, pruned: nn.Module, layers: list[PrunableLayer],
               settings: CompressSettings, loaders: Mapping[str, Any], kept_weights: int
               ) -> dict[str, Any]:
    """Test errors of magnitude and structured pruning of ``dense`` at this run's sparsity."""
    epochs = settings.t_max * settings.epochs_per_iter + settings.finetune_epochs
    budget = _finetune_budget(settings, epochs)
    dense_weights = count_weights(dense)
    sparsity = 1 - kept_weights / dense_weights
    magnitude, _ = magnitude_prune(dense, sparsity, loaders["train"], budget, teacher=dense)
    _, magnitude_acc = evaluate(magnitude, loaders["test"])
    units = {layer.name: int(pruned.get_submodule(layer.name).weight.shape[0])
             for layer in layers[:-1]}
    columns = {layer.name: int(pruned.get_submodule(layer.name).weight.shape[1])
               for layer in layers if layer.in_block > 1}  # the positions ours reads
    structured = structured_prune(dense, units, loaders["train"], budget, columns, teacher=dense)
    _, structured_acc = evaluate(structured, loaders["test"])
    log.info("baselines at %.1f %% of the weights removed: magnitude test error %.4f, "
             "structured (units %s) %.4f", 100 * sparsity, 1 - magnitude_acc, units,
             1 - structured_acc)
    return {"baseline_finetune_epochs": epochs,
            "baseline_magnitude_test_error": 1 - magnitude_acc,
            "baseline_structured_test_error": 1 - structured_acc,
            "baseline_structured_weights": count_weights(structured)}


def _scratch_error(pruned: nn.Module, budget: FineTune, loaders: Mapping[str, Any],
                   masks: Mapping[str, Tensor]) -> float:
    """Test error of ``pruned``'s architecture from fresh weights, trained with ``budget``
    (the dense phase's); its pixel and column selections and its weight ``masks`` are kept."""
    fresh = copy.deepcopy(pruned)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):  # Linear, Conv2d, BatchNorm (and its stats)
            module.reset_parameters()
    fine_tune(fresh, loaders["train"], budget, weight_masks=dict(masks))
    _, acc = evaluate(fresh, loaders["test"])
    log.info("scratch baseline (the pruned architecture from fresh weights): test error %.4f",
             1 - acc)
    return 1 - acc


def _units(net: nn.Module, layers: list[PrunableLayer]) -> list[int]:
    """Inputs of the first layer, then the output units of every layer (784-300-100-10)."""
    weights = [net.get_submodule(layer.name).weight for layer in layers]
    return [int(weights[0].shape[1])] + [int(w.shape[0]) for w in weights]


def _save(out: Path, settings: CompressSettings, state: Type2State, layers: list[PrunableLayer],
          history: list[dict[str, Any]], num_data: int, pruned: nn.Module,
          summary: dict[str, Any]) -> None:
    def save_torch(obj: Any, name: str) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        atomic_write_bytes(buffer.getvalue(), out / name)

    posterior = posterior_dict(settings, state, layers, history, num_data)
    save_torch(posterior, "posterior.pt")
    staged = out / "posterior.nc.partial"
    save_arviz(compress_to_arviz(posterior, seed=settings.seed), staged)
    os.replace(staged, out / "posterior.nc")
    save_torch({k: v.detach().cpu() for k, v in pruned.state_dict().items()}, "pruned_state.pt")
    atomic_write_text(json.dumps(describe_network(pruned), indent=2) + "\n",
                      out / "architecture.json")
    atomic_write_text(json.dumps(summary, indent=2) + "\n", out / "metrics.json")
