"""Search spaces as data.

A search space names the candidate operations, the cell types and, per cell type, the edges of
the cell DAG. Nodes are numbered the DARTS way: ``0 .. num_inputs - 1`` are the cell inputs and
``num_inputs .. num_inputs + num_nodes - 1`` the intermediate nodes. For the two-input spaces,
input 0 is the output of the cell before the previous one (DARTS ``s0``) and input 1 the output
of the previous cell (DARTS ``s1``).

The switches of a space are two tensors:

* ``edge_switch`` with shape ``(cell_type, edge)`` (tied) or ``(cell, edge)`` (untied), and
* ``op_switch`` with shape ``(cell_type, edge, op)`` or ``(cell, edge, op)``,

where ``op`` runs over the space's non-zero operations. Driving an edge switch to zero selects
the zero operation for that edge.
"""

from __future__ import annotations

from dataclasses import dataclass

EDGE_SITE = "edge_switch"
"""Name of the edge ("zero-op") switch site, shape ``(cell_type | cell, edge)``."""

OP_SITE = "op_switch"
"""Name of the op switch site, shape ``(cell_type | cell, edge, op)``."""

SITES: tuple[str, str] = (EDGE_SITE, OP_SITE)
"""The switch sites of every space, in the order ``(edge, op)``: the one definition."""

PRIMITIVES_DARTS: tuple[str, ...] = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
)
"""The seven non-zero DARTS operations (the zero op is the edge switch)."""

PRIMITIVES_NB201: tuple[str, ...] = (
    "skip_connect",
    "nor_conv_1x1",
    "nor_conv_3x3",
    "avg_pool_3x3",
)
"""The NAS-Bench-201 non-zero operations (``none`` is the edge switch)."""

Edge = tuple[int, int]
"""An edge ``(src, dst)`` in DARTS node numbering."""


@dataclass(frozen=True)
class SearchSpace:
    """A cell search space.

    Attributes
    ----------
    name
        Registry name (``bayesnas8``, ``darts``, ``nb201``).
    ops
        Names of the non-zero candidate operations, in switch order.
    cell_types
        Names of the cell types, in switch order (``("normal", "reduce")``).
    edges
        Per cell type, the edges ``(src, dst)`` in switch order. Every cell type has the same
        number of edges so that switches stack into one ``(cell_type, edge, op)`` tensor.
    num_inputs
        Number of cell inputs (2 for DARTS-style cells, 1 for NAS-Bench-201).
    num_nodes
        Number of intermediate nodes.
    concat
        Whether the cell output concatenates all intermediate nodes (DARTS) or is the last
        node (NAS-Bench-201).
    """

    name: str
    ops: tuple[str, ...]
    cell_types: tuple[str, ...]
    edges: dict[str, tuple[Edge, ...]]
    num_inputs: int
    num_nodes: int
    concat: bool = True

    def __post_init__(self) -> None:
        counts = {len(self.edges[t]) for t in self.cell_types}
        if len(counts) != 1:
            raise ValueError(f"space {self.name!r}: cell types have different edge counts {counts}")
        for cell_type in self.cell_types:
            for src, dst in self.edges[cell_type]:
                if not (0 <= src < dst and self.num_inputs <= dst < self.num_total_nodes):
                    raise ValueError(f"space {self.name!r}: bad edge {(src, dst)} in {cell_type}")

    @property
    def num_edges(self) -> int:
        """Edges per cell."""
        return len(self.edges[self.cell_types[0]])

    @property
    def num_ops(self) -> int:
        """Non-zero operations per edge."""
        return len(self.ops)

    @property
    def num_total_nodes(self) -> int:
        """Inputs plus intermediate nodes."""
        return self.num_inputs + self.num_nodes

    def node_name(self, node: int) -> str:
        """Readable node name.

        Two-input cells name their inputs after the cells they come from, ``c_{k-2}`` (DARTS
        input 0) and ``c_{k-1}`` (DARTS input 1, the previous cell); a one-input cell calls its
        input ``in``. Intermediate nodes are ``n0``, ``n1``, ...
        """
        return node_name(node, self.num_inputs)

    def edge_names(self, cell_type: str) -> list[str]:
        """Names ``"c_{k-1}->n0"`` of the edges of one cell type, in switch order."""
        return [f"{self.node_name(s)}->{self.node_name(d)}" for s, d in self.edges[cell_type]]

    def switch_shapes(
        self, num_groups: int | None = None
    ) -> tuple[tuple[int, int], tuple[int, int, int]]:
        """Shapes of ``(edge_switch, op_switch)``.

        Parameters
        ----------
        num_groups
            Leading size: ``None`` (tied) uses the number of cell types; pass the number of
            cells for untied switches.
        """
        lead = len(self.cell_types) if num_groups is None else num_groups
        return (lead, self.num_edges), (lead, self.num_edges, self.num_ops)

    def coords(self) -> dict[str, list[str]]:
        """ArviZ coords for the dims ``cell_type``, ``edge`` and ``op``.

        The edges are named ``"c_{k-1}->n0"`` when every cell type has the same edges, else by
        index (``"e0"``, ...; each cell type's names are then in the export's ``edge_name``).
        """
        names = [self.edge_names(t) for t in self.cell_types]
        shared = all(n == names[0] for n in names) and len(set(names[0])) == len(names[0])
        return {
            "cell_type": list(self.cell_types),
            "edge": names[0] if shared else [f"e{i}" for i in range(self.num_edges)],
            "op": list(self.ops),
        }


