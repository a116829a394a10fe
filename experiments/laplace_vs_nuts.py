"""How good are the diagonal and the full Laplace approximations of the switch posterior? NUTS.

A tiny supernet is trained on digits (weights and switches jointly, SGD, a ``N(0, gamma)`` prior
on the switches) to a MAP point. Then the network weights are frozen and only a few dozen
switches stay free (``--free``: the edge switches by default, the rest held at the MAP), and on a
fixed subset of the training data (full batch, network in eval mode) the posterior

    p(s | D) ∝ prod_n Categorical(y_n | softmax f(x_n; theta*, s)) * N(s | 0, gamma)

is approximated three ways:

* diagonal Laplace: the MAP ``s*`` of this posterior (L-BFGS), the diagonal GGN curvature ``h``
  (``pyronas.inference.curvature.diagonal_curvature``) and the variance ``1 / (M h + 1 / gamma)``
  (``M`` the subset size);
* full Laplace: the same ``s*`` and the same full-batch likelihood, the ``D x D`` GGN ``G``
  (``pyronas.inference.full_laplace.ggn_matrix``) and the covariance ``(M G + I / gamma)^-1``
  (``fit_full_laplace``). ``diag(G)`` must equal ``h`` (checked, :func:`fit_laplace_pair`), so
  the diagonal fit is the full one with the off-diagonal curvature dropped;
* NUTS (Pyro), several chains, optionally with a dense mass matrix (``--full-mass``) and started
  at draws from the full Laplace (``--init laplace``) or at ``s*``.

Reported for each Laplace fit: the KL divergence from the Gaussian fitted to the NUTS draws to the
Laplace Gaussian (the per-switch marginals summed, and the full-covariance fit), the largest
``|mean difference| / Laplace sd``, the ratios NUTS sd / Laplace sd, the largest correlation and
the largest difference between the correlation matrices, and whether the cell derived from it
(keep a free switch when its inclusion ``|E sign(s)|`` reaches ``--keep``,
:mod:`pyronas.run_summary`) differs from the cell derived from the NUTS draws; and r_hat and bulk
ESS of the chains. The diagonal Laplace variance ``1 / P_ii`` is the *conditional* variance of a
switch given the others; NUTS and the full Laplace give the marginal ``(P^-1)_ii``, so correlated
switches make the diagonal sds too small.

Usage::

    python experiments/laplace_vs_nuts.py --num-samples 200 --warmup 200 --chains 3 \
        --subset 16 --free normal_edge --epochs 3 --max-tree-depth 4 --full-mass --init laplace

Prints a JSON summary (``--out`` saves it); with ``--results docs/results.md`` writes a markdown
section between the markers ``<!-- laplace-vs-nuts:start -->`` and ``<!-- laplace-vs-nuts:end
-->``. ``--from-json SUMMARY --results docs/results.md`` rewrites that section from a saved
summary without running anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger("laplace_vs_nuts")

MARK_START = "<!-- laplace-vs-nuts:start -->"
MARK_END = "<!-- laplace-vs-nuts:end -->"
FREE_CHOICES = ("edge", "normal_edge", "reduce_edge", "normal_op", "reduce_op", "all")
INIT_CHOICES = ("map", "laplace")
R_HAT_MAX = 1.05
"""Convergence criterion: the largest r_hat over the switches at most this."""
ESS_MIN = 200.0
"""Convergence criterion: the smallest bulk ESS over the switches at least this."""
FITS = ("diagonal", "full")
"""The two Laplace fits, in table order."""


# --------------------------------------------------------------------------------------------
# Gaussian comparison helpers (pure functions, tested fast)


def gaussian_kl(m1: Any, cov1: Any, m0: Any, cov0: Any) -> float:
    """``KL(N(m1, cov1) || N(m0, cov0))`` for full covariance matrices (float64).

    ``0.5 * [tr(S0^-1 S1) + (m0 - m1)^T S0^-1 (m0 - m1) - d + log det S0 - log det S1]``.

    Parameters
    ----------
    m1, cov1 : array_like
        Mean ``(d,)`` and covariance ``(d, d)`` of the first Gaussian.
    m0, cov0 : array_like
        Mean and covariance of the second (reference) Gaussian.

    Returns
    -------
    float
        The KL divergence in nats.
    """
    m1, m0 = np.asarray(m1, dtype=np.float64), np.asarray(m0, dtype=np.float64)
    cov1, cov0 = np.asarray(cov1, dtype=np.float64), np.asarray(cov0, dtype=np.float64)
    d = m1.shape[0]
    chol0 = np.linalg.cholesky(cov0)
    solve = np.linalg.solve(chol0, cov1)
    trace = float(np.trace(np.linalg.solve(chol0.T, solve)))
    diff = np.linalg.solve(chol0, m0 - m1)
    _, logdet1 = np.linalg.slogdet(cov1)
    logdet0 = 2.0 * float(np.log(np.diag(chol0)).sum())
    return 0.5 * (trace + float(diff @ diff) - d + logdet0 - float(logdet1))


def gaussian_kl_diag(m1: Any, v1: Any, m0: Any, v0: Any) -> np.ndarray:
    """Elementwise ``KL(N(m1, v1) || N(m0, v0))`` of independent univariate Gaussians.

    Parameters
    ----------
    m1, v1 : array_like
        Means and variances of the first Gaussians.
    m0, v0 : array_like
        Means and variances of the reference Gaussians (broadcast against the first).

    Returns
    -------
    numpy.ndarray
        The KL divergence of every pair, in nats.
    """
    m1, v1 = np.asarray(m1, dtype=np.float64), np.asarray(v1, dtype=np.float64)
    m0, v0 = np.asarray(m0, dtype=np.float64), np.asarray(v0, dtype=np.float64)
    return 0.5 * (v1 / v0 + (m0 - m1) ** 2 / v0 - 1.0 + np.log(v0 / v1))


def correlation_of(cov: Any) -> np.ndarray:
    """The correlation matrix ``cov_ij / (sd_i sd_j)`` of a covariance matrix.

    Parameters
    ----------
    cov : array_like
        ``(d, d)`` covariance with a positive diagonal.

    Returns
    -------
    numpy.ndarray
        ``(d, d)`` correlations (ones on the diagonal).
    """
    cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


def max_abs_off_diagonal(matrix: Any) -> float:
    """The largest ``|matrix_ij|`` with ``i != j`` (0 for a 1 x 1 matrix).

    Parameters
    ----------
    matrix : array_like
        A square matrix.

    Returns
    -------
    float
        The largest absolute off-diagonal entry.
    """
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    off = matrix[~np.eye(matrix.shape[0], dtype=bool)]
    return float(np.max(np.abs(off))) if off.size else 0.0


def compare_with_laplace(samples: Any, laplace_mean: Any, laplace_cov: Any) -> dict[str, Any]:
    """Compare draws ``(n, d)`` with a Laplace Gaussian ``N(laplace_mean, laplace_cov)``.

    Parameters
    ----------
    samples : array_like
        ``(n, d)`` draws (e.g. NUTS, chains pooled).
    laplace_mean : array_like
        ``(d,)`` Laplace mean.
    laplace_cov : array_like
        ``(d,)`` variances of a diagonal Laplace fit, or the ``(d, d)`` covariance of a full one.

    Returns
    -------
    dict
        ``mean``/``sd`` of the draws per switch; ``kl_diag``: the sum over switches of the KL
        from the per-switch Gaussian fit of the draws to the Laplace marginal (for a diagonal
        Laplace this is ``KL(diagonal fit of the draws || Laplace)``); ``kl_full``: the KL from
        the full-covariance fit of the draws to the Laplace Gaussian; ``max_abs_z``: the largest
        ``|mean_draws - mean_laplace| / sd_laplace`` (marginal sd); ``sd_ratio``: draw sd /
        Laplace marginal sd per switch; ``max_abs_corr``: the largest off-diagonal correlation
        of the draws; ``laplace_max_abs_corr``: the same of the Laplace Gaussian (0 for a
        diagonal one); ``max_abs_corr_diff``: the largest ``|corr_draws - corr_laplace|``.
    """
    x = np.asarray(samples, dtype=np.float64)
    mu = np.asarray(laplace_mean, np.float64)
    lap = np.asarray(laplace_cov, np.float64)
    lap_cov = np.diag(lap) if lap.ndim == 1 else lap
    lap_var = np.diag(lap_cov)
    mean, cov = x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))
    sd = np.sqrt(np.diag(cov))
    corr, lap_corr = correlation_of(cov), correlation_of(lap_cov)
    return {
        "mean": mean.tolist(),
        "sd": sd.tolist(),
        "kl_diag": float(gaussian_kl_diag(mean, sd**2, mu, lap_var).sum()),
        "kl_full": gaussian_kl(mean, cov, mu, lap_cov),
        "max_abs_z": float(np.max(np.abs(mean - mu) / np.sqrt(lap_var))),
        "sd_ratio": (sd / np.sqrt(lap_var)).tolist(),
        "max_abs_corr": max_abs_off_diagonal(corr),
        "laplace_max_abs_corr": max_abs_off_diagonal(lap_corr),
        "max_abs_corr_diff": float(np.max(np.abs(corr - lap_corr))),
    }


def write_results_section(path: Path, text: str) -> None:
    """Replace the text between the markers in ``path`` (created, or appended to, if needed).

    Parameters
    ----------
    path : Path
        The markdown file.
    text : str
        The new section body (without the markers).
    """
    section = f"{MARK_START}\n{text.rstrip()}\n{MARK_END}"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Results\n"
    if MARK_START in old and MARK_END in old:
        head, rest = old.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        new = head + section + tail
    else:
        new = old.rstrip() + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# the two Laplace fits


@dataclass
class LaplacePair:
    """A diagonal and a full Laplace fit of one flat site with the same mean and data.

    Attributes
    ----------
    mean : Tensor
        ``(D,)`` the MAP point both fits are centred at.
    diag_curvature : Tensor
        ``(D,)`` the diagonal GGN of the mean per-sample NLL (``diagonal_curvature``).
    diag_var : Tensor
        ``(D,)`` the diagonal fit's variances ``1 / (num_data h + prior_precision)``.
    ggn : Tensor
        ``(D, D)`` the GGN of the same loss (``ggn_matrix``).
    full : FullLaplace
        The full fit, precision ``num_data * ggn + prior_precision * I``.
    curvature_rel_diff : float
        ``max |diag(ggn) - h| / max |h|``: how far the two curvature computations disagree.
    """

    mean: Tensor
    diag_curvature: Tensor
    diag_var: Tensor
    ggn: Tensor
    full: Any
    curvature_rel_diff: float

    @property
    def full_cov(self) -> Tensor:
        """``(D, D)`` the full fit's covariance."""
        return self.full.covariance

    @property
    def full_sd(self) -> Tensor:
        """``(D,)`` the full fit's marginal standard deviations."""
        return self.full.std["s"]


