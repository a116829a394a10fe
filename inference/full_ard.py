r"""ARD type-II maximum likelihood with the full-covariance Laplace posterior (MacKay / Tipping).

For sites ``w`` (D elements after flattening, :class:`~pyronas.inference.full_laplace.SiteLayout`)
with the prior ``w_i ~ N(0, gamma_i)`` and a Gaussian or categorical likelihood of ``N`` points,
one iteration of :func:`fit_full_ard` is

1. **MAP step**: a Gauss-Newton step on the negative log joint over the alive elements,
   ``w <- w - P^{-1} (N grad + w / gamma)`` with ``P = N G + diag(1 / gamma)`` and ``G`` the GGN
   matrix of the mean per-sample NLL (:func:`~pyronas.inference.full_laplace.ggn_matrix`). For a
   model linear in ``w`` with a Gaussian likelihood this is the exact posterior mean.
2. **Laplace step**: the full posterior ``N(w, Sigma)``, ``Sigma = P^{-1}`` at the new ``w``.
3. **Type-II step** (MacKay's fixed point, :func:`mackay_update`): per element the
   well-determinedness ``g_i = 1 - Sigma_ii / gamma_i`` and ``gamma_i = w_i^2 / g_i``; with a
   Gaussian likelihood whose noise is learned, ``sigma^2 = ||y - f(w)||^2 / (N - sum_i g_i)``.
4. **Pruning**: elements with ``gamma_i < threshold`` are set to exactly zero and leave the
   problem (their prior is a point mass at zero).

The loop stops when no alive ``gamma`` (and the noise variance) moves by more than ``tol``
relative, and reports whether it converged. This is the fixed point of scikit-learn's
``ARDRegression`` without its (tiny) Gamma hyperpriors; with a diagonal ``G`` it reduces to the
diagonal update of :mod:`pyronas.inference.ard_update` at its fixed point.

The sites should be few (hundreds): the posterior covariance is a dense ``(D, D)`` matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .curvature import ForwardFn, check_likelihood
from .full_laplace import SiteLayout, ggn_matrix

__all__ = ["FullArdResult", "fit_full_ard", "mackay_update"]


def mackay_update(mean: Tensor, var: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    """MacKay's type-II update of ARD prior variances from a Gaussian posterior.

    Parameters
    ----------
    mean, var, gamma
        Posterior means, posterior variances ``Sigma_ii`` (diagonal of the full covariance) and
        current prior variances, all ``(D,)``; ``gamma > 0``.

    Returns
    -------
    tuple
        ``(gamma_new, g)``: ``g = 1 - var / gamma`` clamped to ``[0, 1]`` (how well the data
        determine each element) and ``gamma_new = mean^2 / g`` (0 where ``g`` is 0).
    """
    g = (1.0 - var / gamma).clamp(0.0, 1.0)
    gamma_new = torch.where(g > 0, mean.square() / g.clamp_min(torch.finfo(g.dtype).tiny), 0.0)
    return gamma_new, g


@dataclass
class FullArdResult:
    """The outcome of :func:`fit_full_ard`.

    Attributes
    ----------
    mean : dict[str, Tensor]
        Posterior mean per site (exact zeros where pruned).
    gamma : dict[str, Tensor]
        Prior variances per site (0 where pruned).
    alive : dict[str, Tensor]
        Boolean masks of the elements still in the model.
    covariance : Tensor
        ``(A, A)`` posterior covariance of the ``A`` alive elements (flattened order).
    noise_std : float or None
        The Gaussian noise standard deviation (learned or fixed); ``None`` for categorical.
    iterations : int
        Iterations run.
    converged : bool
        Whether the relative change fell below ``tol`` before ``max_iterations``.
    log_marginal : list[float]
        Gaussian likelihood only: the exact log marginal likelihood of the linearised model at
        every iteration (non-decreasing for a linear model).
    """

    mean: dict[str, Tensor]
    gamma: dict[str, Tensor]
    alive: dict[str, Tensor]
    covariance: Tensor
    noise_std: float | None
    iterations: int
    converged: bool
    log_marginal: list[float] = field(default_factory=list)


def _mean_nll(output: Tensor, y: Tensor, likelihood: str, noise_var: float) -> Tensor:
    if likelihood == "gaussian":
        return 0.5 * (output - y).square().mean() / noise_var
    return F.cross_entropy(output, y)


def fit_full_ard(
    forward: ForwardFn,
    sites: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    likelihood: str = "gaussian",
    noise_std: float | None = None,
    learn_noise: bool = True,
    gamma: Mapping[str, Tensor] | float = 1.0,
    threshold: float = 1e-4,
    tol: float = 1e-8,
    max_iterations: int = 1000,
) -> FullArdResult:
    """ARD by type-II maximum likelihood with the full Laplace posterior (see the module text).

    Parameters
    ----------
    forward : ForwardFn
        ``forward(sites, x) -> output``: ``(N,)`` means (Gaussian) or ``(N, classes)`` logits.
    sites : Mapping[str, Tensor]
        Initial values of the variables with the ARD prior.
    x, y : Tensor
        All ``N`` data points (one full batch).
    likelihood : {"gaussian", "categorical"}
    noise_std : float, optional
        Gaussian noise standard deviation; the initial value when ``learn_noise`` (default: the
        standard deviation of ``y``).
    learn_noise : bool
        Learn the noise variance by type-II (Gaussian likelihood only).
    gamma : Mapping[str, Tensor] or float
        Initial prior variances (positive).
    threshold : float
        Prune elements whose prior variance falls below this (scikit-learn's
        ``threshold_lambda = 1e4`` on the precision is ``1e-4`` here).
    tol : float
        Relative change of every alive ``gamma`` and of the noise variance that ends the loop.
    max_iterations : int
        Upper bound on the iterations.

    Returns
    -------
    FullArdResult

    Raises
    ------
    ValueError
        Bad arguments, or every element pruned.
    """
    check_likelihood(likelihood)
    if max_iterations < 1 or not tol > 0 or not threshold >= 0:
        raise ValueError("max_iterations must be >= 1, tol > 0 and threshold >= 0")
    layout = SiteLayout.of(sites)
    ref = next(iter(sites.values()))
    dtype, device = ref.dtype, ref.device
    w = layout.flatten({k: v.detach() for k, v in sites.items()}).to(dtype).clone()
    gam = layout.flatten(layout.per_site(gamma, dtype=dtype, device=device)).clone()
    if not bool((gam > 0).all()):
        raise ValueError("initial prior variances must be positive")
    n = len(x)
    gaussian = likelihood == "gaussian"
    noise_var = None
    if gaussian:
        noise_var = float(noise_std) ** 2 if noise_std is not None else float(y.var())
    alive = torch.ones_like(w, dtype=torch.bool)
    log_marginal: list[float] = []
    converged = False
    cov = torch.zeros(0, 0, dtype=dtype, device=device)
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        idx = alive.nonzero().flatten()
        nv = noise_var if gaussian else 1.0

        def nll_of(flat: Tensor, nv: float = nv) -> Tensor:
            return _mean_nll(forward(layout.unflatten(flat), x), y, likelihood, nv)

        # 1. Gauss-Newton MAP step on the alive elements
        flat = w.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(nll_of(flat), flat)
        std = (nv**0.5) if gaussian else 1.0
        ggn = ggn_matrix(forward, layout.unflatten(w), [(x, y)], likelihood, std)
        prec = n * ggn[idx][:, idx] + torch.diag(1.0 / gam[idx])
        step = torch.linalg.solve(prec, n * grad[idx] + w[idx] / gam[idx])
        w = w.clone()
        w[idx] = w[idx] - step
        # 2. full Laplace posterior at the new mean
        ggn = ggn_matrix(forward, layout.unflatten(w), [(x, y)], likelihood, std)
        prec = n * ggn[idx][:, idx] + torch.diag(1.0 / gam[idx])
        cov = torch.cholesky_inverse(torch.linalg.cholesky(prec))
        if gaussian:
            rss = float(((forward(layout.unflatten(w), x) - y) ** 2).sum())
            # log N(y | f(w), sigma^2) + log N(w | 0, Gamma) - 1/2 log|P / 2pi|: exact when linear
            log_marginal.append(
                -0.5 * rss / nv - 0.5 * n * torch.log(torch.tensor(2 * torch.pi * nv)).item()
                - 0.5 * float((w[idx].square() / gam[idx]).sum() + torch.log(gam[idx]).sum())
                - 0.5 * float(torch.logdet(prec))
            )
        # 3. MacKay's update of gamma (and the noise)
        new_gam, g = mackay_update(w[idx], torch.diagonal(cov), gam[idx])
        moved = float(((new_gam - gam[idx]).abs() / gam[idx]).max())
        gam = gam.clone()
        gam[idx] = new_gam
        if gaussian and learn_noise:
            new_var = rss / max(n - float(g.sum()), 1e-12)
            moved = max(moved, abs(new_var - nv) / nv)
            noise_var = new_var
        # 4. prune
        dead = alive & (gam < threshold)
        if bool(dead.any()):
            alive = alive & ~dead
            w = torch.where(alive, w, torch.zeros_like(w))
            gam = torch.where(alive, gam, torch.zeros_like(gam))
            if not bool(alive.any()):
                raise ValueError("ARD pruned every element: the data support none of them")
            continue
        if moved <= tol:
            converged = True
            break
    return FullArdResult(
        mean=layout.unflatten(w),
        gamma=layout.unflatten(gam),
        alive=layout.unflatten(alive),
        covariance=cov,
        noise_std=None if noise_var is None else noise_var**0.5,
        iterations=iterations,
        converged=converged,
        log_marginal=log_marginal,
    )
