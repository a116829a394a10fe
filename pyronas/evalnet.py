"""DARTS evaluation networks built from a genotype, and their cost counters.

``NetworkCIFAR`` and ``NetworkImageNet`` follow the DARTS evaluation networks: cells with
preprocessed inputs, reduction cells at ``layers // 3`` and ``2 * layers // 3``, an optional
auxiliary head on the output of the cell at ``2 * layers // 3``, drop path on the non-identity
operations during training. Beyond DARTS, a cell may sum several operations on one input (a
multi-op edge), a node may have any number of inputs, nodes may be left out of the output
concatenation, and a genotype without a reduction cell (``reduce=None``) uses its normal cell at
the reduction positions too.

A genotype has ``normal``, ``normal_concat``, ``reduce``, ``reduce_concat``; ``normal[j]`` is the
list of ``(op, input)`` pairs feeding intermediate node ``j`` (DARTS node numbering). The flat
DARTS list of pairs, two per node, is accepted too. An optional ``num_inputs`` attribute (1 or 2,
default 2) gives the number of cell inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyronas.ops import OPS, Identity, preprocess

__all__ = [
    "AuxiliaryHeadCIFAR",
    "AuxiliaryHeadImageNet",
    "Cell",
    "NetworkCIFAR",
    "NetworkImageNet",
    "cell_nodes",
    "count_mult_adds",
    "count_parameters",
    "drop_path",
]

log = logging.getLogger(__name__)

NodeSpec = list[list[tuple[str, int]]]
"""Per intermediate node, its ``(op, input)`` pairs."""


def cell_nodes(spec: Sequence[Any]) -> NodeSpec:
    """Normalise a cell description to one list of ``(op, input)`` pairs per node.

    Parameters
    ----------
    spec
        Either nested (``spec[j]`` = pairs of node ``j``) or the flat DARTS list of pairs,
        two per node.
    """
    spec = list(spec)
    if not spec:
        raise ValueError("a cell needs at least one intermediate node")
    if all(_is_pair(p) for p in spec):
        if len(spec) % 2:
            raise ValueError(f"a flat DARTS cell list needs two pairs per node, got {len(spec)}")
        return [[_pair(p) for p in spec[i : i + 2]] for i in range(0, len(spec), 2)]
    nodes: NodeSpec = []
    for j, pairs in enumerate(spec):
        pairs = list(pairs)
        if not all(_is_pair(p) for p in pairs):
            raise ValueError(f"node {j}: expected a list of (op, input) pairs, got {pairs}")
        nodes.append([_pair(p) for p in pairs])
    return nodes


def _is_pair(p: Any) -> bool:
    return isinstance(p, Sequence) and len(p) == 2 and isinstance(p[0], str)


def _pair(p: Sequence[Any]) -> tuple[str, int]:
    return str(p[0]), int(p[1])


def drop_path(x: Tensor, drop_prob: float | Tensor) -> Tensor:
    """Zero whole samples with probability ``drop_prob``, rescale the rest by ``1 / keep``.

    ``x`` is ``(batch, ...)``; one Bernoulli draw per sample. ``drop_prob`` may be a 0-dim
    tensor (the networks pass one, so a compiled network does not recompile when it changes).
    """
    keep = 1.0 - drop_prob
    mask = torch.empty(
        (x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device
    ).bernoulli_(keep)
    return x * (mask / keep)


class Cell(nn.Module):
    """Evaluation cell of a genotype.

    Parameters
    ----------
    genotype
        Object with ``normal``, ``normal_concat``, ``reduce``, ``reduce_concat``.
    C_prev_prev, C_prev
        Channels of the outputs of cells ``k - 2`` and ``k - 1``.
    C
        Channels of every node inside the cell.
    reduction
        Use the reduction cell (or the normal one if ``genotype.reduce`` is None); operations on
        the cell inputs get stride 2.
    reduction_prev
        Cell ``k - 1`` reduced; input 0 is reduced by a ``FactorizedReduce``.
    affine
        Learnable batch-norm scale and shift (True in DARTS evaluation networks).
    num_inputs
        Number of cell inputs, 1 or 2 (with 1, the only input is the previous cell).
    """

    def __init__(
        self,
        genotype: Any,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        affine: bool = True,
        num_inputs: int = 2,
    ) -> None:
        super().__init__()
        if num_inputs not in (1, 2):
            raise ValueError(f"num_inputs must be 1 or 2, got {num_inputs}")
        use_reduce = reduction and genotype.reduce is not None
        spec = genotype.reduce if use_reduce else genotype.normal
        concat = genotype.reduce_concat if use_reduce else genotype.normal_concat
        self.nodes = cell_nodes(spec)
        self.num_inputs = num_inputs
        num_states = num_inputs + len(self.nodes)
        self.concat = [int(i) for i in concat]
        if not self.concat or any(not 0 <= i < num_states for i in self.concat):
            raise ValueError(f"concat {self.concat} must be non-empty indices below {num_states}")
        if reduction and any(i < num_inputs for i in self.concat):
            raise ValueError(f"a reduction cell cannot output an input node (concat {self.concat})")
        if num_inputs == 2:
            self.preprocess0: nn.Module = preprocess(C_prev_prev, C, reduction_prev, affine)
        self.preprocess1 = preprocess(C_prev, C, False, affine)
        used = set(self.concat) | {src for pairs in self.nodes for _, src in pairs}
        for j, pairs in enumerate(self.nodes):
            if not pairs and num_inputs + j in used:
                raise ValueError(
                    f"node {j} ({num_inputs + j}) has no input but is used (in the concat "
                    "or as the input of another node)"
                )
        self.ops = nn.ModuleList()
        for j, pairs in enumerate(self.nodes):
            for name, src in pairs:
                if name not in OPS:
                    raise ValueError(f"unknown operation {name!r}; known: {sorted(OPS)}")
                if not 0 <= src < num_inputs + j:
                    raise ValueError(f"node {j} ({num_inputs + j}) cannot take input {src}")
                stride = 2 if reduction and src < num_inputs else 1
                self.ops.append(OPS[name](C, stride, affine))
        self.multiplier = len(self.concat)

    def forward(
        self, s0: Tensor | None, s1: Tensor, drop_prob: float | Tensor = 0.0
    ) -> Tensor:
        """Compute the cell.

        ``s0`` (batch, C_prev_prev, H0, W0) and ``s1`` (batch, C_prev, H, W) give
        ``(batch, multiplier * C, H', W')``; ``s0`` is ignored by one-input cells. Drop path
        applies in training mode when ``drop_prob`` is a tensor or a positive float.
        """
        states: list[Tensor | None]
        if self.num_inputs == 2:
            states = [self.preprocess0(s0), self.preprocess1(s1)]
        else:
            states = [self.preprocess1(s1)]
        k = 0
        use_drop = self.training and (isinstance(drop_prob, Tensor) or drop_prob > 0.0)
        for pairs in self.nodes:
            node: Tensor | None = None
            for _, src in pairs:
                op = self.ops[k]
                k += 1
                h = op(states[src])
                if use_drop and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                node = h if node is None else node + h
            states.append(node)  # None for a node the connectivity rule removed (unused)
        return torch.cat([states[i] for i in self.concat], dim=1)


def _aux_pool(x: Tensor, kernel: int, stride: int) -> Tensor:
    """The DARTS pooling of the auxiliary head if it lands on 2x2, else adaptive 2x2 pooling."""
    h, w = x.shape[-2:]
    if h < 2 or w < 2:
        raise ValueError(f"auxiliary head needs at least 2x2 features, got {h}x{w}")
    if h >= kernel and w >= kernel and (h - kernel) // stride == 1 and (w - kernel) // stride == 1:
        return F.avg_pool2d(x, kernel, stride=stride, padding=0, count_include_pad=False)
    return F.adaptive_avg_pool2d(x, 2)


class _AuxiliaryHead(nn.Module):
    def __init__(self, C: int, num_classes: int, pool_stride: int, bn_768: bool) -> None:
        super().__init__()
        self.pool_stride = pool_stride
        layers: list[nn.Module] = [
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        if bn_768:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, C, H, W) -> (batch, num_classes)``."""
        x = _aux_pool(F.relu(x), 5, self.pool_stride)
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadCIFAR(_AuxiliaryHead):
    """DARTS CIFAR auxiliary head (5x5 average pool, stride 3 on 8x8 features; adaptive
    2x2 pooling on other sizes)."""

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__(C, num_classes, pool_stride=3, bn_768=True)


