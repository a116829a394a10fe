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
from pathlib import Path
from typing import Any

from compare_fashion_mnist import (
    RETRAIN,
    SEARCH,
    SMOKE_RETRAIN,
    SMOKE_SEARCH,
    random_cell_like,
    retrain_overrides,
    sized,
)

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
    "random-size": {},
}
"""Label -> search options of each compared strategy. ``random-size`` is no search: a random
cell with as many ops per cell type as the ``bayesnas-hard`` cell of the same seed (drawn by
:func:`compare_fashion_mnist.random_cell_like`), retrained with the same budget."""


def search_overrides(args: argparse.Namespace, label: str, seed: int) -> dict[str, Any]:
    extra = sized(SMOKE_SEARCH if args.smoke else SEARCH, args.dataset)
    epochs = extra.pop("t_max")
    return {**extra, **STRATEGIES[label], "t_max": epochs, "search_epochs": epochs,
            "dataset": args.dataset, "seed": seed, "device": args.device,
            "out": str(args.out / label / f"seed{seed}" / "search")}


def _budget_options(args: argparse.Namespace, budget: dict[str, Any]) -> dict[str, Any]:
    """``budget`` with ``--retrain-size``, ``--retrain-epochs`` and ``--full-test`` applied."""
    budget = dict(budget)
    if args.retrain_size is not None:
        budget["train_size"] = args.retrain_size
    if args.retrain_epochs is not None:
        budget["epochs"] = args.retrain_epochs
    if args.full_test:
        budget["max_eval_batches"] = None
    return budget


