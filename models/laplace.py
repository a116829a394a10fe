r"""Fixed-scale Laplace prior on every switch: the non-adaptive l1 baseline.

Generative story, for cell ``c`` (one per type when tied), edge ``e`` and non-zero op ``k``::

    s^0_{c,e} ~ Laplace(0, b_edge)              edge ("zero-op") switch
    s^k_{c,e} ~ Laplace(0, b_op)                op switch
    y_n ~ Categorical(softmax f(x_n; theta, s))  minibatch of B of N samples, scaled by N / B

The scales ``b`` are fixed (nothing is learned: ``hypers["learnable"] == []`` and there is no
``update_hypers``), and there is no ``map_penalty``: the engine uses the log prior
``-|s| / b`` itself in the MAP objective. Divided by ``N`` to sit next to the mean minibatch loss
it is an l1 penalty of strength ``1 / (b N)`` per switch.

The default ``b = 0.05`` puts the initial switches (1.0) twenty scales from zero: a mild push
towards sparsity for data sets of a few thousand samples; set it per experiment.

Hyperparameter dict (tensors float64 on the CPU, ``T`` cell types, ``E`` edges, ``K`` ops):

* ``scale[site]``: float, the Laplace scale ``b`` of that site.
* ``gamma[site]``: ``2 b^2`` (the prior variance), ``(T, E)`` / ``(T, E, K)``, for reporting;
  constant, so pruning on it never fires (the engine's posterior-inclusion rule still applies).
* ``learnable``: ``[]``; ``space``, ``num_cell_types``, ``num_edges``, ``num_ops``,
  ``cell_type_index`` (``None`` tied, else ``(cell,)``).
"""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch
from torch import Tensor

from pyronas.models._common import (
    SITES,
    base_hypers,
    filled,
    observe,
    sample_switches,
    site_gamma,
)
from pyronas.space import SearchSpace

__all__ = ["SITES", "init_hypers", "model", "effective_gamma", "site_gamma", "DEFAULT_SCALE"]

DEFAULT_SCALE = 0.05
"""Default Laplace scale ``b`` of both switch sites."""


def init_hypers(
    space: SearchSpace,
    scale_edge: float = DEFAULT_SCALE,
    scale_op: float = DEFAULT_SCALE,
    cell_type_index: Tensor | None = None,
) -> dict[str, Any]:
    """Hyperparameters of the fixed Laplace prior.

    Parameters
    ----------
    space
        The search space.
    scale_edge, scale_op
        Laplace scales ``b`` of edge and op switches (positive).
    cell_type_index
        ``None`` for tied switches; for untied switches the net's ``cell_type_index`` ``(cell,)``.
    """
    scales = {"edge_switch": float(scale_edge), "op_switch": float(scale_op)}
    for site, b in scales.items():
        if not b > 0:
            raise ValueError(f"Laplace scale of {site} must be positive, got {b}")
    hypers = base_hypers(space, cell_type_index)
    hypers["scale"] = scales
    hypers["gamma"] = effective_gamma({"scale": scales, "gamma": filled(space, 1.0)})
    return hypers


def effective_gamma(hypers: dict[str, Any]) -> dict[str, Tensor]:
    """Prior variance ``2 b^2`` of every switch group, per site."""
    return {
        site: torch.full_like(hypers["gamma"][site], 2.0 * hypers["scale"][site] ** 2)
        for site in SITES
    }


def model(net: Any, x: Tensor, y: Tensor | None, hypers: dict[str, Any], num_data: int) -> None:
    """Pyro model: ``Laplace(0, b)`` switches, categorical likelihood on the batch.

    Parameters as in :func:`pyronas.models.hard.model`.
    """
    num_edges, num_ops = hypers["num_edges"], hypers["num_ops"]

    def prior(site: str, index: Tensor | None, dtype: torch.dtype, device: torch.device) -> Any:
        lead = hypers["num_cell_types"] if index is None else len(index)
        shape = (lead, num_edges) if site == "edge_switch" else (lead, num_edges, num_ops)
        scale = torch.full(shape, hypers["scale"][site], dtype=dtype, device=device)
        return dist.Laplace(torch.zeros_like(scale), scale)

    switches = sample_switches(net, x, prior)
    observe(net, x, y, switches, num_data)
