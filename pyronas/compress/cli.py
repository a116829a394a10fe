"""The ``pyronas compress`` command: one flag per :class:`~pyronas.compress.run.CompressSettings`
field (``--network lenet300 --dataset fashion-mnist --lambda-weight 1e-6 ...``).

:func:`add_compress_parser` adds the subcommand to the ``pyronas`` parser; its handler
:func:`run_compress_cli` runs :func:`~pyronas.compress.run.run_compress` and prints the summary.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from pyronas.compress.networks import NETWORKS
from pyronas.compress.run import FINETUNE_FROM, CompressSettings, run_compress
from pyronas.data import DATASETS
from pyronas.dataclass_flags import add_dataclass_flags, given_fields

__all__ = ["add_compress_parser", "compress_overrides", "parse_group_prices", "parse_max_units",
           "run_compress_cli"]

_HELP = {
    "network": "network to compress",
    "dataset": "data set (digits and fashion-mnist work offline)",
    "data_dir": "folder of the data set files",
    "train_size": "subsample the official training set to this many images",
    "fractions": "train, search (curvature) and val shares of the training set",
    "out": "run folder (default runs/compress-<time>)",
    "pretrain_epochs": "dense training epochs before the type-II loop",
    "pretrain_schedule": "dense learning rate: constant, or cosine (annealed to 0)",
    "finetune_schedule": "fine-tuning learning rate (ours and the baselines): constant, or "
    "cosine (annealed to 0)",
    "finetune_distill": "weight in [0, 1] of distillation from the dense network in the "
    "fine-tuning (ours and the baselines; 0: cross-entropy only)",
    "distill_temperature": "softmax temperature of the distillation",
    "t_max": "type-II iterations",
    "finetune_from": "fine-tune the pruned network from the last MAP weights (map) or from "
    "the dense weights cut to the chosen units and masks (dense)",
    "map_lr": "learning rate of the MAP epochs of the type-II loop (default: --lr)",
    "lambda_weight": "group-lasso strength of the group-HARD prior (larger: sparser)",
    "backend": "curvature backend (ggn_lean, ggn, layerwise, fisher, ...)",
    "threshold": "prune weights whose prior variance falls below this",
    "prune_inputs": "group the first layer's input features too (--no-prune-inputs: keep them)",
    "prune_weights": "also give every weight its own variance: single weights pruned inside "
    "the kept units (stored as zeros)",
    "dense_from": "start from the dense network of this compression run folder (or its "
    "dense.pt) instead of training one; its dense settings must match",
    "max_batches": "at most this many batches per epoch (smoke runs)",
    "progress": "progress bars per epoch (--no-progress: none)",
    "baselines": "also run magnitude and structured-norm pruning at the same sparsity",
    "scratch_baseline": "also train the pruned architecture from fresh weights (dense budget)",
}


def add_compress_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``compress`` to the ``pyronas`` subcommands; its handler is :func:`run_compress_cli`.

    Every flag defaults to ``None`` (the settings' defaults apply).
    """
    p = subparsers.add_parser(
        "compress",
        help="compress a network by structured sparsity (group HARD) and prune it physically",
        description="Train a network, run type-II group ARD over its neurons, filters and "
        "channels, remove the pruned units physically, fine-tune, and write a run folder "
        "(config.yaml, metrics.csv, posterior.pt, pruned_state.pt, architecture.json, "
        "metrics.json). A run stopped before it finished continues when started again with "
        "the same --out: from its dense network (dense.pt) and its type-II loop's latest "
        "iteration (type2.pt).",
    )
    add_dataclass_flags(p, CompressSettings, _HELP,
                        choices={"network": NETWORKS, "dataset": DATASETS,
                                 "finetune_from": FINETUNE_FROM},
                        metavars={"fractions": ("TRAIN", "SEARCH", "VAL")})
    p.add_argument("--group-price", action="append", default=None, metavar="LAYER:GROUPING=PRICE",
                   help="price of one grouping's group-lasso weights (repeatable; e.g. "
                   "fc1:in=0.3 prunes the input pixels more gently, conv1:out=4 the first "
                   "filters harder, fc1:weight=2 its single weights with --prune-weights)")
    p.add_argument("--max-units", action="append", default=None, metavar="LAYER=M",
                   help="after the type-II loop, keep at most M units of LAYER, dropping the "
                   "live ones of smallest group variance (repeatable; e.g. conv1=16: the CPU's "
                   "convolutions slow down from 17 input channels)")
    p.set_defaults(handler=run_compress_cli)
    return p


def parse_group_prices(items: list[str]) -> dict[str, float]:
    """``["fc1:in=0.3", ...]`` -> ``{"fc1:in": 0.3}``; ``ValueError`` naming a malformed item."""
    return _parse_assignments(items, "--group-price", float, "LAYER:GROUPING=PRICE, e.g. "
                              "fc1:in=0.3")


def _parse_assignments(items: list[str], flag: str, convert: Callable[[str], Any], form: str
                       ) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> ``{KEY: convert(VALUE)}``; a malformed item (no key, or a value
    ``convert`` refuses, ``""`` when there is no ``=``) raises ``ValueError`` naming
    ``flag``, the item and the expected ``form``."""
    values = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            values[key] = convert(value)
        except ValueError:
            key = ""
        if not key:
            raise ValueError(f"{flag} {item!r}: expected {form}")
    return values


def compress_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (the flags not left at ``None``)."""
    overrides = given_fields(args, CompressSettings)
    if getattr(args, "group_price", None):
        overrides["group_prices"] = parse_group_prices(args.group_price)
    if getattr(args, "max_units", None):
        overrides["max_units"] = parse_max_units(args.max_units)
    return overrides


def parse_max_units(items: list[str]) -> dict[str, int]:
    """``["conv1=16", ...]`` -> ``{"conv1": 16}``; ``ValueError`` naming a malformed item."""
    return _parse_assignments(items, "--max-units", int, "LAYER=M with an integer M, e.g. "
                              "conv1=16")


def run_compress_cli(args: argparse.Namespace) -> int:
    """Run the compression the flags describe and print ``metrics.json``; returns 0."""
    result = run_compress(compress_overrides(args))
    print(json.dumps(result.metrics, indent=2))
    print(f"run folder: {result.out}")
    return 0
