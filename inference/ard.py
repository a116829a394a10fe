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

The module knows nothing about architectures: groups are given by an index tensor.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["ArdUpdate", "group_ard_update"]


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
