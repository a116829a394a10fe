"""Closed-form group ARD (automatic relevance determination) update.

One step of the sparse-Bayesian-learning fixed point used by BayesNAS, for a Gaussian prior
``s_c ~ N(0, gamma_c)`` on a vector of parameters ``s`` whose data term has diagonal precision
``Ht_c`` (the diagonal curvature of the negative log likelihood, already scaled to the wanted
data precision). Given the current mean ``s`` (the MAP value), per element ``c``::

    Sigma_c = 1 / (1/gamma_c + Ht_c)         = gamma_c / (1 + gamma_c Ht_c)
    alpha_c = 1/gamma_c - Sigma_c / gamma_c^2 = Ht_c / (1 + gamma_c Ht_c)

and per group ``g`` of elements::

    omega_g = sqrt( sum_{c in g} alpha_c )
    gamma_g = ||s_g||_2 / omega_g

``omega_g`` is the weight of the reweighted group lasso ``omega_g ||s_g||_2`` minimised between
updates and ``gamma_g`` the new prior variance of the group. The right-hand forms above are the
ones computed: they are finite for ``gamma_c = 0`` and need no ``1/gamma`` round trip.

Degenerate cases:

* An element with ``gamma_c = 0`` is pruned: it has ``Sigma_c = 0`` and ``alpha_c = 0`` and does
  not enter its group's norm; a group with no live element gets ``gamma_g = omega_g = 0``.
* A group with ``omega_g = 0`` (no data precision on any live element) gets ``gamma_g = 0``: the
  data carries no information about it, so it is treated as irrelevant.
* A negative ``Ht_c`` (possible with an indefinite Hessian) is clipped to 0, with a logged
  warning: the update is only defined for a non-negative data precision.

Fixed point of the local model (:func:`ard_fixed_point`). One step above takes the MAP value
``s`` as given. BayesNAS alternates that step with a MAP phase that re-solves the reweighted
group lasso; when the MAP phase is a few SGD steps the lasso is far from solved, so ``s`` stays
near its start and one step prunes nothing. :func:`ard_fixed_point` solves the lasso on the
Laplace quadratic model of the data term instead,

    s = argmin_s  sum_c Ht_c (s_c - m_c)^2 / 2  +  sum_g omega_g ||s_g||_2,

(closed form: a group soft-threshold of the mode ``m`` of the data term, exact when ``Ht`` is
equal within a group, e.g. for one-element groups), then takes the step above at that ``s``, and
repeats until ``gamma`` no longer moves: Wipf and Nagarajan's iterative reweighted l1 run to
convergence on the quadratic model. For one-element groups its limit is Tipping's closed form

    gamma = max(0, m^2 - 1/Ht),

so an element survives exactly when ``m^2 Ht > 1``: when setting it to zero would cost more than
half a unit of the scaled data term.

The module knows nothing about architectures: groups are given by an index tensor.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["ArdUpdate", "ard_fixed_point", "group_ard_update", "group_lasso_shrink"]


class ArdUpdate(NamedTuple):
    """Result of :func:`group_ard_update`.

    Attributes
    ----------
    gamma
        New prior variance, ``(group,)`` (or the element shape when no groups were given).
    omega
        Reweighting ``sqrt(sum alpha)`` of each group, same shape as ``gamma``.
    alpha
        ``Ht / (1 + gamma Ht)`` per element, shape of the input ``mean``.
    sigma
        Laplace posterior variance ``1 / (1/gamma + Ht)`` per element, shape of ``mean``.
    """

    gamma: Tensor
    omega: Tensor
    alpha: Tensor
    sigma: Tensor


def group_ard_update(
    mean: Tensor,
    data_precision: Tensor,
    gamma: Tensor,
    group_index: Tensor | None = None,
    num_groups: int | None = None,
) -> ArdUpdate:
    """One closed-form type-II update of group ARD variances.

    Parameters
    ----------
    mean
        Current (MAP) values ``s`` of the elements, any shape ``(*elements)``.
    data_precision
        Diagonal data precision ``Ht`` of each element, same shape as ``mean``.
    gamma
        Current prior variance of each element (its group's variance broadcast to the
        elements), same shape as ``mean``, non-negative.
    group_index
        Optional ``LongTensor`` of the shape of ``mean`` giving the group ``0..G-1`` of each
        element. ``None``: every element is its own group.
    num_groups
        Number of groups ``G``; default ``group_index.max() + 1``. Groups without elements get
        ``gamma = omega = 0``.

    Returns
    -------
    ArdUpdate
        ``gamma`` and ``omega`` with shape ``(G,)`` (or ``mean.shape`` without groups), ``alpha``
        and ``sigma`` with shape ``mean.shape``; all in the floating dtype of ``mean``.

    Raises
    ------
    ValueError
        If shapes disagree, ``gamma`` is negative, or ``group_index`` is not an integer tensor of
        valid indices.
    """
    if data_precision.shape != mean.shape or gamma.shape != mean.shape:
        raise ValueError(
            "group_ard_update: mean, data_precision and gamma must have one shape; got "
            f"{tuple(mean.shape)}, {tuple(data_precision.shape)}, {tuple(gamma.shape)}"
        )
    if (gamma < 0).any():
        raise ValueError("group_ard_update: gamma must be non-negative")
    dtype = mean.dtype if mean.is_floating_point() else torch.get_default_dtype()
    s = mean.detach().to(dtype)
    ht = data_precision.detach().to(dtype=dtype, device=s.device)
    g = gamma.detach().to(dtype=dtype, device=s.device)
    if (ht < 0).any():
        logger.warning(
            "group_ard_update: %d negative data precisions clipped to 0", int((ht < 0).sum())
        )
        ht = ht.clamp_min(0.0)

    live = g > 0
    sigma = torch.where(live, g / (1.0 + g * ht), torch.zeros_like(g))
    alpha = torch.where(live, ht / (1.0 + g * ht), torch.zeros_like(g))
    sq = torch.where(live, s * s, torch.zeros_like(s))

    if group_index is None:
        sum_alpha, sum_sq, live_groups = alpha, sq, live
    else:
        if group_index.shape != mean.shape:
            raise ValueError(
                f"group_ard_update: group_index shape {tuple(group_index.shape)} differs from "
                f"mean shape {tuple(mean.shape)}"
            )
        if group_index.is_floating_point() or group_index.dtype == torch.bool:
            raise ValueError("group_ard_update: group_index must be an integer tensor")
        idx = group_index.reshape(-1).to(device=s.device, dtype=torch.long)
        if idx.numel() and idx.min() < 0:
            raise ValueError("group_ard_update: group_index must be non-negative")
        needed = int(idx.max()) + 1 if idx.numel() else 0
        size = needed if num_groups is None else num_groups
        if size < needed:
            raise ValueError(
                f"group_ard_update: num_groups={num_groups} but group_index reaches {needed - 1}"
            )
        zeros = torch.zeros(size, dtype=dtype, device=s.device)
        sum_alpha = zeros.index_add(0, idx, alpha.reshape(-1))
        sum_sq = zeros.index_add(0, idx, sq.reshape(-1))
        live_groups = zeros.index_add(0, idx, live.reshape(-1).to(dtype)) > 0

    omega = sum_alpha.sqrt()
    ok = live_groups & (omega > 0)
    new_gamma = torch.where(ok, sum_sq.sqrt() / torch.where(ok, omega, 1.0), 0.0)
    omega = torch.where(live_groups, omega, 0.0)
    return ArdUpdate(gamma=new_gamma, omega=omega, alpha=alpha, sigma=sigma)


def _group_sums(values: Tensor, idx: Tensor | None, size: int) -> Tensor:
    if idx is None:
        return values
    zeros = torch.zeros(size, dtype=values.dtype, device=values.device)
    return zeros.index_add(0, idx, values.reshape(-1))


def group_lasso_shrink(
    mode: Tensor,
    data_precision: Tensor,
    omega: Tensor,
    group_index: Tensor | None = None,
    num_groups: int | None = None,
) -> Tensor:
    """Minimiser of ``sum_c Ht_c (s_c - m_c)^2 / 2 + sum_g omega_g ||s_g||_2``.

    Parameters
    ----------
    mode
        Mode ``m`` of the quadratic data term, any shape ``(*elements)``.
    data_precision
        Its diagonal precision ``Ht``, same shape, non-negative.
    omega
        Group weights, ``(G,)`` (or the element shape without groups), non-negative.
    group_index, num_groups
        As in :func:`group_ard_update`.

    Returns
    -------
    Tensor
        ``s`` of the shape of ``mode``: ``m_g * max(0, 1 - omega_g / (Ht_g ||m_g||))`` with
        ``Ht_g`` the mean precision of the group (exact for one-element groups and for equal
        precisions within a group). Elements of a group with no precision are 0.
    """
    m = mode.detach()
    ht = data_precision.detach().to(m).clamp_min(0.0)
    idx = None if group_index is None else group_index.reshape(-1).to(m.device, torch.long)
    size = m.numel() if idx is None else (num_groups or int(idx.max()) + 1)
    norm = _group_sums(m * m, idx, size).sqrt()
    count = _group_sums(torch.ones_like(m), idx, size)
    ht_group = _group_sums(ht, idx, size) / count.clamp_min(1.0)
    w = omega.detach().to(m).reshape(norm.shape)
    denom = ht_group * norm
    factor = torch.where(denom > 0, (1.0 - w / torch.where(denom > 0, denom, 1.0)), 0.0)
    factor = factor.clamp_min(0.0)
    per_element = factor if idx is None else factor[idx].reshape(m.shape)
    return m * per_element


def ard_fixed_point(
    mode: Tensor,
    data_precision: Tensor,
    gamma: Tensor,
    group_index: Tensor | None = None,
    num_groups: int | None = None,
    max_iter: int = 2000,
    tol: float = 1e-9,
) -> tuple[ArdUpdate, Tensor]:
    """Iterate :func:`group_ard_update` and lasso shrinkage to their joint fixed point.

    The first step is taken at ``mode`` itself (``max_iter=1`` is one :func:`group_ard_update`).

    Parameters
    ----------
    mode
        Mode ``m`` of the quadratic data term (the MAP value), ``(*elements)``.
    data_precision
        Diagonal data precision ``Ht``, same shape.
    gamma
        Starting prior variance per element (its group's broadcast), same shape.
    group_index, num_groups
        As in :func:`group_ard_update`.
    max_iter, tol
        Stop when the largest change of a group variance is below ``tol * (1 + gamma)``.

    Returns
    -------
    tuple
        The :class:`ArdUpdate` at the fixed point and the shrunk values ``s`` (the lasso
        solution, exact zeros for pruned elements), shape of ``mode``.
    """
    idx = None if group_index is None else group_index.reshape(-1).to(torch.long)
    g_elem = gamma.detach().to(mode.dtype if mode.is_floating_point() else torch.float64)
    s = mode.detach()
    g_groups = None
    for _ in range(max_iter):
        current = group_ard_update(s, data_precision, g_elem, group_index, num_groups)
        new_groups = current.gamma
        g_elem = new_groups if idx is None else new_groups[idx].reshape(mode.shape)
        # a pruned element (gamma 0) stays at zero: its group weight is not used any more
        s = group_lasso_shrink(mode, data_precision, current.omega, group_index, num_groups)
        s = torch.where(g_elem > 0, s, torch.zeros_like(s))
        if g_groups is not None and bool(
            ((new_groups - g_groups).abs() <= tol * (1.0 + g_groups.abs())).all()
        ):
            break
        g_groups = new_groups
    return current, s
