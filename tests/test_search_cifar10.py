"""experiments/search_cifar10.py (smoke runs on tiny CIFAR-10 pickles written here), its presets,
and the search-cost column of experiments/tables.py fed from search run folders."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import load_script

from pyronas.config import ConfigError
from pyronas.genotype import load_genotype
from pyronas.search import compact_genotype, resolve_search_config
from pyronas.space import get_space

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("search_cifar10", "search_cifar10_authors", "search_cifar10_darts1")


def _load(script: str):
    return load_script(f"experiments/{script}")


def _write_cifar_pickles(folder: Path, per_batch: int = 20) -> None:
    """Five training batches and a test batch in the cifar-10-batches-py format."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8),
            b"labels": [i % 10 for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


@pytest.fixture(scope="module")
def script():
    return _load("search_cifar10.py")


@pytest.fixture(scope="module")
def tables():
    return _load("tables.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    _write_cifar_pickles(root / "cifar-10-batches-py")
    return root


@pytest.fixture(scope="module")
def ours(script, data_dir, tmp_path_factory) -> tuple[Path, list[dict]]:
    """One smoke search with our preset (DARTS space, paper schedule), seed 0."""
    out = tmp_path_factory.mktemp("runs")
    rows = script.main([
        "--smoke", "--data-dir", str(data_dir), "--out", str(out), "--seeds", "0",
        "--set", "num_threads=1",
    ])  # fmt: skip
    return out, rows


@pytest.mark.parametrize("name", PRESETS)
def test_presets_validate(name: str) -> None:
    cfg = resolve_search_config(name)
    assert cfg["dataset"] == "cifar10" and cfg["channels"] == 16 and cfg["layers"] == 8
    if name == "search_cifar10_authors":
        assert cfg["space"] == "bayesnas8" and cfg["batch_size"] == 18
        assert cfg["curvature_multiplier"] == cfg["batch_size"] == 18
        assert cfg["schedule"] == "released" and cfg["t_max"] == 1
        assert cfg["lambda_edge"] == cfg["lambda_op"] == 0.01
    elif name == "search_cifar10":
        assert (cfg["strategy"], cfg["space"], cfg["batch_size"]) == ("bayesnas", "darts", 64)
        assert cfg["schedule"] == "paper" and cfg["curvature"] == "ggn"
        assert cfg["curvature_multiplier"] == 1.0 and cfg["t_max"] == 10
    else:
        assert (cfg["strategy"], cfg["space"], cfg["search_epochs"]) == ("darts1", "darts", 50)
        assert cfg["arch_lr"] == 3e-4 and cfg["lr_min"] == 1e-3 and cfg["batch_size"] == 64


def test_a_preset_on_top_of_ours_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("base: search_cifar10_authors\nlambda_edg: 0.005\n")
    with pytest.raises(ConfigError, match="lambda_edge"):
        resolve_search_config(path)


def test_run_labels(script) -> None:
    base = resolve_search_config("search_cifar10")
    assert script.run_label(base, "search_cifar10") == "search_cifar10_lam0.01"
    odd = {**base, "lambda_edge": 0.005, "lambda_op": 0.007}
    assert script.run_label(odd, "x/my.yaml") == "my_lam0.005-0.007"
    darts = {**base, "strategy": "darts2"}
    assert script.run_label(darts, "search_cifar10") == "search_cifar10_darts2"
    assert script.run_label(darts, "search_cifar10_darts2") == "search_cifar10_darts2"


def test_smoke_search_writes_a_run_and_is_not_rerun(script, ours, data_dir, capsys) -> None:
    out, (row,) = ours
    run = out / "search_cifar10_lam0.01_seed0"
    assert Path(row["run_dir"]) == run and row["strategy"] == "bayesnas"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["supernet"]["space"], cfg["data"]["dataset"], cfg["run"]["seed"],
            cfg["supernet"]["channels"]) == ("darts", "cifar10", 0, 4)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["search_device"] == "cpu" and metrics["search_gpu_days"] is None
    assert metrics["search_seconds"] > 0
    assert row["search_seconds"] == pytest.approx(metrics["search_seconds"])
    assert row["genotype"] == compact_genotype(load_genotype(run / "genotype.json"))
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 2  # t_max 1

    stamp = (run / "metrics.json").stat().st_mtime_ns
    again = script.main([
        "--smoke", "--data-dir", str(data_dir), "--out", str(out), "--seeds", "0",
    ])  # fmt: skip
    assert again == [row] and (run / "metrics.json").stat().st_mtime_ns == stamp
    printed = capsys.readouterr().out
    assert "search_cifar10_lam0.01_seed0" in printed and "GPU-days" in printed


def test_smoke_search_with_the_authors_preset(script, data_dir, tmp_path: Path) -> None:
    (row,) = script.main([
        "--smoke", "--config", "search_cifar10_authors", "--lambda", "0.005",
        "--data-dir", str(data_dir), "--out", str(tmp_path), "--seeds", "1",
        "--set", "num_threads=1",
    ])  # fmt: skip
    run = tmp_path / "search_cifar10_authors_lam0.005_seed1"
    assert Path(row["run_dir"]) == run
    cfg = resolve_search_config(run / "config.yaml")  # the nested file, as a flat view
    assert cfg["lambda_edge"] == cfg["lambda_op"] == 0.005 and cfg["seed"] == 1
    assert cfg["schedule"] == "released" and cfg["curvature_multiplier"] == 18.0
    assert cfg["batch_size"] == 8  # smoke size wins over the preset's 18
    # the cell only uses edges of the authors' 8-edge space
    space = get_space("bayesnas8")
    genotype = load_genotype(run / "genotype.json")
    for cell_type in genotype.cell_types:
        for j, pairs in enumerate(genotype.cell(cell_type)):
            for _, src in pairs:
                assert (src, space.num_inputs + j) in space.edges[cell_type]


def _retrain_run(folder: Path, genotype: str, error: float, **extra) -> Path:
    """A retraining run folder whose metrics do not carry the search cost."""
    folder.mkdir(parents=True)
    label = Path(genotype).parent.name
    metrics = {"genotype": label, "dataset": "cifar10", "test_error": error, "params_M": 3.4,
               **extra}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(yaml.safe_dump({"genotype": genotype}))
    return folder


def _search_run(folder: Path, seconds: float, device: str) -> str:
    folder.mkdir(parents=True)
    (folder / "genotype.json").write_text("{}")  # only its presence matters to the table
    (folder / "metrics.json").write_text(
        json.dumps({"strategy": "bayesnas", "search_seconds": seconds, "search_device": device})
    )
    return str(folder / "genotype.json")


def test_table_takes_the_search_cost_from_the_search_run(tables, ours, tmp_path: Path) -> None:
    gpu = _search_run(tmp_path / "s" / "gpu_lam0.01_seed0", 0.2 * 86400, "cuda:0")
    cpu = str(ours[0] / "search_cifar10_lam0.01_seed0" / "genotype.json")
    seconds = ours[1][0]["search_seconds"]
    runs = [
        _retrain_run(tmp_path / "r0", gpu, 2.77),
        _retrain_run(tmp_path / "r1", gpu, 2.85),
        _retrain_run(tmp_path / "r2", cpu, 9.0),
        # a cost already in the retraining metrics wins over the search folder's
        _retrain_run(tmp_path / "r3", cpu, 5.0, search_seconds=7200.0, search_device="cpu"),
    ]
    lines = tables.main([str(r) for r in runs] + ["--markdown"]).splitlines()
    assert lines[2] == "| gpu_lam0.01_seed0 | cifar10 | 2.81 ± 0.06 | 3.40 | 0.20 | 2 |"
    hours = (seconds + 7200.0) / 2 / 3600
    assert lines[3] == (
        "| search_cifar10_lam0.01_seed0 | cifar10 | 7.00 ± 2.83 | 3.40 | "
        f"- ({hours:.1f} CPU h) | 2 |"
    )


def test_table_pools_search_seeds(tables, tmp_path: Path) -> None:
    runs = []
    for seed, days in ((0, 0.1), (1, 0.3)):
        genotype = _search_run(tmp_path / "s" / f"lab_seed{seed}", days * 86400, "cuda")
        runs.append(tables.read_run(_retrain_run(tmp_path / f"r{seed}", genotype, 3.0 + seed)))
    assert [r["genotype"] for r in tables.summarise(runs)] == ["lab_seed0", "lab_seed1"]
    (row,) = tables.summarise(runs, pool_search_seeds=True)
    assert row["genotype"] == "lab" and row["n"] == 2
    assert row["search_gpu_days"] == pytest.approx(0.2) and row["search_cpu_hours"] is None
    assert row["test_error"] == pytest.approx(3.5)
