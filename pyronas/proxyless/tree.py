"""Tree-structured cells as data: nodes, branches, the JSON format, the bundled trees.

A tree node takes a tensor of ``C_in`` channels and returns one of ``C_out`` channels. It has
one or more *branches*; branch ``i`` owns an *edge* (an operation, :mod:`.tree_ops`) and
optionally a *child* node behind it:

* allocation ``split = "copy"`` gives every branch the whole input; ``"split"`` gives branch
  ``i`` the ``i``-th contiguous channel slice (sizes as even as possible, first ones larger);
* merge ``merge = "add"`` sums the branch outputs (each ``C_out`` channels); ``"concat"``
  concatenates them (branch ``i`` makes the ``i``-th slice of ``C_out``);
* branch ``i`` computes ``e = edge(x_i)`` with ``expand * out_i`` channels, then
  ``y = child(e)`` (``out_i`` channels) or ``y = e`` without a child;
* with ``branch_bn`` a branch that has a child computes ``y = BN(child(e)) + e`` (a residual
  around the child; it needs ``expand == 1``).

The stride of a downsampling block sits on the edges of the root node.

A *tree genotype* (:class:`TreeGenotype`) holds one tree (shared by every block of the backbone)
or one per block. The JSON format ``pyronas-tree/1``::

    {"format": "pyronas-tree/1", "name": "TreeCell-A", "cells": [<node>, ...]}
    <node> = {"split": "copy", "merge": "add", "branch_bn": false,
              "branches": [{"op": "sep_3x3", "expand": 1, "child": <node> | null}, ...]}

A *template* is a tree whose searchable edges carry the op :data:`SEARCH_OP`; the supernet puts
all candidate ops there, the derivation puts the chosen op (or removes the branch).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyronas.genotype.nodes import GenotypeError
from pyronas.proxyless.tree_ops import TREE_OPS

__all__ = [
    "FORMAT",
    "SEARCH_OP",
    "TREECELL_A",
    "TreeBranch",
    "TreeGenotype",
    "TreeNode",
    "branch_widths",
    "draw_tree",
    "is_tree_json",
    "load_tree_genotype",
    "proxyless_template",
    "save_tree_genotype",
    "searchable_paths",
    "split_sizes",
    "tree_from_dict",
    "tree_genotype_from_dict",
    "tree_genotype_to_dict",
    "tree_to_dict",
]

FORMAT = "pyronas-tree/1"
"""Value of the ``format`` field of tree-genotype JSON files."""

SEARCH_OP = "mixed"
"""Op name of a searchable edge in a template (all candidates, mixed by switches)."""

SPLITS = ("copy", "split")
MERGES = ("add", "concat")


@dataclass(frozen=True)
class TreeBranch:
    """One branch of a tree node: an edge op, an optional child node, the edge's expansion."""

    op: str
    child: TreeNode | None = None
    expand: int = 1


@dataclass(frozen=True)
class TreeNode:
    """A tree node: allocation, merge, residual batch norms and its branches (see the module
    docstring for the semantics)."""

    branches: tuple[TreeBranch, ...]
    split: str = "copy"
    merge: str = "add"
    branch_bn: bool = False

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise GenotypeError(f"tree node split must be one of {SPLITS}, got {self.split!r}")
        if self.merge not in MERGES:
            raise GenotypeError(f"tree node merge must be one of {MERGES}, got {self.merge!r}")
        if not self.branches:
            raise GenotypeError("a tree node needs at least one branch")
        for b in self.branches:
            if b.op != SEARCH_OP and b.op not in TREE_OPS:
                raise GenotypeError(f"unknown tree op {b.op!r}; known: {sorted(TREE_OPS)}")
            if int(b.expand) != b.expand or b.expand < 1:
                raise GenotypeError(f"branch expand must be a positive integer, got {b.expand!r}")
            if b.expand != 1 and b.child is None:
                raise GenotypeError(f"branch {b.op!r} expands by {b.expand} but has no child to "
                                    "bring the width back")
            if b.expand != 1 and self.branch_bn:
                raise GenotypeError("a node with branch_bn needs expand 1 on every branch (the "
                                    "residual adds the edge output to the child's)")


