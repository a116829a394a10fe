"""``make demo``: the whole chain on the embedded digits data set, sized for a CPU.

search (BayesNAS, HARD prior) -> genotype.json and cell diagrams -> short retraining of the
found cell -> posterior report (ArviZ summary, plots). Each stage writes into its own folder
under ``--out``; a stage whose output already exists is not run again, so an interrupted demo
continues where it stopped.

Run ``python -m pyronas.demo --out runs/demo``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEMO_SEARCH = {
    "dataset": "digits",
    "space": "bayesnas8",
    "prior": "hard",
    "channels": 8,
    "layers": 5,
    "batch_size": 32,
    "t_max": 4,
    "num_threads": 1,
}
"""Search settings of the demo (flat keys; the rest are the defaults of
:class:`pyronas.settings.SearchSettings`)."""

DEMO_RETRAIN = {"epochs": 6, "num_threads": 1}
"""Overrides of the ``retrain_digits`` preset for the demo."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="python -m pyronas.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide progress bars"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # arviz logs at INFO which of its optional preview packages are missing: not news to users
    logging.getLogger("arviz").setLevel(logging.WARNING)

    from pyronas.config import load_config
    from pyronas.report import run_analyze_cli
    from pyronas.run_summary import load_run
    from pyronas.search import resolve_search_config, run_search
    from pyronas.train import retrain

    start = time.perf_counter()
    search_dir, retrain_dir = args.out / "search", args.out / "retrain"

    print("== 1/3 search: BayesNAS with the HARD prior on digits ==", flush=True)
    if (search_dir / "posterior.pt").exists():
        print(f"(already done: {search_dir})")
    else:
        cfg = resolve_search_config(
            None,
            {
                **DEMO_SEARCH,
                "seed": args.seed,
                "progress": args.progress,
                "out": str(search_dir),
                "resume": (search_dir / "run.json").exists(),
            },
        )
        run_search(cfg)
    genotype_path = search_dir / "genotype.json"

    print("\n== 2/3 retrain the found cell ==", flush=True)
    metrics_path = retrain_dir / "metrics.json"
    if metrics_path.exists():
        print(f"(already done: {retrain_dir})")
        metrics = json.loads(metrics_path.read_text())
    else:
        cfg = load_config(
            "retrain_digits",
            {
                **DEMO_RETRAIN,
                "genotype": str(genotype_path),
                "seed": args.seed,
                "progress": args.progress,
            },
        )
        metrics = retrain(cfg, retrain_dir, resume=(retrain_dir / "checkpoint.pt").exists())

    print("\n== 3/3 posterior report ==", flush=True)
    run_analyze_cli([search_dir], None)

    run = load_run(search_dir)
    print("\n== summary ==")
    print(f"genotype:        {genotype_path}")
    print(f"cell diagrams:   {', '.join(str(p) for p in sorted(search_dir.glob('cell_*.png')))}")
    print(
        f"posterior:       {search_dir / 'posterior.nc'} (ArviZ), plots in {search_dir / 'plots'}"
    )
    print(f"type-II iters:   {len(run.metrics)}")
    print(
        f"test accuracy:   {metrics['test_acc']:.2f}% after {metrics.get('epochs', '?')} epochs "
        f"({metrics['params_M']:.3f} M parameters)"
    )
    print(f"demo time:       {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
