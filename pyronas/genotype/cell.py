"""Genotypes: the discrete cells a search produces, as plain data.

A genotype lists, for every intermediate node of a cell, the ``(op, input)`` pairs that feed it.
Inputs use DARTS numbering: ``0 .. num_inputs - 1`` are the cell inputs (for two-input cells,
input 0 is the output of cell ``k - 2`` and input 1 that of cell ``k - 1``) and
``num_inputs + j`` is intermediate node ``j``. Several ops may come from one input (a multi-op
edge, summed in the evaluation network). A node may have no pairs at all if nothing uses it (a
node removed by the connectivity rule keeps its slot, so the numbering of later nodes holds).

Genotypes are stored as JSON (``pyronas-genotype/1``), never as Python source::

    {"format": "pyronas-genotype/1", "space": "darts", "num_inputs": 2,
     "normal": [[["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [2, 3, 4, 5]}

``reduce`` and ``reduce_concat`` are ``null`` (or absent) for single-cell-type spaces (nb201).
The cell output is the channel concat of the ``*_concat`` nodes; a one-element concat (nb201:
the last node) is that node itself.

NAS-Bench-201 strings are kept losslessly: a cell read from a benchmark string
(:func:`from_nb201_string`) keeps that string in ``nb201_string`` (JSON field of the same name,
written only when set), and :func:`to_nb201_string` gives it back unchanged. The cell itself
follows the connectivity rule (edges out of nodes without input and nodes that do not reach the
output are dropped: pyronas's evaluation network does not compute them), while the benchmark
trained such *dead edges* (their batch norms still add a bias), so two strings that differ only
in dead edges are different benchmark entries; :func:`nb201_dead_edges` lists them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyronas.space import PRIMITIVES_DARTS, PRIMITIVES_NB201, SPACES, SearchSpace, node_name

log = logging.getLogger(__name__)

FORMAT = "pyronas-genotype/1"
"""Value of the ``format`` field of genotype JSON files."""

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


# --------------------------------------------------------------------------------------------
# The dataclass and its validation
# --------------------------------------------------------------------------------------------


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
            _check_nb201_string(self)

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
    cells = {t: tuple(_sorted_pairs(n) for n in genotype.cell(t)) for t in genotype.cell_types}
    return _replace_cells(genotype, cells, nb201_string=genotype.nb201_string)


def _sorted_pairs(pairs: Iterable[Pair]) -> tuple[Pair, ...]:
    return tuple(sorted(pairs, key=lambda p: (p[1], _OP_RANK.get(p[0], len(_OP_RANK)), p[0])))


def _replace_cells(
    g: Genotype,
    cells: Mapping[str, Cell],
    concats: Mapping[str, Sequence[int]] | None = None,
    nb201_string: str | None = None,
) -> Genotype:
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


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------

_FIELDS = {
    "format",
    "space",
    "num_inputs",
    "normal",
    "normal_concat",
    "reduce",
    "reduce_concat",
    "nb201_string",
}


def genotype_to_dict(genotype: Genotype) -> dict[str, Any]:
    """The JSON-ready dict of a genotype (format ``pyronas-genotype/1``).

    ``nb201_string`` is included only when the genotype has one.
    """

    def cell(nodes: Cell | None) -> list | None:
        return None if nodes is None else [[[op, src] for op, src in n] for n in nodes]

    data: dict[str, Any] = {
        "format": FORMAT,
        "space": genotype.space,
        "num_inputs": genotype.num_inputs,
        "normal": cell(genotype.normal),
        "normal_concat": list(genotype.normal_concat),
        "reduce": cell(genotype.reduce),
        "reduce_concat": None if genotype.reduce_concat is None else list(genotype.reduce_concat),
    }
    if genotype.nb201_string is not None:
        data["nb201_string"] = genotype.nb201_string
    return data


def genotype_from_dict(data: Any, source: str = "genotype") -> Genotype:
    """Build and validate a genotype from its JSON dict.

    Parameters
    ----------
    data
        The decoded JSON object.
    source
        Where it came from (a file name), used in error messages.
    """
    if not isinstance(data, dict):
        raise GenotypeError(f"{source}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise GenotypeError(f"{source}: unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}")
    for key in ("format", "normal", "normal_concat"):
        if key not in data:
            raise GenotypeError(f"{source}: missing field {key!r}")
    if data["format"] != FORMAT:
        raise GenotypeError(f"{source}: format {data['format']!r} is not {FORMAT!r}")
    try:
        return Genotype(
            normal=data["normal"],
            normal_concat=data["normal_concat"],
            reduce=data.get("reduce"),
            reduce_concat=data.get("reduce_concat"),
            num_inputs=data.get("num_inputs", 2),
            space=data.get("space"),
            nb201_string=data.get("nb201_string"),
        )
    except GenotypeError as err:
        raise GenotypeError(f"{source}: {err}") from None


def genotype_to_json(genotype: Genotype) -> str:
    """JSON text of a genotype, one node per line."""
    d = genotype_to_dict(genotype)
    lines = ["{"]
    items = list(d.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if key in ("normal", "reduce") and value is not None:
            nodes = ",\n    ".join(json.dumps(n) for n in value)
            lines.append(f'  "{key}": [\n    {nodes}\n  ]{comma}')
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_genotype(genotype: Genotype, path: str | Path) -> Path:
    """Write a genotype as JSON to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(genotype_to_json(genotype), encoding="utf-8")
    return path


