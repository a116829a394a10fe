"""Proxyless BayesNAS on CIFAR-10: tree cells searched inside PyramidNet-110, then retrained.

The paper's settings are the preset (search batch 32, lr 0.1 on PyramidNet-110 with alpha 84;
retraining batch 64, lr 0.1 with a cosine schedule, cutout 16, drop path). The found trees (one
per block) are retrained next to TreeCell-A in the same backbone, and the table lists the
published anchors beside the measured numbers.

    python experiments/proxyless_cifar10.py --data-dir DATA            # the paper's setting
    python experiments/proxyless_cifar10.py --smoke                    # shallow, digits, CPU
    python experiments/proxyless_cifar10.py --smoke --dataset fashion-mnist
    python experiments/proxyless_cifar10.py --dataset fashion-mnist --depth 8 --alpha 24 \
        --train-size 2000 --retrain-epochs 10 --cutout 8 --device cpu   # a CPU comparison

Writes ``--out`` (default ``runs/proxyless_cifar10``): ``search/`` (the search run folder),
``retrain_<name>/`` per retrained genotype, ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pyronas.proxyless.search import run_proxyless_search
from pyronas.train import retrain

SEARCH_PRESET: dict[str, Any] = {
    "dataset": "cifar10", "depth": 110, "alpha": 84.0, "batch_size": 32, "lr": 0.1,
    "switch_lr": 0.1, "t_max": 6, "epochs_per_iter": 1, "backend": "ggn_lean",
}
"""The paper's proxyless search: PyramidNet-110 (alpha 84), batch 32, lr 0.1."""

RETRAIN_PRESET: dict[str, Any] = {
    "network": "pyramidnet", "pyramid_depth": 110, "pyramid_alpha": 84.0, "dataset": "cifar10",
    "batch_size": 64, "lr": 0.1, "lr_schedule": "cosine", "cutout": 16, "drop_path_prob": 0.2,
    "auxiliary": False, "epochs": 600, "weight_decay": 5e-4,
}
"""Retraining: batch 64, lr 0.1 cosine, cutout, drop path (600 epochs as Path-Level EAS)."""

SMOKE_SEARCH: dict[str, Any] = {"depth": 8, "alpha": 8.0, "t_max": 2, "max_batches": 4,
                                "curvature_batches": 1, "device": "cpu"}
SMOKE_RETRAIN: dict[str, Any] = {"pyramid_depth": 8, "pyramid_alpha": 8.0, "epochs": 1,
                                 "max_steps_per_epoch": 4, "max_eval_batches": 2,
                                 "device": "cpu", "cutout": 0, "augment": False}

ANCHORS = [
    ("TreeCell-A (Path-Level EAS), PyramidNet-110", "3.14", "5.7"),
    ("TreeCell-A + drop path + cutout, 600 epochs", "2.49", "5.7"),
    ("ProxylessNAS-G (PyramidNet-110 tree cells)", "2.08", "5.7"),
]
"""Published CIFAR-10 test errors (%) and parameter counts (M), for context."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="shallow PyramidNet (depth 8), a few batches, CPU")
    parser.add_argument("--dataset", default=None,
                        help="cifar10 (default) | fashion-mnist | digits (default with --smoke)")
    parser.add_argument("--data-dir", dest="data_dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/proxyless_cifar10"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--depth", type=int, default=None, help="PyramidNet depth (6 n + 2)")
    parser.add_argument("--alpha", type=float, default=None, help="PyramidNet widening")
    parser.add_argument("--retrain-epochs", dest="retrain_epochs", type=int, default=None)
    parser.add_argument("--train-size", dest="train_size", type=int, default=None,
                        help="subsample the training set (search and retraining)")
    parser.add_argument("--t-max", dest="t_max", type=int, default=None,
                        help="type-II iterations of the search")
    parser.add_argument("--cutout", type=int, default=None, help="retraining cutout size")
    parser.add_argument("--no-treecell-a", dest="treecell_a", action="store_false",
                        help="do not retrain TreeCell-A for comparison")
    return parser.parse_args(argv)


def configs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The search and retraining settings the arguments select."""
    search = dict(SEARCH_PRESET)
    train = dict(RETRAIN_PRESET)
    if args.smoke:
        search.update(SMOKE_SEARCH, dataset="digits")
        train.update(SMOKE_RETRAIN, dataset="digits")
    for key, value in (("dataset", args.dataset), ("data_dir", args.data_dir),
                       ("device", args.device)):
        if value is not None:
            search[key] = train[key] = value
    if args.depth is not None:
        search["depth"] = train["pyramid_depth"] = args.depth
    if args.alpha is not None:
        search["alpha"] = train["pyramid_alpha"] = args.alpha
    if args.retrain_epochs is not None:
        train["epochs"] = args.retrain_epochs
    if args.train_size is not None:
        search["train_size"] = train["train_size"] = args.train_size
    if args.t_max is not None:
        search["t_max"] = args.t_max
    if args.cutout is not None:
        train["cutout"] = args.cutout
    search["seed"] = train["seed"] = args.seed
    return search, train


def results_table(rows: list[dict[str, Any]], search: dict[str, Any]) -> str:
    """Markdown: measured rows, then the published anchors."""
    lines = ["| genotype | data set | backbone | params (M) | test error (%) |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['dataset']} | PyramidNet-{r['depth']} "
                     f"(alpha {r['alpha']:g}) | {r['params'] / 1e6:.2f} | "
                     f"{r['test_error']:.2f} |")
    for name, error, params in ANCHORS:
        lines.append(f"| {name} (published) | CIFAR-10 | PyramidNet-110 (alpha 84) | {params} | "
                     f"{error} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    search_cfg, train_cfg = configs(args)
    args.out.mkdir(parents=True, exist_ok=True)
    found = run_proxyless_search(search_cfg, args.out / "search")
    genotypes = [("BayesNAS proxyless", str(found.out / "genotype.json"))]
    if args.treecell_a:
        genotypes.append(("TreeCell-A", "TreeCell-A"))
    rows = []
    for name, genotype in genotypes:
        folder = args.out / f"retrain_{name.split()[0].replace('-', '_').lower()}"
        metrics = retrain({**train_cfg, "genotype": genotype, "name": name}, folder,
                          resume=(folder / "checkpoint.pt").exists())
        rows.append({"name": name, "dataset": train_cfg["dataset"],
                     "depth": train_cfg["pyramid_depth"], "alpha": train_cfg["pyramid_alpha"],
                     "params": metrics["params"], "test_error": metrics["test_error"],
                     "folder": str(folder)})
    summary = {"search": found.metrics, "retrain": rows, "smoke": bool(args.smoke),
               "search_settings": search_cfg, "retrain_settings": train_cfg}
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = results_table(rows, search_cfg)
    (args.out / "results.md").write_text(table)
    print(table)
    return summary


if __name__ == "__main__":
    main()
