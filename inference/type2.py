"""Type-II maximum likelihood (evidence maximisation) around a Pyro model: the outer loop.

One iteration (Algorithm 1 of BayesNAS, in generic form):

1. MAP: ``epochs_per_iter`` epochs of SGD on the network weights and the sites. The objective
   of a batch is ``-(scaled log likelihood of "obs")/num_data + penalty`` where the penalty is
   ``model.map_penalty(sites, hypers)`` when the model file defines it (the reweighted group-l1
   surrogate of ARD-type priors), else ``-log_prior/num_data``. Weight decay applies to the
   network weights only.
2. Curvature: diagonal curvature of the mean NLL w.r.t. the sites, averaged over
   ``curvature_batches`` held-out batches (:func:`~pyronas.inference.curvature.diagonal_curvature`).
3. Laplace: diagonal posterior with precision ``num_data * curvature + prior_precision``, the
   prior precision taken by autograd from the model's log prior; the Laplace log evidence.
4. Hyperparameters: ``model.update_hypers(posterior, hypers)`` when defined (closed form), else
   ``hyper_steps`` Adam steps of gradient ascent on the Laplace evidence w.r.t. the learnable
   hyperparameters (tensors in ``hypers`` that require grad, or named in ``hypers["learnable"]``;
   they must be positive and are optimised in log space, except those under a key starting
   with ``log_``, which are already unconstrained and optimised as they are).
5. Prune: site elements whose prior variance ``gamma`` falls below ``threshold`` (and, if set,
   whose posterior z-score ``|mean|/sd`` falls below ``z_threshold``) are set to 0 and frozen.

The loop knows nothing about what the sites mean; the caller passes the model module, the
network, the data loaders and, optionally, a forward function and a callback that receives a
record per iteration (to print, write metrics or checkpoint).

Data parallelism: with ``average`` (an in-place weighted mean over the processes of a
data-parallel run, each of which holds a slice of every batch) the loop averages, once per step,
the gradients of the weights and sites with the batch loss (weighted by the slices' sizes: the
whole batch's mean); once per iteration the curvature (or the GGN matrix) and the log
likelihood of the held-out batches (weighted by each process's held-out samples: exact when
every held-out batch is split in equal slices, as full batches are); and the gradients of the
evidence-gradient hyperparameter update. Every process then computes the same Laplace fit,
the same hyperparameters and the same pruning, and the sites stay identical everywhere.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .curvature import ForwardFn, diagonal_curvature, eval_mode
from .diagonal_laplace import DiagonalLaplace, fit_diagonal_laplace
from .evidence import (
    joint_terms,
    laplace_log_evidence,
    log_evidence,
    trace_log_likelihood,
    trace_log_prior,
    trace_model,
)
from .full_laplace import fit_full_laplace, ggn_matrix, leading_index_groups

logger = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor]
Callback = Callable[[dict[str, Any], "Type2State"], None]
Average = Callable[..., None]
"""``average(tensors, weight=1.0)``: in-place mean of tensors over the processes of a
data-parallel run, each process's tensors weighted by its ``weight`` (its share of the data)."""


LAPLACE_FORMS = ("diag", "full", "block")
"""The forms of the Laplace posterior :class:`Type2Config` accepts."""


