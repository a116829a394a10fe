"""How many ops does a lambda keep? BayesNAS searches over a lambda sweep, per data set and seed.

Every search uses the default settings of ``pyronas search`` (digits) or the Fashion-MNIST search
budget of the comparisons (:data:`compare_fashion_mnist.SEARCH`), with ``lambda_edge = lambda_op
= lambda``. The table gives, per run, the ops and edges of each cell type in ``genotype.json``,
the supernet's final validation accuracy and the search time; a search that pruned a whole cell
type is listed as such (it exits with an error and writes no genotype). ``--authors`` runs the
authors' setting instead: the released schedule (warm-up epoch, switch epoch, one update:
``t_max`` 1) and the curvature multiplied by the batch size, at the three lambdas of the
released cells.

    python experiments/lambda_sweep.py --dataset digits fashion-mnist --seeds 0 1 2 \
        --out runs/lambda-sweep --results-md docs/results.md
    python experiments/lambda_sweep.py --smoke --out runs/lambda-sweep-smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_fashion_mnist import SEARCH, SMOKE_SEARCH, sized  # noqa: E402

from pyronas.genotype import load_genotype  # noqa: E402
from pyronas.jobs import (  # noqa: E402
    Job,
    add_executor_options,
    executor_from_args,
    run_jobs,
    write_markdown_section,
)

LAMBDAS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
AUTHORS_LAMBDAS = (0.005, 0.007, 0.01)


def budget(dataset: str, smoke: bool) -> dict[str, Any]:
    """Search settings of one data set (digits: the ``pyronas search`` defaults)."""
    if smoke:
        return sized(SMOKE_SEARCH, dataset)
    return {} if dataset == "digits" else sized(SEARCH, dataset)


def sweep_point(overrides: dict[str, Any]) -> dict[str, Any]:
    """One search; returns its cell sizes, or the reason it has none (``status``)."""
    from pyronas.jobs import search_job
    from pyronas.search import SearchFailed

    out = Path(overrides["out"])
    failed = out / "failed.json"
    if failed.exists():
        return json.loads(failed.read_text())
    try:
        genotype_path = search_job(overrides)
    except SearchFailed as err:
        result = {"status": "failed", "reason": failure_reason(str(err))}
        failed.write_text(json.dumps(result))
        return result
    genotype = load_genotype(genotype_path)
    result: dict[str, Any] = {"status": "ok"}
    for cell_type in genotype.cell_types:
        pairs = genotype.cell(cell_type)
        result[f"ops_{cell_type}"] = sum(len(p) for p in pairs)
        result[f"edges_{cell_type}"] = len({(j, src) for j, p in enumerate(pairs)
                                            for _, src in p})
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    result["val_acc"] = float(rows[-1]["val_acc"])
    result["seconds"] = json.loads((out / "metrics.json").read_text())["search_seconds"]
    return result


def failure_reason(message: str) -> str:
    """A short table entry for a :class:`~pyronas.search.SearchFailed` message."""
    found = re.search(r"iteration (\d+)", message)
    when = f" at iteration {found.group(1)}" if found else ""
    if "pruned every op" in message:
        return f"pruned to nothing{when}"
    return f"stopped{when}: {message.split(':', 1)[-1].strip()[:50]}"


def jobs_for(args: argparse.Namespace) -> list[Job]:
    jobs = []
    lambdas = AUTHORS_LAMBDAS if args.authors else args.lambdas
    for dataset in args.dataset:
        for lam in lambdas:
            for seed in args.seeds:
                extra = budget(dataset, args.smoke)
                if args.authors:
                    batch = extra.get("batch_size", 32)
                    extra = {**extra, "schedule": "released", "curvature_multiplier": batch,
                             "t_max": 1}
                label = f"{'authors-' if args.authors else ''}{dataset}/lambda{lam}/seed{seed}"
                overrides = {**extra, "dataset": dataset, "lambda_op": lam, "lambda_edge": lam,
                             "seed": seed, "device": args.device, "out": str(args.out / label)}
                jobs.append(Job(label, sweep_point, {"overrides": overrides}))
    return jobs


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    setting = ("the authors' setting (released schedule, curvature x batch size)" if args.authors
               else "default settings")
    lines = [
        f"BayesNAS searches ({setting}), `bayesnas8` space: 56 ops and 8 edges per cell type; "
        "digits at the `pyronas search` defaults, Fashion-MNIST at the comparisons' search "
        f"budget {SEARCH}. lambda_edge = lambda_op = lambda.",
        "",
        "| data set | lambda | seed | normal ops | normal edges | reduce ops | reduce edges "
        "| supernet val acc | search s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in sorted(results.items(), key=lambda kv: _key(kv[0])):
        dataset, lam, seed = _key(label)
        if r["status"] != "ok":
            lines.append(f"| {dataset} | {lam:g} | {seed} | {r['reason']} | | | | | |")
            continue
        lines.append(
            f"| {dataset} | {lam:g} | {seed} | {r['ops_normal']} | {r['edges_normal']} "
            f"| {r.get('ops_reduce', '-')} | {r.get('edges_reduce', '-')} | {r['val_acc']:.3f} "
            f"| {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def _key(label: str) -> tuple[str, float, int]:
    dataset, lam, seed = label.split("/")
    return dataset.removeprefix("authors-"), float(lam.removeprefix("lambda")), int(
        seed.removeprefix("seed"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=["digits", "fashion-mnist"],
                        choices=["digits", "fashion-mnist"])
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--authors", action="store_true",
                        help="the authors' schedule and curvature scale, lambda 0.005-0.01")
    parser.add_argument("--out", type=Path, default=Path("runs/lambda-sweep"))
    parser.add_argument("--device", default="cpu")
    add_executor_options(parser)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds on a CPU")
    parser.add_argument("--results-md", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.smoke:
        args.dataset, args.lambdas = ["digits"], [0.01, 1.0]
    results = run_jobs(jobs_for(args), executor=executor_from_args(args))
    text = markdown(results, args)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    if args.results_md is not None:
        section = "lambda-sweep-authors" if args.authors else "lambda-sweep"
        write_markdown_section(args.results_md, section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