def retrain_budget(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Retraining overrides: the comparisons' budget, with the options of the command line."""
    return _budget_options(args, retrain_overrides(args.dataset, args.smoke, seed, args.device))


def search_retrain_and_random_like(search: dict[str, Any], preset: str, retrain: dict[str, Any],
                                   out: str, random_out: str, seed: int) -> dict[str, Any]:
    """:func:`search_then_retrain`, then a random cell of the found cell's size, retrained."""
    result = search_then_retrain(search, preset, retrain, out)
    found = load_genotype(Path(search["out"]) / "genotype.json")
    folder = Path(random_out)
    folder.mkdir(parents=True, exist_ok=True)
    path = save_genotype(random_cell_like(found, found.space or "bayesnas8", 1000 + seed),
                         folder / "genotype.json")
    retrain_job(str(path), preset, retrain, str(folder / "retrain"))
    return result


def jobs(args: argparse.Namespace) -> list[Job]:
    out = []
    labels = [label for label in args.strategies if label != "random-size"]
    for seed in args.seeds:
        for label in labels:
            kwargs = {"search": search_overrides(args, label, seed),
                      "preset": DATASET_PRESETS[args.dataset],
                      "retrain": retrain_budget(args, seed),
                      "out": str(args.out / label / f"seed{seed}" / "retrain")}
            func = search_then_retrain
            if label == "bayesnas-hard" and "random-size" in args.strategies:
                func = search_retrain_and_random_like
                kwargs.update(random_out=str(args.out / "random-size" / f"seed{seed}"),
                              seed=seed)
            out.append(Job(f"{label}/seed{seed}", func, kwargs))
    return out


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
        seeds: list[int] = []
        for seed in args.seeds:
            run = args.out / label / f"seed{seed}"
            metrics = read_json(run / "retrain" / "metrics.json")
            if metrics is None:
                continue
            found = run / ("genotype.json" if label == "random-size" else "search/genotype.json")
            genotype = load_genotype(found)
            seeds.append(seed)
            accs.append(float(metrics["test_acc"]))
            params.append(float(metrics["params_M"]))
            skips.append(count_skips(genotype))
            ops.append(count_ops(genotype))
            cost = read_json(run / "search" / "metrics.json") or {}
            if "search_seconds" in cost:
                minutes.append(cost["search_seconds"] / 60)
            if cost:
                devices.add(_device(cost.get("device_name", cost.get("search_device", "?"))))
            devices.add(_device(metrics.get("device_name", metrics.get("device", "?"))))
        rows.append({"strategy": label, "seeds": seeds, "accs": accs, "skips_normal": skips,
                     "ops_normal": ops, "search_minutes": minutes, "params_M": params,
                     "devices": sorted(devices)})
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    search = SMOKE_SEARCH if args.smoke else SEARCH
    budget = _budget_options(args, SMOKE_RETRAIN if args.smoke else RETRAIN)
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


def paired_markdown(rows: list[dict[str, Any]], reference: str = "bayesnas-hard") -> str:
    """Per-seed differences of every strategy to ``reference``, with paired tests."""
    from scipy import stats

    by_label = {r["strategy"]: dict(zip(r["seeds"], r["accs"], strict=True)) for r in rows}
    ref = by_label.get(reference, {})
    lines = [
        f"Paired by seed: test accuracy of `{reference}` minus that of each strategy "
        "(points). p values: paired t-test (two-sided) and Wilcoxon signed-rank test "
        "(one-sided, `reference` better; with 5 seeds its smallest possible p is 0.031).",
        "",
        "| strategy | seeds | difference per seed | mean +/- sd | paired t p | Wilcoxon p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, accs in by_label.items():
        if label == reference:
            continue
        common = sorted(set(ref) & set(accs))
        diffs = [ref[s] - accs[s] for s in common]
        if len(diffs) < 2:
            continue
        t_p = stats.ttest_rel([ref[s] for s in common], [accs[s] for s in common]).pvalue
        w_p = (stats.wilcoxon(diffs, alternative="greater").pvalue
               if any(d != 0 for d in diffs) else float("nan"))
        lines.append(f"| {label} | {len(common)} | {', '.join(f'{d:+.2f}' for d in diffs)} "
                     f"| {mean_sd_text(diffs)} | {t_p:.3f} | {w_p:.3f} |")
    return "\n".join(lines)


def stability_markdown(args: argparse.Namespace, label: str = "bayesnas-hard") -> str:
    """Mean pairwise Jaccard index, over seeds, of the kept (cell type, node, input, op)."""
    kept = []
    for seed in args.seeds:
        path = args.out / label / f"seed{seed}" / "search" / "genotype.json"
        if path.exists():
            g = load_genotype(path)
            kept.append({(t, j, src, op) for t in g.cell_types
                         for j, pairs in enumerate(g.cell(t)) for op, src in pairs})
    pairs = [(a, b) for i, a in enumerate(kept) for b in kept[i + 1:]]
    if not pairs:
        return ""
    jac = [len(a & b) / max(1, len(a | b)) for a, b in pairs]
    return (f"Stability of `{label}` over {len(kept)} seeds: mean pairwise Jaccard index of the "
            f"kept (cell type, node, input, op) {statistics.mean(jac):.2f} "
            f"(min {min(jac):.2f}, max {max(jac):.2f}).")


def main(argv: list[str] | None = None) -> int:
    parser = comparison_parser(__doc__.splitlines()[0], "runs/strategies")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES),
                        choices=list(STRATEGIES))
    parser.add_argument("--retrain-size", type=int, default=None,
                        help="training images of the retraining (default: the comparisons')")
    parser.add_argument("--retrain-epochs", type=int, default=None,
                        help="retraining epochs (default: the comparisons')")
    parser.add_argument("--section", default="strategies-compare",
                        help="marker name of the results.md section to write")
    parser.add_argument("--full-test", action="store_true",
                        help="score on the whole test split (default: its first 2048 images)")
    args = parser.parse_args(argv)
    if "random-size" in args.strategies and "bayesnas-hard" not in args.strategies:
        args.strategies.insert(0, "bayesnas-hard")  # the cells whose size random-size copies
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_jobs(jobs(args), deadline=args.deadline, executor=executor_from_args(args))
    rows = collect(args)
    text = "\n\n".join(part for part in (markdown(rows, args), paired_markdown(rows),
                                          stability_markdown(args)) if part)
    publish_report(args, rows, text, args.section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
