"""Building blocks shared by the prior model files.

Not a prior itself (the leading underscore keeps it out of :func:`pyronas.models.list_priors`).
Every switch hyperparameter is stored per group ``(cell_type, edge)`` / ``(cell_type, edge, op)``;
these functions map groups to the switches of a tied ``(cell_type, ...)`` or an untied
``(cell, ...)`` network and back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyronas.inference.ard_update import group_ard_update, group_lasso_shrink
from pyronas.space import SearchSpace

SITES: tuple[str, str] = ("edge_switch", "op_switch")
"""Names of the switch sample sites, in the order ``(edge, op)``."""

HYPER_DTYPE = torch.float64
"""Hyperparameters are a few hundred numbers: keep them in double precision on the CPU."""


def group_shapes(space: SearchSpace) -> dict[str, tuple[int, ...]]:
    """Per-site group shapes ``(cell_type, edge)`` and ``(cell_type, edge, op)``."""
    edge_shape, op_shape = space.switch_shapes()
    return {"edge_switch": edge_shape, "op_switch": op_shape}


def filled(space: SearchSpace, value: float) -> dict[str, Tensor]:
    """One tensor of group shape per site, filled with ``value`` (float64)."""
    return {
        site: torch.full(shape, float(value), dtype=HYPER_DTYPE)
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
    """Entries every prior stores: the space name, its sizes and the tying of the switches."""
    return {
        "space": space.name,
        "num_cell_types": len(space.cell_types),
        "num_edges": space.num_edges,
        "num_ops": space.num_ops,
        "cell_type_index": check_cell_type_index(cell_type_index, len(space.cell_types)),
        "learnable": [],
    }


def to_switches(group_value: Tensor, cell_type_index: Tensor | None) -> Tensor:
    """Broadcast a per-group tensor ``(cell_type, ...)`` to the switches.

    ``cell_type_index=None`` (tied) returns the tensor itself, otherwise ``(cell, ...)`` rows
    ``group_value[cell_type_index]``.
    """
    if cell_type_index is None:
        return group_value
    return group_value[cell_type_index.to(group_value.device)]


def site_gamma(hypers: dict[str, Any], site: str) -> Tensor:
    """Prior variance of every switch of ``site``: the group variances broadcast to the switches.

    Tied switches have the group shape ``(cell_type, ...)`` already; untied switches
    ``(cell, ...)`` take the row of their cell's type. The engine prunes on this.
    """
    return to_switches(hypers["gamma"][site], hypers["cell_type_index"])


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


def check_switch_shape(site: str, value: Tensor, hypers: dict[str, Any]) -> None:
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


def net_cell_type_index(net: Any) -> Tensor | None:
    """``None`` for a net with tied switches, else its ``cell_type_index``."""
    if getattr(net, "tied", True):
        return None
    return torch.as_tensor(net.cell_type_index)


def sample_switches(
    net: Any,
    x: Tensor,
    site_dist: Callable[[str, Tensor | None, torch.dtype, torch.device], Any],
) -> dict[str, Tensor]:
    """Sample both switch sites under the ``cell_type``/``cell`` and ``edge`` plates.

    Parameters
    ----------
    net
        The supernet; ``net.tied`` and ``net.cell_type_index`` choose the plate layout.
    x
        The input batch (only its dtype and device are used).
    site_dist
        ``site_dist(site, cell_type_index, dtype, device)`` returns the prior of one site with
        batch shape of the switches, i.e. ``(lead, edge)`` for ``edge_switch`` and
        ``(lead, edge, op)`` for ``op_switch``, where ``lead`` is the cell type (tied) or the cell
        (untied).

    Returns
    -------
    dict
        ``{"edge_switch": (lead, edge), "op_switch": (lead, edge, op)}``.

    Notes
    -----
    Pyro ties a plate name to one tensor dim, so both sites share the plates
    ``cell_type`` (or ``cell``) at dim -2 and ``edge`` at dim -1; the op switches carry their
    ``op`` dim as an event dim (their prior is independent across ops all the same).
    """
    index = net_cell_type_index(net)
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    edge_prior = site_dist("edge_switch", index, dtype, x.device)
    op_prior = site_dist("op_switch", index, dtype, x.device)
    lead, num_edges = edge_prior.batch_shape
    lead_name = "cell_type" if index is None else "cell"
    with pyro.plate(lead_name, lead, dim=-2), pyro.plate("edge", num_edges, dim=-1):
        edge_switch = pyro.sample("edge_switch", edge_prior)
        op_switch = pyro.sample("op_switch", op_prior.to_event(1))
    return {"edge_switch": edge_switch, "op_switch": op_switch}


def observe(
    net: Any, x: Tensor, y: Tensor | None, switches: dict[str, Tensor], num_data: int
) -> None:
    """The categorical likelihood of a minibatch, scaled to ``num_data`` samples."""
    batch = len(x)
    if num_data < batch:
        raise ValueError(f"num_data={num_data} is smaller than the batch size {batch}")
    logits = net(x, switches["edge_switch"], switches["op_switch"])
    if not bool(torch.isfinite(logits).all()):
        raise FloatingPointError(
            "the supernet produced non-finite logits (the weights or switches diverged)"
        )
    with pyro.plate("data", num_data, subsample_size=batch, dim=-1):
        pyro.sample("obs", dist.Categorical(logits=logits), obs=y)


def gaussian_switch_prior(variance: Tensor) -> dist.TorchDistribution:
    """``N(0, variance)`` per switch; switches with variance 0 (pruned) are masked out.

    A pruned switch is a point mass at 0: it contributes nothing to the log prior (the engine
    keeps it frozen at 0).
    """
    tiny = torch.finfo(variance.dtype).tiny
    scale = variance.clamp_min(tiny).sqrt()
    return dist.Normal(torch.zeros_like(scale), scale).mask(variance > 0)


def group_lasso(switches: dict[str, Tensor], hypers: dict[str, Any]) -> Tensor:
    """Reweighted group lasso ``sum_site lambda_site sum_g omega_g ||s_g||_2``.

    Groups are ``(cell_type, edge[, op])``: tied switches are their own groups, untied switches
    of the cells of one type form the group vector.
    """
    total: Tensor | None = None
    index = hypers["cell_type_index"]
    for site in SITES:
        s = switches[site]
        check_switch_shape(site, s, hypers)
        omega = hypers["omega"][site].to(dtype=s.dtype, device=s.device)
        if index is None:
            norms = s.abs()
        else:
            idx = index.to(s.device)
            norms = torch.stack(
                [
                    torch.linalg.vector_norm(s[idx == t], dim=0)
                    for t in range(hypers["num_cell_types"])
                ]
            )
        term = float(hypers["lambda"][site]) * (omega * norms).sum()
        total = term if total is None else total + term
    assert total is not None
    return total


def group_soft_threshold(
    switches: dict[str, Tensor], hypers: dict[str, Any], step: float
) -> dict[str, Tensor]:
    """Proximal map of ``step * group_lasso``: shrink every group's norm by ``step lambda omega``.

    ``prox(s_g) = s_g * max(0, 1 - step * lambda * omega_g / ||s_g||_2)``: groups whose norm is
    below the threshold become exactly zero (the sparse solutions a subgradient step only
    oscillates around).
    """
    index = hypers["cell_type_index"]
    out = {}
    for site in SITES:
        s = switches[site]
        omega = hypers["omega"][site].to(dtype=s.dtype, device=s.device)
        threshold = step * float(hypers["lambda"][site]) * omega
        if index is None:
            norms = s.abs()
        else:
            idx = index.to(s.device)
            norms = torch.stack(
                [
                    torch.linalg.vector_norm(s[idx == t], dim=0)
                    for t in range(hypers["num_cell_types"])
                ]
            )
        scale = (1 - threshold / norms.clamp_min(torch.finfo(s.dtype).tiny)).clamp_min(0)
        out[site] = s * to_switches(scale, index)
    return out


def ard_fixed_point_update(
    posterior: Any,
    hypers: dict[str, Any],
    hierarchy: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """Type-II update of both switch sites, iterated to its fixed point on the Laplace model.

    Per site ``Ht = curvature * curvature_multiplier / lambda_site`` and the posterior mean is
    the mode ``m`` of the quadratic data term. Each round takes one ARD step
    (:func:`~pyronas.inference.ard_update.group_ard_update`) at the current values under the current
    effective variances, maps the own variances to effective ones with ``hierarchy`` (identity
    when ``None``) and shrinks ``m`` by the group lasso with the new ``omega``
    (:func:`~pyronas.inference.ard_update.group_lasso_shrink`) for the next round. The first
    round is taken at ``m`` itself, so ``hypers["ard_iterations"] = 1`` is the single step of the
    original BayesNAS update; the default, 2000 rounds at most (fewer once no group variance
    moves by more than ``1e-9`` relative), reaches the fixed point.

    Returns
    -------
    tuple
        ``(own, effective, omega)`` variances and weights per site, group shapes, float64.
    """
    rounds = int(hypers.get("ard_iterations", 2000))
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
