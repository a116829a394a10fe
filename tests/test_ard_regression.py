"""ARD type-II on a sparse linear regression, through experiments/ard_regression.py."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mathbed import DT, ard_alpha, iid_design, rng, simulate

from pyronas.inference.ard_update import group_ard_update

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "ard_regression.py"
RELEVANT = [1, 4, 7]


def _load_script():
    spec = importlib.util.spec_from_file_location("ard_regression_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sparse_data(n=200, p=10, seed=0):
    """Three relevant features of ten, an intercept of 2 and noise 0.5."""
    gen = rng(seed)
    x = iid_design(n, p, gen)
    w = torch.zeros(p, dtype=DT)
    w[RELEVANT] = torch.tensor([1.5, -1.0, 0.7], dtype=DT)
    return x, simulate(x, w, 0.5, gen, intercept=2.0)


@pytest.fixture(scope="module")
def fitted():
    script = _load_script()
    x, y = _sparse_data()
    summary, state = script.fit_ard_regression(x, y, t_max=15, threshold=1e-3)
    return x, y, summary, state


def test_relevant_coefficients_kept_irrelevant_pruned(fitted):
    x, y, summary, state = fitted
    live = state.masks["coef"].nonzero().flatten().tolist()
    assert live == RELEVANT
    assert (summary["coef"][RELEVANT].abs() > 0.3).all()
    dead = [j for j in range(10) if j not in RELEVANT]
    assert (summary["coef"][dead] == 0).all() and (summary["gamma"][dead] == 0).all()
    # estimates near the truth on the standardised scale (truth times the feature sd)
    truth = torch.tensor([1.5, -1.0, 0.7], dtype=DT) * summary["x_std"][RELEVANT]
    torch.testing.assert_close(summary["coef"][RELEVANT], truth, atol=0.12, rtol=0)
    assert summary["noise_std"] == pytest.approx(0.5, abs=0.08)


def test_update_equations_hold_at_the_fixed_point(fitted):
    x, y, summary, state = fitted
    post = state.posterior
    ht = post.num_data * post.curvature["coef"]
    gamma, coef = summary["gamma"], summary["coef"]
    alpha = ard_alpha(gamma, ht)
    live = state.masks["coef"]
    # gamma = |w| / omega with omega = sqrt(alpha), gamma on both sides (self-consistency)
    torch.testing.assert_close(gamma[live], coef[live].abs() / alpha[live].sqrt(), rtol=1e-4,
                               atol=0)
    torch.testing.assert_close(summary["omega"][live], alpha[live].sqrt(), rtol=1e-4, atol=0)
    # one more update leaves gamma unchanged
    again = group_ard_update(coef, ht, gamma)
    torch.testing.assert_close(again.gamma, gamma, rtol=1e-4, atol=1e-12)
    # for a relevant, well-determined coefficient the fixed point is gamma ~ w^2 + 1/Ht
    # (gamma^2 Ht / (1 + gamma Ht) = w^2)
    torch.testing.assert_close(gamma[live] ** 2 * alpha[live], coef[live] ** 2, rtol=3e-4, atol=0)
    # the coefficients are the MAP of the reweighted-l1 objective: zero subgradient
    xs = (x - summary["x_mean"]) / summary["x_std"]
    w = coef.clone().requires_grad_(True)
    resid = y - xs @ w - summary["intercept"]
    nll = 0.5 * (resid**2).mean() / summary["noise_std"] ** 2
    (g,) = torch.autograd.grad(nll, w)
    penalty_grad = summary["omega"] * coef.sign() / len(y)
    torch.testing.assert_close((g + penalty_grad)[live], torch.zeros(3, dtype=DT),
                               atol=1e-6, rtol=0)
    # evidence recorded and settled
    ev = [r["log_evidence"] for r in state.records]
    assert ev[-1] > ev[0] and abs(ev[-1] - ev[-2]) < 1e-3


def test_script_smoke_prints_json(tmp_path):
    x = iid_design(80, 5, rng(1))
    y = 3.0 * x[:, 0] - 2.0 * x[:, 3] + 0.3 * torch.randn(80, dtype=DT)
    names = ["a", "b", "c", "d", "e"]
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "target"])
        for row, target in zip(x.tolist(), y.tolist(), strict=True):
            writer.writerow([*row, target])
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--csv", str(path), "--target", "target", "--t-max", "8"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= {"coef", "gamma", "log_evidence"}
    assert list(out["coef"]) == names and list(out["gamma"]) == names
    assert out["coef"]["a"] > 2.0 and out["coef"]["d"] < -1.5
    assert out["gamma"]["a"] > 1e-3 and out["gamma"]["d"] > 1e-3
    assert out["coef"]["b"] == 0.0 and out["gamma"]["b"] == 0.0
    assert isinstance(out["log_evidence"], float)


def test_script_rejects_missing_target(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(ValueError, match="target column 'y'"):
        _load_script().main(["--csv", str(path), "--target", "y"])
