"""Conversions between genotypes and other forms of a cell.

DARTS: the flat lists of the DARTS repository (2 pairs per node) and the top-2 projection.
NAS-Bench-201: a genotype from and to a benchmark string (kept losslessly, dead edges
included), the dead edges of a string, and the one-op-per-edge projection of a found cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pyronas.genotype.cell import Genotype, replace_cells
from pyronas.genotype.nb201_string import (
    check_nb201_cell,
    connected_nb201_nodes,
    format_nb201_string,
    parse_nb201_string,
)
from pyronas.genotype.nodes import Cell, GenotypeError, Pair, sort_pairs
from pyronas.space import SPACES


def to_darts_top2(
    genotype: Genotype, weights: Mapping[tuple[int, int, str], float] | None = None
) -> Genotype:
    """DARTS-style projection: each node keeps its 2 strongest distinct inputs, one op each.

    Parameters
    ----------
    genotype
        Any genotype (multi-op edges allowed).
    weights
        Optional scores ``{(node, input, op): score}`` with ``node`` the node's DARTS index; the
        same keys for both cell types. Per input the highest-score op is kept, and the two
        inputs with the highest such scores, strongest first. Every pair of the genotype must
        have a score. Without weights: the first op listed per input, the first two inputs in
        listed order.

    Returns
    -------
    Genotype
        Same concat lists; a node with fewer than two distinct inputs keeps what it has (such a
        node cannot be written as a DARTS flat list, see :func:`to_darts_pairs`).
    """
    cells = {}
    for cell_type in genotype.cell_types:
        nodes = []
        for j, pairs in enumerate(genotype.cell(cell_type)):
            me = genotype.num_inputs + j
            best: dict[int, tuple[float, str]] = {}
            order: list[int] = []
            for op, src in pairs:
                if weights is None:
                    score = 0.0
                else:
                    key = (me, src, op)
                    if key not in weights:
                        raise GenotypeError(f"to_darts_top2: no weight for {cell_type} pair {key}")
                    score = float(weights[key])
                if src not in best:
                    order.append(src)
                    best[src] = (score, op)
                elif score > best[src][0]:
                    best[src] = (score, op)
            if weights is not None:  # stable sort keeps listed order on ties
                order.sort(key=lambda s: -best[s][0])
            nodes.append(tuple((best[s][1], s) for s in order[:2]))
        cells[cell_type] = tuple(nodes)
    return replace_cells(genotype, cells)


def to_darts_pairs(genotype: Genotype, cell_type: str = "normal") -> list[Pair]:
    """The DARTS flat list (2 pairs per node, node by node) of a top-2 genotype."""
    flat: list[Pair] = []
    for j, pairs in enumerate(genotype.cell(cell_type)):
        if len(pairs) != 2:
            raise GenotypeError(
                f"{cell_type} node {genotype.num_inputs + j} has {len(pairs)} pairs; a DARTS "
                "genotype needs exactly 2 per node (use to_darts_top2 first)"
            )
        flat.extend(pairs)
    return flat


def from_darts(
    normal: Sequence[Pair],
    normal_concat: Sequence[int],
    reduce: Sequence[Pair] | None = None,
    reduce_concat: Sequence[int] | None = None,
    space: str | None = "darts",
) -> Genotype:
    """Build a genotype from DARTS flat lists (2 ``(op, input)`` pairs per node, in order)."""

    def split(flat: Sequence[Pair] | None, where: str) -> Cell | None:
        if flat is None:
            return None
        flat = list(flat)
        if len(flat) % 2:
            raise GenotypeError(f"{where}: DARTS lists hold 2 pairs per node, got {len(flat)}")
        return tuple(tuple(flat[i : i + 2]) for i in range(0, len(flat), 2))

    return Genotype(
        normal=split(normal, "normal"),
        normal_concat=normal_concat,
        reduce=split(reduce, "reduce"),
        reduce_concat=reduce_concat,
        num_inputs=2,
        space=space,
    )



def from_nb201_string(arch: str) -> Genotype:
    """Parse a NAS-Bench-201 string into a genotype (space ``nb201``, output node 3).

    The cell follows the connectivity rule (see
    :func:`~pyronas.genotype.apply_connectivity_rule`: edges out of nodes without input and nodes
    that do not reach the output are dropped, ``none`` edges are absent), and the string itself
    is kept verbatim in ``nb201_string``, so ``to_nb201_string(from_nb201_string(s)) == s`` for
    every benchmark string that has a path from the input to the output; the dropped edges are
    :func:`nb201_dead_edges`. Surrounding whitespace is stripped.

    Raises
    ------
    GenotypeError
        On a malformed string (see :func:`~pyronas.genotype.parse_nb201_string`) or if no path
        reaches the output (341 benchmark strings: the benchmark's library marks them invalid
        too).
    """
    nodes = parse_nb201_string(arch)
    arch = arch.strip()
    kept = connected_nb201_nodes(nodes)
    if kept is None:
        raise GenotypeError(f"NB201 string {arch!r}: no path from the input reaches the output")
    return Genotype(normal=kept, normal_concat=(3,), num_inputs=1, space="nb201",
                    nb201_string=arch)


def to_nb201_string(genotype: Genotype) -> str:
    """The NAS-Bench-201 architecture string, e.g. ``|nor_conv_3x3~0|+|...~0|...~1|+|...|``.

    A genotype read from a benchmark string (``nb201_string`` set, see
    :func:`from_nb201_string`) gives that string back verbatim, dead edges included: it is the
    benchmark's key of the cell. Otherwise the string is written from the cell, edges with no op
    as ``none``. Raises :class:`GenotypeError` for a genotype that is not an NB201 cell (one
    input, 3 nodes, output node 3, no reduction cell, NB201 ops) or has an edge with several
    ops.
    """
    check_nb201_cell(genotype)
    if genotype.nb201_string is not None:
        return genotype.nb201_string
    return format_nb201_string(genotype.normal)



def nb201_dead_edges(arch: str | Genotype) -> tuple[tuple[int, int, str], ...]:
    """The edges of a NAS-Bench-201 string that the connectivity rule drops.

    An edge is dead when it leaves a node without input or enters a node from which no path
    reaches the output. The benchmark trained every edge of its string (a dead edge's batch norm
    still adds a bias), pyronas's evaluation network drops them.

    Parameters
    ----------
    arch
        A benchmark string, or a genotype (its ``nb201_string``; none for a genotype without).

    Returns
    -------
    tuple
        ``(input, node, op)`` per dead edge (benchmark numbering: input 0, nodes 1..3), in the
        order of the string; every non-``none`` edge when nothing reaches the output.
    """
    if isinstance(arch, Genotype):
        if arch.nb201_string is None:
            return ()
        arch = arch.nb201_string
    nodes = parse_nb201_string(arch)
    kept = connected_nb201_nodes(nodes) or ((), (), ())
    return tuple(
        (src, 1 + j, op) for j, pairs in enumerate(nodes) for op, src in pairs
        if (op, src) not in kept[j]
    )



def multi_op_edges(
    genotype: Genotype, cell_type: str = "normal"
) -> dict[tuple[int, int], tuple[str, ...]]:
    """The edges of a cell that keep several ops.

    Parameters
    ----------
    genotype
        Any genotype.
    cell_type
        The cell to look at (``"normal"`` or ``"reduce"``).

    Returns
    -------
    dict
        ``{(input, node): ops}`` (DARTS indices) for every edge with more than one op, the ops
        in the order the genotype lists them; empty for a one-op-per-edge cell.
    """
    n_in = genotype.num_inputs
    by_edge: dict[tuple[int, int], list[str]] = {}
    for j, pairs in enumerate(genotype.cell(cell_type)):
        for op, src in pairs:
            by_edge.setdefault((src, n_in + j), []).append(op)
    return {edge: tuple(ops) for edge, ops in by_edge.items() if len(ops) > 1}



def to_nb201_projection(genotype: Genotype, scores: Any) -> Genotype:
    """One-op-per-edge projection of a found NAS-Bench-201 cell.

    A NAS-Bench-201 cell has exactly one op per edge, but a BayesNAS cell may keep several (a
    multi-op edge, summed in the supernet). The projection keeps, on every edge of the
    ``nb201`` space, the single op with the largest score among the ops the cell keeps there;
    an edge that keeps no op stays empty (``none`` in the benchmark string). The edges that
    carry an op are the same as in ``genotype``, so the projection is as connected as the cell
    and ``to_nb201_string(to_nb201_projection(g, scores))`` always works.

    Parameters
    ----------
    genotype
        An NB201 cell (one input, 3 nodes, output node 3, no reduction cell, NB201 ops);
        multi-op edges allowed.
    scores
        Float scores with shape ``(edge, op)`` (tensor, array or nested lists) in the edge
        order ``get_space("nb201").edges["normal"]`` and op order ``get_space("nb201").ops``,
        e.g. the posterior inclusion ``|edge_switch| * |op_switch|``. Only the scores of kept
        ops matter; they must be finite. Ties go to the op listed first in the space.

    Returns
    -------
    Genotype
        Space ``nb201``, one ``(op, input)`` pair per non-empty edge, pairs sorted as in
        :func:`~pyronas.genotype.canonical`; equal to ``canonical(genotype)`` when the cell
        already has one op per edge.

    Raises
    ------
    GenotypeError
        If ``genotype`` is not an NB201 cell or ``scores`` has the wrong shape or is not finite.
    """
    space = SPACES["nb201"]
    check_nb201_cell(genotype)
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().double().numpy()
    arr = np.asarray(scores, dtype=np.float64)
    shape = (space.num_edges, space.num_ops)
    if arr.shape != shape:
        raise GenotypeError(f"to_nb201_projection: scores must have shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise GenotypeError("to_nb201_projection: scores must be finite")
    nodes: list[list[Pair]] = [[] for _ in range(space.num_nodes)]
    for e, (src, dst) in enumerate(space.edges["normal"]):
        kept = {op for op, s in genotype.normal[dst - space.num_inputs] if s == src}
        for op in kept:
            if op not in space.ops:
                raise GenotypeError(
                    f"edge {src}->{dst}: op {op!r} is not an NB201 op ({', '.join(space.ops)})"
                )
        if not kept:
            continue  # the edge stays empty: ``none``
        candidates = [k for k, op in enumerate(space.ops) if op in kept]  # in space order
        best = candidates[int(np.argmax(arr[e, candidates]))]
        nodes[dst - space.num_inputs].append((space.ops[best], src))
    # a one-op-per-edge cell projects to itself: it keeps its benchmark string, if it has one
    same = not multi_op_edges(genotype)
    return Genotype(
        normal=tuple(sort_pairs(pairs) for pairs in nodes),
        normal_concat=(space.num_total_nodes - 1,),
        num_inputs=space.num_inputs,
        space=space.name,
        nb201_string=genotype.nb201_string if same else None,
    )
