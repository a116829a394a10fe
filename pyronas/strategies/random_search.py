"""Random search baselines on the shared supernet.

``random_mode: ws`` -- random search with weight sharing (Li & Talwalkar, UAI 2019): train the
supernet weights for ``search_epochs`` epochs where every step uses a freshly sampled random cell
(one-hot switches, and :meth:`~pyronas.supernet.SuperNet.set_alive` so that only that cell's ops
run and get gradients and updates; the other ops are left untouched, weight decay and momentum
included), then sample ``num_candidates`` cells,
score each with the shared weights on the ``val`` split (batch norms recalibrated per cell on
the same ``bn_batches`` training batches) and keep the best.

``random_mode: plain`` -- a seeded random cell, no data and no training (the control).

A random cell (:func:`sample_random_genotype`): in two-input spaces every intermediate node takes
``min(2, incoming edges)`` distinct incoming edges chosen uniformly, each with a uniform non-zero
op (the DARTS cell family); in ``nb201`` every edge takes a uniform op among the non-zero ops and
``none``, redrawn until the input reaches the output. The candidates are drawn from a generator
seeded by ``(seed, 2)``, so the plain random cell of a seed is the first weight-sharing candidate
of that seed.
"""

from __future__ import annotations

import csv
import itertools
import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyronas.data import make_loader
from pyronas.genotype import Genotype, GenotypeError, derive
from pyronas.search import compact_genotype, evaluate_supernet, recalibrate_batchnorm
from pyronas.space import SearchSpace
from pyronas.strategies.harness import (
    Harness,
    StrategyResult,
    cosine_lr,
    derive_one_op_per_edge,
    finish,
    genotype_switches,
    prepare,
)

log = logging.getLogger(__name__)

RANDOM_DEFAULTS: dict[str, Any] = {
    "random_mode": "ws",  # ws | plain
    "num_candidates": 20,
    "search_epochs": 6,
    "lr_min": 1e-3,
}
"""Strategy keys read with ``cfg.get(key, default)``."""

RANDOM_MODES = ("ws", "plain")


def _opt(cfg: dict[str, Any], key: str) -> Any:
    value = cfg.get(key)
    return RANDOM_DEFAULTS[key] if value is None else value


def sample_random_genotype(space: SearchSpace, rng: np.random.Generator,
                           max_tries: int = 1000) -> Genotype:
    """A uniformly random cell of the space (see the module docstring).

    Parameters
    ----------
    space
        The search space.
    rng
        NumPy generator (the only source of randomness).
    max_tries
        Redraws allowed for ``nb201`` cells whose output is cut off from the input.
    """
    if space.num_inputs == 1:
        for _ in range(max_tries):
            choice = rng.integers(0, space.num_ops + 1, size=(len(space.cell_types),
                                                               space.num_edges))
            try:
                return derive_one_op_per_edge(space, torch.from_numpy(choice))
            except GenotypeError:
                continue
        raise RuntimeError(f"no connected random cell of {space.name!r} in {max_tries} draws")
    edge_shape, op_shape = space.switch_shapes()
    keep_edge = torch.zeros(edge_shape, dtype=torch.bool)
    keep_op = torch.zeros(op_shape, dtype=torch.bool)
    for t, cell_type in enumerate(space.cell_types):
        edges = space.edges[cell_type]
        for j in range(space.num_nodes):
            dst = space.num_inputs + j
            incoming = [e for e, (_, d) in enumerate(edges) if d == dst]
            chosen = rng.choice(incoming, size=min(2, len(incoming)), replace=False)
            for e in chosen:
                keep_edge[t, int(e)] = True
                keep_op[t, int(e), int(rng.integers(space.num_ops))] = True
    return derive(space, keep_edge, keep_op)


def _candidates(space: SearchSpace, seed: int, n: int) -> list[Genotype]:
    rng = np.random.default_rng([seed, 2])
    return [sample_random_genotype(space, rng) for _ in range(n)]


def _bn_batches(h: Harness) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed training batches every cell's batch norms are recalibrated on."""
    assert h.splits is not None
    loader = make_loader(h.splits.train, h.cfg["batch_size"], shuffle=True,
                         seed=h.cfg["seed"] + 3)
    return list(itertools.islice(loader, h.cfg["bn_batches"]))


def _score(h: Harness, genotype: Genotype, bn_batches: list) -> float:
    """Validation accuracy of a cell with the shared weights (batch norms recalibrated on
    ``bn_batches``, the same for every cell)."""
    assert h.net is not None
    sites = genotype_switches(h.space, genotype, h.net)
    h.net.set_alive(sites["op_switch"] != 0)  # compute the cell's ops only
    try:
        if bn_batches:
            recalibrate_batchnorm(h.net, sites, bn_batches, h.device)
        return evaluate_supernet(h.net, sites, h.loaders["val"], h.device)
    finally:
        h.net.set_alive(None)