class AuxiliaryHeadImageNet(_AuxiliaryHead):
    """DARTS ImageNet auxiliary head (5x5 average pool, stride 2 on 7x7 features; no batch norm
    after the 768-channel conv, as in the published experiments)."""

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__(C, num_classes, pool_stride=2, bn_768=False)


def _genotype_inputs(genotype: Any, num_inputs: int | None) -> int:
    if num_inputs is not None:
        return num_inputs
    return int(getattr(genotype, "num_inputs", 2) or 2)


class _Network(nn.Module):
    """Shared body: cells, auxiliary head, classifier, the drop-path probability.

    ``drop_path_prob`` reads and writes a float, but the value lives in a 0-dim buffer that the
    cells receive, so the training loop can ramp it every epoch without a compiled network
    specialising on (and recompiling for) each value. Only switching drop path on or off
    changes the traced code.
    """

    _layers: int
    _auxiliary: bool
    cells: nn.ModuleList

    def _init_drop_path(self, drop_path_prob: float) -> None:
        self.register_buffer("_drop_prob", torch.zeros(()), persistent=False)
        self._drop_value = 0.0
        self.drop_path_prob = drop_path_prob

    @property
    def drop_path_prob(self) -> float:
        """Probability of dropping a non-identity op's output per sample (training only)."""
        return self._drop_value

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {value}")
        with torch.no_grad():
            self._drop_prob.fill_(value)
        self._drop_value = value

    def _build_cells(
        self,
        genotype: Any,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        layers: int,
        reduction_prev: bool,
        num_inputs: int,
    ) -> tuple[int, int]:
        """Build ``self.cells``; returns (channels out of the last cell, channels at the aux)."""
        self.cells = nn.ModuleList()
        C_curr = C
        C_aux = C_prev
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(
                genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                num_inputs=num_inputs,
            )
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == 2 * layers // 3:
                C_aux = C_prev
        return C_prev, C_aux

    def _run_cells(self, s0: Tensor, s1: Tensor) -> tuple[Tensor, Tensor | None]:
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self._drop_prob if self._drop_value > 0.0 else 0.0)
            if i == 2 * self._layers // 3 and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        return s1, logits_aux


