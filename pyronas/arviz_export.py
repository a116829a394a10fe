"""ArviZ export of a search posterior (``posterior.pt``, see ``docs/contracts.md``).

:func:`to_arviz` turns the diagonal Laplace posterior of the switches into an ArviZ object with
named dims, so that ``az.summary``, ``az.plot_forest``, ``az.loo`` and ``az.compare`` work on it:

``posterior``
    Draws from the Laplace posterior ``N(mean, var)`` of every switch; pruned switches are exactly
    0. ``edge_switch`` has dims ``(chain, draw, cell_type, edge)`` and ``op_switch``
    ``(chain, draw, cell_type, edge, op)`` (``cell`` instead of ``cell_type`` for untied
    switches). Coords are the space's names (:meth:`pyronas.space.SearchSpace.coords`): cell
    types, ``e0 .. e{E-1}`` (the edge names of each cell type are in the ``edge_name`` variable
    of ``constant_data``) and the op names.
``prior``
    Draws of the same variables from the prior at the final hyperparameters: either given by the
    caller (:func:`sample_prior` runs the model file) or, by default, ``N(0, gamma)`` with the
    effective prior variances ``gamma`` (exact for the Gaussian priors hard, ard and horseshoe at
    fixed hyperparameters; the variance-matched Gaussian for the others). The root/group attribute
    ``prior_source`` says which.
``log_likelihood`` (optional)
    ``obs`` with dims ``(chain, draw, obs_id)``: ``log p(y_n | x_n, s)`` of held-out points under
    posterior draws (:func:`heldout_log_likelihood`). ``az.loo`` / ``az.compare`` then rank runs
    (priors, lambdas) by their estimated predictive density on that held-out set.
``constant_data``
    Everything without chain/draw dims (ArviZ keeps it as is):

    * ``<site>_laplace_mean``, ``<site>_laplace_sd``: the Laplace mean and sd, switch shape;
    * ``<site>_curvature``: diagonal curvature of the mean NLL, switch shape;
    * ``<site>_gamma``, ``<site>_omega``: hyperparameters, ``(cell_type, edge[, op])``;
    * ``<site>_alive``: 1 where the switch survived pruning, 0 where pruned;
    * ``edge_name``: ``(cell_type, edge)``, e.g. ``"in1->n0"``;
    * ``log_evidence``: ``(iteration,)``, the Laplace log evidence of every type-II iteration;
    * ``<site>_gamma_history``: ``(iteration, cell_type, edge[, op])``;
    * ``<site>_mean_history``: ``(iteration, cell_type|cell, edge[, op])``;
    * ``cell_type_index``: ``(cell,)`` for untied switches.

The ``chain`` and ``draw`` dims hold *independent* draws from the Laplace Gaussian, not MCMC
chains: ``r_hat`` and ESS computed on them only measure Monte Carlo noise (r_hat near 1 and ESS
near the number of draws up to chance), not convergence. :func:`summarize` gives the summary
without them; every group carries the attributes ``draws = "laplace_iid"`` and ``draws_note``
saying so.

ArviZ 0.x returns ``InferenceData``, ArviZ 1.x an ``xarray.DataTree``; both are built with
``az.from_dict`` and the only difference is handled in :func:`arviz_from_dict`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import torch
from torch import Tensor

from pyronas.search_posterior import FORMAT, SearchPosterior
from pyronas.space import SITES, SearchSpace, get_space

log = logging.getLogger(__name__)

LAPLACE_DRAWS = "laplace_iid"
"""Value of the ``draws`` attribute of an export: independent draws from the Laplace Gaussian."""

LAPLACE_DRAWS_NOTE = (
    "chain and draw hold independent draws from the Laplace posterior, not MCMC chains: r_hat "
    "and ESS say nothing about convergence here (pyronas.arviz_export.summarize leaves them out)"
)
"""The ``draws_note`` attribute of an export."""


# --------------------------------------------------------------------------------------------
# ArviZ version adapter


def arviz_major() -> int:
    """Major version of the installed ArviZ (0: ``InferenceData``, 1+: ``DataTree``)."""
    return int(str(az.__version__).split(".")[0])


def arviz_from_dict(
    groups: Mapping[str, Mapping[str, np.ndarray]],
    coords: Mapping[str, Any],
    dims: Mapping[str, list[str]],
    attrs: Mapping[str, Any],
) -> Any:
    """``az.from_dict`` for both API generations.

    0.x takes one keyword per group (``attrs`` land on the object, so they are copied onto every
    group); 1.x takes a dict of groups and ``attrs`` per group, ``"/"`` being the root. Either
    way every group carries ``attrs``.
    """
    groups = {k: dict(v) for k, v in groups.items() if v}
    if arviz_major() >= 1:
        group_attrs = {name: dict(attrs) for name in groups}
        group_attrs["/"] = dict(attrs)
        return az.from_dict(groups, coords=dict(coords), dims=dict(dims), attrs=group_attrs)
    idata = az.from_dict(**groups, coords=dict(coords), dims=dict(dims), attrs=dict(attrs))
    for name in idata.groups():
        getattr(idata, name).attrs.update(attrs)
    return idata


def group_names(obj: Any) -> list[str]:
    """Names of the groups of an ``InferenceData`` or a ``DataTree``."""
    if hasattr(obj, "groups") and callable(obj.groups):
        return [g.strip("/") for g in obj.groups()]
    return [str(name) for name in obj.children]


def get_group(obj: Any, name: str) -> Any:
    """One group as an ``xarray.Dataset`` (works for ``InferenceData`` and ``DataTree``)."""
    group = obj[name] if arviz_major() >= 1 else getattr(obj, name)
    return group.to_dataset() if hasattr(group, "to_dataset") else group


def save_arviz(obj: Any, path: str | Path) -> Path:
    """Write an ArviZ object to NetCDF (h5netcdf engine); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj.to_netcdf(str(path), engine="h5netcdf")
    log.info("wrote %s", path)
    return path


