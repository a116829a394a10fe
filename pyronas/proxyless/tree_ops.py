"""Operations on the edges of tree cells (the ProxylessNAS / Path-Level EAS vocabulary).

Every convolution is pre-activation, ``BN -> ReLU -> weight``, with the batch norm over the
input channels. ``TREE_OPS[name](C_in, C_out, stride)`` builds one. The seven searchable
candidates (:data:`CANDIDATE_OPS`) keep the channel count; the two fixed ops of the cell
templates (``group_conv_3x3``, ``conv_1x1``) may change it.

Pools are stride-1 (or strided at a downsampling edge), same-padded, the average excluding the
padding. The names differ from the DARTS ones on purpose: a DARTS ``sep_conv_3x3`` stacks two
separable convolutions, a tree ``sep_3x3`` is one.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

__all__ = ["CANDIDATE_OPS", "FIXED_OPS", "TREE_OPS", "PreActConv", "PreActSepConv", "make_op"]


class PreActConv(nn.Module):
    """``BN(C_in) -> ReLU -> conv k x k`` (groups, stride, same padding, no bias).

    Parameters
    ----------
    C_in, C_out
        Input and output channels (both divisible by ``groups``).
    kernel_size, stride, groups
        Convolution geometry.
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        if C_in % groups or C_out % groups:
            raise ValueError(f"channels {C_in} -> {C_out} are not divisible by groups={groups}")
        self.bn = nn.BatchNorm2d(C_in)
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(C_in, C_out, kernel_size, stride, kernel_size // 2, groups=groups,
                              bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, C_in, H, W) -> (batch, C_out, ceil(H / stride), ceil(W / stride))``."""
        return self.conv(self.relu(self.bn(x)))


class PreActSepConv(nn.Module):
    """``BN -> ReLU -> depthwise k x k (dilation d) -> pointwise 1 x 1``: one separable conv.

    Parameters
    ----------
    C_in, C_out
        Input and output channels.
    kernel_size, stride, dilation
        Geometry of the depthwise convolution (same padding).
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(C_in)
        self.relu = nn.ReLU(inplace=False)
        pad = dilation * (kernel_size - 1) // 2
        self.depthwise = nn.Conv2d(C_in, C_in, kernel_size, stride, pad, dilation, groups=C_in,
                                   bias=False)
        self.pointwise = nn.Conv2d(C_in, C_out, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, C_in, H, W) -> (batch, C_out, ceil(H / stride), ceil(W / stride))``."""
        return self.pointwise(self.depthwise(self.relu(self.bn(x))))


class _Identity(nn.Identity):
    """The identity edge (stride 1, same channels); a class of its own so drop path skips it."""


def _same_channels(name: str, C_in: int, C_out: int) -> None:
    if C_in != C_out:
        raise ValueError(f"tree op {name!r} keeps the channel count, got {C_in} -> {C_out}")


def _identity(C_in: int, C_out: int, stride: int) -> nn.Module:
    _same_channels("identity", C_in, C_out)
    if stride != 1:
        raise ValueError("tree op 'identity' cannot downsample; put a conv or pool on the "
                         "edges of a downsampling block's root node")
    return _Identity()


def _pool(kind: str) -> Callable[[int, int, int], nn.Module]:
    def make(C_in: int, C_out: int, stride: int) -> nn.Module:
        _same_channels(f"{kind}_pool_3x3", C_in, C_out)
        if kind == "max":
            return nn.MaxPool2d(3, stride, 1)
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    return make


OpFactory = Callable[[int, int, int], nn.Module]
"""``(C_in, C_out, stride) -> nn.Module``."""

TREE_OPS: dict[str, OpFactory] = {
    "identity": _identity,
    "sep_3x3": lambda C_in, C_out, stride: PreActSepConv(C_in, C_out, 3, stride),
    "sep_5x5": lambda C_in, C_out, stride: PreActSepConv(C_in, C_out, 5, stride),
    "sep_7x7": lambda C_in, C_out, stride: PreActSepConv(C_in, C_out, 7, stride),
    "dil_sep_3x3": lambda C_in, C_out, stride: PreActSepConv(C_in, C_out, 3, stride, 2),
    "max_pool_3x3": _pool("max"),
    "avg_pool_3x3": _pool("avg"),
    "group_conv_3x3": lambda C_in, C_out, stride: PreActConv(C_in, C_out, 3, stride, groups=2),
    "conv_1x1": lambda C_in, C_out, stride: PreActConv(C_in, C_out, 1, stride),
}
"""Tree-edge operation factories by name."""

CANDIDATE_OPS: tuple[str, ...] = (
    "identity",
    "sep_3x3",
    "sep_5x5",
    "sep_7x7",
    "dil_sep_3x3",
    "max_pool_3x3",
    "avg_pool_3x3",
)
"""The seven candidates of a searchable tree edge, in switch order (zero is the edge switch)."""

FIXED_OPS: tuple[str, ...] = ("group_conv_3x3", "conv_1x1")
"""Ops of the cell templates that are not searched (they may change the channel count)."""


def make_op(name: str, C_in: int, C_out: int, stride: int = 1) -> nn.Module:
    """Build tree op ``name``, with an error that lists the known ones."""
    try:
        factory = TREE_OPS[name]
    except KeyError:
        raise ValueError(f"unknown tree op {name!r}; known: {sorted(TREE_OPS)}") from None
    return factory(C_in, C_out, stride)
