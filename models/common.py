"""What every prior model file shares: switch plates, likelihood, tied/untied broadcast, lassos.

Not a prior itself (:func:`pyronas.models.list_priors` leaves it out). A prior file imports the
pieces it needs; :func:`pyronas.models.load_prior` fills the optional entries a file leaves out
(``SITES``, ``site_gamma``, ``effective_gamma``) with the defaults defined here.

Shapes. Every switch hyperparameter is stored per *group*: ``(cell_type, edge)`` for the edge
switches and ``(cell_type, edge, op)`` for the op switches. The switches themselves have the
group shape when they are tied (one set per cell type) and ``(cell, edge[, op])`` when they are
untied; ``cell_type_index`` ``(cell,)`` maps each cell to its type. :func:`per_switch` and
:func:`to_switches` broadcast a group tensor to the switches.

A model body reads::

    with switch_plates(net, hypers):
        edge = pyro.sample("edge_switch", gaussian(per_switch(gamma_edge, net, x)))
        op = pyro.sample("op_switch", gaussian(per_switch(gamma_op, net, x)).to_event(1))
    observe(net, x, y, edge, op, num_data)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyronas.inference.ard_update import group_ard_update, group_lasso_shrink
from pyronas.space import SITES, SearchSpace

__all__ = [
    "SITES",
    "HYPER_DTYPE",
    "DEFAULTS",
    "positive",
    "group_shapes",
    "filled",
    "base_hypers",
    "check_cell_type_index",
    "net_cell_type_index",
    "to_switches",
    "per_switch",
    "group_index",
    "group_norms",
    "check_switch_shape",
    "switch_plates",
    "gaussian",
    "observe",
    "site_gamma",
    "effective_gamma",
    "group_lasso",
    "group_soft_threshold",
    "ard_fixed_point_update",
]

HYPER_DTYPE = torch.float64
"""Hyperparameters are a few hundred numbers: keep them in double precision on the CPU."""

Hierarchy = Callable[[dict[str, Tensor]], dict[str, Tensor]]
"""Maps own group variances per site to effective ones (same shapes)."""


# -------------------------------------------------------------------------------- hypers


def positive(name: str, value: float) -> float:
    """``float(value)``, or a ``ValueError`` naming the option unless it is positive."""
    number = float(value)
    if not number > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return number


def group_shapes(space: SearchSpace) -> dict[str, tuple[int, ...]]:
    """Per-site group shapes ``(cell_type, edge)`` and ``(cell_type, edge, op)``."""
    edge_shape, op_shape = space.switch_shapes()
    return {"edge_switch": edge_shape, "op_switch": op_shape}


def filled(space: SearchSpace, value: float | Mapping[str, float]) -> dict[str, Tensor]:
    """One float64 tensor of group shape per site, filled with ``value`` (or ``value[site]``)."""
    return {
        site: torch.full(
            shape, float(value[site] if isinstance(value, Mapping) else value), dtype=HYPER_DTYPE
        )
        for site, shape in group_shapes(space).items()
    }


def check_cell_type_index(cell_type_index: Tensor | None, num_cell_types: int) -> Tensor | None:
    """Validate the cell -> cell type map of untied switches (``None``: tied)."""
    if cell_type_index is None:
        return None
    index = torch.as_tensor(cell_type_index)
    if index.dim() != 1 or index.is_floating_point() or index.dtype == torch.bool:
        raise ValueError("cell_type_index must be a 1-d integer tensor (cell,)")
    if index.numel() and (index.min() < 0 or index.max() >= num_cell_types):
        raise ValueError(f"cell_type_index has entries outside 0..{num_cell_types - 1}")
    return index.to(torch.long).cpu()


def base_hypers(space: SearchSpace, cell_type_index: Tensor | None) -> dict[str, Any]:
    """Entries every prior stores: the space name, its sizes and the tying of the switches.

    ``space``, ``num_cell_types``, ``num_edges``, ``num_ops``, ``cell_type_index`` (``None``
    tied, else ``(cell,)``) and ``learnable`` (``[]``: keys the engine optimises by gradient).
    """
    return {
        "space": space.name,
        "num_cell_types": len(space.cell_types),
        "num_edges": space.num_edges,
        "num_ops": space.num_ops,
        "cell_type_index": check_cell_type_index(cell_type_index, len(space.cell_types)),
        "learnable": [],
    }


# -------------------------------------------------------------------------------- broadcast


def net_cell_type_index(net: Any) -> Tensor | None:
    """``None`` for a net with tied switches, else its ``cell_type_index`` ``(cell,)``."""
    if getattr(net, "tied", True):
        return None
    return torch.as_tensor(net.cell_type_index)


def to_switches(group_value: Tensor, cell_type_index: Tensor | None) -> Tensor:
    """Broadcast a per-group tensor ``(cell_type, ...)`` to the switches.

    ``cell_type_index=None`` (tied) returns the tensor itself, otherwise the ``(cell, ...)`` rows
    ``group_value[cell_type_index]``.
    """
    if cell_type_index is None:
        return group_value
    return group_value[cell_type_index.to(group_value.device)]


def per_switch(value: Tensor | float, net: Any, x: Tensor) -> Tensor:
    """A group tensor (or a number) as a tensor of the net's switches, in ``x``'s dtype/device.

    Parameters
    ----------
    value
        ``(cell_type, edge[, op])`` group values, or a float (left to the plates to broadcast).
    net
        The supernet (``tied`` / ``cell_type_index`` choose the layout).
    x
        The input batch: its floating dtype (else the default dtype) and its device are used.

    Returns
    -------
    Tensor
        ``(lead, edge[, op])`` with ``lead`` the cell type (tied) or the cell (untied); a
        0-d tensor for a number. Gradients flow back to ``value``.
    """
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    if not isinstance(value, Tensor):
        value = torch.tensor(float(value), dtype=HYPER_DTYPE)
    elif value.dim() > 0:
        value = to_switches(value, net_cell_type_index(net))
    return value.to(dtype=dtype, device=x.device)


def group_index(shape: tuple[int, ...], cell_type_index: Tensor | None) -> Tensor:
    """Flat group id of every switch of one site.

    Parameters
    ----------
    shape
        Group shape ``(cell_type, edge[, op])``.
    cell_type_index
        ``None`` for tied switches, else ``(cell,)``.

    Returns
    -------
    Tensor
        ``LongTensor`` of the switch shape (``shape``, or ``(cell, *shape[1:])`` untied) whose
        entries index the flattened group tensor.
    """
    ids = torch.arange(int(torch.tensor(shape).prod())).reshape(shape)
    return to_switches(ids, cell_type_index)


def group_norms(switch: Tensor, hypers: Mapping[str, Any]) -> Tensor:
    """The l2 norm of every switch group, group shape ``(cell_type, edge[, op])``.

    Tied switches are their own groups (``|s|``); untied switches of the cells of one type form
    the group vector.
    """
    index = hypers["cell_type_index"]
    if index is None:
        return switch.abs()
    idx = index.to(switch.device)
    return torch.stack(
        [torch.linalg.vector_norm(switch[idx == t], dim=0) for t in range(hypers["num_cell_types"])]
    )


def check_switch_shape(site: str, value: Tensor, hypers: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` if a switch tensor does not fit the hypers' space and tying."""
    index = hypers["cell_type_index"]
    lead = hypers["num_cell_types"] if index is None else len(index)
    expected: tuple[int, ...] = (lead, hypers["num_edges"])
    if site == "op_switch":
        expected = expected + (hypers["num_ops"],)
    if tuple(value.shape) != expected:
        tying = "tied" if index is None else "untied"
        raise ValueError(
            f"{site} has shape {tuple(value.shape)}, expected {expected} for {tying} switches"
        )


