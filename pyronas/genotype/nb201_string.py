"""The NAS-Bench-201 architecture string, read and written losslessly.

A benchmark string such as ``|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|none~1|
none~2|`` lists, per node 1..3, the op of every edge into it (``none``: no edge). These
functions work on plain node lists (:mod:`pyronas.genotype.nodes`); the conversions between a
string and a :class:`~pyronas.genotype.Genotype` are in :mod:`pyronas.genotype.convert`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyronas.genotype.nodes import (
    Cell,
    GenotypeError,
    Pair,
    keep_surviving,
    sort_pairs,
    surviving_nodes,
)
from pyronas.space import PRIMITIVES_NB201

if TYPE_CHECKING:
    from pyronas.genotype.cell import Genotype


def parse_nb201_string(arch: str) -> Cell:
    """Parse a NAS-Bench-201 string losslessly into per-node ``(op, input)`` pairs.

    Every edge but ``none`` is kept, dead ones included (no connectivity rule), so
    ``format_nb201_string(parse_nb201_string(s)) == s`` for every benchmark string.

    Parameters
    ----------
    arch
        E.g. ``|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|``:
        3 ``+``-separated nodes, node ``j`` (1-based) written ``|op~0|...|op~(j-1)|``.

    Returns
    -------
    Cell
        Three nodes; node ``j`` (DARTS index ``j``, input 0) lists its non-``none`` edges.

    Raises
    ------
    GenotypeError
        Naming the problem: not a string, wrong node count, a node part not in ``|..|``, wrong
        edge count of a node, an edge not written ``op~input`` with the right input, an unknown
        op.
    """
    if not isinstance(arch, str):
        raise GenotypeError(f"NB201 string must be a str, got {type(arch).__name__}")
    node_strs = arch.strip().split("+")
    if len(node_strs) != 3:
        raise GenotypeError(
            f"NB201 string {arch!r}: expected 3 '+'-separated nodes, got {len(node_strs)}"
        )
    nodes = []
    for j, node_str in enumerate(node_strs):
        me = 1 + j
        if not (node_str.startswith("|") and node_str.endswith("|")):
            raise GenotypeError(f"NB201 string {arch!r}: node {me} part {node_str!r} not in |..|")
        tokens = node_str[1:-1].split("|")
        if len(tokens) != me:
            raise GenotypeError(
                f"NB201 string {arch!r}: node {me} needs {me} edges, got {len(tokens)}"
            )
        pairs = []
        for src, token in enumerate(tokens):
            op, sep, idx = token.partition("~")
            if not sep or idx != str(src):
                raise GenotypeError(
                    f"NB201 string {arch!r}: node {me} edge {token!r} should read 'op~{src}'"
                )
            if op == "none":
                continue
            if op not in PRIMITIVES_NB201:
                raise GenotypeError(
                    f"NB201 string {arch!r}: unknown op {op!r}; known: none, "
                    f"{', '.join(PRIMITIVES_NB201)}"
                )
            pairs.append((op, src))
        nodes.append(tuple(pairs))
    return tuple(nodes)


def format_nb201_string(nodes: Sequence[Sequence[Pair]]) -> str:
    """Write the NAS-Bench-201 string of per-node ``(op, input)`` pairs, edges without op as
    ``none``; the inverse of :func:`parse_nb201_string`.

    Parameters
    ----------
    nodes
        Three nodes (DARTS indices 1, 2, 3); node ``j`` takes inputs ``0 .. j``. No connectivity
        rule is applied: every pair is written.

    Raises
    ------
    GenotypeError
        On a wrong node count, an input out of range, several ops on one edge or an op that is
        not an NB201 op.
    """
    if len(nodes) != 3:
        raise GenotypeError(f"an NB201 cell has 3 intermediate nodes, got {len(nodes)}")
    parts = []
    for j, pairs in enumerate(nodes):
        me = 1 + j
        for _, src in pairs:
            if not 0 <= src < me:
                raise GenotypeError(f"node {me}: input {src} out of range 0..{me - 1}")
        tokens = []
        for src in range(me):
            ops = [op for op, s in pairs if s == src]
            if len(ops) > 1:
                raise GenotypeError(
                    f"edge {src}->{me} has several ops {ops}; an NB201 string has one op per edge"
                )
            op = ops[0] if ops else "none"
            if ops and op not in PRIMITIVES_NB201:
                raise GenotypeError(
                    f"edge {src}->{me}: op {op!r} is not an NB201 op "
                    f"({', '.join(PRIMITIVES_NB201)})"
                )
            tokens.append(f"{op}~{src}")
        parts.append("|" + "|".join(tokens) + "|")
    return "+".join(parts)


def connected_nb201_nodes(nodes: Cell) -> Cell | None:
    """The cell the connectivity rule keeps of lossless NB201 nodes.

    Parameters
    ----------
    nodes
        Three nodes as :func:`parse_nb201_string` returns them (dead edges included).

    Returns
    -------
    Cell or None
        The three nodes without their dead edges (a removed node is empty); ``None`` if no path
        from the input reaches the output.
    """
    surviving = surviving_nodes(nodes, num_inputs=1, concat_all=False)
    if not surviving:
        return None
    kept, _ = keep_surviving(nodes, 1, surviving, concat_all=False)
    return kept


def check_nb201_cell(genotype: Genotype) -> None:
    """Raise :class:`GenotypeError` unless the genotype has the NB201 cell layout.

    The layout: one input, 3 intermediate nodes, output node 3, no reduction cell.
    """
    if genotype.num_inputs != 1 or len(genotype.normal) != 3 or genotype.reduce is not None:
        raise GenotypeError(
            "not an NB201 cell: need num_inputs=1, 3 intermediate nodes and no reduce cell, got "
            f"num_inputs={genotype.num_inputs}, {len(genotype.normal)} nodes, "
            f"reduce={'yes' if genotype.reduce is not None else 'no'}"
        )
    if genotype.normal_concat != (3,):
        raise GenotypeError(
            f"not an NB201 cell: output must be node 3, got concat {list(genotype.normal_concat)}"
        )


def check_nb201_string(genotype: Genotype) -> None:
    """Raise :class:`GenotypeError` unless ``genotype.nb201_string`` describes the cell.

    The string must be written as the benchmark writes it and, after the connectivity rule, hold
    exactly the edges of the cell (it may hold dead edges the cell does not). Called by
    :class:`~pyronas.genotype.Genotype` on construction.
    """
    arch = genotype.nb201_string
    if not isinstance(arch, str):
        raise GenotypeError(f"nb201_string must be a str or None, got {type(arch).__name__}")
    if genotype.space != "nb201":
        raise GenotypeError(
            f"nb201_string is for cells of space 'nb201', this genotype has space "
            f"{genotype.space!r}"
        )
    check_nb201_cell(genotype)
    nodes = parse_nb201_string(arch)
    if format_nb201_string(nodes) != arch:
        raise GenotypeError(
            f"nb201_string {arch!r} is not written as the benchmark writes it: "
            f"{format_nb201_string(nodes)!r}"
        )
    kept = connected_nb201_nodes(nodes)
    mine = tuple(sort_pairs(p) for p in genotype.normal)
    if kept is None or tuple(sort_pairs(p) for p in kept) != mine:
        rule = "no path reaches the output" if kept is None else format_nb201_string(kept)
        raise GenotypeError(
            f"nb201_string {arch!r} does not describe this cell: after the connectivity rule "
            f"it reads {rule!r}, the cell has other edges"
        )
