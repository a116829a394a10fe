"""The ``pyronas`` command line.

Every subcommand that runs a job accepts ``--config file.yaml``: the file is read first, flags
given on the command line override it, and the resolved configuration is saved in the run folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("pyronas")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML file of options, read first; flags on the command line override it",
    )


def _add_nb201(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--nb201",
        type=Path,
        default=None,
        metavar="PATH",
        help="look NAS-Bench-201 cells up in this official benchmark file (NAS-Bench-201 .pth, "
        "read with nas_201_api when installed; NATS-Bench files need nats_bench) instead of "
        "the bundled 12-epoch table",
    )
    parser.add_argument(
        "--nb201-epochs",
        dest="nb201_epochs",
        type=int,
        choices=[12, 200],
        default=12,
        help="training schedule of the looked-up figures (200 needs --nb201; default 12)",
    )


def _search_parser(sub: argparse._SubParsersAction) -> None:
    from pyronas.settings import add_search_flags

    p = sub.add_parser(
        "search",
        help="run an architecture search and write a run folder",
        description="Run BayesNAS (or a baseline strategy) on a supernet and write a run folder "
        "with config.yaml, metrics.csv, the posterior, genotype.json and cell diagrams. One flag "
        "per setting (pyronas.settings); prior options with --prior-option KEY=VALUE.",
    )
    _add_config(p)
    add_search_flags(p)
    _add_nb201(p.add_argument_group("NAS-Bench-201 lookup (nb201 space)"))
    p.set_defaults(handler=_cmd_search)


def _retrain_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain",
        help="train a genotype from scratch with the DARTS evaluation protocol",
        description="Retrain a genotype (a bundled name or a genotype.json) and write "
        "metrics.csv, metrics.json and checkpoints to --out.",
    )
    _add_config(p)
    p.add_argument("--genotype", help="bundled name (DARTS_V2, BAYESNAS_0.01, ...) or a JSON file")
    p.add_argument("--dataset", help="digits, fashion-mnist, cifar10 or imagenet")
    p.add_argument("--data-dir", dest="data_dir", help="folder holding the data set files")
    p.add_argument("--network", choices=["cifar", "imagenet", "pyramidnet"],
                   help="evaluation network: the DARTS cifar / imagenet ones for cell genotypes, "
                   "pyramidnet for tree genotypes (TreeCell-A, a proxyless search's)")
    p.add_argument("--pyramid-depth", dest="pyramid_depth", type=int,
                   help="pyramidnet depth, 6 n + 2 (110 in the paper)")
    p.add_argument("--pyramid-alpha", dest="pyramid_alpha", type=float,
                   help="pyramidnet widening (84 in the paper)")
    p.add_argument("--epochs", type=int, help="training epochs (preset otherwise)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="minibatch size")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--out", type=Path, help="run folder to write")
    p.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in --out from its last checkpoint",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="delete the files of an earlier run in --out first (other files stay)",
    )
    p.set_defaults(handler=_cmd_retrain)


def _model_info_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model-info",
        help="parameter count and mult-adds of a genotype's evaluation network",
        description="Build the DARTS evaluation network of a genotype and print its parameter "
        "count (auxiliary head excluded, and total), mult-adds for one image and the cells.",
    )
    p.add_argument("--genotype", required=True, help="bundled name or genotype JSON file")
    p.add_argument(
        "--dataset",
        default="cifar10",
        choices=["cifar10", "imagenet"],
        help="which published network: cifar10 (C=36, 20 cells) or imagenet (C=48, 14 cells)",
    )
    p.set_defaults(handler=_cmd_model_info)


def _genotype_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "genotype", help="inspect genotypes", description="Inspect bundled or saved genotypes."
    )
    gsub = p.add_subparsers(dest="genotype_command", required=True)
    show = gsub.add_parser(
        "show",
        help="print a genotype's cells and draw them",
        description="Validate a genotype, print its cells and draw each cell "
        "type to PNG (graphviz when installed, matplotlib otherwise). An nb201 cell also gets "
        "its NAS-Bench-201 entry: index, accuracies and percentiles.",
    )
    show.add_argument(
        "genotype",
        help="bundled name, genotype JSON file, NAS-Bench-201 string, or a text file holding "
        "one (genotype_nb201.txt)",
    )
    _add_nb201(show)
    show.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the drawings <name>_<cell type>.<format> (default: next to the "
        "genotype file; the current folder for a bundled name or a string)",
    )
    show.add_argument(
        "--group",
        choices=["auto", "yes", "no"],
        default="auto",
        help="draw the ops of an edge as one box listing them (auto: when an edge has more "
        "than two ops)",
    )
    show.add_argument(
        "--format", dest="fmt", default="png", choices=["png", "svg"], help="image format"
    )
    show.add_argument("--block", type=int, default=None,
                      help="tree genotypes: draw this block's tree only (default: every "
                      "distinct tree)")
    show.set_defaults(handler=_cmd_genotype_show)
    lst = gsub.add_parser("list", help="list the bundled genotypes")
    lst.set_defaults(handler=_cmd_genotype_list)


def _analyze_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="summarise and plot the posterior of one or more search runs",
        description="Print per cell type the kept ops with posterior mean, sd, gamma and "
        "inclusion; write summary.csv and plots into each run folder.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="search run folders")
    p.add_argument("--out", type=Path, default=None, help="folder for comparison output")
    _add_nb201(p)
    p.set_defaults(handler=_cmd_analyze)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pyronas",
        description="Bayesian neural architecture search (BayesNAS) on Pyro and PyTorch.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    _retrain_parser(sub)
    _model_info_parser(sub)
    _genotype_parser(sub)
    _analyze_parser(sub)
    from pyronas.compress.cli import add_compress_parser

    add_compress_parser(sub)
    from pyronas.proxyless.cli import add_proxyless_parser

    add_proxyless_parser(sub)
    return parser


def _overrides(args: argparse.Namespace, skip: Sequence[str] = ()) -> dict[str, Any]:
    """The options given on the command line (those not left at ``None``)."""
    ignore = {"command", "handler", "config", "verbose", *skip}
    return {k: v for k, v in vars(args).items() if k not in ignore and v is not None}


def _cmd_search(args: argparse.Namespace) -> int:
    from pyronas.dispatch import run_search_cli
    from pyronas.settings import flag_overrides

    return run_search_cli(
        args.config, flag_overrides(args), nb201=args.nb201, nb201_epochs=args.nb201_epochs
    )


def _cmd_retrain(args: argparse.Namespace) -> int:
    from pyronas.train import run_retrain_cli

    return run_retrain_cli(args.config, _overrides(args))


def _cmd_model_info(args: argparse.Namespace) -> int:
    from pyronas.model_info import model_info_text

    print(model_info_text(args.genotype, args.dataset))
    return 0


def _cmd_genotype_show(args: argparse.Namespace) -> int:
    from pyronas.diagram import show_genotype
    from pyronas.proxyless.draw import is_tree_genotype, show_tree_genotype

    if is_tree_genotype(args.genotype):
        text, paths = show_tree_genotype(args.genotype, args.out, block=args.block, fmt=args.fmt)
        print(text)
        for path in paths:
            print(f"wrote {path}")
        return 0
    group = {"auto": None, "yes": True, "no": False}[args.group]
    text, paths = show_genotype(
        args.genotype,
        args.out,
        fmt=args.fmt,
        nb201=args.nb201,
        nb201_epochs=args.nb201_epochs,
        group=group,
    )
    print(text)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _cmd_genotype_list(args: argparse.Namespace) -> int:
    from pyronas.genotype import list_bundled

    for name in list_bundled():
        print(name)
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from pyronas.report import run_analyze_cli

    return run_analyze_cli(args.runs, args.out, nb201=args.nb201, nb201_epochs=args.nb201_epochs)


EXIT_BAD_INPUT = 2
"""Exit status of a command that cannot run as given (configuration, files, run folder)."""
EXIT_RUN_FAILED = 3
"""Exit status of a run that started and failed (search result, non-finite loss, memory)."""
EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT, as a shell reports it)."""