# -------------------------------------------------------------------------------- the model


@contextmanager
def switch_plates(net: Any, hypers: Mapping[str, Any]) -> Iterator[None]:
    """The plates of both switch sites: ``cell_type`` (tied) or ``cell`` (untied), and ``edge``.

    Pyro ties a plate name to one tensor dim, so both sites share the lead plate at dim -2 and
    ``edge`` at dim -1; the op switches carry their ``op`` dim as an event dim (``.to_event(1)``;
    their prior is independent across ops all the same).
    """
    index = net_cell_type_index(net)
    if index is None:
        lead = pyro.plate("cell_type", hypers["num_cell_types"], dim=-2)
    else:
        lead = pyro.plate("cell", len(index), dim=-2)
    with lead, pyro.plate("edge", hypers["num_edges"], dim=-1):
        yield


def gaussian(variance: Tensor) -> dist.TorchDistribution:
    """``N(0, variance)`` per switch; switches with variance 0 (pruned) are masked out.

    A pruned switch is a point mass at 0: it contributes nothing to the log prior (the engine
    keeps it frozen at 0).
    """
    tiny = torch.finfo(variance.dtype).tiny
    scale = variance.clamp_min(tiny).sqrt()
    return dist.Normal(torch.zeros_like(scale), scale).mask(variance > 0)


