"""The :class:`Genotype` type: a derived architecture, validated on construction.

A genotype lists, for every intermediate node of a cell, the ``(op, input)`` pairs that feed it
(see :mod:`pyronas.genotype` for the numbering). This module holds the type, its validation and
its canonical form; reading and writing is :mod:`pyronas.genotype.io`, conversions
:mod:`pyronas.genotype.convert`, derivation from masks :mod:`pyronas.genotype.derivation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyronas.genotype.nb201_string import check_nb201_string
from pyronas.genotype.nodes import KNOWN_OPS, Cell, GenotypeError, sort_pairs
from pyronas.space import SPACES


@dataclass(frozen=True)
class Genotype:
    """A derived architecture: one normal cell and (optionally) one reduction cell.

    Attributes
    ----------
    normal
        ``normal[j]``: the ``(op, input)`` pairs feeding intermediate node ``j`` (DARTS index
        ``num_inputs + j``). Lists are converted to tuples on construction.
    normal_concat
        DARTS indices of the nodes whose channel concat is the cell output.
    reduce, reduce_concat
        The same for the reduction cell; ``None`` for single-cell-type spaces.
    num_inputs
        Number of cell inputs (2 for DARTS-style cells, 1 for NAS-Bench-201).
    space
        Optional name of the search space the cell comes from (restricts the allowed ops when it
        names a known space).
    nb201_string
        The NAS-Bench-201 string this cell was read from (space ``nb201`` only), kept verbatim
        as the benchmark key: it may hold dead edges that the cell, after the connectivity rule,
        does not (see :func:`nb201_dead_edges`). It must describe this cell (checked), and it
        takes no part in ``==`` and ``hash``: two genotypes are equal when their cells are.

    A ``Genotype`` is validated on construction (see :func:`validate`), so an instance is always
    well formed.
    """

    normal: Cell
    normal_concat: tuple[int, ...]
    reduce: Cell | None = None
    reduce_concat: tuple[int, ...] | None = None
    num_inputs: int = 2
    space: str | None = field(default=None)
    nb201_string: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not _is_int(self.num_inputs) or self.num_inputs < 1:
            raise GenotypeError(f"num_inputs must be a positive integer, got {self.num_inputs!r}")
        if self.space is not None and not isinstance(self.space, str):
            raise GenotypeError(f"space must be a string or None, got {self.space!r}")
        set_(self, "normal", _as_cell(self.normal, "normal"))
        set_(self, "normal_concat", _as_concat(self.normal_concat, "normal_concat"))
        if (self.reduce is None) != (self.reduce_concat is None):
            raise GenotypeError("reduce and reduce_concat must be given together (or both None)")
        if self.reduce is not None:
            set_(self, "reduce", _as_cell(self.reduce, "reduce"))
            set_(self, "reduce_concat", _as_concat(self.reduce_concat, "reduce_concat"))
        validate(self)
        if self.nb201_string is not None:
            check_nb201_string(self)

    @property
    def cell_types(self) -> tuple[str, ...]:
        """``("normal", "reduce")``, or ``("normal",)`` without a reduction cell."""
        return ("normal",) if self.reduce is None else ("normal", "reduce")

    def cell(self, cell_type: str) -> Cell:
        """The node lists of ``cell_type`` (``"normal"`` or ``"reduce"``)."""
        if cell_type not in self.cell_types:
            raise GenotypeError(f"genotype has no {cell_type!r} cell; it has {self.cell_types}")
        return getattr(self, cell_type)

    def concat(self, cell_type: str) -> tuple[int, ...]:
        """The concat indices of ``cell_type``."""
        self.cell(cell_type)
        return getattr(self, f"{cell_type}_concat")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _as_cell(nodes: Any, where: str) -> Cell:
    if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence):
        raise GenotypeError(f"{where}: expected a list of nodes, got {type(nodes).__name__}")
    out = []
    for j, pairs in enumerate(nodes):
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
            raise GenotypeError(
                f"{where}[{j}]: expected a list of [op, input] pairs, got {type(pairs).__name__}"
            )
        node = []
        for p, pair in enumerate(pairs):
            if (
                isinstance(pair, (str, bytes))
                or not isinstance(pair, Sequence)
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not _is_int(pair[1])
            ):
                raise GenotypeError(
                    f"{where}[{j}][{p}]: expected an [op, input] pair with a string op and an "
                    f"integer input, got {pair!r}"
                )
            node.append((pair[0], int(pair[1])))
        out.append(tuple(node))
    return tuple(out)


def _as_concat(concat: Any, where: str) -> tuple[int, ...]:
    if isinstance(concat, (str, bytes)) or not isinstance(concat, Sequence):
        raise GenotypeError(f"{where}: expected a list of node indices, got {concat!r}")
    if not all(_is_int(c) for c in concat):
        raise GenotypeError(f"{where}: expected integer node indices, got {list(concat)!r}")
    return tuple(int(c) for c in concat)


def _allowed_ops(space: str | None) -> tuple[str, ...]:
    if space is not None and space in SPACES:
        return SPACES[space].ops
    return KNOWN_OPS


def validate(genotype: Genotype) -> None:
    """Check a genotype; raise :class:`GenotypeError` naming the first problem found.

    Checks, per cell: every op is known (for the genotype's space when it names a known one),
    every input index lies in ``0 .. num_inputs + num_nodes - 1``, no input comes from the node
    itself or a later node (a cycle), no ``(op, input)`` pair repeats within a node, the concat
    is a non-empty list of distinct intermediate nodes, and every node that is used (in the
    concat or as the input of another node) has at least one input.
    """
    ops = _allowed_ops(genotype.space)
    n_in = genotype.num_inputs
    for cell_type in genotype.cell_types:
        nodes = genotype.cell(cell_type)
        concat = genotype.concat(cell_type)
        total = n_in + len(nodes)
        if not nodes:
            raise GenotypeError(f"{cell_type}: the cell has no intermediate node")
        used: set[int] = set(concat)
        for j, pairs in enumerate(nodes):
            me = n_in + j
            seen = set()
            for op, src in pairs:
                where = f"{cell_type} node {me} (pair {(op, src)})"
                if op not in ops:
                    space = f" of space {genotype.space!r}" if genotype.space in SPACES else ""
                    raise GenotypeError(
                        f"{where}: unknown op {op!r}; known ops{space}: {', '.join(ops)} "
                        "(the zero op is written by leaving the edge out)"
                    )
                if not 0 <= src < total:
                    raise GenotypeError(
                        f"{where}: input index {src} out of range 0..{total - 1} "
                        f"({n_in} inputs + {len(nodes)} nodes)"
                    )
                if src >= me:
                    raise GenotypeError(
                        f"{where}: input {src} is not an earlier node (cycle); a node may only "
                        f"take inputs with index < {me}"
                    )
                if (op, src) in seen:
                    raise GenotypeError(f"{where}: duplicate pair")
                seen.add((op, src))
                used.add(src)
        if not concat:
            raise GenotypeError(f"{cell_type}_concat: empty; the cell would have no output")
        for c in concat:
            if not n_in <= c < total:
                raise GenotypeError(
                    f"{cell_type}_concat: index {c} out of range {n_in}..{total - 1} "
                    "(intermediate nodes only)"
                )
        if len(set(concat)) != len(concat):
            raise GenotypeError(f"{cell_type}_concat: repeated index in {list(concat)}")
        for j, pairs in enumerate(nodes):
            if not pairs and n_in + j in used:
                raise GenotypeError(
                    f"{cell_type} node {n_in + j}: node without input, but it is used (in the "
                    "concat or as an input of another node)"
                )


def canonical(genotype: Genotype) -> Genotype:
    """The same genotype with the pairs of every node sorted by (input, op in ``KNOWN_OPS``).

    Two genotypes describe the same architecture iff their canonical forms are equal.
    """
    cells = {t: tuple(sort_pairs(n) for n in genotype.cell(t)) for t in genotype.cell_types}
    return replace_cells(genotype, cells, nb201_string=genotype.nb201_string)


def replace_cells(
    g: Genotype,
    cells: Mapping[str, Cell],
    concats: Mapping[str, Sequence[int]] | None = None,
    nb201_string: str | None = None,
) -> Genotype:
    """A copy of ``g`` with some cells (and concat lists) replaced.

    Parameters
    ----------
    g
        The genotype to copy (its inputs, space and reduction cell, if any).
    cells
        ``{cell_type: nodes}`` for the cells to replace; the others are kept.
    concats
        ``{cell_type: concat}`` for the concat lists to replace; the others are kept.
    nb201_string
        The benchmark string of the copy (``None``: none; it is not carried over, since a new
        cell may not match the old string).
    """
    concats = concats or {}
    has_reduce = g.reduce is not None
    return Genotype(
        normal=cells.get("normal", g.normal),
        normal_concat=concats.get("normal", g.normal_concat),
        reduce=cells.get("reduce", g.reduce) if has_reduce else None,
        reduce_concat=concats.get("reduce", g.reduce_concat) if has_reduce else None,
        num_inputs=g.num_inputs,
        space=g.space,
        nb201_string=nb201_string,
    )
