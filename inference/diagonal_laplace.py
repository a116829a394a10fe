"""Diagonal Laplace approximation over named sites.

Around a MAP point s*, the posterior of every site element is approximated by an independent
Gaussian N(s*, 1 / P) with posterior precision

    P = num_data * H + prior_precision,

where H is the diagonal curvature of the MEAN per-sample negative log likelihood (as returned by
:func:`pyronas.inference.curvature.diagonal_curvature`), so ``num_data * H`` is the data
precision of the full-data likelihood, and ``prior_precision`` is minus the second derivative of
the log prior at s* (1 / gamma for a N(0, gamma) prior).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

PriorPrecision = Mapping[str, Tensor] | Tensor | float


@dataclass
class DiagonalLaplace:
    """A factorised Gaussian posterior over named sites.

    Attributes
    ----------
    mean : dict[str, Tensor]
        MAP value of every site (site-shaped).
    var : dict[str, Tensor]
        Posterior variance 1 / (num_data * curvature + prior_precision), site-shaped.
    curvature : dict[str, Tensor]
        Diagonal curvature of the mean per-sample NLL (site-shaped).
    num_data : int
        Number of training points N the likelihood is scaled to.
    prior_var : dict[str, Tensor], optional
        1 / prior_precision, broadcastable to the site (inf where the prior is flat).
    """

    mean: dict[str, Tensor]
    var: dict[str, Tensor]
    curvature: dict[str, Tensor]
    num_data: int
    prior_var: dict[str, Tensor] | None = None

    @property
    def precision(self) -> dict[str, Tensor]:
        """Posterior precision 1 / var per site."""
        return {k: 1.0 / v for k, v in self.var.items()}

    @property
    def std(self) -> dict[str, Tensor]:
        """Posterior standard deviation per site."""
        return {k: v.sqrt() for k, v in self.var.items()}

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw ``n`` joint samples: {site: (n, *site_shape)}."""
        out = {}
        for k, mu in self.mean.items():
            eps = torch.randn((n, *mu.shape), generator=generator, dtype=mu.dtype)
            out[k] = mu + self.var[k].sqrt() * eps.to(mu.device)
        return out

    def z_score(self) -> dict[str, Tensor]:
        """|mean| / std per element: how many posterior sds the MAP value is away from 0."""
        return {k: self.mean[k].abs() / self.var[k].sqrt() for k in self.mean}

    def log_prob(self, values: Mapping[str, Tensor]) -> Tensor:
        """Log density of ``values`` (site-shaped, or with leading sample dims) under the
        approximation, summed over the site elements of every site; leading dims are kept."""
        total: Tensor | float = 0.0
        for k, mu in self.mean.items():
            v = values[k]
            var = self.var[k]
            lp = -0.5 * ((v - mu) ** 2 / var + torch.log(2 * math.pi * var))
            total = total + lp.reshape(*lp.shape[: lp.dim() - mu.dim()], -1).sum(-1)
        return torch.as_tensor(total)


def _per_site(value: PriorPrecision, name: str) -> Tensor | float:
    if isinstance(value, Mapping):
        if name not in value:
            raise KeyError(f"prior_precision has no entry for site {name!r}")
        return value[name]
    return value


def fit_diagonal_laplace(
    mean: Mapping[str, Tensor],
    curvature: Mapping[str, Tensor],
    num_data: int,
    prior_precision: PriorPrecision,
    min_precision: float = 1e-10,
) -> DiagonalLaplace:
    """Diagonal Laplace posterior around ``mean``.

    Parameters
    ----------
    mean : Mapping[str, Tensor]
        MAP value per site.
    curvature : Mapping[str, Tensor]
        Diagonal curvature of the mean per-sample NLL per site (same shapes).
    num_data : int
        Number of training points; the data precision is ``num_data * curvature``.
    prior_precision : Mapping[str, Tensor] | Tensor | float
        Prior precision per site (broadcastable to the site) or one value for all.
    min_precision : float
        Lower clamp on the posterior precision, so a flat prior on a site the data does not
        inform yields a large but finite variance.

    Returns
    -------
    DiagonalLaplace
        Posterior precision = num_data * curvature + prior_precision. Gradients flow to
        ``prior_precision`` (useful for evidence maximisation).
    """
    if num_data <= 0:
        raise ValueError(f"num_data must be positive, got {num_data}")
    missing = set(mean) - set(curvature)
    if missing:
        raise KeyError(f"curvature missing for sites {sorted(missing)}")
    var, prior_var = {}, {}
    for k, mu in mean.items():
        if curvature[k].shape != mu.shape:
            raise ValueError(
                f"curvature of site {k!r} has shape {tuple(curvature[k].shape)}, "
                f"expected {tuple(mu.shape)}"
            )
        pp = torch.as_tensor(_per_site(prior_precision, k), dtype=mu.dtype, device=mu.device)
        precision = (num_data * curvature[k] + pp).clamp_min(min_precision)
        var[k] = 1.0 / precision
        prior_var[k] = 1.0 / pp
    return DiagonalLaplace(
        mean=dict(mean), var=var, curvature=dict(curvature), num_data=num_data,
        prior_var=prior_var,
    )


__all__ = ["DiagonalLaplace", "fit_diagonal_laplace"]
