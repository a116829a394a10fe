"""Does the search find something? Found cells vs random cells of the same size on Fashion-MNIST.

For every seed: a BayesNAS search on a Fashion-MNIST subset, then the found cell and
``--random-cells`` random cells of the same space are retrained with the same budget. A random
cell has, per cell type, as many live ops as the found cell, placed uniformly at random over the
space's (edge, op) positions (then the connectivity rule), so the comparison is at equal size.
Prints a markdown table (mean +/- sd over seeds) and writes it into ``docs/results.md`` between
the markers ``<!-- fashion-compare:start -->`` and ``<!-- fashion-compare:end -->``
(``--results-md``).

    python experiments/compare_fashion_mnist.py --seeds 0 1 2 --out runs/compare
    python experiments/compare_fashion_mnist.py --smoke --dataset digits --out runs/compare-smoke
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pyronas.genotype import Genotype, alive_mask, derive, load_genotype, save_genotype
from pyronas.jobs import (
    count_ops,
    count_skips,
    mean_sd_text,
    publish_report,
    retrain_job,
    search_job,
)
from pyronas.space import get_space
from pyronas.train import DATASET_PRESETS

SEARCH = {"train_size": 2000, "image_size": 16, "channels": 8, "layers": 5, "t_max": 6}
RETRAIN = {"train_size": 2000, "image_size": 16, "C": 8, "layers": 5, "epochs": 4,
           "eval_every": 1000, "max_eval_batches": 16}
"""Retraining budget: 2000 training images, 4 epochs; test accuracy on the first 2048 test
images (16 batches of 128), evaluated once at the end."""
SMOKE_SEARCH = {"train_size": 200, "channels": 4, "layers": 3, "t_max": 1, "batch_size": 50,
                "curvature_batches": 1, "bn_batches": 1, "posterior_draws": 2}
SMOKE_RETRAIN = {"train_size": 200, "C": 4, "layers": 3, "epochs": 1}


def sized(budget: dict[str, Any], dataset: str) -> dict[str, Any]:
    """A copy of a budget for ``dataset`` (digits keeps its native 8x8 images)."""
    return {k: v for k, v in budget.items() if not (dataset == "digits" and k == "image_size")}


def retrain_overrides(dataset: str, smoke: bool, seed: int, device: str) -> dict[str, Any]:
    """Overrides of the comparisons' retraining preset (:data:`RETRAIN` or the smoke budget)."""
    return {**sized(SMOKE_RETRAIN if smoke else RETRAIN, dataset), "dataset": dataset,
            "seed": seed, "device": device, "num_workers": 0}


def random_cell_like(genotype: Genotype, space_name: str, seed: int) -> Genotype:
    """A random genotype of ``space_name`` with as many live ops per cell type as ``genotype``."""
    space = get_space(space_name)
    _, alive_op = alive_mask(space, genotype)
    rng = np.random.default_rng(seed)
    keep = np.zeros(alive_op.shape, dtype=bool)
    for t in range(keep.shape[0]):
        count = int(alive_op[t].sum())
        flat = rng.choice(keep[t].size, size=count, replace=False)
        keep[t].flat[flat] = True
    alive_edge = keep.any(axis=2)
    scores = rng.random(keep.shape)
    return derive(space, alive_edge, keep, cell_type_scores=scores)


def _retrain(genotype_path: Path, dataset: str, seed: int, out: Path, extra: dict) -> float:
    overrides = {**extra, "seed": seed, "dataset": dataset, "num_threads": 1}
    return float(retrain_job(str(genotype_path), DATASET_PRESETS[dataset], overrides,
                             str(out))["test_acc"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    search_extra = sized(SMOKE_SEARCH if args.smoke else SEARCH, args.dataset)
    retrain_extra = sized(SMOKE_RETRAIN if args.smoke else RETRAIN, args.dataset)
    results: dict[str, list[float]] = {"found": [], "random": []}
    rows = []
    for seed in args.seeds:
        run_dir = args.out / f"seed{seed}"
        search_dir = run_dir / "search"
        search_job({**search_extra, "dataset": args.dataset, "prior": args.prior, "seed": seed,
                    "out": str(search_dir), "num_threads": 1})
        found = load_genotype(search_dir / "genotype.json")
        found_acc = _retrain(search_dir / "genotype.json", args.dataset, seed,
                             run_dir / "retrain_found", retrain_extra)
        random_accs = []
        for r in range(args.random_cells):
            cell = random_cell_like(found, found.space or "bayesnas8", seed=1000 + r)
            path = save_genotype(cell, run_dir / f"random{r}.json")
            random_accs.append(_retrain(path, args.dataset, seed, run_dir / f"retrain_random{r}",
                                        retrain_extra))
        median = float(np.median(random_accs))
        results["found"].append(found_acc)
        results["random"].append(median)
        rows.append({"seed": seed, "found": found_acc, "random_median": median,
                     "random": random_accs, "ops": count_ops(found),
                     "skips_normal": count_skips(found)})
    return {"rows": rows, **results}


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"Fashion-MNIST subset ({args.dataset}, prior `{args.prior}`), seeds "
        f"{', '.join(map(str, args.seeds))}; search {SEARCH}, retraining {RETRAIN}.",
        "",
        "| seed | found cell: test acc % | median of random cells % | random cells % "
        "| ops in normal cell | skips in normal cell |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in summary["rows"]:
        rand = ", ".join(f"{a:.2f}" for a in row["random"])
        lines.append(f"| {row['seed']} | {row['found']:.2f} | {row['random_median']:.2f} | {rand} "
                     f"| {row['ops']} | {row['skips_normal']} |")
    diffs = [f - r for f, r in zip(summary["found"], summary["random"], strict=True)]
    lines += ["", f"found: {mean_sd_text(summary['found'])}; "
              f"random median: {mean_sd_text(summary['random'])}; "
              f"difference (found - random median): {mean_sd_text(diffs)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    parser.add_argument("--prior", default="hard", help="prior model of the search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--random-cells", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds on a CPU")
    parser.add_argument("--results-md", type=Path, default=None,
                        help="write the table into this markdown file between markers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    summary = run(args)
    publish_report(args, summary, markdown(summary, args), "fashion-compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
