r"""Horseshoe prior: global-local half-Cauchy scales on the switches.

Generative story, for cell ``c`` of type ``t = t(c)`` (one cell per type when tied), edge ``e``,
non-zero op ``k`` and site ``a`` in {edge, op}::

    tau^a_t       ~ HalfCauchy(tau0)               global scale per cell type and site
    lam^0_{t,e}   ~ HalfCauchy(1)                  local scale of an edge switch group
    lam^k_{t,e}   ~ HalfCauchy(1)                  local scale of an op switch group
    s^0_{c,e}     ~ N(0, (tau^edge_t lam^0_{t,e})^2)
    s^k_{c,e}     ~ N(0, (tau^op_t lam^k_{t,e})^2)
    y_n ~ Categorical(softmax f(x_n; theta, s))      minibatch of B of N samples, scaled by N / B

The scales are type-II point estimates, not sampled: they are stored as unconstrained logs
``log_tau`` and ``log_lam`` (listed in ``hypers["learnable"]``) and the engine updates them by
gradient ascent on the Laplace evidence. Their half-Cauchy hyperprior enters the model as
``pyro.factor("hyperprior", ...)``, the log density of the *logs* (half-Cauchy log density plus
the log-Jacobian ``log tau + sum log lam``), so that the evidence the engine maximises is the
posterior density of the unconstrained values it optimises, and a scale cannot run off to 0 or
infinity unopposed. The factor does not depend on the switches, so it leaves the MAP step alone.

There is no closed-form update and no ``map_penalty``: the MAP objective uses the log prior.
After changing ``log_tau``/``log_lam`` the engine calls :func:`effective_gamma` and stores the
result in ``hypers["gamma"]`` (used for pruning).

Hyperparameter dict (tensors float64 on the CPU, ``T`` cell types, ``E`` edges, ``K`` ops):

* ``log_tau[site]``: ``(T,)`` log global scales.
* ``log_lam[site]``: ``(T, E)`` / ``(T, E, K)`` log local scales.
* ``gamma[site]``: effective variances ``tau^2 lam^2``, shapes of ``log_lam`` (detached copy).
* ``tau0``: float, scale of the half-Cauchy on ``tau``.
* ``learnable``: ``["log_tau", "log_lam"]``: keys whose per-site tensors the engine optimises;
  the other entries of :func:`pyronas.models.common.base_hypers`.

Initialisation: ``tau = lam = 1``, so ``gamma = 1`` as for the ARD priors.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyronas.models.common import (
    HYPER_DTYPE,
    SITES,
    base_hypers,
    filled,
    gaussian,
    observe,
    per_switch,
    positive,
    switch_plates,
)
from pyronas.space import SearchSpace

__all__ = ["init_hypers", "model", "effective_gamma", "variance", "log_hyperprior"]


def init_hypers(
    space: SearchSpace,
    *,
    tau0: float = 1.0,
    cell_type_index: Tensor | None = None,
) -> dict[str, Any]:
    """Initial hyperparameters ``tau = lam = 1``.

    Parameters
    ----------
    space
        The search space.
    tau0
        Scale of the half-Cauchy hyperprior of the global scales (positive).
    cell_type_index
        ``None`` for tied switches; for untied switches the net's ``cell_type_index`` ``(cell,)``.
    """
    num_types = len(space.cell_types)
    hypers = {
        **base_hypers(space, cell_type_index),
        "log_tau": {site: torch.zeros(num_types, dtype=HYPER_DTYPE) for site in SITES},
        "log_lam": filled(space, 0.0),
        "tau0": positive("tau0", tau0),
        "learnable": ["log_tau", "log_lam"],
    }
    hypers["gamma"] = effective_gamma(hypers)
    return hypers


def model(net: Any, x: Tensor, y: Tensor | None, hypers: dict[str, Any], num_data: int) -> None:
    """Pyro model: horseshoe prior on the switches, categorical likelihood on the batch.

    Parameters as in :func:`pyronas.models.hard.model`. Gradients flow from the log joint to
    ``hypers["log_tau"]`` and ``hypers["log_lam"]`` when they require grad.
    """
    pyro.factor("hyperprior", per_switch(log_hyperprior(hypers), net, x))  # tau, lam half-Cauchy
    gamma = {site: variance(hypers, site) for site in SITES}  # tau^2 lam^2
    with switch_plates(net, hypers):  # (cell_type or cell, edge)
        edge = pyro.sample("edge_switch", gaussian(per_switch(gamma["edge_switch"], net, x)))
        op = pyro.sample("op_switch", gaussian(per_switch(gamma["op_switch"], net, x)).to_event(1))
    observe(net, x, y, edge, op, num_data)


def variance(hypers: dict[str, Any], site: str) -> Tensor:
    """``tau^2 lam^2`` per group ``(T, E[, K])``, differentiable in the logs."""
    log_tau = hypers["log_tau"][site]
    log_lam = hypers["log_lam"][site]
    log_tau = log_tau.reshape(log_tau.shape + (1,) * (log_lam.dim() - 1))
    return torch.exp(2.0 * (log_tau + log_lam))


def effective_gamma(hypers: dict[str, Any]) -> dict[str, Tensor]:
    """Effective prior variances ``tau^2 lam^2`` per site (detached)."""
    return {site: variance(hypers, site).detach().clone() for site in SITES}


def log_hyperprior(hypers: dict[str, Any]) -> Tensor:
    """Log density of ``(log_tau, log_lam)`` under the half-Cauchy hyperpriors (scalar)."""
    total = torch.zeros((), dtype=HYPER_DTYPE)
    for site in SITES:
        for key, scale in (("log_tau", hypers["tau0"]), ("log_lam", 1.0)):
            log_scale = hypers[key][site]
            cauchy = dist.HalfCauchy(torch.tensor(scale, dtype=log_scale.dtype))
            total = total + (cauchy.log_prob(log_scale.exp()) + log_scale).sum()
    return total
