"""The ``pyronas proxyless`` command: one flag per field of
:class:`~pyronas.proxyless.search.ProxylessSettings`
(``--dataset fashion-mnist --depth 8 --alpha 24 --t-max 4 ...``).

:func:`add_proxyless_parser` adds the subcommand to the ``pyronas`` parser; its handler
:func:`run_proxyless_cli` runs :func:`~pyronas.proxyless.search.run_proxyless_search` and prints
the summary and the found trees' file.
"""

from __future__ import annotations

import argparse
import json

from pyronas.config import parse_overrides
from pyronas.data import DATASETS
from pyronas.dataclass_flags import add_dataclass_flags, given_fields
from pyronas.inference import BACKENDS
from pyronas.proxyless.search import ProxylessSettings, run_proxyless_search

__all__ = ["add_proxyless_parser", "run_proxyless_cli"]

_HELP = {
    "dataset": "data set (digits and fashion-mnist work offline)",
    "data_dir": "folder of the data set files",
    "train_size": "subsample the official training set to this many images",
    "fractions": "train, search (curvature) and val shares of the training set",
    "out": "run folder (default runs/proxyless-<time>)",
    "depth": "PyramidNet depth, 6 n + 2 (the paper: 110)",
    "alpha": "PyramidNet widening (the paper: 84)",
    "switch_lr": "learning rate of the switches",
    "t_max": "type-II iterations",
    "backend": "curvature backend",
    "curvature_batches": "batches of the search split per curvature estimate",
    "threshold": "prune switches whose prior variance falls below this",
    "prior": "prior model (name in models/ or a path to a model file)",
    "max_batches": "at most this many batches per epoch (smoke runs)",
}


def add_proxyless_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``proxyless`` to the ``pyronas`` subcommands; its handler is :func:`run_proxyless_cli`.

    Every flag defaults to ``None`` (the settings' defaults apply).
    """
    p = subparsers.add_parser(
        "proxyless",
        help="search tree cells directly inside a PyramidNet (one tree per block)",
        description="Proxyless BayesNAS: type-II ML over the switches of one searchable tree "
        "cell per residual block of a bottleneck PyramidNet; writes a run folder (config.yaml, "
        "metrics.csv, posterior.pt, genotype.json with one tree per block, metrics.json). "
        "Retrain the result with `pyronas retrain --network pyramidnet --genotype "
        "RUN/genotype.json`.",
    )
    add_dataclass_flags(p, ProxylessSettings, _HELP,
                        choices={"dataset": DATASETS, "backend": sorted(BACKENDS)},
                        metavars={"fractions": ("TRAIN", "SEARCH", "VAL")})
    p.add_argument("--prior-option", dest="prior_option", action="append", default=None,
                   metavar="KEY=VALUE", help="an option of the prior's init_hypers "
                   "(repeatable), e.g. lambda_op=0.005")
    p.set_defaults(handler=run_proxyless_cli)
    return p


def run_proxyless_cli(args: argparse.Namespace) -> int:
    """Run the search the flags describe and print ``metrics.json``; returns 0."""
    settings = given_fields(args, ProxylessSettings)
    if args.prior_option:
        settings["prior_options"] = parse_overrides(args.prior_option)
    result = run_proxyless_search(settings)
    print(json.dumps(result.metrics, indent=2))
    print(f"run folder: {result.out}  (trees: {result.out / 'genotype.json'})")
    return 0
