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
``none``, redrawn until the input reaches the output. The candidates are drawn from the
``candidates`` seed stream (:class:`~pyronas.run_setup.SeedStreams`), so the plain random cell of
a seed is the first weight-sharing candidate of that seed.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyronas.data import make_loader
from pyronas.genotype import Genotype, GenotypeError, derive
from pyronas.run_setup import RunContext
from pyronas.runs import atomic_write_text, compact_genotype
from pyronas.settings import SearchSettings, StrategySettings
from pyronas.space import SearchSpace
from pyronas.strategies.harness import (
    StrategyResult,
    cosine_lr,
    derive_one_op_per_edge,
    finish,
    genotype_switches,
    resume_epoch_checkpoint,
    save_epoch_checkpoint,
    start_strategy,
)
from pyronas.supernet_eval import evaluate_supernet, recalibrate_batchnorm

log = logging.getLogger(__name__)

RANDOM_DEFAULTS: dict[str, Any] = {
    key: getattr(StrategySettings(), key)
    for key in ("random_mode", "num_candidates", "search_epochs", "lr_min")
}
"""The random-search options of :class:`~pyronas.settings.StrategySettings` and their
defaults."""


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
    alive_edge = torch.zeros(edge_shape, dtype=torch.bool)
    alive_op = torch.zeros(op_shape, dtype=torch.bool)
    for t, cell_type in enumerate(space.cell_types):
        edges = space.edges[cell_type]
        for j in range(space.num_nodes):
            dst = space.num_inputs + j
            incoming = [e for e, (_, d) in enumerate(edges) if d == dst]
            chosen = rng.choice(incoming, size=min(2, len(incoming)), replace=False)
            for e in chosen:
                alive_edge[t, int(e)] = True
                alive_op[t, int(e), int(rng.integers(space.num_ops))] = True
    return derive(space, alive_edge, alive_op)


def _candidates(h: RunContext, n: int) -> list[Genotype]:
    """``n`` random cells of the ``candidates`` seed stream."""
    rng = h.seeds.numpy("candidates")
    return [sample_random_genotype(h.space, rng) for _ in range(n)]


def _bn_batches(h: RunContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed training batches every cell's batch norms are recalibrated on."""
    assert h.splits is not None
    train = h.settings.training
    loader = make_loader(h.splits.train, train.batch_size, shuffle=True,
                         seed=h.seeds.seed("bn_batches"))
    return list(itertools.islice(loader, train.bn_batches))


def _score(h: RunContext, genotype: Genotype, bn_batches: list) -> float:
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


CHECKPOINT_KIND = "pyronas-random-ws-search/1"
"""The ``kind`` of the per-epoch checkpoint of random search with weight sharing."""


def _train_supernet(h: RunContext, epochs: int, probe: Genotype, bn_batches: list
                    ) -> list[dict[str, Any]]:
    """Weight-sharing training with a random cell per step (the ``paths`` seed stream); one
    metrics row and one checkpoint per epoch (a resumed run continues after the last one)."""
    net, train, device = h.net, h.settings.training, h.device
    assert net is not None
    rng = h.seeds.numpy("paths")
    weights = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(weights, lr=train.lr, momentum=train.momentum,
                          weight_decay=train.weight_decay)
    records: list[dict[str, Any]] = []
    first = 0
    saved = resume_epoch_checkpoint(h, CHECKPOINT_KIND)
    if saved is not None:
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["paths"]
        records, first = list(saved["records"]), int(saved["epoch"])
    for epoch in range(first, epochs):
        lr = cosine_lr(train.lr, h.settings.strategy.lr_min, epoch, epochs)
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
            if train.grad_clip:
                nn.utils.clip_grad_norm_(weights, train.grad_clip)
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
        save_epoch_checkpoint(h, CHECKPOINT_KIND, epoch + 1, net=net.state_dict(),
                              optimizer=opt.state_dict(), paths=rng.bit_generator.state,
                              records=records)
    return records


def run_random(cfg: SearchSettings | Mapping[str, Any], out_dir: Any = None) -> StrategyResult:
    """Random search (``random_mode`` ``ws`` or ``plain``) with a resolved search config.

    Parameters
    ----------
    cfg
        Search settings (or a nested or flat mapping of them); the strategy section holds
        :data:`RANDOM_DEFAULTS`.
    out_dir
        Run folder (default ``run.out`` or ``runs/random-<time>``).

    Returns
    -------
    StrategyResult
        ``strategy`` ``random-ws`` or ``random-plain``; for ``ws``, ``extra["candidates"]`` is
        the list of ``(genotype, val_acc)``.

    The run folder gets ``config.yaml``, ``metrics.csv`` (``ws``: per epoch ``epoch``,
    ``train_loss``, ``val_acc`` of a fixed probe cell (the first candidate), ``lr``, ``seconds``,
    ``genotype`` of the probe; ``plain``: one row, epoch 0), ``checkpoint.pt`` (``ws``, after
    every epoch: ``--resume`` continues from it), ``candidates.csv`` (``ws``),
    ``genotype.json``, ``cell_*.png`` and ``metrics.json``. A ``plain`` run has nothing to
    resume: ``--resume`` draws its cell again.
    """
    settings = SearchSettings.from_mapping(cfg)
    mode = settings.strategy.random_mode
    strategy = f"random-{mode}"
    if mode == "plain":
        h = start_strategy(settings, out_dir, prefix=strategy, data=False)
        genotype = _candidates(h, 1)[0]
        h.metrics.truncate_after("epoch", -1)  # a resumed plain run starts over
        row = {"epoch": 0, "train_loss": None, "val_acc": None, "lr": None, "seconds": 0.0,
               "genotype": compact_genotype(genotype)}
        h.metrics.append(row)
        return finish(h, genotype, strategy, [row], {"num_candidates": 1})

    n = settings.strategy.num_candidates
    epochs = settings.strategy.search_epochs
    h = start_strategy(settings, out_dir, prefix=strategy)
    candidates = _candidates(h, n)
    bn_batches = _bn_batches(h)
    records = _train_supernet(h, epochs, candidates[0], bn_batches)
    start = time.perf_counter()
    scores = [_score(h, g, bn_batches) for g in candidates]
    selection_seconds = time.perf_counter() - start
    best = int(np.argmax(scores))  # first of the best on ties
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["candidate", "val_acc", "selected", "genotype"])
    for i, (g, s) in enumerate(zip(candidates, scores, strict=True)):
        writer.writerow([i, f"{s:.6g}", int(i == best), compact_genotype(g)])
    atomic_write_text(table.getvalue(), h.out / "candidates.csv")
    log.info("random-ws: best of %d candidates: #%d, val acc %.3f", n, best, scores[best])
    result = finish(h, candidates[best], strategy, records, {
        "num_candidates": n, "best_val_acc": scores[best], "selection_seconds": selection_seconds,
    })
    result.extra["candidates"] = list(zip(candidates, scores, strict=True))
    return result


__all__ = ["RANDOM_DEFAULTS", "run_random", "sample_random_genotype"]
