"""The over-parameterised search network whose architecture switches are forward inputs.

Every edge ``i -> j`` of every cell carries all candidate operations of the space. With the
switches of the cell, ``edge_switch`` (edge,) and ``op_switch`` (edge, op), edge ``e`` computes

    y_e = edge_switch[e] * sum_k op_switch[e, k] * op_k(x_i),

a node is the sum of its incoming edges, and a cell outputs the concatenation of its intermediate
nodes (DARTS spaces) or its last node (NAS-Bench-201). The network owns only weights; the
switches come in with every call, so a Pyro model can sample them and autograd can differentiate
through them.

Pruned operations can be left out of the computation with :meth:`SuperNet.set_alive`: a static
(Python-level) mask of the live ops, set between search iterations, that every forward then
follows. An op whose switch is zero contributes exactly zero, so leaving it out changes neither
the output nor the gradients of the live switches; the mask is not a branch on tensor values, so
``torch.func`` transforms over the switches (vmap, jacrev) see an ordinary, smaller network.

Macro skeletons:

* two-input spaces (``bayesnas8``, ``darts``): the DARTS search network. A 3x3 conv + BN stem,
  ``layers`` cells, reduction cells (stride 2, channels doubled) at ``layers // 3`` and
  ``2 * layers // 3``, global average pool, linear classifier. Cell ops use non-affine batch
  norms, and pools are followed by a non-affine batch norm. The stem batch norm is affine, as in
  DARTS.
* one-input spaces (``nb201``): the NAS-Bench-201 skeleton. A 3x3 conv + BN stem with ``C``
  channels, then ``layers`` positions of which ``layers // 3`` and ``2 * layers // 3`` are ResNet
  basic blocks with stride 2 (channels doubled) and the rest normal cells; a final BN + ReLU,
  global average pool, linear classifier. Only the cells carry switches.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyronas.ops import OPS, POOL_OPS, ResNetBasicBlock, preprocess
from pyronas.space import SearchSpace

__all__ = ["MixedEdge", "SearchCell", "SuperNet"]


class MixedEdge(nn.Module):
    """All candidate operations of one edge, mixed by switches.

    Parameters
    ----------
    ops
        Operation names, in switch order.
    C
        Channels.
    stride
        1, or 2 for the input edges of a reduction cell.
    """

    def __init__(self, ops: tuple[str, ...], C: int, stride: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList()
        for name in ops:
            op = OPS[name](C, stride, False)
            if name in POOL_OPS:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self.ops.append(op)
        self.live: tuple[int, ...] = tuple(range(len(ops)))
        """Indices of the computed ops (see :meth:`SuperNet.set_alive`)."""

    def forward(self, x: Tensor, edge_switch: Tensor, op_switch: Tensor) -> Tensor | None:
        """Mix the live operations.

        Parameters
        ----------
        x
            ``(batch, C, H, W)`` input node.
        edge_switch
            ``()`` scalar multiplying the edge's output (the mixed ops).
        op_switch
            ``(op,)`` weights of the operation outputs.

        Returns
        -------
        Tensor or None
            ``(batch, C, H / stride, W / stride)``; ``None`` when no op is live (the edge
            outputs zero).
        """
        if not self.live:
            return None
        out: Tensor | None = None
        # out-of-place sums: in-place ops have no torch.func batching rules (vmap, jacrev)
        for k in self.live:
            y = self.ops[k](x) * op_switch[k]
            out = y if out is None else out + y
        assert out is not None
        return out * edge_switch


class SearchCell(nn.Module):
    """One search cell: preprocessing of the inputs, mixed edges, node sums, output.

    Parameters
    ----------
    space
        The search space.
    cell_type
        Name of this cell's type in ``space.cell_types`` (selects its edge list).
    C_prev_prev, C_prev
        Channels of the outputs of cells ``k - 2`` and ``k - 1``.
    C
        Channels of every node inside the cell.
    reduction
        Input edges use stride 2.
    reduction_prev
        Cell ``k - 1`` reduced, so input 0 must be reduced too (``FactorizedReduce``).
    """

    def __init__(
        self,
        space: SearchSpace,
        cell_type: str,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.num_inputs = space.num_inputs
        self.num_nodes = space.num_nodes
        self.concat = space.concat
        self.reduction = reduction
        self.C = C
        self.edge_list: tuple[tuple[int, int], ...] = space.edges[cell_type]
        if self.num_inputs == 2:
            self.preprocess0: nn.Module = preprocess(C_prev_prev, C, reduction_prev, False)
            self.preprocess1: nn.Module = preprocess(C_prev, C, False, False)
        elif self.num_inputs == 1:
            self.preprocess1 = (
                nn.Identity() if C_prev == C else preprocess(C_prev, C, False, False)
            )
        else:
            raise ValueError(f"space {space.name!r}: num_inputs must be 1 or 2")
        self.edges = nn.ModuleList(
            MixedEdge(space.ops, C, 2 if reduction and src < self.num_inputs else 1)
            for src, _ in self.edge_list
        )
        # incoming edge indices of every intermediate node, in switch order
        self._incoming: list[list[int]] = [
            [e for e, (_, dst) in enumerate(self.edge_list) if dst == self.num_inputs + j]
            for j in range(self.num_nodes)
        ]
        for j, incoming in enumerate(self._incoming):
            if not incoming:
                raise ValueError(f"space {space.name!r}: node {j} of {cell_type} has no input")
        self.multiplier = self.num_nodes if self.concat else 1

    def set_live(self, op_alive: Tensor | None) -> None:
        """Compute only the live ops of every edge.

        Parameters
        ----------
        op_alive
            ``(edge, op)`` booleans, or ``None`` to compute every op.
        """
        for e, edge in enumerate(self.edges):
            if op_alive is None:
                edge.live = tuple(range(len(edge.ops)))
            else:
                edge.live = tuple(int(k) for k in torch.nonzero(op_alive[e]).flatten())

    def _zero_node(self, states: list[Tensor]) -> Tensor:
        """Zeros of a node's shape, for a node whose incoming ops are all dead."""
        inside = len(states) > self.num_inputs
        ref = states[-1] if inside else states[0]
        batch, _, h, w = ref.shape
        if self.reduction and not inside:
            h, w = (h + 1) // 2, (w + 1) // 2  # every stride-2 op outputs ceil(H / 2)
        return ref.new_zeros(batch, self.C, h, w)

    def forward(
        self, s0: Tensor | None, s1: Tensor, edge_switch: Tensor, op_switch: Tensor
    ) -> Tensor:
        """Compute the cell.

        Parameters
        ----------
        s0, s1
            Outputs of cells ``k - 2`` and ``k - 1`` (``s0`` is ignored by one-input cells).
        edge_switch
            ``(edge,)``.
        op_switch
            ``(edge, op)``.

        Returns
        -------
        Tensor
            ``(batch, multiplier * C, H', W')``.
        """
        if self.num_inputs == 2:
            states = [self.preprocess0(s0), self.preprocess1(s1)]
        else:
            states = [self.preprocess1(s1)]
        for incoming in self._incoming:
            node: Tensor | None = None
            for e in incoming:
                src = self.edge_list[e][0]
                y = self.edges[e](states[src], edge_switch[e], op_switch[e])
                if y is not None:
                    node = y if node is None else node + y
            states.append(self._zero_node(states) if node is None else node)
        if self.concat:
            return torch.cat(states[self.num_inputs :], dim=1)
        return states[-1]


