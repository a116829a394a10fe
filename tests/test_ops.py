"""Tests of the candidate operations: shapes, gradients, receptive fields, parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyronas.ops import (
    OPS,
    FactorizedReduce,
    Identity,
    ResNetBasicBlock,
    Zero,
    make_pool,
    preprocess,
)
from pyronas.space import PRIMITIVES_DARTS, PRIMITIVES_NB201

ALL_OPS = sorted(set(PRIMITIVES_DARTS) | set(PRIMITIVES_NB201))
C = 4


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [False, True])
def test_op_shape_and_gradient(name: str, stride: int, affine: bool) -> None:
    torch.manual_seed(0)
    op = OPS[name](C, stride, affine)
    x = torch.randn(2, C, 8, 8, requires_grad=True)
    y = op(x)
    assert y.shape == (2, C, 8 // stride, 8 // stride)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in op.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert all(m.affine == affine for m in op.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("stride", [1, 2])
def test_op_odd_sizes_agree(stride: int) -> None:
    # every op maps 7x7 to ceil(7 / stride), so ops of one reduction edge can be summed
    x = torch.randn(2, C, 7, 7)
    shapes = {tuple(OPS[name](C, stride, True)(x).shape) for name in ALL_OPS}
    assert shapes == {(2, C, 7 if stride == 1 else 4, 7 if stride == 1 else 4)}


def test_skip_connect_is_identity_or_factorized_reduce() -> None:
    assert isinstance(OPS["skip_connect"](C, 1, True), Identity)
    assert isinstance(OPS["skip_connect"](C, 2, True), FactorizedReduce)
    x = torch.randn(2, C, 8, 8)
    assert torch.equal(OPS["skip_connect"](C, 1, True)(x), x)


def _sep_params(C: int, k: int, affine: bool) -> int:
    bn = 2 * C if affine else 0
    return 2 * (C * k * k + C * C + bn)


@pytest.mark.parametrize("affine", [False, True])
def test_parameter_counts_closed_form(affine: bool) -> None:
    bn = 2 * C if affine else 0

    def n(name: str, stride: int = 1) -> int:
        return sum(p.numel() for p in OPS[name](C, stride, affine).parameters())

    assert n("sep_conv_3x3") == _sep_params(C, 3, affine)
    assert n("sep_conv_5x5") == _sep_params(C, 5, affine)
    assert n("dil_conv_3x3") == C * 9 + C * C + bn
    assert n("dil_conv_5x5") == C * 25 + C * C + bn
    assert n("nor_conv_1x1") == C * C + bn
    assert n("nor_conv_3x3") == C * C * 9 + bn
    assert n("max_pool_3x3") == n("avg_pool_3x3") == n("skip_connect") == 0
    assert n("skip_connect", 2) == 2 * C * (C // 2) + bn


def _positive_eval(op: nn.Module) -> nn.Module:
    """Positive conv weights and identity batch norms: the gradient support is the full
    receptive field (no ReLU cuts it)."""
    for m in op.modules():
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.0)
    return op.eval()


@pytest.mark.parametrize(
    "name, offsets",
    [
        ("sep_conv_3x3", range(-2, 3)),
        ("sep_conv_5x5", range(-4, 5)),
        ("dil_conv_3x3", range(-2, 3, 2)),
        ("dil_conv_5x5", range(-4, 5, 2)),
        ("nor_conv_1x1", range(0, 1)),
        ("nor_conv_3x3", range(-1, 2)),
        ("max_pool_3x3", range(-1, 2)),
        ("avg_pool_3x3", range(-1, 2)),
    ],
)
def test_receptive_field(name: str, offsets: range) -> None:
    op = _positive_eval(OPS[name](1, 1, True))
    x = torch.zeros(1, 1, 11, 11).add_(torch.linspace(1.0, 2.0, 121).view(1, 1, 11, 11))
    x.requires_grad_(True)
    op(x)[0, 0, 5, 5].backward()
    support = {(i - 5, j - 5) for i, j in (x.grad[0, 0] != 0).nonzero().tolist()}
    expected = {(i, j) for i in offsets for j in offsets}
    if name == "max_pool_3x3":  # the gradient goes to the argmax only, inside the window
        assert len(support) == 1 and support <= expected
    else:
        assert support == expected


def test_avg_pool_excludes_padding() -> None:
    x = torch.full((1, 2, 5, 5), 3.0)
    for stride in (1, 2):
        assert torch.allclose(make_pool("avg", stride)(x), torch.tensor(3.0))


def test_factorized_reduce_matches_definition() -> None:
    torch.manual_seed(0)
    fr = FactorizedReduce(3, 4, affine=False).eval()
    x = torch.randn(2, 3, 6, 6)
    r = torch.relu(x)
    a = torch.einsum("oc,bchw->bohw", fr.conv_1.weight[:, :, 0, 0], r[:, :, ::2, ::2])
    b = torch.einsum("oc,bchw->bohw", fr.conv_2.weight[:, :, 0, 0], r[:, :, 1::2, 1::2])
    expected = torch.cat([a, b], 1) / torch.sqrt(torch.tensor(1.0 + fr.bn.eps))
    assert torch.allclose(fr(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(3, 5)


def test_zero_op() -> None:
    x = torch.randn(2, C, 7, 7)
    assert torch.equal(Zero(1)(x), torch.zeros_like(x))
    assert Zero(2)(x).shape == (2, C, 4, 4) and not Zero(2)(x).any()


def test_preprocess() -> None:
    x = torch.randn(2, 6, 8, 8)
    assert preprocess(6, 4, False, False)(x).shape == (2, 4, 8, 8)
    assert preprocess(6, 4, True, False)(x).shape == (2, 4, 4, 4)


@pytest.mark.parametrize("size", [8, 7])
def test_resnet_basic_block(size: int) -> None:
    block = ResNetBasicBlock(4, 8, 2)
    x = torch.randn(2, 4, size, size, requires_grad=True)
    y = block(x)
    assert y.shape == (2, 8, (size + 1) // 2, (size + 1) // 2)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    same = ResNetBasicBlock(4, 4, 1).eval()
    with torch.no_grad():
        for m in same.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(same(x), x)  # residual path only
    with pytest.raises(ValueError, match="stride"):
        ResNetBasicBlock(4, 4, 3)
