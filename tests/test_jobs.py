"""Idempotent jobs (pyronas.jobs) and the two comparison scripts built on them."""

import json
import logging
import sys
from pathlib import Path

import pytest

from pyronas.genotype import load_genotype, save_genotype
from pyronas.jobs import (
    Job,
    count_skips,
    read_json,
    retrain_job,
    run_jobs,
    search_job,
    write_markdown_section,
)
from pyronas.search import resolve_search_config, run_search

REPO = Path(__file__).resolve().parents[1]
TINY_SEARCH = {"dataset": "digits", "train_size": 200, "channels": 4, "layers": 3,
               "batch_size": 50, "t_max": 1, "search_epochs": 1, "curvature_batches": 1,
               "bn_batches": 1, "posterior_draws": 2, "num_candidates": 2, "num_threads": 1}


def _experiment(name):
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def _json_files(tmp_path, n):
    paths = []
    for i in range(n):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps({"i": i}))
        paths.append(path)
    return paths


@pytest.mark.parametrize("workers", [1, 2])
def test_run_jobs_collects_results_and_survives_a_failing_job(tmp_path, workers, caplog):
    paths = _json_files(tmp_path, 3)
    jobs = [Job(f"j{i}", read_json, {"path": p}) for i, p in enumerate(paths)]
    jobs.append(Job("broken", read_json, {"path": tmp_path}))  # a folder: IsADirectoryError
    with caplog.at_level(logging.ERROR):
        results = run_jobs(jobs, workers=workers, num_threads=None)
    assert results == {"j0": {"i": 0}, "j1": {"i": 1}, "j2": {"i": 2}}
    assert "job broken failed" in caplog.text


def test_run_jobs_starts_nothing_after_the_deadline(tmp_path, caplog):
    jobs = [Job("late", read_json, {"path": _json_files(tmp_path, 1)[0]})]
    with caplog.at_level(logging.WARNING):
        assert run_jobs(jobs, deadline=-1.0, num_threads=None) == {}
    assert "late not started" in caplog.text


def test_count_skips():
    assert count_skips(load_genotype("DARTS_V2")) == 2
    assert count_skips(load_genotype("DARTS_V2"), "reduce") == 3


def test_markdown_section_is_replaced_in_place(tmp_path):
    md = tmp_path / "results.md"
    md.write_text("# Results\n\nbefore\n")
    write_markdown_section(md, "x", "one")
    md.write_text(md.read_text() + "\nafter\n")
    write_markdown_section(md, "x", "two")
    text = md.read_text()
    assert text.count("<!-- x:start -->") == 1 and "two" in text and "one" not in text
    assert text.index("before") < text.index("two") < text.index("after")


def test_run_search_refuses_a_baseline_strategy(tmp_path):
    cfg = resolve_search_config(None, {**TINY_SEARCH, "strategy": "darts1",
                                       "out": str(tmp_path / "s")})
    with pytest.raises(ValueError, match="strategy 'darts1'"):
        run_search(cfg)


def test_search_job_runs_the_named_strategy_once(tmp_path):
    out = tmp_path / "s"
    path = search_job({**TINY_SEARCH, "strategy": "darts1", "out": str(out)})
    genotype = load_genotype(path)
    # DARTS rule: two inputs per node, one op each
    assert all(len(pairs) == 2 for pairs in genotype.normal)
    assert read_json(out / "metrics.json")["strategy"] == "darts1"
    stamp = path.stat().st_mtime_ns
    assert search_job({**TINY_SEARCH, "strategy": "darts1", "out": str(out)}) == path
    assert path.stat().st_mtime_ns == stamp  # finished: skipped


def test_retrain_job_is_skipped_once_finished(tmp_path):
    overrides = {"train_size": 100, "C": 4, "layers": 3, "epochs": 1, "dataset": "digits",
                 "num_threads": 1}
    first = retrain_job("DARTS_V2", "retrain_digits", overrides, str(tmp_path / "r"))
    stamp = (tmp_path / "r" / "metrics.json").stat().st_mtime_ns
    again = retrain_job("DARTS_V2", "retrain_digits", overrides, str(tmp_path / "r"))
    assert again == first
    assert (tmp_path / "r" / "metrics.json").stat().st_mtime_ns == stamp