@dataclass
class Type2Config:
    """Settings of :func:`run_type2`.

    Attributes
    ----------
    t_max : int
        Number of (MAP, Laplace, update, prune) iterations.
    epochs_per_iter : int
        MAP epochs between two hyperparameter updates.
    lr, site_lr : float
        SGD step sizes of the network weights and of the sites (``site_lr=None``: ``lr``).
    momentum, weight_decay : float
        SGD momentum (both groups); weight decay (network weights only).
    grad_clip : float, optional
        Clip the gradient norm of the network weights and, separately, that of the sites.
    backend : str
        Curvature backend (``"ggn"``, ``"fisher"``, ``"exact"`` or a registered one).
    curvature_batches : int
        Held-out batches the curvature (and the log likelihood of the evidence) is averaged over.
    curvature_reduction : {"mean", "sum"}
        Curvature of the batch-mean loss (default) or of the batch-summed loss.
    curvature_options : dict
        Extra backend options (``chunk_size``, ``generator``, ``num_samples``).
    likelihood : {"categorical", "gaussian"}; noise_std : float
        The likelihood the curvature is computed for (must match the model's "obs" site).
    threshold : float, optional
        Pruning threshold tau on ``hypers["gamma"][site]``; ``None`` disables it.
    z_threshold : float, optional
        Also prune elements with ``|mean| / sd`` below this value.
    schedule : {"paper", "released"}
        ``"paper"``: ``epochs_per_iter`` epochs then an update. ``"released"``: first one warm-up
        epoch with the sites frozen on ``warmup_fraction`` of the data, then every iteration
        trains the sites on the rest (see :func:`run_type2`).
    warmup_fraction : float
        Share of the training batches used for warm-up when no warm-up loader is given.
    hyper_lr, hyper_steps : float, int
        Adam step size (in log space) and number of steps of the evidence-gradient update.
    progress : bool
        Show a progress bar per epoch (also off when ``PYRONAS_NO_PROGRESS`` is set).
    proximal : bool
        When the model file defines ``map_proximal(sites, hypers, step)``, apply the penalty by
        a proximal step after each SGD step (exact zeros) instead of its subgradient.
    laplace : {"diag", "full", "block"}
        The Laplace posterior of every iteration. ``"diag"``: the diagonal of the curvature
        (any backend). ``"full"``: the (D, D) GGN matrix over all site elements
        (:func:`~pyronas.inference.full_laplace.ggn_matrix`; ``backend`` is then not used), the
        log evidence with the log-determinant of the full precision, and hyperparameter updates
        from the full posterior's marginal variances (:meth:`FullLaplace.marginal_fit`).
        ``"block"``: as ``"full"`` with the GGN block-diagonal over the sites' leading index.
    """

    t_max: int = 6
    epochs_per_iter: int = 1
    lr: float = 0.025
    site_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0
    backend: str = "ggn"
    curvature_batches: int = 4
    curvature_reduction: str = "mean"
    curvature_options: dict[str, Any] = field(default_factory=dict)
    likelihood: str = "categorical"
    noise_std: float = 1.0
    threshold: float | None = 1e-3
    z_threshold: float | None = None
    schedule: str = "paper"
    warmup_fraction: float = 0.1
    hyper_lr: float = 0.05
    hyper_steps: int = 50
    progress: bool = True
    proximal: bool = True
    laplace: str = "diag"

    def __post_init__(self) -> None:
        if self.schedule not in ("paper", "released"):
            raise ValueError(f"schedule must be 'paper' or 'released', got {self.schedule!r}")
        if self.t_max < 0 or self.epochs_per_iter < 1 or self.curvature_batches < 1:
            raise ValueError("t_max >= 0, epochs_per_iter >= 1 and curvature_batches >= 1")
        if self.laplace not in LAPLACE_FORMS:
            raise ValueError(f"laplace must be one of {', '.join(LAPLACE_FORMS)}, "
                             f"got {self.laplace!r}")
        if self.laplace != "diag" and self.curvature_reduction != "mean":
            raise ValueError(f"laplace {self.laplace!r} uses the mean-loss GGN: "
                             f"curvature_reduction must be 'mean', got "
                             f"{self.curvature_reduction!r}")
        if not 0.0 < self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in (0, 1), got {self.warmup_fraction}")


@dataclass
class Type2State:
    """Everything the loop carries between iterations (passed to the callback, returned).

    ``sites`` are leaf tensors (trained in place); ``masks[site]`` is True for live elements;
    ``posterior`` the last Laplace fit (for the full and block forms: its marginals);
    ``precision_tril`` the lower Cholesky factor ``(D, D)`` of the last full (or block)
    posterior precision over all site elements (sites in mapping order, each row-major), None
    for the diagonal form; ``records`` one dict per iteration.
    """

    sites: dict[str, Tensor]
    hypers: dict[str, Any]
    masks: dict[str, Tensor]
    posterior: DiagonalLaplace | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    iteration: int = 0
    optimizer: torch.optim.Optimizer | None = None
    precision_tril: Tensor | None = None

    def resume_dict(self) -> dict[str, Any]:
        """What ``run_type2(..., resume=...)`` needs to continue after this iteration, on the
        CPU (the last Laplace fit included, so that a loop stopped after its last iteration
        can still be finished)."""
        return {
            "sites": {k: v.detach().cpu() for k, v in self.sites.items()},
            "masks": {k: v.cpu() for k, v in self.masks.items()},
            "hypers": self.hypers,
            "records": self.records,
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "posterior": None if self.posterior is None else dataclasses.asdict(self.posterior),
            "precision_tril": None if self.precision_tril is None
            else self.precision_tril.cpu(),
        }


