"""Smoke tests of ``benchmarks/curvature.py``: the agreement of the curvature backends with the
exact GGN on a trained tiny supernet with real digits batches, its table, and the choice of the
``ggn`` chunk size from the memory probe."""

import math
import re

import pytest
import torch
from conftest import load_script


def _load_script():
    return load_script("benchmarks/curvature.py")


@pytest.fixture(scope="module")
def bench():
    return _load_script()


def test_compare_on_known_vectors(bench):
    ref = {"edge_switch": torch.tensor([1.0, 2.0, 3.0]), "op_switch": torch.tensor([[4.0, 5.0]])}
    same = bench.compare(ref, ref)
    assert set(same) == {"edge_switch", "op_switch", "all"}
    assert all(m["rel_err"] == 0.0 and m["sum_ratio"] == 1.0 for m in same.values())
    assert same["all"]["spearman"] == pytest.approx(1.0)
    double = bench.compare({k: 2 * v for k, v in ref.items()}, ref)
    assert double["all"]["rel_err"] == pytest.approx(1.0)
    assert double["op_switch"]["sum_ratio"] == pytest.approx(2.0)
    reverse = bench.compare({"edge_switch": torch.tensor([3.0, 2.0, 1.0]),
                             "op_switch": ref["op_switch"]}, ref)
    assert reverse["edge_switch"]["spearman"] == pytest.approx(-1.0)


def test_agreement_on_a_trained_tiny_network(bench, monkeypatch):
    monkeypatch.setenv("BENCH_THREADS", "1")
    result = bench.agreement(seeds=(0,), epochs=1, batch=8, num_batches=2, C=4, max_steps=6,
                             conditions=("init/noise", "trained/real"))
    runs = result["runs"]
    assert [r["condition"] for r in runs] == ["init/noise", "trained/real"]
    assert runs[1]["train_seconds"] > 0 and 0.0 <= runs[1]["accuracy"] <= 1.0
    for run in runs:
        assert set(run["metrics"]) == set(bench.AGREEMENT_BACKENDS)
        lean = run["metrics"]["ggn_lean"]
        for site in bench.SITES:
            # ggn_lean computes the same quantity as ggn: equal up to float32 rounding
            assert lean[site]["rel_err"] < 1e-5
            assert lean[site]["sum_ratio"] == pytest.approx(1.0, abs=1e-5)
            assert lean[site]["spearman"] > 0.999
        for metrics in run["metrics"].values():
            for m in metrics.values():
                assert -1.0 <= m["spearman"] <= 1.0
                assert math.isfinite(m["rel_err"]) and m["sum_ratio"] > 0
    rows = bench.agreement_table(result)
    assert len(rows) == 2 + 2 * len(bench.AGREEMENT_BACKENDS) * len(bench.SITES)
    assert any(r.startswith("| trained/real | layerwise / edge_switch |") for r in rows)


def test_quick_mode_prints_every_row(bench, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_THREADS", "1")
    bench.main(["--quick", "--no-timing"])
    out = capsys.readouterr().out
    for condition in bench.CONDITIONS:
        for name in bench.AGREEMENT_BACKENDS:
            for site in bench.SITES:
                assert f"| {condition} | {name} / {site} |" in out
    lean = re.findall(r"\| ggn_lean / \w+ \| ([0-9.e+-]+) \|", out)
    assert len(lean) == 3 * len(bench.SITES) and all(float(v) < 1e-5 for v in lean)


def test_ggn_chunk_from_the_probe(bench, monkeypatch):
    peaks = {2: 500 * 2**20, 4: 900 * 2**20}  # 200 MiB per sample, 100 MiB fixed
    monkeypatch.setattr(bench, "measure",
                        lambda case, op, device, batch, C, repeats, chunk_size=None:
                        {"seconds": 0.0, "peak_bytes": peaks[batch]})
    monkeypatch.setattr(bench, "available_bytes", lambda device: 4 * 2**30)
    chunk, note = bench.ggn_chunk("cifar", "cpu", 64, 16, 0.5)
    assert chunk == (2 * 2**30 - 100 * 2**20) // (200 * 2**20) == 9
    assert "per sample" in note
    monkeypatch.setattr(bench, "available_bytes", lambda device: 2**20)
    assert bench.ggn_chunk("cifar", "cpu", 64, 16, 0.5)[0] == 0
    monkeypatch.setattr(bench, "available_bytes", lambda device: 2**40)
    assert bench.ggn_chunk("cifar", "cpu", 64, 16, 0.5)[0] == 64
