"""How good is the diagonal Laplace approximation of the switch posterior? A check against NUTS.

A tiny supernet is trained on digits (weights and switches jointly, SGD, a ``N(0, gamma)`` prior
on the switches) to a MAP point. Then the network weights are frozen and only a few dozen
switches stay free (``--free``: the edge switches by default, the rest held at the MAP), and on a
fixed subset of the training data (full batch, network in eval mode) the posterior

    p(s | D) ∝ prod_n Categorical(y_n | softmax f(x_n; theta*, s)) * N(s | 0, gamma)

is approximated twice:

* Laplace: the MAP ``s*`` of this posterior (L-BFGS), then the diagonal GGN curvature
  (``pyronas.inference.curvature.diagonal_curvature``) and the variance
  ``1 / (M * H + 1 / gamma)`` (``M`` the subset size);
* NUTS (Pyro), several chains started at ``s*``.

Reported: per switch mean and sd of both, the KL divergence from the Gaussian fitted to the NUTS
draws (diagonal and full covariance) to the Laplace Gaussian, r_hat and ESS of the chains, and
whether the cell derived from each posterior (keep a free switch when its inclusion
``|E sign(s)|`` reaches ``--keep``, :mod:`pyronas.run_summary`) differs. The diagonal Laplace
variance is the *conditional* variance of a switch given the others; NUTS shows the marginal, so
correlated switches make the Laplace sds too small.

Usage::

    python experiments/laplace_vs_nuts.py --num-samples 100 --warmup 60 --chains 2 --subset 96

Prints a JSON summary; with ``--results docs/results.md`` writes a markdown section between the
markers ``<!-- laplace-vs-nuts:start -->`` and ``<!-- laplace-vs-nuts:end -->``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("laplace_vs_nuts")

MARK_START = "<!-- laplace-vs-nuts:start -->"
MARK_END = "<!-- laplace-vs-nuts:end -->"
FREE_CHOICES = ("edge", "normal_op", "reduce_op", "all")


# --------------------------------------------------------------------------------------------
# Gaussian comparison helpers (pure functions, tested fast)


def gaussian_kl(m1: Any, cov1: Any, m0: Any, cov0: Any) -> float:
    """``KL(N(m1, cov1) || N(m0, cov0))`` for full covariance matrices (float64).

    ``0.5 * [tr(S0^-1 S1) + (m0 - m1)^T S0^-1 (m0 - m1) - d + log det S0 - log det S1]``.
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
    """Elementwise ``KL(N(m1, v1) || N(m0, v0))`` of independent univariate Gaussians."""
    m1, v1 = np.asarray(m1, dtype=np.float64), np.asarray(v1, dtype=np.float64)
    m0, v0 = np.asarray(m0, dtype=np.float64), np.asarray(v0, dtype=np.float64)
    return 0.5 * (v1 / v0 + (m0 - m1) ** 2 / v0 - 1.0 + np.log(v0 / v1))


def compare_with_laplace(samples: Any, laplace_mean: Any, laplace_var: Any) -> dict[str, Any]:
    """Compare draws ``(n, d)`` with the diagonal Gaussian ``N(laplace_mean, diag(laplace_var))``.

    Returns
    -------
    dict
        ``mean``/``sd`` of the draws per switch, ``kl_diag`` (sum over switches of the KL from
        the per-switch Gaussian fit of the draws to the Laplace marginal), ``kl_full`` (KL from
        the full-covariance fit of the draws to the Laplace Gaussian), ``max_abs_z`` (largest
        ``|mean_draws - mean_laplace| / sd_laplace``), ``sd_ratio`` (draw sd / Laplace sd per
        switch) and ``max_abs_corr`` (largest off-diagonal correlation of the draws).
    """
    x = np.asarray(samples, dtype=np.float64)
    mu, var = np.asarray(laplace_mean, np.float64), np.asarray(laplace_var, np.float64)
    mean, cov = x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    off = corr[~np.eye(len(sd), dtype=bool)]
    return {
        "mean": mean.tolist(),
        "sd": sd.tolist(),
        "kl_diag": float(gaussian_kl_diag(mean, sd**2, mu, var).sum()),
        "kl_full": gaussian_kl(mean, cov, mu, np.diag(var)),
        "max_abs_z": float(np.max(np.abs(mean - mu) / np.sqrt(var))),
        "sd_ratio": (sd / np.sqrt(var)).tolist(),
        "max_abs_corr": float(np.max(np.abs(off))) if off.size else 0.0,
    }


def write_results_section(path: Path, text: str) -> None:
    """Replace the text between the markers in ``path`` (created, or appended to, if needed)."""
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
# the experiment


def free_mask(space: Any, free: str) -> dict[str, Tensor]:
    """Bool masks of the free switches, ``{site: (cell_type, edge[, op])}``."""
    edge_shape, op_shape = space.switch_shapes()
    mask = {"edge_switch": torch.zeros(edge_shape, dtype=torch.bool),
            "op_switch": torch.zeros(op_shape, dtype=torch.bool)}
    if free in ("edge", "all"):
        mask["edge_switch"][:] = True
    if free == "all":
        mask["op_switch"][:] = True
    if free.endswith("_op"):
        mask["op_switch"][space.cell_types.index(free[: -len("_op")])] = True
    return mask