class SuperNet(nn.Module):
    """The search network of a space; switches are inputs of ``forward``.

    Parameters
    ----------
    space
        The search space.
    C
        Initial channels of the cells.
    layers
        Number of cell positions (see the module docstring for the reductions).
    num_classes
        Classifier outputs.
    in_channels
        Image channels.
    tied
        Switches per cell type ``(cell_type, ...)`` (the BayesNAS grouping) or per cell
        ``(cell, ...)``.
    stem_multiplier
        Stem width is ``stem_multiplier * C`` for the two-input spaces (ignored by ``nb201``,
        whose stem has ``C`` channels).

    Attributes
    ----------
    cell_type_index : LongTensor (cell,)
        Index into ``space.cell_types`` of every switch-carrying cell.
    num_cells : int
        Number of switch-carrying cells.
    """

    def __init__(
        self,
        space: SearchSpace,
        C: int = 8,
        layers: int = 5,
        num_classes: int = 10,
        in_channels: int = 1,
        tied: bool = True,
        stem_multiplier: int = 3,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be positive, got {layers}")
        self.space = space
        self.tied = tied
        self.layers = layers
        reduction_positions = {layers // 3, 2 * layers // 3}
        self.cells = nn.ModuleList()
        self.blocks = nn.ModuleList()  # nb201 residual reduction blocks
        self._plan: list[tuple[str, int]] = []  # ("cell", i) or ("block", j) in network order
        types: list[int] = []

        if space.num_inputs == 2:
            C_curr = stem_multiplier * C
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                nn.BatchNorm2d(C_curr),
            )
            C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
            reduction_prev = False
            for i in range(layers):
                reduction = i in reduction_positions and "reduce" in space.cell_types
                if i in reduction_positions:
                    C_curr *= 2
                cell_type = "reduce" if reduction else "normal"
                cell = SearchCell(
                    space, cell_type, C_prev_prev, C_prev, C_curr, i in reduction_positions,
                    reduction_prev,
                )
                self._plan.append(("cell", len(self.cells)))
                self.cells.append(cell)
                types.append(space.cell_types.index(cell_type))
                reduction_prev = i in reduction_positions
                C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        elif space.num_inputs == 1:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, C, 3, padding=1, bias=False),
                nn.BatchNorm2d(C),
            )
            C_prev = C_curr = C
            for i in range(layers):
                if i in reduction_positions:
                    C_curr *= 2
                    self._plan.append(("block", len(self.blocks)))
                    self.blocks.append(ResNetBasicBlock(C_prev, C_curr, 2))
                    C_prev = C_curr
                    continue
                cell = SearchCell(space, "normal", C_prev, C_prev, C_curr, False, False)
                self._plan.append(("cell", len(self.cells)))
                self.cells.append(cell)
                types.append(space.cell_types.index("normal"))
                C_prev = cell.multiplier * C_curr
            if not self.cells:
                raise ValueError(f"layers={layers} leaves no cell for space {space.name!r}")
        else:
            raise ValueError(f"space {space.name!r}: num_inputs must be 1 or 2")

        self.lastact: nn.Module = (
            nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
            if space.num_inputs == 1
            else nn.Identity()
        )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self.register_buffer(
            "cell_type_index", torch.tensor(types, dtype=torch.long), persistent=False
        )
        self.num_cells = len(self.cells)
        self._switch_index: list[int] = types if tied else list(range(self.num_cells))

    def switch_shapes(self) -> tuple[tuple[int, int], tuple[int, int, int]]:
        """``((group, edge), (group, edge, op))`` with ``group`` = cell type (tied) or cell."""
        return self.space.switch_shapes(None if self.tied else self.num_cells)

    def init_switches(self) -> tuple[Tensor, Tensor]:
        """``(edge_switch, op_switch)`` filled with 1.0, no grad, on the weights' device/dtype."""
        ref = self.classifier.weight
        edge_shape, op_shape = self.switch_shapes()
        return (
            torch.ones(edge_shape, dtype=ref.dtype, device=ref.device),
            torch.ones(op_shape, dtype=ref.dtype, device=ref.device),
        )

    def set_alive(self, op_alive: Tensor | None) -> None:
        """Leave dead ops out of every later forward (``None``: compute all ops again).

        Parameters
        ----------
        op_alive
            Booleans of the ``op_switch`` shape, ``(cell_type, edge, op)`` if tied else
            ``(cell, edge, op)``: False where the op's switch is pruned (held at zero). Cell
            ``i`` computes the ops of its row; an edge without a live op is skipped and a node
            without a live input is zero.

        Notes
        -----
        Outputs and the gradients of the live switches are unchanged only while the switches
        of the dead ops are zero: the caller keeps them so (the search freezes pruned switches
        at zero). The mask is Python state, not a buffer, so ``state_dict`` does not hold it.
        """
        if op_alive is None:
            for cell in self.cells:
                cell.set_live(None)
            return
        op_alive = torch.as_tensor(op_alive).detach().cpu().to(torch.bool)
        expected = self.switch_shapes()[1]
        if tuple(op_alive.shape) != expected:
            raise ValueError(
                f"op_alive has shape {tuple(op_alive.shape)}, expected the op_switch shape "
                f"{expected}"
            )
        for i, cell in enumerate(self.cells):
            cell.set_live(op_alive[self._switch_index[i]])

    def num_live_ops(self) -> int:
        """Number of ops a forward pass computes, over all cells."""
        return sum(len(edge.live) for cell in self.cells for edge in cell.edges)

    def _check_switches(self, edge_switch: Tensor, op_switch: Tensor) -> None:
        edge_shape, op_shape = self.switch_shapes()
        lead = "cell_type" if self.tied else "cell"
        if tuple(edge_switch.shape) != edge_shape:
            raise ValueError(
                f"edge_switch has shape {tuple(edge_switch.shape)}, expected {edge_shape} "
                f"({lead}, edge) for space {self.space.name!r} with tied={self.tied}"
            )
        if tuple(op_switch.shape) != op_shape:
            raise ValueError(
                f"op_switch has shape {tuple(op_switch.shape)}, expected {op_shape} "
                f"({lead}, edge, op) for space {self.space.name!r} with tied={self.tied}"
            )

    def forward(self, x: Tensor, edge_switch: Tensor, op_switch: Tensor) -> Tensor:
        """Logits of the network under the given switches.

        Parameters
        ----------
        x
            ``(batch, in_channels, H, W)`` images.
        edge_switch
            ``(cell_type, edge)`` if tied else ``(cell, edge)``.
        op_switch
            ``(cell_type, edge, op)`` if tied else ``(cell, edge, op)``.

        Returns
        -------
        Tensor
            ``(batch, num_classes)`` logits.
        """
        self._check_switches(edge_switch, op_switch)
        s0 = s1 = self.stem(x)
        for kind, i in self._plan:
            if kind == "block":
                s0, s1 = s1, self.blocks[i](s1)
                continue
            g = self._switch_index[i]
            s0, s1 = s1, self.cells[i](s0, s1, edge_switch[g], op_switch[g])
        out = self.global_pooling(self.lastact(s1))
        return self.classifier(out.flatten(1))
