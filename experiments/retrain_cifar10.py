"""Retrain a genotype on CIFAR-10 with the DARTS evaluation protocol (BayesNAS Table 1).

    python experiments/retrain_cifar10.py --genotype BAYESNAS_0.01 --data-dir data --seed 0
    python experiments/retrain_cifar10.py --config experiments/configs/retrain_cifar10_authors.yaml
    python experiments/retrain_cifar10.py --smoke --data-dir tiny_cifar --out runs/smoke

The run folder gets config.yaml, metrics.csv, checkpoint.pt and metrics.json; ``--resume``
continues an interrupted run. ``--set key=value`` overrides any config key. Tables over seeds:
``python experiments/tables.py runs/retrain_cifar10/*``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pyronas.config import load_config, parse_overrides
from pyronas.train import retrain

DEFAULT_CONFIG = "retrain_cifar10"

SMOKE = {
    "C": 4,
    "layers": 3,
    "epochs": 1,
    "batch_size": 8,
    "max_steps_per_epoch": 2,
    "max_eval_batches": 2,
    "device": "cpu",
    "num_workers": 0,
}
"""Sizes that run on a CPU in seconds (a check that the pipeline works, not a result)."""


def build_parser(description: str, default_config: str) -> argparse.ArgumentParser:
    """The arguments shared by the retraining scripts."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=default_config, help="YAML file or preset name")
    p.add_argument("--genotype", help="bundled genotype name or genotype JSON file")
    p.add_argument("--data-dir", help="folder holding the data set")
    p.add_argument("--out", help="run folder (default runs/<script>/<genotype>_seed<seed>)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--smoke", action="store_true", help="tiny sizes that run on a CPU in seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys"
    )
    return p


def run(
    argv: Sequence[str] | None, description: str, default_config: str, smoke: dict, script: str
) -> dict:
    """Parse ``argv``, resolve the config, retrain, print the metrics as JSON."""
    args = build_parser(description, default_config).parse_args(argv)
    overrides: dict = dict(smoke) if args.smoke else {}
    for key, value in (
        ("genotype", args.genotype),
        ("data_dir", args.data_dir),
        ("seed", args.seed),
        ("device", args.device),
    ):
        if value is not None:
            overrides[key] = value
    if args.no_progress:
        overrides["progress"] = False
    overrides.update(parse_overrides(args.set))
    cfg = load_config(args.config, overrides)
    out = args.out or Path("runs") / script / f"{cfg['genotype']}_seed{cfg['seed']}"
    metrics = retrain(cfg, out, resume=args.resume)
    print(json.dumps(metrics, indent=2))
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return run(argv, __doc__.splitlines()[0], DEFAULT_CONFIG, SMOKE, "retrain_cifar10")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main(sys.argv[1:])
