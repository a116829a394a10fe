"""Published cells against random cells of the same space, retrained at one budget on Fashion-MNIST.

Cells: DARTS_V2, the three released BayesNAS cells and ``--random-cells`` uniformly random cells
of the DARTS space (two inputs per node, one op per input; fixed draws, the same for every seed).
Every (cell, seed) pair is retrained with the budget of ``compare_fashion_mnist.RETRAIN``; the
table gives test accuracy mean +/- sd over seeds, parameters and skip connections in the normal
cell, and is written into ``docs/results.md`` between ``<!-- cells-compare:start -->`` and
``<!-- cells-compare:end -->`` with ``--results-md``.

    python experiments/compare_cells.py --seeds 0 1 2 --out runs/cells --workers 2
    python experiments/compare_cells.py --smoke --dataset digits --out runs/cells-smoke

``--cell NAME=GENOTYPE`` (repeatable) retrains your own cells (a genotype.json each) instead of
the published ones; a ``GROUP/`` prefix on the names (``diag/s0``, ``full/s0``) pools the runs of
each group in the last line, and ``--section`` names the markdown section to write:

    python experiments/compare_cells.py --random-cells 0 --cell diag/s0=runs/d0/genotype.json \
        --cell full/s0=runs/f0/genotype.json --seeds 0 1 --out runs/laplace-cells

Rerunning the command skips finished retrainings and resumes interrupted ones.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from compare_fashion_mnist import RETRAIN, SMOKE_RETRAIN, retrain_overrides

from pyronas.genotype import load_genotype, save_genotype
from pyronas.jobs import (
    Job,
    comparison_parser,
    count_ops,
    count_skips,
    executor_from_args,
    mean_sd_text,
    publish_report,
    read_json,
    retrain_job,
    run_jobs,
)
from pyronas.space import get_space
from pyronas.strategies.random_search import sample_random_genotype
from pyronas.train import DATASET_PRESETS

PUBLISHED = ("DARTS_V2", "BAYESNAS_0.01", "BAYESNAS_0.007", "BAYESNAS_0.005")
RANDOM_CELL_SEED = 2019
"""Seed of the random cells' generator: the same cells in every run of this script."""


def random_cells(count: int, out: Path) -> list[Path]:
    """``count`` random DARTS-space cells saved as ``out/random{i}.json``."""
    rng = np.random.default_rng(RANDOM_CELL_SEED)
    space = get_space("darts")
    return [save_genotype(sample_random_genotype(space, rng), out / f"random{i}.json")
            for i in range(count)]


def jobs(args: argparse.Namespace) -> tuple[list[Job], dict[str, str]]:
    """Seed-major list of retraining jobs and ``cell name -> genotype`` (name or file)."""
    args.out.mkdir(parents=True, exist_ok=True)
    cells = dict(args.cell) if args.cell else {name: name for name in PUBLISHED}
    for path in random_cells(args.random_cells, args.out / "cells"):
        cells[path.stem] = str(path)
    work = [
        Job(f"{name}/seed{seed}", retrain_job,
            {"genotype": genotype, "preset": DATASET_PRESETS[args.dataset],
             "overrides": retrain_overrides(args.dataset, args.smoke, seed, args.device),
             "out": str(args.out / name / f"seed{seed}")})
        for seed in args.seeds for name, genotype in cells.items()
    ]
    return work, cells


def collect(args: argparse.Namespace, cells: dict[str, str]) -> list[dict[str, Any]]:
    """One row per cell from the run folders that finished."""
    rows = []
    for name, genotype in cells.items():
        runs = [read_json(args.out / name / f"seed{s}" / "metrics.json") for s in args.seeds]
        done = [m for m in runs if m is not None]
        cell = load_genotype(genotype)
        rows.append({
            "cell": name,
            "group": cell_group(name),
            "accs": [float(m["test_acc"]) for m in done],
            "seeds_done": len(done),
            "params_M": done[0]["params_M"] if done else None,
            "skips_normal": count_skips(cell),
            "ops": [count_ops(cell, "normal"), count_ops(cell, "reduce")],
            "devices": sorted({m.get("device_name", m.get("device", "?")) for m in done}),
        })
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    budget = SMOKE_RETRAIN if args.smoke else RETRAIN
    devices = sorted({d for r in rows for d in r["devices"]})
    lines = [
        f"{args.dataset}, seeds {', '.join(map(str, args.seeds))}, every cell retrained with "
        f"{budget} (test accuracy on the first 2048 test images); device(s): "
        f"{', '.join(devices) or '-'}.",
        "",
        "| cell | test acc % (mean +/- sd) | runs | params (M) | ops (normal + reduce) "
        "| skips in normal cell |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        params = f"{r['params_M']:.3f}" if r["params_M"] is not None else "-"
        lines.append(f"| {r['cell']} | {mean_sd_text(r['accs'])} | {r['seeds_done']} | {params} "
                     f"| {r['ops'][0]} + {r['ops'][1]} | {r['skips_normal']} |")
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).extend(r["accs"])
    pooled = "; ".join(f"all {group}-cell runs: {mean_sd_text(accs)}"
                       for group, accs in groups.items())
    lines += ["", pooled[0].upper() + pooled[1:] + "."]
    return "\n".join(lines)


def cell_group(name: str) -> str:
    """``diag/s0`` -> ``diag``; ``random3`` -> ``random``; a published cell -> ``published``."""
    if "/" in name:
        return name.split("/", 1)[0]
    return "random" if name.startswith("random") else "published"


def parse_cell(item: str) -> tuple[str, str]:
    """``NAME=GENOTYPE`` -> ``(NAME, GENOTYPE)``; the genotype file must exist."""
    name, _, genotype = item.partition("=")
    if not name or not genotype:
        raise argparse.ArgumentTypeError(f"--cell {item!r}: expected NAME=GENOTYPE")
    if not Path(genotype).is_file():
        raise argparse.ArgumentTypeError(f"--cell {item!r}: no genotype file {genotype}")
    return name, genotype


def main(argv: list[str] | None = None) -> int:
    parser = comparison_parser(__doc__.splitlines()[0], "runs/cells")
    parser.add_argument("--random-cells", type=int, default=5)
    parser.add_argument("--cell", type=parse_cell, action="append", default=None,
                        metavar="NAME=GENOTYPE",
                        help="retrain this genotype file instead of the published cells "
                        "(repeatable; NAME may carry a GROUP/ prefix)")
    parser.add_argument("--section", default="cells-compare",
                        help="markdown section of --results-md to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    work, cells = jobs(args)
    if not args.report_only:
        run_jobs(work, deadline=args.deadline, executor=executor_from_args(args))
    rows = collect(args, cells)
    publish_report(args, rows, markdown(rows, args), args.section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
