"""Bottleneck PyramidNet for CIFAR with a tree cell in every residual block.

The backbone of the proxyless search (ProxylessNAS / Path-Level EAS CIFAR nets):

* stem: 3x3 conv ``in_channels -> 16`` and BN;
* 3 stages of ``(depth - 2) // 6`` blocks each; the inner width grows by ``alpha / blocks``
  per block from 16 (rounded, kept even: 18 ... 100 for depth 110, alpha 84);
* block ``b`` with inner width ``C``: ``BN -> 1x1 conv (C_in -> C)`` (no ReLU before the first
  conv), the tree cell ``C -> C`` (stride 2 in the first block of stages 2 and 3),
  ``BN -> ReLU -> 1x1 conv (C -> 4C)``, BN; plus the shortcut: identity, or a 2x2 average pool
  at a downsampling block, with the missing channels zero-padded;
* head: BN, ReLU, global average pool, linear ``4 C_last -> classes``.

:class:`PyramidTreeNet` is the evaluation network of a
:class:`~pyronas.proxyless.tree.TreeGenotype`; :class:`ProxylessSuperNet` puts the searchable
template in every block, with untied switches ``(block, edge)`` and ``(block, edge, op)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyronas.proxyless.tree import TreeGenotype, TreeNode, proxyless_template, searchable_paths
from pyronas.proxyless.tree_cell import BlockSwitches, MixedTreeEdge, TreeCell
from pyronas.proxyless.tree_ops import CANDIDATE_OPS

__all__ = [
    "PyramidBlock",
    "PyramidTreeNet",
    "ProxylessSuperNet",
    "blocks_per_stage",
    "pyramid_widths",
]

STEM_WIDTH = 16
BOTTLENECK = 4


def blocks_per_stage(depth: int) -> int:
    """``(depth - 2) // 6`` blocks per stage (depth 110: 18); ``depth - 2`` must divide by 6."""
    if int(depth) != depth or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"pyramid depth must be 6 n + 2 with n >= 1 (8, 14, ..., 110), "
                         f"got {depth!r}")
    return (int(depth) - 2) // 6


def pyramid_widths(depth: int, alpha: float) -> list[int]:
    """Inner width of every block: ``16 + alpha * (b + 1) / blocks``, rounded, kept even."""
    if not alpha >= 0:
        raise ValueError(f"pyramid alpha must be at least 0, got {alpha!r}")
    num_blocks = 3 * blocks_per_stage(depth)
    widths = []
    for b in range(num_blocks):
        width = int(round(STEM_WIDTH + alpha * (b + 1) / num_blocks))
        widths.append(max(2, width - width % 2))
    return widths


class PyramidBlock(nn.Module):
    """One bottleneck block around a tree cell (see the module docstring).

    Parameters
    ----------
    C_in
        Channels entering the block (the previous block's ``4 C``, or the stem's 16).
    C
        Inner width; the block outputs ``4 C`` channels.
    stride
        2 at the first block of stages 2 and 3.
    cell
        The tree cell ``C -> C`` with that stride.
    """

    def __init__(self, C_in: int, C: int, stride: int, cell: TreeCell) -> None:
        super().__init__()
        self.in_bottleneck = nn.Sequential(nn.BatchNorm2d(C_in), nn.Conv2d(C_in, C, 1, bias=False))
        self.cell = cell
        self.out_bottleneck = nn.Sequential(
            nn.BatchNorm2d(C), nn.ReLU(inplace=False), nn.Conv2d(C, BOTTLENECK * C, 1, bias=False)
        )
        self.out_bn = nn.BatchNorm2d(BOTTLENECK * C)
        self.shortcut_pool = nn.AvgPool2d(2, 2) if stride == 2 else None
        self.C_out = BOTTLENECK * C

    def forward(self, x: Tensor, switches: BlockSwitches | None = None) -> Tensor:
        """``(batch, C_in, H, W) -> (batch, 4 C, H / stride, W / stride)``."""
        out = self.out_bn(self.out_bottleneck(self.cell(self.in_bottleneck(x), switches)))
        shortcut = x if self.shortcut_pool is None else self.shortcut_pool(x)
        if shortcut.shape[-2:] != out.shape[-2:]:  # odd sizes: the pool floors, the conv ceils
            shortcut = F.pad(shortcut, (0, out.shape[-1] - shortcut.shape[-1],
                                        0, out.shape[-2] - shortcut.shape[-2]))
        extra = out.shape[1] - shortcut.shape[1]
        if extra > 0:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, extra))
        return out + shortcut


