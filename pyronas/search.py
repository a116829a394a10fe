"""BayesNAS search end to end: settings -> run skeleton -> type-II loop -> posterior -> genotype.

:func:`run_search` takes validated :class:`~pyronas.settings.SearchSettings`, prepares the run
with :func:`pyronas.run_setup.prepare_run` (folder, seeds, device, data, supernet, loaders),
runs the generic engine :func:`pyronas.inference.type2.run_type2` with the prior model file,
and writes a run folder (see ``docs/contracts.md``): ``config.yaml``, ``metrics.csv`` (one row
per type-II iteration), ``posterior.pt``, ``genotype.json``, cell diagrams, ``posterior.nc`` and
``checkpoint.pt``. After each iteration :class:`IterationSteps` checks, scores, records,
checkpoints and freezes what was pruned, one named step each.

Crash safety: the checkpoint of an iteration holds everything the next one starts from (the
supernet, the switches, masks and hypers, the optimiser, the global generators and each loader's
generator, the search seconds so far), so a search stopped at any point (``kill -9`` included)
and run again with ``--resume`` ends with the same numbers and the same ``genotype.json`` as
one that ran through. The result files are written into a staging folder and moved into the run
folder when all are done; ``metrics.json`` comes last and marks the run finished.

Data parallel: under ``torchrun --nproc_per_node N -m pyronas search ...`` every rank holds the
whole supernet and the same switches, and takes an equal share of every batch; the gradients,
the curvature and the evidence terms are averaged over the ranks (see
:mod:`pyronas.inference.type2`), the batch norms take the statistics of the global batch
(:func:`pyronas.distributed.synchronise_batchnorm`), and each rank scores its share of the
validation images. Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyronas import distributed
from pyronas.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from pyronas.genotype import (
    Genotype,
    GenotypeError,
    derive,
    genotype_to_json,
    to_darts_top2,
    to_nb201_string,
)
from pyronas.inference.type2 import Type2State, run_type2
from pyronas.models import load_prior
from pyronas.run_setup import (
    RunContext,
    capture_run_rng,
    claim_run_folder,
    config_difference,
    prepare_run,
    restore_run_rng,
    run_folder,
)
from pyronas.runs import (
    RunFolderError,
    atomic_write_text,
    compact_genotype,
    search_cost_gpu_days,
    staged_outputs,
)
from pyronas.runtime import resolve_device
from pyronas.search_posterior import SearchPosterior
from pyronas.settings import (
    SearchSettings,
    flat_choices,
    load_search_settings,
    type2_config,
)
from pyronas.space import SearchSpace
from pyronas.supernet import SuperNet
from pyronas.supernet_eval import DeviceLoader, evaluate_supernet, recalibrate_batchnorm

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_KIND",
    "SEARCH_CHOICES",
    "SEARCH_DEFAULTS",
    "IterationSteps",
    "SearchFailed",
    "SearchResult",
    "check_iteration",
    "compact_genotype",
    "derive_genotype",
    "evaluate_supernet",
    "alive_masks",
    "recalibrate_batchnorm",
    "resolve_search_config",
    "run_search",
    "selection_z",
    "top2_projection",
]

SEARCH_DEFAULTS: dict[str, Any] = load_search_settings().flat()
"""The default settings as a flat dict (one key per field, plus the default prior's options);
the settings themselves are :class:`~pyronas.settings.SearchSettings`."""

SEARCH_CHOICES: dict[str, tuple[Any, ...]] = flat_choices()
"""Flat key -> its valid values, for the keys with a fixed set of them."""

CHECKPOINT_KIND = "pyronas-bayesnas-search/2"
"""The ``kind`` of a BayesNAS search checkpoint (version 2: per-loader generator states and the
search seconds)."""


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
    config_path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Defaults, then the YAML file, then the overrides, validated; as a flat dict.

    The flat view of :func:`pyronas.settings.load_search_settings` (one key per field plus the
    prior's options), for scripts that edit configs as dicts; :func:`run_search` and the
    strategies accept it as it is.
    """
    return load_search_settings(config_path, overrides).flat()


def alive_masks(
    space: SearchSpace, masks: dict[str, Tensor], net: SuperNet
) -> tuple[Tensor, Tensor]:
    """Per cell type, which edges and ops are alive (untied: alive in any cell of the type)."""
    edge, op = masks["edge_switch"].cpu(), masks["op_switch"].cpu()
    if net.tied:
        return edge, op
    index = net.cell_type_index.cpu()
    types = len(space.cell_types)
    alive_edge = torch.stack([edge[index == t].any(0) for t in range(types)])
    alive_op = torch.stack([op[index == t].any(0) for t in range(types)])
    return alive_edge, alive_op


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
    alive_edge, alive_op = alive_masks(space, masks, net)
    op = sites["op_switch"].detach().abs().cpu()
    edge = sites["edge_switch"].detach().abs().cpu()
    scores = op * edge.unsqueeze(-1)
    if not net.tied:
        index = net.cell_type_index.cpu()
        scores = torch.stack([scores[index == t].amax(0) for t in range(len(space.cell_types))])
    return derive(space, alive_edge, alive_op, cell_type_scores=scores if fallback else None)


def _init_hypers(prior: Any, space: SearchSpace, settings: SearchSettings, net: SuperNet
                 ) -> dict[str, Any]:
    """The prior's ``init_hypers`` with its options (and ``cell_type_index`` for untied
    switches, when it accepts one)."""
    extra = {}
    if "cell_type_index" in inspect.signature(prior.init_hypers).parameters:
        extra["cell_type_index"] = None if net.tied else net.cell_type_index
    return prior.init_hypers(space, **settings.prior.options, **extra)


def _read_resume(settings: SearchSettings, out: Path, ranks: distributed.Ranks
                 ) -> dict[str, Any] | None:
    """Claim the run folder (:func:`~pyronas.run_setup.claim_run_folder`, rank 0); the
    checkpoint to resume from, or None to start (a new run, or a resumed one stopped before its
    first checkpoint). Refuses a checkpoint of another kind or of different settings. The other
    ranks of a data-parallel run wait for rank 0's claim and read the same checkpoint."""
    resuming = claim_run_folder(settings, out, "bayesnas") if ranks.is_main else False
    distributed.barrier(ranks)
    if not ranks.is_main:
        resuming = settings.run.resume
    checkpoint_path = out / CHECKPOINT_NAME
    if not resuming or not checkpoint_path.exists():
        return None
    resume = load_checkpoint(checkpoint_path, weights_only=False)
    if "type2" not in resume or resume.get("kind", CHECKPOINT_KIND) != CHECKPOINT_KIND:
        raise RunFolderError(
            f"--resume: {checkpoint_path} is not the checkpoint of a BayesNAS search of this "
            f"version (kind {resume.get('kind', 'unknown')!r}); start a new run folder"
        )
    differ = config_difference(resume["config"], settings)
    if differ:
        raise RunFolderError(
            f"--resume: the checkpoint in {out} was written with a different config "
            f"({', '.join(differ)}); start a new run folder or use the same options"
        )
    return resume


class IterationSteps:
    """What happens after each type-II iteration, one method per step.

    :meth:`__call__` (the engine's callback) runs, in order: :meth:`check` (finite numbers),
    :meth:`score` (batch norms recalibrated, validation accuracy, collapse check),
    :meth:`current_genotype` (fails when a cell type lost every op), :meth:`record`
    (``metrics.csv`` row and history), :meth:`report` (log line), :meth:`checkpoint` and
    :meth:`freeze_pruned` (the next MAP epoch skips pruned ops). :meth:`before_curvature` runs
    before each curvature and Laplace fit.
    """

    def __init__(self, ctx: RunContext, history: list[dict[str, Any]]) -> None:
        assert ctx.net is not None and ctx.splits is not None
        self.ctx, self.net, self.space = ctx, ctx.net, ctx.space
        self.settings = ctx.settings
        self.history = history
        self.checkpoint_path = ctx.out / "checkpoint.pt"
        self.num_classes = ctx.splits.num_classes
        self.best_acc = max([h.get("val_acc", 0.0) for h in history], default=0.0)
        self.writes = ctx.ranks.is_main  # rank 0 of a data-parallel run writes the folder

    def __call__(self, record: dict[str, Any], state: Type2State) -> None:
        self.check(record, state)
        val_acc = self.score(record, state)
        genotype = self.current_genotype(record, state)
        row = self.record(record, state, val_acc, genotype)
        self.report(row)
        self.checkpoint(state)
        self.freeze_pruned(state)

    def check(self, record: dict[str, Any], state: Type2State) -> None:
        """Raise :class:`SearchFailed` when the iteration's numbers cannot be trusted."""
        check_iteration(record, state, self.num_classes, self.checkpoint_path)

    def _recalibrate(self, state: Type2State) -> None:
        batches = self.settings.training.bn_batches
        if batches:
            train = itertools.islice(self.ctx.loaders["train"], batches)
            recalibrate_batchnorm(self.net, state.sites, train, self.ctx.device)

    def score(self, record: dict[str, Any], state: Type2State) -> float:
        """Validation accuracy of the supernet at the switches (batch norms re-estimated: the
        statistics were taken before this iteration's pruning, and a supernet that just lost
        most of its ops scores near chance with stale ones); a collapse to chance fails."""
        self._recalibrate(state)
        val_acc = evaluate_supernet(self.net, state.sites, self.ctx.loaders["val"],
                                    self.ctx.device, self.ctx.ranks)
        chance = 1.0 / self.num_classes
        if self.best_acc >= 2 * chance and val_acc <= 1.5 * chance:
            raise SearchFailed(
                f"type-II iteration {record['iteration']}: the supernet's validation accuracy "
                f"collapsed to {val_acc:.3f} (chance {chance:.3f}, best so far "
                f"{self.best_acc:.3f}); {_last_good(self.checkpoint_path)}; try a smaller "
                "--switch-lr or --lr, or a smaller --lambda-op / --lambda-edge"
            )
        self.best_acc = max(self.best_acc, val_acc)
        return val_acc

    def current_genotype(self, record: dict[str, Any], state: Type2State) -> Genotype:
        """The genotype of the live switches; a cell type with nothing alive fails (and leaves
        ``genotype_fallback.json``)."""
        try:
            return derive_genotype(self.space, state.masks, state.sites, self.net)
        except GenotypeError:
            if self.writes:
                _save_fallback(self.ctx.out, self.space, state, self.net)
            options = ", ".join(f"{k}={v}" for k, v in self.settings.prior.options.items())
            raise SearchFailed(
                f"type-II iteration {record['iteration']} pruned every op of a cell type at "
                f"{options or 'the prior defaults'}: there is no cell to report. "
                f"{_last_good(self.checkpoint_path)}; the strongest single op is offered as "
                f"{self.ctx.out / 'genotype_fallback.json'} (a fallback, not a search result). "
                "Try a smaller --lambda-op / --lambda-edge"
            ) from None

    def record(self, record: dict[str, Any], state: Type2State, val_acc: float,
               genotype: Genotype) -> dict[str, Any]:
        """Append the ``metrics.csv`` row and the history entry; return the row."""
        alive_edge, alive_op = alive_masks(self.space, state.masks, self.net)
        live_ops = (alive_op & alive_edge.unsqueeze(-1)).sum(dim=(1, 2))
        row: dict[str, Any] = {
            "iteration": record["iteration"],
            "log_evidence": record["log_evidence"],
            "train_objective": record["objective"],
            "val_acc": val_acc,
        }
        for t, name in enumerate(self.space.cell_types):
            row[f"live_edges_{name}"] = int(alive_edge[t].sum())
            row[f"live_ops_{name}"] = int(live_ops[t])
        row["seconds"] = record["wall_time"]
        row["genotype"] = compact_genotype(genotype)
        if self.writes:
            self.ctx.metrics.append(row)
        self.history.append({
            "iteration": record["iteration"],
            "val_acc": val_acc,
            "log_evidence": record["log_evidence"],
            "gamma": {k: v.detach().cpu().clone() for k, v in state.hypers["gamma"].items()},
            "mean": {k: v.detach().cpu().clone() for k, v in state.sites.items()},
        })
        return row

    def report(self, row: dict[str, Any]) -> None:
        """One log line per iteration."""
        live = ", ".join(f"{n} {row[f'live_ops_{n}']}" for n in self.space.cell_types)
        log.info(
            "iteration %d/%d  log evidence %.2f  val acc %.3f  live ops: %s  genotype: %s",
            row["iteration"], self.settings.type2.t_max, row["log_evidence"], row["val_acc"],
            live, row["genotype"],
        )

    def checkpoint(self, state: Type2State) -> None:
        """``checkpoint.pt``: everything :func:`run_search` needs to resume (taken between two
        iterations, when no loader is being iterated; rank 0 of a data-parallel run: the
        generators are the same on every rank)."""
        if self.writes:
            _save_checkpoint(self.checkpoint_path, self.ctx, state, self.history)

    def freeze_pruned(self, state: Type2State) -> None:
        """The next MAP epoch skips the ops pruned so far (their switches are frozen at 0)."""
        self.net.set_alive(state.masks["op_switch"])

    def before_curvature(self, state: Type2State) -> None:
        """Batch-norm statistics and curvature of every op, pruned ones included, as without
        the mask: the Laplace fit and the evidence keep a curvature for pruned switches."""
        self.net.set_alive(None)
        self._recalibrate(state)


def run_search(cfg: SearchSettings | Mapping[str, Any], out_dir: str | Path | None = None
               ) -> SearchResult:
    """Run a BayesNAS search.

    Parameters
    ----------
    cfg
        Settings (:func:`pyronas.settings.load_search_settings`), or a nested or flat mapping
        of them (:func:`resolve_search_config`), validated before anything is written.
    out_dir
        Run folder; default ``run.out`` or ``runs/search-<time>``.

    Raises
    ------
    ValueError
        The settings name a baseline strategy: those run through
        :data:`pyronas.strategies.STRATEGIES` (or :func:`pyronas.dispatch.run_strategy`).

    Notes
    -----
    Started by ``torchrun`` with several processes the search is data-parallel (see the
    module docstring); every rank returns the same result, rank 0 writes the run folder.
    """
    settings = SearchSettings.from_mapping(cfg)
    if settings.strategy.name != "bayesnas":
        name = settings.strategy.name
        raise ValueError(
            f"run_search runs BayesNAS, but the config asks for strategy {name!r}; call "
            f"pyronas.strategies.STRATEGIES[{name!r}] or pyronas.dispatch.run_strategy"
        )
    out = run_folder(settings, out_dir, "search")
    ranks = distributed.ranks_from_env()
    if settings.training.batch_size % ranks.world_size:  # before any process group or file
        raise ValueError(
            f"batch_size {settings.training.batch_size} is not a multiple of the "
            f"{ranks.world_size} processes: each rank takes an equal share of every batch "
            "(--batch-size is the global batch)"
        )
    ranks, device = distributed.start(resolve_device(settings.run.device))
    try:
        return _run_search(settings, out, ranks, device)
    finally:
        if ranks.distributed:
            distributed.stop()


def _run_search(settings: SearchSettings, out: Path, ranks: distributed.Ranks,
                device: torch.device) -> SearchResult:
    """:func:`run_search` in this process (one rank of a data-parallel run, or the only one)."""
    if not ranks.is_main:  # rank 0 reports
        settings = dataclasses.replace(settings, run=dataclasses.replace(settings.run,
                                                                         progress=False))
        logging.getLogger("pyronas").setLevel(logging.WARNING)
    resume = _read_resume(settings, out, ranks)
    prior = load_prior(settings.prior.name)
    ctx = prepare_run(settings, out, warmup=settings.type2.schedule == "released",
                      ranks=ranks, device=device)
    net, space, device = ctx.net, ctx.space, ctx.device
    assert net is not None
    if ranks.distributed:  # batch statistics of the global batch, as in one process
        ctx.net = net = distributed.synchronise_batchnorm(net, device)
    hypers = _init_hypers(prior, space, settings, net)
    edge0, op0 = net.init_switches()
    sites = {"edge_switch": edge0.to(device), "op_switch": op0.to(device)}
    num_data = len(ctx.loaders["train"].dataset)

    history: list[dict[str, Any]] = []
    if resume is None:
        if ranks.is_main:  # rows of a run stopped before a checkpoint
            ctx.metrics.truncate_after("iteration", 0)
    else:
        net.load_state_dict(resume["net"])
        history = list(resume["history"])
        if ranks.is_main:
            ctx.metrics.truncate_after("iteration", int(resume["type2"]["iteration"]))
        if "global" in resume["rng"]:
            restore_run_rng(resume["rng"], ctx.loaders)
        else:  # a checkpoint of an older version: global generators only
            restore_rng_state(resume["rng"])
        ctx.seconds_before = float(resume.get("seconds", 0.0))
        net.set_alive(resume["type2"]["masks"]["op_switch"])
        log.info("resuming %s after type-II iteration %d", out, resume["type2"]["iteration"])
    distributed.broadcast_(list(net.state_dict().values()), ranks)  # one supernet everywhere
    steps = IterationSteps(ctx, history)
    warmup = ctx.loaders.get("warmup")
    try:
        state = run_type2(
            prior,
            net,
            sites,
            hypers,
            DeviceLoader(ctx.loaders["train"], device),
            DeviceLoader(ctx.loaders["search"], device),
            num_data,
            config=type2_config(settings),
            callback=steps,
            warmup_loader=None if warmup is None else DeviceLoader(warmup, device),
            resume=None if resume is None else resume["type2"],
            before_curvature=steps.before_curvature,
            average=functools.partial(distributed.average_, ranks=ranks)
            if ranks.distributed else None,
        )
    except FloatingPointError as err:
        raise SearchFailed(
            f"type-II iteration {len(history) + 1}: {err}. {_last_good(steps.checkpoint_path)}; "
            "try a smaller --switch-lr or --lr (or --grad-clip), or a smaller --lambda-op / "
            "--lambda-edge"
        ) from None
    net.set_alive(None)
    genotype = _final_genotype(ctx, state, prior)
    fit = state.posterior
    assert fit is not None
    posterior = SearchPosterior.from_fit(
        space=space.name, prior=settings.prior.name, tied=net.tied,
        cell_type_index=net.cell_type_index, num_data=num_data, mean=fit.mean, var=fit.var,
        curvature=fit.curvature, hypers=state.hypers, alive=state.masks, history=history,
        precision_tril=state.precision_tril,
    )  # fmt: skip
    seconds = ctx.seconds()
    if ranks.is_main:
        with staged_outputs(out) as stage:
            atomic_write_text(genotype_to_json(genotype), stage / "genotype.json")
            _save_projections(stage, genotype, space, state.sites)
            posterior.save(stage / "posterior.pt")
            _write_extras(ctx, stage, genotype, posterior, prior, state.hypers)
        seconds = ctx.seconds()
        _write_cost(ctx, seconds)  # last: metrics.json marks the run finished
    distributed.barrier(ranks)  # the run folder is complete before any rank returns
    log.info("search finished in %.1f s; run folder %s", seconds, out)
    return SearchResult(out, genotype, state, state.records, seconds)


def _final_genotype(ctx: RunContext, state: Type2State, prior: Any) -> Genotype:
    """The search's genotype: the live switches, with the z-score rule of :func:`selection_z`."""
    assert ctx.net is not None
    if state.posterior is None:
        raise ValueError("t_max must be at least 1: the search ran no type-II iteration")
    z_select = selection_z(ctx.settings, prior)
    z_scores = state.posterior.z_score() if z_select is not None else None
    try:
        genotype = derive_genotype(ctx.space, state.masks, state.sites, ctx.net, z_scores,
                                   z_select)
    except GenotypeError:
        _save_fallback(ctx.out, ctx.space, state, ctx.net)
        raise SearchFailed(
            f"no op of some cell type reaches z_select={z_select}: there is no cell to "
            f"report; the strongest single op is offered as {ctx.out / 'genotype_fallback.json'}"
            " (a fallback, not a search result). Try a smaller --z-select or none"
        ) from None
    return Genotype(
        genotype.normal,
        genotype.normal_concat,
        genotype.reduce,
        genotype.reduce_concat,
        num_inputs=genotype.num_inputs,
        space=ctx.space.name,
    )


def selection_z(settings: SearchSettings, prior: Any) -> float | None:
    """The z-score the genotype asks of a switch (``|mean| / sd``), or None for no such rule.

    ``z_select`` when set (0 turns the rule off). Unset: none for priors with a closed-form
    update (``hard``, ``ard``: their fixed point prunes exactly, docs/selection.md); 2.0 for the
    others (``laplace``, ``horseshoe``), whose prior variances never reach zero.
    """
    z_select = settings.type2.z_select
    if z_select is not None:
        return float(z_select) or None
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
    atomic_write_text(genotype_to_json(fallback), out / "genotype_fallback.json")


def _save_checkpoint(
    path: Path, ctx: RunContext, state: Type2State, history: list[dict[str, Any]]
) -> None:
    net = ctx.net
    assert net is not None
    save_checkpoint(
        {
            "kind": CHECKPOINT_KIND,
            "config": ctx.settings.to_dict(),
            "net": net.state_dict(),
            "type2": state.resume_dict(),
            "history": history,
            "rng": capture_run_rng(ctx.loaders),
            "seconds": ctx.seconds(),
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


def _write_cost(ctx: RunContext, seconds: float) -> None:
    """``metrics.json``: search cost (wall time over every process of a resumed run, device,
    GPU-days) for tables."""
    device = ctx.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    data = {
        "strategy": "bayesnas",
        "search_seconds": seconds,
        "search_device": str(device),
        "device_name": name,
        "search_gpu_days": search_cost_gpu_days(seconds, str(device)),
        "space": ctx.space.name,
        "dataset": ctx.settings.data.dataset,
        "t_max": ctx.settings.type2.t_max,
        "world_size": ctx.ranks.world_size,
    }
    atomic_write_text(json.dumps(data, indent=2) + "\n", ctx.out / "metrics.json")


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
            atomic_write_text(genotype_to_json(top2_projection(genotype, space, sites)),
                              out / "genotype_top2.json")
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
                atomic_write_text(genotype_to_json(projection),
                                  out / "genotype_nb201_projection.json")
        atomic_write_text(text + "\n", out / "genotype_nb201.txt")
        write_run_lookup(out, text)


def _write_extras(
    ctx: RunContext,
    dest: Path,
    genotype: Genotype,
    posterior: dict[str, Any],
    prior: Any,
    hypers: dict[str, Any],
) -> None:
    """Cell diagrams and the ArviZ file, into ``dest`` (their failure must not lose the
    finished search).

    The draws come from the ``report`` seed stream."""
    from pyronas.diagram import draw_genotype

    net, run = ctx.net, ctx.settings.run
    assert net is not None
    try:
        draw_genotype(genotype, dest / "cell.png")
    except Exception as err:  # drawing is a convenience: the genotype is already saved
        log.warning("could not draw the cells: %s", err)
    try:
        from pyronas.arviz_export import heldout_log_likelihood, sample_prior, save_arviz, to_arviz

        seed = ctx.seeds.seed("report")
        heldout = list(itertools.islice(ctx.loaders["val"], run.loglik_batches))
        loglik = heldout_log_likelihood(
            net, posterior, heldout, num_chains=2, num_draws=run.posterior_draws, seed=seed
        )
        prior_draws = sample_prior(
            prior,
            hypers,
            num_chains=2,
            num_draws=run.posterior_draws,
            seed=seed,
            cell_type_index=None if net.tied else net.cell_type_index,
        )
        idata = to_arviz(
            posterior,
            ctx.space,
            num_chains=2,
            num_draws=run.posterior_draws,
            seed=seed,
            log_likelihood=loglik,
            prior_draws=prior_draws,
        )
        save_arviz(idata, dest / "posterior.nc")
    except Exception as err:
        # the first line only: a distribution's validation error prints whole tensors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.warning("could not write posterior.nc (%s): %s", type(err).__name__, first[:300])
