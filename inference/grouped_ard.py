"""Group ARD over crossed groupings: every element belongs to one group of each grouping.

A tensor of parameters ``w`` (e.g. a weight matrix) may be grouped in several ways at once (its
rows and its columns). Each grouping ``k`` has one prior variance ``gamma_{k,g}`` per group and
the precisions of the groups covering an element add::

    1 / gammaeff_c = sum_k 1 / gamma_{k, g_k(c)}          (0 when any of them is 0)

so that an element is switched off as soon as one of its groups is. The type-II update is the
group ARD step of :mod:`pyronas.inference.ard_update` taken per grouping under the effective
variance: ``alpha_c = Ht_c / (1 + gammaeff_c Ht_c)``, then per group of grouping ``k``
``omega_{k,g} = sqrt(sum_{c in g} alpha_c)`` and ``gamma_{k,g} = ||s_g||_2 / omega_{k,g}``.

:func:`crossed_ard_fixed_point` iterates that step with the group lasso it alternates with,
``sum_k sum_g omega_{k,g} ||s_g||_2``, solved on the Laplace quadratic model of the data term by
one group soft-threshold per grouping in turn (exact for a single grouping with equal precision
within each group; with several groupings, the composition of the proximal maps approximates
the proximal map of their sum). With one grouping it is
:func:`~pyronas.inference.ard_update.ard_fixed_point`.

The module knows nothing about networks: a grouping is an index tensor of the element shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .ard_update import group_ard_update, group_lasso_shrink

__all__ = [
    "CrossedArd",
    "Grouping",
    "crossed_ard_fixed_point",
    "effective_variance",
    "group_norms",
    "group_soft_threshold",
    "parallel",
]


class Grouping(NamedTuple):
    """One way of grouping the elements of a tensor.

    Attributes
    ----------
    index
        ``LongTensor`` of the element shape: the group ``0..size-1`` of every element.
    size
        Number of groups ``G``.
    """

    index: Tensor
    size: int

    @classmethod
    def along(cls, shape: Sequence[int], dim: int) -> Grouping:
        """The grouping of a tensor of ``shape`` by its index along ``dim`` (rows: ``dim=0``).

        Returns
        -------
        Grouping
            ``index[c] = c[dim]``, ``size = shape[dim]``.
        """
        shape = tuple(int(n) for n in shape)
        view = [1] * len(shape)
        view[dim] = shape[dim]
        index = torch.arange(shape[dim]).reshape(view).expand(shape).contiguous()
        return cls(index, shape[dim])


def parallel(variances: Sequence[Tensor]) -> Tensor:
    """``1 / sum_k 1 / v_k`` elementwise (precisions add); 0 where any ``v_k`` is 0.

    Parameters
    ----------
    variances
        Non-negative tensors of one shape (at least one).
    """
    if not variances:
        raise ValueError("parallel needs at least one variance tensor")
    alive = torch.ones_like(variances[0], dtype=torch.bool)
    precision = torch.zeros_like(variances[0])
    for v in variances:
        alive &= v > 0
        precision = precision + 1.0 / torch.where(v > 0, v, 1.0)
    return torch.where(alive, 1.0 / precision, 0.0)


def effective_variance(gammas: Sequence[Tensor], groupings: Sequence[Grouping]) -> Tensor:
    """Per-element effective variance from the group variances of every grouping.

    Parameters
    ----------
    gammas
        ``gammas[k]``: ``(G_k,)`` group variances of grouping ``k``.
    groupings
        The groupings, all over the same element shape.

    Returns
    -------
    Tensor
        Element-shaped ``1 / sum_k 1 / gammas[k][index_k]``.
    """
    if len(gammas) != len(groupings):
        raise ValueError(f"{len(gammas)} group variance tensors for {len(groupings)} groupings")
    for gamma, grouping in zip(gammas, groupings, strict=True):
        if gamma.shape != (grouping.size,):
            raise ValueError(
                f"group variances of shape {tuple(gamma.shape)} for a grouping of "
                f"{grouping.size} groups"
            )
    return parallel([g[k.index.to(g.device)] for g, k in zip(gammas, groupings, strict=True)])


def group_norms(values: Tensor, grouping: Grouping) -> Tensor:
    """``||values_g||_2`` of every group, ``(G,)``."""
    idx = grouping.index.reshape(-1).to(values.device)
    squares = torch.zeros(grouping.size, dtype=values.dtype, device=values.device)
    return squares.index_add(0, idx, (values * values).reshape(-1)).sqrt()


def group_soft_threshold(values: Tensor, grouping: Grouping, threshold: Tensor) -> Tensor:
    """Proximal map of ``sum_g threshold_g ||values_g||_2``: every group's norm shrunk by its
    threshold, groups below it exactly zero.

    Parameters
    ----------
    values
        Any shape, the shape of ``grouping.index``.
    threshold
        ``(G,)`` non-negative shrinkage per group.
    """
    norms = group_norms(values, grouping)
    tiny = torch.finfo(values.dtype).tiny
    scale = (1 - threshold.to(values) / norms.clamp_min(tiny)).clamp_min(0)
    return values * scale[grouping.index.to(values.device)]


class CrossedArd(NamedTuple):
    """Result of :func:`crossed_ard_fixed_point`.

    Attributes
    ----------
    gamma, omega
        Per grouping, ``(G_k,)`` group variances and group-lasso weights.
    effective
        Element-shaped effective variances (:func:`effective_variance` of ``gamma``).
    shrunk
        The group-lasso solution at the last weights (exact zeros for pruned elements).
    rounds
        Rounds taken.
    """

    gamma: list[Tensor]
    omega: list[Tensor]
    effective: Tensor
    shrunk: Tensor
    rounds: int


def crossed_ard_fixed_point(
    mode: Tensor,
    data_precision: Tensor,
    effective: Tensor,
    groupings: Sequence[Grouping],
    max_iter: int = 2000,
    tol: float = 1e-9,
    prices: Sequence[float] | None = None,
) -> CrossedArd:
    """Iterate the crossed group ARD step and the group lasso to their joint fixed point.

    The first step is taken at ``mode`` itself under ``effective`` (``max_iter=1`` is one ARD
    step per grouping at the MAP values).

    Parameters
    ----------
    mode
        Mode ``m`` of the quadratic data term (the MAP values), any shape.
    data_precision
        Diagonal data precision ``Ht`` per element, same shape, non-negative.
    effective
        Current effective variance per element, same shape.
    groupings
        At least one grouping of the elements.
    max_iter, tol
        Stop when no group variance moves by more than ``tol * (1 + gamma)``.
    prices
        One positive factor per grouping on its group-lasso weights (default all 1): each
        step's ``omega_{k,g}`` is multiplied by ``prices[k]`` and ``gamma_{k,g}`` divided by
        it (``gamma = ||s_g|| / omega`` still holds), so a price above 1 prunes that grouping
        harder and one below 1 softer; towards 0 the grouping stops mattering (its precision
        vanishes from the effective variance). A heuristic weighting of the groupings, not
        part of the evidence.

    Returns
    -------
    CrossedArd
    """
    if not groupings:
        raise ValueError("crossed_ard_fixed_point needs at least one grouping")
    for grouping in groupings:
        if grouping.index.shape != mode.shape:
            raise ValueError(
                f"grouping index shape {tuple(grouping.index.shape)} differs from the element "
                f"shape {tuple(mode.shape)}"
            )
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    factors = [1.0] * len(groupings) if prices is None else [float(p) for p in prices]
    if len(factors) != len(groupings) or not all(p > 0 for p in factors):
        raise ValueError(f"prices must be one positive number per grouping ({len(groupings)}), "
                         f"got {prices!r}")
    m = mode.detach()
    ht = data_precision.detach().to(m)
    shrunk = m
    previous: list[Tensor] | None = None
    rounds = 0
    for rounds in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        steps = [group_ard_update(shrunk, ht, effective, k.index, k.size) for k in groupings]
        gammas = [step.gamma / p for step, p in zip(steps, factors, strict=True)]
        omegas = [step.omega * p for step, p in zip(steps, factors, strict=True)]
        effective = effective_variance(gammas, groupings)
        shrunk = m
        for grouping, omega in zip(groupings, omegas, strict=True):
            shrunk = group_lasso_shrink(shrunk, ht, omega, grouping.index, grouping.size)
        shrunk = torch.where(effective > 0, shrunk, torch.zeros_like(shrunk))
        if previous is not None and all(
            bool(((new - old).abs() <= tol * (1.0 + old.abs())).all())
            for new, old in zip(gammas, previous, strict=True)
        ):
            break
        previous = gammas
    return CrossedArd(gammas, omegas, effective, shrunk, rounds)
