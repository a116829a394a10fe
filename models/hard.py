r"""HARD prior: hierarchical automatic relevance determination (the BayesNAS default).

Generative story, for cell ``c`` of type ``t = t(c)``, edge ``e = (i -> j)`` and non-zero op ``k``
(with tied switches there is one "cell" per type)::

    own variances (type-II point estimates, no hyperprior):
        gamma^0_{t,e} >= 0                    edge ("zero-op") switch variance
        gamma^k_{t,e} >= 0                    op switch variance

    effective variances, nodes in topological order (precisions add):
        gamma^in_t(j)      = max_{e' = (h -> j)} max_k gammaeff^k_{t,e'}   (0 if j has no input)
        gammaeff^0_{t,e}   = gamma^0_{t,e}                                   if i is a cell input
                           = 1 / (1/gamma^0_{t,e} + 1/gamma^in_t(i))        otherwise
        gammaeff^k_{t,e}   = 1 / (1/gamma^k_{t,e} + 1/gammaeff^0_{t,e})

    switches:
        s^0_{c,e} ~ N(0, gammaeff^0_{t,e})
        s^k_{c,e} ~ N(0, gammaeff^k_{t,e})

    data (minibatch of B out of N samples, log likelihood scaled by N / B):
        y_n ~ Categorical(softmax f(x_n; theta, s))

An edge whose variance goes to 0 therefore turns off all its ops, and a node whose incoming ops
are all off turns off every edge leaving it (the dependency of Proposition 1 of the paper).
Before the first type-II update there are no own estimates yet (``gamma_own`` is ``None``) and
every switch has the starting variance 1 (the BayesNAS start); the hierarchy acts from the first
update on.

Type-II update (:func:`update_hypers`), from a diagonal Laplace posterior with curvature ``H``
of the mean minibatch loss: ``Ht = H * curvature_multiplier / lambda_site``, then per switch
``alpha = Ht / (1 + gammaeff Ht)``, per group ``g = (t, e[, k])``
``omega_g = sqrt(sum_{c in g} alpha_c)`` and ``gamma_g = ||s_g||_2 / omega_g`` (see
:mod:`pyronas.inference.ard_update`), and finally the effective variances above, iterated with
the group lasso to its fixed point (at most ``ard_iterations`` rounds).

MAP surrogate (:func:`map_penalty`): ``sum_g lambda_g omega_g ||s_g||_2``, the reweighted group
lasso added to the mean minibatch loss (the BayesNAS MAP step).

Hyperparameter dict (all tensors float64 on the CPU, ``T`` cell types, ``E`` edges, ``K`` ops):

* ``gamma_own[site]``: the own variances ``gamma^0`` / ``gamma^k``, ``(T, E)`` / ``(T, E, K)``;
  ``None`` before the first update.
* ``gamma[site]``: the effective variances, same shapes: what :func:`model` samples from before
  the first update (1) and a cache of the hierarchy of ``gamma_own`` after it (the engine prunes
  on it).
* ``omega[site]``: group-lasso weights, same shapes.
* ``lambda[site]``: float, ``lambda_edge`` / ``lambda_op``; ``ard_iterations``: int.
* ``curvature_multiplier``: float multiplying the curvature (1.0: mean minibatch loss; the batch
  size reproduces the summed per-sample curvature of the original BayesNAS code, whose
  lambda values 0.005-0.01 assume it).
* ``edges``: per cell type (in ``space.cell_types`` order) the ``(src, dst)`` edges;
  ``num_inputs``: the number of cell inputs (nodes with no dependency).
* the entries of :func:`pyronas.models.common.base_hypers` (sizes, ``cell_type_index``,
  ``learnable == []``: the update is closed form).
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
from torch import Tensor

from pyronas.models.common import (
    ard_fixed_point_update,
    base_hypers,
    filled,
    gaussian,
    group_lasso,
    group_soft_threshold,
    observe,
    per_switch,
    positive,
    switch_plates,
)
from pyronas.space import SearchSpace

__all__ = [
    "init_hypers",
    "model",
    "hierarchy",
    "apply_hierarchy",
    "update_hypers",
    "map_penalty",
    "map_proximal",
]


def init_hypers(
    space: SearchSpace,
    *,
    lambda_edge: float = 0.02,
    lambda_op: float = 0.02,
    curvature_multiplier: float = 1.0,
    ard_iterations: int = 2000,
    cell_type_index: Tensor | None = None,
) -> dict[str, Any]:
    """Initial hyperparameters: every variance and ``omega`` equal to 1, no own estimates yet.

    Parameters
    ----------
    space
        The search space.
    lambda_edge, lambda_op
        Group-lasso strengths of edge and op switches (the data precision is divided by them).
    curvature_multiplier
        Factor on the curvature of the mean loss (1.0, or the batch size for the authors' scale).
    ard_iterations
        Most rounds of the fixed-point update (1: the single step of the original update).
    cell_type_index
        ``None`` for tied switches; for untied switches the net's ``cell_type_index`` ``(cell,)``.
    """
    if int(ard_iterations) != ard_iterations or ard_iterations < 1:
        raise ValueError(f"ard_iterations must be an integer of at least 1, got {ard_iterations!r}")
    return {
        **base_hypers(space, cell_type_index),
        "gamma": filled(space, 1.0),
        "gamma_own": None,
        "omega": filled(space, 1.0),
        "lambda": {"edge_switch": positive("lambda_edge", lambda_edge),
                   "op_switch": positive("lambda_op", lambda_op)},
        "curvature_multiplier": positive("curvature_multiplier", curvature_multiplier),
        "ard_iterations": int(ard_iterations),
        "edges": tuple(tuple(space.edges[t]) for t in space.cell_types),
        "num_inputs": space.num_inputs,
    }


def model(net: Any, x: Tensor, y: Tensor | None, hypers: dict[str, Any], num_data: int) -> None:
    """Pyro model: HARD prior on the switches, categorical likelihood on the batch.

    Parameters
    ----------
    net
        Supernet with ``forward(x, edge_switch, op_switch) -> logits`` and ``tied`` /
        ``cell_type_index``.
    x, y
        Batch of inputs ``(batch, ...)`` and labels ``(batch,)`` (``None`` to sample labels).
    hypers
        From :func:`init_hypers` / :func:`update_hypers`.
    num_data
        Size of the data set the batch is drawn from.
    """
    own = hypers["gamma_own"]  # None before the first type-II update: every variance is 1
    gamma = hypers["gamma"] if own is None else hierarchy(own, hypers)
    with switch_plates(net, hypers):  # (cell_type or cell, edge)
        edge = pyro.sample("edge_switch", gaussian(per_switch(gamma["edge_switch"], net, x)))
        op = pyro.sample("op_switch", gaussian(per_switch(gamma["op_switch"], net, x)).to_event(1))
    observe(net, x, y, edge, op, num_data)


def hierarchy(own: dict[str, Tensor], hypers: dict[str, Any]) -> dict[str, Tensor]:
    """Effective variances per site from the own ones (:func:`apply_hierarchy` on the cells)."""
    edge, op = apply_hierarchy(
        own["edge_switch"], own["op_switch"], hypers["edges"], hypers["num_inputs"]
    )
    return {"edge_switch": edge, "op_switch": op}


def _parallel(a: Tensor, b: Tensor) -> Tensor:
    """``1 / (1/a + 1/b)`` (adding precisions), 0 where either is 0."""
    total = a + b
    return torch.where(total > 0, a * b / torch.where(total > 0, total, 1.0), 0.0)


def apply_hierarchy(
    gamma_edge: Tensor,
    gamma_op: Tensor,
    edges: tuple[tuple[tuple[int, int], ...], ...],
    num_inputs: int,
) -> tuple[Tensor, Tensor]:
    """Effective variances from own variances: edge -> op hierarchy and node dependency.

    Parameters
    ----------
    gamma_edge
        Own edge-switch variances ``(cell_type, edge)``.
    gamma_op
        Own op-switch variances ``(cell_type, edge, op)``.
    edges
        Per cell type the ``(src, dst)`` edges in switch order (DARTS numbering, ``src < dst``).
    num_inputs
        Number of cell inputs; edges leaving them have no dependency.

    Returns
    -------
    tuple
        Effective ``(gamma_edge, gamma_op)``, same shapes.
    """
    eff_edge = gamma_edge.clone()
    eff_op = gamma_op.clone()
    for t, cell_edges in enumerate(edges):
        gamma_in: dict[int, Tensor] = {}
        for node in sorted({dst for _, dst in cell_edges}):
            into = [e for e, (_, dst) in enumerate(cell_edges) if dst == node]
            for e in into:
                src = cell_edges[e][0]
                if src >= num_inputs:
                    upstream = gamma_in.get(src, gamma_edge.new_zeros(()))
                    eff_edge[t, e] = _parallel(gamma_edge[t, e], upstream)
                eff_op[t, e] = _parallel(gamma_op[t, e], eff_edge[t, e])
            gamma_in[node] = eff_op[t, into].max()
    return eff_edge, eff_op


def update_hypers(posterior: Any, hypers: dict[str, Any]) -> dict[str, Any]:
    """Closed-form type-II update from a diagonal Laplace posterior.

    Parameters
    ----------
    posterior
        Object with dicts ``mean[site]`` and ``curvature[site]`` of the switch shape, the
        curvature being that of the mean minibatch loss (``DiagonalLaplace``).
    hypers
        Current hyperparameters (not modified).

    Returns
    -------
    dict
        New hyperparameters with updated ``gamma_own``, ``gamma`` (their hierarchy) and
        ``omega``.
    """
    own, effective, omega = ard_fixed_point_update(
        posterior, hypers, lambda own: hierarchy(own, hypers)
    )
    return {**hypers, "gamma_own": own, "gamma": effective, "omega": omega}


def map_penalty(switches: dict[str, Tensor], hypers: dict[str, Any]) -> Tensor:
    """Reweighted group lasso ``sum_site lambda_site sum_g omega_g ||s_g||_2`` (scalar)."""
    return group_lasso(switches, hypers)


def map_proximal(
    switches: dict[str, Tensor], hypers: dict[str, Any], step: float
) -> dict[str, Tensor]:
    """Proximal step of :func:`map_penalty` (group soft-threshold) for proximal SGD."""
    return group_soft_threshold(switches, hypers, step)
