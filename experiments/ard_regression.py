"""Sparse Bayesian linear regression with an ARD prior, fitted by type-II maximum likelihood.

    y = X w + b + eps,   eps ~ N(0, sigma^2),   w_j ~ N(0, gamma_j)

The engine's full-covariance ARD loop (:func:`pyronas.inference.full_ard.fit_full_ard`): a
Gauss-Newton MAP step (exact for this linear model), the full Laplace posterior, MacKay's
update of every ``gamma_j`` and of the noise variance (learned by type-II unless ``--noise-std``
fixes it), and exact zeros for coefficients whose ``gamma`` falls under ``--threshold``, until no
variance moves by more than ``--tol`` relative. The intercept is handled by centring ``X`` and
``y``, as scikit-learn's ``ARDRegression`` does; by default the features keep their units
(``--standardise`` scales them to unit variance first), so the support and coefficients compare
directly with ``ARDRegression``.

Usage::

    python experiments/ard_regression.py --csv data.csv --target y
    python experiments/ard_regression.py --sklearn diabetes

Every other numeric column is a feature. Prints JSON: ``coef`` per feature in the data's units,
``coef_standardised`` (the same coefficients times the feature standard deviation), ``gamma``,
``intercept``, ``noise_std``, ``log_marginal`` (exact, last iteration), ``iterations`` and
``converged``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

import torch
from torch import Tensor

from pyronas.inference.full_ard import FullArdResult, fit_full_ard

DTYPE = torch.float64


def _linear(sites: dict[str, Tensor], x: Tensor) -> Tensor:
    """``x @ w``: (N, D) -> (N,)."""
    return x @ sites["w"]


def fit_ard_regression(
    x: Tensor,
    y: Tensor,
    *,
    noise_std: float | None = None,
    threshold: float = 1e-4,
    tol: float = 1e-10,
    max_iterations: int = 10_000,
    standardise: bool = False,
) -> tuple[dict[str, Any], FullArdResult]:
    """ARD regression of ``y`` (n,) on ``x`` (n, p) with an intercept.

    Parameters
    ----------
    noise_std
        Fix the noise standard deviation (default: learned by type-II).
    threshold
        Prune coefficients whose prior variance falls below this, on the scale the fit runs on.
    tol, max_iterations
        Convergence of the type-II loop (relative change of every variance).
    standardise
        Fit on features scaled to unit variance (coefficients are reported in data units
        either way).

    Returns
    -------
    tuple
        A summary dict (``coef`` and ``coef_standardised`` (p,), ``gamma`` (p,), ``intercept``,
        ``noise_std``, ``log_marginal``, ``iterations``, ``converged``, ``x_mean``, ``x_std``)
        and the engine's result.
    """
    x = torch.as_tensor(x, dtype=DTYPE)
    y = torch.as_tensor(y, dtype=DTYPE)
    n, p = x.shape
    if n < 2 or p < 1:
        raise ValueError(f"need at least 2 rows and 1 feature, got {n} x {p}")
    x_mean, y_mean = x.mean(0), y.mean()
    x_std = x.std(0).clamp_min(1e-12)
    scale = x_std if standardise else torch.ones(p, dtype=DTYPE)
    design = (x - x_mean) / scale
    result = fit_full_ard(
        _linear, {"w": torch.zeros(p, dtype=DTYPE)}, design, y - y_mean,
        noise_std=noise_std, learn_noise=noise_std is None, threshold=threshold, tol=tol,
        max_iterations=max_iterations,
    )  # fmt: skip
    coef = result.mean["w"] / scale
    summary = {
        "coef": coef,
        "coef_standardised": coef * x_std,
        "gamma": result.gamma["w"],
        "intercept": float(y_mean - x_mean @ coef),
        "noise_std": result.noise_std,
        "log_marginal": result.log_marginal[-1],
        "iterations": result.iterations,
        "converged": result.converged,
        "x_mean": x_mean,
        "x_std": x_std,
    }
    return summary, result


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


def read_sklearn(name: str) -> tuple[list[str], Tensor, Tensor]:
    """A regression data set that ships with scikit-learn (``diabetes``)."""
    from sklearn import datasets

    loaders = {"diabetes": datasets.load_diabetes}
    if name not in loaders:
        raise ValueError(f"unknown scikit-learn data set {name!r}; known: {sorted(loaders)}")
    bunch = loaders[name]()
    return list(bunch.feature_names), torch.tensor(bunch.data), torch.tensor(bunch.target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="CSV file with a header row")
    source.add_argument("--sklearn", help="a scikit-learn data set: diabetes")
    parser.add_argument("--target", help="name of the target column (with --csv)")
    parser.add_argument("--threshold", type=float, default=1e-4,
                        help="prune coefficients whose prior variance falls below this")
    parser.add_argument("--noise-std", type=float, default=None,
                        help="fix the noise standard deviation (default: learned)")
    parser.add_argument("--tol", type=float, default=1e-10,
                        help="stop when no variance moves by more than this, relative")
    parser.add_argument("--max-iterations", type=int, default=10_000)
    parser.add_argument("--standardise", action="store_true",
                        help="fit on features scaled to unit variance")
    args = parser.parse_args(argv)
    if args.csv is not None:
        if args.target is None:
            parser.error("--csv needs --target")
        names, x, y = read_csv(args.csv, args.target)
    else:
        names, x, y = read_sklearn(args.sklearn)
    summary, _ = fit_ard_regression(
        x, y, noise_std=args.noise_std, threshold=args.threshold, tol=args.tol,
        max_iterations=args.max_iterations, standardise=args.standardise,
    )  # fmt: skip
    out = {key: summary[key] for key in ("intercept", "noise_std", "log_marginal", "iterations",
                                         "converged")}  # fmt: skip
    for key in ("coef", "coef_standardised", "gamma"):
        out[key] = dict(zip(names, summary[key].tolist(), strict=True))
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
