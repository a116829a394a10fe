"""Candidate operations of the cell search spaces (DARTS and NAS-Bench-201 definitions).

Every operation maps a ``(batch, C, H, W)`` tensor to ``(batch, C, ceil(H / stride),
ceil(W / stride))``. ``OPS[name](C, stride, affine)`` builds one; ``affine`` switches the
learnable scale and shift of the batch norms (off in the search network, on in the evaluation
networks). Pools are built bare here: the search network appends a non-affine batch norm to them
itself.

ReLUs are never in-place, because a cell feeds one tensor to several operations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "OPS",
    "DilConv",
    "FactorizedReduce",
    "Identity",
    "ReLUConvBN",
    "ResNetBasicBlock",
    "SepConv",
    "Zero",
    "make_pool",
    "preprocess",
]


class ReLUConvBN(nn.Module):
    """ReLU, convolution (no bias), batch norm.

    Parameters
    ----------
    C_in, C_out
        Input and output channels.
    kernel_size, stride, padding, dilation
        Convolution geometry.
    affine
        Learnable batch-norm scale and shift.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int = 1,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride, padding, dilation, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, C_in, H, W) -> (batch, C_out, H', W')``."""
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, dilated depthwise convolution, pointwise convolution, batch norm."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                C_in, C_in, kernel_size, stride, padding, dilation, groups=C_in, bias=False
            ),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, C_in, H, W) -> (batch, C_out, H', W')``."""
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked (ReLU, depthwise conv, pointwise conv, batch norm) blocks.

    The stride is applied by the first depthwise convolution only.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, 1, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, C_in, H, W) -> (batch, C_out, H', W')``."""
        return self.op(x)


class Identity(nn.Identity):
    """The identity (``skip_connect`` at stride 1); a class of its own so drop path can skip it."""


class Zero(nn.Module):
    """The zero operation: zeros of the strided output shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, C, H, W) -> (batch, C, ceil(H / stride), ceil(W / stride))`` zeros."""
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """ReLU, two offset 1x1 stride-2 convolutions concatenated, batch norm.

    The second convolution sees the input shifted by one pixel. Odd spatial sizes are supported
    by zero-padding the shifted input at the bottom and right, so the output is always
    ``ceil(H / 2) x ceil(W / 2)`` like the other stride-2 operations.

    Parameters
    ----------
    C_in, C_out
        Channels; ``C_out`` must be even.
    affine
        Learnable batch-norm scale and shift.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even output channel count, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, C_in, H, W) -> (batch, C_out, ceil(H / 2), ceil(W / 2))``."""
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]
        pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
        if pad_h or pad_w:
            shifted = F.pad(shifted, (0, pad_w, 0, pad_h))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class ResNetBasicBlock(nn.Module):
    """ResNet basic block (the NAS-Bench-201 reduction block between cell stages).

    ``conv_b(conv_a(x)) + shortcut(x)`` with ReLU-conv-BN convolutions; at stride 2 the shortcut
    is a 2x2 average pool followed by a 1x1 convolution.
    """

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicBlock stride must be 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, affine=affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=affine)
        self.shortcut: nn.Module
        if stride == 2:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(2, stride=2, padding=0, ceil_mode=True),
                nn.Conv2d(C_in, C_out, 1, bias=False),
            )
        elif C_in != C_out:
            self.shortcut = ReLUConvBN(C_in, C_out, 1, 1, 0, affine=affine)
        else:
            self.shortcut = Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, C_in, H, W) -> (batch, C_out, ceil(H / stride), ceil(W / stride))``."""
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def make_pool(kind: str, stride: int) -> nn.Module:
    """3x3 pool with padding 1: ``"max"`` or ``"avg"`` (average ignores the padding)."""
    if kind == "max":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if kind == "avg":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    raise ValueError(f"unknown pool kind {kind!r}; expected 'max' or 'avg'")


def _skip(C: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)


OpFactory = Callable[[int, int, bool], nn.Module]
"""``(C, stride, affine) -> nn.Module``."""

OPS: dict[str, OpFactory] = {
    "none": lambda C, stride, affine: Zero(stride),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    "max_pool_3x3": lambda C, stride, affine: make_pool("max", stride),
    "avg_pool_3x3": lambda C, stride, affine: make_pool("avg", stride),
    "skip_connect": _skip,
    "nor_conv_1x1": lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine=affine),
    "nor_conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine=affine),
}
"""Operation factories by name, ``OPS[name](C, stride, affine)``."""

POOL_OPS: frozenset[str] = frozenset({"max_pool_3x3", "avg_pool_3x3"})
"""Names of the parameter-free pooling operations."""


def preprocess(C_in: int, C_out: int, reduction_prev: bool, affine: bool) -> nn.Module:
    """DARTS cell-input preprocessing to ``C_out`` channels.

    ``FactorizedReduce`` (halves the spatial size) when the input comes from before a reduction
    (``reduction_prev``), a 1x1 ``ReLUConvBN`` otherwise.
    """
    if reduction_prev:
        return FactorizedReduce(C_in, C_out, affine=affine)
    return ReLUConvBN(C_in, C_out, 1, 1, 0, affine=affine)
