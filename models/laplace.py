r"""Fixed-scale Laplace prior on every switch: the non-adaptive l1 baseline.

Generative story, for cell ``c`` (one per type when tied), edge ``e`` and non-zero op ``k``::

    s^0_{c,e} ~ Laplace(0, b_edge)              edge ("zero-op") switch
    s^k_{c,e} ~ Laplace(0, b_op)                op switch
    y_n ~ Categorical(softmax f(x_n; theta, s))  minibatch of B of N samples, scaled by N / B

The scales ``b`` are fixed (nothing is learned: ``hypers["learnable"] == []`` and there is no
``update_hypers``), and there is no ``map_penalty``: the engine uses the log prior
``-|s| / b - log(2 b)`` itself in the MAP objective. Divided by ``N`` to sit next to the mean
minibatch loss it is an l1 penalty of strength ``1 / (b N)`` per switch.

The default ``b = 0.05`` puts the initial switches (1.0) twenty scales from zero: a mild push
towards sparsity for data sets of a few thousand samples; set it per experiment.

Hyperparameters: ``scale[site]`` (float, ``b``), ``gamma[site]`` (``2 b^2``, the prior variance,
``(T, E)`` / ``(T, E, K)``, for reporting; constant, so pruning on it never fires) and the
entries of :func:`pyronas.models.common.base_hypers`.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
from torch import Tensor

from pyronas.models.common import base_hypers, filled, observe, per_switch, positive, switch_plates
from pyronas.space import SearchSpace


def init_hypers(
    space: SearchSpace,
    *,
    scale_edge: float = 0.05,
    scale_op: float = 0.05,
    cell_type_index: Tensor | None = None,
) -> dict[str, Any]:
    """Laplace scales ``b`` of edge and op switches (positive), tied or untied switches."""
    scale = {"edge_switch": positive("scale_edge", scale_edge),
             "op_switch": positive("scale_op", scale_op)}
    gamma = filled(space, {site: 2.0 * b**2 for site, b in scale.items()})
    return {**base_hypers(space, cell_type_index), "scale": scale, "gamma": gamma}


def model(net: Any, x: Tensor, y: Tensor | None, hypers: dict[str, Any], num_data: int) -> None:
    """Pyro model: ``Laplace(0, b)`` switches, categorical likelihood on the batch."""
    b = hypers["scale"]
    with switch_plates(net, hypers):  # (cell_type or cell, edge)
        edge = pyro.sample("edge_switch", dist.Laplace(0.0, per_switch(b["edge_switch"], net, x)))
        op_prior = dist.Laplace(0.0, per_switch(b["op_switch"], net, x)).expand([hypers["num_ops"]])
        op = pyro.sample("op_switch", op_prior.to_event(1))
    observe(net, x, y, edge, op, num_data)
