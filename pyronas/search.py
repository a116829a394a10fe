"""BayesNAS search end to end: data -> supernet -> type-II loop -> posterior -> genotype.

:func:`run_search` wires the NAS pieces (search space, supernet, data splits, a prior model file)
to the generic engine :func:`pyronas.inference.type2.run_type2`, and writes a run folder (see
``docs/contracts.md``): ``config.yaml``, ``metrics.csv`` (one row per type-II iteration),
``posterior.pt``, ``genotype.json``, cell diagrams, ``posterior.nc`` and ``checkpoint.pt``.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyronas.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from pyronas.config import load_config, save_resolved_config
from pyronas.data import DataSplits, load_dataset, make_loader
from pyronas.genotype import (
    Genotype,
    GenotypeError,
    derive,
    save_genotype,
    to_darts_top2,
    to_nb201_string,
)
from pyronas.inference.type2 import Type2Config, Type2State, run_type2
from pyronas.models import load_prior
from pyronas.runs import MetricsCSV, atomic_write_text
from pyronas.runtime import resolve_device, seed_everything
from pyronas.space import SearchSpace, get_space
from pyronas.supernet import SuperNet

log = logging.getLogger(__name__)

SEARCH_DEFAULTS: dict[str, Any] = {
    "strategy": "bayesnas",
    "prior": "hard",  # a file in models/ or a path to a model file
    "space": "bayesnas8",
    "dataset": "digits",
    "data_dir": None,
    "download": False,
    "train_size": None,
    "image_size": None,
    # supernet
    "channels": 8,
    "layers": 5,
    "tied": True,
    # BayesNAS
    "curvature": "ggn",  # ggn | fisher | exact | layerwise
    "curvature_batches": 4,
    "curvature_multiplier": 1.0,  # batch size reproduces the authors' summed curvature
    "lambda_edge": 0.02,
    "lambda_op": 0.02,
    "t_max": 6,
    "schedule": "paper",  # paper | released
    "threshold": 1e-3,  # prune when gamma < threshold
    "z_threshold": None,  # also prune during the search when |mean| / sd < z_threshold
    "z_select": None,  # genotype needs |mean| / sd >= z_select (None: 2 for priors without a
    # closed-form update, off for hard / ard; 0: off)
    # training
    "epochs": 1,  # MAP epochs per type-II iteration
    "batch_size": 32,
    "lr": 0.025,
    "switch_lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,
    "seed": 0,
    "device": "auto",
    "num_threads": None,
    "progress": True,
    "out": None,
    "resume": False,
    "bn_batches": 4,  # training batches that re-estimate batch-norm statistics per iteration
    "posterior_draws": 25,  # per chain, for the ArviZ export
    "loglik_batches": 1,  # validation batches of the ArviZ log likelihood
    # baseline strategies (pyronas.strategies)
    "search_epochs": 6,  # total epochs of DARTS / random search with weight sharing
    "arch_lr": 3e-4,  # DARTS architecture Adam step
    "arch_weight_decay": 1e-3,
    "lr_min": 1e-3,  # DARTS cosine schedule floor
    "alpha_init_std": 1e-3,
    "random_mode": "ws",  # ws (weight sharing) | plain (random cell, no training)
    "num_candidates": 20,  # cells scored by random search with weight sharing
}
"""Schema and defaults of a search (the digits demo settings)."""

SEARCH_CHOICES: dict[str, tuple[Any, ...]] = {
    "strategy": ("bayesnas", "darts1", "darts2", "random"),
    "random_mode": ("ws", "plain"),
    "space": ("bayesnas8", "darts", "nb201"),
    "dataset": ("digits", "fashion-mnist", "cifar10", "imagenet"),
    "schedule": ("paper", "released"),
}


class SearchFailed(RuntimeError):
    """A search stopped because its result would not mean anything.

    Raised when a loss, logit, curvature, evidence or hyperparameter becomes non-finite or
    explodes, when the validation accuracy collapses to chance, and when every op of a cell
    type is pruned. The message names the iteration, the quantity and what to try; the run
    folder keeps the checkpoint of the last good iteration.
    """


@dataclass
class SearchResult:
    """What a search returns (everything is also in the run folder)."""

    out_dir: Path
    genotype: Genotype
    state: Type2State
    records: list[dict[str, Any]]
    seconds: float


def resolve_search_config(
    config_path: str | Path | None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Defaults, then the YAML file, then the overrides; validated against the schema."""
    from pyronas.config import validate_config

    cfg = load_config(config_path, overrides, schema=SEARCH_DEFAULTS)
    validate_config(cfg, SEARCH_DEFAULTS, SEARCH_CHOICES)
    if cfg["out"] is not None:
        cfg["out"] = str(cfg["out"])
    return cfg