def _train_supernet(h: Harness, epochs: int, probe: Genotype, bn_batches: list
                    ) -> list[dict[str, Any]]:
    """Weight-sharing training with a random cell per step; one metrics row per epoch."""
    net, cfg, device = h.net, h.cfg, h.device
    assert net is not None
    rng = np.random.default_rng([cfg["seed"], 1])
    weights = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(weights, lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    records = []
    for epoch in range(epochs):
        lr = cosine_lr(cfg["lr"], float(_opt(cfg, "lr_min")), epoch, epochs)
        for group in opt.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        total, count = 0.0, 0
        net.train()
        for x, y in h.loaders["train"]:
            x, y = x.to(device), y.to(device)
            sites = genotype_switches(h.space, sample_random_genotype(h.space, rng), net)
            # single path: only the sampled ops run, so only their weights get gradients and
            # updates (the others are not touched, weight decay included)
            net.set_alive(sites["op_switch"] != 0)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x, sites["edge_switch"], sites["op_switch"]), y)
            loss.backward()
            if cfg["grad_clip"]:
                nn.utils.clip_grad_norm_(weights, cfg["grad_clip"])
            opt.step()
            total += float(loss.detach())
            count += 1
        net.set_alive(None)
        if count == 0:
            raise ValueError("the train split is empty: nothing to train the supernet on")
        seconds = time.perf_counter() - start
        row = {
            "epoch": epoch + 1, "train_loss": total / count,
            "val_acc": _score(h, probe, bn_batches), "lr": lr, "seconds": seconds,
            "genotype": compact_genotype(probe),
        }
        h.metrics.append(row)
        records.append(row)
        log.info("random-ws epoch %d/%d  train loss %.3f  probe val acc %.3f  %.1f s",
                 epoch + 1, epochs, row["train_loss"], row["val_acc"], seconds)
    return records


def run_random(cfg: dict[str, Any], out_dir: Any = None) -> StrategyResult:
    """Random search (``random_mode`` ``ws`` or ``plain``) with a resolved search config.

    Parameters
    ----------
    cfg
        Resolved search config; strategy keys :data:`RANDOM_DEFAULTS` are read with defaults.
    out_dir
        Run folder (default ``cfg["out"]`` or ``runs/random-<time>``).

    Returns
    -------
    StrategyResult
        ``strategy`` ``random-ws`` or ``random-plain``; for ``ws``, ``extra["candidates"]`` is
        the list of ``(genotype, val_acc)``.

    The run folder gets ``config.yaml``, ``metrics.csv`` (``ws``: per epoch ``epoch``,
    ``train_loss``, ``val_acc`` of a fixed probe cell (the first candidate), ``lr``, ``seconds``,
    ``genotype`` of the probe; ``plain``: one row, epoch 0), ``candidates.csv`` (``ws``),
    ``genotype.json``, ``cell_*.png`` and ``metrics.json``.
    """
    mode = _opt(cfg, "random_mode")
    if mode not in RANDOM_MODES:
        raise ValueError(f"random_mode must be one of {', '.join(RANDOM_MODES)}, got {mode!r}")
    strategy = f"random-{mode}"
    if mode == "plain":
        h = prepare(cfg, out_dir, prefix=strategy, data=False)
        genotype = _candidates(h.space, cfg["seed"], 1)[0]
        row = {"epoch": 0, "train_loss": None, "val_acc": None, "lr": None, "seconds": 0.0,
               "genotype": compact_genotype(genotype)}
        h.metrics.append(row)
        return finish(h, genotype, strategy, [row], {"num_candidates": 1})

    n = int(_opt(cfg, "num_candidates"))
    epochs = int(_opt(cfg, "search_epochs"))
    if n < 1 or epochs < 0:
        raise ValueError(f"num_candidates must be >= 1 and search_epochs >= 0, got {n}, {epochs}")
    h = prepare(cfg, out_dir, prefix=strategy)
    candidates = _candidates(h.space, cfg["seed"], n)
    bn_batches = _bn_batches(h)
    records = _train_supernet(h, epochs, candidates[0], bn_batches)
    start = time.perf_counter()
    scores = [_score(h, g, bn_batches) for g in candidates]
    selection_seconds = time.perf_counter() - start
    best = int(np.argmax(scores))  # first of the best on ties
    with (h.out / "candidates.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["candidate", "val_acc", "selected", "genotype"])
        for i, (g, s) in enumerate(zip(candidates, scores, strict=True)):
            writer.writerow([i, f"{s:.6g}", int(i == best), compact_genotype(g)])
    log.info("random-ws: best of %d candidates: #%d, val acc %.3f", n, best, scores[best])
    result = finish(h, candidates[best], strategy, records, {
        "num_candidates": n, "best_val_acc": scores[best], "selection_seconds": selection_seconds,
    })
    result.extra["candidates"] = list(zip(candidates, scores, strict=True))
    return result


__all__ = ["RANDOM_DEFAULTS", "run_random", "sample_random_genotype"]