class NetworkCIFAR(_Network):
    """DARTS CIFAR evaluation network.

    Parameters
    ----------
    genotype
        The cells (see the module docstring).
    C
        Initial channels (36 in DARTS).
    num_classes
        Classifier outputs.
    layers
        Number of cells (20 in DARTS).
    auxiliary
        Build the auxiliary head (its logits are returned in training mode only).
    drop_path_prob
        Drop-path probability; an attribute, so a training loop can schedule it.
    in_channels
        Image channels.
    stem_multiplier
        The stem has ``stem_multiplier * C`` channels.
    num_inputs
        Cell inputs (1 or 2); default ``genotype.num_inputs`` if present, else 2.
    """

    def __init__(
        self,
        genotype: Any,
        C: int = 36,
        num_classes: int = 10,
        layers: int = 20,
        auxiliary: bool = True,
        drop_path_prob: float = 0.0,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        num_inputs: int | None = None,
    ) -> None:
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self._init_drop_path(drop_path_prob)
        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        C_prev, C_aux = self._build_cells(
            genotype, C_stem, C_stem, C, layers, False, _genotype_inputs(genotype, num_inputs)
        )
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(batch, in_channels, H, W) -> (logits (batch, class), aux logits or None)``."""
        s = self.stem(x)
        s1, logits_aux = self._run_cells(s, s)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux


class NetworkImageNet(_Network):
    """DARTS ImageNet (mobile setting) evaluation network for 224x224 images.

    Two stride-2 stems (``stem0``: two 3x3 stride-2 convs, ``stem1``: one) bring 224 to 28;
    the first cell treats its input 0 (the ``stem0`` output) as coming from before a reduction.
    Global pooling is a 7x7 average pool, as in DARTS.

    Parameters
    ----------
    genotype, C, num_classes, layers, auxiliary, drop_path_prob, num_inputs
        As for :class:`NetworkCIFAR` (defaults C=48, 1000 classes, 14 layers).
    """

    def __init__(
        self,
        genotype: Any,
        C: int = 48,
        num_classes: int = 1000,
        layers: int = 14,
        auxiliary: bool = True,
        drop_path_prob: float = 0.0,
        num_inputs: int | None = None,
    ) -> None:
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self._init_drop_path(drop_path_prob)
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=False),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        C_prev, C_aux = self._build_cells(
            genotype, C, C, C, layers, True, _genotype_inputs(genotype, num_inputs)
        )
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadImageNet(C_aux, num_classes)
        self.global_pooling = nn.AvgPool2d(7)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(batch, 3, 224, 224) -> (logits (batch, class), aux logits or None)``."""
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        s1, logits_aux = self._run_cells(s0, s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux


def count_parameters(model: nn.Module, exclude_auxiliary: bool = True) -> int:
    """Number of parameters, the DARTS way: names containing ``auxiliary`` are left out."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if not (exclude_auxiliary and "auxiliary" in name)
    )


def count_mult_adds(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates of the convolutions and linear layers for one image.

    Runs one forward pass in eval mode (so the auxiliary head is not run) on zeros of shape
    ``(1, *input_size)`` and counts, per conv, ``output elements * C_in / groups * kh * kw`` and,
    per linear layer, ``in_features * out_features``.

    Parameters
    ----------
    model
        The network; its training mode is restored afterwards.
    input_size
        ``(channels, H, W)`` of one image.
    """
    total = 0

    def conv_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        per_output = module.in_channels // module.groups * kh * kw
        total += output[0].numel() * per_output

    def linear_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Linear)
        rows = output[0].numel() // module.out_features
        total += rows * module.in_features * module.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    ref = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_size), dtype=ref.dtype, device=ref.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