def node_name(node: int, num_inputs: int) -> str:
    """``c_{k-2}``/``c_{k-1}`` for the two cell inputs (``in`` for one), ``n0``.. for nodes."""
    if node < num_inputs:
        return "in" if num_inputs == 1 else f"c_{{k-{num_inputs - node}}}"
    return f"n{node - num_inputs}"


def _full_dag(num_inputs: int, num_nodes: int) -> tuple[Edge, ...]:
    return tuple((src, num_inputs + j) for j in range(num_nodes) for src in range(num_inputs + j))


# The authors' reduced 8-edge cells. Their names in0 (previous cell) and in1 (the cell before)
# are DARTS inputs 1 and 0; n_k is DARTS node k + 2.
_BAYESNAS8_NORMAL: tuple[Edge, ...] = (
    (1, 2),
    (0, 2),
    (1, 3),
    (0, 3),
    (1, 4),
    (0, 4),
    (1, 5),
    (2, 5),
)
_BAYESNAS8_REDUCE: tuple[Edge, ...] = (
    (1, 2),
    (0, 2),
    (0, 3),
    (2, 3),
    (0, 4),
    (2, 4),
    (0, 5),
    (2, 5),
)

SPACES: dict[str, SearchSpace] = {
    "bayesnas8": SearchSpace(
        name="bayesnas8",
        ops=PRIMITIVES_DARTS,
        cell_types=("normal", "reduce"),
        edges={"normal": _BAYESNAS8_NORMAL, "reduce": _BAYESNAS8_REDUCE},
        num_inputs=2,
        num_nodes=4,
    ),
    "darts": SearchSpace(
        name="darts",
        ops=PRIMITIVES_DARTS,
        cell_types=("normal", "reduce"),
        edges={"normal": _full_dag(2, 4), "reduce": _full_dag(2, 4)},
        num_inputs=2,
        num_nodes=4,
    ),
    "nb201": SearchSpace(
        name="nb201",
        ops=PRIMITIVES_NB201,
        cell_types=("normal",),
        edges={"normal": _full_dag(1, 3)},
        num_inputs=1,
        num_nodes=3,
        concat=False,
    ),
}


def get_space(name: str) -> SearchSpace:
    """Look up a search space by name, with an error that lists the known ones."""
    try:
        return SPACES[name]
    except KeyError:
        raise ValueError(f"unknown search space {name!r}; known: {sorted(SPACES)}") from None