def _bundled_dir():
    return resources.files("pyronas.genotype.bundled")


def list_bundled() -> list[str]:
    """Names of the bundled genotypes (``DARTS_V1``, ``DARTS_V2``, ``BAYESNAS_0.01``, ...)."""
    return sorted(
        p.name[: -len(".json")] for p in _bundled_dir().iterdir() if p.name.endswith(".json")
    )


def _parse_json_text(text: str, source: str) -> Genotype:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise GenotypeError(f"{source}: malformed JSON: {err}") from None
    return genotype_from_dict(data, source)


def load_genotype(name_or_path: str | Path) -> Genotype:
    """Load a genotype from a JSON file, or a bundled one by name (case-insensitive).

    An existing file wins over a bundled name. The JSON is parsed, never executed.
    """
    path = Path(name_or_path)
    if path.is_file():
        return _parse_json_text(path.read_text(encoding="utf-8"), str(path))
    by_upper = {name.upper(): name for name in list_bundled()}
    name = by_upper.get(str(name_or_path).upper())
    if name is None:
        raise GenotypeError(
            f"no genotype file {str(name_or_path)!r} and no bundled genotype of that name; "
            f"bundled: {', '.join(by_upper.values())}"
        )
    text = (_bundled_dir() / f"{name}.json").read_text(encoding="utf-8")
    return _parse_json_text(text, f"bundled genotype {name}")


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


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
    return _replace_cells(genotype, cells)


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


def to_nb201_string(genotype: Genotype) -> str:
    """The NAS-Bench-201 architecture string, e.g. ``|nor_conv_3x3~0|+|...~0|...~1|+|...|``.

    A genotype read from a benchmark string (``nb201_string`` set, see
    :func:`from_nb201_string`) gives that string back verbatim, dead edges included: it is the
    benchmark's key of the cell. Otherwise the string is written from the cell, edges with no op
    as ``none``. Raises :class:`GenotypeError` for a genotype that is not an NB201 cell (one
    input, 3 nodes, output node 3, no reduction cell, NB201 ops) or has an edge with several
    ops.
    """
    _check_nb201_cell(genotype)
    if genotype.nb201_string is not None:
        return genotype.nb201_string
    return format_nb201_string(genotype.normal)


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


