"""NAS-Bench-201: BayesNAS (each prior), DARTS and random search, every cell looked up.

Every strategy searches the ``nb201`` space (the NAS-Bench-201 skeleton) for several seeds and
writes the benchmark string of its cell (``genotype_nb201.txt``: for BayesNAS the
one-op-per-edge projection of the found cell; for the baselines the benchmark's own rule, the
argmax op on each of the 6 edges with ``none`` included, as in the NAS-Bench-201 paper) and
its benchmark entry (``nb201_lookup.json``). Nothing is retrained: the benchmark's accuracies
are the score.

Data: CIFAR-10 when its files are in ``--data-dir`` (the benchmark's own protocol), otherwise
Fashion-MNIST as a proxy (``--dataset auto``, the default): a cell searched on Fashion-MNIST and
looked up on CIFAR-10, CIFAR-100 and ImageNet16-120, which the table says. Figures: the bundled
12-epoch table, or ``--nb201 PATH [--nb201-epochs 200]`` for an official benchmark file.

The table gives per strategy the looked-up test accuracy (mean +/- sd over seeds) on each
benchmark data set, the CIFAR-10 percentile, the skip connections per cell (the DARTS collapse:
the all-skip cell scores 36.8 % on CIFAR-10 at 12 epochs) and the search time, beside the
benchmark's own optimum and the published 200-epoch anchors. ``--results-md`` writes it into
``docs/results.md`` between ``<!-- nb201:start -->`` and ``<!-- nb201:end -->``.

    python experiments/nb201.py --seeds 0 1 2 --out runs/nb201 --device cuda --workers 4
    python experiments/nb201.py --smoke --dataset digits --out runs/nb201-smoke

Rerunning the command skips finished searches and resumes interrupted BayesNAS searches.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

from pyronas.data import CIFAR10_FOLDER, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES
from pyronas.jobs import (
    Job,
    add_executor_options,
    executor_from_args,
    mean_sd_text,
    publish_report,
    read_json,
    run_jobs,
    search_job,
)
from pyronas.nb201 import (
    NB201Entry,
    NB201Error,
    NB201Table,
    bundled_table,
    open_table,
    run_lookup,
)

STRATEGIES: dict[str, dict[str, Any]] = {
    "bayesnas-hard": {"strategy": "bayesnas", "prior": "hard"},
    "bayesnas-ard": {"strategy": "bayesnas", "prior": "ard"},
    "bayesnas-laplace": {"strategy": "bayesnas", "prior": "laplace"},
    "bayesnas-horseshoe": {"strategy": "bayesnas", "prior": "horseshoe"},
    "darts1": {"strategy": "darts1"},
    "darts2": {"strategy": "darts2"},
    "random-ws": {"strategy": "random", "random_mode": "ws"},
    "random-plain": {"strategy": "random", "random_mode": "plain"},
}
"""Label -> search options. ``random-plain`` is a uniformly random benchmark cell, no data (the
control: its expected percentile is 50)."""

SEARCH: dict[str, dict[str, Any]] = {
    "cifar10": {"train_size": 10000, "channels": 16, "layers": 17, "batch_size": 64,
                "epochs": 10},
    "fashion-mnist": {"train_size": 10000, "image_size": 16, "channels": 16, "layers": 17,
                      "batch_size": 64, "epochs": 10},
}
"""Search budget per data set: the NAS-Bench-201 skeleton (C=16, 3 stages of 5 cells, 17
positions) on a training subset, ``epochs`` passes over the training split for every strategy
(BayesNAS: that many type-II iterations of one MAP epoch)."""

CPU_BUDGET: dict[str, Any] = {"train_size": 5000, "image_size": 16, "channels": 8, "layers": 8,
                               "batch_size": 64, "epochs": 10}
"""``--budget cpu``: a skeleton small enough for a CPU (C=8, 3 stages of 2 cells, 8 positions;
about 1-2 minutes per search on 2 cores), the same for every strategy."""

SMOKE: dict[str, Any] = {"train_size": 100, "channels": 4, "layers": 3, "batch_size": 25,
                         "epochs": 1, "curvature_batches": 1, "bn_batches": 1,
                         "posterior_draws": 2, "num_candidates": 2, "lambda_edge": 0.001,
                         "lambda_op": 0.001, "z_select": 0.0}
"""Tiny sizes for ``--smoke`` (seconds per search on a CPU; lambda small enough, and no
z-score rule, so that a one-iteration search keeps a cell with every prior)."""

ANCHORS: tuple[tuple[str, float, str], ...] = (
    ("DARTS-V1 / DARTS-V2", 54.30, "Dong and Yang, NAS-Bench-201 (ICLR 2020)"),
    ("GDAS", 93.61, "Dong and Yang, NAS-Bench-201 (ICLR 2020)"),
    ("DrNAS", 94.36, "Chen et al., DrNAS (ICLR 2021)"),
    ("optimum of the benchmark", 94.37, "Dong and Yang, NAS-Bench-201 (ICLR 2020)"),
)
"""Published CIFAR-10 test accuracies (%) of cells searched on CIFAR-10, **after the
benchmark's 200-epoch schedule**: not comparable with 12-epoch figures."""

ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|" \
    "skip_connect~2|"
