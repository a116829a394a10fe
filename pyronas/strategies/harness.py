"""What the baseline strategies share beyond the run skeleton: the result, the last step and
the cell <-> switch conversions.

A strategy checks its run folder (:func:`check_folder`), calls
:func:`pyronas.run_setup.prepare_run` (folder, ``config.yaml``, seeds, data splits, supernet,
loaders), appends one row per epoch to ``metrics.csv`` and ends with :func:`finish`
(``genotype.json``, cell diagrams and ``metrics.json`` with the search cost).

Search cost: ``metrics.json`` holds ``search_seconds`` (wall time of the whole search, from
:func:`~pyronas.run_setup.prepare_run` to :func:`finish`) and ``search_device``;
:func:`~pyronas.runs.search_cost_gpu_days` turns them into GPU-days (``seconds / 86400`` on a
GPU, ``None`` on a CPU).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pyronas.genotype import (
    Genotype,
    alive_mask,
    derive,
    format_nb201_string,
    save_genotype,
    to_nb201_string,
)
from pyronas.run_setup import RunContext, prepare_run, refuse_existing_run, run_folder
from pyronas.runs import atomic_write_text, device_description, search_cost_gpu_days
from pyronas.settings import SearchSettings
from pyronas.space import SearchSpace
from pyronas.supernet import SuperNet

log = logging.getLogger(__name__)

RUN_MARKERS = ("genotype.json", "metrics.csv", "metrics.json", "posterior.pt")
"""Files whose presence means a folder already holds a finished or started search run."""


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
    """Validate the settings, refuse a folder that holds a run, and prepare the run.

    Parameters
    ----------
    cfg
        Settings, or a nested or flat mapping of them (validated here).
    out_dir
        Run folder; default ``run.out`` or ``runs/<prefix>-<time>``.
    prefix
        Folder name prefix of the default run folder.
    data
        Load the data and build the supernet and loaders (``False``: a strategy that trains
        nothing).

    Raises
    ------
    FileExistsError
        The folder already holds a search run (nothing is overwritten).
    """
    settings = SearchSettings.from_mapping(cfg)
    out = run_folder(settings, out_dir, prefix)
    refuse_existing_run(out, RUN_MARKERS, "choose another --out")
    return prepare_run(settings, out, data=data)


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

    save_genotype(genotype, h.out / "genotype.json")
    if h.space.name == "nb201":
        arch = to_nb201_string(genotype)
        (h.out / STRING_FILE).write_text(arch + "\n")
        write_run_lookup(h.out, arch)
    try:
        draw_genotype(genotype, h.out / "cell.png")
    except Exception as err:  # drawing is a convenience: the genotype is already saved
        log.warning("could not draw the cells: %s", err)
    seconds = time.perf_counter() - h.start
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
