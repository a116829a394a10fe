"""``pyronas analyze``: summaries and plots of one or more search runs.

For every run folder: a terminal table (rich) of the kept ops per cell type with the posterior
mean and sd of their switch, gamma and inclusion (:mod:`pyronas.run_summary`), ``summary.csv`` with
every ``(cell type, edge, op)``, and PNG plots in ``RUN/plots/``:

``forest_<cell_type>.png``
    Forest plot of the switch posteriors, one per cell type: each edge (by name, with how many
    ops were pruned) and its kept ops, Laplace mean and 94% interval.
``gamma_trajectories.png``
    The op-switch prior variances gamma over the type-II iterations, one panel per cell type.
``inclusion_<cell_type>.png``
    Edge x op heat map of the inclusion score.
``cell_<cell_type>_inclusion.png``
    The derived cell, every op labelled with its inclusion.

With several runs, also a side-by-side table, ``comparison.csv`` (with ``az.compare`` columns
when every run has a ``log_likelihood`` group on the same held-out points) and
``comparison.png`` / ``evidence.png`` in the output folder.

NAS-Bench-201: a run with a benchmark string (``genotype_nb201.txt``, any nb201 search) also
shows its benchmark entry (:mod:`pyronas.nb201`: index, accuracies, percentiles; the search's
``nb201_lookup.json``, or a lookup in the bundled 12-epoch table or ``--nb201 PATH``). A
baseline run (DARTS, random search: no posterior) is shown by its entry alone. With several such
runs, a table of their entries is printed and written to ``nb201.csv`` in the output folder.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pyronas.arviz_export import get_group, group_names  # noqa: E402
from pyronas.run_summary import (  # noqa: E402
    Run,
    SummaryRow,
    config_name,
    load_run,
    summary_table,
    write_summary_csv,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# plots of one run


Z94 = 1.8807936081512509
"""Half-width in sd of the central 94% interval of a Gaussian (ArviZ's default interval)."""


def plot_forest(rows: list[SummaryRow], folder: Path) -> list[Path]:
    """Write :func:`forest_figures` to ``folder/forest_<group>.png``; returns the paths."""
    written = []
    for group, fig in forest_figures(rows).items():
        path = folder / f"forest_{group}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        written.append(path)
    return written


def forest_figures(rows: list[SummaryRow]) -> dict[str, Figure]:
    """Forest plots of the switches, one per cell type (or cell), grouped by edge.

    Each edge gets a row for its edge switch, labelled with the edge's name and how many of its
    ops were pruned, followed by one row per op kept in the derived cell; an edge that lost
    every op is one grey row. Each row shows the Laplace posterior mean and its central 94%
    interval ``mean +- 1.88 sd`` (exact for the Gaussian; what ``az.plot_forest`` estimates
    from draws).

    Parameters
    ----------
    rows
        The run's :func:`~pyronas.run_summary.summary_table`.

    Returns
    -------
    dict
        ``{group: Figure}``.
    """
    from pyronas.diagram import OP_COLORS, math_label

    figures = {}
    for group in dict.fromkeys(r.group for r in rows):
        sub = [r for r in rows if r.group == group]
        # (label, mean, sd, colour, bold)
        lines: list[tuple[str, float, float, str, bool]] = []
        starts = []
        for e in dict.fromkeys(r.edge_index for r in sub):
            ops = [r for r in sub if r.edge_index == e]
            kept = [r for r in ops if r.kept]
            starts.append(len(lines))
            name = math_label(ops[0].edge)
            if kept:
                pruned = len(ops) - len(kept)
                note = f"   ({pruned} of {len(ops)} ops pruned)" if pruned else ""
                lines.append((f"{name}  edge{note}", ops[0].edge_mean, ops[0].edge_sd,
                              "black", True))
                lines += [(r.op, r.mean, r.sd, OP_COLORS.get(r.op, "C0"), False) for r in kept]
            else:
                lines.append((f"{name}  (pruned: no op kept)", 0.0, 0.0, "0.6", True))
        n = len(lines)
        fig = Figure(figsize=(7.5, 0.24 * n + 1.3))
        ax = fig.add_subplot()
        y = np.arange(n)[::-1].astype(float)
        for i, (_, mean, sd, color, _) in enumerate(lines):
            ax.hlines(y[i], mean - Z94 * sd, mean + Z94 * sd, color=color, lw=1.6)
            ax.plot(mean, y[i], "o", color=color, markersize=4)
        for k, start in enumerate(starts):
            stop = starts[k + 1] if k + 1 < len(starts) else n
            if k % 2 == 0:
                ax.axhspan(y[stop - 1] - 0.5, y[start] + 0.5, color="0.94", zorder=0)
        ax.set_yticks(y, [line[0] for line in lines], fontsize=9)
        for tick, line in zip(ax.get_yticklabels(), lines, strict=True):
            tick.set_color(line[3])
            tick.set_fontweight("bold" if line[4] else "normal")
        ax.set_ylim(-0.6, n - 0.4)
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_xlabel("switch: Laplace posterior mean and 94% interval", fontsize=9)
        ax.set_title(f"{group}: edges and kept ops", fontsize=11)
        figures[group] = fig
    return figures


def plot_gamma_trajectories(run: Run, path: Path) -> Path:
    """Op-switch gamma (log scale) per type-II iteration, one panel per cell type.

    A line per op switch in its op's colour (grey when pruned by the end); a pruned switch's
    line stops at its last non-zero gamma, marked ``x``.
    """
    from pyronas.diagram import OP_COLORS

    space = run.space
    history = run.posterior.get("history") or []
    if history:
        its = [int(h["iteration"]) for h in history]
        gammas = np.stack([np.asarray(h["gamma"]["op_switch"], dtype=float) for h in history])
    else:
        its = [0]
        gammas = np.asarray(run.posterior["gamma"]["op_switch"], dtype=float)[None]
    final = np.asarray(run.posterior["gamma"]["op_switch"], dtype=float)
    fig = Figure(figsize=(6 * len(space.cell_types), 4.2))
    for t, cell_type in enumerate(space.cell_types):
        ax = fig.add_subplot(1, len(space.cell_types), t + 1)
        for e in range(space.num_edges):
            for k, op in enumerate(space.ops):
                series = np.where(gammas[:, t, e, k] > 0, gammas[:, t, e, k], np.nan)
                live = final[t, e, k] > 0
                color = OP_COLORS.get(op, f"C{k}") if live else "0.75"
                ax.plot(its, series, color=color, lw=1.1 if live else 0.7,
                        marker="o" if len(its) == 1 else None, zorder=3 if live else 2,
                        label=op if e == 0 else None)
                last = np.flatnonzero(np.isfinite(series))
                if not live and last.size and last[-1] < len(its) - 1:
                    ax.plot(its[last[-1]], series[last[-1]], "x", color="0.5", markersize=5)
        ax.set_yscale("log")
        ax.set_xticks(its)
        ax.set_xlabel("type-II iteration")
        ax.set_ylabel("gamma (op switch)")
        ax.set_title(f"{cell_type} cell (grey: pruned, x: last iteration alive)", fontsize=10)
        if t == 0:
            ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_inclusion_heatmaps(run: Run, rows: list[SummaryRow], folder: Path) -> list[Path]:
    """One edge x op heat map of inclusion per cell type (group), kept ops in bold."""
    from pyronas.diagram import math_label

    space = run.space
    written = []
    for group in dict.fromkeys(r.group for r in rows):
        sub = [r for r in rows if r.group == group]
        grid = np.zeros((space.num_edges, space.num_ops))
        kept = np.zeros_like(grid, dtype=bool)
        for r in sub:
            k = space.ops.index(r.op)
            grid[r.edge_index, k] = r.inclusion
            kept[r.edge_index, k] = r.kept
        edge_names = list(dict.fromkeys(r.edge for r in sub))
        fig = Figure(figsize=(8, 0.5 * space.num_edges + 2.0))
        ax = fig.add_subplot()
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        fig.colorbar(image, ax=ax, label="inclusion")
        ax.set_xticks(range(space.num_ops), space.ops, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(space.num_edges), [math_label(n) for n in edge_names], fontsize=9)
        for e in range(space.num_edges):
            for k in range(space.num_ops):
                ax.text(k, e, f"{grid[e, k]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if grid[e, k] < 0.6 else "black",
                        fontweight="bold" if kept[e, k] else "normal")
        ax.set_title(f"{group}: inclusion (bold: kept)")
        path = folder / f"inclusion_{group}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        written.append(path)
    return written


def draw_inclusion_cells(run: Run, rows: list[SummaryRow], folder: Path) -> list[Path]:
    """The derived cell of each cell type (or cell), every kept op labelled ``op  inclusion``
    (:func:`pyronas.diagram.cell_figure`: the ops of an edge grouped when it keeps more than
    two)."""
    from pyronas.diagram import CellGraph, cell_figure, math_label

    space = run.space
    written = []
    for group in dict.fromkeys(r.group for r in rows):
        sub = [r for r in rows if r.group == group and r.kept]
        cell_type = next(r.cell_type for r in rows if r.group == group)
        edges = space.edges[cell_type]
        ops = tuple((*edges[r.edge_index], r.op, f"{r.op}  {r.inclusion:.2f}") for r in sub)
        drawn = set(range(space.num_inputs)) | {dst for _, dst, _, _ in ops}
        names = {node: math_label(space.node_name(node))
                 for node in range(space.num_inputs + space.num_nodes) if node in drawn}
        title = f"{group} cell: kept ops with inclusion" if sub else f"{group} cell: no kept ops"
        fig = cell_figure(CellGraph(names, space.num_inputs, ops, (), title))
        path = folder / f"cell_{group}_inclusion.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# one run, several runs


def analyze_run(run: Run, idata: Any | None = None) -> dict[str, Any]:
    """Write ``summary.csv`` and ``plots/`` of one run; returns the rows and the written paths."""
    if idata is None:
        idata = run.to_arviz()
    rows = summary_table(run)
    paths = [write_summary_csv(rows, run.path / "summary.csv")]
    plots = run.path / "plots"
    plots.mkdir(exist_ok=True)
    paths += plot_forest(rows, plots)
    paths.append(plot_gamma_trajectories(run, plots / "gamma_trajectories.png"))
    paths += plot_inclusion_heatmaps(run, rows, plots)
    paths += draw_inclusion_cells(run, rows, plots)
    for path in paths:
        log.info("wrote %s", path)
    return {"rows": rows, "paths": paths, "idata": idata}


def _has_log_likelihood(idata: Any) -> bool:
    return "log_likelihood" in group_names(idata)


def comparison_rows(runs: Sequence[Run], idatas: Sequence[Any]) -> list[dict[str, Any]]:
    """Side-by-side rows, one per run, with ``az.compare`` columns when possible."""
    names = _unique_names(runs)
    rows: list[dict[str, Any]] = []
    for name, run in zip(names, runs, strict=True):
        table = summary_table(run)
        evidence = run.log_evidence()
        row: dict[str, Any] = {
            "run": name, "prior": run.prior, "space": run.space.name,
            "log_evidence": evidence[-1] if evidence else float("nan"),
            "iterations": len(evidence),
        }
        for group in dict.fromkeys(r.group for r in table):
            kept = [r for r in table if r.group == group and r.kept]
            row[f"kept_ops_{group}"] = len(kept)
            row[f"mean_inclusion_{group}"] = (
                float(np.mean([r.inclusion for r in kept])) if kept else float("nan")
            )
        rows.append(row)
    if len(runs) > 1 and all(_has_log_likelihood(i) for i in idatas):
        sizes = {int(get_group(i, "log_likelihood")["obs"].shape[-1]) for i in idatas}
        if len(sizes) == 1:
            import arviz as az

            frame = az.compare(dict(zip(names, idatas, strict=True)))
            for row in rows:
                stats = frame.loc[row["run"]]
                row.update({str(k): _scalar(v) for k, v in stats.items()})
        else:
            log.warning("runs have log likelihoods on different held-out sets; no az.compare")
    return rows


def _scalar(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def _unique_names(runs: Sequence[Run]) -> list[str]:
    names: list[str] = []
    for run in runs:
        name = run.name
        while name in names:
            name = f"{run.path.parent.name}/{name}" if "/" not in name else f"{name}'"
        names.append(name)
    return names


def write_comparison(rows: list[dict[str, Any]], runs: Sequence[Run], out: Path) -> list[Path]:
    """``comparison.csv``, ``comparison.png`` (elpd or log evidence) and ``evidence.png``."""
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    csv_path = out / "comparison.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    paths = [csv_path]

    elpd_key = next((k for k in ("elpd_loo", "elpd") if k in keys), None)
    fig = Figure(figsize=(6, 0.5 * len(rows) + 1.5))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    if elpd_key is not None:
        values = [float(r[elpd_key]) for r in rows]
        errors = [float(r.get("se", 0.0)) for r in rows]
        ax.errorbar(values, y, xerr=errors, fmt="o")
        ax.set_xlabel(f"{elpd_key} (held-out, higher is better)")
    else:
        ax.plot([float(r["log_evidence"]) for r in rows], y, "o")
        ax.set_xlabel("final log evidence")
    ax.set_yticks(y, [r["run"] for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_title("runs compared", fontsize=11)
    fig.savefig(out / "comparison.png", dpi=100, bbox_inches="tight")
    paths.append(out / "comparison.png")

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    iterations: set[int] = set()
    for row, run in zip(rows, runs, strict=True):
        evidence = run.log_evidence()
        its = [int(h["iteration"]) for h in run.posterior.get("history") or []]
        if len(its) != len(evidence):
            its = list(range(1, len(evidence) + 1))
        iterations.update(its)
        ax.plot(its, evidence, marker="o", label=row["run"])
    ax.set_xticks(sorted(iterations))
    ax.set_xlabel("type-II iteration")
    ax.set_ylabel("log evidence")
    ax.legend(fontsize=8)
    fig.savefig(out / "evidence.png", dpi=100, bbox_inches="tight")
    paths.append(out / "evidence.png")
    return paths


# --------------------------------------------------------------------------------------------
# terminal output and the CLI entry


def _print_run(console: Any, run: Run, rows: list[SummaryRow]) -> None:
    from rich.table import Table

    console.print(f"[bold]{run.path}[/bold]  prior={run.prior}  space={run.space.name}")
    for group in dict.fromkeys(r.group for r in rows):
        kept = [r for r in rows if r.group == group and r.kept]
        table = Table(title=f"{group}: {len(kept)} kept ops", title_justify="left")
        for col in ("edge", "op", "mean", "sd", "gamma", "inclusion"):
            table.add_column(col, justify="left" if col in ("edge", "op") else "right")
        for r in kept:
            table.add_row(r.edge, r.op, f"{r.mean:.3f}", f"{r.sd:.3f}", f"{r.gamma:.3g}",
                          f"{r.inclusion:.3f}")
        console.print(table)


def _print_compress_run(console: Any, path: Path) -> None:
    """Units left per layer and the sizes of a compression run; writes its report files."""
    from rich.table import Table

    from pyronas.compress.report import analyze_compress_run

    result = analyze_compress_run(path)
    s = result["summary"]
    console.print(f"[bold]{path}[/bold]  compression of {s['network']} on {s['dataset']}",
                  soft_wrap=True)
    table = Table(title="units per layer", title_justify="left")
    for col in ("layer", "before", "after", "kept"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for r in result["rows"]:
        table.add_row(r["layer"], str(r["units_before"]), str(r["units_after"]),
                      f"{100 * r['kept_fraction']:.1f} %")
    console.print(table)
    units = lambda key: "-".join(str(u) for u in s[key])  # noqa: E731
    console.print(f"{units('units_before')} -> {units('units_after')}; weights "
                  f"{s['weights_before']:,} -> {s['weights_kept']:,} "
                  f"({s['compression_ratio']:.1f}x); FLOPs {s['flops_before']:,} -> "
                  f"{s['flops_after']:,}; test error {100 * s['test_error_before']:.2f} % -> "
                  f"{100 * s['test_error_after']:.2f} % (pruned before fine-tuning "
                  f"{100 * s['test_error_pruned']:.2f} %)")
    console.print(f"wrote {result['csv']} and {result['plot']}", soft_wrap=True)


def _print_comparison(console: Any, rows: list[dict[str, Any]]) -> None:
    """The comparison, one column per run and one line per quantity (fits a terminal)."""
    from rich.table import Table

    table = Table(title="comparison", title_justify="left")
    table.add_column("")
    for row in rows:
        table.add_column(str(row["run"]), justify="right")
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k != "run"]
    for key in keys:
        table.add_row(key, *[f"{v:.4g}" if isinstance(v, float) else str(v)
                             for v in (row.get(key, "") for row in rows)])
    console.print(table)


def nb201_row(name: str, path: Path, entry: Any) -> dict[str, Any]:
    """One row of ``nb201.csv``: run, strategy, the entry's index, string, accuracies and
    percentiles per data set and split, skip connections and dead edges in the string."""
    from pyronas.nb201 import DATASETS, SPLITS

    strategy = _strategy_label(path)
    row: dict[str, Any] = {"run": name, "strategy": strategy, "index": entry.index,
                           "epochs": entry.epochs}
    for dataset in DATASETS:
        short = dataset.lower().split("-")[0]
        for split in SPLITS:
            row[f"{short}_{split}"] = entry.accuracy[dataset][split]
            row[f"{short}_{split}_percentile"] = entry.percentile[dataset][split]
    row["skip_connect"] = entry.arch.count("skip_connect")
    row["dead_edges"] = len(entry.dead_edges)
    row["arch"] = entry.arch
    return row


def _strategy_label(path: Path) -> str:
    """``darts1``, ``random-ws``, ``bayesnas-hard`` ... from the run's metrics.json and
    config.yaml (empty when neither says)."""
    import json

    import yaml

    metrics, config = path / "metrics.json", path / "config.yaml"
    strategy = ""
    if metrics.is_file():
        strategy = str(json.loads(metrics.read_text(encoding="utf-8")).get("strategy", ""))
    cfg = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else {}
    strategy = strategy or config_name(cfg or {}, "strategy")
    prior = config_name(cfg or {}, "prior")
    if strategy == "bayesnas" and prior:
        strategy = f"bayesnas-{Path(prior).stem if prior.endswith('.py') else prior}"
    return strategy


def _nb201_entry(console: Any, path: Path, table: Any) -> Any:
    """Print the run's NAS-Bench-201 entry (or why it has none); return the entry or None."""
    from pyronas.nb201 import LOOKUP_FILE, NB201Error, format_entry, run_lookup

    try:
        entry = run_lookup(path, table, write=table is None and not (path / LOOKUP_FILE).exists())
    except NB201Error as err:
        console.print(f"no NAS-Bench-201 entry: {err}", markup=False, soft_wrap=True)
        return None
    if entry is not None:
        console.print(format_entry(entry), markup=False, highlight=False, soft_wrap=True)
    return entry


def _print_nb201_table(console: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"NAS-Bench-201 ({rows[0]['epochs']}-epoch figures)",
                  title_justify="left")
    cols = ("run", "strategy", "index", "cifar10_test", "cifar10_test_percentile",
            "cifar100_test", "imagenet16_test", "skip_connect")
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*[f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c])
                        for c in cols])
    console.print(table)


def run_analyze_cli(
    runs: Sequence[Path],
    out: Path | None = None,
    nb201: str | Path | None = None,
    nb201_epochs: int = 12,
) -> int:
    """Analyse search run folders (the ``pyronas analyze`` command); returns the exit code.

    Parameters
    ----------
    runs
        Run folders; each gets ``summary.csv`` and ``plots/`` (a baseline nb201 run without a
        posterior is shown by its NAS-Bench-201 entry only).
    out
        Folder for the comparison of several runs (default: ``comparison`` next to the first
        run).
    nb201, nb201_epochs
        Source of the NAS-Bench-201 lookups: an official benchmark file and its schedule, or
        ``None`` for what the searches wrote (the bundled 12-epoch table).
    """
    from rich.console import Console

    from pyronas.compress.report import is_compress_run
    from pyronas.nb201 import STRING_FILE, open_table
    from pyronas.run_summary import POSTERIOR_FILE

    console = Console()
    table = open_table(nb201, nb201_epochs) if nb201 is not None or nb201_epochs != 12 else None
    paths = [Path(p) for p in runs]
    compress_runs = [p for p in paths if is_compress_run(p)]
    for path in compress_runs:
        _print_compress_run(console, path)
    paths = [p for p in paths if p not in compress_runs]
    if not paths:
        return 0
    lookup_only = {p for p in paths if not (p / POSTERIOR_FILE).exists()
                   and (p / STRING_FILE).is_file()}
    # RunFolderError (a ValueError) names the folder
    loaded = {p: load_run(p) for p in paths if p not in lookup_only}
    idatas = []
    names = dict(zip(paths, _unique_path_names(paths), strict=True))
    nb201_rows = []
    for path in paths:
        if path in loaded:
            run = loaded[path]
            result = analyze_run(run)
            idatas.append(result["idata"])
            _print_run(console, run, result["rows"])
            console.print(f"wrote {run.path / 'summary.csv'} and {run.path / 'plots'}/")
        else:
            console.print(f"[bold]{path}[/bold]  (no posterior: the NAS-Bench-201 entry only)",
                          soft_wrap=True)
        entry = _nb201_entry(console, path, table)
        if entry is not None:
            nb201_rows.append(nb201_row(names[path], path, entry))
    target = Path(out) if out is not None else paths[0].parent / "comparison"
    if len(loaded) > 1:
        runs_ = list(loaded.values())
        rows = comparison_rows(runs_, idatas)
        written = write_comparison(rows, runs_, target)
        _print_comparison(console, rows)
        console.print(f"wrote {', '.join(str(p) for p in written)}")
    if len(nb201_rows) > 1:
        target.mkdir(parents=True, exist_ok=True)
        csv_path = target / "nb201.csv"
        with csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(nb201_rows[0]))
            writer.writeheader()
            writer.writerows(nb201_rows)
        _print_nb201_table(console, nb201_rows)
        console.print(f"wrote {csv_path}")
    return 0


def _unique_path_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for path in paths:
        name = path.name
        while name in names:
            name = f"{path.parent.name}/{name}" if "/" not in name else f"{name}'"
        names.append(name)
    return names


__all__ = [
    "analyze_run",
    "nb201_row",
    "comparison_rows",
    "draw_inclusion_cells",
    "forest_figures",
    "plot_forest",
    "plot_gamma_trajectories",
    "plot_inclusion_heatmaps",
    "run_analyze_cli",
    "write_comparison",
]
