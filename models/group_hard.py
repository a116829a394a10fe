r"""Group HARD prior over network weights: ARD on neurons, filters and channels (compression).

The sites are the prunable weight tensors of a network, named after their parameters
(``"fc1.weight"``: ``(out, in)`` for a linear layer, ``(out, in, kh, kw)`` for a convolution).
Every weight ``w_{o,i[,k]}`` of a site is covered by the groups of the site's groupings: its
output unit ``o`` (a row of a linear weight, a filter of a convolution; grouping ``"out"``),
its input unit ``i`` (a column, an input channel; grouping ``"in"``) and, optionally, itself
(grouping ``"weight"``: unstructured ARD, one variance per weight, which prunes single
weights inside the units that stay).

Generative story, for every site ``l`` and its groupings::

    group variances (type-II point estimates, no hyperprior):
        gamma^out_{l,o} >= 0          one per output neuron / filter
        gamma^in_{l,i}  >= 0          one per input neuron / channel
        gamma^w_{l,o,i,k} >= 0        one per weight (grouping "weight", optional)

    effective variance (the precisions of the covering groups add):
        1 / gammaeff_{l,o,i,k} = 1 / gamma^out_{l,o} + 1 / gamma^in_{l,i} [+ 1 / gamma^w_{l,o,i,k}]
                                                                           (0 if any is 0)

    weights:
        w_{l,o,i[,k]} ~ N(0, gammaeff_{l,o,i})

    data (minibatch of B of N samples, log likelihood scaled by N / B):
        y_n ~ Categorical(softmax f(x_n; w, theta))

Linked sites (``links``: pairs ``(a, b)`` where site ``b`` reads the output units of site ``a``,
each unit of ``a`` feeding ``r = in_b / out_a`` consecutive input units of ``b``: one for a
linear or conv layer after another, ``h * w`` for a linear layer after a flattened feature map)
share their units: a unit is off when its output group in ``a`` or all of its input groups in
``b`` are off, i.e. before the effective variances::

    gamma^out_{a,j} <- 0                       if gamma^in_{b,i} = 0 for every i fed by j
    gamma^in_{b,i}  <- 0                       if gamma^out_{a,j(i)} = 0

``theta`` are the network's other parameters (biases, batch norms: trained, no prior); the
network runs with the sampled weights through ``torch.func.functional_call``. A site may use
one grouping only (the classifier's outputs are the classes: ``("in",)``), then its weights
have that group's variance.

Type-II update (:func:`update_hypers`): ``Ht = H * curvature_multiplier / lambda`` from the
diagonal curvature ``H`` of the mean minibatch loss, the group ARD step per grouping under the
effective variance (``alpha = Ht / (1 + gammaeff Ht)``, ``omega_g = sqrt(sum_{c in g}
alpha_c)``, ``gamma_g = ||w_g||_2 / omega_g``) iterated with the group lasso to its fixed point
(:func:`pyronas.inference.grouped_ard.crossed_ard_fixed_point`, at most ``ard_iterations``
rounds; ``prices`` weight the groupings: a grouping's lasso weights are multiplied by its
price and its variances divided by it, a heuristic knob outside the evidence that prices,
say, the input pixels below the hidden units). MAP surrogate (:func:`map_penalty`):
``lambda sum_l sum_k sum_g omega_g ||w_g||_2``, applied by :func:`map_proximal` as one group
soft-threshold per grouping.

Hyperparameter dict (float64 tensors on the CPU):

* ``links``: the linked site pairs.
* ``sites``: the site names in order; ``shapes[site]``: the weight shape;
  ``groupings[site]``: the grouping names (``"out"``, ``"in"``, ``"weight"``).
* ``gamma_group[site][grouping]``: group variances ``(G,)``; ``omega[site][grouping]``: group
  lasso weights ``(G,)`` (``G`` = the weight's number of elements for ``"weight"``, in
  row-major order; its group lasso is a weighted L1 penalty).
* ``gamma[site]``: the effective variance of every weight (weight shape): what :func:`model`
  samples from and what the engine prunes on.
* ``prices[site][grouping]``: positive floats (1: unweighted).
* ``lambda``, ``curvature_multiplier``: floats; ``ard_iterations``: int; ``learnable == []``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.func import functional_call

from pyronas.inference.grouped_ard import (
    Grouping,
    crossed_ard_fixed_point,
    effective_variance,
)
from pyronas.models.common import HYPER_DTYPE, gaussian, positive

__all__ = [
    "GROUPINGS",
    "init_hypers",
    "model",
    "site_gamma",
    "effective_gamma",
    "link_units",
    "update_hypers",
    "map_penalty",
    "map_proximal",
    "prior_precision",
    "check_weights",
    "weight_forward",
    "alive_units",
]

GROUPINGS: dict[str, int | None] = {"out": 0, "in": 1, "weight": None}
"""Grouping name -> the weight dimension it groups by (output units, input units); ``None``
for ``"weight"``, where every weight is its own group (unstructured ARD)."""


def group_count(shape: Sequence[int], grouping: str) -> int:
    """Number of groups of ``grouping`` over a weight of ``shape``."""
    dim = GROUPINGS[grouping]
    return int(torch.Size(shape).numel()) if dim is None else int(shape[dim])


def grouping_index(shape: Sequence[int], grouping: str) -> Grouping:
    """The :class:`~pyronas.inference.grouped_ard.Grouping` of ``grouping`` over ``shape``."""
    dim = GROUPINGS[grouping]
    if dim is None:
        size = group_count(shape, grouping)
        return Grouping(torch.arange(size).reshape(tuple(shape)), size)
    return Grouping.along(shape, dim)


def init_hypers(
    weights: Mapping[str, Sequence[int]],
    *,
    lambda_weight: float = 1e-4,
    curvature_multiplier: float = 1.0,
    ard_iterations: int = 2000,
    groupings: Mapping[str, Sequence[str]] | None = None,
    links: Sequence[tuple[str, str]] = (),
    prices: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Initial hyperparameters: every group variance equal to 1, ``omega`` to the price.

    Parameters
    ----------
    weights
        Site name -> weight shape, in forward order (``{"fc1.weight": (300, 784), ...}``);
        every shape has at least two dims ``(out, in, ...)``.
    lambda_weight
        Group-lasso strength (the data precision is divided by it).
    curvature_multiplier
        Factor on the curvature of the mean loss.
    ard_iterations
        Most rounds of the fixed-point update (1: a single ARD step).
    groupings
        Site -> grouping names (default ``("out", "in")`` for every site).
    links
        Pairs ``(a, b)``: site ``b`` reads the output units of site ``a`` (see the module
        docstring); both must have the grouping the link joins (``"out"`` of ``a``, ``"in"``
        of ``b``) and ``in_b`` must be a multiple of ``out_a``.
    prices
        ``{site: {grouping: price}}``, positive, for some groupings (the rest: 1): the factor
        on that grouping's group-lasso weights in the type-II update (above 1: pruned harder).

    Raises
    ------
    ValueError
        An empty spec, a shape with fewer than two dims, an unknown grouping or site, a link
        that does not fit the shapes, a price that is not positive or names no grouping.
    """
    if not weights:
        raise ValueError("init_hypers needs at least one weight site")
    if int(ard_iterations) != ard_iterations or ard_iterations < 1:
        raise ValueError(f"ard_iterations must be an integer of at least 1, got {ard_iterations!r}")
    shapes = {site: tuple(int(n) for n in shape) for site, shape in weights.items()}
    chosen = {site: ("out", "in") for site in shapes}
    for site, names in (groupings or {}).items():
        if site not in shapes:
            raise ValueError(f"groupings name the site {site!r}, not one of {list(shapes)}")
        chosen[site] = tuple(names)
    for site, shape in shapes.items():
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"site {site!r} has shape {shape}: expected (out, in[, kh, kw])")
        unknown = [g for g in chosen[site] if g not in GROUPINGS]
        if unknown or not chosen[site] or len(set(chosen[site])) != len(chosen[site]):
            raise ValueError(
                f"site {site!r}: groupings {chosen[site]!r}; expected distinct names from "
                f"{tuple(GROUPINGS)}"
            )
    for a, b in links:
        if a not in shapes or b not in shapes:
            raise ValueError(f"link ({a!r}, {b!r}) names a site that is not one of {list(shapes)}")
        if "out" not in chosen[a] or "in" not in chosen[b]:
            raise ValueError(f"link ({a!r}, {b!r}) needs the 'out' grouping of {a!r} and the "
                             f"'in' grouping of {b!r}")
        if shapes[b][1] % shapes[a][0]:
            raise ValueError(
                f"link ({a!r}, {b!r}): {b!r} has {shapes[b][1]} input units, not a multiple of "
                f"the {shapes[a][0]} output units of {a!r}"
            )
    chosen_prices = {site: {g: 1.0 for g in names} for site, names in chosen.items()}
    for site, given in (prices or {}).items():
        for g, price in given.items():
            if g not in chosen_prices.get(site, {}):
                raise ValueError(f"a price for {site!r} grouping {g!r}, which the spec does not "
                                 f"have (groupings: {chosen})")
            if not float(price) > 0:
                raise ValueError(f"the price of {site!r} grouping {g!r} must be positive, got "
                                 f"{price!r}")
            chosen_prices[site][g] = float(price)
    ones = {
        site: {g: torch.ones(group_count(shape, g), dtype=HYPER_DTYPE) for g in chosen[site]}
        for site, shape in shapes.items()
    }
    hypers: dict[str, Any] = {
        "sites": tuple(shapes),
        "shapes": shapes,
        "groupings": chosen,
        "links": tuple((str(a), str(b)) for a, b in links),
        "gamma_group": ones,
        "omega": {site: {g: v * chosen_prices[site][g] for g, v in groups.items()}
                  for site, groups in ones.items()},
        "prices": chosen_prices,
        "lambda": positive("lambda_weight", lambda_weight),
        "curvature_multiplier": positive("curvature_multiplier", curvature_multiplier),
        "ard_iterations": int(ard_iterations),
        "learnable": [],
    }
    return {**hypers, "gamma": effective_gamma(hypers)}