def _bad_input_types() -> tuple[type[BaseException], ...]:
    """The library's errors for input a user can get wrong (all subclasses of ValueError or
    OSError; named here as the catalogue in docs/bad-inputs.md lists them)."""
    from pyronas.checkpoint import CheckpointMismatchError
    from pyronas.config import ConfigError
    from pyronas.data import DatasetError
    from pyronas.genotype import GenotypeError
    from pyronas.nb201 import NB201Error
    from pyronas.runs import RunFolderError
    from pyronas.search_posterior import PosteriorFileError

    return (ConfigError, GenotypeError, DatasetError, PosteriorFileError, RunFolderError,
            CheckpointMismatchError, NB201Error, FileExistsError, PermissionError, OSError,
            ValueError, KeyError)  # fmt: skip


def _batch_size(args: argparse.Namespace) -> int | None:
    """The batch size of a search or retraining command (flag, config file or default)."""
    if args.command == "retrain":
        from pyronas.train import resolved_config

        return int(resolved_config(args.config, _overrides(args))["batch_size"])
    if args.command == "search":
        from pyronas.settings import flag_overrides, load_search_settings

        return load_search_settings(args.config, flag_overrides(args)).training.batch_size
    return None


def _out_of_memory_message(args: argparse.Namespace) -> str:
    """``out of memory: try --batch-size N/2`` where the command has a batch size."""
    try:
        size = _batch_size(args)
    except Exception:  # the settings were read once already; never hide the OOM behind this
        size = None
    if size is None:
        return "out of memory"
    return f"out of memory at batch size {size}: try --batch-size {max(1, size // 2)}"


