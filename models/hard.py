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

Type-II update (:func:`update_hypers`), from a diagonal Laplace posterior with curvature ``H``
of the mean minibatch loss: ``Ht = H * curvature_multiplier / lambda_site``, then per switch
``alpha = Ht / (1 + gammaeff Ht)``, per group ``g = (t, e[, k])``
``omega_g = sqrt(sum_{c in g} alpha_c)`` and ``gamma_g = ||s_g||_2 / omega_g`` (see
:mod:`pyronas.inference.ard_update`), and finally the effective variances above.

MAP surrogate (:func:`map_penalty`): ``sum_g lambda_g omega_g ||s_g||_2``, the reweighted group
lasso added to the mean minibatch loss (the BayesNAS MAP step).

Hyperparameter dict (all tensors float64 on the CPU, ``T`` cell types, ``E`` edges, ``K`` ops):

* ``gamma[site]``: effective prior variances, ``(T, E)`` for ``edge_switch`` and ``(T, E, K)``
  for ``op_switch``; what :func:`model` uses and what the engine prunes on.
* ``gamma_own[site]``: the own variances ``gamma^0`` / ``gamma^k`` before the hierarchy.
* ``omega[site]``: group-lasso weights, same shapes.
* ``lambda[site]``: float, ``lambda_edge`` / ``lambda_op``.
* ``curvature_multiplier``: float multiplying the curvature (1.0: mean minibatch loss; the batch
  size reproduces the summed per-sample curvature of the original BayesNAS code, whose
  lambda values 0.005-0.01 assume it).
* ``edges``: per cell type (in ``space.cell_types`` order) the ``(src, dst)`` edges;
  ``num_inputs``: the number of cell inputs (nodes with no dependency).
* ``space``, ``num_cell_types``, ``num_edges``, ``num_ops``: sizes; ``cell_type_index``:
  ``None`` for tied switches, else ``(cell,)`` mapping each cell to its type.
* ``learnable``: ``[]`` (nothing learned by gradient; the update is closed form).

At initialisation every ``gamma`` and ``omega`` is 1 (the hierarchy starts acting at the first
update).
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
    "apply_hierarchy",
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
        Group-lasso strengths of edge and op switches (the data precision is divided by them).
    curvature_multiplier
        Factor on the curvature of the mean loss (1.0, or the batch size for the authors' scale).
    cell_type_index
        ``None`` for tied switches; for untied switches the net's ``cell_type_index`` ``(cell,)``.
    """
    hypers = base_hypers(space, cell_type_index)
    hypers.update(
        gamma=filled(space, 1.0),
        gamma_own=filled(space, 1.0),
        omega=filled(space, 1.0),
        curvature_multiplier=float(curvature_multiplier),
        edges=tuple(tuple(space.edges[t]) for t in space.cell_types),
        num_inputs=space.num_inputs,
    )
    hypers["lambda"] = {"edge_switch": float(lambda_edge), "op_switch": float(lambda_op)}
    return hypers


def effective_gamma(hypers: dict[str, Any]) -> dict[str, Tensor]:
    """The effective prior variances per site (stored in ``hypers["gamma"]``)."""
    return dict(hypers["gamma"])


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

    def prior(site: str, index: Tensor | None, dtype: torch.dtype, device: torch.device) -> Any:
        gamma = to_switches(hypers["gamma"][site], index).to(dtype=dtype, device=device)
        return gaussian_switch_prior(gamma)

    switches = sample_switches(net, x, prior)
    observe(net, x, y, switches, num_data)


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
        New hyperparameters with updated ``gamma``, ``gamma_own`` and ``omega``.
    """

    def hierarchy(own: dict[str, Tensor]) -> dict[str, Tensor]:
        eff_edge, eff_op = apply_hierarchy(
            own["edge_switch"], own["op_switch"], hypers["edges"], hypers["num_inputs"]
        )
        return {"edge_switch": eff_edge, "op_switch": eff_op}

    own, effective, omega = ard_fixed_point_update(posterior, hypers, hierarchy)
    new = dict(hypers)
    new["gamma"] = effective
    new["gamma_own"] = own
    new["omega"] = omega
    return new


def map_proximal(switches: dict[str, Tensor], hypers: dict[str, Any], step: float) -> dict:
    """Proximal step of :func:`map_penalty` (group soft-threshold) for proximal SGD."""
    return group_soft_threshold(switches, hypers, step)


def map_penalty(switches: dict[str, Tensor], hypers: dict[str, Any]) -> Tensor:
    """Reweighted group lasso ``sum_site lambda_site sum_g omega_g ||s_g||_2`` (scalar)."""
    return group_lasso(switches, hypers)
