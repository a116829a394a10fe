"""Search a CIFAR-10 cell on the proxy supernet (BayesNAS Table 1), one run per seed.

    python experiments/search_cifar10.py --data-dir data --seeds 0 1 2
    python experiments/search_cifar10.py --config search_cifar10_authors --lambda 0.005 0.007 0.01
    python experiments/search_cifar10.py --config search_cifar10_darts1 --seeds 0 1 2
    python experiments/search_cifar10.py --smoke --data-dir tiny_cifar --out runs/smoke --seeds 0

Presets (``experiments/configs``): ``search_cifar10`` (ours: DARTS space, paper schedule),
``search_cifar10_authors`` (the authors' released settings: bayesnas8 space, batch 18, summed
curvature, released schedule) and ``search_cifar10_darts1`` (DARTS first order, 50 epochs).
``--strategy`` switches between BayesNAS and the baselines on the same supernet; ``--lambda``
sets both group-lasso strengths (several values: a sweep); ``--set key=value`` overrides any
search config key.

Each run goes to ``OUT/<label>_seed<k>/`` (the search run folder: config.yaml, metrics.csv,
genotype.json, metrics.json with the search cost ...). Seeds whose folder already holds
``genotype.json`` and ``metrics.json`` are not run again; an interrupted BayesNAS run is resumed
from its checkpoint (an interrupted baseline run has none: remove its folder to start over).
A summary table (genotype, wall time, GPU-days per run) is printed at the end. Retrain a found
cell with ``python experiments/retrain_cifar10.py --genotype OUT/<label>_seed<k>/genotype.json``;
its metrics then carry the search cost for ``experiments/tables.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyronas.config import parse_overrides
from pyronas.genotype import load_genotype
from pyronas.search import SEARCH_CHOICES, compact_genotype, resolve_search_config, run_search

DEFAULT_CONFIG = "search_cifar10"
DEFAULT_OUT = Path("runs") / "search_cifar10"
FINISHED = ("genotype.json", "metrics.json")
"""A run folder holding both files is a finished search."""

SMOKE: dict[str, Any] = {
    "channels": 4,
    "layers": 3,
    "batch_size": 8,
    "train_size": 60,
    "image_size": 8,
    "t_max": 1,
    "epochs": 1,
    "curvature_batches": 1,
    "bn_batches": 1,
    "posterior_draws": 2,
    "loglik_batches": 1,
    "search_epochs": 1,
    "num_candidates": 2,
    "device": "cpu",
    "progress": False,
}
"""Sizes that run on a CPU in seconds (a check that the pipeline works, not a result)."""

log = logging.getLogger("search_cifar10")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML file or preset name")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one search each")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="parent folder of the run folders")
    p.add_argument(
        "--lambda", dest="lambdas", type=float, nargs="+", metavar="LAMBDA",
        help="lambda_edge = lambda_op (several values: one set of seeds each)",
    )  # fmt: skip
    p.add_argument("--strategy", choices=SEARCH_CHOICES["strategy"], help="search strategy")
    p.add_argument("--label", help="run folder prefix (default from the config and options)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--smoke", action="store_true", help="tiny sizes that run on a CPU in seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys"
    )
    return p


def _number(x: float) -> str:
    return f"{x:g}"


def run_label(cfg: dict[str, Any], config: str) -> str:
    """Folder prefix of a run: the config's name, the strategy when the name lacks it, and the
    lambdas of a BayesNAS search (``search_cifar10_authors_lam0.01``)."""
    label = Path(config).stem if config.endswith((".yaml", ".yml")) else Path(config).name
    if cfg["strategy"] != "bayesnas" and cfg["strategy"] not in label:
        label += f"_{cfg['strategy']}"
    if cfg["strategy"] == "bayesnas":
        edge, op = cfg["lambda_edge"], cfg["lambda_op"]
        lam = _number(edge) if edge == op else f"{_number(edge)}-{_number(op)}"
        label += f"_lam{lam}"
    return label


def is_finished(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a finished search (``genotype.json`` and ``metrics.json``)."""
    return all((run_dir / name).is_file() for name in FINISHED)


def run_one(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Run (or resume) one search into ``run_dir``; return its summary (see :func:`summary`)."""
    resume = (run_dir / "run.json").is_file()
    if resume:
        log.info("resuming the interrupted search in %s", run_dir)
    if cfg["strategy"] == "bayesnas":
        run_search({**cfg, "out": str(run_dir), "resume": resume}, run_dir)
    else:
        from pyronas.strategies import STRATEGIES

        STRATEGIES[cfg["strategy"]]({**cfg, "out": str(run_dir), "resume": resume}, run_dir)
    return summary(run_dir)


def summary(run_dir: Path) -> dict[str, Any]:
    """Label, genotype (compact string) and search cost of a finished run folder."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    genotype = load_genotype(run_dir / "genotype.json")
    return {
        "run_dir": str(run_dir),
        "strategy": metrics.get("strategy"),
        "genotype": compact_genotype(genotype),
        "search_seconds": float(metrics["search_seconds"]),
        "search_device": metrics.get("search_device"),
        "search_gpu_days": metrics.get("search_gpu_days"),
    }


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table: run, wall time, device, GPU-days ('-' on a CPU), genotype."""
    header = ["Run", "Wall time (s)", "Device", "GPU-days", "Genotype"]
    body = [
        [
            Path(r["run_dir"]).name,
            f"{r['search_seconds']:.1f}",
            str(r["search_device"]),
            "-" if r["search_gpu_days"] is None else f"{r['search_gpu_days']:.3f}",
            r["genotype"],
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    return "\n".join(
        "  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    )


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parse ``argv``, run one search per (lambda, seed), print the summary; return its rows."""
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = dict(SMOKE) if args.smoke else {}
    overrides["dataset"] = "cifar10"
    for key, value in (
        ("data_dir", args.data_dir),
        ("strategy", args.strategy),
        ("device", args.device),
    ):
        if value is not None:
            overrides[key] = value
    if args.no_progress:
        overrides["progress"] = False
    overrides.update(parse_overrides(args.set))
    lambdas: list[float | None] = list(args.lambdas) if args.lambdas else [None]
    rows = []
    for lam in lambdas:
        extra = {} if lam is None else {"lambda_edge": lam, "lambda_op": lam}
        base = resolve_search_config(args.config, {**overrides, **extra})
        label = args.label or run_label(base, args.config)
        for seed in args.seeds:
            cfg = resolve_search_config(args.config, {**overrides, **extra, "seed": seed})
            run_dir = Path(args.out) / f"{label}_seed{seed}"
            if is_finished(run_dir):
                log.info("%s is finished; not run again", run_dir)
                rows.append(summary(run_dir))
                continue
            log.info("searching %s (strategy %s, seed %d)", run_dir, cfg["strategy"], seed)
            rows.append(run_one(cfg, run_dir))
    print(format_summary(rows))
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main(sys.argv[1:])