@dataclass(frozen=True)
class TreeGenotype:
    """The cells of a PyramidNet-tree network.

    Attributes
    ----------
    cells
        One tree for every block, or a single tree shared by all blocks.
    name
        A label (``TreeCell-A``, a run folder's name), or ``None``.
    """

    cells: tuple[TreeNode, ...]
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.cells:
            raise GenotypeError("a tree genotype needs at least one cell")

    def cell_for(self, block: int, num_blocks: int) -> TreeNode:
        """The tree of block ``block`` of ``num_blocks``."""
        if len(self.cells) == 1:
            return self.cells[0]
        if len(self.cells) != num_blocks:
            raise GenotypeError(f"the tree genotype has {len(self.cells)} cells but the "
                                f"network has {num_blocks} blocks (give 1 or {num_blocks})")
        return self.cells[block]


def split_sizes(total: int, parts: int) -> list[int]:
    """Contiguous slice sizes of ``total`` channels into ``parts`` (first ones larger)."""
    if parts > total:
        raise GenotypeError(f"cannot split {total} channels into {parts} branches")
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def branch_widths(node: TreeNode, C_in: int, C_out: int) -> list[tuple[int, int]]:
    """``(in_i, out_i)`` channels of every branch of ``node`` for ``C_in -> C_out``."""
    n = len(node.branches)
    ins = split_sizes(C_in, n) if node.split == "split" else [C_in] * n
    outs = split_sizes(C_out, n) if node.merge == "concat" else [C_out] * n
    return list(zip(ins, outs, strict=True))


def searchable_paths(node: TreeNode, prefix: tuple[int, ...] = ()) -> Iterator[tuple[int, ...]]:
    """Branch paths (indices from the root) of the searchable edges, depth-first pre-order."""
    for i, b in enumerate(node.branches):
        path = (*prefix, i)
        if b.op == SEARCH_OP:
            yield path
        if b.child is not None:
            yield from searchable_paths(b.child, path)


# --------------------------------------------------------------------------------- JSON


def tree_to_dict(node: TreeNode) -> dict[str, Any]:
    """The JSON-ready dict of one tree."""
    return {
        "split": node.split,
        "merge": node.merge,
        "branch_bn": node.branch_bn,
        "branches": [
            {"op": b.op, "expand": b.expand,
             "child": None if b.child is None else tree_to_dict(b.child)}
            for b in node.branches
        ],
    }


def _expect(data: Any, kind: type, where: str) -> Any:
    if not isinstance(data, kind):
        raise GenotypeError(f"{where}: expected a JSON {kind.__name__}, got "
                            f"{type(data).__name__}")
    return data


def tree_from_dict(data: Any, where: str = "tree") -> TreeNode:
    """Build and validate a tree from its dict; errors name the node's place (``where``)."""
    _expect(data, dict, where)
    unknown = sorted(set(data) - {"split", "merge", "branch_bn", "branches"})
    if unknown:
        raise GenotypeError(f"{where}: unknown field(s) {unknown}")
    branches = []
    for i, b in enumerate(_expect(data.get("branches"), list, f"{where}.branches")):
        at = f"{where}.branches[{i}]"
        _expect(b, dict, at)
        extra = sorted(set(b) - {"op", "expand", "child"})
        if extra or "op" not in b:
            raise GenotypeError(f"{at}: a branch has 'op', 'expand', 'child'; got {sorted(b)}")
        child = None if b.get("child") is None else tree_from_dict(b["child"], f"{at}.child")
        branches.append(TreeBranch(op=b["op"], child=child, expand=b.get("expand", 1)))
    try:
        return TreeNode(branches=tuple(branches), split=data.get("split", "copy"),
                        merge=data.get("merge", "add"), branch_bn=bool(data.get("branch_bn")))
    except GenotypeError as err:
        raise GenotypeError(f"{where}: {err}") from None


def tree_genotype_to_dict(genotype: TreeGenotype) -> dict[str, Any]:
    """The JSON-ready dict of a tree genotype (format ``pyronas-tree/1``)."""
    return {"format": FORMAT, "name": genotype.name,
            "cells": [tree_to_dict(c) for c in genotype.cells]}


def tree_genotype_from_dict(data: Any, source: str = "tree genotype") -> TreeGenotype:
    """Build and validate a tree genotype from its JSON dict."""
    _expect(data, dict, source)
    if data.get("format") != FORMAT:
        raise GenotypeError(f"{source}: format {data.get('format')!r} is not {FORMAT!r}")
    unknown = sorted(set(data) - {"format", "name", "cells"})
    if unknown:
        raise GenotypeError(f"{source}: unknown field(s) {unknown}")
    cells = _expect(data.get("cells"), list, f"{source}: cells")
    return TreeGenotype(
        cells=tuple(tree_from_dict(c, f"{source}: cells[{i}]") for i, c in enumerate(cells)),
        name=data.get("name"),
    )