# --------------------------------------------------------------------------------------------
# MAP step


def map_objective(
    model: Any,
    net: Any,
    sites: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    hypers: Mapping[str, Any],
    num_data: int,
    include_penalty: bool = True,
) -> Tensor:
    """MAP loss of one batch: mean NLL + ``map_penalty`` (or ``-log_prior / num_data``).

    ``include_penalty=False`` leaves ``map_penalty`` out (the proximal step applies it).
    """
    trace = trace_model(model, net, x, y, sites, hypers, num_data)
    loss = -trace_log_likelihood(trace) / num_data
    penalty = getattr(model, "map_penalty", None)
    if penalty is not None:
        return loss + penalty(dict(sites), hypers) if include_penalty else loss
    return loss - trace_log_prior(trace, sites) / num_data


def _show_progress(cfg: Type2Config) -> bool:
    return cfg.progress and not os.environ.get("PYRONAS_NO_PROGRESS")


def _weights(net: Any) -> list[Tensor]:
    if isinstance(net, nn.Module):
        return [p for p in net.parameters() if p.requires_grad]
    return []


def _map_epoch(
    model: Any,
    net: Any,
    state: Type2State,
    batches: Iterable[Batch],
    num_data: int,
    optimizer: torch.optim.Optimizer,
    cfg: Type2Config,
    train_sites: bool,
    desc: str,
    average: Average | None = None,
) -> float:
    """One pass of SGD over ``batches``; returns the mean objective.

    With ``average`` the gradients and the loss are averaged over the processes before the
    step (one all-reduce per batch), and the finiteness check reads the averaged loss, so
    every process stops at the same batch.
    """
    if isinstance(net, nn.Module):
        net.train()
    device = next(iter(state.sites.values())).device
    weights = _weights(net)
    proximal = getattr(model, "map_proximal", None) if cfg.proximal else None
    site_lr = cfg.site_lr if cfg.site_lr is not None else cfg.lr
    total, count = 0.0, 0
    sites = list(state.sites.values())
    for x, y in tqdm(batches, desc=desc, leave=False, disable=not _show_progress(cfg)):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = map_objective(model, net, state.sites, x, y, state.hypers, num_data,
                             include_penalty=proximal is None)
        value = float(loss.detach())
        if average is None and not math.isfinite(value):
            raise FloatingPointError(
                f"the MAP objective became {value} at batch {count + 1} of {desc}"
            )
        loss.backward()
        if average is not None:
            value = _average_step(average, loss, weights + sites, len(y))
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"the MAP objective became {value} at batch {count + 1} of {desc}"
                )
        for name, site in state.sites.items():
            if not train_sites:
                site.grad = None
            elif site.grad is not None:
                site.grad.mul_(state.masks[name])
        if cfg.grad_clip is not None:
            # weights and sites separately: the sites are few, their gradients can be far larger
            if weights:
                nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
            if train_sites:
                nn.utils.clip_grad_norm_(sites, cfg.grad_clip)
        optimizer.step()
        with torch.no_grad():
            if proximal is not None and train_sites:
                shrunk = proximal({k: v.detach() for k, v in state.sites.items()}, state.hypers,
                                  site_lr)
                for name, site in state.sites.items():
                    site.copy_(shrunk[name])
            for name, site in state.sites.items():
                site.mul_(state.masks[name])
        total += value
        count += 1
    if count == 0:
        raise ValueError("a MAP epoch got no batches")
    return total / count


def _average_step(average: Average, loss: Tensor, tensors: list[Tensor], count: int) -> float:
    """Average the batch loss and the gradients of ``tensors`` over the processes, each
    weighted by its ``count`` of samples: the mean over the whole batch, also when its slices
    differ in size (a tensor without a gradient has none on every process: the same ops are
    pruned everywhere)."""
    grads = [t.grad for t in tensors if t.grad is not None]
    value = loss.detach().reshape(1).to(grads[0].dtype if grads else loss.dtype).clone()
    average([value, *grads], weight=float(count))
    return float(value)


