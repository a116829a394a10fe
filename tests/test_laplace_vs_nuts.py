"""experiments/laplace_vs_nuts.py: comparison helpers and both Laplace fits (fast), a run (slow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script


def _load():
    return load_script("experiments/laplace_vs_nuts.py")


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
    assert sizes == {"edge": 16, "normal_edge": 8, "reduce_edge": 8, "normal_op": 56,
                     "reduce_op": 56, "all": 128}


def test_compare_with_full_laplace_correlations() -> None:
    rng = np.random.default_rng(3)
    cov = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, -0.3], [0.0, -0.3, 0.5]])
    mean = np.array([0.5, -1.0, 2.0])
    draws = rng.multivariate_normal(mean, cov, size=200_000)
    full = lvn.compare_with_laplace(draws, mean, cov)
    diag = lvn.compare_with_laplace(draws, mean, 1.0 / np.diag(np.linalg.inv(cov)))
    assert full["kl_full"] < 1e-3 and full["kl_diag"] < 1e-3
    np.testing.assert_allclose(full["sd_ratio"], 1.0, rtol=0.01)
    assert abs(full["laplace_max_abs_corr"] - 0.9) < 1e-12
    assert full["max_abs_corr_diff"] < 0.01
    # a diagonal fit has no correlations: the difference is the largest draw correlation
    assert diag["laplace_max_abs_corr"] == 0.0
    assert abs(diag["max_abs_corr_diff"] - diag["max_abs_corr"]) < 1e-12
    assert diag["kl_full"] > 0.5 and min(diag["sd_ratio"]) > 1.0


def _linear_gaussian(seed: int = 4):
    """A correlated design ``y = X s + noise``, its exact posterior and both Laplace fits."""
    gen = torch.Generator().manual_seed(seed)
    n, p, noise, gamma = 40, 3, 0.5, 2.0
    base = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    x = base + 0.4 * torch.randn(n, p, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -0.5, 0.2], dtype=torch.float64) \
        + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    precision = x.T @ x / noise**2 + torch.eye(p, dtype=torch.float64) / gamma
    cov = torch.linalg.inv(precision)
    mean = cov @ (x.T @ y) / noise**2

    def forward(sites: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return (xb @ sites["s"]).unsqueeze(-1)

    pair = lvn.fit_laplace_pair(forward, mean, (x, y.unsqueeze(-1)), n, 1.0 / gamma,
                                likelihood="gaussian", noise_std=noise)
    return mean, cov, precision, pair


def test_full_laplace_is_exact_on_linear_gaussian() -> None:
    mean, cov, precision, pair = _linear_gaussian()
    torch.testing.assert_close(pair.full_cov, cov, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(pair.diag_var, 1.0 / torch.diagonal(precision), rtol=1e-9,
                               atol=0.0)
    assert pair.curvature_rel_diff < 1e-10
    draws = np.random.default_rng(5).multivariate_normal(mean.numpy(), cov.numpy(), 200_000)
    full = lvn.compare_with_laplace(draws, mean.numpy(), pair.full_cov.numpy())
    diag = lvn.compare_with_laplace(draws, mean.numpy(), pair.diag_var.numpy())
    assert full["kl_full"] < 1e-3 and full["kl_diag"] < 1e-3 and full["max_abs_z"] < 0.02
    assert full["max_abs_corr_diff"] < 0.01
    # the correlated design makes the diagonal fit overconfident
    assert diag["kl_full"] > 1.0 and np.median(diag["sd_ratio"]) > 1.5


def test_laplace_pair_categorical_diagonals_agree() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=gen)
    w = 0.3 * torch.randn(12, generator=gen, dtype=torch.float64)

    def forward(sites: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return torch.tanh(xb @ sites["s"].reshape(4, 3))

    pair = lvn.fit_laplace_pair(forward, w, (x, y), 12, 1.0)
    torch.testing.assert_close(torch.diagonal(pair.ggn), pair.diag_curvature, rtol=1e-10,
                               atol=1e-14)
    # marginal variances of the full fit are at least the conditional (diagonal) ones
    assert bool((pair.full_sd**2 >= pair.diag_var * (1 - 1e-12)).all())


def test_assemble_is_vmappable() -> None:
    from pyronas.space import get_space

    space = get_space("bayesnas8")
    mask = lvn.free_mask(space, "normal_op")
    edge_shape, op_shape = space.switch_shapes()
    base = {"edge_switch": torch.full(edge_shape, 2.0, dtype=torch.float64),
            "op_switch": torch.full(op_shape, 3.0, dtype=torch.float64)}
    s = torch.arange(56, dtype=torch.float64)
    out = lvn.assemble(base, mask, s)
    expected = base["op_switch"].clone()
    expected[mask["op_switch"]] = s
    assert torch.equal(out["op_switch"], expected)
    assert torch.equal(out["edge_switch"], base["edge_switch"])
    batched = torch.func.vmap(lambda v: lvn.assemble(base, mask, v)["op_switch"])(
        torch.stack([s, -s]))
    assert torch.equal(batched[1], torch.where(mask["op_switch"], -expected, expected))


def _fake_result(converged: bool) -> dict:
    fit = {"kl_diag": 1.5, "kl_full": 2.5, "max_abs_z": 0.7, "sd_ratio_median": 1.2,
           "sd_ratio_range": [0.9, 2.0], "max_abs_corr": 0.6, "laplace_max_abs_corr": 0.0,
           "max_abs_corr_diff": 0.6, "keep_switches_differ": 1, "genotype_differs": True}
    cfg = vars(lvn.parse_args(["--full-mass", "--init", "laplace", "--chains", "4"]))
    switch = {"name": "normal:a->b", "laplace_mean": 1.0, "diag_laplace_sd": 0.1,
              "full_laplace_sd": 0.2, "nuts_mean": 1.1, "nuts_sd": 0.25, "r_hat": 1.01,
              "ess_bulk": 400.0}
    return {
        "config": {k: v for k, v in cfg.items() if k not in ("results", "out")},
        "num_free_switches": 2, "subset": 16, "map_grad_norm": 1e-5,
        "curvature_rel_diff": 1e-15, "seconds": {"nuts": 10.0},
        "nuts": {"potential_evaluations": [10, 10, 10, 10], "divergences": [0, 0, 1, 0]},
        "switches": [switch, {**switch, "name": "reduce:a->b"}],
        "comparison": {"diagonal": fit, "full": {**fit, "laplace_max_abs_corr": 0.5,
                                                 "max_abs_corr_diff": 0.1,
                                                 "genotype_differs": False}},
        "r_hat_max": 1.01 if converged else 1.2, "ess_bulk_min": 400.0 if converged else 20.0,
        "converged": converged,
    }


def test_markdown_side_by_side_table() -> None:
    text = lvn.markdown(_fake_result(True))
    lines = text.splitlines()
    assert "| quantity | diagonal Laplace | full Laplace |" in lines
    table = lines[lines.index("| quantity | diagonal Laplace | full Laplace |") + 2:]
    table = table[: next(i for i, line in enumerate(table) if not line.startswith("|"))]
    assert len(table) == 8 and all(line.count("|") == 4 for line in table)
    assert "| derived cell differs from NUTS's | yes | no |" in table
    assert any("0.00 | 0.50 |" in line for line in table)  # largest Laplace correlation
    assert "converged by the criterion" in text and "NOT" not in text
    assert "--full-mass" in text and "--init laplace" in text
    failed = lvn.markdown(_fake_result(False))
    assert "did NOT converge" in failed and "Switches that fail it" in failed


def test_results_from_saved_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    summary, results = tmp_path / "summary.json", tmp_path / "results.md"
    summary.write_text(json.dumps(_fake_result(False)))
    results.write_text("# Results\n\nkept\n")
    assert lvn.main(["--from-json", str(summary), "--results", str(results)]) == 0
    text = results.read_text()
    assert "kept" in text and "| quantity | diagonal Laplace | full Laplace |" in text
    assert "did NOT converge" in text and capsys.readouterr().out.strip().startswith("{")

def test_command_line_round_trip() -> None:
    argv = ["--num-samples", "7", "--warmup", "9", "--chains", "3", "--subset", "20",
            "--full-mass", "--init", "laplace", "--target-accept", "0.9", "--free", "reduce_op"]
    cfg = vars(lvn.parse_args(argv))
    command = lvn.command_line(cfg).split()
    assert command[:2] == ["python", "experiments/laplace_vs_nuts.py"]
    again = vars(lvn.parse_args(command[2:]))
    assert {k: again[k] for k in cfg if k != "results"} == \
        {k: cfg[k] for k in cfg if k != "results"}
    assert lvn.convergence_ok(1.05, 200.0) and not lvn.convergence_ok(1.06, 500.0)
    assert not lvn.convergence_ok(1.0, 199.0)


@pytest.mark.slow
def test_small_run(tmp_path: Path) -> None:
    out = tmp_path / "lvn.json"
    results = tmp_path / "results.md"
    assert lvn.main(["--num-samples", "6", "--warmup", "6", "--chains", "2", "--subset", "16",
                     "--epochs", "1", "--max-tree-depth", "3", "--full-mass", "--init",
                     "laplace", "--out", str(out),
                     "--results", str(results)]) == 0
    import json

    result = json.loads(out.read_text())
    assert result["num_free_switches"] == 16 and len(result["switches"]) == 16
    assert math.isfinite(result["map_grad_norm"])
    assert all(s["diag_laplace_sd"] > 0 and s["nuts_sd"] > 0 for s in result["switches"])
    # marginal sds of the full fit are at least the conditional sds of the diagonal one
    assert all(s["full_laplace_sd"] >= s["diag_laplace_sd"] * (1 - 1e-9)
               for s in result["switches"])
    assert result["curvature_rel_diff"] < 1e-8
    assert np.asarray(result["chain_means"]).shape == (2, 16)
    for fit in lvn.FITS:
        cmp = result["comparison"][fit]
        assert math.isfinite(cmp["kl_full"]) and cmp["kl_diag"] >= 0
    assert lvn.MARK_START in results.read_text()
    assert "| quantity | diagonal Laplace | full Laplace |" in results.read_text()