def _init_hypers(prior: Any, space: SearchSpace, cfg: dict[str, Any], net: SuperNet) -> dict:
    """Call the prior's ``init_hypers`` with the options it accepts."""
    offered = {
        "lambda_edge": cfg["lambda_edge"],
        "lambda_op": cfg["lambda_op"],
        "curvature_multiplier": cfg["curvature_multiplier"],
        "cell_type_index": None if net.tied else net.cell_type_index,
    }
    params = inspect.signature(prior.init_hypers).parameters
    return prior.init_hypers(space, **{k: v for k, v in offered.items() if k in params})


def live_masks(
    space: SearchSpace, masks: dict[str, Tensor], net: SuperNet
) -> tuple[Tensor, Tensor]:
    """Per cell type, which edges and ops are alive (untied: alive in any cell of the type)."""
    edge, op = masks["edge_switch"].cpu(), masks["op_switch"].cpu()
    if net.tied:
        return edge, op
    index = net.cell_type_index.cpu()
    types = len(space.cell_types)
    keep_edge = torch.stack([edge[index == t].any(0) for t in range(types)])
    keep_op = torch.stack([op[index == t].any(0) for t in range(types)])
    return keep_edge, keep_op


def derive_genotype(
    space: SearchSpace,
    masks: dict[str, Tensor],
    sites: dict[str, Tensor],
    net: SuperNet,
    z_scores: dict[str, Tensor] | None = None,
    z_select: float | None = None,
    fallback: bool = False,
) -> Genotype:
    """The connected genotype of the live switches (connectivity rule of the paper).

    With ``z_scores`` (Laplace ``|mean| / sd`` per switch) and ``z_select``, a switch must also
    reach ``z_select`` to be kept. A cell type with nothing alive raises
    :class:`~pyronas.genotype.GenotypeError`, unless ``fallback``: then it keeps its single
    strongest op by ``|edge| * |op|`` switch.
    """
    if z_scores is not None and z_select is not None:
        masks = {k: masks[k] & (z_scores[k].to(masks[k].device) >= z_select) for k in masks}
    keep_edge, keep_op = live_masks(space, masks, net)
    op = sites["op_switch"].detach().abs().cpu()
    edge = sites["edge_switch"].detach().abs().cpu()
    scores = op * edge.unsqueeze(-1)
    if not net.tied:
        index = net.cell_type_index.cpu()
        scores = torch.stack([scores[index == t].amax(0) for t in range(len(space.cell_types))])
    return derive(space, keep_edge, keep_op, cell_type_scores=scores if fallback else None)


def compact_genotype(genotype: Genotype) -> str:
    """One-line genotype for logs and metrics.csv: ``normal: n0<-1:sep3+skip,...``."""
    short = {
        "sep_conv_3x3": "sep3",
        "sep_conv_5x5": "sep5",
        "dil_conv_3x3": "dil3",
        "dil_conv_5x5": "dil5",
        "max_pool_3x3": "max",
        "avg_pool_3x3": "avg",
        "skip_connect": "skip",
        "nor_conv_1x1": "conv1",
        "nor_conv_3x3": "conv3",
    }
    parts = []
    for cell_type in genotype.cell_types:
        nodes = []
        for j, pairs in enumerate(genotype.cell(cell_type)):
            by_src: dict[int, list[str]] = {}
            for op, src in pairs:
                by_src.setdefault(src, []).append(short.get(op, op))
            if by_src:
                edges = ",".join(f"{s}:{'+'.join(ops)}" for s, ops in sorted(by_src.items()))
                nodes.append(f"n{j}<-{edges}")
        parts.append(f"{cell_type}[{' '.join(nodes)}]")
    return " ".join(parts)