def load_arviz(path: str | Path) -> Any:
    """Read a NetCDF file written by :func:`save_arviz` (fully loaded, file closed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ArviZ NetCDF file at {path}")
    if arviz_major() >= 1:
        import xarray as xr

        with xr.open_datatree(str(path), engine="h5netcdf") as tree:
            return tree.load().copy()
    return az.from_netcdf(str(path), engine="h5netcdf")


# --------------------------------------------------------------------------------------------
# posterior.pt helpers


def check_posterior(posterior: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming what is missing or inconsistent in a posterior dict."""
    if not isinstance(posterior, SearchPosterior):
        SearchPosterior.from_dict(posterior)


def _np(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.to(torch.float64)
        return x.numpy()
    return np.asarray(x)


def _alive(posterior: Mapping[str, Any], site: str) -> Tensor:
    mean = posterior["mean"][site]
    alive = posterior.get("alive", {}).get(site)
    if alive is None:
        return torch.ones(mean.shape, dtype=torch.bool)
    return torch.as_tensor(alive).to(torch.bool).cpu()


def is_tied(posterior: Mapping[str, Any]) -> bool:
    """Whether the switches are per cell type (``True``) or per cell."""
    return bool(posterior.get("tied", True))


def posterior_draws(
    posterior: Mapping[str, Any], num_chains: int = 2, num_draws: int = 250, seed: int = 0
) -> dict[str, Tensor]:
    """Draws from the Laplace posterior of every switch site.

    With a ``precision_tril`` (a search with ``--laplace full | block``) the draws come from the
    joint Gaussian ``N(mean, (L L^T)^-1)`` over all switches, so they carry its correlations;
    otherwise from the diagonal Gaussian ``N(mean, var)``.

    Parameters
    ----------
    posterior
        The ``posterior.pt`` dict.
    num_chains, num_draws
        Independent draws are arranged as ``(chain, draw)`` for ArviZ.
    seed
        Seed of a private ``torch.Generator``: the same seed gives the same draws (used by
        :func:`to_arviz` and :func:`heldout_log_likelihood` alike).

    Returns
    -------
    dict
        ``{site: (chain, draw, *switch_shape)}`` float64 on the CPU; pruned switches are 0.
    """
    if num_chains < 1 or num_draws < 1:
        raise ValueError(f"need num_chains >= 1 and num_draws >= 1, got {num_chains}, {num_draws}")
    gen = torch.Generator().manual_seed(int(seed))
    tril = posterior.get("precision_tril")
    if tril is not None:
        return _joint_draws(posterior, tril, num_chains, num_draws, gen)
    out = {}
    for site in SITES:
        mean = posterior["mean"][site].detach().cpu().to(torch.float64)
        sd = posterior["var"][site].detach().cpu().to(torch.float64).clamp_min(0).sqrt()
        eps = torch.randn((num_chains, num_draws, *mean.shape), generator=gen, dtype=torch.float64)
        draws = mean + sd * eps
        out[site] = torch.where(_alive(posterior, site), draws, torch.zeros_like(draws))
    return out


def _joint_draws(posterior: Mapping[str, Any], tril: Tensor, num_chains: int, num_draws: int,
                 gen: torch.Generator) -> dict[str, Tensor]:
    """``mean + L^-T z`` with ``z ~ N(0, I)``: draws of covariance ``(L L^T)^-1``."""
    tril = torch.as_tensor(tril).detach().cpu().to(torch.float64)
    means = [posterior["mean"][site].detach().cpu().to(torch.float64) for site in SITES]
    z = torch.randn((num_chains * num_draws, tril.shape[0]), generator=gen, dtype=torch.float64)
    offsets = torch.linalg.solve_triangular(tril.T, z.T, upper=True).T  # (draws, D)
    out, start = {}, 0
    for site, mean in zip(SITES, means, strict=True):
        n = mean.numel()
        draws = mean + offsets[:, start:start + n].reshape(num_chains, num_draws, *mean.shape)
        start += n
        out[site] = torch.where(_alive(posterior, site), draws, torch.zeros_like(draws))
    return out


def gaussian_prior_draws(
    posterior: Mapping[str, Any], num_chains: int = 2, num_draws: int = 250, seed: int = 0
) -> dict[str, Tensor]:
    """Draws from ``N(0, gamma)`` at the final effective prior variances (0 where pruned).

    Returns ``{site: (chain, draw, *switch_shape)}``; for untied switches the per-type ``gamma``
    is broadcast to the cells with ``cell_type_index``.
    """
    gen = torch.Generator().manual_seed(int(seed) + 1)
    index = None if is_tied(posterior) else torch.as_tensor(posterior["cell_type_index"]).long()
    out = {}
    for site in SITES:
        gamma = posterior["gamma"][site].detach().cpu().to(torch.float64).clamp_min(0)
        if index is not None:
            gamma = gamma[index]
        eps = torch.randn((num_chains, num_draws, *gamma.shape), generator=gen, dtype=torch.float64)
        out[site] = torch.where(_alive(posterior, site), gamma.sqrt() * eps, torch.zeros_like(eps))
    return out


class _PriorOnlyNet(torch.nn.Module):
    """Stand-in network for tracing a model file's prior: returns constant logits."""

    def __init__(self, cell_type_index: Tensor | None) -> None:
        super().__init__()
        self.tied = cell_type_index is None
        if cell_type_index is not None:
            self.cell_type_index = torch.as_tensor(cell_type_index).long()

    def forward(self, x: Tensor, edge_switch: Tensor, op_switch: Tensor) -> Tensor:
        return torch.zeros(len(x), 2, dtype=x.dtype)


def sample_prior(
    prior: Any,
    hypers: Mapping[str, Any],
    num_chains: int = 2,
    num_draws: int = 250,
    seed: int = 0,
    cell_type_index: Tensor | None = None,
) -> dict[str, Tensor]:
    """Draws of the switch sites from a model file's prior at given hyperparameters.

    The model is traced with a stand-in network (constant logits), so only the switch sites
    matter; this is exact for any prior the model file defines.

    Parameters
    ----------
    prior
        A prior module (``pyronas.models.load_prior(name)``) or its name.
    hypers
        Its hyperparameters (e.g. the final ones of a search).
    cell_type_index
        ``None`` for tied switches, else ``(cell,)``.

    Returns
    -------
    dict
        ``{site: (chain, draw, *switch_shape)}`` float64.
    """
    import pyro
    from pyro import poutine

    if isinstance(prior, str):
        from pyronas.models import load_prior

        prior = load_prior(prior)
    net = _PriorOnlyNet(cell_type_index)
    x = torch.zeros(1, dtype=torch.float64)
    pyro.set_rng_seed(int(seed))
    samples: dict[str, list[Tensor]] = {site: [] for site in SITES}
    for _ in range(num_chains * num_draws):
        with torch.no_grad():
            trace = poutine.trace(prior.model).get_trace(net, x, None, dict(hypers), 1)
        for site in SITES:
            samples[site].append(trace.nodes[site]["value"].detach().to(torch.float64))
    return {
        site: torch.stack(values).reshape(num_chains, num_draws, *values[0].shape)
        for site, values in samples.items()
    }


@torch.no_grad()
def heldout_log_likelihood(
    net: torch.nn.Module,
    posterior: Mapping[str, Any],
    loader: Iterable[tuple[Tensor, Tensor]],
    num_chains: int = 2,
    num_draws: int = 250,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Pointwise ``log p(y_n | x_n, s)`` of held-out data under posterior switch draws.

    The draws are those of :func:`posterior_draws` with the same ``seed``, so the result lines
    up with the ``posterior`` group of :func:`to_arviz`. The network runs in eval mode (restored
    afterwards) without gradients. Cost: ``num_chains * num_draws`` passes over ``loader``.

    Returns
    -------
    ndarray
        ``(chain, draw, obs)`` float64, ``obs`` in loader order.
    """
    draws = posterior_draws(posterior, num_chains, num_draws, seed)
    if device is None:
        device = next(net.parameters()).device
    dtype = next(net.parameters()).dtype
    batches = [(x.to(device), y.to(device)) for x, y in loader]
    if not batches:
        raise ValueError("the held-out loader yielded no batches")
    training = net.training
    net.eval()
    try:
        out = np.empty((num_chains, num_draws, sum(len(y) for _, y in batches)))
        for c in range(num_chains):
            for d in range(num_draws):
                edge = draws["edge_switch"][c, d].to(device=device, dtype=dtype)
                op = draws["op_switch"][c, d].to(device=device, dtype=dtype)
                parts = [
                    torch.distributions.Categorical(logits=net(x, edge, op)).log_prob(y)
                    for x, y in batches
                ]
                out[c, d] = torch.cat(parts).double().cpu().numpy()
    finally:
        net.train(training)
    return out


# --------------------------------------------------------------------------------------------
# the export


def _dims(site: str, lead: str) -> list[str]:
    return [lead, "edge"] if site == "edge_switch" else [lead, "edge", "op"]


def to_arviz(
    posterior: Mapping[str, Any],
    space: SearchSpace | str | None = None,
    num_chains: int = 2,
    num_draws: int = 250,
    seed: int = 0,
    log_likelihood: np.ndarray | Tensor | None = None,
    prior_draws: Mapping[str, Tensor | np.ndarray] | None = None,
) -> Any:
    """ArviZ object of a search posterior (groups described in the module docstring).

    Parameters
    ----------
    posterior
        The ``posterior.pt`` dict (format ``pyronas-posterior/1``).
    space
        The search space or its name; default ``posterior["space"]``.
    num_chains, num_draws, seed
        Layout and seed of the posterior draws (:func:`posterior_draws`).
    log_likelihood
        ``(chain, draw, obs)`` pointwise held-out log likelihood (:func:`heldout_log_likelihood`
        with the same chains, draws and seed); omitted when ``None``.
    prior_draws
        ``{site: (chain, draw, *switch_shape)}`` prior draws (:func:`sample_prior`); default
        ``N(0, gamma)`` (:func:`gaussian_prior_draws`).

    Returns
    -------
    InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x)
    """
    check_posterior(posterior)
    if space is None:
        space = posterior["space"]
    if isinstance(space, str):
        space = get_space(space)
    if posterior["space"] != space.name:
        raise ValueError(f"posterior is for space {posterior['space']!r}, not {space.name!r}")
    tied = is_tied(posterior)
    lead = "cell_type" if tied else "cell"
    edge_shape, op_shape = space.switch_shapes(
        None if tied else len(posterior["cell_type_index"])
    )
    for site, shape in zip(SITES, (edge_shape, op_shape), strict=True):
        got = tuple(posterior["mean"][site].shape)
        if got != shape:
            raise ValueError(f"posterior mean of {site} has shape {got}, expected {shape}")

    coords: dict[str, Any] = dict(space.coords())
    dims: dict[str, list[str]] = {site: _dims(site, lead) for site in SITES}
    if not tied:
        coords["cell"] = list(range(op_shape[0]))

    draws = posterior_draws(posterior, num_chains, num_draws, seed)
    groups: dict[str, dict[str, np.ndarray]] = {
        "posterior": {site: _np(v) for site, v in draws.items()}
    }
    if prior_draws is None:
        prior_draws = gaussian_prior_draws(posterior, num_chains, num_draws, seed)
        prior_source = "gaussian_gamma"
    else:
        prior_source = "model_file"
    groups["prior"] = {}
    for site in SITES:
        value = _np(prior_draws[site])
        expected = (num_chains, num_draws, *tuple(posterior["mean"][site].shape))
        if value.shape != expected:
            raise ValueError(f"prior draws of {site} have shape {value.shape}, expected {expected}")
        groups["prior"][site] = value

    if log_likelihood is not None:
        ll = _np(log_likelihood)
        if ll.ndim != 3 or ll.shape[:2] != (num_chains, num_draws):
            raise ValueError(
                f"log_likelihood must have shape (chain={num_chains}, draw={num_draws}, obs), "
                f"got {ll.shape}"
            )
        groups["log_likelihood"] = {"obs": ll}
        dims["obs"] = ["obs_id"]

    groups["constant_data"] = _constant_data(posterior, space, lead, coords, dims)
    attrs = {
        "pyronas_format": FORMAT,
        "space": space.name,
        "prior_model": str(posterior.get("prior", "")),
        "tied": int(tied),
        "num_data": int(posterior.get("num_data", 0)),
        "prior_source": prior_source,
        "posterior_seed": int(seed),
        "draws": LAPLACE_DRAWS,
        "draws_note": LAPLACE_DRAWS_NOTE,
    }
    return arviz_from_dict(groups, coords, dims, attrs)


def is_laplace_export(idata: Any) -> bool:
    """Whether an ArviZ object's posterior holds independent Laplace draws (an export of
    :func:`to_arviz`, also one written before the ``draws`` attribute existed)."""
    attrs = get_group(idata, "posterior").attrs
    return attrs.get("draws") == LAPLACE_DRAWS or "pyronas_format" in attrs


def summarize(idata: Any, var_names: list[str] | None = None, **kwargs: Any) -> Any:
    """``az.summary`` that leaves out MCMC diagnostics where they mean nothing.

    For an export of :func:`to_arviz` (independent Laplace draws) the summary has the
    statistics only (mean, sd and the HDI bounds; ``kind="stats"``) and ``attrs["note"]`` says
    why; anything else (e.g. NUTS chains) gets the full ``az.summary``.

    Parameters
    ----------
    idata
        ``InferenceData`` or ``DataTree``.
    var_names
        Variables to summarise (default: all of the posterior).
    **kwargs
        Passed to ``az.summary``; ``kind`` other than ``"stats"`` is refused for Laplace draws.

    Returns
    -------
    pandas.DataFrame
        One row per scalar of the variables.
    """
    if not is_laplace_export(idata):
        return az.summary(idata, var_names=var_names, **kwargs)
    kind = kwargs.pop("kind", "stats")
    if kind != "stats":
        raise ValueError(f"kind={kind!r}: {LAPLACE_DRAWS_NOTE}")
    frame = az.summary(idata, var_names=var_names, kind="stats", **kwargs)
    frame.attrs["note"] = LAPLACE_DRAWS_NOTE
    return frame


def _constant_data(
    posterior: Mapping[str, Any],
    space: SearchSpace,
    lead: str,
    coords: dict[str, Any],
    dims: dict[str, list[str]],
) -> dict[str, np.ndarray]:
    """The ``constant_data`` variables; fills in their ``dims`` and the ``iteration`` coord."""
    data: dict[str, np.ndarray] = {}
    for site in SITES:
        site_dims = _dims(site, lead)
        type_dims = _dims(site, "cell_type")
        data[f"{site}_laplace_mean"] = _np(posterior["mean"][site])
        data[f"{site}_laplace_sd"] = np.sqrt(np.clip(_np(posterior["var"][site]), 0, None))
        data[f"{site}_alive"] = _alive(posterior, site).to(torch.int8).numpy()
        dims.update({f"{site}_{k}": site_dims for k in ("laplace_mean", "laplace_sd", "alive")})
        if site in posterior.get("curvature", {}):
            data[f"{site}_curvature"] = _np(posterior["curvature"][site])
            dims[f"{site}_curvature"] = site_dims
        for key in ("gamma", "omega"):
            if site in (posterior.get(key) or {}):
                data[f"{site}_{key}"] = _np(posterior[key][site])
                dims[f"{site}_{key}"] = type_dims
    data["edge_name"] = np.array([space.edge_names(t) for t in space.cell_types], dtype=str)
    dims["edge_name"] = ["cell_type", "edge"]
    if lead == "cell":
        data["cell_type_index"] = _np(posterior["cell_type_index"]).astype(np.int64)
        dims["cell_type_index"] = ["cell"]

    history = list(posterior.get("history") or [])
    if history:
        coords["iteration"] = [int(h["iteration"]) for h in history]
        data["log_evidence"] = np.array([float(h["log_evidence"]) for h in history])
        dims["log_evidence"] = ["iteration"]
        for site in SITES:
            for key, site_lead in (("gamma", "cell_type"), ("mean", lead)):
                if all(site in (h.get(key) or {}) for h in history):
                    name = f"{site}_{key}_history"
                    data[name] = np.stack([_np(h[key][site]) for h in history])
                    dims[name] = ["iteration", *_dims(site, site_lead)]
    return data


__all__ = [
    "arviz_from_dict",
    "arviz_major",
    "gaussian_prior_draws",
    "get_group",
    "group_names",
    "heldout_log_likelihood",
    "is_laplace_export",
    "load_arviz",
    "posterior_draws",
    "sample_prior",
    "save_arviz",
    "summarize",
    "to_arviz",
    "LAPLACE_DRAWS",
    "LAPLACE_DRAWS_NOTE",
]
