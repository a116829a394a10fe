"""The ``pyronas compress`` command: one flag per :class:`~pyronas.compress.run.CompressSettings`
field (``--network lenet300 --dataset fashion-mnist --lambda-weight 1e-6 ...``).

:func:`add_compress_parser` adds the subcommand to the ``pyronas`` parser; its handler
:func:`run_compress_cli` runs :func:`~pyronas.compress.run.run_compress` and prints the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any

from pyronas.compress.networks import NETWORKS
from pyronas.compress.run import CompressSettings, run_compress
from pyronas.data import DATASETS

__all__ = ["add_compress_parser", "compress_overrides", "run_compress_cli"]

_HELP = {
    "network": "network to compress",
    "dataset": "data set (digits and fashion-mnist work offline)",
    "data_dir": "folder of the data set files",
    "train_size": "subsample the official training set to this many images",
    "fractions": "train, search (curvature) and val shares of the training set",
    "out": "run folder (default runs/compress-<time>)",
    "pretrain_epochs": "dense training epochs before the type-II loop",
    "t_max": "type-II iterations",
    "lambda_weight": "group-lasso strength of the group-HARD prior (larger: sparser)",
    "backend": "curvature backend (ggn_lean, ggn, layerwise, fisher, ...)",
    "threshold": "prune weights whose prior variance falls below this",
    "prune_inputs": "group the first layer's input features too (--no-prune-inputs: keep them)",
    "max_batches": "at most this many batches per epoch (smoke runs)",
}


def _base_type(annotation: Any) -> Any:
    """``int`` for ``int | None``; the annotation itself otherwise."""
    hint = annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


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
        "metrics.json).",
    )
    hints = typing.get_type_hints(CompressSettings)
    for field in dataclasses.fields(CompressSettings):
        flag = "--" + field.name.replace("_", "-")
        kind = _base_type(hints[field.name])
        text = _HELP.get(field.name, field.name.replace("_", " "))
        help_text = f"{text} (default {field.default})"
        if field.name == "network":
            p.add_argument(flag, choices=NETWORKS, default=None, help=help_text)
        elif field.name == "dataset":
            p.add_argument(flag, choices=DATASETS, default=None, help=help_text)
        elif kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        elif field.name == "fractions":
            p.add_argument(flag, type=float, nargs=3, default=None, metavar=("TRAIN", "SEARCH",
                           "VAL"), help=help_text)  # fmt: skip
        else:
            p.add_argument(flag, type=kind, default=None, help=help_text)
    p.set_defaults(handler=run_compress_cli)
    return p


def compress_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (the flags not left at ``None``)."""
    names = {f.name for f in dataclasses.fields(CompressSettings)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def run_compress_cli(args: argparse.Namespace) -> int:
    """Run the compression the flags describe and print ``metrics.json``; returns 0."""
    result = run_compress(compress_overrides(args))
    print(json.dumps(result.metrics, indent=2))
    print(f"run folder: {result.out}")
    return 0