def test_compare_cells_smoke(tmp_path):
    compare = _experiment("compare_cells")
    md = tmp_path / "results.md"
    out = tmp_path / "cells"
    assert compare.main(["--smoke", "--dataset", "digits", "--seeds", "0", "--random-cells",
                         "1", "--out", str(out), "--results-md", str(md)]) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert [r["cell"] for r in rows] == [*compare.PUBLISHED, "random0"]
    assert all(r["seeds_done"] == 1 and 0 <= r["accs"][0] <= 100 for r in rows)
    assert "<!-- cells-compare:start -->" in md.read_text()
    # the random cells are fixed draws: the same in every run
    again = compare.random_cells(1, tmp_path / "again")
    assert load_genotype(again[0]) == load_genotype(out / "cells" / "random0.json")


def test_compare_cells_of_your_own_pooled_by_group(tmp_path):
    compare = _experiment("compare_cells")
    md = tmp_path / "results.md"
    cell = save_genotype(load_genotype("DARTS_V2"), tmp_path / "mine.json")
    argv = ["--smoke", "--dataset", "digits", "--seeds", "0", "--random-cells", "0",
            "--cell", f"a/x={cell}", "--cell", f"b/x={cell}", "--out", str(tmp_path / "own"),
            "--results-md", str(md), "--section", "own-cells"]
    assert compare.main(argv) == 0
    rows = json.loads((tmp_path / "own" / "summary.json").read_text())
    assert [(r["cell"], r["group"], r["ops"]) for r in rows] == [("a/x", "a", [8, 8]),
                                                                 ("b/x", "b", [8, 8])]
    text = md.read_text()
    assert "<!-- own-cells:start -->" in text and "All a-cell runs:" in text
    assert "; all b-cell runs:" in text
    with pytest.raises(SystemExit):
        compare.main(["--cell", f"c={tmp_path / 'missing.json'}", "--out", str(tmp_path / "n")])


def test_compare_strategies_smoke(tmp_path):
    compare = _experiment("compare_strategies")
    md = tmp_path / "results.md"
    out = tmp_path / "strategies"
    argv = ["--smoke", "--dataset", "digits", "--seeds", "0", "--strategies", "bayesnas-laplace",
            "darts1", "--out", str(out), "--results-md", str(md)]
    assert compare.main(argv) == 0
    rows = {r["strategy"]: r for r in json.loads((out / "summary.json").read_text())}
    assert len(rows["bayesnas-laplace"]["accs"]) == len(rows["darts1"]["accs"]) == 1
    assert rows["darts1"]["ops_normal"] == [8]
    search = read_json(out / "darts1" / "seed0" / "search" / "metrics.json")
    assert search["strategy"] == "darts1"
    assert "<!-- strategies-compare:start -->" in md.read_text()


def test_compare_strategies_random_cells_of_the_found_size_and_paired_tests(tmp_path):
    compare = _experiment("compare_strategies")
    md = tmp_path / "results.md"
    out = tmp_path / "evidence"
    argv = ["--smoke", "--dataset", "digits", "--seeds", "0", "1", "--strategies",
            "random-size", "--retrain-epochs", "1", "--out", str(out), "--results-md", str(md)]
    assert compare.main(argv) == 0
    rows = {r["strategy"]: r for r in json.loads((out / "summary.json").read_text())}
    # random-size needs the BayesNAS search of its seed, which therefore runs too
    assert rows["random-size"]["seeds"] == rows["bayesnas-hard"]["seeds"] == [0, 1]
    for seed in (0, 1):
        found = load_genotype(out / "bayesnas-hard" / f"seed{seed}" / "search" / "genotype.json")
        drawn = load_genotype(out / "random-size" / f"seed{seed}" / "genotype.json")
        for cell_type in found.cell_types:  # same size before the connectivity rule at most
            assert sum(map(len, drawn.cell(cell_type))) <= sum(map(len, found.cell(cell_type)))
    text = md.read_text()
    assert "| random-size | 2 |" in text and "Wilcoxon" in text and "Jaccard" in text


def test_lambda_sweep_smoke(tmp_path):
    sweep = _experiment("lambda_sweep")
    md = tmp_path / "results.md"
    out = tmp_path / "sweep"
    assert sweep.main(["--smoke", "--out", str(out), "--results-md", str(md)]) == 0
    results = json.loads((out / "summary.json").read_text())
    assert set(results) == {"digits/lambda0.01/seed0", "digits/lambda1.0/seed0"}
    small, large = results["digits/lambda0.01/seed0"], results["digits/lambda1.0/seed0"]
    assert small["status"] == "ok" and small["ops_normal"] >= 1
    assert large["status"] == "failed" or large["ops_normal"] <= small["ops_normal"]
    assert "<!-- lambda-sweep:start -->" in md.read_text()