def is_tree_json(data: Any) -> bool:
    """Whether a decoded JSON object is a tree genotype."""
    return isinstance(data, dict) and data.get("format") == FORMAT


def save_tree_genotype(genotype: TreeGenotype, path: str | Path) -> Path:
    """Write a tree genotype as JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tree_genotype_to_dict(genotype), indent=1) + "\n",
                    encoding="utf-8")
    return path


def load_tree_genotype(name_or_path: str | Path) -> TreeGenotype:
    """A tree genotype from a JSON file, or ``TreeCell-A`` by name."""
    if str(name_or_path).lower() in ("treecell-a", "treecell_a"):
        return TreeGenotype(cells=(TREECELL_A,), name="TreeCell-A")
    path = Path(name_or_path)
    if not path.is_file():
        raise GenotypeError(f"no tree genotype file {str(name_or_path)!r} (bundled: TreeCell-A; "
                            "cell genotypes such as DARTS_V2 go with network cifar / imagenet)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise GenotypeError(f"{path}: malformed JSON: {err}") from None
    return tree_genotype_from_dict(data, str(path))


# --------------------------------------------------------------------------------- trees


def _node(*branches: TreeBranch, split: str = "copy", merge: str = "add",
          branch_bn: bool = False) -> TreeNode:
    return TreeNode(branches=tuple(branches), split=split, merge=merge, branch_bn=branch_bn)


def _leaves(*ops: str, split: str = "copy", merge: str = "add") -> TreeNode:
    return _node(*(TreeBranch(op) for op in ops), split=split, merge=merge)


TREECELL_A: TreeNode = _node(
    TreeBranch("group_conv_3x3", _node(
        TreeBranch("conv_1x1", _leaves("avg_pool_3x3", "sep_7x7", split="split",
                                       merge="concat")),
        TreeBranch("max_pool_3x3", _leaves("sep_3x3", "sep_5x5")),
    )),
    TreeBranch("group_conv_3x3", _node(
        TreeBranch("sep_5x5", _leaves("sep_5x5", "avg_pool_3x3", "avg_pool_3x3")),
        TreeBranch("sep_3x3", _leaves("avg_pool_3x3", "sep_3x3")),
    )),
    branch_bn=True,
)
"""TreeCell-A of Path-Level EAS: root add/copy with residual batch norms, two 3x3 group convs
into nodes A and B (their sub-trees as in the paper's figure)."""


def proxyless_template() -> TreeNode:
    """The searchable tree of the ProxylessNAS CIFAR net.

    A fixed 3x3 group conv (groups 2) from ``C`` to ``2C`` channels, split into two halves,
    each half ``BN(subtree(half)) + half``, summed; each subtree is an add/copy node with two
    searchable edges, each feeding an add/copy node with two searchable leaf edges: 12
    searchable edges, in :func:`searchable_paths` order.
    """
    leaf = _leaves(SEARCH_OP, SEARCH_OP)
    subtree = _node(TreeBranch(SEARCH_OP, leaf), TreeBranch(SEARCH_OP, leaf))
    halves = _node(TreeBranch("identity", subtree), TreeBranch("identity", subtree),
                   split="split", merge="add", branch_bn=True)
    return _node(TreeBranch("group_conv_3x3", halves, expand=2))


# --------------------------------------------------------------------------------- drawing


def draw_tree(node: TreeNode, title: str | None = None) -> str:
    """A text drawing of a tree, one branch per line::

        node add/copy +bn
        |-- group_conv_3x3 -> node add/copy
        |   |-- conv_1x1 -> node concat/split
        ...
    """

    def label(n: TreeNode) -> str:
        return f"node {n.merge}/{n.split}" + (" +bn" if n.branch_bn else "")

    lines = [] if title is None else [title]
    lines.append(label(node))

    def walk(n: TreeNode, indent: str) -> None:
        for i, b in enumerate(n.branches):
            last = i == len(n.branches) - 1
            op = b.op if b.expand == 1 else f"{b.op} (x{b.expand})"
            head = f"{indent}{'`-- ' if last else '|-- '}{op}"
            lines.append(head if b.child is None else f"{head} -> {label(b.child)}")
            if b.child is not None:
                walk(b.child, indent + ("    " if last else "|   "))

    walk(node, "")
    return "\n".join(lines)

