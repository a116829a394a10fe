"""``pyronas analyze``: summaries and plots of one or more search runs.

For every run folder: a terminal table (rich) of the kept ops per cell type with the posterior
mean and sd of their switch, gamma and inclusion (:mod:`pyronas.run_summary`), ``summary.csv`` with
every ``(cell type, edge, op)``, and PNG plots in ``RUN/plots/``:

``forest.png``
    Forest plot of the switch posteriors (``az.plot_forest``).
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
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from pyronas.arviz_export import arviz_major, get_group, group_names  # noqa: E402
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


def plot_forest(idata: Any, path: Path) -> Path:
    """Forest plot of ``edge_switch`` and ``op_switch`` (mean and 94% interval per switch)."""
    posterior = get_group(idata, "posterior")
    n = int(posterior["edge_switch"][0, 0].size + posterior["op_switch"][0, 0].size)
    height = max(4.0, 0.14 * n + 1.5)
    if arviz_major() < 1:
        import arviz as az

        axes = az.plot_forest(
            idata, var_names=["edge_switch", "op_switch"], combined=True, hdi_prob=0.94,
            figsize=(7, height), textsize=7,
        )
        fig = np.ravel(axes)[0].figure
        fig.savefig(path, dpi=80, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        return path
    # ArviZ 1.x plots through arviz_plots; draw the same picture with matplotlib directly.
    labels, lows, mids, highs = [], [], [], []
    for site in ("edge_switch", "op_switch"):
        da = posterior[site].stack(sample=("chain", "draw"))
        flat = da.stack(switch=[d for d in da.dims if d != "sample"])
        for i in range(flat.sizes["switch"]):
            values = flat.isel(switch=i).values
            labels.append(f"{site}{list(flat['switch'].values[i])}")
            lo, mid, hi = np.quantile(values, [0.03, 0.5, 0.97])
            lows.append(lo)
            mids.append(mid)
            highs.append(hi)
    fig = Figure(figsize=(7, height))
    ax = fig.add_subplot()
    y = np.arange(len(labels))[::-1]
    ax.hlines(y, lows, highs, color="C0")
    ax.plot(mids, y, "o", color="C0", markersize=3)
    ax.set_yticks(y, labels, fontsize=6)
    ax.axvline(0, color="grey", lw=0.5)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    return path


def plot_gamma_trajectories(run: Run, path: Path) -> Path:
    """Op-switch gamma (log scale) per type-II iteration; pruned-at-the-end switches in grey."""
    space = run.space
    history = run.posterior.get("history") or []
    if history:
        its = [int(h["iteration"]) for h in history]
        gammas = np.stack([np.asarray(h["gamma"]["op_switch"], dtype=float) for h in history])
    else:
        its = [0]
        gammas = np.asarray(run.posterior["gamma"]["op_switch"], dtype=float)[None]
    final = np.asarray(run.posterior["gamma"]["op_switch"], dtype=float)
    fig = Figure(figsize=(6 * len(space.cell_types), 4))
    for t, cell_type in enumerate(space.cell_types):
        ax = fig.add_subplot(1, len(space.cell_types), t + 1)
        for e in range(space.num_edges):
            for k in range(space.num_ops):
                series = np.clip(gammas[:, t, e, k], 1e-12, None)
                live = final[t, e, k] > 0
                ax.plot(its, series, color=f"C{k}" if live else "0.8", lw=1 if live else 0.6,
                        marker="o" if len(its) == 1 else None,
                        label=space.ops[k] if e == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("type-II iteration")
        ax.set_ylabel("gamma (op switch)")
        ax.set_title(f"{cell_type} cell")
        if t == 0:
            ax.legend(fontsize=7)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


def plot_inclusion_heatmaps(run: Run, rows: list[SummaryRow], folder: Path) -> list[Path]:
    """One edge x op heat map of inclusion per cell type (group), kept ops outlined."""
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
        fig = Figure(figsize=(7, 0.45 * space.num_edges + 1.8))
        ax = fig.add_subplot()
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        fig.colorbar(image, ax=ax, label="inclusion")
        ax.set_xticks(range(space.num_ops), space.ops, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(space.num_edges), edge_names, fontsize=8)
        for e in range(space.num_edges):
            for k in range(space.num_ops):
                ax.text(k, e, f"{grid[e, k]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if grid[e, k] < 0.6 else "black",
                        fontweight="bold" if kept[e, k] else "normal")
        ax.set_title(f"{group}: inclusion (bold: kept)")
        path = folder / f"inclusion_{group}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        written.append(path)
    return written


def draw_inclusion_cells(run: Run, rows: list[SummaryRow], folder: Path) -> list[Path]:
    """The derived cell of each cell type, every kept op labelled ``op  inclusion``."""
    space = run.space
    written = []
    for group in dict.fromkeys(r.group for r in rows):
        sub = [r for r in rows if r.group == group and r.kept]
        cell_type = next(r.cell_type for r in rows if r.group == group)
        edges = space.edges[cell_type]
        n_in, n_nodes = space.num_inputs, space.num_nodes
        pos = {i: (0.0, 1.5 * i) for i in range(n_in)}
        pos.update({n_in + j: (1.5 * (j + 1), 0.75 + (0.9 if j % 2 else -0.9))
                    for j in range(n_nodes)})
        fig = Figure(figsize=(2.2 * (n_nodes + 2), 4.5))
        ax = fig.add_subplot()
        per_edge: dict[int, list[SummaryRow]] = {}
        for r in sub:
            per_edge.setdefault(r.edge_index, []).append(r)
        for e, ops in per_edge.items():
            src, dst = edges[e]
            (x0, y0), (x1, y1) = pos[src], pos[dst]
            for i, r in enumerate(ops):
                rad = 0.25 * (i - (len(ops) - 1) / 2)
                color = f"C{space.ops.index(r.op)}"
                ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>",
                                             connectionstyle=f"arc3,rad={rad}", color=color,
                                             mutation_scale=10, shrinkA=14, shrinkB=14, lw=1.2))
                mx, my = (x0 + x1) / 2, (y0 + y1) / 2
                nx, ny = -(y1 - y0), x1 - x0  # normal: where arc3 bends the curve
                ax.text(mx + rad * nx / 2, my + rad * ny / 2, f"{r.op}\n{r.inclusion:.2f}",
                        fontsize=6, ha="center", va="center", color=color,
                        bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                              "alpha": 0.8})
        for node, (x, y) in pos.items():
            name = space.node_name(node)
            ax.text(x, y, name, ha="center", va="center", fontsize=9,
                    bbox={"boxstyle": "round", "fc": "#dbe9f6" if node < n_in else "#f6e7c1"})
        if not sub:
            ax.text(0.5, 0.5, "no kept ops", transform=ax.transAxes, ha="center")
        ax.set_xlim(-0.7, 1.5 * (n_nodes + 0.5))
        ax.set_ylim(-2.2, 3.7)
        ax.axis("off")
        ax.set_title(f"{group} cell: kept ops with inclusion")
        path = folder / f"cell_{group}_inclusion.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
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
    paths.append(plot_forest(idata, plots / "forest.png"))
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
    fig.savefig(out / "comparison.png", dpi=90, bbox_inches="tight")
    paths.append(out / "comparison.png")

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for row, run in zip(rows, runs, strict=True):
        evidence = run.log_evidence()
        ax.plot(range(len(evidence)), evidence, marker="o", label=row["run"])
    ax.set_xlabel("type-II iteration")
    ax.set_ylabel("log evidence")
    ax.legend(fontsize=7)
    fig.savefig(out / "evidence.png", dpi=90, bbox_inches="tight")
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


def _print_comparison(console: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="comparison", title_justify="left")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    for key in keys:
        table.add_column(key)
    for row in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v)
                        for v in (row.get(k, "") for k in keys)])
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

    from pyronas.nb201 import STRING_FILE, open_table
    from pyronas.run_summary import POSTERIOR_FILE

    console = Console()
    table = open_table(nb201, nb201_epochs) if nb201 is not None or nb201_epochs != 12 else None
    paths = [Path(p) for p in runs]
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
    "plot_forest",
    "plot_gamma_trajectories",
    "plot_inclusion_heatmaps",
    "run_analyze_cli",
    "write_comparison",
]