class _PyramidBackbone(nn.Module):
    """Stem, blocks with one tree each, head; ``cells[b]`` is block ``b``'s tree."""

    def __init__(self, cells: list[TreeNode], depth: int, alpha: float, num_classes: int,
                 in_channels: int) -> None:
        super().__init__()
        widths = pyramid_widths(depth, alpha)
        per_stage = blocks_per_stage(depth)
        if len(cells) != len(widths):
            raise ValueError(f"{len(cells)} cells for {len(widths)} blocks")
        self.depth, self.alpha = int(depth), float(alpha)
        self.widths = widths
        self.stem = nn.Sequential(nn.Conv2d(in_channels, STEM_WIDTH, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(STEM_WIDTH))
        self.blocks = nn.ModuleList()
        C_in = STEM_WIDTH
        for b, (C, node) in enumerate(zip(widths, cells, strict=True)):
            stride = 2 if b in (per_stage, 2 * per_stage) else 1
            block = PyramidBlock(C_in, C, stride, TreeCell(node, C, C, stride))
            self.blocks.append(block)
            C_in = block.C_out
        self.head = nn.Sequential(nn.BatchNorm2d(C_in), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_in, num_classes)

    @property
    def num_blocks(self) -> int:
        """Residual blocks (tree cells) of the network."""
        return len(self.blocks)

    def _logits(self, x: Tensor, switches: list[BlockSwitches | None]) -> Tensor:
        s = self.stem(x)
        for block, sw in zip(self.blocks, switches, strict=True):
            s = block(s, sw)
        return self.classifier(self.global_pooling(self.head(s)).flatten(1))


class PyramidTreeNet(_PyramidBackbone):
    """The evaluation network of a tree genotype (``forward`` returns ``(logits, None)``).

    Parameters
    ----------
    genotype
        One tree for all blocks, or one per block.
    depth, alpha
        PyramidNet depth (``6 n + 2``) and widening.
    num_classes, in_channels
        Classifier outputs; image channels.
    """

    def __init__(self, genotype: TreeGenotype, depth: int = 110, alpha: float = 84,
                 num_classes: int = 10, in_channels: int = 3) -> None:
        n = 3 * blocks_per_stage(depth)
        cells = [genotype.cell_for(b, n) for b in range(n)]
        for b, cell in enumerate(cells):
            if next(searchable_paths(cell), None) is not None:
                raise ValueError(f"cell {b} of the genotype still has searchable edges "
                                 "(op 'mixed'): derive a genotype first")
        super().__init__(cells, depth, alpha, num_classes, in_channels)
        self._drop_value = 0.0

    @property
    def drop_path_prob(self) -> float:
        """Drop-path rate of the tree branches (training only)."""
        return self._drop_value

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {value}")
        for m in self.modules():
            if isinstance(m, TreeCell):
                m.drop_prob = value
        self._drop_value = value

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        """``(batch, in_channels, H, W) -> ((batch, classes) logits, None)``."""
        return self._logits(x, [None] * self.num_blocks), None


class ProxylessSuperNet(_PyramidBackbone):
    """The proxyless supernet: the searchable template in every block, untied switches.

    Every block is its own switch group (``cell_type_index = arange(blocks)`` with
    ``tied = True``: the prior sees one "cell type" per block).

    Parameters
    ----------
    depth, alpha, num_classes, in_channels
        As :class:`PyramidTreeNet`.
    template
        The searchable tree (default :func:`~pyronas.proxyless.tree.proxyless_template`).
    """

    tied = True

    def __init__(self, depth: int = 110, alpha: float = 84, num_classes: int = 10,
                 in_channels: int = 3, template: TreeNode | None = None) -> None:
        self.template = proxyless_template() if template is None else template
        n = 3 * blocks_per_stage(depth)
        super().__init__([self.template] * n, depth, alpha, num_classes, in_channels)
        self.num_edges = len(list(searchable_paths(self.template)))
        self.register_buffer("cell_type_index", torch.arange(n), persistent=False)

    def switch_shapes(self) -> tuple[tuple[int, int], tuple[int, int, int]]:
        """``((block, edge), (block, edge, op))``."""
        n = self.num_blocks
        return (n, self.num_edges), (n, self.num_edges, len(CANDIDATE_OPS))

    def init_switches(self) -> tuple[Tensor, Tensor]:
        """Switches filled with 1.0 on the weights' device and dtype."""
        ref = self.classifier.weight
        edge_shape, op_shape = self.switch_shapes()
        return (torch.ones(edge_shape, dtype=ref.dtype, device=ref.device),
                torch.ones(op_shape, dtype=ref.dtype, device=ref.device))

    def mixed_edges(self, block: int) -> list[MixedTreeEdge]:
        """Block ``block``'s searchable edges in switch order."""
        found = [m for m in self.blocks[block].cell.modules() if isinstance(m, MixedTreeEdge)]
        return sorted(found, key=lambda m: m.index)

    def set_alive(self, op_alive: Tensor | None) -> None:
        """Compute only the live ops (``(block, edge, op)`` booleans; ``None``: all)."""
        if op_alive is not None:
            op_alive = torch.as_tensor(op_alive).detach().cpu().to(torch.bool)
            if tuple(op_alive.shape) != self.switch_shapes()[1]:
                raise ValueError(f"op_alive has shape {tuple(op_alive.shape)}, expected "
                                 f"{self.switch_shapes()[1]}")
        for b in range(self.num_blocks):
            for edge in self.mixed_edges(b):
                if op_alive is None:
                    edge.live = tuple(range(len(edge.ops)))
                else:
                    edge.live = tuple(int(k) for k in torch.nonzero(op_alive[b, edge.index]))

    def num_live_ops(self) -> int:
        """Ops a forward pass computes over all searchable edges."""
        return sum(len(e.live) for b in range(self.num_blocks) for e in self.mixed_edges(b))

    def forward(self, x: Tensor, edge_switch: Tensor, op_switch: Tensor) -> Tensor:
        """Logits ``(batch, classes)`` under switches ``(block, edge)`` and
        ``(block, edge, op)``."""
        edge_shape, op_shape = self.switch_shapes()
        if tuple(edge_switch.shape) != edge_shape or tuple(op_switch.shape) != op_shape:
            raise ValueError(f"switches of shapes {tuple(edge_switch.shape)} and "
                             f"{tuple(op_switch.shape)}, expected {edge_shape} (block, edge) "
                             f"and {op_shape} (block, edge, op)")
        return self._logits(x, [(edge_switch[b], op_switch[b]) for b in range(self.num_blocks)])


def describe(net: Any) -> dict[str, Any]:
    """Depth, alpha, block widths and parameter count of a PyramidNet-tree network."""
    return {"depth": net.depth, "alpha": net.alpha, "widths": list(net.widths),
            "params": sum(p.numel() for p in net.parameters())}