def _batch_means(
    fn: Callable[[list[Batch]], list[Tensor]], batches: list[Batch], average: Average | None
) -> list[Tensor]:
    """``fn`` over ``batches``: its tensors averaged over the batches, as ``fn(batches)`` does.

    In a data-parallel run each batch is split over the processes, so ``fn`` runs batch by
    batch and each batch's tensors are averaged over the processes weighted by the size of
    their slices (the whole batch's mean, also when the slices differ) before the mean over
    batches.
    """
    if average is None:
        return fn(batches)
    totals: list[Tensor] | None = None
    for batch in batches:
        values = [t.detach().clone() for t in fn([batch])]
        average(values, weight=float(len(batch[1])))
        totals = values if totals is None else [a + b for a, b in zip(totals, values,
                                                                        strict=True)]
    if totals is None:
        raise ValueError("no held-out batches")
    return [t / len(batches) for t in totals]


def _held_out_terms(model: Any, net: Any, module: nn.Module | None, held_out: list[Batch],
                    state: Type2State, num_data: int, average: Average | None) -> Any:
    """:func:`joint_terms` on the held-out batches, the log likelihood averaged over the
    processes of a data-parallel run (:func:`_batch_means`; the prior terms, the same on
    every process, come from the first batch's)."""
    with eval_mode(module):
        if average is None:
            return joint_terms(model, net, held_out, state.sites, state.hypers, num_data)
        per_batch: list[Any] = []

        def log_lik_of(batches: list[Batch]) -> list[Tensor]:
            per_batch.append(joint_terms(model, net, batches, state.sites, state.hypers,
                                         num_data))
            return [per_batch[-1].log_lik.detach().reshape(1)]

        (log_lik,) = _batch_means(log_lik_of, held_out, average)
    return dataclasses.replace(per_batch[0], log_lik=log_lik[0])


# --------------------------------------------------------------------------------------------
# hyperparameters


def _learnable(hypers: Mapping[str, Any]) -> list[tuple[tuple[str, ...], Tensor]]:
    """(path, tensor) of every learnable hyperparameter tensor in a nested dict."""
    named = {(e,) if isinstance(e, str) else tuple(e) for e in hypers.get("learnable", [])}
    found = []

    def walk(node: Any, path: tuple[str, ...], marked: bool) -> None:
        marked = marked or path in named
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key != "learnable":
                    walk(value, (*path, key), marked)
        elif isinstance(node, Tensor) and node.is_floating_point():
            if marked or node.requires_grad:
                found.append((path, node))

    walk(hypers, (), False)
    return found