def _groupings(hypers: Mapping[str, Any], site: str) -> list[Grouping]:
    shape = hypers["shapes"][site]
    return [grouping_index(shape, g) for g in hypers["groupings"][site]]


def link_units(gamma_group: Mapping[str, Mapping[str, Tensor]], hypers: Mapping[str, Any]
               ) -> dict[str, dict[str, Tensor]]:
    """Group variances with the units of linked sites switched off together.

    Parameters
    ----------
    gamma_group
        ``{site: {grouping: (G,)}}`` own group variances.
    hypers
        ``links`` and ``shapes``.

    Returns
    -------
    dict
        The same structure: a unit's output group in ``a`` is 0 when every input group it
        feeds in ``b`` is 0, and those input groups are 0 when the output group is.
    """
    out = {site: dict(groups) for site, groups in gamma_group.items()}
    for a, b in hypers.get("links", ()):
        units = out[a]["out"].shape[0]
        fed = out[b]["in"].reshape(units, -1)  # (unit of a, input units of b it feeds)
        alive = (out[a]["out"] > 0) & (fed > 0).any(1)
        out[a]["out"] = torch.where(alive, out[a]["out"], 0.0)
        out[b]["in"] = torch.where(alive[:, None], fed, 0.0).reshape(-1)
    return out


