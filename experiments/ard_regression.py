"""Sparse Bayesian linear regression with an ARD prior, fitted by type-II maximum likelihood.

    y = X w + b + eps,   eps ~ N(0, s^2),   w_j ~ N(0, gamma_j)   (X standardised)

The generic loop of ``pyronas.inference.type2`` alternates a MAP fit of ``w`` (and the intercept
``b``, the "network weight") under the reweighted l1 surrogate ``sum_j omega_j |w_j| / N``, a
diagonal Laplace approximation, and the closed-form ARD update
(``pyronas.inference.ard_update.group_ard_update`` with data precision ``N * curvature``).
Coefficients whose ``gamma`` falls below ``--threshold`` are pruned.

Usage::

    python experiments/ard_regression.py --csv data.csv --target y [--t-max 30] [--threshold 1e-3]

Every other numeric column is a feature. Prints JSON: ``coef`` and ``gamma`` per feature (on the
standardised feature scale), ``log_evidence`` (Laplace, last iteration), ``intercept`` and
``noise_std``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from types import SimpleNamespace
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyronas.inference.ard_update import group_ard_update
from pyronas.inference.type2 import Type2Config, Type2State, run_type2

DTYPE = torch.float64
SITES = ("coef",)
MIN_VARIANCE = 1e-12  # prior variance used for pruned coefficients (gamma = 0)


class LinearNet(nn.Module):
    """``x @ coef + intercept``; the intercept is the only trained network weight."""

    def __init__(self, intercept: float = 0.0):
        super().__init__()
        self.intercept = nn.Parameter(torch.tensor(intercept, dtype=DTYPE))

    def forward(self, x: Tensor, coef: Tensor) -> Tensor:
        return x @ coef + self.intercept


def model(net: LinearNet, x: Tensor, y: Tensor, hypers: dict[str, Any], num_data: int) -> None:
    """ARD linear regression: coef ~ N(0, gamma) per feature, y ~ N(net(x, coef), noise_std)."""
    gamma = hypers["gamma"]["coef"]
    with pyro.plate("feature", gamma.shape[0]):
        coef = pyro.sample(
            "coef", dist.Normal(torch.zeros_like(gamma), gamma.clamp_min(MIN_VARIANCE).sqrt())
        )
    with pyro.plate("data", num_data, subsample_size=len(x)):
        pyro.sample("obs", dist.Normal(net(x, coef), hypers["noise_std"]), obs=y)


def map_penalty(sites: dict[str, Tensor], hypers: dict[str, Any]) -> Tensor:
    """Reweighted l1 surrogate of the ARD prior, per data point: sum omega |coef| / N."""
    return (hypers["omega"]["coef"] * sites["coef"].abs()).sum() / hypers["num_data"]


def update_hypers(posterior: Any, hypers: dict[str, Any]) -> dict[str, Any]:
    """Closed-form ARD update: gamma = |coef| / omega, omega = sqrt(Ht / (1 + gamma Ht))."""
    update = group_ard_update(
        posterior.mean["coef"].detach(),
        posterior.num_data * posterior.curvature["coef"],
        hypers["gamma"]["coef"],
    )
    return {**hypers, "gamma": {"coef": update.gamma}, "omega": {"coef": update.omega}}


ARD_REGRESSION = SimpleNamespace(
    SITES=SITES, model=model, map_penalty=map_penalty, update_hypers=update_hypers
)


def ols_noise_std(x: Tensor, y: Tensor) -> float:
    """Residual standard deviation of least squares with an intercept (needs n > p + 1)."""
    n, p = x.shape
    if n <= p + 1:
        raise ValueError(f"cannot estimate the noise from {n} rows and {p} features: give it")
    design = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)
    coef = torch.linalg.lstsq(design, y.unsqueeze(1)).solution.squeeze(1)
    resid = y - design @ coef
    return float((resid.square().sum() / (n - p - 1)).sqrt())


def fit_ard_regression(
    x: Tensor,
    y: Tensor,
    t_max: int = 30,
    threshold: float = 1e-3,
    noise_std: float | None = None,
    epochs_per_iter: int = 50,
    lr: float | None = None,
) -> tuple[dict[str, Any], Type2State]:
    """Standardise ``x`` (n, p), then run the ARD type-II loop with full-batch gradient descent.

    ``lr`` defaults to half the inverse of the largest curvature of the mean NLL, so every MAP
    step is stable. Returns a summary dict (coef, gamma, omega, log_evidence, intercept,
    noise_std, x_mean, x_std) and the final loop state.
    """
    x = torch.as_tensor(x, dtype=DTYPE)
    y = torch.as_tensor(y, dtype=DTYPE)
    n, p = x.shape
    x_mean, x_std = x.mean(0), x.std(0).clamp_min(1e-12)
    xs = (x - x_mean) / x_std
    if noise_std is None:
        noise_std = ols_noise_std(xs, y)
    if lr is None:
        top = float(torch.linalg.eigvalsh(xs.T @ xs / n).max().clamp_min(1.0))
        lr = 0.5 * noise_std**2 / top
    hypers = {
        "gamma": {"coef": torch.ones(p, dtype=DTYPE)},
        "omega": {"coef": torch.ones(p, dtype=DTYPE)},
        "noise_std": noise_std,
        "num_data": n,
    }
    cfg = Type2Config(
        t_max=t_max, epochs_per_iter=epochs_per_iter, lr=lr, momentum=0.0, weight_decay=0.0,
        likelihood="gaussian", noise_std=noise_std, threshold=threshold, curvature_batches=1,
        progress=False,
    )
    net = LinearNet(float(y.mean()))
    data = [(xs, y)]
    state = run_type2(
        ARD_REGRESSION, net, {"coef": torch.zeros(p, dtype=DTYPE)}, hypers, data, data, n, cfg
    )
    summary = {
        "coef": state.sites["coef"].detach(),
        "gamma": state.hypers["gamma"]["coef"],
        "omega": state.hypers["omega"]["coef"],
        "log_evidence": state.records[-1]["log_evidence"] if state.records else float("nan"),
        "intercept": float(net.intercept.detach()),
        "noise_std": float(noise_std),
        "x_mean": x_mean,
        "x_std": x_std,
    }
    return summary, state


def read_csv(path: str, target: str) -> tuple[list[str], Tensor, Tensor]:
    """Feature names, features (n, p) and target (n,) from a CSV file with a header row."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} has no data rows")
    if target not in rows[0]:
        raise ValueError(f"target column {target!r} not in {path}: {list(rows[0])}")
    features = [c for c in rows[0] if c != target]
    try:
        x = torch.tensor([[float(r[c]) for c in features] for r in rows], dtype=DTYPE)
        y = torch.tensor([float(r[target]) for r in rows], dtype=DTYPE)
    except ValueError as err:
        raise ValueError(f"{path}: every column must be numeric ({err})") from err
    return features, x, y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="CSV file with a header row")
    parser.add_argument("--target", required=True, help="name of the target column")
    parser.add_argument("--t-max", type=int, default=30, help="type-II iterations")
    parser.add_argument("--threshold", type=float, default=1e-3, help="prune gamma below this")
    parser.add_argument("--noise-std", type=float, default=None,
                        help="noise standard deviation (default: least-squares estimate)")
    parser.add_argument("--epochs-per-iter", type=int, default=50,
                        help="full-batch gradient steps between updates")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    names, x, y = read_csv(args.csv, args.target)
    summary, _ = fit_ard_regression(
        x, y, t_max=args.t_max, threshold=args.threshold, noise_std=args.noise_std,
        epochs_per_iter=args.epochs_per_iter,
    )
    out = {
        "coef": dict(zip(names, summary["coef"].tolist(), strict=True)),
        "gamma": dict(zip(names, summary["gamma"].tolist(), strict=True)),
        "log_evidence": summary["log_evidence"],
        "intercept": summary["intercept"],
        "noise_std": summary["noise_std"],
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