def _replace(hypers: Mapping[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """Copy of a nested dict with the entry at ``path`` replaced (copies along the path only)."""
    out = dict(hypers)
    if len(path) == 1:
        out[path[0]] = value
    else:
        out[path[0]] = _replace(hypers[path[0]], path[1:], value)
    return out


def evidence_gradient_update(
    model: Any,
    net: Any,
    batches: list[Batch],
    sites: Mapping[str, Tensor],
    hypers: dict[str, Any],
    curvature: Mapping[str, Tensor],
    num_data: int,
    steps: int,
    lr: float,
    average: Average | None = None,
) -> dict[str, Any]:
    """Maximise the Laplace log evidence over the learnable (positive) hyperparameters.

    Adam on the logarithms of the hyperparameters, at fixed MAP sites and curvature; the log
    likelihood uses the first batch only (it rarely depends on the hyperparameters). With
    ``average`` the gradients are averaged over the processes, so all take the same steps.
    """
    learnable = _learnable(hypers)
    if not learnable:
        logger.debug("no learnable hyperparameters: nothing to update")
        return hypers
    # a hyperparameter whose key starts with "log_" is already unconstrained
    free = [any(key.startswith("log_") for key in path) for path, _ in learnable]
    for (path, value), is_free in zip(learnable, free, strict=True):
        if not is_free and (value <= 0).any():
            raise ValueError(f"learnable hyperparameter {'/'.join(path)} must be positive")
    logs = [
        (value.detach().clone() if is_free else value.detach().log()).requires_grad_(True)
        for (_, value), is_free in zip(learnable, free, strict=True)
    ]
    optimizer = torch.optim.Adam(logs, lr=lr)
    sites = {k: v.detach() for k, v in sites.items()}

    def constrained(log_value: Tensor, is_free: bool) -> Tensor:
        return log_value if is_free else log_value.exp()

    for _ in range(steps):
        current = hypers
        for (path, _), log_value, is_free in zip(learnable, logs, free, strict=True):
            current = _replace(current, path, constrained(log_value, is_free))
        evidence = laplace_log_evidence(
            model, net, batches[:1], sites, current, curvature, num_data
        )
        grads = torch.autograd.grad(-evidence, logs, allow_unused=True)
        optimizer.zero_grad(set_to_none=True)
        for log_value, g in zip(logs, grads, strict=True):
            log_value.grad = torch.zeros_like(log_value) if g is None else g
        if average is not None:
            average([log_value.grad for log_value in logs])
        optimizer.step()
    out = hypers
    for (path, value), log_value, is_free in zip(learnable, logs, free, strict=True):
        new_value = constrained(log_value.detach(), is_free)
        out = _replace(out, path, new_value.requires_grad_(value.requires_grad))
    return out


# --------------------------------------------------------------------------------------------
# pruning


def _site_gamma(model: Any, hypers: Mapping[str, Any], name: str, site: Tensor) -> Tensor | None:
    """Prior variance of every element of a site (None when the hypers have no ``gamma``)."""
    hook = getattr(model, "site_gamma", None)
    if hook is not None:
        gamma = hook(hypers, name)
    else:
        gamma = hypers.get("gamma", {}).get(name)
    if gamma is None:
        return None
    gamma = torch.as_tensor(gamma).detach().to(site.device)
    try:
        return gamma.expand(site.shape)
    except RuntimeError as err:
        raise ValueError(
            f"hypers['gamma'][{name!r}] has shape {tuple(gamma.shape)}, not broadcastable to the "
            f"site shape {tuple(site.shape)}; give the model a site_gamma(hypers, site) function"
        ) from err


def prune(model: Any, state: Type2State, cfg: Type2Config) -> None:
    """Update ``state.masks`` and zero the pruned site elements, in place."""
    z_scores = state.posterior.z_score() if state.posterior is not None else {}
    for name, site in state.sites.items():
        keep = state.masks[name].clone()
        gamma = _site_gamma(model, state.hypers, name, site)
        if cfg.threshold is not None and gamma is not None:
            keep &= gamma >= cfg.threshold
        if cfg.z_threshold is not None and name in z_scores:
            keep &= z_scores[name].to(site.device) >= cfg.z_threshold
        state.masks[name] = keep
        with torch.no_grad():
            site.mul_(keep)


# --------------------------------------------------------------------------------------------
# the loop


def default_forward(net: Any, site_names: Iterable[str]) -> ForwardFn:
    """``(sites, x) -> net(x, *[sites[name] for name in site_names])``."""
    names = tuple(site_names)

    def forward(sites: dict[str, Tensor], x: Tensor) -> Tensor:
        return net(x, *[sites[name] for name in names])

    return forward


def _full_posterior(
    model: Any, net: Any, module: nn.Module | None, forward: ForwardFn, state: Type2State,
    held_out: list[Batch], mean: dict[str, Tensor], num_data: int, cfg: Type2Config,
    average: Average | None = None,
) -> tuple[DiagonalLaplace, float, Tensor]:
    """Full (or block-diagonal) Laplace fit: its marginal diagonal form, its log evidence and
    the Cholesky factor of its precision."""
    groups = leading_index_groups(state.sites) if cfg.laplace == "block" else None
    (ggn,) = _batch_means(
        lambda b: [ggn_matrix(forward, state.sites, b, cfg.likelihood, cfg.noise_std, module,
                              groups=groups)], held_out, average)
    terms = _held_out_terms(model, net, module, held_out, state, num_data, average)
    prior_precision = {k: torch.as_tensor(p).detach() for k, p in terms.prior_precision.items()}
    full = fit_full_laplace(mean, ggn, num_data, prior_precision)
    evidence = float(full.log_evidence(terms.log_lik.detach(), terms.log_prior.detach()))
    return full.marginal_fit(), evidence, full.precision_tril.detach()


def _num_batches(loader: Iterable[Batch]) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError as err:
        raise ValueError("the 'released' schedule needs a training loader with len()") from err


def run_type2(
    model: Any,
    net: Any,
    sites: Mapping[str, Tensor],
    hypers: dict[str, Any],
    train_loader: Iterable[Batch],
    curvature_loader: Iterable[Batch],
    num_data: int,
    config: Type2Config | None = None,
    forward: ForwardFn | None = None,
    callback: Callback | None = None,
    warmup_loader: Iterable[Batch] | None = None,
    resume: Mapping[str, Any] | None = None,
    before_curvature: Callable[[Type2State], None] | None = None,
    average: Average | None = None,
) -> Type2State:
    """Alternate MAP training, Laplace fit, hyperparameter update and pruning.

    Parameters
    ----------
    model : module or object
        A model file: ``SITES``, ``model(net, x, y, hypers, num_data)``, and optionally
        ``update_hypers(posterior, hypers)``, ``map_penalty(sites, hypers)`` and
        ``site_gamma(hypers, site)`` (prior variance per site element, for pruning when
        ``hypers["gamma"][site]`` is not broadcastable to the site).
    net : nn.Module or callable
        The network, called by the model as ``net(x, *sites)``; its parameters are trained.
    sites : Mapping[str, Tensor]
        Initial site values (copied into leaf tensors that the loop trains).
    hypers : dict
        Initial hyperparameters (not modified in place).
    train_loader, curvature_loader : iterables of (x, y)
        Re-iterable training batches and held-out batches for the curvature.
    num_data : int
        Number of training points N the likelihood is scaled to.
    config : Type2Config, optional
    forward : ForwardFn, optional
        ``(sites, x) -> output`` for the curvature; default :func:`default_forward`.
    callback : callable, optional
        ``callback(record, state)`` after each iteration.
    warmup_loader : iterable of (x, y), optional
        Warm-up data of the ``"released"`` schedule. Without it the first ``warmup_fraction``
        of the batches of a pass over ``train_loader`` are the warm-up and every later MAP
        epoch skips that many leading batches (a disjoint split only for unshuffled loaders;
        the skipped batches are still loaded, so prefer passing a warm-up loader).
    resume : Mapping, optional
        Continue a run: ``{"sites", "masks", "hypers", "records", "iteration",
        "optimizer"}`` as saved from a :class:`Type2State` (``optimizer`` is the SGD
        ``state_dict``), optionally ``"posterior"`` (the fields of the last
        :class:`DiagonalLaplace`, kept when no iteration is left to run) and
        ``"precision_tril"`` (:attr:`Type2State.precision_tril`). The warm-up is not
        repeated and the loop starts at ``iteration + 1``.
    before_curvature : callable, optional
        ``before_curvature(state)`` before each curvature and Laplace fit.
    average : callable, optional
        Data parallelism: ``average(tensors, weight=...)`` replaces each tensor by its mean
        over the processes, each weighted by its ``weight``, in place
        (:func:`pyronas.distributed.average_`); each process's loaders give its slice of
        every batch (see the module docstring).

    Returns
    -------
    Type2State
        Final sites, hypers, masks, last posterior and the records, one per iteration:
        ``{"iteration", "objective", "log_evidence", "live": {site: int}, "size": {site: int},
        "hyper_update", "wall_time"}`` (``wall_time``: seconds of that iteration).
    """
    cfg = config or Type2Config()
    if average is not None and cfg.curvature_reduction != "mean":
        raise ValueError("a data-parallel run averages the curvature over the processes: "
                         "curvature_reduction must be 'mean'")
    names = tuple(getattr(model, "SITES", sites.keys()))
    if set(names) != set(sites):
        raise ValueError(f"sites {sorted(sites)} do not match the model's SITES {sorted(names)}")
    forward = forward or default_forward(net, names)
    module = net if isinstance(net, nn.Module) else None
    if resume is not None:
        sites, hypers = resume["sites"], resume["hypers"]
    leaves = {k: sites[k].detach().clone().requires_grad_(True) for k in names}
    masks = {k: torch.ones_like(v, dtype=torch.bool) for k, v in leaves.items()}
    state = Type2State(sites=leaves, hypers=dict(hypers), masks=masks)
    if resume is not None:
        state.masks = {k: resume["masks"][k].clone() for k in names}
        state.records = list(resume["records"])
        state.iteration = int(resume["iteration"])
        if resume.get("posterior") is not None:
            state.posterior = DiagonalLaplace(**resume["posterior"])
        state.precision_tril = resume.get("precision_tril")

    groups = []
    if _weights(net):
        groups.append({"params": _weights(net), "weight_decay": cfg.weight_decay})
    groups.append({"params": list(leaves.values()), "weight_decay": 0.0,
                   "lr": cfg.site_lr if cfg.site_lr is not None else cfg.lr})
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    state.optimizer = optimizer
    if resume is not None and resume.get("optimizer") is not None:
        optimizer.load_state_dict(resume["optimizer"])

    skip = 0
    if cfg.schedule == "released":
        if warmup_loader is None:
            skip = max(1, math.ceil(cfg.warmup_fraction * _num_batches(train_loader)))
            warmup_loader = itertools.islice(train_loader, skip)
        if state.iteration == 0:
            _map_epoch(model, net, state, warmup_loader, num_data, optimizer, cfg,
                       train_sites=False, desc="warm-up", average=average)

    for t in range(state.iteration + 1, cfg.t_max + 1):
        start = time.perf_counter()
        objective = 0.0
        for epoch in range(cfg.epochs_per_iter):
            batches = itertools.islice(train_loader, skip, None) if skip else train_loader
            objective = _map_epoch(model, net, state, batches, num_data, optimizer, cfg,
                                   train_sites=True, desc=f"iter {t} epoch {epoch + 1}",
                                   average=average)

        if before_curvature is not None:
            before_curvature(state)
        held_out = list(itertools.islice(curvature_loader, cfg.curvature_batches))
        mean = {k: v.detach().clone() for k, v in state.sites.items()}
        if cfg.laplace == "diag":
            def curvature_of(batches: list[Batch]) -> list[Tensor]:
                curv = diagonal_curvature(
                    forward, state.sites, batches, likelihood=cfg.likelihood,
                    backend=cfg.backend, noise_std=cfg.noise_std, module=module,
                    reduction=cfg.curvature_reduction, **cfg.curvature_options,
                )
                return [curv[k] for k in names]

            curvature = dict(zip(names, _batch_means(curvature_of, held_out, average),
                                 strict=True))
            terms = _held_out_terms(model, net, module, held_out, state, num_data, average)
            state.posterior = fit_diagonal_laplace(mean, curvature, num_data,
                                                   terms.prior_precision)
            evidence = float(log_evidence(terms.log_lik, terms.log_prior,
                                          state.posterior.precision))
        else:
            state.posterior, evidence, state.precision_tril = _full_posterior(
                model, net, module, forward, state, held_out, mean, num_data, cfg, average)
            curvature = state.posterior.curvature

        update = getattr(model, "update_hypers", None)
        if update is not None:
            state.hypers = update(state.posterior, state.hypers)
            how = "closed_form"
        else:
            with eval_mode(module):
                state.hypers = evidence_gradient_update(
                    model, net, held_out, mean, state.hypers, curvature, num_data,
                    cfg.hyper_steps, cfg.hyper_lr, average,
                )
            how = "evidence_gradient" if _learnable(state.hypers) else "none"
        refresh = getattr(model, "effective_gamma", None)
        if refresh is not None:
            # keep hypers["gamma"] (what pruning reads) in step with the updated hypers
            state.hypers = {**state.hypers, "gamma": refresh(state.hypers)}
        prune(model, state, cfg)

        state.iteration = t
        record = {
            "iteration": t,
            "objective": objective,
            "log_evidence": evidence,
            "live": {k: int(m.sum()) for k, m in state.masks.items()},
            "size": {k: m.numel() for k, m in state.masks.items()},
            "hyper_update": how,
            "wall_time": time.perf_counter() - start,
        }
        state.records.append(record)
        logger.info(
            "type-II iteration %d: objective %.4f, log evidence %.3f, live %s",
            t, objective, evidence, record["live"],
        )
        if callback is not None:
            callback(record, state)
    return state


__all__ = [
    "LAPLACE_FORMS",
    "Type2Config",
    "Type2State",
    "default_forward",
    "evidence_gradient_update",
    "map_objective",
    "prune",
    "run_type2",
]
