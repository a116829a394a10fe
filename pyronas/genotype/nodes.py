"""A cell as plain node lists, and the connectivity rule on them.

A cell is, per intermediate node, the ``(op, input)`` pairs that feed it (DARTS numbering:
inputs ``0 .. num_inputs - 1``, then intermediate node ``j`` is ``num_inputs + j``). The
connectivity rule (Proposition 1 of the paper) removes every node without an input, with every
edge out of it, and, for cells whose output is the last node, every node that does not reach it.
Nothing here knows the :class:`~pyronas.genotype.Genotype` type: the NAS-Bench-201 string
format, the type itself and the derivation all build on these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pyronas.space import PRIMITIVES_DARTS, PRIMITIVES_NB201

KNOWN_OPS: tuple[str, ...] = PRIMITIVES_DARTS + tuple(
    op for op in PRIMITIVES_NB201 if op not in PRIMITIVES_DARTS
)
"""Every non-zero op of every space; also the canonical op order within an edge."""

_OP_RANK = {op: i for i, op in enumerate(KNOWN_OPS)}

Pair = tuple[str, int]
"""``(op, input)``: one op on the edge from ``input`` (DARTS numbering) into a node."""

Cell = tuple[tuple[Pair, ...], ...]
"""Per intermediate node, its ``(op, input)`` pairs."""


class GenotypeError(ValueError):
    """A genotype (or its JSON) is malformed; the message names the problem and where."""


def sort_pairs(pairs: Iterable[Pair]) -> tuple[Pair, ...]:
    """The pairs of one node in canonical order: by input, then by op in ``KNOWN_OPS`` order."""
    return tuple(sorted(pairs, key=lambda p: (p[1], _OP_RANK.get(p[0], len(_OP_RANK)), p[0])))


def surviving_nodes(
    nodes: Sequence[Sequence[Pair]], num_inputs: int, concat_all: bool
) -> set[int]:
    """DARTS indices of the intermediate nodes that survive the connectivity rule.

    Forward pass: a node survives if some pair comes from a cell input or a surviving earlier
    node (nodes are in topological order, so one pass reaches the fixed point of the iterative
    rule). Backward pass (``concat_all=False``): keep only surviving nodes from which a path of
    surviving nodes reaches the last node, the cell output. With ``concat_all`` every surviving
    node is concatenated into the output, so it reaches it.

    Parameters
    ----------
    nodes
        Per intermediate node (``len(nodes)`` of them), its ``(op, input)`` pairs.
    num_inputs
        Number of cell inputs.
    concat_all
        ``True`` when the cell output is the concat of every surviving node (DARTS), ``False``
        when it is the last node (nb201).

    Returns
    -------
    set of int
        The surviving nodes; empty when nothing survives (for ``concat_all=False``: when the
        last node does not).
    """
    fed: set[int] = set()
    for j, pairs in enumerate(nodes):
        if any(src < num_inputs or src in fed for _, src in pairs):
            fed.add(num_inputs + j)
    if concat_all:
        return fed
    last = num_inputs + len(nodes) - 1
    if last not in fed:
        return set()
    reach = {last}
    for j in range(len(nodes) - 1, -1, -1):
        me = num_inputs + j
        if me in reach:
            reach.update(src for _, src in nodes[j] if src >= num_inputs and src in fed)
    return fed & reach


def keep_surviving(
    nodes: Sequence[Sequence[Pair]], num_inputs: int, surviving: set[int], concat_all: bool
) -> tuple[Cell, list[int]]:
    """The cell reduced to its surviving nodes, and its concat list.

    Parameters
    ----------
    nodes, num_inputs, concat_all
        As in :func:`surviving_nodes`.
    surviving
        The DARTS indices of the nodes to keep (from :func:`surviving_nodes`).

    Returns
    -------
    tuple
        ``(cell, concat)``: every node of ``nodes`` (removed ones keep their slot, empty) with
        only the pairs from a cell input or a kept node; ``concat`` the kept nodes in order
        (``concat_all``) or the last node.
    """
    kept = tuple(
        tuple(p for p in pairs if p[1] < num_inputs or p[1] in surviving)
        if num_inputs + j in surviving
        else ()
        for j, pairs in enumerate(nodes)
    )
    concat = sorted(surviving) if concat_all else [num_inputs + len(nodes) - 1]
    return kept, concat
