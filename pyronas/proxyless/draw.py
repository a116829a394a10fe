"""Drawings of tree genotypes: text for the terminal, a picture per distinct tree.

``pyronas genotype show`` calls :func:`show_tree_genotype` for tree genotypes (TreeCell-A or a
``pyronas-tree/1`` file). Blocks with the same tree are listed together, so a searched genotype
with 54 trees prints each distinct tree once.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyronas.proxyless.tree import (
    TreeGenotype,
    TreeNode,
    draw_tree,
    is_tree_json,
    load_tree_genotype,
    tree_to_dict,
)

__all__ = ["is_tree_genotype", "plot_tree", "show_tree_genotype"]


def is_tree_genotype(name_or_path: str | Path) -> bool:
    """Whether the argument names TreeCell-A or a file holding a tree genotype."""
    if str(name_or_path).lower() in ("treecell-a", "treecell_a"):
        return True
    path = Path(name_or_path)
    if not path.is_file() or path.suffix.lower() != ".json":
        return False
    try:
        return is_tree_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _distinct(genotype: TreeGenotype) -> list[tuple[list[int], TreeNode]]:
    """``(blocks, tree)`` for every distinct tree, in order of first use."""
    groups: dict[str, tuple[list[int], TreeNode]] = {}
    for b, cell in enumerate(genotype.cells):
        key = json.dumps(tree_to_dict(cell), sort_keys=True)
        groups.setdefault(key, ([], cell))[0].append(b)
    return list(groups.values())


def _blocks_text(blocks: list[int], total: int) -> str:
    if total == 1:
        return "every block"
    return "block " + ", ".join(str(b) for b in blocks) if len(blocks) < 8 else (
        f"{len(blocks)} blocks: " + ", ".join(str(b) for b in blocks[:6]) + ", ...")


def plot_tree(node: TreeNode, path: str | Path, title: str | None = None) -> Path:
    """Draw one tree to an image file: nodes as boxes (merge/split), branches labelled by op.

    The root is at the top; a branch goes down from its node to its child node, or to a leaf
    dot when it has no child.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions: list[tuple[float, float, str]] = []  # (x, y, label) of tree nodes
    lines: list[tuple[float, float, float, float, str, float]] = []  # (x0, y0, x1, y1, op, t)
    leaves: list[tuple[float, float]] = []
    next_x = [0.0]

    def place(n: TreeNode, depth: int) -> float:
        xs = []
        for b in n.branches:
            if b.child is None:
                x = next_x[0]
                next_x[0] += 1.6
                leaves.append((x, -(depth + 1)))
            else:
                x = place(b.child, depth + 1)
            xs.append((x, b))
        x_node = sum(x for x, _ in xs) / len(xs)
        for x, b in xs:
            op = b.op if b.expand == 1 else f"{b.op} x{b.expand}"
            # leaf labels sit low on their line, where the lines have spread apart
            lines.append((x_node, -depth, x, -(depth + 1), op, 0.5 if b.child else 0.68))
        label = f"{n.merge}/{n.split}" + ("\n+bn" if n.branch_bn else "")
        positions.append((x_node, -depth, label))
        return x_node

    place(node, 0)
    depth = 1 + max(-y for _, y, _ in positions + [(0, y, "") for _, y in leaves])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * next_x[0]), 1.6 * depth + 0.8))
    for x0, y0, x1, y1, op, t in lines:
        ax.plot([x0, x1], [y0, y1], color="0.4", lw=1.2, zorder=1)
        ax.text(x0 + t * (x1 - x0), y0 + t * (y1 - y0), op, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.2", "fc": "lightyellow", "ec": "0.6"}, zorder=3)
    for x, y, label in positions:
        ax.text(x, y, label, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.3", "fc": "lightblue", "ec": "0.3"}, zorder=4)
    for x, y in leaves:
        ax.plot([x], [y], "o", color="0.3", ms=4, zorder=2)
    ax.set_xlim(-1.0, max(next_x[0] - 0.6, 1.0))
    ax.set_ylim(-depth + 0.5, 0.6)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def show_tree_genotype(name_or_path: str | Path, out: str | Path | None = None,
                       block: int | None = None, fmt: str = "png") -> tuple[str, list[Path]]:
    """Text drawing of a tree genotype and one picture per distinct tree (or of ``block``).

    Pictures go to ``out``, by default next to the genotype file; a bundled name without
    ``out`` gets the text only (nothing is written into the current folder).

    Returns
    -------
    tuple
        The text and the paths of the pictures written.
    """
    genotype = load_tree_genotype(name_or_path)
    name = genotype.name or Path(str(name_or_path)).stem
    total = len(genotype.cells)
    if block is not None:
        if not 0 <= block < total:
            raise ValueError(f"block {block} is out of range: the genotype has {total} "
                             f"cell(s) (0 .. {total - 1})")
        groups = [([block], genotype.cells[block])]
    else:
        groups = _distinct(genotype)
    path = Path(str(name_or_path))
    folder = Path(out) if out is not None else (path.parent if path.is_file() else None)
    stem = path.stem if path.is_file() else name
    texts, pictures = [f"tree genotype {name}: {total} cell(s), {len(_distinct(genotype))} "
                       "distinct"], []
    for blocks, tree in groups:
        title = f"{name}, {_blocks_text(blocks, total)}"
        texts.append(draw_tree(tree, title))
        if folder is not None:
            pictures.append(plot_tree(tree, folder / f"{stem}_block{blocks[0]}.{fmt}", title))
    return "\n\n".join(texts), pictures
