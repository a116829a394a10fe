"""Compression by structured sparsity (group HARD): networks x seeds, one run folder each.

LeNet-300-100 and LeNet-5 on Fashion-MNIST (or digits), ``vgg_small`` on CIFAR-10 when its
files are there. Each run is :func:`pyronas.compress.run.run_compress`; a finished run
(``metrics.json`` present) is skipped. The two settings (units only, ``--prune-weights``) train
the same dense network: the second one run for a network and seed starts from the first one's
``dense.pt`` (``dense_from``: the same numbers, the dense phase once). The table gives, per
network, the units left per layer, weights kept, compression ratio, FLOPs, test error before
and after and wall time, the dense phase counted when reused (mean +/- sd over seeds).

    python experiments/compress.py --seeds 0 1 2 --out runs/compress
    python experiments/compress.py --prune-weights --seeds 0 1 2 --out runs/compress
    python experiments/compress.py --networks vgg_small --dataset cifar10 --data-dir DATA
    python experiments/compress.py --smoke --out runs/compress-smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

from pyronas.compress.networks import NETWORKS
from pyronas.compress.run import DENSE_CHECKPOINT, run_compress

SETTINGS: dict[str, Any] = {"pretrain_epochs": 20, "pretrain_schedule": "cosine", "t_max": 4,
                            "finetune_epochs": 8, "baselines": True, "scratch_baseline": True}
"""Settings of the full runs (the rest are the defaults of ``CompressSettings``): a dense
network trained to convergence, then the type-II loop and 8 fine-tuning epochs; the baselines
include the pruned architecture trained from fresh weights."""

PER_NETWORK: dict[str, dict[str, Any]] = {
    "lenet300": {"lambda_weight": 2e-6, "prune_inputs": False},
    "lenet5": {"lambda_weight": 3e-7, "group_prices": {"conv2:in": 4.0},
               "max_units": {"conv1": 16}, "finetune_schedule": "cosine",
               "finetune_distill": 0.9},
    "vgg_small": {"lambda_weight": 1e-7},
}
"""Settings per network (``--lambda-weight`` overrides lambda). LeNet-300-100 on Fashion-MNIST
keeps its input pixels (grouping them prunes them hardest and loses to both baselines); at 2e-6
it removes 84-88 % of the weights. LeNet-5 prices conv2's input channels 4x, which prunes conv1's
filters and makes the pruned network about 2x faster, and keeps at most 16 of them (conv2 runs
at ~60 % of its rate from 17 input channels on the CPU); its fine-tuning (and the baselines')
is annealed and distilled from the dense network (docs/results.md)."""

SINGLE_WEIGHTS: dict[str, dict[str, Any]] = {
    "lenet300": {"lambda_weight": 7e-7, "prune_inputs": False, "prune_weights": True,
                 "t_max": 8, "finetune_schedule": "cosine", "finetune_distill": 0.9},
    "lenet5": {"lambda_weight": 1e-7, "group_prices": {"conv2:in": 4.0}, "prune_weights": True,
               "finetune_schedule": "cosine", "finetune_distill": 0.9},
    "vgg_small": {"lambda_weight": 1e-7, "prune_weights": True, "finetune_schedule": "cosine"},
}
"""Settings per network with ``--prune-weights``: single weights pruned inside the kept units
(90-92 % of the weights removed on Fashion-MNIST), fine-tuning annealed and distilled from the
dense network (ours and the baselines alike), LeNet-300-100 with 8 type-II iterations
(docs/results.md);
``vgg_small`` keeps the lambda of :data:`PER_NETWORK`, not calibrated."""

SMOKE: dict[str, Any] = {"dataset": "digits", "batch_size": 32, "max_batches": 3,
                         "pretrain_epochs": 1, "t_max": 1, "finetune_epochs": 1,
                         "curvature_batches": 1, "lambda_weight": 1e-9,
                         "baselines": True, "scratch_baseline": True}  # fmt: skip
"""A few batches on digits: checks the pipeline, not the compression."""


def _mean_sd(values: list[float], fmt: str = "{:.2f}") -> str:
    if len(values) < 2:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} +/- {fmt.format(statistics.stdev(values))}"


def _baseline(runs: list[dict[str, Any]], key: str) -> str:
    values = [100 * r[key] for r in runs if key in r]
    return _mean_sd(values) if values else "-"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """A markdown table, one row per network (mean +/- sd over its runs); weights kept are the
    nonzero ones, stored the dense size of the pruned layers (they differ with single weights
    pruned, ``prune_weights``)."""
    lines = [
        "| network | data | seeds | units | weights kept (stored) | ratio | FLOPs before -> after "
        "| test error before -> after (%) | magnitude baseline (%) | structured baseline (%) "
        "| same architecture from scratch (%) | wall (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for network, runs in results.items():
        units = " / ".join(
            f"{'-'.join(map(str, r['units_before']))} -> {'-'.join(map(str, r['units_after']))}"
            for r in runs
        )
        kept = _mean_sd([100 * r["weights_kept"] / r["weights_before"] for r in runs])
        stored = _mean_sd([100 * r.get("weights_stored", r["weights_kept"]) / r["weights_before"]
                           for r in runs])
        flops = _mean_sd([r["flops_after"] for r in runs], "{:.0f}")
        lines.append(
            f"| {network} | {runs[0]['dataset']} | {len(runs)} | {units} | {kept} % ({stored} %) "
            f"| {_mean_sd([r['compression_ratio'] for r in runs], '{:.1f}')}x "
            f"| {runs[0]['flops_before']} -> {flops} "
            f"| {_mean_sd([100 * r['test_error_before'] for r in runs])} -> "
            f"{_mean_sd([100 * r['test_error_after'] for r in runs])} "
            f"| {_baseline(runs, 'baseline_magnitude_test_error')} "
            f"| {_baseline(runs, 'baseline_structured_test_error')} "
            f"| {_baseline(runs, 'baseline_scratch_test_error')} "
            f"| {_mean_sd([_wall(r) for r in runs], '{:.0f}')} |"
        )
    return "\n".join(lines)


def _wall(metrics: dict[str, Any]) -> float:
    """The run's wall time, its dense phase included when it was taken from another run."""
    reused = metrics.get("dense_reused", False)
    return metrics["wall_seconds"] + (metrics["dense_seconds"] if reused else 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=["lenet300", "lenet5"])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--lambda-weight", type=float, default=None)
    parser.add_argument("--out", default="runs/compress")
    parser.add_argument("--prune-weights", action="store_true",
                        help="also prune single weights inside the kept units (SINGLE_WEIGHTS)")
    parser.add_argument("--smoke", action="store_true", help="tiny runs on digits, seed 0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    chosen = SINGLE_WEIGHTS if args.prune_weights else PER_NETWORK
    given: dict[str, Any] = {"device": args.device, "data_dir": args.data_dir,
                             "prune_weights": args.prune_weights}
    if args.lambda_weight is not None:
        given["lambda_weight"] = args.lambda_weight
    dataset = SMOKE["dataset"] if args.smoke else args.dataset
    seeds = [0] if args.smoke else args.seeds
    results: dict[str, list[dict[str, Any]]] = {}
    for network in args.networks:
        # the network's settings override the shared ones; the command line overrides both
        base = dict(SMOKE) if args.smoke else {**SETTINGS, **chosen[network], "dataset": dataset}
        for seed in seeds:
            tag, other_tag = ("-weights", "") if args.prune_weights else ("", "-weights")
            out = Path(args.out) / f"{network}-{dataset}{tag}-s{seed}"
            other = Path(args.out) / f"{network}-{dataset}{other_tag}-s{seed}" / DENSE_CHECKPOINT
            done = out / "metrics.json"
            if done.exists():
                metrics = json.loads(done.read_text())
            else:
                settings = {**base, **given, "network": network, "seed": seed}
                if other.is_file() and not (out / DENSE_CHECKPOINT).is_file():
                    settings["dense_from"] = str(other)  # the other setting's dense network
                metrics = run_compress(settings, out).metrics
            results.setdefault(network, []).append(metrics)
    report = table(results)
    (Path(args.out) / "table.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
