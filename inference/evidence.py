"""Laplace approximation of the log marginal likelihood (the evidence), diagonal form.

    log p(D | h) ~= log p(D | s*) + log p(s* | h) + 1/2 sum_i [log(2 pi) - log P_i]

with s* the MAP sites, h the hyperparameters and P the diagonal posterior precision
(``num_data * curvature + prior_precision``, see :mod:`pyronas.inference.diagonal_laplace`).
It is exact for a linear-Gaussian model whose curvature is diagonal (e.g. an orthogonal
design), and it is differentiable in the hyperparameters when the prior terms are.

The helpers here work for any Pyro model following the model-file convention: the model is
``model(net, x, y, hypers, num_data)``, samples the sites of ``sites_map`` and an observed site
``"obs"`` under ``pyro.plate("data", num_data, subsample_size=len(x))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace
from torch import Tensor

from .curvature import hessian_diagonal

OBS_SITE = "obs"

Batch = tuple[Tensor, Tensor]


def model_function(model: Any) -> Callable[..., None]:
    """The Pyro model callable: ``model.model`` for a model module, else ``model`` itself."""
    fn = getattr(model, "model", model)
    if not callable(fn):
        raise TypeError(f"{model!r} is neither a Pyro model nor has a callable .model")
    return fn


def trace_model(
    model: Any,
    net: Any,
    x: Tensor,
    y: Tensor,
    sites: Mapping[str, Tensor],
    hypers: Mapping[str, Any],
    num_data: int,
) -> Trace:
    """Run the model with its sites fixed to ``sites`` and record the trace."""
    conditioned = poutine.condition(model_function(model), data=dict(sites))
    trace = poutine.trace(conditioned).get_trace(net, x, y, hypers, num_data)
    missing = [name for name in (*sites, OBS_SITE) if name not in trace.nodes]
    if missing:
        raise KeyError(f"the model has no sample sites named {missing}")
    return trace


def trace_log_likelihood(trace: Trace) -> Tensor:
    """log p(y | s) of the ``"obs"`` site, scaled to the full data (num_data / batch)."""
    trace.compute_log_prob(site_filter=lambda name, site: name == OBS_SITE)
    return trace.nodes[OBS_SITE]["log_prob_sum"]


def trace_log_prior(trace: Trace, names: Iterable[str]) -> Tensor:
    """Sum of the log densities of the named sites (with any plate scaling)."""
    names = set(names)
    trace.compute_log_prob(site_filter=lambda name, site: name in names)
    terms = [trace.nodes[name]["log_prob_sum"] for name in names]
    return torch.stack([torch.as_tensor(t) for t in terms]).sum()


def log_evidence(
    log_lik: Tensor, log_prior: Tensor, posterior_precision: Mapping[str, Tensor] | Tensor
) -> Tensor:
    """Diagonal Laplace log marginal likelihood.

    Parameters
    ----------
    log_lik : Tensor
        Scalar log p(D | s*) at the MAP sites (full data).
    log_prior : Tensor
        Scalar log p(s* | h).
    posterior_precision : Mapping[str, Tensor] | Tensor
        Diagonal posterior precision P, per site or as one tensor.

    Returns
    -------
    Tensor
        Scalar log_lik + log_prior + 1/2 sum(log(2 pi) - log P).
    """
    if isinstance(posterior_precision, Mapping):
        precisions = list(posterior_precision.values())
    else:
        precisions = [posterior_precision]
    occam = sum(0.5 * (math.log(2 * math.pi) - torch.log(p)).sum() for p in precisions)
    return log_lik + log_prior + occam


@dataclass
class JointTerms:
    """log_lik (full-data scale, averaged over batches), log_prior, and the prior precision
    (minus the diagonal second derivative of the log prior) per site, at given sites."""

    log_lik: Tensor
    log_prior: Tensor
    prior_precision: dict[str, Tensor]


def _as_batches(data: Batch | Iterable[Batch]) -> list[Batch]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        return [data]
    batches = list(data)
    if not batches:
        raise ValueError("no data batches given")
    return batches


def joint_terms(
    model: Any,
    net: Any,
    data: Batch | Iterable[Batch],
    sites_map: Mapping[str, Tensor],
    hypers: Mapping[str, Any],
    num_data: int,
    create_graph: bool = False,
) -> JointTerms:
    """Evaluate the log likelihood, log prior and prior precision of a model at ``sites_map``.

    The log likelihood is the mean over the batches of the scaled ``"obs"`` log density (each
    an unbiased estimate of the full-data value; exact for a single full batch). The log prior
    and its curvature come from the first batch's trace, by autograd, so any prior works.
    ``create_graph=True`` keeps the graph to the hyperparameters (for evidence gradients).
    """
    batches = _as_batches(data)
    device = next(iter(sites_map.values())).device
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in sites_map.items()}
    log_liks = []
    log_prior = prior_precision = None
    with torch.enable_grad():
        for i, (x, y) in enumerate(batches):
            x, y = x.to(device), y.to(device)
            trace = trace_model(model, net, x, y, leaves, hypers, num_data)
            log_lik = trace_log_likelihood(trace)
            log_liks.append(log_lik if create_graph else log_lik.detach())
            if i == 0:
                log_prior = trace_log_prior(trace, leaves)
                closed_form = getattr(model, "prior_precision", None)
                if closed_form is not None:  # many sites: one backward pass per element is slow
                    prior_precision = dict(closed_form(leaves, hypers))
                else:
                    curv = hessian_diagonal(log_prior, leaves, create_graph=create_graph)
                    prior_precision = {k: -v for k, v in curv.items()}
                if not create_graph:
                    log_prior = log_prior.detach()
                    prior_precision = {k: v.detach() for k, v in prior_precision.items()}
    return JointTerms(torch.stack(log_liks).mean(), log_prior, prior_precision)


def laplace_log_evidence(
    model: Any,
    net: Any,
    data: Batch | Iterable[Batch],
    sites_map: Mapping[str, Tensor],
    hypers: Mapping[str, Any],
    curvature: Mapping[str, Tensor],
    num_data: int,
    min_precision: float = 1e-10,
) -> Tensor:
    """Diagonal Laplace log evidence of a Pyro model at its MAP sites.

    Parameters
    ----------
    model : module or callable
        A model file (with ``.model``) or the model function itself.
    net : Any
        Passed to the model (the network, weights fixed).
    data : (x, y) or iterable of (x, y)
        Batches for the log likelihood (see :func:`joint_terms`).
    sites_map : Mapping[str, Tensor]
        MAP value of every site the posterior is over.
    hypers : Mapping[str, Any]
        Hyperparameters; tensors that require grad receive gradients.
    curvature : Mapping[str, Tensor]
        Diagonal curvature of the mean per-sample NLL per site.
    num_data : int
        Number of training points.

    Returns
    -------
    Tensor
        Scalar log evidence, differentiable w.r.t. the hyperparameters.
    """
    terms = joint_terms(model, net, data, sites_map, hypers, num_data, create_graph=True)
    precision = {
        k: (num_data * curvature[k] + terms.prior_precision[k]).clamp_min(min_precision)
        for k in sites_map
    }
    return log_evidence(terms.log_lik, terms.log_prior, precision)


__all__ = [
    "JointTerms",
    "joint_terms",
    "laplace_log_evidence",
    "log_evidence",
    "model_function",
    "trace_log_likelihood",
    "trace_log_prior",
    "trace_model",
]
