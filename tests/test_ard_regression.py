"""ARD regression with the full-covariance Laplace (inference/full_ard.py) against scikit-learn
and closed forms, through experiments/ard_regression.py (float64)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from mathbed import DT, correlated_design, iid_design, rng, simulate

from pyronas.inference.full_ard import fit_full_ard, mackay_update

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "ard_regression.py"


def _load_script():
    return load_script("experiments/ard_regression.py")


def _sklearn_ard(x: torch.Tensor, y: torch.Tensor, **hyperpriors: float):
    from sklearn.linear_model import ARDRegression

    return ARDRegression(tol=1e-12, max_iter=3000, **hyperpriors).fit(x.numpy(), y.numpy())


def _diabetes() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    return torch.tensor(x, dtype=DT), torch.tensor(y, dtype=DT)


def _correlated() -> tuple[torch.Tensor, torch.Tensor]:
    """12 features with pairwise correlation 0.9, three of them relevant."""
    gen = rng(3)
    x = correlated_design(200, 12, 0.9, gen)
    w = torch.zeros(12, dtype=DT)
    w[[0, 3, 7]] = torch.tensor([2.0, -1.5, 1.0], dtype=DT)
    return x, simulate(x, w, 0.5, gen, intercept=1.0)


DESIGNS = {"diabetes": _diabetes, "correlated 0.9": _correlated}


@pytest.mark.parametrize("design", sorted(DESIGNS))
@pytest.mark.parametrize("hyperpriors", [0.0, 1e-6], ids=["no-hyperprior", "sklearn-default"])
def test_same_support_and_coefficients_as_sklearn(design: str, hyperpriors: float) -> None:
    x, y = DESIGNS[design]()
    corr = np.corrcoef(x.numpy().T) - np.eye(x.shape[1])
    assert np.abs(corr).max() >= 0.89  # strongly correlated features
    script = _load_script()
    summary, result = script.fit_ard_regression(x, y)
    assert result.converged
    h = hyperpriors
    sk = _sklearn_ard(x, y, alpha_1=h, alpha_2=h, lambda_1=h, lambda_2=h)
    ours = summary["coef"].numpy()
    largest = np.abs(sk.coef_).max()
    # with its Gamma hyperpriors (1e-6) scikit-learn leaves the coefficients it would prune
    # below 1e-3 of the largest instead of exact zeros: its support is what stands above that
    support = np.flatnonzero(np.abs(sk.coef_) > 1e-3 * largest)
    assert np.flatnonzero(ours).tolist() == support.tolist()
    assert 0 < np.count_nonzero(ours) < x.shape[1]  # it selects
    assert np.abs(ours - sk.coef_).max() <= 0.01 * largest
    assert summary["intercept"] == pytest.approx(sk.intercept_, rel=1e-3, abs=1e-3 * largest)
    assert summary["noise_std"] == pytest.approx(sk.alpha_**-0.5, rel=1e-3)
    if h == 0.0:  # the same fixed point: agreement to rounding
        assert np.abs(ours - sk.coef_).max() <= 1e-8 * largest


def test_fixed_noise_gives_the_fixed_point_at_that_noise() -> None:
    x, y = _correlated()
    script = _load_script()
    learned, _ = script.fit_ard_regression(x, y)
    fixed, result = script.fit_ard_regression(x, y, noise_std=learned["noise_std"])
    assert result.noise_std == learned["noise_std"]
    torch.testing.assert_close(fixed["coef"], learned["coef"], rtol=0, atol=1e-8)


def test_log_marginal_is_the_closed_form_and_rises() -> None:
    """Each iteration's log marginal equals log N(y | 0, s^2 I + X Gamma X^T) over the alive
    columns, and type-II never lowers it."""
    gen = rng(5)
    x = iid_design(60, 6, gen)
    y = simulate(x, [1.0, 0.0, -0.5, 0.0, 0.0, 2.0], 0.3, gen)
    result = fit_full_ard(lambda s, a: a @ s["w"], {"w": torch.zeros(6, dtype=DT)}, x, y,
                          noise_std=0.3, learn_noise=False, tol=1e-12)  # fmt: skip
    alive = result.alive["w"]
    g = result.gamma["w"][alive]
    # the last record was taken with the variances before the last (converged) update
    cov = 0.09 * torch.eye(60, dtype=DT) + x[:, alive] @ torch.diag(g) @ x[:, alive].T
    exact = torch.distributions.MultivariateNormal(torch.zeros(60, dtype=DT), cov).log_prob(y)
    assert result.log_marginal[-1] == pytest.approx(float(exact), abs=1e-6)
    steps = np.diff(result.log_marginal)
    assert (steps > -1e-8).all()


def test_mackay_update_closed_form() -> None:
    mean = torch.tensor([1.0, 0.0, -2.0], dtype=DT)
    var = torch.tensor([0.5, 1.0, 0.0], dtype=DT)
    gamma = torch.tensor([1.0, 1.0, 4.0], dtype=DT)
    new, g = mackay_update(mean, var, gamma)
    torch.testing.assert_close(g, torch.tensor([0.5, 0.0, 1.0], dtype=DT))
    torch.testing.assert_close(new, torch.tensor([2.0, 0.0, 4.0], dtype=DT))


def test_pruning_everything_is_an_error() -> None:
    x = iid_design(30, 3, rng(0))
    y = torch.zeros(30, dtype=DT) + 1e-3 * iid_design(30, 1, rng(1)).squeeze(1)
    with pytest.raises(ValueError, match="pruned every element"):
        fit_full_ard(lambda s, a: a @ s["w"], {"w": torch.zeros(3, dtype=DT)}, x, y,
                     noise_std=1.0, learn_noise=False)  # fmt: skip


def test_script_smoke_prints_json(tmp_path: Path) -> None:
    x = iid_design(80, 5, rng(1))
    y = 3.0 * x[:, 0] - 2.0 * x[:, 3] + 0.3 * iid_design(80, 1, rng(2)).squeeze(1)
    names = ["a", "b", "c", "d", "e"]
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "target"])
        for row, target in zip(x.tolist(), y.tolist(), strict=True):
            writer.writerow([*row, target])
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--csv", str(path), "--target", "target"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= {"coef", "coef_standardised", "gamma", "log_marginal", "converged"}
    assert list(out["coef"]) == names and out["converged"] is True
    assert out["coef"]["a"] == pytest.approx(3.0, abs=0.15)
    assert out["coef"]["d"] == pytest.approx(-2.0, abs=0.15)
    assert out["coef"]["b"] == 0.0 and out["gamma"]["b"] == 0.0
    std_a = float(x[:, 0].std())
    assert out["coef_standardised"]["a"] == pytest.approx(out["coef"]["a"] * std_a, rel=1e-9)


def test_script_rejects_missing_target(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(ValueError, match="target column 'y'"):
        _load_script().main(["--csv", str(path), "--target", "y"])
