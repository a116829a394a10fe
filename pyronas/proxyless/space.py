"""The proxyless search space (one switch group per block) and the derivation of tree cells.

The searchable edges of a template form a forest: a searchable edge whose branch lies below
another searchable edge depends on it. As a :class:`~pyronas.space.SearchSpace` (so that the
priors of ``models/`` apply unchanged) every searchable edge ``e`` ends in its own node, and it
starts at the end node of the nearest searchable edge above it, or at an input (one input per
tree node that has searchable edges but no searchable edge above it). For the ProxylessNAS
template that gives 2 inputs (the two halves) and 12 nodes; the HARD prior then gates the two
leaf edges of a node by the edge that feeds it (precisions add), the tree form of the
dependency rule.

Every block is a cell type of its own (``b0``, ``b1``, ...): switches ``(block, edge[, op])``
untied across blocks, each block its own ARD group.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pyronas.proxyless.tree import (
    SEARCH_OP,
    TreeBranch,
    TreeGenotype,
    TreeNode,
    proxyless_template,
    searchable_paths,
)
from pyronas.proxyless.tree_ops import CANDIDATE_OPS
from pyronas.space import Edge, SearchSpace

__all__ = ["derive_tree", "derive_trees", "edge_names", "proxyless_space", "template_edges"]


def template_edges(template: TreeNode) -> tuple[tuple[Edge, ...], int]:
    """``(edges, num_inputs)`` of a template's searchable edges (see the module docstring)."""
    order = {path: i for i, path in enumerate(searchable_paths(template))}
    inputs: dict[tuple[int, ...], int] = {}  # tree node (its path) -> input id
    edges: list[tuple[tuple[int, ...], int]] = []  # (path, src)

    def walk(node: TreeNode, path: tuple[int, ...], src: int | None) -> None:
        for i, branch in enumerate(node.branches):
            bpath = (*path, i)
            edge_src = src
            if branch.op == SEARCH_OP:
                if edge_src is None:
                    edge_src = inputs.setdefault(path, len(inputs))
                edges.append((bpath, edge_src))
            if branch.child is not None:
                below = src
                if branch.op == SEARCH_OP:
                    below = -1 - order[bpath]  # resolved to a node id once inputs are known
                walk(branch.child, bpath, below)

    walk(template, (), None)
    num_inputs = len(inputs)
    resolved = []
    for path, src in sorted(edges, key=lambda item: order[item[0]]):
        if src < 0:
            src = num_inputs + (-1 - src)
        resolved.append((src, num_inputs + order[path]))
    return tuple(resolved), num_inputs


def proxyless_space(num_blocks: int, template: TreeNode | None = None) -> SearchSpace:
    """The search space of a proxyless supernet with ``num_blocks`` blocks."""
    template = proxyless_template() if template is None else template
    edges, num_inputs = template_edges(template)
    types = tuple(f"b{b}" for b in range(num_blocks))
    return SearchSpace(name="proxyless", ops=CANDIDATE_OPS, cell_types=types,
                       edges=dict.fromkeys(types, edges), num_inputs=num_inputs,
                       num_nodes=len(edges), concat=False)


def edge_names(template: TreeNode | None = None) -> list[str]:
    """Readable names of the searchable edges: their branch paths, ``"0.0.1.0"``."""
    template = proxyless_template() if template is None else template
    return [".".join(str(i) for i in path) for path in searchable_paths(template)]


def derive_tree(template: TreeNode, alive_op: Any, scores: Any) -> TreeNode:
    """The tree cell of one block from its live ops.

    Parameters
    ----------
    template
        The searchable tree.
    alive_op
        ``(edge, op)`` booleans: the op's switch survived (and its edge switch did).
    scores
        ``(edge, op)``: on every live edge the live op with the largest score is kept
        (the search passes ``|posterior mean|`` of ``edge_switch * op_switch``).

    Returns
    -------
    TreeNode
        The template with one op per live searchable edge. A searchable edge with no live op
        is removed with everything below it (its leaves depend on it); a searchable edge
        whose child node lost every branch is removed too (it would feed nothing); a fixed
        edge whose child lost every branch keeps the bare edge (an identity into a dead
        sub-tree becomes the residual alone).
    """
    alive = np.asarray(torch.as_tensor(alive_op).cpu(), dtype=bool)
    score = np.asarray(torch.as_tensor(scores, dtype=torch.float64).cpu())
    order = {path: i for i, path in enumerate(searchable_paths(template))}
    if alive.shape != (len(order), len(CANDIDATE_OPS)) or score.shape != alive.shape:
        raise ValueError(f"alive_op and scores must be (edge, op) = "
                         f"{(len(order), len(CANDIDATE_OPS))}, got {alive.shape} and "
                         f"{score.shape}")

    def rebuild(node: TreeNode, path: tuple[int, ...]) -> TreeNode | None:
        branches = []
        for i, branch in enumerate(node.branches):
            bpath = (*path, i)
            op = branch.op
            if op == SEARCH_OP:
                e = order[bpath]
                if not alive[e].any():
                    continue
                masked = np.where(alive[e], score[e], -np.inf)
                op = CANDIDATE_OPS[int(np.argmax(masked))]
            child = None if branch.child is None else rebuild(branch.child, bpath)
            if branch.child is not None and child is None:
                if branch.op == SEARCH_OP:
                    continue
                if branch.expand != 1:
                    raise ValueError(f"fixed edge {branch.op!r} at {bpath} expands into a "
                                     "sub-tree that lost every branch")
            branches.append(TreeBranch(op, child, branch.expand))
        if not branches:
            return None
        return TreeNode(tuple(branches), node.split, node.merge, node.branch_bn)

    if node_split_slices(template):
        raise ValueError("derive_tree needs a template whose searchable branches sit under "
                         "copy nodes (removing a branch of a split or concat node would "
                         "change the slices)")
    tree = rebuild(template, ())
    if tree is None:
        raise ValueError("every branch of the root was removed")
    return tree


def node_split_slices(template: TreeNode) -> bool:
    """Whether a searchable branch hangs from a ``split`` or ``concat`` node."""

    def walk(node: TreeNode) -> bool:
        for branch in node.branches:
            if branch.op == SEARCH_OP and (node.split == "split" or node.merge == "concat"):
                return True
            if branch.child is not None and walk(branch.child):
                return True
        return False

    return walk(template)


def derive_trees(template: TreeNode, alive_op: Any, scores: Any, name: str | None = None
                 ) -> TreeGenotype:
    """One tree per block from ``(block, edge, op)`` live ops and scores."""
    alive = torch.as_tensor(alive_op)
    score = torch.as_tensor(scores)
    cells = tuple(derive_tree(template, alive[b], score[b]) for b in range(alive.shape[0]))
    return TreeGenotype(cells=cells, name=name)