def assemble(
    base: Mapping[str, Tensor], mask: Mapping[str, Tensor], s: Tensor
) -> dict[str, Tensor]:
    """Switch tensors with the free entries taken from the flat vector ``s``."""
    out, start = {}, 0
    for site in ("edge_switch", "op_switch"):
        n = int(mask[site].sum())
        value = base[site].clone()
        value[mask[site]] = s[start:start + n].to(value.dtype)
        out[site] = value
        start += n
    return out


def train_map(net: Any, splits: Any, epochs: int, gamma: float, seed: int) -> dict[str, Tensor]:
    """SGD on weights and switches with a ``N(0, gamma)`` switch prior; returns the switches."""
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole experiment; returns the JSON-able summary."""
    import arviz as az
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide import init_to_value

    from pyronas.data import load_dataset
    from pyronas.genotype import derive, describe
    from pyronas.inference.curvature import diagonal_curvature
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

    def nll_sum(s: Tensor) -> Tensor:
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

    # Laplace: diagonal GGN of the mean NLL on the subset
    def forward(sites: dict[str, Tensor], xb: Tensor) -> Tensor:
        sw = assemble(map_switches, mask, sites["s"])
        return net(xb, sw["edge_switch"], sw["op_switch"])

    curv = diagonal_curvature(forward, {"s": s_map}, [(x, y)], likelihood="categorical",
                              backend="ggn", module=net, chunk_size=16)["s"]
    lap_var = 1.0 / (m * curv + 1.0 / args.gamma)
    t_laplace = time.time() - t0

    # NUTS over the same posterior
    def model() -> None:
        scale = torch.full((d,), math.sqrt(args.gamma), dtype=torch.float64)
        s = pyro.sample("s", dist.Normal(torch.zeros(d, dtype=torch.float64), scale).to_event(1))
        pyro.factor("loglik", -nll_sum(s))

    chains = []
    t1 = time.time()
    for c in range(args.chains):
        pyro.set_rng_seed(args.seed + 100 + c)
        kernel = NUTS(model, init_strategy=init_to_value(values={"s": s_map}),
                      max_tree_depth=args.max_tree_depth, jit_compile=False)
        mcmc = MCMC(kernel, num_samples=args.num_samples, warmup_steps=args.warmup,
                    num_chains=1, disable_progbar=not args.progress)
        mcmc.run()
        chains.append(mcmc.get_samples()["s"].detach().numpy())
    t_nuts = time.time() - t1
    draws = np.stack(chains)  # (chain, draw, d)
    idata = az.from_dict(posterior={"s": draws}) if az.__version__.startswith("0.") else \
        az.from_dict({"posterior": {"s": draws}})
    rhat = np.asarray(az.rhat(idata)["s"]).ravel()
    ess = np.asarray(az.ess(idata, method="bulk")["s"]).ravel()

    cmp = compare_with_laplace(draws.reshape(-1, d), s_map.numpy(), lap_var.numpy())

    # derived cells: free switches kept when inclusion >= keep; fixed switches kept
    inc_lap = inclusion_gaussian(s_map.numpy(), np.sqrt(lap_var.numpy()))
    inc_nuts = inclusion_from_draws(draws.reshape(-1, d))

    def genotype_of(inclusion: np.ndarray) -> Any:
        keep = assemble({k: torch.ones_like(v) for k, v in map_switches.items()}, mask,
                        torch.as_tensor(inclusion >= args.keep, dtype=torch.float64))
        return derive(space, keep["edge_switch"] > 0, keep["op_switch"] > 0,
                      cell_type_scores=map_switches["op_switch"].abs())

    geno_lap, geno_nuts = genotype_of(inc_lap), genotype_of(inc_nuts)
    names = []
    for site in ("edge_switch", "op_switch"):
        for index in mask[site].nonzero().tolist():
            t, e = index[0], index[1]
            label = f"{space.cell_types[t]}:{space.edge_names(space.cell_types[t])[e]}"
            names.append(label if site == "edge_switch" else f"{label}:{space.ops[index[2]]}")

    return {
        "config": {k: v for k, v in vars(args).items() if k not in ("results", "out")},
        "num_free_switches": d,
        "subset": m,
        "map_grad_norm": grad_norm,
        "seconds": {"train_and_laplace": round(t_laplace, 1), "nuts": round(t_nuts, 1)},
        "switches": [
            {"name": n, "laplace_mean": float(s_map[i]), "laplace_sd": float(lap_var[i].sqrt()),
             "nuts_mean": cmp["mean"][i], "nuts_sd": cmp["sd"][i], "r_hat": float(rhat[i]),
             "ess_bulk": float(ess[i]), "inclusion_laplace": float(inc_lap[i]),
             "inclusion_nuts": float(inc_nuts[i])}
            for i, n in enumerate(names)
        ],
        "kl_diag": cmp["kl_diag"],
        "kl_full": cmp["kl_full"],
        "max_abs_z": cmp["max_abs_z"],
        "sd_ratio_median": float(np.median(cmp["sd_ratio"])),
        "sd_ratio_range": [float(np.min(cmp["sd_ratio"])), float(np.max(cmp["sd_ratio"]))],
        "max_abs_corr": cmp["max_abs_corr"],
        "r_hat_max": float(np.max(rhat)),
        "ess_bulk_min": float(np.min(ess)),
        "genotype_differs": geno_lap != geno_nuts,
        "genotype_laplace": describe(geno_lap),
        "genotype_nuts": describe(geno_nuts),
    }


def markdown(result: dict[str, Any]) -> str:
    """The results section (a table of the free switches and the headline numbers)."""
    cfg = result["config"]
    lines = [
        "## Diagonal Laplace vs NUTS on the switch posterior",
        "",
        f"Tiny supernet (bayesnas8, C=4, 3 cells) trained {cfg['epochs']} epochs on digits; "
        f"weights frozen; {result['num_free_switches']} free switches (`--free {cfg['free']}`, "
        f"the others at the MAP); prior N(0, {cfg['gamma']}); full-batch likelihood on "
        f"{result['subset']} training images. NUTS: {cfg['chains']} chains x "
        f"{cfg['num_samples']} draws after {cfg['warmup']} warm-up steps (max tree depth "
        f"{cfg['max_tree_depth']}); Laplace: L-BFGS MAP (gradient norm "
        f"{result['map_grad_norm']:.1e}) and the diagonal GGN. Produced by "
        f"`python experiments/laplace_vs_nuts.py --num-samples {cfg['num_samples']} "
        f"--warmup {cfg['warmup']} --chains {cfg['chains']} --subset {cfg['subset']} "
        f"--free {cfg['free']} --epochs {cfg['epochs']} --max-tree-depth "
        f"{cfg['max_tree_depth']} --seed {cfg['seed']} --results docs/results.md` "
        f"({result['seconds']['nuts']:.0f} s of NUTS on a 2-core CPU).",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| KL(NUTS diagonal fit ‖ Laplace), summed over switches | {result['kl_diag']:.3f} |",
        f"| KL(NUTS full-covariance fit ‖ Laplace) | {result['kl_full']:.3f} |",
        f"| max abs(mean difference) / Laplace sd | {result['max_abs_z']:.2f} |",
        f"| NUTS sd / Laplace sd: median (range) | {result['sd_ratio_median']:.2f} "
        f"({result['sd_ratio_range'][0]:.2f} to {result['sd_ratio_range'][1]:.2f}) |",
        f"| largest abs posterior correlation (NUTS) | {result['max_abs_corr']:.2f} |",
        f"| max r_hat / min bulk ESS | {result['r_hat_max']:.3f} / "
        f"{result['ess_bulk_min']:.0f} |",
        f"| derived cell differs (keep when inclusion >= {cfg['keep']}) | "
        f"{'yes' if result['genotype_differs'] else 'no'} |",
    ]
    caveats = []
    if result["r_hat_max"] > 1.01 or result["ess_bulk_min"] < 100:
        caveats.append(
            f"the NUTS chains have not converged at this size (max r_hat "
            f"{result['r_hat_max']:.2f}, min bulk ESS {result['ess_bulk_min']:.0f}): the NUTS "
            "columns are indicative only; rerun with more warm-up and draws"
        )
    if result["map_grad_norm"] > 1e-3:
        caveats.append(
            f"L-BFGS stopped with gradient norm {result['map_grad_norm']:.1e}, so the Laplace "
            "mean is not exactly the mode and part of the mean difference comes from that"
        )
    if caveats:
        lines += ["", "Caveats: " + "; ".join(caveats) + "."]
    lines += [
        "",
        "| switch | Laplace mean | Laplace sd | NUTS mean | NUTS sd | r_hat | ESS |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result["switches"]:
        lines.append(
            f"| {s['name']} | {s['laplace_mean']:.3f} | {s['laplace_sd']:.3f} | "
            f"{s['nuts_mean']:.3f} | {s['nuts_sd']:.3f} | {s['r_hat']:.3f} | "
            f"{s['ess_bulk']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-samples", dest="num_samples", type=int, default=100)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--subset", type=int, default=96, help="training images in the likelihood")
    p.add_argument("--free", choices=FREE_CHOICES, default="edge",
                   help="which switches NUTS samples (the others stay at the MAP)")
    p.add_argument("--epochs", type=int, default=4, help="SGD epochs to the MAP")
    p.add_argument("--gamma", type=float, default=1.0, help="prior variance of the switches")
    p.add_argument("--keep", type=float, default=0.95, help="inclusion needed to keep a switch")
    p.add_argument("--max-tree-depth", dest="max_tree_depth", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--progress", action="store_true", help="show the NUTS progress bar")
    p.add_argument("--out", type=Path, default=None, help="write the JSON summary here too")
    p.add_argument("--results", type=Path, default=None,
                   help="markdown file to write the section into (e.g. docs/results.md)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.results is not None:
        write_results_section(args.results, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