def observe(
    net: Any, x: Tensor, y: Tensor | None, edge_switch: Tensor, op_switch: Tensor, num_data: int
) -> None:
    """The categorical likelihood of a minibatch, scaled to ``num_data`` samples.

    Parameters
    ----------
    net
        Supernet, ``net(x, edge_switch, op_switch) -> logits (batch, classes)``.
    x, y
        Inputs ``(batch, ...)`` and labels ``(batch,)`` (``None``: sample the labels).
    edge_switch, op_switch
        The switch values ``(lead, edge)`` and ``(lead, edge, op)``.
    num_data
        Size of the data set the batch is drawn from: the log likelihood is scaled by
        ``num_data / batch`` (the ``obs`` site under a subsampled ``data`` plate).

    Raises
    ------
    FloatingPointError
        If the supernet produces non-finite logits.
    """
    batch = len(x)
    if num_data < batch:
        raise ValueError(f"num_data={num_data} is smaller than the batch size {batch}")
    logits = net(x, edge_switch, op_switch)
    if not bool(torch.isfinite(logits).all()):
        raise FloatingPointError(
            "the supernet produced non-finite logits (the weights or switches diverged)"
        )
    with pyro.plate("data", num_data, subsample_size=batch, dim=-1):
        pyro.sample("obs", dist.Categorical(logits=logits), obs=y)


# -------------------------------------------------------------------------------- defaults


def site_gamma(hypers: Mapping[str, Any], site: str) -> Tensor | None:
    """Prior variance of every switch of ``site``: ``hypers["gamma"]`` broadcast to the switches.

    Tied switches have the group shape ``(cell_type, ...)`` already; untied switches
    ``(cell, ...)`` take the row of their cell's type. The engine prunes on this. ``None`` when
    the hypers hold no ``gamma`` for the site (nothing to prune on).
    """
    gamma = hypers.get("gamma", {}).get(site)
    if gamma is None:
        return None
    return to_switches(gamma, hypers.get("cell_type_index"))


def effective_gamma(hypers: Mapping[str, Any]) -> dict[str, Tensor]:
    """The effective prior variances per site: ``hypers["gamma"]`` as it is.

    A prior whose variances follow from learned hyperparameters defines its own; the engine
    stores the result in ``hypers["gamma"]`` after every hyperparameter update.
    """
    return dict(hypers.get("gamma", {}))


DEFAULTS: dict[str, Any] = {
    "SITES": SITES,
    "site_gamma": site_gamma,
    "effective_gamma": effective_gamma,
}
"""Optional prior-file entries and the value :func:`pyronas.models.load_prior` gives a file
that leaves them out."""


# -------------------------------------------------------------------------------- ARD priors


def group_lasso(switches: Mapping[str, Tensor], hypers: Mapping[str, Any]) -> Tensor:
    """Reweighted group lasso ``sum_site lambda_site sum_g omega_g ||s_g||_2`` (scalar).

    Groups are ``(cell_type, edge[, op])`` (see :func:`group_norms`).
    """
    total: Tensor | None = None
    for site in SITES:
        s = switches[site]
        check_switch_shape(site, s, hypers)
        omega = hypers["omega"][site].to(dtype=s.dtype, device=s.device)
        term = float(hypers["lambda"][site]) * (omega * group_norms(s, hypers)).sum()
        total = term if total is None else total + term
    assert total is not None
    return total


def group_soft_threshold(
    switches: Mapping[str, Tensor], hypers: Mapping[str, Any], step: float
) -> dict[str, Tensor]:
    """Proximal map of ``step * group_lasso``: shrink every group's norm by ``step lambda omega``.

    ``prox(s_g) = s_g * max(0, 1 - step * lambda * omega_g / ||s_g||_2)``: groups whose norm is
    below the threshold become exactly zero (the sparse solutions a subgradient step only
    oscillates around).
    """
    out = {}
    for site in SITES:
        s = switches[site]
        omega = hypers["omega"][site].to(dtype=s.dtype, device=s.device)
        threshold = step * float(hypers["lambda"][site]) * omega
        norms = group_norms(s, hypers)
        scale = (1 - threshold / norms.clamp_min(torch.finfo(s.dtype).tiny)).clamp_min(0)
        out[site] = s * to_switches(scale, hypers["cell_type_index"])
    return out


