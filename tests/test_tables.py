"""experiments/tables.py on run folders written here: grouping by genotype, mean +/- sample
standard deviation over seeds, params, search cost in GPU-days, Markdown output."""

import json
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    return load_script("experiments/tables.py")


def _run(folder: Path, genotype: str, seed: int, error: float, params: float, **extra) -> Path:
    folder.mkdir(parents=True)
    metrics = {
        "genotype": genotype, "dataset": "cifar10", "seed": seed, "test_error": error,
        "test_acc": 100 - error, "params_M": params, **extra,
    }  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(yaml.safe_dump({"genotype": genotype, "seed": seed}))
    return folder


def test_table_groups_seeds_and_reports_mean_and_sd(tables, tmp_path: Path, capsys) -> None:
    bayes = [2.77, 2.85, 2.81]
    dirs = [
        _run(tmp_path / f"b{s}", "BAYESNAS_0.01", s, e, 3.4, search_seconds=0.2 * 86400,
             search_device="cuda")
        for s, e in enumerate(bayes)
    ]  # fmt: skip
    dirs.append(_run(tmp_path / "d0", "DARTS_V2", 0, 2.76, 3.3))
    (tmp_path / "unfinished").mkdir()
    dirs.append(tmp_path / "unfinished")

    table = tables.main([str(d) for d in dirs] + ["--markdown"])
    assert capsys.readouterr().out.strip() == table
    lines = table.splitlines()
    assert lines[0].startswith("| Genotype | Dataset | Test error (%)")
    assert "Top-5" not in lines[0]
    sd = statistics.stdev(bayes)
    assert f"{statistics.mean(bayes):.2f} ± {sd:.2f}" == "2.81 ± 0.04"
    assert lines[2] == "| BAYESNAS_0.01 | cifar10 | 2.81 ± 0.04 | 3.40 | 0.20 | 3 |"
    assert lines[3] == "| DARTS_V2 | cifar10 | 2.76 | 3.30 | - | 1 |"


def test_summary_numbers_and_top5(tables, tmp_path: Path) -> None:
    runs = [
        tables.read_run(_run(tmp_path / f"i{s}", "X", s, e, 3.9, test_top5_error=t5,
                             search_seconds=43200.0, search_device="cpu"))
        for s, (e, t5) in enumerate([(26.0, 8.0), (27.0, 10.0)])
    ]  # fmt: skip
    (row,) = tables.summarise(runs)
    assert row["n"] == 2 and row["test_error"] == pytest.approx(26.5)
    assert row["test_error_sd"] == pytest.approx(statistics.stdev([26.0, 27.0]))
    assert row["test_top5_error"] == pytest.approx(9.0)
    # a CPU search has no GPU-days: '-' and its CPU hours (43200 s = 12 h)
    assert row["search_gpu_days"] is None and row["search_cpu_hours"] == pytest.approx(12.0)
    text = tables.format_table([row], markdown=False)
    assert "Top-5 error (%)" in text and "9.00 ± 1.41" in text and "- (12.0 CPU h)" in text


def test_genotype_falls_back_to_the_config(tables, tmp_path: Path) -> None:
    folder = _run(tmp_path / "r", "", 0, 3.0, 1.0)
    (folder / "config.yaml").write_text(yaml.safe_dump({"genotype": "DARTS_V1"}))
    assert tables.read_run(folder)["genotype"] == "DARTS_V1"
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        tables.read_run(tmp_path)