def fit_laplace_pair(
    forward: Any,
    mean: Tensor,
    batch: tuple[Tensor, Tensor],
    num_data: int,
    prior_precision: float,
    likelihood: str = "categorical",
    noise_std: float = 1.0,
    module: nn.Module | None = None,
    rtol: float | None = None,
) -> LaplacePair:
    """Diagonal and full Laplace fits around ``mean`` from one full batch, cross-checked.

    Both use the GGN of the mean per-sample NLL of ``batch`` at ``mean``, scaled by
    ``num_data``, and the prior precision ``prior_precision`` on every element. The diagonal of
    the full GGN must equal the diagonal GGN, and the full fit's diagonal-of-precision variant
    (:meth:`FullLaplace.diagonal`) the diagonal fit.

    Parameters
    ----------
    forward : callable
        ``forward({"s": s}, x) -> output`` with the network weights closed over.
    mean : Tensor
        ``(D,)`` the MAP point.
    batch : tuple[Tensor, Tensor]
        ``(x, y)``, all the data of the likelihood.
    num_data : int
        Number of data points the mean loss is scaled to (the batch size for a full batch).
    prior_precision : float
        ``1 / gamma`` of the ``N(0, gamma)`` prior.
    likelihood : {"categorical", "gaussian"}
        The likelihood of ``forward``'s output.
    noise_std : float
        Standard deviation of a Gaussian likelihood.
    module : nn.Module, optional
        The network (held in eval mode during the curvature computations).
    rtol : float, optional
        Relative tolerance of the cross-checks; default ``1e-8`` in float64, ``1e-4`` otherwise.

    Returns
    -------
    LaplacePair
        Both fits.

    Raises
    ------
    ValueError
        When the diagonal of the full GGN and the diagonal GGN (or the two diagonal variances)
        disagree beyond ``rtol``.
    """
    from pyronas.inference.curvature import diagonal_curvature
    from pyronas.inference.full_laplace import fit_full_laplace, ggn_matrix

    mean = mean.detach()
    if rtol is None:
        rtol = 1e-8 if mean.dtype == torch.float64 else 1e-4
    sites = {"s": mean}
    curv = diagonal_curvature(forward, sites, [batch], likelihood=likelihood, backend="ggn",
                              noise_std=noise_std, module=module, chunk_size=16)["s"]
    ggn = ggn_matrix(forward, sites, [batch], likelihood, noise_std, module)
    diag_var = 1.0 / (num_data * curv + prior_precision)
    full = fit_full_laplace(sites, ggn, num_data, prior_precision)
    scale = float(curv.abs().max().clamp_min(torch.finfo(curv.dtype).tiny))
    rel = float((torch.diagonal(ggn) - curv).abs().max()) / scale
    if rel > rtol:
        raise ValueError(f"diag of the full GGN differs from the diagonal GGN (rel. {rel:.1e})")
    var_back = full.diagonal().var["s"]
    if not torch.allclose(var_back, diag_var, rtol=rtol, atol=0.0):
        raise ValueError("FullLaplace.diagonal() does not reproduce the diagonal fit")
    return LaplacePair(mean=mean, diag_curvature=curv, diag_var=diag_var, ggn=ggn, full=full,
                       curvature_rel_diff=rel)


