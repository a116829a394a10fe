"""Proxyless search: BayesNAS over the tree cells of a PyramidNet, one set of switches per block.

:func:`run_proxyless_search` builds the :class:`~pyronas.proxyless.pyramidnet.ProxylessSuperNet`,
the space of :func:`~pyronas.proxyless.space.proxyless_space` (every block its own switch group)
and runs the generic type-II loop :func:`pyronas.inference.type2.run_type2` with a prior model
file of ``models/`` (HARD by default: the parent edge of a tree node gates its leaf edges). The
derived genotype has one tree per block.

Run folder::

    config.yaml     the settings and run information
    metrics.csv     one row per type-II iteration: iteration, log_evidence, train_objective,
                    val_acc (supernet at the switch means), live_edges, live_ops, seconds
    posterior.pt    the switch posterior (format ``pyronas-posterior/1``, space ``proxyless``)
    posterior.nc    its ArviZ export (dims ``cell_type`` = block ``b0 ..``, ``edge``, ``op``)
    genotype.json   the tree genotype (``pyronas-tree/1``), one tree per block
    trees.txt       a drawing of every block's tree
    metrics.json    search seconds, device, ops kept, parameter counts (written last)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pyronas.config import save_resolved_config
from pyronas.data import DeviceBatches, check_dataset_name, load_dataset, make_loader
from pyronas.dataclass_flags import check_setting_keys
from pyronas.distributed import refuse_data_parallel
from pyronas.inference import BACKENDS
from pyronas.inference.type2 import Type2Config, Type2State, run_type2
from pyronas.models import load_prior
from pyronas.proxyless.pyramidnet import ProxylessSuperNet, PyramidTreeNet, blocks_per_stage
from pyronas.proxyless.space import derive_trees, proxyless_space
from pyronas.proxyless.tree import TreeGenotype, draw_tree, tree_genotype_to_dict
from pyronas.run_setup import SeedStreams
from pyronas.runs import MetricsCSV, atomic_write_text
from pyronas.runtime import resolve_device, seed_everything
from pyronas.search_posterior import SearchPosterior
from pyronas.space import SITES
from pyronas.supernet_eval import recalibrate_batchnorm

log = logging.getLogger(__name__)

__all__ = ["ProxylessResult", "ProxylessSettings", "alive_ops", "run_proxyless_search"]


@dataclass(frozen=True)
class ProxylessSettings:
    """Everything a proxyless search reads; every value is checked when built.

    Attributes
    ----------
    dataset, data_dir, train_size, fractions
        The data set and its ``(train, search, val)`` shares (``search`` gives the curvature
        batches).
    seed, device, out
        Root seed, ``auto`` / ``cpu`` / ``cuda``, the run folder.
    depth, alpha
        PyramidNet depth (``6 n + 2``; 110 in the paper) and widening (84).
    batch_size, lr, switch_lr, momentum, weight_decay, grad_clip
        SGD of the MAP epochs (the paper's search: batch 32, lr 0.1).
    t_max, epochs_per_iter, backend, curvature_batches, threshold
        The type-II loop (:class:`~pyronas.inference.type2.Type2Config`).
    prior, prior_options
        Prior model file (name or path) and its ``init_hypers`` options.
    max_batches
        At most this many batches per epoch (``None``: all; small for smoke runs).
    """

    dataset: str = "cifar10"
    data_dir: str | None = None
    train_size: int | None = None
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    depth: int = 110
    alpha: float = 84.0
    batch_size: int = 32
    lr: float = 0.1
    switch_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0
    t_max: int = 6
    epochs_per_iter: int = 1
    backend: str = "ggn_lean"
    curvature_batches: int = 4
    threshold: float = 1e-3
    prior: str = "hard"
    prior_options: dict[str, Any] = field(default_factory=dict)
    max_batches: int | None = None

    def __post_init__(self) -> None:
        check_dataset_name(self.dataset)
        blocks_per_stage(self.depth)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown curvature backend {self.backend!r}; known: "
                             f"{', '.join(sorted(BACKENDS))}")
        for name in ("batch_size", "t_max", "epochs_per_iter", "curvature_batches"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_batches is not None and (int(self.max_batches) != self.max_batches
                                             or self.max_batches < 1):
            raise ValueError(f"max_batches must be a positive integer or None, got "
                             f"{self.max_batches!r}")
        for name in ("lr", "switch_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not (self.alpha >= 0 and self.threshold >= 0):
            raise ValueError("alpha and threshold must be at least 0")
        object.__setattr__(self, "fractions", tuple(self.fractions))

    @classmethod
    def from_mapping(cls, values: ProxylessSettings | Mapping[str, Any]) -> ProxylessSettings:
        """Settings from a flat mapping; an unknown key names the closest valid one."""
        if isinstance(values, ProxylessSettings):
            return values
        check_setting_keys(cls, values, "proxyless")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (``config.yaml``)."""
        data = dataclasses.asdict(self)
        data["fractions"] = list(self.fractions)
        return data


@dataclass
class ProxylessResult:
    """What :func:`run_proxyless_search` returns."""

    out: Path
    genotype: TreeGenotype
    metrics: dict[str, Any]
    state: Type2State


def alive_ops(masks: Mapping[str, Tensor]) -> Tensor:
    """``(block, edge, op)``: the op's switch and its edge's switch both survived."""
    return masks["op_switch"] & masks["edge_switch"].unsqueeze(-1)


@torch.no_grad()
def _accuracy(net: ProxylessSuperNet, sites: Mapping[str, Tensor], batches: DeviceBatches) -> float:
    net.eval()
    correct = total = 0
    for x, y in batches:
        logits = net(x, sites["edge_switch"], sites["op_switch"])
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    net.train()
    return correct / max(total, 1)


def run_proxyless_search(cfg: ProxylessSettings | Mapping[str, Any],
                         out_dir: str | Path | None = None) -> ProxylessResult:
    """Search the tree cells of a PyramidNet with BayesNAS (see the module docstring).

    Raises
    ------
    FileExistsError
        The folder already holds a finished proxyless search (nothing is overwritten).
    ValueError
        Bad settings.
    """
    refuse_data_parallel("a proxyless search")
    settings = ProxylessSettings.from_mapping(cfg)
    prior = load_prior(settings.prior)
    out = Path(out_dir or settings.out or time.strftime("runs/proxyless-%Y%m%d-%H%M%S"))
    if (out / "metrics.json").exists():
        raise FileExistsError(f"{out} already holds a finished search (metrics.json); choose "
                              "another folder (nothing was overwritten)")
    start = time.perf_counter()
    device = resolve_device(settings.device)
    seeds = SeedStreams(settings.seed)
    seed_everything(seeds.seed("torch"))
    splits = load_dataset(settings.dataset, data_dir=settings.data_dir,
                          seed=seeds.seed("splits"), train_size=settings.train_size,
                          fractions=settings.fractions)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved_config({"proxyless": settings.to_dict()}, out, seed=settings.seed)

    def batches(data: Any, stream: str | None) -> DeviceBatches:
        loader = make_loader(data, settings.batch_size, shuffle=stream is not None,
                             seed=seeds.seed(stream) if stream else 0,
                             pin_memory=device.type == "cuda")
        return DeviceBatches(loader, device, settings.max_batches)

    train, search, val = (batches(splits.train, "train_order"),
                          batches(splits.search, "search_order"), batches(splits.val, None))
    net = ProxylessSuperNet(settings.depth, settings.alpha, splits.num_classes,
                            splits.in_channels).to(device)
    space = proxyless_space(net.num_blocks, net.template)
    hypers = prior.init_hypers(space, **settings.prior_options)
    edge, op = net.init_switches()
    metrics = MetricsCSV(out / "metrics.csv")
    history: list[dict[str, Any]] = []

    def record(row: dict[str, Any], state: Type2State) -> None:
        net.set_alive(alive_ops(state.masks))
        # the running statistics remember the ops just pruned: re-estimate them first
        recalibrate_batchnorm(net, state.sites, itertools.islice(train, settings.curvature_batches),
                              device)
        val_acc = _accuracy(net, state.sites, val)
        alive = alive_ops(state.masks)
        live_edges = int(alive.any(-1).sum())
        metrics.append({"iteration": row["iteration"], "log_evidence": row["log_evidence"],
                        "train_objective": row["objective"], "val_acc": val_acc,
                        "live_edges": live_edges, "live_ops": int(alive.sum()),
                        "seconds": row["wall_time"]})
        history.append({"iteration": row["iteration"], "log_evidence": row["log_evidence"],
                        "val_acc": val_acc, "live_ops": int(alive.sum()),
                        "gamma": {k: v.detach().cpu().clone()
                                  for k, v in state.hypers["gamma"].items()}})
        log.info("iteration %d: val acc %.4f, live edges %d/%d, live ops %d/%d",
                 row["iteration"], val_acc, live_edges, alive.shape[0] * alive.shape[1],
                 int(alive.sum()), alive.numel())

    type2 = Type2Config(
        t_max=settings.t_max, epochs_per_iter=settings.epochs_per_iter, lr=settings.lr,
        site_lr=settings.switch_lr, momentum=settings.momentum,
        weight_decay=settings.weight_decay, grad_clip=settings.grad_clip,
        backend=settings.backend, curvature_batches=settings.curvature_batches,
        threshold=settings.threshold,
    )
    state = run_type2(prior, net, {"edge_switch": edge, "op_switch": op}, hypers, train,
                      search, len(splits.train), config=type2, callback=record,
                      before_curvature=lambda s: net.set_alive(None))
    net.set_alive(None)
    return _finish(out, settings, net, state, history, len(splits.train), splits, device,
                   time.perf_counter() - start)


def _finish(out: Path, settings: ProxylessSettings, net: ProxylessSuperNet, state: Type2State,
            history: list[dict[str, Any]], num_data: int, splits: Any, device: torch.device,
            seconds: float) -> ProxylessResult:
    from pyronas.arviz_export import save_arviz, to_arviz

    fit = state.posterior
    assert fit is not None
    alive = alive_ops(state.masks)
    scores = (fit.mean["edge_switch"].unsqueeze(-1) * fit.mean["op_switch"]).abs()
    genotype = derive_trees(net.template, alive, scores, name=out.name)
    posterior = SearchPosterior.from_fit(
        space="proxyless", prior=settings.prior, tied=True, cell_type_index=None,
        num_data=num_data, mean=fit.mean, var=fit.var, curvature=fit.curvature,
        hypers=state.hypers, alive={s: state.masks[s] for s in SITES}, history=history,
    )
    posterior.save(out / "posterior.pt")
    try:
        save_arviz(to_arviz(posterior.to_dict(), space=proxyless_space(net.num_blocks,
                                                                       net.template)),
                   out / "posterior.nc")
    except (ValueError, OSError) as err:  # the search result stands without the export
        log.warning("posterior.nc not written: %s", str(err).splitlines()[0])
    atomic_write_text(json.dumps(tree_genotype_to_dict(genotype), indent=1) + "\n",
                      out / "genotype.json")
    drawings = [draw_tree(cell, f"block {b} (width {w})")
                for b, (cell, w) in enumerate(zip(genotype.cells, net.widths, strict=True))]
    atomic_write_text("\n\n".join(drawings) + "\n", out / "trees.txt")
    eval_net = PyramidTreeNet(genotype, settings.depth, settings.alpha, splits.num_classes,
                              splits.in_channels)
    summary = {
        "search_seconds": seconds,
        "device": str(device),
        "blocks": net.num_blocks,
        "switches": int(sum(s.numel() for s in state.sites.values())),
        "live_ops": int(alive.sum()),
        "live_edges": int(alive.any(-1).sum()),
        "total_edges": int(alive.shape[0] * alive.shape[1]),
        "supernet_params": sum(p.numel() for p in net.parameters()),
        "derived_params": sum(p.numel() for p in eval_net.parameters()),
        "iterations": state.iteration,
        "final_val_acc": history[-1]["val_acc"] if history else None,
    }
    atomic_write_text(json.dumps(summary, indent=2) + "\n", out / "metrics.json")
    log.info("proxyless search done: %d/%d edges, %d ops kept, derived net %.3f M params (%s)",
             summary["live_edges"], summary["total_edges"], summary["live_ops"],
             summary["derived_params"] / 1e6, out)
    return ProxylessResult(out, genotype, summary, state)
