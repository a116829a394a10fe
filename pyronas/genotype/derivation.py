"""Derivation: from pruning masks to a connected genotype, and back.

:func:`derive` turns the masks a search ends with into a genotype under the connectivity
rule (:mod:`pyronas.genotype.nodes`); :func:`alive_mask` is its inverse;
:func:`apply_connectivity_rule` applies the rule to a genotype.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from pyronas.genotype.cell import Genotype, replace_cells
from pyronas.genotype.nodes import (
    GenotypeError,
    Pair,
    keep_surviving,
    sort_pairs,
    surviving_nodes,
)
from pyronas.space import SearchSpace

log = logging.getLogger(__name__)


def apply_connectivity_rule(genotype: Genotype, concat_all: bool = True) -> Genotype:
    """Apply the connectivity rule to a genotype (see :func:`derive`).

    Nodes without an input are removed with every edge out of them (their slots stay, empty);
    with ``concat_all=False`` so are the nodes that do not reach the last node.

    Parameters
    ----------
    genotype
        Any genotype.
    concat_all
        ``True`` for DARTS-style cells (output = concat of every surviving node; the concat
        lists are recomputed), ``False`` for cells whose output is the last node (nb201).

    Returns
    -------
    Genotype
        The connected genotype, without ``nb201_string`` (the benchmark string of the input, if
        any, is not carried over).

    Raises
    ------
    GenotypeError
        If no node of a cell survives.
    """
    cells, concats = {}, {}
    for cell_type in genotype.cell_types:
        nodes = genotype.cell(cell_type)
        surviving = surviving_nodes(nodes, genotype.num_inputs, concat_all)
        if not surviving:
            raise GenotypeError(f"{cell_type}: no node survives the connectivity rule")
        cells[cell_type], concats[cell_type] = keep_surviving(
            nodes, genotype.num_inputs, surviving, concat_all
        )
    return replace_cells(genotype, cells, concats)


def derive(
    space: SearchSpace,
    alive_edge: Any,
    alive_op: Any,
    cell_type_scores: Any = None,
) -> Genotype:
    """Turn pruning masks into a connected genotype.

    An op is live if its edge and the op itself are kept. Then the connectivity rule
    (Proposition 1): every intermediate node without a live input edge is removed, with every
    edge out of it, repeatedly; for spaces whose output is the last node (``space.concat`` is
    false, nb201) every node from which no live path reaches that node is removed too. In
    DARTS-style cells every surviving node is concatenated into the output, so a node with a
    live input always reaches it; the concat list is the surviving nodes.

    Parameters
    ----------
    space
        The search space.
    alive_edge
        Bool mask ``(cell_type, edge)`` (tensor, array or nested lists).
    alive_op
        Bool mask ``(cell_type, edge, op)``.
    cell_type_scores
        Optional float scores ``(cell_type, edge, op)`` (e.g. ``|posterior mean|`` of the op
        switches), used only when nothing of a cell type survives: that cell then keeps the
        single highest-score op among the edges that alone form a valid cell (edges from a cell
        input; for nb201, from the input into the output node), and a warning is logged.
        Without scores such a cell raises :class:`GenotypeError`.

    Returns
    -------
    Genotype
        Pairs of each node sorted by (input, op) as in :func:`~pyronas.genotype.canonical`;
        ``space`` set to ``space.name``; ``reduce`` is ``None`` for single-cell-type spaces.
    """
    n_types = len(space.cell_types)
    edge_mask = _as_bool_array(alive_edge, (n_types, space.num_edges), "alive_edge")
    op_mask = _as_bool_array(alive_op, (n_types, space.num_edges, space.num_ops), "alive_op")
    scores = None
    if cell_type_scores is not None:
        if isinstance(cell_type_scores, torch.Tensor):
            cell_type_scores = cell_type_scores.detach().cpu().numpy()
        scores = np.asarray(cell_type_scores, dtype=float)
        if scores.shape != op_mask.shape:
            raise GenotypeError(
                f"cell_type_scores: expected shape {op_mask.shape}, got {scores.shape}"
            )
    live = edge_mask[:, :, None] & op_mask
    cells, concats = {}, {}
    for t, cell_type in enumerate(space.cell_types):
        nodes: list[list[Pair]] = [[] for _ in range(space.num_nodes)]
        for e, (src, dst) in enumerate(space.edges[cell_type]):
            for k in np.flatnonzero(live[t, e]):
                nodes[dst - space.num_inputs].append((space.ops[k], src))
        surviving = surviving_nodes(nodes, space.num_inputs, space.concat)
        if not surviving:
            nodes, surviving = _fallback(space, cell_type, None if scores is None else scores[t])
        kept, concat = keep_surviving(nodes, space.num_inputs, surviving, space.concat)
        cells[cell_type] = tuple(sort_pairs(p) for p in kept)
        concats[cell_type] = concat
    two = n_types > 1
    return Genotype(
        normal=cells[space.cell_types[0]],
        normal_concat=concats[space.cell_types[0]],
        reduce=cells[space.cell_types[1]] if two else None,
        reduce_concat=concats[space.cell_types[1]] if two else None,
        num_inputs=space.num_inputs,
        space=space.name,
    )


def alive_mask(space: SearchSpace, genotype: Genotype) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks ``(alive_edge (cell_type, edge), alive_op (cell_type, edge, op))`` of a genotype.

    The inverse of :func:`derive`: ``derive(space, *alive_mask(space, g)) == g`` for a derived
    ``g``. Raises :class:`GenotypeError` if the genotype does not fit the space (cell types,
    inputs, node count, an edge or op the space lacks).
    """
    if genotype.num_inputs != space.num_inputs:
        raise GenotypeError(
            f"genotype has {genotype.num_inputs} inputs, space {space.name!r} {space.num_inputs}"
        )
    if len(genotype.cell_types) != len(space.cell_types):
        raise GenotypeError(
            f"genotype has cells {genotype.cell_types}, space {space.name!r} {space.cell_types}"
        )
    edge_shape, op_shape = space.switch_shapes()
    alive_edge = torch.zeros(edge_shape, dtype=torch.bool)
    alive_op = torch.zeros(op_shape, dtype=torch.bool)
    for t, cell_type in enumerate(space.cell_types):
        nodes = genotype.cell(cell_type)
        if len(nodes) != space.num_nodes:
            raise GenotypeError(
                f"{cell_type}: genotype has {len(nodes)} nodes, space {space.name!r} "
                f"{space.num_nodes}"
            )
        index = {edge: e for e, edge in enumerate(space.edges[cell_type])}
        for j, pairs in enumerate(nodes):
            dst = space.num_inputs + j
            for op, src in pairs:
                e = index.get((src, dst))
                if e is None:
                    raise GenotypeError(
                        f"{cell_type}: edge {space.node_name(src)}->{space.node_name(dst)} "
                        f"is not in space {space.name!r}"
                    )
                if op not in space.ops:
                    raise GenotypeError(f"{cell_type}: op {op!r} is not in space {space.name!r}")
                alive_edge[t, e] = True
                alive_op[t, e, space.ops.index(op)] = True
    return alive_edge, alive_op