# --------------------------------------------------------------------------------------------
# the experiment


def free_mask(space: Any, free: str) -> dict[str, Tensor]:
    """Bool masks of the free switches.

    Parameters
    ----------
    space : SearchSpace
        The search space (its tied switch shapes).
    free : str
        One of :data:`FREE_CHOICES`: all edge switches, the edge switches of one cell type,
        the op switches of one cell type, or all switches.

    Returns
    -------
    dict[str, Tensor]
        ``{"edge_switch": (cell_type, edge), "op_switch": (cell_type, edge, op)}``.
    """
    edge_shape, op_shape = space.switch_shapes()
    mask = {"edge_switch": torch.zeros(edge_shape, dtype=torch.bool),
            "op_switch": torch.zeros(op_shape, dtype=torch.bool)}
    if free in ("edge", "all"):
        mask["edge_switch"][:] = True
    if free == "all":
        mask["op_switch"][:] = True
    if free.endswith("_op"):
        mask["op_switch"][space.cell_types.index(free[: -len("_op")])] = True
    if free.endswith("_edge"):
        mask["edge_switch"][space.cell_types.index(free[: -len("_edge")])] = True
    return mask


def assemble(
    base: Mapping[str, Tensor], mask: Mapping[str, Tensor], s: Tensor
) -> dict[str, Tensor]:
    """Switch tensors with the free entries taken from the flat vector ``s``.

    Parameters
    ----------
    base : Mapping[str, Tensor]
        Values of all switches (the fixed ones are kept).
    mask : Mapping[str, Tensor]
        Bool masks of the free switches (:func:`free_mask`).
    s : Tensor
        The free values, edge switches first, each in row-major order.

    Returns
    -------
    dict[str, Tensor]
        ``edge_switch`` and ``op_switch``.
    """
    out, start = {}, 0
    for site in ("edge_switch", "op_switch"):
        flat_mask = mask[site].reshape(-1)
        n = int(flat_mask.sum())
        base_value = base[site]
        # out of place (a 0/1 selection matrix), so that torch.func.vmap can map over s
        select = torch.zeros(flat_mask.numel(), n, dtype=base_value.dtype)
        select[flat_mask.nonzero().squeeze(1), torch.arange(n)] = 1.0
        free = (select @ s[start:start + n].to(base_value.dtype)).reshape(base_value.shape)
        out[site] = torch.where(mask[site], free, base_value)
        start += n
    return out


