"""Run folders: loading, the summary table, inclusion, ``pyronas analyze``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_arviz import make_posterior, write_run_folder

from pyronas.arviz_export import (
    LAPLACE_DRAWS_NOTE,
    get_group,
    group_names,
    load_arviz,
    save_arviz,
    summarize,
    to_arviz,
)
from pyronas.cli import main
from pyronas.diagram import math_label
from pyronas.report import forest_figures, run_analyze_cli
from pyronas.run_summary import (
    inclusion_from_draws,
    inclusion_gaussian,
    load_run,
    summary_table,
)
from pyronas.runs import RunFolderError
from pyronas.space import get_space

SPACE = get_space("bayesnas8")


def test_inclusion_closed_form_and_monte_carlo() -> None:
    # |z| = 1.959964 -> 0.95; z = 0 -> 0; sd = 0 -> 1
    np.testing.assert_allclose(inclusion_gaussian([1.959964, -1.959964, 0.0], [1.0, 1.0, 2.0]),
                               [0.95, 0.95, 0.0], atol=1e-6)
    assert inclusion_gaussian(0.3, 0.0) == 1.0
    rng = np.random.default_rng(0)
    draws = rng.normal(0.5, 1.0, size=200_000)
    assert abs(inclusion_from_draws(draws) - inclusion_gaussian(0.5, 1.0)) < 0.01


def test_load_run_and_summary(tmp_path: Path) -> None:
    path = write_run_folder(tmp_path / "run")
    run = load_run(path)
    assert run.prior == "hard" and run.config["seed"] == 0 and len(run.metrics) == 3
    rows = summary_table(run)
    assert len(rows) == 2 * 8 * 7
    post = make_posterior()
    row = next(r for r in rows if r.cell_type == "reduce" and r.edge_index == 3
               and r.op == "dil_conv_5x5")
    t, e, k = 1, 3, SPACE.ops.index("dil_conv_5x5")
    mean, sd = post["mean"]["op_switch"][t, e, k], post["var"]["op_switch"][t, e, k].sqrt()
    assert row.edge == SPACE.edge_names("reduce")[3]
    assert math.isclose(row.mean, float(mean)) and math.isclose(row.sd, float(sd))
    assert math.isclose(row.gamma, float(post["gamma"]["op_switch"][t, e, k]))
    em, es = post["mean"]["edge_switch"][t, e], post["var"]["edge_switch"][t, e].sqrt()
    expected = math.erf(abs(em / es) / math.sqrt(2)) * math.erf(abs(mean / sd) / math.sqrt(2))
    assert math.isclose(row.inclusion, float(expected), rel_tol=1e-12)
    # pruned ops and ops of a pruned edge have inclusion 0 and are not kept
    pruned = [r for r in rows if r.cell_type == "normal" and
              ((r.edge_index == 0 and SPACE.ops.index(r.op) < 3) or r.edge_index == 7)]
    assert len(pruned) == 3 + 7
    assert all(r.inclusion == 0.0 and not r.kept for r in pruned)
    # kept agrees with genotype.json: every other alive op is kept here
    assert sum(r.kept for r in rows) == 2 * 8 * 7 - 10


def test_to_arviz_uses_posterior_nc(tmp_path: Path) -> None:
    path = write_run_folder(tmp_path / "run")
    run = load_run(path)
    built = run.to_arviz(num_chains=1, num_draws=20)
    assert "log_likelihood" not in group_names(built)
    ll = np.zeros((2, 10, 5))
    save_arviz(to_arviz(run.posterior, num_chains=2, num_draws=10, log_likelihood=ll),
               path / "posterior.nc")
    loaded = load_run(path).to_arviz()
    assert get_group(loaded, "posterior")["op_switch"].shape == (2, 10, 2, 8, 7)
    assert get_group(built, "posterior")["op_switch"].shape == (1, 20, 2, 8, 7)
    assert get_group(loaded, "log_likelihood")["obs"].shape == (2, 10, 5)


def test_analyze_one_run_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_run_folder(tmp_path / "run")
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "normal" in out and "kept ops" in out
    plots = path / "plots"
    for name in ("forest_normal.png", "forest_reduce.png", "gamma_trajectories.png",
                 "inclusion_normal.png", "inclusion_reduce.png", "cell_normal_inclusion.png",
                 "cell_reduce_inclusion.png"):
        assert (plots / name).stat().st_size > 1000, name
    with (path / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 112
    assert {"cell_type", "edge", "op", "mean", "sd", "gamma", "inclusion", "kept"} <= set(rows[0])


def test_forest_grouped_by_cell_type_and_edge_names(tmp_path: Path) -> None:
    rows = summary_table(load_run(write_run_folder(tmp_path / "run")))
    figures = forest_figures(rows)
    assert set(figures) == {"normal", "reduce"}
    ticks = [t.get_text() for t in figures["normal"].axes[0].get_yticklabels()]
    names = SPACE.edge_names("normal")
    # one row per edge, named, then its kept ops; the pruned edge 7 is one row
    edge_rows = [t for t in ticks if "$" in t]
    assert len(edge_rows) == SPACE.num_edges
    for name, tick in zip(names, edge_rows, strict=True):
        assert tick.startswith(math_label(name))
    assert not any(t.startswith("e0") or "edge_switch" in t for t in ticks)
    assert "(3 of 7 ops pruned)" in edge_rows[0] and "no op kept" in edge_rows[7]
    kept = [r for r in rows if r.group == "normal" and r.kept]
    assert len(ticks) == SPACE.num_edges + len(kept)
    # readable: at least 9 pt type, at most 0.3 inch per row
    assert min(t.get_fontsize() for t in figures["normal"].axes[0].get_yticklabels()) >= 9
    assert figures["normal"].get_size_inches()[1] <= 0.3 * len(ticks) + 1.5


def test_summary_of_laplace_draws_has_no_mcmc_diagnostics(tmp_path: Path) -> None:
    post = make_posterior()
    path = save_arviz(to_arviz(post, num_chains=2, num_draws=50), tmp_path / "posterior.nc")
    idata = load_arviz(path)
    assert get_group(idata, "posterior").attrs["draws_note"] == LAPLACE_DRAWS_NOTE
    frame = summarize(idata, var_names=["op_switch"])
    assert list(frame.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]
    assert not any("r_hat" in c or "ess" in c for c in frame.columns)
    assert frame.attrs["note"] == LAPLACE_DRAWS_NOTE
    with pytest.raises(ValueError, match="not MCMC chains"):
        summarize(idata, kind="diagnostics")
    # anything that is not a pyronas export keeps the full summary
    import arviz as az

    rng = np.random.default_rng(0)
    mcmc = az.from_dict(posterior={"x": rng.normal(size=(2, 50))})
    assert "r_hat" in summarize(mcmc).columns


def test_analyze_several_runs_with_compare(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i, shift in enumerate((0.0, -0.5)):
        path = write_run_folder(tmp_path / f"run{i}", seed=i)
        ll = rng.normal(-1.0 + shift, 0.05, size=(2, 100, 30))
        post = torch.load(path / "posterior.pt", weights_only=False)
        save_arviz(to_arviz(post, num_chains=2, num_draws=100, log_likelihood=ll),
                   path / "posterior.nc")
        paths.append(path)
    out = tmp_path / "cmp"
    assert run_analyze_cli(paths, out) == 0
    with (out / "comparison.csv").open() as handle:
        rows = {r["run"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"run0", "run1"}
    # run0 has the higher held-out log likelihood: ranked first by az.compare
    assert int(rows["run0"]["rank"]) == 0 and int(rows["run1"]["rank"]) == 1
    assert float(rows["run0"]["log_evidence"]) == -80.0
    assert (out / "comparison.png").is_file() and (out / "evidence.png").is_file()


def test_not_a_run_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RunFolderError, match="not a search run folder.*posterior.pt"):
        load_run(tmp_path)
    with pytest.raises(RunFolderError, match="not a folder"):
        load_run(tmp_path / "missing")
    torch.save({"format": "something-else"}, tmp_path / "posterior.pt")
    with pytest.raises(RunFolderError, match="format"):
        load_run(tmp_path)
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