def _as_bool_array(x: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.shape != shape:
        raise GenotypeError(f"{name}: expected shape {shape}, got {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise GenotypeError(
        f"{name}: expected a boolean mask (or 0/1 integers), got dtype {arr.dtype}; "
        "threshold scores into a mask first"
    )


def _fallback(
    space: SearchSpace, cell_type: str, scores: np.ndarray | None
) -> tuple[list[list[Pair]], set[int]]:
    if scores is None:
        raise GenotypeError(
            f"{cell_type} cell: no intermediate node keeps a live input after the connectivity "
            "rule (everything pruned); pass cell_type_scores to keep the strongest single edge"
        )
    last = space.num_total_nodes - 1
    best = None
    for e, (src, dst) in enumerate(space.edges[cell_type]):
        if src >= space.num_inputs or (not space.concat and dst != last):
            continue
        k = int(np.argmax(scores[e]))
        if best is None or scores[e, k] > best[0]:
            best = (scores[e, k], src, dst, k)
    if best is None:
        raise GenotypeError(f"{cell_type} cell: nothing survives and no single edge can replace it")
    _, src, dst, k = best
    log.warning(
        "%s cell: nothing survives the connectivity rule; keeping the strongest single edge "
        "%s -> %s with %s",
        cell_type,
        space.node_name(src),
        space.node_name(dst),
        space.ops[k],
    )
    nodes: list[list[Pair]] = [[] for _ in range(space.num_nodes)]
    nodes[dst - space.num_inputs].append((space.ops[k], src))
    return nodes, {dst}
