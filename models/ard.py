r"""Flat ARD prior: an independent Gaussian per switch group, no hierarchy, no dependency.

Generative story, for cell ``c`` of type ``t = t(c)``, edge ``e`` and non-zero op ``k`` (with tied
switches there is one "cell" per type)::

    gamma^0_{t,e} >= 0, gamma^k_{t,e} >= 0      type-II point estimates, no hyperprior
    s^0_{c,e} ~ N(0, gamma^0_{t,e})             edge ("zero-op") switch
    s^k_{c,e} ~ N(0, gamma^k_{t,e})             op switch
    y_n ~ Categorical(softmax f(x_n; theta, s))  minibatch of B of N samples, scaled by N / B

This is :mod:`pyronas.models.hard` without the edge -> op hierarchy and without the dependency
between nodes: an ablation of the HARD prior.

Type-II update (:func:`update_hypers`): ``Ht = H * curvature_multiplier / lambda_site`` with
``H`` the diagonal curvature of the mean minibatch loss, then per group ``g = (t, e[, k])``
``omega_g = sqrt(sum_{c in g} Ht_c / (1 + gamma_g Ht_c))`` and
``gamma_g = ||s_g||_2 / omega_g`` (:mod:`pyronas.inference.ard_update`).

MAP surrogate (:func:`map_penalty`): ``sum_g lambda_g omega_g ||s_g||_2``.

Hyperparameter dict (tensors float64 on the CPU, ``T`` cell types, ``E`` edges, ``K`` ops):

* ``gamma[site]``: prior variances, ``(T, E)`` / ``(T, E, K)`` (used by the engine to prune).
* ``omega[site]``: group-lasso weights, same shapes.
* ``lambda[site]``: float; ``curvature_multiplier``: float (1.0: mean-loss curvature; the batch
  size: the authors' summed curvature).
* ``space``, ``num_cell_types``, ``num_edges``, ``num_ops``, ``cell_type_index`` (``None`` tied,
  else ``(cell,)``), ``learnable`` (``[]``).

At initialisation every ``gamma`` and ``omega`` is 1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pyronas.models._common import (
    SITES,
    ard_fixed_point_update,
    base_hypers,
    filled,
    gaussian_switch_prior,
    group_lasso,
    group_soft_threshold,
    observe,
    sample_switches,
    site_gamma,
    to_switches,
)
from pyronas.space import SearchSpace

__all__ = [
    "site_gamma",
    "SITES",
    "init_hypers",
    "model",
    "update_hypers",
    "map_penalty",
    "map_proximal",
    "effective_gamma",
]


def init_hypers(
    space: SearchSpace,
    lambda_edge: float = 0.02,
    lambda_op: float = 0.02,
    curvature_multiplier: float = 1.0,
    cell_type_index: Tensor | None = None,
) -> dict[str, Any]:
    """Initial hyperparameters: every ``gamma`` and ``omega`` equal to 1.

    Parameters
    ----------
    space
        The search space.
    lambda_edge, lambda_op
        Group-lasso strengths of edge and op switches.
    curvature_multiplier
        Factor on the curvature of the mean loss.
    cell_type_index
        ``None`` for tied switches; for untied switches the net's ``cell_type_index`` ``(cell,)``.
    """
    hypers = base_hypers(space, cell_type_index)
    hypers.update(
        gamma=filled(space, 1.0),
        omega=filled(space, 1.0),
        curvature_multiplier=float(curvature_multiplier),
    )
    hypers["lambda"] = {"edge_switch": float(lambda_edge), "op_switch": float(lambda_op)}
    return hypers


def effective_gamma(hypers: dict[str, Any]) -> dict[str, Tensor]:
    """The prior variances per site (stored in ``hypers["gamma"]``)."""
    return dict(hypers["gamma"])


def model(net: Any, x: Tensor, y: Tensor | None, hypers: dict[str, Any], num_data: int) -> None:
    """Pyro model: independent ``N(0, gamma)`` switches, categorical likelihood on the batch.

    Parameters as in :func:`pyronas.models.hard.model`.
    """

    def prior(site: str, index: Tensor | None, dtype: torch.dtype, device: torch.device) -> Any:
        gamma = to_switches(hypers["gamma"][site], index).to(dtype=dtype, device=device)
        return gaussian_switch_prior(gamma)

    switches = sample_switches(net, x, prior)
    observe(net, x, y, switches, num_data)


def update_hypers(posterior: Any, hypers: dict[str, Any]) -> dict[str, Any]:
    """Closed-form ARD update of ``gamma`` and ``omega`` (``hypers`` is not modified).

    ``posterior`` has dicts ``mean[site]`` and ``curvature[site]`` of the switch shape.
    """
    _, gamma, omega = ard_fixed_point_update(posterior, hypers)
    new = dict(hypers)
    new["gamma"] = gamma
    new["omega"] = omega
    return new


def map_proximal(switches: dict[str, Tensor], hypers: dict[str, Any], step: float) -> dict:
    """Proximal step of :func:`map_penalty` (group soft-threshold) for proximal SGD."""
    return group_soft_threshold(switches, hypers, step)


def map_penalty(switches: dict[str, Tensor], hypers: dict[str, Any]) -> Tensor:
    """Reweighted group lasso ``sum_site lambda_site sum_g omega_g ||s_g||_2`` (scalar)."""
    return group_lasso(switches, hypers)