"""The cell of the DARTS collapse."""

DATASETS = ("cifar10", "cifar100", "ImageNet16-120")


def cifar10_present(data_dir: Path | None) -> bool:
    """Whether ``data_dir`` (or its ``cifar-10-batches-py``) holds the CIFAR-10 batches."""
    if data_dir is None:
        return False
    files = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    return any(all((d / f).is_file() for f in files) for d in (data_dir, data_dir / CIFAR10_FOLDER))


def resolve_dataset(args: argparse.Namespace) -> str:
    """``--dataset auto``: CIFAR-10 when its files are present, else Fashion-MNIST."""
    if args.dataset != "auto":
        return args.dataset
    return "cifar10" if cifar10_present(args.data_dir) else "fashion-mnist"


def budget(args: argparse.Namespace) -> dict[str, Any]:
    """The search budget of this run: the smoke sizes or :data:`SEARCH`, with the overrides."""
    if args.smoke:
        base = dict(SMOKE)
    elif args.budget == "cpu":
        base = dict(CPU_BUDGET)
    else:
        base = dict(SEARCH.get(args.dataset, SEARCH["fashion-mnist"]))
    if args.dataset == "digits":
        base.pop("image_size", None)  # digits keeps its native 8x8 images
    if args.epochs is not None:
        base["epochs"] = args.epochs
    if args.train_size is not None:
        base["train_size"] = args.train_size
    return base


def search_overrides(args: argparse.Namespace, label: str, seed: int) -> dict[str, Any]:
    """The search options of one run: the budget, the strategy, ``nb201``, seed and folder."""
    extra = budget(args)
    epochs = extra.pop("epochs")
    overrides = {**extra, **STRATEGIES[label], "space": "nb201", "t_max": epochs,
                 "search_epochs": epochs, "dataset": args.dataset, "seed": seed,
                 "device": args.device, "out": str(args.out / label / f"seed{seed}")}
    if args.data_dir is not None:
        overrides["data_dir"] = str(args.data_dir)
    return overrides


def jobs(args: argparse.Namespace) -> list[Job]:
    """One search job per strategy and seed."""
    return [Job(f"{label}/seed{seed}", search_job,
                {"overrides": search_overrides(args, label, seed)})
            for seed in args.seeds for label in args.strategies]


def _device(name: str) -> str:
    if name.startswith("cuda"):
        return name.partition("(")[2].rstrip(")") or "GPU"
    return "CPU" if name in ("cpu", "?") else name


def collect(args: argparse.Namespace, table: NB201Table | None) -> list[dict[str, Any]]:
    """One row per strategy from the run folders that finished.

    ``table`` ``None``: the entries the searches wrote (bundled 12-epoch table); else every
    run's string is looked up in ``table``.
    """
    rows = []
    for label in args.strategies:
        entries: list[NB201Entry] = []
        seeds, minutes, devices, failed = [], [], set(), []
        for seed in args.seeds:
            run = args.out / label / f"seed{seed}"
            try:
                entry = run_lookup(run, table)
            except NB201Error as err:
                logging.getLogger(__name__).warning("%s: %s", run, err)
                entry = None
            if entry is None:
                if run.exists():
                    failed.append(seed)
                continue
            entries.append(entry)
            seeds.append(seed)
            cost = read_json(run / "metrics.json") or {}
            if "search_seconds" in cost:
                minutes.append(cost["search_seconds"] / 60)
            devices.add(_device(str(cost.get("device_name", cost.get("search_device", "?")))))
        rows.append({
            "strategy": label,
            "seeds": seeds,
            "failed_seeds": failed,
            "index": [e.index for e in entries],
            "arch": [e.arch for e in entries],
            "test": {d: [e.accuracy[d]["test"] for e in entries] for d in DATASETS},
            "percentile_cifar10": [e.percentile["cifar10"]["test"] for e in entries],
            "skips": [e.arch.count("skip_connect") for e in entries],
            "search_minutes": minutes,
            "devices": sorted(devices),
            "epochs": entries[0].epochs if entries else None,
            "source": entries[0].source if entries else None,
        })
    return rows


