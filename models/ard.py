r"""Flat ARD prior: :mod:`pyronas.models.hard` without the hierarchy (an ablation of HARD).

Generative story, for cell ``c`` of type ``t = t(c)``, edge ``e`` and non-zero op ``k`` (with tied
switches there is one "cell" per type)::

    gamma^0_{t,e} >= 0, gamma^k_{t,e} >= 0      type-II point estimates, no hyperprior
    s^0_{c,e} ~ N(0, gamma^0_{t,e})             edge ("zero-op") switch
    s^k_{c,e} ~ N(0, gamma^k_{t,e})             op switch
    y_n ~ Categorical(softmax f(x_n; theta, s))  minibatch of B of N samples, scaled by N / B

The switches are drawn from the own variances directly: no edge -> op hierarchy and no
dependency between nodes. Everything else is HARD's: the options and hyperparameters of
:func:`pyronas.models.hard.init_hypers` (``gamma`` holds the variances; ``gamma_own`` equals
it after an update), its MAP surrogate (the reweighted group lasso) and its type-II update with
the hierarchy left out: ``Ht = H * curvature_multiplier / lambda_site``, per group
``omega_g = sqrt(sum_{c in g} Ht_c / (1 + gamma_g Ht_c))`` and ``gamma_g = ||s_g||_2 / omega_g``.
"""

from __future__ import annotations

from typing import Any

import pyro
from torch import Tensor

from pyronas.models.common import (
    ard_fixed_point_update,
    gaussian,
    observe,
    per_switch,
    switch_plates,
)
from pyronas.models.hard import init_hypers, map_penalty, map_proximal

__all__ = ["init_hypers", "model", "update_hypers", "map_penalty", "map_proximal"]


def model(net: Any, x: Tensor, y: Tensor | None, hypers: dict[str, Any], num_data: int) -> None:
    """Pyro model: independent ``N(0, gamma)`` switches, categorical likelihood on the batch.

    Parameters as in :func:`pyronas.models.hard.model`.
    """
    gamma = hypers["gamma"]  # the own variances: no hierarchy
    with switch_plates(net, hypers):  # (cell_type or cell, edge)
        edge = pyro.sample("edge_switch", gaussian(per_switch(gamma["edge_switch"], net, x)))
        op = pyro.sample("op_switch", gaussian(per_switch(gamma["op_switch"], net, x)).to_event(1))
    observe(net, x, y, edge, op, num_data)


def update_hypers(posterior: Any, hypers: dict[str, Any]) -> dict[str, Any]:
    """HARD's closed-form update without the hierarchy (``hypers`` is not modified).

    ``posterior`` has dicts ``mean[site]`` and ``curvature[site]`` of the switch shape.
    """
    own, gamma, omega = ard_fixed_point_update(posterior, hypers, hierarchy=None)
    return {**hypers, "gamma_own": own, "gamma": gamma, "omega": omega}