def ard_fixed_point_update(
    posterior: Any, hypers: Mapping[str, Any], hierarchy: Hierarchy | None = None
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """Type-II update of both switch sites, iterated to its fixed point on the Laplace model.

    Per site ``Ht = curvature * curvature_multiplier / lambda_site`` and the posterior mean is
    the mode ``m`` of the quadratic data term. Each round takes one ARD step
    (:func:`~pyronas.inference.ard_update.group_ard_update`) at the current values under the
    current effective variances, maps the own variances to effective ones with ``hierarchy``
    (identity when ``None``) and shrinks ``m`` by the group lasso with the new ``omega``
    (:func:`~pyronas.inference.ard_update.group_lasso_shrink`) for the next round. The first
    round is taken at ``m`` itself, so ``hypers["ard_iterations"] = 1`` is the single step of
    the original BayesNAS update; more rounds (stopping early once no group variance moves by
    more than ``1e-9`` relative) reach the fixed point.

    Parameters
    ----------
    posterior
        ``mean[site]`` and ``curvature[site]`` of the switch shape (``DiagonalLaplace``).
    hypers
        ``gamma`` (the current effective variances), ``lambda``, ``curvature_multiplier``,
        ``ard_iterations`` and the sizes of :func:`base_hypers`.
    hierarchy
        Own -> effective variances, or ``None`` (no hierarchy).

    Returns
    -------
    tuple
        ``(own, effective, omega)`` variances and weights per site, group shapes, float64.
    """
    if "ard_iterations" not in hypers:
        raise ValueError(
            "the hyperparameters have no 'ard_iterations' (saved before it became an option of "
            "the prior, whose default was 2000): set hypers['ard_iterations']"
        )
    rounds = int(hypers["ard_iterations"])
    if rounds < 1:
        raise ValueError(f"ard_iterations must be at least 1, got {rounds}")
    index = hypers["cell_type_index"]
    mode, ht, groups = {}, {}, {}
    for site in SITES:
        mean = posterior.mean[site].detach().to(device="cpu", dtype=HYPER_DTYPE)
        curvature = posterior.curvature[site].detach().to(device="cpu", dtype=HYPER_DTYPE)
        check_switch_shape(site, mean, hypers)
        if curvature.shape != mean.shape:
            raise ValueError(
                f"{site}: curvature shape {tuple(curvature.shape)} != mean shape "
                f"{tuple(mean.shape)}"
            )
        lam = float(hypers["lambda"][site])
        if lam <= 0:
            raise ValueError(f"lambda for {site} must be positive, got {lam}")
        mode[site] = mean
        ht[site] = curvature * float(hypers["curvature_multiplier"]) / lam
        groups[site] = group_index(tuple(hypers["gamma"][site].shape), index)
    effective = {site: hypers["gamma"][site].to(HYPER_DTYPE) for site in SITES}
    omega: dict[str, Tensor] = {}
    own: dict[str, Tensor] = {}
    shrunk = dict(mode)  # the first step is taken at the MAP values themselves
    for _ in range(rounds):
        for site in SITES:
            shape, count = effective[site].shape, effective[site].numel()
            step = group_ard_update(shrunk[site], ht[site], to_switches(effective[site], index),
                                    groups[site], num_groups=count)
            own[site], omega[site] = step.gamma.reshape(shape), step.omega.reshape(shape)
            shrunk[site] = group_lasso_shrink(mode[site], ht[site], step.omega, groups[site],
                                              num_groups=count)
        new = hierarchy(own) if hierarchy is not None else dict(own)
        for site in SITES:  # a pruned switch (effective variance 0) stays at zero
            alive = to_switches(new[site], index) > 0
            shrunk[site] = torch.where(alive, shrunk[site], torch.zeros_like(shrunk[site]))
        moved = max(float(((new[k] - effective[k]).abs() / (1.0 + effective[k].abs())).max())
                    for k in SITES)
        effective = new
        if moved <= 1e-9:
            break
    return own, effective, omega