def _values(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, table: NB201Table) -> str:
    """The results table with the benchmark's references and the published anchors."""
    proxy = args.dataset != "cifar10"
    data = ("CIFAR-10 (the benchmark's own protocol)" if not proxy else
            f"{args.dataset} as a proxy: cells searched on {args.dataset}, looked up on the "
            "benchmark's CIFAR-10, CIFAR-100 and ImageNet16-120 figures")
    epochs = table.epochs
    lines = [
        f"Search data: {data}. Seeds {', '.join(map(str, args.seeds))}; search budget "
        f"{budget(args)} (`epochs`: passes over the training split, the same for every "
        f"strategy). Figures: NAS-Bench-201 after its **{epochs}-epoch** schedule "
        f"({table.source}), test accuracy mean +/- sd over seeds; percentile: share of the "
        f"benchmark's {len(table)} cells scoring at most as well on CIFAR-10 test.",
        "",
        "| strategy | runs | CIFAR-10 test % | CIFAR-10 percentile (per seed) | CIFAR-100 test % "
        "| ImageNet16-120 test % | skip connections per cell (per seed, of 6 edges) "
        "| search minutes (mean) | device |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mins = f"{statistics.mean(r['search_minutes']):.1f}" if r["search_minutes"] else "-"
        runs = f"{len(r['seeds'])}" + (f" ({len(r['failed_seeds'])} failed)"
                                       if r["failed_seeds"] else "")
        pct = ", ".join(f"{p:.1f}" for p in _values(r["percentile_cifar10"])) or "-"
        lines.append(
            f"| {r['strategy']} | {runs} | {mean_sd_text(_values(r['test']['cifar10']))} "
            f"| {pct} | {mean_sd_text(_values(r['test']['cifar100']))} "
            f"| {mean_sd_text(_values(r['test']['ImageNet16-120']))} "
            f"| {', '.join(map(str, r['skips'])) or '-'} | {mins} "
            f"| {', '.join(r['devices']) or '-'} |")
    best = int(table.accuracy[:, 0, 1].argmax())
    refs = [(f"optimum of the benchmark (index {int(table.indices[best])})", table.archs[best])]
    if ALL_SKIP in table:
        refs.append(("all-skip cell (the DARTS collapse)", ALL_SKIP))
    for name, arch in refs:
        entry = table.lookup(arch)
        lines.append(
            f"| {name} | - | {entry.accuracy['cifar10']['test']:.2f} "
            f"| {entry.percentile['cifar10']['test']:.1f} "
            f"| {entry.accuracy['cifar100']['test']:.2f} "
            f"| {entry.accuracy['ImageNet16-120']['test']:.2f} "
            f"| {arch.count('skip_connect')} | - | - |")
    lines += [
        "",
        "Published anchors, CIFAR-10 test accuracy of cells searched on CIFAR-10, **after the "
        "benchmark's 200-epoch schedule** (not comparable with a 12-epoch column):",
        "",
        "| method | CIFAR-10 test % (200 epochs) | source |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {acc:.2f} | {source} |" for name, acc, source in ANCHORS]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="auto",
                   choices=["auto", "cifar10", "fashion-mnist", "digits"],
                   help="auto: CIFAR-10 when its files are in --data-dir, else Fashion-MNIST")
    p.add_argument("--data-dir", dest="data_dir", type=Path, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the training split per search (default: the budget's)")
    p.add_argument("--train-size", dest="train_size", type=int, default=None,
                   help="training images of the search (default: the budget's)")
    p.add_argument("--budget", choices=["full", "cpu"], default="full",
                   help="full: the NAS-Bench-201 skeleton (C=16, 17 positions); cpu: C=8, "
                   "8 positions, 5,000 images")
    p.add_argument("--out", type=Path, default=Path("runs/nb201"))
    p.add_argument("--device", default="cpu", help="cpu (reproducible) | cuda | auto")
    add_executor_options(p)
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds after which no new search starts")
    p.add_argument("--nb201", type=Path, default=None, metavar="PATH",
                   help="official benchmark file to look the cells up in (default: the "
                   "bundled 12-epoch table)")
    p.add_argument("--nb201-epochs", dest="nb201_epochs", type=int, choices=[12, 200],
                   default=12, help="schedule of the figures of --nb201")
    p.add_argument("--report-only", action="store_true",
                   help="only tabulate the run folders that exist")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds on a CPU")
    p.add_argument("--results-md", type=Path, default=None,
                   help="write the table into this markdown file between markers")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.dataset = resolve_dataset(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    official = args.nb201 is not None or args.nb201_epochs != 12
    table = open_table(args.nb201, args.nb201_epochs) if official else bundled_table()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_jobs(jobs(args), deadline=args.deadline, executor=executor_from_args(args))
    rows = collect(args, table if official else None)
    publish_report(args, rows, markdown(rows, args, table), "nb201")
    return 0


if __name__ == "__main__":
    sys.exit(main())