def train_map(net: Any, splits: Any, epochs: int, gamma: float, seed: int) -> dict[str, Tensor]:
    """SGD on weights and switches with a ``N(0, gamma)`` switch prior.

    Parameters
    ----------
    net : SuperNet
        The network (trained in place, left in eval mode).
    splits : DatasetSplits
        Data; its training split is used.
    epochs : int
        Passes over the training split.
    gamma : float
        Prior variance of the switches.
    seed : int
        Seed of the data order.

    Returns
    -------
    dict[str, Tensor]
        The trained ``edge_switch`` and ``op_switch``.
    """
    from pyronas.data import make_loader

    edge, op = net.init_switches()
    switches = {"edge_switch": edge.requires_grad_(), "op_switch": op.requires_grad_()}
    params = list(net.parameters()) + list(switches.values())
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.0)
    n = len(splits.train)
    loader = make_loader(splits.train, batch_size=64, shuffle=True, seed=seed)
    net.train()
    for epoch in range(epochs):
        total = 0.0
        for x, y in loader:
            x = x.to(torch.float64)
            loss = F.cross_entropy(net(x, switches["edge_switch"], switches["op_switch"]), y)
            prior = sum((s**2).sum() for s in switches.values()) / (2 * gamma * n)
            opt.zero_grad()
            (loss + prior).backward()
            opt.step()
            total += loss.item() * len(y)
        log.info("MAP epoch %d: train loss %.3f", epoch, total / n)
    net.eval()
    return {k: v.detach() for k, v in switches.items()}