def _check_nb201_cell(genotype: Genotype) -> None:
    """Raise :class:`GenotypeError` unless the genotype has the NB201 cell layout."""
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
        :func:`canonical`; equal to ``canonical(genotype)`` when the cell already has one op
        per edge.

    Raises
    ------
    GenotypeError
        If ``genotype`` is not an NB201 cell or ``scores`` has the wrong shape or is not finite.
    """
    space = SPACES["nb201"]
    _check_nb201_cell(genotype)
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
        normal=tuple(_sorted_pairs(pairs) for pairs in nodes),
        normal_concat=(space.num_total_nodes - 1,),
        num_inputs=space.num_inputs,
        space=space.name,
        nb201_string=genotype.nb201_string if same else None,
    )


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


def _nb201_connected(nodes: Cell) -> Cell | None:
    """The cell the connectivity rule keeps of lossless NB201 nodes; ``None`` if no path from
    the input reaches the output."""
    alive = _live_nodes(nodes, num_inputs=1, concat_all=False)
    if not alive:
        return None
    kept, _ = _keep_alive(nodes, 1, alive, concat_all=False)
    return kept


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
    kept = _nb201_connected(nodes) or ((), (), ())
    return tuple(
        (src, 1 + j, op) for j, pairs in enumerate(nodes) for op, src in pairs
        if (op, src) not in kept[j]
    )


def _check_nb201_string(genotype: Genotype) -> None:
    """Raise :class:`GenotypeError` unless ``genotype.nb201_string`` describes the cell."""
    arch = genotype.nb201_string
    if not isinstance(arch, str):
        raise GenotypeError(f"nb201_string must be a str or None, got {type(arch).__name__}")
    if genotype.space != "nb201":
        raise GenotypeError(
            f"nb201_string is for cells of space 'nb201', this genotype has space "
            f"{genotype.space!r}"
        )
    _check_nb201_cell(genotype)
    nodes = parse_nb201_string(arch)
    if format_nb201_string(nodes) != arch:
        raise GenotypeError(
            f"nb201_string {arch!r} is not written as the benchmark writes it: "
            f"{format_nb201_string(nodes)!r}"
        )
    kept = _nb201_connected(nodes)
    mine = tuple(_sorted_pairs(p) for p in genotype.normal)
    if kept is None or tuple(_sorted_pairs(p) for p in kept) != mine:
        rule = "no path reaches the output" if kept is None else format_nb201_string(kept)
        raise GenotypeError(
            f"nb201_string {arch!r} does not describe this cell: after the connectivity rule "
            f"it reads {rule!r}, the cell has other edges"
        )


def from_nb201_string(arch: str) -> Genotype:
    """Parse a NAS-Bench-201 string into a genotype (space ``nb201``, output node 3).

    The cell follows the connectivity rule (:func:`prune`: edges out of nodes without input and
    nodes that do not reach the output are dropped, ``none`` edges are absent), and the string
    itself is kept verbatim in ``nb201_string``, so ``to_nb201_string(from_nb201_string(s)) ==
    s`` for every benchmark string that has a path from the input to the output; the dropped
    edges are :func:`nb201_dead_edges`. Surrounding whitespace is stripped.

    Raises
    ------
    GenotypeError
        On a malformed string (see :func:`parse_nb201_string`) or if no path reaches the output
        (341 benchmark strings: the benchmark's library marks them invalid too).
    """
    nodes = parse_nb201_string(arch)
    arch = arch.strip()
    kept = _nb201_connected(nodes)
    if kept is None:
        raise GenotypeError(f"NB201 string {arch!r}: no path from the input reaches the output")
    return Genotype(normal=kept, normal_concat=(3,), num_inputs=1, space="nb201",
                    nb201_string=arch)


# --------------------------------------------------------------------------------------------
# Derivation with the connectivity rule
# --------------------------------------------------------------------------------------------


def _live_nodes(nodes: Sequence[Sequence[Pair]], num_inputs: int, concat_all: bool) -> set[int]:
    """DARTS indices of the intermediate nodes that survive the connectivity rule.

    Forward pass: a node is live if some pair comes from a cell input or a live earlier node
    (nodes are in topological order, so one pass reaches the fixed point of the iterative rule).
    Backward pass (``concat_all=False``): keep only live nodes from which a live path reaches
    the last node, the cell output. With ``concat_all`` every live node is concatenated into the
    output, so it reaches it.
    """
    live: set[int] = set()
    for j, pairs in enumerate(nodes):
        if any(src < num_inputs or src in live for _, src in pairs):
            live.add(num_inputs + j)
    if concat_all:
        return live
    last = num_inputs + len(nodes) - 1
    if last not in live:
        return set()
    reach = {last}
    for j in range(len(nodes) - 1, -1, -1):
        me = num_inputs + j
        if me in reach:
            reach.update(src for _, src in nodes[j] if src >= num_inputs and src in live)
    return live & reach


def prune(genotype: Genotype, concat_all: bool = True) -> Genotype:
    """Apply the connectivity rule to a genotype (see :func:`derive`).

    Parameters
    ----------
    concat_all
        ``True`` for DARTS-style cells (output = concat of every surviving node; the concat
        lists are recomputed), ``False`` for cells whose output is the last node (nb201).
    """
    cells, concats = {}, {}
    for cell_type in genotype.cell_types:
        nodes = genotype.cell(cell_type)
        alive = _live_nodes(nodes, genotype.num_inputs, concat_all)
        if not alive:
            raise GenotypeError(f"{cell_type}: no node survives the connectivity rule")
        cells[cell_type], concats[cell_type] = _keep_alive(
            nodes, genotype.num_inputs, alive, concat_all
        )
    return _replace_cells(genotype, cells, concats)


def _keep_alive(
    nodes: Sequence[Sequence[Pair]], num_inputs: int, alive: set[int], concat_all: bool
) -> tuple[Cell, list[int]]:
    kept = tuple(
        tuple(p for p in pairs if p[1] < num_inputs or p[1] in alive)
        if num_inputs + j in alive
        else ()
        for j, pairs in enumerate(nodes)
    )
    concat = sorted(alive) if concat_all else [num_inputs + len(nodes) - 1]
    return kept, concat


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


def derive(
    space: SearchSpace,
    keep_edge: Any,
    keep_op: Any,
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
    keep_edge
        Bool mask ``(cell_type, edge)`` (tensor, array or nested lists).
    keep_op
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
        Pairs of each node sorted by (input, op) as in :func:`canonical`; ``space`` set to
        ``space.name``; ``reduce`` is ``None`` for single-cell-type spaces.
    """
    n_types = len(space.cell_types)
    edge_mask = _as_bool_array(keep_edge, (n_types, space.num_edges), "keep_edge")
    op_mask = _as_bool_array(keep_op, (n_types, space.num_edges, space.num_ops), "keep_op")
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
        alive = _live_nodes(nodes, space.num_inputs, space.concat)
        if not alive:
            nodes, alive = _fallback(space, cell_type, None if scores is None else scores[t])
        kept, concat = _keep_alive(nodes, space.num_inputs, alive, space.concat)
        cells[cell_type] = tuple(_sorted_pairs(p) for p in kept)
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


def live_mask(space: SearchSpace, genotype: Genotype) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks ``(keep_edge (cell_type, edge), keep_op (cell_type, edge, op))`` of a genotype.

    The inverse of :func:`derive`: ``derive(space, *live_mask(space, g)) == g`` for a derived
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
    keep_edge = torch.zeros(edge_shape, dtype=torch.bool)
    keep_op = torch.zeros(op_shape, dtype=torch.bool)
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
                keep_edge[t, e] = True
                keep_op[t, e, space.ops.index(op)] = True
    return keep_edge, keep_op


# --------------------------------------------------------------------------------------------
# Text summary
# --------------------------------------------------------------------------------------------


def describe(genotype: Genotype) -> str:
    """A readable summary, one ``node <- input: ops; input: ops`` line per node.

    ``c_{k-2}``/``c_{k-1}`` are DARTS inputs 0/1 (the outputs of cells k-2 and k-1), ``n0``..
    the intermediate nodes. A cell read from a NAS-Bench-201 string with dead edges
    (:func:`nb201_dead_edges`) gets a last line with that string and those edges.
    """
    n_in = genotype.num_inputs
    head = f"space: {genotype.space}" if genotype.space else "space: (unspecified)"
    lines = [head]
    for cell_type in genotype.cell_types:
        names = [node_name(c, n_in) for c in genotype.concat(cell_type)]
        output = names[0] if len(names) == 1 else "concat of " + ", ".join(names)
        lines.append(f"{cell_type} cell (output: {output}):")
        for j, pairs in enumerate(genotype.cell(cell_type)):
            by_src: dict[int, list[str]] = {}
            for op, src in pairs:
                by_src.setdefault(src, []).append(op)
            body = "; ".join(
                f"{node_name(s, n_in)}: {', '.join(ops)}" for s, ops in sorted(by_src.items())
            )
            lines.append(f"  {node_name(n_in + j, n_in)} <- {body or '(removed)'}")
    if genotype.nb201_string is not None:
        dead = nb201_dead_edges(genotype)
        if dead:
            edges = ", ".join(
                f"{node_name(src, n_in)}->{node_name(dst, n_in)}: {op}" for src, dst, op in dead
            )
            lines.append(
                f"benchmark string {genotype.nb201_string} (its dead edges {edges} are dropped "
                "here; NAS-Bench-201 trained them)"
            )
    return "\n".join(lines)
