"""A readable text summary of a genotype."""

from __future__ import annotations

from pyronas.genotype.cell import Genotype
from pyronas.genotype.convert import nb201_dead_edges
from pyronas.space import node_name


def describe(genotype: Genotype) -> str:
    """A readable summary, one ``node <- input: ops; input: ops`` line per node.

    ``c_{k-2}``/``c_{k-1}`` are DARTS inputs 0/1 (the outputs of cells k-2 and k-1), ``n0``..
    the intermediate nodes. A cell read from a NAS-Bench-201 string with dead edges
    (:func:`~pyronas.genotype.nb201_dead_edges`) gets a last line with that string and those edges.
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
