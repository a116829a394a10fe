"""Paper-style results table from retraining run folders.

    python experiments/tables.py runs/retrain_cifar10/* --markdown

Each run folder holds ``metrics.json`` (written by ``pyronas.train.retrain``) and
``config.yaml``. Runs are grouped by genotype; per group the table gives the test error as
mean +/- sample standard deviation over the runs (seeds), the parameters (M, auxiliary head
excluded), the search cost in GPU-days when the runs record ``search_seconds`` (with the search
device noted when it was not a GPU), and the number of runs. ImageNet runs add the top-5 error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

SECONDS_PER_DAY = 86400.0


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """``metrics.json`` of a run folder, with ``genotype`` filled from ``config.yaml`` if
    missing and ``run_dir`` added.

    Raises
    ------
    FileNotFoundError
        No ``metrics.json`` (the run has not finished).
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.json (unfinished or not a run folder)")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    config_path = run_dir / "config.yaml"
    config = {}
    if config_path.is_file():
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    if not metrics.get("genotype"):
        metrics["genotype"] = config.get("name") or config.get("genotype") or run_dir.name
    metrics.setdefault("dataset", config.get("dataset"))
    metrics["run_dir"] = str(run_dir)
    return metrics


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def summarise(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, genotype), in order of first appearance.

    Returns
    -------
    list of dict
        ``genotype``, ``dataset``, ``n``, ``test_error`` / ``test_error_sd``,
        ``test_top5_error`` / ``..._sd`` (if every run has it), ``params_M``,
        ``search_gpu_days`` (None without search costs), ``search_device``.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((str(run.get("dataset")), str(run["genotype"])), []).append(run)
    rows = []
    for (dataset, genotype), members in groups.items():
        row: dict[str, Any] = {"genotype": genotype, "dataset": dataset, "n": len(members)}
        for key in ("test_error", "test_top5_error"):
            values = [float(m[key]) for m in members if m.get(key) is not None]
            if len(values) == len(members):
                row[key], row[f"{key}_sd"] = mean_sd(values)
        params = [float(m["params_M"]) for m in members if m.get("params_M") is not None]
        row["params_M"] = mean_sd(params)[0] if params else None
        costs = [m for m in members if m.get("search_seconds") is not None]
        row["search_gpu_days"] = (
            mean_sd([float(m["search_seconds"]) / SECONDS_PER_DAY for m in costs])[0]
            if costs
            else None
        )
        devices = sorted({str(m.get("search_device") or "unknown") for m in costs})
        row["search_device"] = ", ".join(devices) if devices else None
        rows.append(row)
    return rows


def _pm(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" if sd is None else f"{mean:.2f} ± {sd:.2f}"


def _cost(row: dict[str, Any]) -> str:
    days = row["search_gpu_days"]
    if days is None:
        return "-"
    device = row["search_device"] or ""
    on_gpu = all(d.startswith("cuda") or d == "gpu" for d in device.split(", "))
    return f"{days:.2f}" if on_gpu else f"{days:.2f} ({device})"


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = True) -> str:
    """The table as Markdown (or aligned plain text)."""
    top5 = any("test_top5_error" in r for r in rows)
    header = ["Genotype", "Dataset", "Test error (%)"]
    if top5:
        header.append("Top-5 error (%)")
    header += ["Params (M)", "Search cost (GPU-days)", "Runs"]
    body = []
    for r in rows:
        line = [r["genotype"], r["dataset"], _pm(r.get("test_error"), r.get("test_error_sd"))]
        if top5:
            line.append(_pm(r.get("test_top5_error"), r.get("test_top5_error_sd")))
        params = "-" if r["params_M"] is None else f"{r['params_M']:.2f}"
        line += [params, _cost(r), str(r["n"])]
        body.append(line)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(line) + " |" for line in body]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    return "\n".join(
        "  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    )


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", help="run folders with metrics.json and config.yaml")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    runs = []
    for d in args.run_dirs:
        try:
            runs.append(read_run(d))
        except FileNotFoundError as exc:
            print(f"skipping {exc}", file=sys.stderr)
    if not runs:
        p.error("no finished runs among the folders given")
    table = format_table(summarise(runs), markdown=args.markdown)
    print(table)
    return table


if __name__ == "__main__":
    main()