def _explain(err: BaseException, args: argparse.Namespace) -> tuple[int, str] | None:
    """The exit status and the one line to print for an error a user can cause; None for any
    other error (a bug: its traceback is wanted)."""
    from pyronas.search import SearchFailed
    from pyronas.train import is_out_of_memory

    if isinstance(err, KeyboardInterrupt):
        hint = {"search": "; rerun the same command with --resume to continue",
                "retrain": "; rerun the same command with --resume to continue",
                "compress": "; rerun the same command to continue (its dense network and "
                            "type-II iterations are kept)"}.get(args.command, "")
        return EXIT_INTERRUPTED, f"pyronas: interrupted{hint}"
    if isinstance(err, SearchFailed):
        # The search ran but its result would mean nothing: say why, keep the run folder.
        return EXIT_RUN_FAILED, f"pyronas: search failed: {err}"
    if isinstance(err, FloatingPointError):
        return EXIT_RUN_FAILED, f"pyronas: error: {err}"
    if is_out_of_memory(err):
        own = isinstance(err, MemoryError) and str(err)
        return EXIT_RUN_FAILED, f"pyronas: error: {err if own else _out_of_memory_message(args)}"
    if isinstance(err, _bad_input_types()):
        return EXIT_BAD_INPUT, f"pyronas: error: {_one_line(err)}"
    return None


def _one_line(err: BaseException) -> str:
    """The message of an error; an operating-system error as ``<reason>: <file>``."""
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror.lower()}{where}"
    return str(err)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyronas`` console script.

    An error a user can cause (see docs/bad-inputs.md) prints one line, ``pyronas: error:
    <message>`` (with ``-v`` after the traceback), and returns :data:`EXIT_BAD_INPUT` (bad input),
    :data:`EXIT_RUN_FAILED` (the run failed: no usable result, a non-finite loss, out of memory)
    or :data:`EXIT_INTERRUPTED` (Ctrl-C). Finished work (checkpoints, metrics) stays on disk.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
    )
    # arviz logs at INFO which of its optional preview packages are missing: not news to users
    logging.getLogger("arviz").setLevel(logging.WARNING)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (Exception, KeyboardInterrupt) as err:
        explained = _explain(err, args)
        if explained is None:
            raise
        if args.verbose:
            traceback.print_exception(err, file=sys.stderr)
        code, line = explained
        print(line, file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