def convergence_ok(r_hat_max: float, ess_min: float) -> bool:
    """Whether the chains meet the criterion ``max r_hat <= R_HAT_MAX``, ``min ESS >= ESS_MIN``.

    Parameters
    ----------
    r_hat_max : float
        The largest r_hat over the switches.
    ess_min : float
        The smallest bulk ESS over the switches.

    Returns
    -------
    bool
        True when both hold.
    """
    return r_hat_max <= R_HAT_MAX and ess_min >= ESS_MIN


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole experiment.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed command line (:func:`parse_args`).

    Returns
    -------
    dict
        The JSON-able summary.
    """
    import arviz as az
    import pyro
    from pyro.infer import MCMC, NUTS

    from pyronas.data import load_dataset
    from pyronas.genotype import derive, describe
    from pyronas.run_summary import inclusion_from_draws, inclusion_gaussian
    from pyronas.space import get_space
    from pyronas.supernet import SuperNet

    t0 = time.time()
    torch.manual_seed(args.seed)
    space = get_space("bayesnas8")
    splits = load_dataset("digits", seed=args.seed)
    net = SuperNet(space, C=4, layers=3, num_classes=splits.num_classes,
                   in_channels=splits.in_channels).to(torch.float64)
    map_switches = train_map(net, splits, args.epochs, args.gamma, args.seed)
    for p in net.parameters():
        p.requires_grad_(False)

    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(splits.train), generator=gen)[: args.subset]
    x = torch.stack([splits.train[int(i)][0] for i in idx]).to(torch.float64)
    y = torch.tensor([int(splits.train[int(i)][1]) for i in idx])
    m = len(y)
    mask = free_mask(space, args.free)
    d = int(sum(v.sum() for v in mask.values()))
    s0 = torch.cat([map_switches[k][mask[k]] for k in ("edge_switch", "op_switch")])
    evaluations = [0]

    def nll_sum(s: Tensor) -> Tensor:
        evaluations[0] += 1
        sw = assemble(map_switches, mask, s)
        return F.cross_entropy(net(x, sw["edge_switch"], sw["op_switch"]), y, reduction="sum")

    # MAP of the switch posterior on the subset (weights fixed)
    s_map = s0.clone().requires_grad_()
    lbfgs = torch.optim.LBFGS([s_map], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        lbfgs.zero_grad()
        loss = nll_sum(s_map) + 0.5 * (s_map**2).sum() / args.gamma
        loss.backward()
        return loss

    # one LBFGS.step can stop early (tolerance on the change, not the gradient): repeat until
    # the gradient of the negative log posterior is small
    for _ in range(20):
        lbfgs.step(closure)
        if s_map.grad is not None and float(s_map.grad.norm()) < 1e-4:
            break
    s_map = s_map.detach()
    grad_norm = float(torch.func.grad(
        lambda s: nll_sum(s) + 0.5 * (s**2).sum() / args.gamma)(s_map).norm())

    # both Laplace fits: same MAP, same full-batch likelihood over the subset
    def forward(sites: dict[str, Tensor], xb: Tensor) -> Tensor:
        sw = assemble(map_switches, mask, sites["s"])
        return net(xb, sw["edge_switch"], sw["op_switch"])

    pair = fit_laplace_pair(forward, s_map, (x, y), m, 1.0 / args.gamma, module=net)
    lap_var, full_cov = pair.diag_var, pair.full_cov
    t_laplace = time.time() - t0

    # NUTS over the same posterior (a potential function: no Pyro model tracing per step)
    def potential(params: Mapping[str, Tensor]) -> Tensor:
        s = params["s"]
        return nll_sum(s) + 0.5 * (s**2).sum() / args.gamma

    init_gen = torch.Generator().manual_seed(args.seed + 7)
    inits = pair.full.sample(args.chains, generator=init_gen)["s"]
    chains, divergences, accept, evals, sample_evals = [], [], [], [], []
    t1 = time.time()
    for c in range(args.chains):
        pyro.set_rng_seed(args.seed + 100 + c)
        start = s_map if args.init == "map" else inits[c]
        kernel = NUTS(potential_fn=potential, max_tree_depth=args.max_tree_depth,
                      full_mass=args.full_mass, target_accept_prob=args.target_accept,
                      jit_compile=False)
        first_draw: list[int] = []

        def hook(kernel: Any, params: Any, stage: str, i: int,
                 mark: list[int] = first_draw) -> None:
            if stage == "Sample" and not mark:
                mark.append(evaluations[0])

        mcmc = MCMC(kernel, num_samples=args.num_samples, warmup_steps=args.warmup,
                    num_chains=1, initial_params={"s": start.clone()}, hook_fn=hook,
                    disable_progbar=not args.progress)
        before = evaluations[0]
        tc = time.time()
        mcmc.run()
        evals.append(evaluations[0] - before)
        sample_evals.append(evaluations[0] - (first_draw[0] if first_draw else before))
        chains.append(mcmc.get_samples()["s"].detach().numpy())
        diag = mcmc.diagnostics()
        divergences.append(sum(len(v) for v in diag.get("divergences", {}).values()))
        accept.append(float(np.mean(list(diag.get("acceptance rate", {"": np.nan}).values()))))
        log.info("chain %d: %.0f s, %d gradient evaluations (%.1f per draw), %d divergences, "
                 "acceptance %.2f", c, time.time() - tc, evals[-1],
                 sample_evals[-1] / max(args.num_samples, 1), divergences[-1], accept[-1])
    t_nuts = time.time() - t1
    draws = np.stack(chains)  # (chain, draw, d)
    idata = az.from_dict(posterior={"s": draws}) if az.__version__.startswith("0.") else \
        az.from_dict({"posterior": {"s": draws}})
    rhat = np.asarray(az.rhat(idata)["s"]).ravel()
    ess = np.asarray(az.ess(idata, method="bulk")["s"]).ravel()
    pooled = draws.reshape(-1, d)

    mean_np = s_map.numpy()
    sds = {"diagonal": np.sqrt(lap_var.numpy()), "full": pair.full_sd.numpy()}
    cmp = {"diagonal": compare_with_laplace(pooled, mean_np, lap_var.numpy()),
           "full": compare_with_laplace(pooled, mean_np, full_cov.numpy())}

    # derived cells: free switches kept when inclusion >= keep; fixed switches kept
    def genotype_of(inclusion: np.ndarray) -> Any:
        keep = assemble({k: torch.ones_like(v) for k, v in map_switches.items()}, mask,
                        torch.as_tensor(inclusion >= args.keep, dtype=torch.float64))
        return derive(space, keep["edge_switch"] > 0, keep["op_switch"] > 0,
                      cell_type_scores=map_switches["op_switch"].abs())

    inclusion = {fit: inclusion_gaussian(mean_np, sds[fit]) for fit in FITS}
    inc_nuts = inclusion_from_draws(pooled)
    geno = {fit: genotype_of(inclusion[fit]) for fit in FITS}
    geno_nuts = genotype_of(inc_nuts)
    names = []
    for site in ("edge_switch", "op_switch"):
        for index in mask[site].nonzero().tolist():
            t, e = index[0], index[1]
            label = f"{space.cell_types[t]}:{space.edge_names(space.cell_types[t])[e]}"
            names.append(label if site == "edge_switch" else f"{label}:{space.ops[index[2]]}")

    keys = ("kl_diag", "kl_full", "max_abs_z", "max_abs_corr", "laplace_max_abs_corr",
            "max_abs_corr_diff")
    comparison = {
        fit: {
            **{k: cmp[fit][k] for k in keys},
            "sd_ratio_median": float(np.median(cmp[fit]["sd_ratio"])),
            "sd_ratio_range": [float(np.min(cmp[fit]["sd_ratio"])),
                               float(np.max(cmp[fit]["sd_ratio"]))],
            "keep_switches_differ": int(np.sum((inclusion[fit] >= args.keep)
                                               != (inc_nuts >= args.keep))),
            "genotype_differs": geno[fit] != geno_nuts,
            "genotype": describe(geno[fit]),
        }
        for fit in FITS
    }
    r_hat_max, ess_min = float(np.max(rhat)), float(np.min(ess))
    return {
        "config": {k: v for k, v in vars(args).items()
                   if k not in ("results", "out", "from_json")},
        "num_free_switches": d,
        "subset": m,
        "map_grad_norm": grad_norm,
        "curvature_rel_diff": pair.curvature_rel_diff,
        "seconds": {"train_and_laplace": round(t_laplace, 1), "nuts": round(t_nuts, 1)},
        "nuts": {"potential_evaluations": evals, "sampling_evaluations": sample_evals,
                 "divergences": divergences,
                 "acceptance_rate": accept},
        "switches": [
            {"name": n, "laplace_mean": float(s_map[i]),
             "diag_laplace_sd": float(sds["diagonal"][i]),
             "full_laplace_sd": float(sds["full"][i]), "nuts_mean": cmp["full"]["mean"][i],
             "nuts_sd": cmp["full"]["sd"][i], "r_hat": float(rhat[i]), "ess_bulk": float(ess[i]),
             "inclusion_diag_laplace": float(inclusion["diagonal"][i]),
             "inclusion_full_laplace": float(inclusion["full"][i]),
             "inclusion_nuts": float(inc_nuts[i])}
            for i, n in enumerate(names)
        ],
        "comparison": comparison,
        "chain_means": draws.mean(1).tolist(),
        "r_hat_max": r_hat_max,
        "ess_bulk_min": ess_min,
        "converged": convergence_ok(r_hat_max, ess_min),
        "genotype_nuts": describe(geno_nuts),
    }


def command_line(cfg: Mapping[str, Any]) -> str:
    """The command that reproduces a run with the configuration ``cfg``.

    Parameters
    ----------
    cfg : Mapping[str, Any]
        The ``config`` entry of a summary (the parsed options).

    Returns
    -------
    str
        ``python experiments/laplace_vs_nuts.py ... --results docs/results.md``.
    """
    parts = ["python experiments/laplace_vs_nuts.py"]
    for key in ("num_samples", "warmup", "chains", "subset", "free", "epochs", "gamma", "keep",
                "max_tree_depth", "target_accept", "init", "seed", "threads"):
        if key in cfg:
            parts.append(f"--{key.replace('_', '-')} {cfg[key]}")
    if cfg.get("full_mass"):
        parts.append("--full-mass")
    parts.append("--results docs/results.md")
    return " ".join(parts)


def side_by_side(result: Mapping[str, Any]) -> list[str]:
    """The table ``quantity | diagonal Laplace | full Laplace`` of a summary.

    Parameters
    ----------
    result : Mapping[str, Any]
        A summary of :func:`run` (its ``comparison`` and ``config`` entries).

    Returns
    -------
    list[str]
        Markdown lines.
    """
    cmp, keep = result["comparison"], result["config"]["keep"]
    nuts_corr = cmp["full"]["max_abs_corr"]

    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(cmp[fit]) for fit in FITS) + " |"

    return [
        "| quantity | diagonal Laplace | full Laplace |",
        "|---|---|---|",
        row("KL(NUTS marginal fits ‖ Laplace marginals), summed over switches",
            lambda c: f"{c['kl_diag']:.3f}"),
        row("KL(NUTS full-covariance fit ‖ Laplace)", lambda c: f"{c['kl_full']:.3f}"),
        row("max abs(mean difference) / Laplace sd", lambda c: f"{c['max_abs_z']:.2f}"),
        row("NUTS sd / Laplace sd: median (range)",
            lambda c: f"{c['sd_ratio_median']:.2f} ({c['sd_ratio_range'][0]:.2f} to "
                      f"{c['sd_ratio_range'][1]:.2f})"),
        row(f"largest abs correlation of the Laplace (NUTS: {nuts_corr:.2f})",
            lambda c: f"{c['laplace_max_abs_corr']:.2f}"),
        row("max abs(NUTS correlation − Laplace correlation)",
            lambda c: f"{c['max_abs_corr_diff']:.2f}"),
        row(f"free switches kept (inclusion >= {keep}) differently from NUTS",
            lambda c: f"{c['keep_switches_differ']} of {result['num_free_switches']}"),
        row("derived cell differs from NUTS's", lambda c: "yes" if c["genotype_differs"] else "no"),
    ]


def markdown(result: Mapping[str, Any]) -> str:
    """The results section: the side-by-side table, convergence, the per-switch table.

    Parameters
    ----------
    result : Mapping[str, Any]
        A summary of :func:`run`.

    Returns
    -------
    str
        Markdown text (without the section markers).
    """
    cfg = result["config"]
    d = result["num_free_switches"]
    nuts = result["nuts"]
    draws = cfg["chains"] * cfg["num_samples"]
    ess = [s["ess_bulk"] for s in result["switches"]]
    kl_noise = d * (d + 3) / (4.0 * float(np.median(ess)))
    mass = "dense" if cfg.get("full_mass") else "diagonal"
    init = "draws from the full Laplace" if cfg.get("init") == "laplace" else "the MAP"
    lines = [
        "## Diagonal and full Laplace vs NUTS on the switch posterior",
        "",
        f"Tiny supernet (bayesnas8, C=4, 3 cells) trained {cfg['epochs']} epochs on digits; "
        f"weights frozen; {d} free switches (`--free {cfg['free']}`, the others at the MAP); "
        f"prior N(0, {cfg['gamma']}); full-batch likelihood on {result['subset']} training "
        f"images. Both Laplace fits share the L-BFGS MAP (gradient norm "
        f"{result['map_grad_norm']:.1e}) and the likelihood: the diagonal one uses the diagonal "
        f"GGN, the full one the {d} x {d} GGN, whose diagonal equals the diagonal GGN (largest "
        f"relative difference {result['curvature_rel_diff']:.0e}). NUTS: {cfg['chains']} chains "
        f"x {cfg['num_samples']} draws after {cfg['warmup']} warm-up steps, {mass} mass matrix, "
        f"max tree depth {cfg['max_tree_depth']}, target acceptance {cfg['target_accept']}, "
        f"started at {init}; divergent transitions after warm-up: "
        f"{sum(nuts['divergences'])}; "
        f"{sum(nuts['potential_evaluations'])} gradient evaluations, "
        f"{result['seconds']['nuts']:.0f} s of NUTS on one CPU thread of a shared, loaded "
        "machine. Produced by "
        f"`{command_line(cfg)}`.",
        "",
        *side_by_side(result),
        "",
    ]
    r_hat, ess_min = result["r_hat_max"], result["ess_bulk_min"]
    if result["converged"]:
        lines.append(
            f"The chains converged by the criterion max r_hat <= {R_HAT_MAX} and min bulk ESS "
            f">= {ESS_MIN:.0f}: max r_hat {r_hat:.3f}, min bulk ESS {ess_min:.0f} ({draws} "
            "draws pooled)."
        )
    else:
        lines.append(
            f"The chains did NOT converge by the criterion max r_hat <= {R_HAT_MAX} and min "
            f"bulk ESS >= {ESS_MIN:.0f}: max r_hat {r_hat:.3f}, min bulk ESS {ess_min:.0f} "
            f"({draws} draws pooled); the NUTS columns are indicative only."
        )
        worst = [f"{s['name']} ({s['r_hat']:.2f}, ESS {s['ess_bulk']:.0f})"
                 for s in result["switches"] if not convergence_ok(s["r_hat"], s["ess_bulk"])]
        lines.append(
            "Switches that fail it (r_hat, bulk ESS): " + ", ".join(worst) + ". A NUTS mean "
            "near 0 with an sd well above both Laplace sds on such a switch suggests chains in "
            "different modes (e.g. of opposite sign) rather than too few draws."
        )
    lines += [
        "",
        "How to read it: each column divides by its own fit's sd, `1 / sqrt(P_ii)` for the "
        "diagonal fit (the conditional sd of a switch given the others) and `sqrt((P^-1)_ii)` "
        "(the marginal sd) for the full fit, with the same precision `P`; the diagonal fit has "
        "no correlations, so its correlation difference is the largest NUTS correlation. The "
        "KL values are estimates from the draws: the sampling error of the fitted mean and "
        f"covariance alone adds about d(d+3)/(4 ESS) = {kl_noise:.2f} nats to the "
        "full-covariance KL (median bulk ESS).",
    ]
    if result["map_grad_norm"] > 1e-3:
        lines.append(
            f"L-BFGS stopped with gradient norm {result['map_grad_norm']:.1e} (the loss has "
            "kinks from ReLU and max pooling), so the Laplace mean is not exactly the mode and "
            "part of the mean difference comes from that."
        )
    lines += [
        "",
        "| switch | Laplace mean | diag. Laplace sd | full Laplace sd | NUTS mean | NUTS sd | "
        "r_hat | ESS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["switches"]:
        lines.append(
            f"| {s['name']} | {s['laplace_mean']:.3f} | {s['diag_laplace_sd']:.3f} | "
            f"{s['full_laplace_sd']:.3f} | {s['nuts_mean']:.3f} | {s['nuts_sd']:.3f} | "
            f"{s['r_hat']:.3f} | {s['ess_bulk']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Parameters
    ----------
    argv : list[str], optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    argparse.Namespace
        The options.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-samples", dest="num_samples", type=int, default=100,
                   help="NUTS draws per chain kept after warm-up")
    p.add_argument("--warmup", type=int, default=60, help="NUTS warm-up steps per chain")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--subset", type=int, default=96, help="training images in the likelihood")
    p.add_argument("--free", choices=FREE_CHOICES, default="edge",
                   help="which switches NUTS samples (the others stay at the MAP)")
    p.add_argument("--epochs", type=int, default=4, help="SGD epochs to the MAP")
    p.add_argument("--gamma", type=float, default=1.0, help="prior variance of the switches")
    p.add_argument("--keep", type=float, default=0.95, help="inclusion needed to keep a switch")
    p.add_argument("--max-tree-depth", dest="max_tree_depth", type=int, default=5)
    p.add_argument("--target-accept", dest="target_accept", type=float, default=0.8,
                   help="NUTS target acceptance probability of the step size adaptation")
    p.add_argument("--full-mass", dest="full_mass", action="store_true",
                   help="adapt a dense NUTS mass matrix (default: diagonal)")
    p.add_argument("--init", choices=INIT_CHOICES, default="map",
                   help="start every chain at the MAP or at its own draw from the full Laplace")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--progress", action="store_true", help="show the NUTS progress bar")
    p.add_argument("--out", type=Path, default=None, help="write the JSON summary here too")
    p.add_argument("--results", type=Path, default=None,
                   help="markdown file to write the section into (e.g. docs/results.md)")
    p.add_argument("--from-json", dest="from_json", type=Path, default=None,
                   help="do not run: read a summary written by --out and write --results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the experiment, print the JSON summary, write the optional outputs.

    Parameters
    ----------
    argv : list[str], optional
        The command line arguments.

    Returns
    -------
    int
        The exit status.
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None and args.from_json is None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.results is not None:
        write_results_section(args.results, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
