"""Paper-style results table from retraining run folders.

    python experiments/tables.py runs/retrain_cifar10/* --markdown

Each run folder holds ``metrics.json`` (written by ``pyronas.train.retrain``) and
``config.yaml``. Runs are grouped by genotype; per group the table gives the test error as
mean +/- sample standard deviation over the runs (seeds), the parameters (M, auxiliary head
excluded), the search cost and the number of runs. ImageNet runs add the top-5 error.

Search cost: from ``search_seconds`` / ``search_device`` in the run's ``metrics.json`` (the
retraining copies them from the search run of its genotype), else from the ``metrics.json`` next
to the genotype file named in ``config.yaml`` (a search run folder, e.g. written by
``experiments/search_cifar10.py``). Searches on a GPU give GPU-days (wall time / 86400);
searches on a CPU give ``-`` with their CPU hours instead.

``--pool-search-seeds`` groups genotypes found by different seeds of one search
(``<label>_seed<k>``) under ``<label>``: the row then averages over search and retraining seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

SECONDS_PER_DAY = 86400.0
SECONDS_PER_HOUR = 3600.0
GPU_DEVICES = ("cuda", "gpu", "mps", "xpu")
"""Device names (before any ``:N``) whose search cost counts in GPU-days."""


def device_kind(device: str | None) -> str:
    """``"gpu"``, ``"cpu"`` or ``"unknown"`` for a recorded search device (``cuda:0`` ...)."""
    if not device:
        return "unknown"
    name = str(device).split(":")[0].split(" ")[0].lower()
    if name in GPU_DEVICES:
        return "gpu"
    return "cpu" if name == "cpu" else "unknown"


def search_cost_of_genotype(genotype: str | Path | None) -> dict[str, Any]:
    """``search_seconds`` and ``search_device`` from the ``metrics.json`` next to a genotype
    file (a search run folder); empty when there is none."""
    if not genotype:
        return {}
    path = Path(str(genotype))
    metrics = path.parent / "metrics.json"
    if not (path.is_file() and metrics.is_file()):
        return {}
    try:
        data = json.loads(metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("search_seconds") is None:
        return {}
    return {
        "search_seconds": float(data["search_seconds"]),
        "search_device": data.get("search_device", data.get("device")),
    }


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
    if metrics.get("search_seconds") is None:
        metrics.update(search_cost_of_genotype(config.get("genotype")))
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


def pooled_label(label: str) -> str:
    """``"search_cifar10_lam0.01_seed2"`` -> ``"search_cifar10_lam0.01"`` (other labels as is)."""
    return re.sub(r"_seed\d+$", "", label)


def summarise(
    runs: Iterable[dict[str, Any]], pool_search_seeds: bool = False
) -> list[dict[str, Any]]:
    """One row per (dataset, genotype), in order of first appearance.

    Parameters
    ----------
    runs
        :func:`read_run` dicts.
    pool_search_seeds
        Group labels that differ only by a ``_seed<k>`` suffix (see :func:`pooled_label`).

    Returns
    -------
    list of dict
        ``genotype``, ``dataset``, ``n``, ``test_error`` / ``test_error_sd``,
        ``test_top5_error`` / ``..._sd`` (if every run has it), ``params_M``,
        ``search_gpu_days`` (mean over the runs whose search ran on a GPU; None without),
        ``search_cpu_hours`` (the same for CPU searches), ``search_days_other`` (searches on an
        unrecorded or other device, in days), ``search_device``.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        label = str(run["genotype"])
        if pool_search_seeds:
            label = pooled_label(label)
        groups.setdefault((str(run.get("dataset")), label), []).append(run)
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
        for key, kind, unit in (
            ("search_gpu_days", "gpu", SECONDS_PER_DAY),
            ("search_cpu_hours", "cpu", SECONDS_PER_HOUR),
            ("search_days_other", "unknown", SECONDS_PER_DAY),
        ):
            seconds = [
                float(m["search_seconds"])
                for m in costs
                if device_kind(m.get("search_device")) == kind
            ]
            row[key] = mean_sd(seconds)[0] / unit if seconds else None
        devices = sorted({str(m.get("search_device") or "unknown") for m in costs})
        row["search_device"] = ", ".join(devices) if devices else None
        rows.append(row)
    return rows


def _pm(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" if sd is None else f"{mean:.2f} ± {sd:.2f}"


def _cost(row: dict[str, Any]) -> str:
    """GPU-days; ``-`` with the CPU hours for CPU searches; days and device name otherwise."""
    parts = []
    if row.get("search_gpu_days") is not None:
        parts.append(f"{row['search_gpu_days']:.2f}")
    if row.get("search_cpu_hours") is not None:
        hours = f"{row['search_cpu_hours']:.1f} CPU h"
        parts.append(f"- ({hours})" if not parts else f"({hours})")
    if row.get("search_days_other") is not None:
        others = [
            d for d in (row.get("search_device") or "unknown").split(", ")
            if device_kind(d) == "unknown"
        ]  # fmt: skip
        parts.append(f"{row['search_days_other']:.2f} ({', '.join(others)})")
    return " ".join(parts) if parts else "-"


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
    p.add_argument(
        "--pool-search-seeds",
        action="store_true",
        help="one row for the genotypes of all seeds of a search (labels <label>_seed<k>)",
    )
    args = p.parse_args(argv)
    runs = []
    for d in args.run_dirs:
        try:
            runs.append(read_run(d))
        except FileNotFoundError as exc:
            print(f"skipping {exc}", file=sys.stderr)
    if not runs:
        p.error("no finished runs among the folders given")
    table = format_table(summarise(runs, args.pool_search_seeds), markdown=args.markdown)
    print(table)
    return table


if __name__ == "__main__":
    main()