def effective_gamma(hypers: Mapping[str, Any]) -> dict[str, Tensor]:
    """The effective variance of every weight, ``{site: weight shape}`` (precisions add, linked
    units switched off together)."""
    linked = link_units(hypers["gamma_group"], hypers)
    out = {}
    for site in hypers["sites"]:
        groups = linked[site]
        out[site] = effective_variance([groups[g] for g in hypers["groupings"][site]],
                                       _groupings(hypers, site))
    return out


def site_gamma(hypers: Mapping[str, Any], site: str) -> Tensor:
    """Prior variance of every weight of ``site`` (what the engine prunes on)."""
    return hypers["gamma"][site]


def prior_precision(weights: Mapping[str, Tensor], hypers: Mapping[str, Any]
                    ) -> dict[str, Tensor]:
    """Minus the diagonal second derivative of the log prior: ``1 / gammaeff`` per weight (0 for
    pruned weights, whose prior is masked out), in each weight's dtype and device.

    The closed form of what :func:`pyronas.inference.evidence.joint_terms` otherwise takes by
    one backward pass per weight.
    """
    out = {}
    for site, w in weights.items():
        gamma = hypers["gamma"][site].to(dtype=w.dtype, device=w.device)
        out[site] = torch.where(gamma > 0, 1.0 / torch.where(gamma > 0, gamma, 1.0), 0.0)
    return out


