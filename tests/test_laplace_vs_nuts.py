"""experiments/laplace_vs_nuts.py: the Gaussian comparison helpers (fast) and a small run (slow)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "laplace_vs_nuts.py"


def _load():
    spec = importlib.util.spec_from_file_location("laplace_vs_nuts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


lvn = _load()


def test_kl_closed_forms() -> None:
    # KL(N(0,1) || N(1,1)) = 1/2; KL(N(0,1) || N(0,4)) = 0.5 (1/4 - 1 + log 4)
    assert math.isclose(lvn.gaussian_kl([0.0], [[1.0]], [1.0], [[1.0]]), 0.5)
    assert math.isclose(float(lvn.gaussian_kl_diag(0.0, 1.0, 0.0, 4.0)),
                        0.5 * (0.25 - 1 + math.log(4)))
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    cov = a @ a.T + np.eye(4)
    assert abs(lvn.gaussian_kl(np.ones(4), cov, np.ones(4), cov)) < 1e-12
    # the full KL of diagonal Gaussians is the sum of the univariate ones
    m1, v1, m0, v0 = rng.normal(size=3), rng.uniform(0.5, 2, 3), rng.normal(size=3), \
        rng.uniform(0.5, 2, 3)
    assert math.isclose(lvn.gaussian_kl(m1, np.diag(v1), m0, np.diag(v0)),
                        float(lvn.gaussian_kl_diag(m1, v1, m0, v0).sum()), rel_tol=1e-12)


def test_kl_matches_monte_carlo() -> None:
    rng = np.random.default_rng(1)
    m1, m0 = np.array([0.3, -0.2]), np.array([0.0, 0.1])
    cov1 = np.array([[1.0, 0.6], [0.6, 0.8]])
    cov0 = np.diag([1.5, 0.5])
    x = rng.multivariate_normal(m1, cov1, size=400_000)

    def logpdf(x, m, c):
        diff = x - m
        sol = np.linalg.solve(c, diff.T).T
        return -0.5 * ((diff * sol).sum(1) + np.linalg.slogdet(2 * np.pi * c)[1])

    mc = float(np.mean(logpdf(x, m1, cov1) - logpdf(x, m0, cov0)))
    assert abs(lvn.gaussian_kl(m1, cov1, m0, cov0) - mc) < 0.01


def test_compare_with_laplace_detects_correlation_and_scale() -> None:
    rng = np.random.default_rng(2)
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    draws = rng.multivariate_normal([1.0, 2.0], cov, size=100_000)
    # the diagonal Laplace of this Gaussian has the conditional variance 1 - 0.9^2
    cond = 1 - 0.81
    out = lvn.compare_with_laplace(draws, [1.0, 2.0], [cond, cond])
    np.testing.assert_allclose(out["sd_ratio"], [1 / math.sqrt(cond)] * 2, rtol=0.01)
    assert abs(out["max_abs_corr"] - 0.9) < 0.01
    expected_diag = 2 * float(lvn.gaussian_kl_diag(0.0, 1.0, 0.0, cond))
    assert abs(out["kl_diag"] - expected_diag) < 0.05
    assert abs(out["kl_full"] - lvn.gaussian_kl([0, 0], cov, [0, 0], np.diag([cond] * 2))) < 0.05
    exact = lvn.compare_with_laplace(draws, draws.mean(0), draws.var(0, ddof=1))
    assert exact["kl_diag"] < 1e-9 and exact["max_abs_z"] < 1e-9


def test_results_section_only_between_markers(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    path.write_text("# Results\n\nother text\n")
    lvn.write_results_section(path, "first")
    lvn.write_results_section(path, "second")
    text = path.read_text()
    assert "other text" in text and "second" in text and "first" not in text
    assert text.count(lvn.MARK_START) == 1 and text.count(lvn.MARK_END) == 1


def test_free_mask_sizes() -> None:
    from pyronas.space import get_space

    space = get_space("bayesnas8")
    sizes = {f: int(sum(m.sum() for m in lvn.free_mask(space, f).values()))
             for f in lvn.FREE_CHOICES}
    assert sizes == {"edge": 16, "normal_op": 56, "reduce_op": 56, "all": 128}


@pytest.mark.slow
def test_small_run(tmp_path: Path) -> None:
    out = tmp_path / "lvn.json"
    results = tmp_path / "results.md"
    assert lvn.main(["--num-samples", "6", "--warmup", "6", "--chains", "2", "--subset", "16",
                     "--epochs", "1", "--max-tree-depth", "3", "--out", str(out),
                     "--results", str(results)]) == 0
    import json

    result = json.loads(out.read_text())
    assert result["num_free_switches"] == 16 and len(result["switches"]) == 16
    assert math.isfinite(result["map_grad_norm"])
    assert all(s["laplace_sd"] > 0 and s["nuts_sd"] > 0 for s in result["switches"])
    assert math.isfinite(result["kl_full"]) and result["kl_diag"] >= 0
    assert lvn.MARK_START in results.read_text()
