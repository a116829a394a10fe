"""What the baseline strategies share beyond the run skeleton: the result, the last step and
the cell <-> switch conversions.

A strategy claims its run folder and prepares the run (:func:`start_strategy`: folder,
``config.yaml``, seeds, data splits, supernet, loaders), appends one row per epoch to
``metrics.csv``, checkpoints after each epoch (:func:`save_epoch_checkpoint`; a run started
with ``--resume`` continues from there, :func:`resume_epoch_checkpoint`) and ends with
:func:`finish` (``genotype.json``, cell diagrams and ``metrics.json`` with the search cost,
written atomically, ``metrics.json`` last).

Search cost: ``metrics.json`` holds ``search_seconds`` (wall time of the whole search, from
:func:`~pyronas.run_setup.prepare_run` to :func:`finish`, summed over the processes of a
resumed run) and ``search_device``;
:func:`~pyronas.runs.search_cost_gpu_days` turns them into GPU-days (``seconds / 86400`` on a
GPU, ``None`` on a CPU).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pyronas.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from pyronas.genotype import (
    Genotype,
    alive_mask,
    derive,
    format_nb201_string,
    genotype_to_json,
    to_nb201_string,
)
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
    device_description,
    search_cost_gpu_days,
    staged_outputs,
)
from pyronas.settings import SearchSettings
from pyronas.space import SearchSpace
from pyronas.supernet import SuperNet

log = logging.getLogger(__name__)


@dataclass
class StrategyResult:
    """What a baseline search returns (everything is also in the run folder).

    Attributes
    ----------
    out_dir
        The run folder.
    genotype
        The derived cell.
    records
        The rows of ``metrics.csv``, one per epoch.
    seconds
        Wall time of the whole search.
    strategy
        ``darts1``, ``darts2``, ``random-ws`` or ``random-plain``.
    extra
        Strategy specific results (e.g. ``alpha`` for DARTS, ``candidates`` for random search).
    """

    out_dir: Path
    genotype: Genotype
    records: list[dict[str, Any]]
    seconds: float
    strategy: str
    extra: dict[str, Any] = field(default_factory=dict)


def start_strategy(
    cfg: SearchSettings | Mapping[str, Any], out_dir: str | Path | None, prefix: str,
    data: bool = True,
) -> RunContext:
    """Validate the settings, claim the run folder, and prepare the run.

    Parameters
    ----------
    cfg
        Settings, or a nested or flat mapping of them (validated here).
    out_dir
        Run folder; default ``run.out`` or ``runs/<prefix>-<time>``.
    prefix
        The strategy (``darts1``, ``random-ws``, ...): prefix of the default run folder, and
        what ``run.json`` records (a resumed run must be of the same strategy).
    data
        Load the data and build the supernet and loaders (``False``: a strategy that trains
        nothing).

    Raises
    ------
    RunFolderError
        The folder holds a run or other files (without ``--resume`` or ``--overwrite``), cannot
        be written, or (``--resume``) holds no run of this strategy and settings
        (:func:`~pyronas.run_setup.claim_run_folder`).
    """
    settings = SearchSettings.from_mapping(cfg)
    out = run_folder(settings, out_dir, prefix)
    claim_run_folder(settings, out, prefix)
    return prepare_run(settings, out, data=data)


def save_epoch_checkpoint(h: RunContext, kind: str, epoch: int, **state: Any) -> None:
    """``checkpoint.pt`` after ``epoch`` epochs: ``state`` (weights, optimisers, records ...)
    plus the settings, every generator (:func:`~pyronas.run_setup.capture_run_rng`) and the
    search seconds so far. Call it between epochs, when no loader is being iterated."""
    save_checkpoint({"kind": kind, "config": h.settings.to_dict(), "epoch": epoch,
                     "rng": capture_run_rng(h.loaders), "seconds": h.seconds(), **state},
                    h.out / CHECKPOINT_NAME)


def resume_epoch_checkpoint(h: RunContext, kind: str) -> dict[str, Any] | None:
    """The checkpoint of a resumed run, its generators and seconds restored into ``h``; None
    for a new run (or one stopped before its first checkpoint).

    Call it once the run has drawn everything it draws before its first epoch; ``metrics.csv``
    keeps the rows of the checkpointed epochs only.

    Raises
    ------
    RunFolderError
        The checkpoint is of another kind or of other settings, or cannot be read.
    """
    path = h.out / CHECKPOINT_NAME
    if not h.settings.run.resume or not path.exists():
        h.metrics.truncate_after("epoch", 0)  # rows of a run stopped before its first checkpoint
        return None
    state = load_checkpoint(path, weights_only=False)
    if state.get("kind") != kind:
        raise RunFolderError(f"--resume: {path} is not a {kind} checkpoint (kind "
                             f"{state.get('kind', 'unknown')!r}); start a new run folder")
    differ = config_difference(state["config"], h.settings)
    if differ:
        raise RunFolderError(f"--resume: the checkpoint in {h.out} was written with other "
                             f"settings ({', '.join(differ)}); use the same options")
    h.metrics.truncate_after("epoch", int(state["epoch"]))
    restore_run_rng(state["rng"], h.loaders)
    h.seconds_before = float(state["seconds"])
    log.info("resuming %s after epoch %d", h.out, state["epoch"])
    return state


def finish(h: RunContext, genotype: Genotype, strategy: str, records: list[dict[str, Any]],
           extra_metrics: dict[str, Any] | None = None) -> StrategyResult:
    """Write ``genotype.json``, the cell diagrams and ``metrics.json``; return the result.

    ``metrics.json``: ``strategy``, ``search_seconds``, ``search_device`` (``cuda`` / ``cpu``,
    also under ``device``), ``device_name``, ``search_gpu_days`` (``None`` on a CPU), ``space``,
    ``dataset``, ``epochs`` and ``extra_metrics``. On ``nb201`` also ``genotype_nb201.txt`` (the
    benchmark string of the cell: the baselines' rule gives one op or ``none`` per edge) and
    ``nb201_lookup.json`` (its entry in the bundled table, :mod:`pyronas.nb201`).
    """
    from pyronas.diagram import draw_genotype
    from pyronas.nb201 import STRING_FILE, write_run_lookup

    with staged_outputs(h.out) as stage:
        atomic_write_text(genotype_to_json(genotype), stage / "genotype.json")
        if h.space.name == "nb201":
            arch = to_nb201_string(genotype)
            atomic_write_text(arch + "\n", stage / STRING_FILE)
            write_run_lookup(stage, arch)
        try:
            draw_genotype(genotype, stage / "cell.png")
        except Exception as err:  # drawing is a convenience: the genotype is already saved
            log.warning("could not draw the cells: %s", err)
    seconds = h.seconds()
    summary = {
        "strategy": strategy,
        "search_seconds": seconds,
        "search_device": h.device.type,
        "device": h.device.type,
        "device_name": device_description(h.device),
        "search_gpu_days": search_cost_gpu_days(seconds, h.device),
        "space": h.space.name,
        "dataset": h.settings.data.dataset,
        "epochs": len(records),
        **(extra_metrics or {}),
    }
    atomic_write_text(json.dumps(summary, indent=2) + "\n", h.out / "metrics.json")
    log.info("%s search finished in %.1f s; run folder %s", strategy, seconds, h.out)
    return StrategyResult(h.out, genotype, records, seconds, strategy)


def cosine_lr(base: float, minimum: float, epoch: int, epochs: int) -> float:
    """Cosine annealing from ``base`` (epoch 0) towards ``minimum`` (epoch ``epochs``)."""
    return minimum + 0.5 * (base - minimum) * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def genotype_switches(space: SearchSpace, genotype: Genotype, net: SuperNet
                      ) -> dict[str, Tensor]:
    """One-hot switches that make the supernet compute exactly ``genotype``.

    ``edge_switch`` is all ones (every op sees its real input, so batch norms stay meaningful);
    ``op_switch`` is 1 for the genotype's ops and 0 elsewhere, so dropped edges output zero.

    Returns
    -------
    dict
        ``edge_switch`` ``(group, edge)``, ``op_switch`` ``(group, edge, op)`` on the net's device
        (``group`` = cell type when tied, cell otherwise).
    """
    alive_edge, alive_op = alive_mask(space, genotype)
    op = (alive_op & alive_edge.unsqueeze(-1)).to(net.classifier.weight)
    if not net.tied:
        op = op[net.cell_type_index.cpu()]
    edge = torch.ones(op.shape[:-1], dtype=op.dtype, device=op.device)
    return {"edge_switch": edge, "op_switch": op}


def derive_one_op_per_edge(space: SearchSpace, choice: Tensor) -> Genotype:
    """Genotype of an integer op choice per edge (``-1`` or ``num_ops``: no op on that edge).

    Parameters
    ----------
    choice
        ``(cell_type, edge)`` integers in ``-1 .. num_ops``.

    The connectivity rule of :func:`pyronas.genotype.derive` removes nodes without input. For
    ``nb201`` the genotype keeps the benchmark string of the whole choice, one op (or ``none``)
    on each of the 6 edges, dead edges included: that is the benchmark's cell of the choice
    (``to_nb201_string`` gives it back, :func:`pyronas.genotype.nb201_dead_edges` lists what the
    connectivity rule dropped).
    """
    choice = torch.as_tensor(choice).long()
    live = (choice >= 0) & (choice < space.num_ops)
    alive_op = torch.zeros(*choice.shape, space.num_ops, dtype=torch.bool)
    alive_op[live] = torch.nn.functional.one_hot(choice[live], space.num_ops).bool()
    genotype = derive(space, live, alive_op)
    if space.name != "nb201":
        return genotype
    nodes: list[list[tuple[str, int]]] = [[] for _ in range(space.num_nodes)]
    for e, (src, dst) in enumerate(space.edges["normal"]):
        if live[0, e]:
            nodes[dst - space.num_inputs].append((space.ops[int(choice[0, e])], src))
    return replace(genotype, nb201_string=format_nb201_string(nodes))