def check_weights(net: nn.Module, hypers: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` unless every site is a parameter of ``net`` of the spec's shape."""
    params = dict(net.named_parameters())
    for site in hypers["sites"]:
        if site not in params:
            names = [n for n in params if n.endswith("weight")]
            raise ValueError(f"the network has no parameter {site!r}; its weights: {names}")
        shape = tuple(params[site].shape)
        if shape != hypers["shapes"][site]:
            raise ValueError(
                f"{site}: the network's weight has shape {shape}, the group spec "
                f"{hypers['shapes'][site]}"
            )


def weight_forward(net: nn.Module) -> Any:
    """``(weights, x) -> net(x)`` with the named weights in place of the net's own."""

    def forward(weights: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(net, weights, (x,))

    return forward


def model(net: nn.Module, x: Tensor, y: Tensor | None, hypers: dict[str, Any],
          num_data: int) -> None:
    """Pyro model: group-HARD prior on the weight sites, categorical likelihood on the batch.

    Parameters
    ----------
    net
        The network; its parameters named in ``hypers["sites"]`` are replaced by the samples.
    x, y
        Inputs ``(batch, ...)`` and labels ``(batch,)`` (``None``: sample the labels).
    hypers
        From :func:`init_hypers` / :func:`update_hypers`.
    num_data
        Size of the data set the batch is drawn from.
    """
    batch = len(x)
    if num_data < batch:
        raise ValueError(f"num_data={num_data} is smaller than the batch size {batch}")
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    weights = {}
    for site in hypers["sites"]:
        variance = hypers["gamma"][site].to(dtype=dtype, device=x.device)  # (out, in[, kh, kw])
        out_units, in_units = variance.shape[:2]
        with pyro.plate(f"{site}.out", out_units, dim=-2), pyro.plate(f"{site}.in", in_units,
                                                                      dim=-1):
            prior = gaussian(variance).to_event(variance.dim() - 2)  # kernel dims: event dims
            weights[site] = pyro.sample(site, prior)
    logits = weight_forward(net)(weights, x)
    if not bool(torch.isfinite(logits).all()):
        raise FloatingPointError("the network produced non-finite logits (the weights diverged)")
    with pyro.plate("data", num_data, subsample_size=batch, dim=-1):
        pyro.sample("obs", dist.Categorical(logits=logits), obs=y)


def update_hypers(posterior: Any, hypers: dict[str, Any]) -> dict[str, Any]:
    """Closed-form type-II update from a diagonal Laplace posterior (``hypers`` unchanged).

    Parameters
    ----------
    posterior
        ``mean[site]`` and ``curvature[site]`` of the weight shape (``DiagonalLaplace``), the
        curvature that of the mean minibatch loss.
    hypers
        Current hyperparameters.

    Returns
    -------
    dict
        New ``gamma_group``, ``omega`` and ``gamma``.
    """
    scale = float(hypers["curvature_multiplier"]) / float(hypers["lambda"])
    gamma_group, omega = {}, {}
    for site in hypers["sites"]:
        mean = posterior.mean[site].detach().to(device="cpu", dtype=HYPER_DTYPE)
        curvature = posterior.curvature[site].detach().to(device="cpu", dtype=HYPER_DTYPE)
        prices = hypers.get("prices", {}).get(site, {})
        if mean.shape != hypers["shapes"][site] or curvature.shape != mean.shape:
            raise ValueError(
                f"{site}: posterior mean {tuple(mean.shape)} / curvature "
                f"{tuple(curvature.shape)}, expected {hypers['shapes'][site]}"
            )
        fit = crossed_ard_fixed_point(
            mean, curvature * scale, hypers["gamma"][site].to(HYPER_DTYPE),
            _groupings(hypers, site), max_iter=int(hypers["ard_iterations"]),
            prices=[prices.get(g, 1.0) for g in hypers["groupings"][site]],
        )
        names = hypers["groupings"][site]
        gamma_group[site] = dict(zip(names, fit.gamma, strict=True))
        omega[site] = dict(zip(names, fit.omega, strict=True))
    new = {**hypers, "gamma_group": link_units(gamma_group, hypers), "omega": omega}
    return {**new, "gamma": effective_gamma(new)}


def _unit_norms(weight: Tensor, grouping: str) -> Tensor:
    """``||w_g||_2`` of every group of ``grouping``: ``(G,)`` for rows / columns, ``|w|`` of
    the weight's shape for ``"weight"``."""
    dim = GROUPINGS[grouping]
    if dim is None:
        return weight.abs()
    others = [d for d in range(weight.dim()) if d != dim]
    return torch.linalg.vector_norm(weight, dim=others)


def _unit_view(values: Tensor, grouping: str, shape: Sequence[int]) -> Tensor:
    """Per-group ``values`` ``(G,)`` shaped to broadcast against a weight of ``shape``."""
    dim = GROUPINGS[grouping]
    if dim is None:
        return values.reshape(tuple(shape))
    view = [1] * len(shape)
    view[dim] = -1
    return values.reshape(view)


def map_penalty(weights: dict[str, Tensor], hypers: dict[str, Any]) -> Tensor:
    """Reweighted group lasso ``lambda sum_site sum_grouping sum_g omega_g ||w_g||_2``."""
    total = None
    for site in hypers["sites"]:
        w = weights[site]
        for g in hypers["groupings"][site]:
            omega = hypers["omega"][site][g].to(dtype=w.dtype, device=w.device)
            norms = _unit_norms(w, g)  # (G,), or the weight's shape for "weight"
            term = (omega.reshape(norms.shape) * norms).sum()
            total = term if total is None else total + term
    assert total is not None
    return float(hypers["lambda"]) * total


def map_proximal(weights: dict[str, Tensor], hypers: dict[str, Any], step: float
                 ) -> dict[str, Tensor]:
    """Proximal step of ``step * map_penalty``: one group soft-threshold per grouping in turn
    (output units, then input units), groups below ``step * lambda * omega`` exactly zero."""
    out = dict(weights)
    for site in hypers["sites"]:
        w = weights[site]
        for g in hypers["groupings"][site]:
            omega = hypers["omega"][site][g].to(dtype=w.dtype, device=w.device)
            norms = _unit_norms(w, g).clamp_min(torch.finfo(w.dtype).tiny)  # (G,) or w's shape
            threshold = (step * float(hypers["lambda"]) * omega).reshape(norms.shape)
            w = w * _unit_view((1 - threshold / norms).clamp_min(0), g, w.shape)
        out[site] = w
    return out


def alive_units(hypers: Mapping[str, Any], site: str) -> dict[str, Tensor]:
    """``{grouping: bool (G,)}``: the groups of ``site`` whose variance is positive.

    With the ``"weight"`` grouping (``(numel,)`` flags), a row or column is also dead when every
    one of its weights is.
    """
    alive = {g: v > 0 for g, v in hypers["gamma_group"][site].items()}
    if "weight" in alive:
        live = (hypers["gamma"][site] > 0).to(HYPER_DTYPE)
        for g in ("out", "in"):
            if g in alive:
                alive[g] = alive[g] & (_unit_norms(live, g) > 0)
    return alive
