"""Search strategies at equal search and retraining budgets on Fashion-MNIST.

Strategies: BayesNAS with each prior file (``hard``, ``ard``, ``laplace``, ``horseshoe``), DARTS
first order and random search with weight sharing, all on the same supernet (``bayesnas8`` space,
``compare_fashion_mnist.SEARCH``: same images, channels, cells, batch size and number of epochs
over the training split: 6 type-II iterations of one MAP epoch for BayesNAS, 6 epochs for the
baselines). Each found cell is retrained with ``compare_fashion_mnist.RETRAIN``. The table gives
test accuracy mean +/- sd over seeds, skip connections and ops in the normal cell (the DARTS
collapse symptom is many skips) and the search wall time; ``--results-md`` writes it into
``docs/results.md`` between ``<!-- strategies-compare:start -->`` and
``<!-- strategies-compare:end -->``.

    python experiments/compare_strategies.py --seeds 0 1 2 --out runs/strategies --workers 2
    python experiments/compare_strategies.py --smoke --dataset digits --out runs/strat-smoke

Rerunning the command skips finished work and resumes interrupted BayesNAS searches and
retrainings.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from typing import Any

from compare_fashion_mnist import (
    RETRAIN,
    SEARCH,
    SMOKE_RETRAIN,
    SMOKE_SEARCH,
    retrain_overrides,
    sized,
)

from pyronas.genotype import load_genotype
from pyronas.jobs import (
    Job,
    comparison_parser,
    count_skips,
    mean_sd_text,
    publish_report,
    read_json,
    run_jobs,
    search_then_retrain,
)
from pyronas.train import DATASET_PRESETS

STRATEGIES: dict[str, dict[str, Any]] = {
    "bayesnas-hard": {"strategy": "bayesnas", "prior": "hard"},
    "bayesnas-ard": {"strategy": "bayesnas", "prior": "ard"},
    "bayesnas-laplace": {"strategy": "bayesnas", "prior": "laplace"},
    "bayesnas-horseshoe": {"strategy": "bayesnas", "prior": "horseshoe"},
    "darts1": {"strategy": "darts1"},
    "random-ws": {"strategy": "random", "random_mode": "ws"},
}
"""Label -> search options of each compared strategy."""


def search_overrides(args: argparse.Namespace, label: str, seed: int) -> dict[str, Any]:
    extra = sized(SMOKE_SEARCH if args.smoke else SEARCH, args.dataset)
    epochs = extra.pop("t_max")
    return {**extra, **STRATEGIES[label], "t_max": epochs, "search_epochs": epochs,
            "dataset": args.dataset, "seed": seed, "device": args.device,
            "out": str(args.out / label / f"seed{seed}" / "search")}


def jobs(args: argparse.Namespace) -> list[Job]:
    return [
        Job(f"{label}/seed{seed}", search_then_retrain,
            {"search": search_overrides(args, label, seed),
             "preset": DATASET_PRESETS[args.dataset],
             "retrain": retrain_overrides(args.dataset, args.smoke, seed, args.device),
             "out": str(args.out / label / f"seed{seed}" / "retrain")})
        for seed in args.seeds for label in args.strategies
    ]


def _device(name: str) -> str:
    """The GPU's name (``cuda (NVIDIA H200)`` -> ``NVIDIA H200``), ``CPU`` for a processor."""
    if name.startswith("cuda"):
        return name.partition("(")[2].rstrip(")") or "GPU"
    return name if name.startswith(("NVIDIA", "AMD", "Tesla")) else "CPU"


def collect(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per strategy from the run folders that finished."""
    rows = []
    for label in args.strategies:
        accs, skips, ops, minutes, params, devices = [], [], [], [], [], set()
        for seed in args.seeds:
            run = args.out / label / f"seed{seed}"
            metrics = read_json(run / "retrain" / "metrics.json")
            if metrics is None:
                continue
            genotype = load_genotype(run / "search" / "genotype.json")
            accs.append(float(metrics["test_acc"]))
            params.append(float(metrics["params_M"]))
            skips.append(count_skips(genotype))
            ops.append(sum(len(pairs) for pairs in genotype.normal))
            cost = read_json(run / "search" / "metrics.json") or {}
            if "search_seconds" in cost:
                minutes.append(cost["search_seconds"] / 60)
            if cost:
                devices.add(_device(cost.get("device_name", cost.get("search_device", "?"))))
            devices.add(_device(metrics.get("device_name", metrics.get("device", "?"))))
        rows.append({"strategy": label, "accs": accs, "skips_normal": skips, "ops_normal": ops,
                     "search_minutes": minutes, "params_M": params, "devices": sorted(devices)})
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    search = SMOKE_SEARCH if args.smoke else SEARCH
    budget = SMOKE_RETRAIN if args.smoke else RETRAIN
    lines = [
        f"{args.dataset}, seeds {', '.join(map(str, args.seeds))}; search {search} "
        f"(the same number of epochs for every strategy); retraining {budget}.",
        "",
        "| strategy | test acc % (mean +/- sd) | runs | skips in normal cell (per seed) "
        "| ops in normal cell (per seed) | params (M, mean) | search minutes (mean) | device |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mins = f"{statistics.mean(r['search_minutes']):.1f}" if r["search_minutes"] else "-"
        params = f"{statistics.mean(r['params_M']):.3f}" if r["params_M"] else "-"
        lines.append(
            f"| {r['strategy']} | {mean_sd_text(r['accs'])} | {len(r['accs'])} "
            f"| {', '.join(map(str, r['skips_normal'])) or '-'} "
            f"| {', '.join(map(str, r['ops_normal'])) or '-'} | {params} | {mins} "
            f"| {', '.join(r['devices']) or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = comparison_parser(__doc__.splitlines()[0], "runs/strategies")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES),
                        choices=list(STRATEGIES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_jobs(jobs(args), workers=args.workers, deadline=args.deadline)
    rows = collect(args)
    publish_report(args, rows, markdown(rows, args), "strategies-compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
