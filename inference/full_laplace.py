"""Full-covariance (or block-diagonal) Laplace approximation over named sites.

All site elements are flattened into one vector of ``D`` numbers (sites in mapping order, each
in row-major order; :class:`SiteLayout`). Around a MAP point m the posterior is approximated by
the Gaussian N(m, P^-1) with the (D, D) posterior precision

    P = num_data * G + diag(prior_precision),

where G is the generalised Gauss-Newton matrix of the MEAN per-sample negative log likelihood,

    G = 1/B sum_n J_n^T Lambda_n J_n,

averaged over batches (each batch counts equally), ``J_n`` the Jacobian of sample n's output with
respect to the flattened sites and ``Lambda_n`` the Hessian of its NLL with respect to the output
(``diag(p) - p p^T`` for a softmax, ``I / sigma^2`` for a Gaussian). This is the scaling of
:func:`pyronas.inference.diagonal_laplace.fit_diagonal_laplace` (mean-loss curvature times
the number of training points), whose curvature is the diagonal of G:
:meth:`FullLaplace.diagonal` gives that diagonal fit back. The prior precision is minus the
diagonal second derivative of the log prior at m (1 / gamma for a N(0, gamma) prior), given
per site as for the diagonal fit.

The Laplace log evidence uses the log-determinant of the Cholesky factor ``P = L L^T``:

    log p(D | h) ~= log p(D | m) + log p(m | h) + 1/2 (D log 2 pi - log det P),

exact for a linear-Gaussian model (any design, correlated or not).

A block-diagonal G is requested with a grouping of the flat elements (one integer id per
element): entries between elements of different groups are set to zero. One group gives the
full matrix; one group per element gives the diagonal fit.

G comes from :func:`pyronas.inference.ggn_lean.lean_ggn`: one forward and one backward pass per
column of a factor of ``Lambda_n`` (classes, or Gaussian output elements) per batch. Memory:
the (D, D) matrices (G, P, its Cholesky factor, the covariance when asked for), plus one batch
graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from .curvature import ForwardFn, check_likelihood
from .diagonal_laplace import DiagonalLaplace, PriorPrecision, fit_diagonal_laplace
from .evidence import Batch, joint_terms
from .ggn_lean import lean_ggn

__all__ = [
    "FullLaplace",
    "SiteLayout",
    "block_diagonal",
    "fit_full_laplace",
    "full_laplace_log_evidence",
    "full_log_evidence",
    "ggn_matrix",
]

Grouping = Tensor | Mapping[str, Tensor]
"""Group id per flat element: a (D,) integer tensor, or per site a tensor broadcastable to it."""


@dataclass(frozen=True)
class SiteLayout:
    """How named sites map to one flat vector of ``size`` elements.

    Attributes
    ----------
    names : tuple[str, ...]
        Site names, in flattening order.
    shapes : tuple[torch.Size, ...]
        Site shapes, same order.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, sites: Mapping[str, Tensor]) -> SiteLayout:
        """The layout of ``sites`` (mapping order)."""
        return cls(tuple(sites), tuple(torch.Size(v.shape) for v in sites.values()))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of elements of every site."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def size(self) -> int:
        """D, the total number of elements."""
        return sum(self.sizes)

    def flatten(self, values: Mapping[str, Tensor]) -> Tensor:
        """{site: (*lead, *site_shape)} -> (*lead, D); the leading dims must agree."""
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            v = values[name]
            lead = v.shape[: v.dim() - len(shape)]
            if tuple(v.shape[v.dim() - len(shape) :]) != tuple(shape):
                raise ValueError(
                    f"site {name!r} has shape {tuple(v.shape)}, expected (..., {tuple(shape)})"
                )
            parts.append(v.reshape((*lead, -1)))
        return torch.cat(parts, dim=-1)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """(*lead, D) -> {site: (*lead, *site_shape)}."""
        if flat.shape[-1] != self.size:
            raise ValueError(f"last dim {flat.shape[-1]} is not the layout size {self.size}")
        lead = flat.shape[:-1]
        chunks = torch.split(flat, list(self.sizes), dim=-1)
        return {
            name: chunk.reshape((*lead, *shape))
            for name, shape, chunk in zip(self.names, self.shapes, chunks, strict=True)
        }

    def per_site(
        self,
        value: Mapping[str, Tensor | float] | Tensor | float,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> dict[str, Tensor]:
        """Broadcast one value per site (a mapping) or one value for all to the site shapes."""
        out = {}
        for name, shape in zip(self.names, self.shapes, strict=True):
            if isinstance(value, Mapping):
                if name not in value:
                    raise KeyError(f"no entry for site {name!r}")
                v = value[name]
            else:
                v = value
            t = torch.as_tensor(v, dtype=dtype, device=device)
            out[name] = torch.broadcast_to(t, shape)
        return out

    def group_ids(self, groups: Grouping, device: torch.device | None = None) -> Tensor:
        """(D,) integer group id of every flat element."""
        if isinstance(groups, Mapping):
            ids = self.flatten(self.per_site(groups, dtype=torch.long, device=device))
        else:
            ids = torch.as_tensor(groups, device=device).reshape(-1)
        if ids.shape != (self.size,):
            raise ValueError(f"groups give {ids.numel()} ids, expected {self.size}")
        if ids.is_floating_point():
            raise ValueError("group ids must be integers")
        return ids


def block_diagonal(matrix: Tensor, group_ids: Tensor) -> Tensor:
    """Zero the entries of a (D, D) matrix between elements of different groups.

    Parameters
    ----------
    matrix : Tensor
        (D, D).
    group_ids : Tensor
        (D,) integer group of every row / column.

    Returns
    -------
    Tensor
        (D, D), ``matrix[i, j]`` where ``group_ids[i] == group_ids[j]``, else 0.
    """
    ids = group_ids.to(matrix.device)
    same = ids.unsqueeze(0) == ids.unsqueeze(1)
    return torch.where(same, matrix, torch.zeros_like(matrix))


def ggn_matrix(
    forward: ForwardFn,
    sites: Mapping[str, Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    likelihood: str = "categorical",
    noise_std: float = 1.0,
    module: nn.Module | None = None,
    *,
    groups: Grouping | None = None,
    max_batches: int | None = None,
    batched_sites: bool | None = None,
) -> Tensor:
    """GGN matrix of the mean per-sample NLL over the flattened sites, averaged over batches.

    Parameters
    ----------
    forward : ForwardFn
        ``forward(sites, x) -> output``; network weights closed over and held fixed.
    sites : Mapping[str, Tensor]
        The variables; flattened as in :class:`SiteLayout` (D elements).
    batches : Iterable[tuple[Tensor, Tensor]]
        (x, y) batches; each counts equally. ``y`` is not used (the GGN of these likelihoods
        does not depend on the labels).
    likelihood : {"categorical", "gaussian"}
    noise_std : float
        Gaussian standard deviation.
    module : nn.Module, optional
        The network, put in eval mode (and its parameters frozen) during the computation.
    groups : Tensor or Mapping[str, Tensor], optional
        Group id per flat element ((D,) tensor, or per site broadcastable to the site): keep
        only the blocks of equal ids (:func:`block_diagonal`). ``None``: the full matrix.
    max_batches : int, optional
        Use only the first ``max_batches`` batches.
    batched_sites : bool, optional
        See :func:`pyronas.inference.ggn_lean.per_sample_output`.

    Returns
    -------
    Tensor
        (D, D) symmetric positive semi-definite matrix; its diagonal is the ``"ggn"`` curvature.
    """
    check_likelihood(likelihood)
    if not sites:
        raise ValueError("no sites given to ggn_matrix")
    layout = SiteLayout.of(sites)
    device = next(iter(sites.values())).device
    total: Tensor | None = None
    count = 0
    for x, _y in batches:
        if max_batches is not None and count >= max_batches:
            break
        res = lean_ggn(
            forward, sites, x.to(device), likelihood, noise_std, module, full=True,
            batched_sites=batched_sites,
        )
        assert res.matrix is not None
        total = res.matrix if total is None else total + res.matrix
        count += 1
    if total is None:
        raise ValueError("ggn_matrix got no batches")
    matrix = total / count
    matrix = 0.5 * (matrix + matrix.T)
    if groups is not None:
        matrix = block_diagonal(matrix, layout.group_ids(groups, device))
    return matrix


def full_log_evidence(log_lik: Tensor, log_prior: Tensor, precision_tril: Tensor) -> Tensor:
    """Laplace log marginal likelihood with a full posterior precision.

    Parameters
    ----------
    log_lik : Tensor
        Scalar log p(D | m) at the MAP sites (full data).
    log_prior : Tensor
        Scalar log p(m | h).
    precision_tril : Tensor
        (D, D) lower Cholesky factor L of the posterior precision P = L L^T.

    Returns
    -------
    Tensor
        Scalar ``log_lik + log_prior + 1/2 (D log 2 pi - log det P)``, with
        ``log det P = 2 sum_i log L_ii``.
    """
    size = precision_tril.shape[-1]
    logdet = 2.0 * torch.log(torch.diagonal(precision_tril)).sum()
    return log_lik + log_prior + 0.5 * (size * math.log(2 * math.pi) - logdet)


@dataclass
class FullLaplace:
    """A joint Gaussian posterior N(m, P^-1) over named sites (see the module docstring).

    Attributes
    ----------
    mean : dict[str, Tensor]
        MAP value m of every site (site-shaped).
    ggn : Tensor
        (D, D) GGN of the mean per-sample NLL (possibly block-diagonal).
    prior_precision : dict[str, Tensor]
        Diagonal prior precision, site-shaped.
    num_data : int
        Number of training points N the likelihood is scaled to.
    precision : Tensor
        (D, D) posterior precision ``N * ggn + diag(prior_precision)`` (diagonal clamped below
        at ``min_precision``).
    precision_tril : Tensor
        (D, D) lower Cholesky factor L, ``precision = L L^T``.
    min_precision : float
        The clamp on the diagonal of the precision (as in the diagonal fit).
    """

    mean: dict[str, Tensor]
    ggn: Tensor
    prior_precision: dict[str, Tensor]
    num_data: int
    precision: Tensor
    precision_tril: Tensor
    min_precision: float = 1e-10

    @property
    def layout(self) -> SiteLayout:
        """Flattening of the sites (the order of ``mean``)."""
        return SiteLayout.of(self.mean)

    @property
    def flat_mean(self) -> Tensor:
        """(D,) the flattened MAP value."""
        return self.layout.flatten(self.mean)

    @cached_property
    def covariance(self) -> Tensor:
        """(D, D) posterior covariance P^-1 (from the Cholesky factor)."""
        return torch.cholesky_inverse(self.precision_tril)

    @property
    def var(self) -> dict[str, Tensor]:
        """Marginal posterior variance per site (diagonal of the covariance), site-shaped."""
        return self.layout.unflatten(torch.diagonal(self.covariance).clone())

    @property
    def std(self) -> dict[str, Tensor]:
        """Marginal posterior standard deviation per site, site-shaped."""
        return {k: v.sqrt() for k, v in self.var.items()}

    @property
    def sd(self) -> dict[str, Tensor]:
        """Same as :attr:`std`."""
        return self.std

    @property
    def correlation(self) -> Tensor:
        """(D, D) posterior correlation matrix ``cov_ij / (sd_i sd_j)``."""
        sd = torch.diagonal(self.covariance).sqrt()
        return self.covariance / (sd.unsqueeze(0) * sd.unsqueeze(1))

    @property
    def log_det_precision(self) -> Tensor:
        """Scalar log det P = 2 sum log diag L."""
        return 2.0 * torch.log(torch.diagonal(self.precision_tril)).sum()

    def sample(
        self, num_draws: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Draw ``num_draws`` joint samples: {site: (num_draws, *site_shape)}.

        ``m + L^-T eps`` with eps ~ N(0, I) (drawn with ``generator``, on the CPU like
        :meth:`DiagonalLaplace.sample`): its covariance is ``L^-T L^-1 = P^-1``.
        """
        mu = self.flat_mean
        eps = torch.randn((num_draws, mu.numel()), generator=generator, dtype=mu.dtype)
        eps = eps.to(mu.device)
        # solve L^T z = eps for every draw: z^T = eps^T L^-1, i.e. right-solve with L^T
        z = torch.linalg.solve_triangular(self.precision_tril.T, eps.T, upper=True).T
        return self.layout.unflatten(mu + z)

    def z_score(self) -> dict[str, Tensor]:
        """|mean| / marginal sd per element: how many posterior sds the MAP value is from 0."""
        return {k: self.mean[k].abs() / s for k, s in self.std.items()}

    def log_prob(self, values: Mapping[str, Tensor]) -> Tensor:
        """Log density of ``values`` (site-shaped, or with common leading sample dims)."""
        d = self.layout.flatten(values) - self.flat_mean
        quad = ((d @ self.precision_tril) ** 2).sum(-1)  # d^T L L^T d
        size = self.layout.size
        return -0.5 * (quad + size * math.log(2 * math.pi) - self.log_det_precision)

    def log_evidence(self, log_lik: Tensor, log_prior: Tensor) -> Tensor:
        """Laplace log evidence (:func:`full_log_evidence`) with this posterior's precision."""
        return full_log_evidence(log_lik, log_prior, self.precision_tril)

    def diagonal(self) -> DiagonalLaplace:
        """The diagonal Laplace fit with the same mean, prior and the diagonal of ``ggn``.

        Identical to ``fit_diagonal_laplace(mean, diag(ggn), num_data, prior_precision)``: the
        variance is ``1 / P_ii``, not the marginal variance ``(P^-1)_ii`` of this posterior.
        """
        curvature = self.layout.unflatten(torch.diagonal(self.ggn).clone())
        return fit_diagonal_laplace(
            self.mean, curvature, self.num_data, self.prior_precision, self.min_precision
        )

    def marginal_fit(self) -> DiagonalLaplace:
        """A diagonal posterior with this posterior's MARGINAL variances ``(P^-1)_ii``.

        Its curvature is the one that gives those variances in the diagonal formula,
        ``((P^-1)_ii^-1 - prior_precision_i) / num_data`` (non-negative, since
        ``P^-1 <= diag(prior_precision)^-1``). A closed-form hyperparameter update written for
        the diagonal fit (it reads ``mean``, ``var`` or ``curvature``) then uses the full
        covariance's marginals: for ARD this is MacKay's update with ``Sigma_ii`` of the full
        posterior. Correlations between sites are not kept (use :meth:`sample` for joint draws).
        """
        var = self.var
        curvature = {
            k: ((1.0 / v - self.prior_precision[k]) / self.num_data).clamp_min(0.0)
            for k, v in var.items()
        }
        prior_var = {k: 1.0 / p for k, p in self.prior_precision.items()}
        return DiagonalLaplace(mean=dict(self.mean), var=var, curvature=curvature,
                               num_data=self.num_data, prior_var=prior_var)


def leading_index_groups(sites: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Group id per site element = its index along the site's first dimension.

    With :func:`ggn_matrix` (``groups=``) this keeps the blocks of elements that share a leading
    index across all sites (for sites shaped ``(groups, ...)``: one block per group) and zeroes
    the entries between different leading indices. 0-d sites are all in group 0.
    """
    out = {}
    for k, v in sites.items():
        if v.dim() == 0:
            out[k] = torch.zeros((), dtype=torch.long)
        else:
            shape = (v.shape[0],) + (1,) * (v.dim() - 1)
            out[k] = torch.arange(v.shape[0]).reshape(shape).expand(v.shape).clone()
    return out


def fit_full_laplace(
    mean: Mapping[str, Tensor],
    ggn: Tensor,
    num_data: int,
    prior_precision: PriorPrecision,
    min_precision: float = 1e-10,
) -> FullLaplace:
    """Full-covariance Laplace posterior around ``mean``.

    Parameters
    ----------
    mean : Mapping[str, Tensor]
        MAP value per site; fixes the flattening (:class:`SiteLayout`, D elements).
    ggn : Tensor
        (D, D) GGN of the mean per-sample NLL (:func:`ggn_matrix`), possibly block-diagonal.
    num_data : int
        Number of training points; the data precision is ``num_data * ggn``.
    prior_precision : Mapping[str, Tensor] | Tensor | float
        Diagonal prior precision per site (broadcastable to the site) or one value for all.
    min_precision : float
        Lower clamp on the diagonal of the posterior precision (as in the diagonal fit).

    Returns
    -------
    FullLaplace
        Gradients flow to ``prior_precision`` (through the precision, its Cholesky factor and
        the log evidence).

    Raises
    ------
    ValueError
        When the posterior precision is not positive definite (e.g. a flat prior on a direction
        the data does not inform).
    """
    if num_data <= 0:
        raise ValueError(f"num_data must be positive, got {num_data}")
    if not mean:
        raise ValueError("no sites given to fit_full_laplace")
    layout = SiteLayout.of(mean)
    ref = next(iter(mean.values()))
    size = layout.size
    if tuple(ggn.shape) != (size, size):
        raise ValueError(f"ggn has shape {tuple(ggn.shape)}, expected ({size}, {size})")
    try:
        prior = layout.per_site(prior_precision, dtype=ref.dtype, device=ref.device)
    except KeyError as err:
        raise KeyError(f"prior_precision: {err.args[0]}") from None
    pp = layout.flatten(prior)
    ggn = 0.5 * (ggn + ggn.T)
    precision = num_data * ggn.to(dtype=ref.dtype, device=ref.device) + torch.diag_embed(pp)
    d = torch.diagonal(precision)
    precision = precision + torch.diag_embed(d.clamp_min(min_precision) - d)
    tril, info = torch.linalg.cholesky_ex(precision)
    if int(info) != 0:
        raise ValueError(
            f"posterior precision is not positive definite (Cholesky failed at element "
            f"{int(info) - 1}); give every site a positive prior precision"
        )
    return FullLaplace(
        mean=dict(mean), ggn=ggn, prior_precision=prior, num_data=num_data,
        precision=precision, precision_tril=tril, min_precision=min_precision,
    )


def full_laplace_log_evidence(
    model: Any,
    net: Any,
    data: Batch | Iterable[Batch],
    sites_map: Mapping[str, Tensor],
    hypers: Mapping[str, Any],
    ggn: Tensor,
    num_data: int,
    min_precision: float = 1e-10,
) -> Tensor:
    """Full-covariance Laplace log evidence of a Pyro model at its MAP sites.

    The counterpart of :func:`pyronas.inference.evidence.laplace_log_evidence` with the (D, D)
    GGN instead of its diagonal: log likelihood, log prior and diagonal prior precision from
    :func:`pyronas.inference.evidence.joint_terms` (same model-file convention), posterior
    precision ``num_data * ggn + diag(prior_precision)``.

    Returns
    -------
    Tensor
        Scalar log evidence, differentiable w.r.t. the hyperparameters that require grad.
    """
    terms = joint_terms(model, net, data, sites_map, hypers, num_data, create_graph=True)
    post = fit_full_laplace(sites_map, ggn, num_data, terms.prior_precision, min_precision)
    return post.log_evidence(terms.log_lik, terms.log_prior)
