"""Tree cells as modules: one class for the evaluation cell and for the searchable one.

:class:`TreeCell` builds the module of a :class:`~pyronas.proxyless.tree.TreeNode` (semantics
in :mod:`pyronas.proxyless.tree`). Fixed edges are :mod:`.tree_ops` operations; a template's
searchable edges (op :data:`~pyronas.proxyless.tree.SEARCH_OP`) are :class:`MixedTreeEdge`,
which mixes all candidates with the block's switches::

    y_e = edge_switch[e] * sum_k op_switch[e, k] * op_k(x)

``e`` is the edge's index in :func:`~pyronas.proxyless.tree.searchable_paths` order. The
switches of one block come in with every call (``(edge,)`` and ``(edge, op)``), so the cell
owns only weights, as the cell supernet does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyronas.evalnet import drop_path
from pyronas.proxyless.tree import SEARCH_OP, TreeNode, branch_widths
from pyronas.proxyless.tree_ops import CANDIDATE_OPS, make_op

__all__ = ["MixedTreeEdge", "TreeCell", "BlockSwitches"]

BlockSwitches = tuple[Tensor, Tensor]
"""``(edge_switch (edge,), op_switch (edge, op))`` of one block."""


class MixedTreeEdge(nn.Module):
    """All candidate ops of one searchable edge, mixed by switches.

    Parameters
    ----------
    index
        The edge's index in the block's switches.
    C
        Channels (every candidate keeps them).
    stride
        Stride of every candidate (2 on the root edges of a downsampling block).
    """

    def __init__(self, index: int, C: int, stride: int) -> None:
        super().__init__()
        self.index = index
        self.ops = nn.ModuleList(make_op(name, C, C, stride) for name in CANDIDATE_OPS)
        self.live: tuple[int, ...] = tuple(range(len(CANDIDATE_OPS)))
        """Indices of the computed ops (dead ones are left out)."""

    def forward(self, x: Tensor, switches: BlockSwitches) -> Tensor | None:
        """``(batch, C, H, W) -> (batch, C, H', W')``, or ``None`` when no op is live."""
        edge_switch, op_switch = switches
        out: Tensor | None = None
        for k in self.live:
            y = self.ops[k](x) * op_switch[self.index, k]
            out = y if out is None else out + y
        return None if out is None else out * edge_switch[self.index]


class TreeCell(nn.Module):
    """The module of one tree node (and, recursively, its children).

    Parameters
    ----------
    node
        The tree (a genotype's cell, or a template with searchable edges).
    C_in, C_out
        Input and output channels.
    stride
        Stride of this node's edges (1 below the root).
    first_index
        Switch index of this node's first searchable edge (the root passes 0).
    """

    def __init__(self, node: TreeNode, C_in: int, C_out: int, stride: int = 1,
                 first_index: int = 0) -> None:
        super().__init__()
        self.node = node
        self.C_out = C_out
        self.stride = stride
        self.in_sizes = [w[0] for w in branch_widths(node, C_in, C_out)]
        self.out_sizes = [w[1] for w in branch_widths(node, C_in, C_out)]
        self.edges = nn.ModuleList()
        self.children_ = nn.ModuleList()
        self.bns = nn.ModuleList()
        self.has_child: list[bool] = []
        self.drop_prob = 0.0
        """Drop-path rate of the branch outputs in training (set by the network)."""
        index = first_index
        for branch, cin, cout in zip(node.branches, self.in_sizes, self.out_sizes, strict=True):
            width = branch.expand * cout
            if branch.op == SEARCH_OP:
                if cin != width:
                    raise ValueError(f"a searchable edge keeps its width, got {cin} -> {width}")
                self.edges.append(MixedTreeEdge(index, cin, stride))
                index += 1
            else:
                self.edges.append(make_op(branch.op, cin, width, stride))
            if branch.child is None:
                self.children_.append(nn.Identity())
                self.bns.append(nn.Identity())
            else:
                child = TreeCell(branch.child, width, cout, 1, index)
                index += child.num_searchable
                self.children_.append(child)
                self.bns.append(nn.BatchNorm2d(cout) if node.branch_bn else nn.Identity())
            self.has_child.append(branch.child is not None)
        self.num_searchable = index - first_index

    def _drop(self, y: Tensor) -> Tensor:
        if self.training and self.drop_prob > 0:
            return drop_path(y, self.drop_prob)
        return y

    def _zeros(self, x: Tensor, channels: int) -> Tensor:
        batch, _, h, w = x.shape
        return x.new_zeros(batch, channels, -(-h // self.stride), -(-w // self.stride))

    def forward(self, x: Tensor, switches: BlockSwitches | None = None) -> Tensor:
        """``(batch, C_in, H, W) -> (batch, C_out, ceil(H / stride), ceil(W / stride))``.

        ``switches`` are needed when the tree has searchable edges.
        """
        if self.node.split == "split":
            inputs = list(torch.split(x, self.in_sizes, dim=1))
        else:
            inputs = [x] * len(self.in_sizes)
        outs: list[Tensor | None] = []
        for i, (edge, child, bn) in enumerate(zip(self.edges, self.children_, self.bns,
                                                  strict=True)):
            if isinstance(edge, MixedTreeEdge):
                if switches is None:
                    raise ValueError("this tree has searchable edges: pass the block's switches")
                e = edge(inputs[i], switches)
            else:
                e = edge(inputs[i])
            if e is None:
                outs.append(None)
                continue
            if self.has_child[i]:
                y = self._drop(bn(child(e, switches)))
                if isinstance(bn, nn.BatchNorm2d):
                    y = y + e  # the residual is never dropped
            else:
                y = e if isinstance(edge, nn.Identity) else self._drop(e)
            outs.append(y)
        if self.node.merge == "concat":
            parts = [self._zeros(x, c) if y is None else y
                     for y, c in zip(outs, self.out_sizes, strict=True)]
            return torch.cat(parts, dim=1)
        total: Tensor | None = None
        for y in outs:
            if y is not None:
                total = y if total is None else total + y
        return self._zeros(x, self.C_out) if total is None else total