@torch.no_grad()
def recalibrate_batchnorm(
    net: torch.nn.Module, sites: dict[str, Tensor], batches: Any, device: torch.device
) -> None:
    """Re-estimate every batch norm's running statistics at the current weights and switches.

    The curvature, the Laplace fit and the validation accuracy run the supernet in eval mode,
    where batch norms use running statistics; after a few SGD steps the exponential moving
    averages still remember the initial weights. This resets them and takes the exact average
    of the batch statistics over ``batches`` (a forward pass each, no gradients).
    """
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = net.training
    net.train()
    for x, _ in batches:
        net(x.to(device), sites["edge_switch"].detach(), sites["op_switch"].detach())
    net.train(was_training)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum


@torch.no_grad()
def evaluate_supernet(
    net: SuperNet, sites: dict[str, Tensor], loader: Any, device: torch.device
) -> float:
    """Accuracy of the supernet with the given switches (eval mode)."""
    was_training = net.training
    net.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = net(x, sites["edge_switch"], sites["op_switch"])
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    net.train(was_training)
    return correct / max(total, 1)


def _loaders(splits: DataSplits, cfg: dict[str, Any], device: torch.device) -> dict[str, Any]:
    pin = device.type == "cuda"
    bs, seed = cfg["batch_size"], cfg["seed"]
    loaders = {
        "train": make_loader(splits.train, bs, shuffle=True, seed=seed, pin_memory=pin),
        "search": make_loader(splits.search, bs, shuffle=True, seed=seed + 1, pin_memory=pin),
        "val": make_loader(splits.val, 2 * bs, shuffle=False, seed=seed, pin_memory=pin),
    }
    if cfg["schedule"] == "released":
        # the authors' schedule: warm-up on 10% of the training split, switches on the rest
        n = len(splits.train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        cut = max(1, n // 10)
        warm = torch.utils.data.Subset(splits.train, order[:cut])
        rest = torch.utils.data.Subset(splits.train, order[cut:])
        loaders["warmup"] = make_loader(warm, bs, shuffle=True, seed=seed + 2, pin_memory=pin)
        loaders["train"] = make_loader(rest, bs, shuffle=True, seed=seed, pin_memory=pin)
    return loaders


class _DeviceLoader:
    """Moves each batch of a loader to a device (the engine moves x, y itself for MAP epochs,
    but the curvature batches are used as given)."""

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.loader)


def _posterior_dict(
    cfg: dict[str, Any],
    space: SearchSpace,
    net: SuperNet,
    state: Type2State,
    num_data: int,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    post = state.posterior
    assert post is not None
    cpu = lambda d: {k: v.detach().cpu() for k, v in d.items()}  # noqa: E731
    return {
        "format": "pyronas-posterior/1",
        "space": space.name,
        "prior": cfg["prior"],
        "tied": net.tied,
        "cell_type_index": net.cell_type_index.cpu(),
        "num_data": num_data,
        # the Laplace fit precedes this iteration's pruning: pruned switches are exactly 0
        "mean": {k: v.detach().cpu() * state.masks[k].cpu() for k, v in post.mean.items()},
        "var": cpu(post.var),
        "curvature": cpu(post.curvature),
        "gamma": cpu(state.hypers["gamma"]),
        "omega": cpu(state.hypers.get("omega", {})),
        "alive": cpu(state.masks),
        "history": history,
    }


def run_search(cfg: dict[str, Any], out_dir: str | Path | None = None) -> SearchResult:
    """Run a BayesNAS search with a resolved config (see :data:`SEARCH_DEFAULTS`).

    Parameters
    ----------
    cfg
        Resolved configuration (:func:`resolve_search_config`).
    out_dir
        Run folder; default ``cfg["out"]`` or ``runs/search-<time>``.

    Raises
    ------
    ValueError
        ``cfg["strategy"]`` names a baseline: those run through
        :data:`pyronas.strategies.STRATEGIES`.
    """
    if cfg.get("strategy", "bayesnas") != "bayesnas":
        raise ValueError(
            f"run_search runs BayesNAS, but the config asks for strategy "
            f"{cfg['strategy']!r}; call pyronas.strategies.STRATEGIES[{cfg['strategy']!r}]"
        )
    start = time.perf_counter()
    out = Path(out_dir or cfg["out"] or time.strftime("runs/search-%Y%m%d-%H%M%S"))
    checkpoint_path = out / "checkpoint.pt"
    resume = None
    if cfg["resume"]:
        if not checkpoint_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint.pt in {out}; nothing to resume")
        resume = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        differ = _config_difference(resume["config"], cfg)
        if differ:
            raise ValueError(
                f"--resume: the checkpoint in {out} was written with a different config "
                f"({', '.join(differ)}); start a new run folder or use the same options"
            )
    elif (out / "posterior.pt").exists() or checkpoint_path.exists():
        raise FileExistsError(
            f"{out} already holds a search run; pass --resume to continue it or choose "
            "another --out (nothing was overwritten)"
        )
    out.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, out)
    if cfg["num_threads"]:
        torch.set_num_threads(cfg["num_threads"])
    seed_everything(cfg["seed"])
    device = resolve_device(cfg["device"])

    space = get_space(cfg["space"])
    prior = load_prior(cfg["prior"])
    splits = load_dataset(
        cfg["dataset"],
        data_dir=cfg["data_dir"],
        download=cfg["download"],
        seed=cfg["seed"],
        train_size=cfg["train_size"],
        image_size=cfg["image_size"],
    )
    net = SuperNet(
        space,
        C=cfg["channels"],
        layers=cfg["layers"],
        num_classes=splits.num_classes,
        in_channels=splits.in_channels,
        tied=cfg["tied"],
    ).to(device)
    hypers = _init_hypers(prior, space, cfg, net)
    edge0, op0 = net.init_switches()
    sites = {"edge_switch": edge0.to(device), "op_switch": op0.to(device)}
    loaders = _loaders(splits, cfg, device)
    num_data = len(loaders["train"].dataset)

    metrics = MetricsCSV(out / "metrics.csv")
    history: list[dict[str, Any]] = []
    if resume is not None:
        net.load_state_dict(resume["net"])
        history = list(resume["history"])
        metrics.truncate_after("iteration", int(resume["type2"]["iteration"]))
        restore_rng_state(resume["rng"])
        log.info("resuming %s after type-II iteration %d", out, resume["type2"]["iteration"])

    type2_cfg = Type2Config(
        t_max=cfg["t_max"],
        epochs_per_iter=cfg["epochs"],
        lr=cfg["lr"],
        site_lr=cfg["switch_lr"],
        momentum=cfg["momentum"],
        weight_decay=cfg["weight_decay"],
        grad_clip=cfg["grad_clip"],
        backend=cfg["curvature"],
        curvature_batches=cfg["curvature_batches"],
        threshold=cfg["threshold"],
        z_threshold=cfg["z_threshold"],
        schedule=cfg["schedule"],
        progress=cfg["progress"],
    )

    chance = 1.0 / splits.num_classes
    best_acc = max([h.get("val_acc", 0.0) for h in history], default=0.0)

    def on_iteration(record: dict[str, Any], state: Type2State) -> None:
        nonlocal best_acc
        t = record["iteration"]
        check_iteration(record, state, splits.num_classes, checkpoint_path)
        if cfg["bn_batches"]:
            # the statistics were taken before this iteration's pruning: take them again, or a
            # supernet that just lost most of its ops scores near chance with stale statistics
            batches = itertools.islice(loaders["train"], cfg["bn_batches"])
            recalibrate_batchnorm(net, state.sites, batches, device)
        val_acc = evaluate_supernet(net, state.sites, loaders["val"], device)
        if best_acc >= 2 * chance and val_acc <= 1.5 * chance:
            raise SearchFailed(
                f"type-II iteration {t}: the supernet's validation accuracy collapsed to "
                f"{val_acc:.3f} (chance {chance:.3f}, best so far {best_acc:.3f}); "
                f"{_last_good(checkpoint_path)}; try a smaller --switch-lr or "
                "--lr, or a smaller --lambda-op / --lambda-edge"
            )
        best_acc = max(best_acc, val_acc)
        try:
            genotype = derive_genotype(space, state.masks, state.sites, net)
            genotype_text = compact_genotype(genotype)
        except GenotypeError:
            _save_fallback(out, space, state, net)
            raise SearchFailed(
                f"type-II iteration {t} pruned every op of a cell type at lambda_edge="
                f"{cfg['lambda_edge']}, lambda_op={cfg['lambda_op']}: there is no cell to "
                f"report. {_last_good(checkpoint_path)}; the strongest single op "
                f"is offered as {out / 'genotype_fallback.json'} (a fallback, not a search "
                "result). Try a smaller --lambda-op / --lambda-edge"
            ) from None
        keep_edge, keep_op = live_masks(space, state.masks, net)
        live_ops = (keep_op & keep_edge.unsqueeze(-1)).sum(dim=(1, 2))
        row: dict[str, Any] = {
            "iteration": record["iteration"],
            "log_evidence": record["log_evidence"],
            "train_objective": record["objective"],
            "val_acc": val_acc,
        }
        for t, name in enumerate(space.cell_types):
            row[f"live_edges_{name}"] = int(keep_edge[t].sum())
            row[f"live_ops_{name}"] = int(live_ops[t])
        row["seconds"] = record["wall_time"]
        row["genotype"] = genotype_text
        metrics.append(row)
        history.append(
            {
                "iteration": record["iteration"],
                "val_acc": val_acc,
                "log_evidence": record["log_evidence"],
                "gamma": {k: v.detach().cpu().clone() for k, v in state.hypers["gamma"].items()},
                "mean": {k: v.detach().cpu().clone() for k, v in state.sites.items()},
            }
        )
        live = ", ".join(f"{n} {row[f'live_ops_{n}']}" for n in space.cell_types)
        log.info(
            "iteration %d/%d  log evidence %.2f  val acc %.3f  live ops: %s  genotype: %s",
            record["iteration"],
            cfg["t_max"],
            record["log_evidence"],
            val_acc,
            live,
            genotype_text,
        )
        _save_checkpoint(checkpoint_path, cfg, net, state, history)
        # the next MAP epoch skips the ops pruned so far (their switches are frozen at zero)
        net.set_alive(state.masks["op_switch"])

    def before_curvature(state: Type2State) -> None:
        # batch-norm statistics and curvature of every op, pruned ones included, as without
        # the mask: the Laplace fit and the evidence keep a curvature for pruned switches
        net.set_alive(None)
        if cfg["bn_batches"]:
            batches = itertools.islice(loaders["train"], cfg["bn_batches"])
            recalibrate_batchnorm(net, state.sites, batches, device)

    if resume is not None:
        net.set_alive(resume["type2"]["masks"]["op_switch"])
    try:
        state = run_type2(
            prior,
            net,
            sites,
            hypers,
            _DeviceLoader(loaders["train"], device),
            _DeviceLoader(loaders["search"], device),
            num_data,
            config=type2_cfg,
            callback=on_iteration,
            warmup_loader=(
                _DeviceLoader(loaders["warmup"], device) if "warmup" in loaders else None
            ),
            resume=None if resume is None else resume["type2"],
            before_curvature=before_curvature,
        )
    except FloatingPointError as err:
        done = len(history)
        raise SearchFailed(
            f"type-II iteration {done + 1}: {err}. {_last_good(checkpoint_path)}; "
            "try a smaller --switch-lr or --lr (or --grad-clip), or a smaller --lambda-op / "
            "--lambda-edge"
        ) from None
    net.set_alive(None)
    if state.posterior is None:
        raise ValueError("t_max must be at least 1: the search ran no type-II iteration")

    z_select = selection_z(cfg, prior)
    z_scores = state.posterior.z_score() if z_select is not None else None
    try:
        genotype = derive_genotype(space, state.masks, state.sites, net, z_scores, z_select)
    except GenotypeError:
        _save_fallback(out, space, state, net)
        raise SearchFailed(
            f"no op of some cell type reaches z_select={z_select}: there is no cell to "
            f"report; the strongest single op is offered as {out / 'genotype_fallback.json'} "
            "(a fallback, not a search result). Try a smaller --z-select or none"
        ) from None
    genotype = Genotype(
        genotype.normal,
        genotype.normal_concat,
        genotype.reduce,
        genotype.reduce_concat,
        num_inputs=genotype.num_inputs,
        space=space.name,
    )
    save_genotype(genotype, out / "genotype.json")
    _save_projections(out, genotype, space, state.sites)
    posterior = _posterior_dict(cfg, space, net, state, num_data, history)
    save_checkpoint(posterior, out / "posterior.pt")
    _write_extras(
        out, genotype, posterior, space, net, loaders["val"], cfg, device, prior, state.hypers
    )
    seconds = time.perf_counter() - start
    _write_cost(out, seconds, device, space, cfg)
    log.info("search finished in %.1f s; run folder %s", seconds, out)
    return SearchResult(out, genotype, state, state.records, seconds)


def selection_z(cfg: dict[str, Any], prior: Any) -> float | None:
    """The z-score the genotype asks of a switch (``|mean| / sd``), or None for no such rule.

    ``z_select`` when set (0 turns the rule off). Unset: none for priors with a closed-form
    update (``hard``, ``ard``: their fixed point prunes exactly, docs/selection.md); 2.0 for the
    others (``laplace``, ``horseshoe``), whose prior variances never reach zero.
    """
    if cfg["z_select"] is not None:
        return float(cfg["z_select"]) or None
    return None if getattr(prior, "update_hypers", None) is not None else 2.0


def _last_good(path: Path) -> str:
    """Where the last good iteration is, for error messages."""
    if Path(path).exists():
        return f"the last good iteration is checkpointed in {path}"
    return "no iteration finished well, so no checkpoint was written"

EXPLODED_LOSS = 100.0
"""A MAP objective above ``EXPLODED_LOSS * log(num_classes)`` counts as diverged (a network that
predicts uniformly scores ``log(num_classes)``)."""


def check_iteration(
    record: dict[str, Any], state: Type2State, num_classes: int, checkpoint: Path
) -> None:
    """Raise :class:`SearchFailed` when an iteration's numbers cannot be trusted.

    Checks the MAP objective (finite, not exploded), the log evidence, the curvature and
    posterior mean of every site, and the prior variances (finite).
    """
    t = record["iteration"]
    hint = (f"{_last_good(checkpoint)}; try a smaller --switch-lr or --lr, or a "
            "smaller --lambda-op / --lambda-edge")
    objective = record["objective"]
    if not np.isfinite(objective) or objective > EXPLODED_LOSS * np.log(num_classes):
        raise SearchFailed(
            f"type-II iteration {t}: the MAP objective exploded to {objective:.4g} "
            f"(chance level is {np.log(num_classes):.2f}); {hint}"
        )
    if not np.isfinite(record["log_evidence"]):
        raise SearchFailed(f"type-II iteration {t}: the log evidence is {record['log_evidence']}"
                           f"; {hint}")
    post = state.posterior
    assert post is not None
    for name in state.sites:
        for what, value in (("curvature", post.curvature[name]), ("posterior mean",
                                                                   post.mean[name])):
            if not bool(torch.isfinite(value).all()):
                raise SearchFailed(f"type-II iteration {t}: the {what} of {name} is not finite;"
                                   f" {hint}")
    for name, gamma in state.hypers.get("gamma", {}).items():
        if not bool(torch.isfinite(torch.as_tensor(gamma)).all()):
            raise SearchFailed(f"type-II iteration {t}: the prior variance gamma of {name} is "
                               f"not finite; {hint}")


def _save_fallback(out: Path, space: SearchSpace, state: Type2State, net: SuperNet) -> None:
    """``genotype_fallback.json``: the strongest single op per cell type, clearly not a result."""
    nothing = {k: torch.zeros_like(v) for k, v in state.masks.items()}
    assert state.posterior is not None  # its mean was taken before this iteration's pruning
    try:
        fallback = derive_genotype(space, nothing, state.posterior.mean, net, fallback=True)
    except GenotypeError as err:
        log.warning("no fallback cell either: %s", err)
        return
    save_genotype(fallback, out / "genotype_fallback.json")


# keys that may change between a run and its resumption
_RUNTIME_KEYS = {"resume", "progress", "device", "num_threads", "out", "t_max"}


def _config_difference(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = (set(saved) | set(current)) - _RUNTIME_KEYS
    return sorted(
        f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    )


def _save_checkpoint(
    path: Path,
    cfg: dict[str, Any],
    net: SuperNet,
    state: Type2State,
    history: list[dict[str, Any]],
) -> None:
    save_checkpoint(
        {
            "config": cfg,
            "net": net.state_dict(),
            "type2": {
                "sites": {k: v.detach().cpu() for k, v in state.sites.items()},
                "masks": {k: v.cpu() for k, v in state.masks.items()},
                "hypers": state.hypers,
                "records": state.records,
                "iteration": state.iteration,
                "optimizer": state.optimizer.state_dict() if state.optimizer else None,
                # the last Laplace fit, so that a run stopped after its last iteration can
                # still be finished by --resume
                "posterior": None if state.posterior is None else dataclasses.asdict(
                    state.posterior),
            },
            "history": history,
            "rng": capture_rng_state(),
        },
        path,
    )


def top2_projection(genotype: Genotype, space: SearchSpace, sites: dict[str, Tensor]) -> Genotype:
    """DARTS-style top-2 projection of a found cell, ranking ops by ``|edge| * |op|`` switch."""
    score = sites["op_switch"].detach().abs() * sites["edge_switch"].detach().abs().unsqueeze(-1)
    cells = {}
    # to_darts_top2 wants a score for every pair of every cell type: zeros, then this type's
    unranked = {
        (genotype.num_inputs + j, src, op): 0.0
        for cell_type in genotype.cell_types
        for j, pairs in enumerate(genotype.cell(cell_type))
        for op, src in pairs
    }
    for t, cell_type in enumerate(space.cell_types):
        weights = dict(unranked)
        for e, (src, dst) in enumerate(space.edges[cell_type]):
            for k, op in enumerate(space.ops):
                weights[(dst, src, op)] = float(score[t, e, k]) if score.shape[0] > t else 0.0
        cells[cell_type] = to_darts_top2(genotype, weights).cell(cell_type)
    return Genotype(
        cells["normal"],
        genotype.normal_concat,
        cells.get("reduce"),
        genotype.reduce_concat,
        num_inputs=genotype.num_inputs,
        space=genotype.space,
    )


def _write_cost(
    out: Path, seconds: float, device: torch.device, space: SearchSpace, cfg: dict[str, Any]
) -> None:
    """``metrics.json``: search cost (wall time, device, GPU-days) for tables."""
    from pyronas.strategies import search_cost_gpu_days

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    data = {
        "strategy": "bayesnas",
        "search_seconds": seconds,
        "search_device": str(device),
        "device_name": name,
        "search_gpu_days": search_cost_gpu_days(seconds, str(device)),
        "space": space.name,
        "dataset": cfg["dataset"],
        "t_max": cfg["t_max"],
    }
    atomic_write_text(json.dumps(data, indent=2) + "\n", out / "metrics.json")


def _save_projections(
    out: Path, genotype: Genotype, space: SearchSpace, sites: dict[str, Tensor]
) -> None:
    """``genotype_top2.json`` (DARTS tooling) and, for nb201, ``genotype_nb201.txt``.

    An nb201 search always writes ``genotype_nb201.txt``: the benchmark string of the found cell
    when it has one op per edge, else that of its one-op-per-edge projection (per edge the op
    with the largest posterior inclusion ``|edge_switch| * |op_switch|``, the maximum over the
    cells for untied switches, see :func:`~pyronas.genotype.to_nb201_projection`). When the
    found cell keeps several ops on some edge, the projection is also saved as
    ``genotype_nb201_projection.json``, ready to retrain. Beside it, ``nb201_lookup.json`` holds
    the benchmark entry of that string (index, accuracies, percentiles; the bundled 12-epoch
    table, :func:`pyronas.nb201.write_run_lookup`).
    """
    from pyronas.genotype import multi_op_edges, to_nb201_projection
    from pyronas.nb201 import write_run_lookup

    if space.num_inputs == 2:
        if sites["op_switch"].shape[0] == len(space.cell_types):  # tied switches
            save_genotype(top2_projection(genotype, space, sites), out / "genotype_top2.json")
    if space.name == "nb201":
        try:
            text = to_nb201_string(genotype)
        except GenotypeError as err:
            # nb201 has one cell type: tied switches have one row, untied ones a row per cell
            op = sites["op_switch"].detach().abs().to("cpu", torch.float64)
            edge = sites["edge_switch"].detach().abs().to("cpu", torch.float64)
            scores = (op * edge.unsqueeze(-1)).amax(0)
            try:
                projection = to_nb201_projection(genotype, scores)
                text = to_nb201_string(projection)
            except GenotypeError as err2:  # not an NB201 cell at all: nothing to write
                log.warning("no NAS-Bench-201 string for this cell: %s; %s", err, err2)
                return
            several = multi_op_edges(genotype)
            log.info(
                "several ops survived on edge(s) %s; genotype_nb201.txt holds the one-op-per-edge "
                "projection (per edge the op with the largest posterior inclusion |edge| * |op| "
                "switch)",
                "; ".join(
                    f"{space.node_name(src)}->{space.node_name(dst)}: {', '.join(ops)}"
                    for (src, dst), ops in sorted(several.items())
                ),
            )
            if several:
                save_genotype(projection, out / "genotype_nb201_projection.json")
        (out / "genotype_nb201.txt").write_text(text + "\n")
        write_run_lookup(out, text)


def _write_extras(
    out: Path,
    genotype: Genotype,
    posterior: dict[str, Any],
    space: SearchSpace,
    net: SuperNet,
    val_loader: Any,
    cfg: dict[str, Any],
    device: torch.device,
    prior: Any,
    hypers: dict[str, Any],
) -> None:
    """Cell diagrams and the ArviZ file (their failure must not lose the finished search)."""
    from pyronas.diagram import draw_genotype

    try:
        draw_genotype(genotype, out / "cell.png")
    except Exception as err:  # drawing is a convenience: the genotype is already saved
        log.warning("could not draw the cells: %s", err)
    try:
        from pyronas.arviz_export import heldout_log_likelihood, sample_prior, save_arviz, to_arviz

        heldout = list(itertools.islice(val_loader, cfg["loglik_batches"]))
        loglik = heldout_log_likelihood(
            net,
            posterior,
            heldout,
            num_chains=2,
            num_draws=cfg["posterior_draws"],
            seed=cfg["seed"],
        )
        prior_draws = sample_prior(
            prior,
            hypers,
            num_chains=2,
            num_draws=cfg["posterior_draws"],
            seed=cfg["seed"],
            cell_type_index=None if net.tied else net.cell_type_index,
        )
        idata = to_arviz(
            posterior,
            space,
            num_chains=2,
            num_draws=cfg["posterior_draws"],
            seed=cfg["seed"],
            log_likelihood=loglik,
            prior_draws=prior_draws,
        )
        save_arviz(idata, out / "posterior.nc")
    except Exception as err:
        log.warning("could not write posterior.nc: %s", err)


def run_search_cli(
    config_path: str | Path | None,
    overrides: dict[str, Any],
    nb201: str | Path | None = None,
    nb201_epochs: int = 12,
) -> int:
    """``pyronas search``: resolve the config, run, print where the results are.

    For an nb201 search, also print the NAS-Bench-201 entry of the found cell; with ``nb201``
    (an official benchmark file, read before the search so that a bad path fails at once) the
    entry is looked up there at ``nb201_epochs`` and ``nb201_lookup.json`` is rewritten.
    """
    from pyronas.nb201 import NB201Error, format_entry, open_table, run_lookup

    cfg = resolve_search_config(config_path, overrides)
    table = open_table(nb201, nb201_epochs) if nb201 is not None or nb201_epochs != 12 else None
    if cfg["strategy"] != "bayesnas":
        from pyronas.strategies import STRATEGIES

        result = STRATEGIES[cfg["strategy"]](cfg, cfg["out"])
    else:
        result = run_search(cfg)
    print(f"genotype: {compact_genotype(result.genotype)}")
    try:
        entry = run_lookup(result.out_dir, table, write=table is not None)
    except NB201Error as err:  # no entry for the found cell: say so, the search stands
        entry = None
        print(f"no NAS-Bench-201 entry: {err}")
    if entry is not None:
        print(format_entry(entry))
    print(f"run folder: {result.out_dir} ({result.seconds:.0f} s)")
    return 0
