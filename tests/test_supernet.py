"""Tests of the search network: shapes, switch semantics, gradients, and agreement with the
evaluation cell of the genotype that one-hot switches select."""

from __future__ import annotations

import re
from collections import namedtuple

import pytest
import torch
from torch import nn

from pyronas.evalnet import Cell
from pyronas.space import get_space
from pyronas.supernet import MixedEdge, SearchCell, SuperNet

SPACES = ["bayesnas8", "darts", "nb201"]

# stand-in for pyronas.genotype.Genotype (same attributes)
Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")


def _net(space: str, tied: bool = True, **kw) -> SuperNet:
    torch.manual_seed(0)
    return SuperNet(get_space(space), C=4, layers=kw.pop("layers", 5), tied=tied, **kw)


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("tied", [True, False])
def test_forward_backward_reaches_switches(space: str, tied: bool) -> None:
    net = _net(space, tied)
    edge, op = net.init_switches()
    assert edge.shape == net.switch_shapes()[0] and op.shape == net.switch_shapes()[1]
    assert torch.all(edge == 1) and torch.all(op == 1) and not edge.requires_grad
    edge.requires_grad_(True)
    op.requires_grad_(True)
    x = torch.randn(3, 1, 8, 8)
    logits = net(x, edge, op)
    assert logits.shape == (3, 10)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    for s in (edge, op):
        assert s.grad is not None and torch.isfinite(s.grad).all()
        # every switch of every group influences the loss
        assert (s.grad != 0).float().mean() > 0.9
    assert all(p.grad is not None for p in net.cells.parameters())


def test_structure() -> None:
    darts = _net("darts", layers=5)
    assert darts.num_cells == 5
    assert darts.cell_type_index.tolist() == [0, 1, 0, 1, 0]
    assert darts.switch_shapes() == ((2, 14), (2, 14, 7))
    assert _net("darts", tied=False).switch_shapes() == ((5, 14), (5, 14, 7))
    assert _net("bayesnas8").switch_shapes() == ((2, 8), (2, 8, 7))
    nb = _net("nb201", layers=5)  # positions 1 and 3 are residual blocks
    assert nb.num_cells == 3 and nb.cell_type_index.tolist() == [0, 0, 0]
    assert nb.switch_shapes() == ((1, 6), (1, 6, 4))
    assert _net("nb201", tied=False, layers=17).switch_shapes() == ((15, 6), (15, 6, 4))
    # channels: DARTS cell outputs 4 nodes x C, doubled at each reduction
    assert darts.classifier.in_features == 4 * 4 * 4
    assert nb.classifier.in_features == 4 * 4


def test_owns_no_switches() -> None:
    tied, untied = _net("bayesnas8", True), _net("bayesnas8", False)
    assert sum(p.numel() for p in tied.parameters()) == sum(p.numel() for p in untied.parameters())
    assert not any("switch" in name for name, _ in tied.named_parameters())


@pytest.mark.parametrize("tied", [True, False])
def test_shape_mismatch_raises(tied: bool) -> None:
    net = _net("bayesnas8", tied)
    edge, op = net.init_switches()
    x = torch.randn(2, 1, 8, 8)
    lead = op.shape[0]
    with pytest.raises(ValueError, match=re.escape(f"shape ({lead}, 7), expected ({lead}, 8)")):
        net(x, edge[:, :7], op)
    with pytest.raises(ValueError, match=re.escape(f"expected {tuple(op.shape)}")):
        net(x, edge, op[..., :6])
    with pytest.raises(ValueError, match="expected"):
        net(x, edge[None], op)


def test_untied_with_equal_groups_matches_tied() -> None:
    tied, untied = _net("darts", True), _net("darts", False)
    untied.load_state_dict(tied.state_dict())
    torch.manual_seed(1)
    edge, op = torch.rand(2, 14), torch.rand(2, 14, 7)
    idx = tied.cell_type_index
    x = torch.randn(2, 1, 8, 8)
    tied.eval()
    untied.eval()
    assert torch.allclose(tied(x, edge, op), untied(x, edge[idx], op[idx]), atol=1e-6)
    # and untied switches are really per cell: changing cell 0 only changes the output
    op2 = op[idx].clone()
    op2[0] *= 0.5
    assert not torch.allclose(untied(x, edge[idx], op2), untied(x, edge[idx], op[idx]))


def test_mixed_edge_brute_force() -> None:
    torch.manual_seed(0)
    space = get_space("darts")
    edge = MixedEdge(space.ops, 4, 2).double().eval()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    e, s = torch.tensor(0.7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    expected = e * sum(s[k] * op(x) for k, op in enumerate(edge.ops))
    assert torch.allclose(edge(x, e, s), expected)


def test_edge_switch_is_felt_in_training_mode() -> None:
    # every op but the identity ends in a batch norm, which in training mode is blind to the
    # scale of its input: the edge switch acts on the output, so the data sees it through every op
    torch.manual_seed(0)
    edge = MixedEdge(get_space("darts").ops, 4, 2).train()
    x, s = torch.randn(4, 4, 8, 8), torch.rand(7)
    e = torch.tensor(0.8, requires_grad=True)
    y = edge(x, e, s)
    (g,) = torch.autograd.grad(y.square().sum(), e)
    assert torch.allclose(y, 0.8 * edge(x, torch.tensor(1.0), s))
    assert g.abs() > 1.0


def test_zero_edge_switch_is_zero_op_in_training() -> None:
    # edge switch 0 = zero op
    torch.manual_seed(0)
    edge = MixedEdge(get_space("darts").ops, 4, 2).train()
    y = edge(torch.randn(2, 4, 8, 8), torch.tensor(0.0), torch.randn(7))
    assert y.shape == (2, 4, 4, 4) and torch.all(y == 0)


def test_gradcheck_switches() -> None:
    torch.manual_seed(0)
    net = SuperNet(get_space("bayesnas8"), C=2, layers=2, num_classes=3).double().eval()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    edge = torch.rand(2, 8, dtype=torch.float64, requires_grad=True)
    op = torch.rand(2, 8, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, o: net(x, e, o), (edge, op), fast_mode=True)


def test_torch_func_transforms() -> None:
    # curvature backends may use torch.func: per-sample gradients and Jacobians of the switches
    torch.manual_seed(0)
    net = SuperNet(get_space("bayesnas8"), C=2, layers=2, num_classes=3).double().eval()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    edge, op = net.init_switches()
    jac = torch.func.jacrev(lambda o: net(x, edge, o))(op)
    assert jac.shape == (2, 3, 2, 8, 7)
    per_sample = torch.func.vmap(
        torch.func.grad(lambda o, xi: net(xi[None], edge, o)[0, 1]), in_dims=(None, 0)
    )(op, x)
    assert torch.allclose(per_sample, jac[:, 1])


# --- one-hot switches select the evaluation cell of the matching genotype -----------------


def _randomise_bn(module: nn.Module, gen: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)


def _identity_bn(bn: nn.BatchNorm2d) -> None:
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) == x exactly


def _compare(space_name: str, cell_type: str, picks: dict[int, list[str]], train: bool) -> None:
    """Build a search cell and the eval cell of ``picks`` (edge index -> kept op names), share
    weights, and compare outputs under the one-hot switches."""
    space = get_space(space_name)
    reduction = cell_type == "reduce"
    C_pp, C_prev, C = 6, 5, 4
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    search = SearchCell(space, cell_type, C_pp, C_prev, C, reduction, reduction_prev=True)
    search = search.double()
    _randomise_bn(search, gen)
    edges = space.edges[cell_type]
    nodes: list[list[tuple[str, int]]] = [[] for _ in range(space.num_nodes)]
    kept: list[tuple[int, int]] = []  # (edge, op) in the eval cell's op order
    for j in range(space.num_nodes):
        for e, (src, dst) in enumerate(edges):
            if dst == space.num_inputs + j and e in picks:
                for name in picks[e]:
                    nodes[j].append((name, src))
                    kept.append((e, space.ops.index(name)))
    concat = list(range(space.num_inputs, space.num_inputs + space.num_nodes))
    geno = Genotype(nodes, concat, None, None) if not reduction else Genotype(
        [[("skip_connect", 0)]], [2], nodes, concat
    )
    evalcell = Cell(geno, C_pp, C_prev, C, reduction, True, affine=False).double()
    evalcell.preprocess0.load_state_dict(search.preprocess0.state_dict())
    evalcell.preprocess1.load_state_dict(search.preprocess1.state_dict())
    for i, (e, k) in enumerate(kept):
        op = search.edges[e].ops[k]
        if isinstance(op, nn.Sequential) and isinstance(op[1], nn.BatchNorm2d):  # pool + BN
            _identity_bn(op[1])
            op = op[0]
        evalcell.ops[i].load_state_dict(op.state_dict())
    edge_switch = torch.zeros(len(edges), dtype=torch.float64)
    op_switch = torch.zeros(len(edges), space.num_ops, dtype=torch.float64)
    for e, k in kept:
        edge_switch[e] = 1.0
        op_switch[e, k] = 1.0
    search.train(train)
    evalcell.train(train)
    s0 = torch.randn(3, C_pp, 8, 8, dtype=torch.float64)
    s1 = torch.randn(3, C_prev, 4, 4, dtype=torch.float64)
    expected = evalcell(s0, s1)
    got = search(s0, s1, edge_switch, op_switch)
    assert got.shape == expected.shape == (3, 4 * C, 2 if reduction else 4, 2 if reduction else 4)
    assert torch.allclose(got, expected, atol=1e-10), (got - expected).abs().max()
    # and the switches matter: dropping a kept op changes the output
    op_switch[kept[0]] = 0.0
    assert not torch.allclose(search(s0, s1, edge_switch, op_switch), expected, atol=1e-6)


CONV_OPS = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "skip_connect"]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("cell_type", ["normal", "reduce"])
def test_one_hot_matches_eval_cell_bayesnas8(cell_type: str, train: bool) -> None:
    space = get_space("bayesnas8")
    ops = CONV_OPS if train else list(space.ops)  # pools carry an extra BN in the search net
    # every edge kept; one op per edge, plus a multi-op edge (summed) on edge 0
    picks = {e: [ops[e % len(ops)]] for e in range(space.num_edges)}
    picks[0] = [ops[0], ops[-1]]
    _compare("bayesnas8", cell_type, picks, train)


@pytest.mark.parametrize("train", [False, True])
def test_one_hot_matches_eval_cell_darts(train: bool) -> None:
    # DARTS_V2 normal cell on the 14-edge space: two edges per node, the others switched off
    # edge index of (src, dst) in the full DAG: node j starts at sum(2 + i for i < j)
    starts = [0, 2, 5, 9]
    picks = {
        starts[0] + 0: ["sep_conv_3x3"], starts[0] + 1: ["sep_conv_3x3"],
        starts[1] + 0: ["sep_conv_3x3"], starts[1] + 1: ["sep_conv_3x3"],
        starts[2] + 1: ["sep_conv_3x3"], starts[2] + 0: ["skip_connect"],
        starts[3] + 0: ["skip_connect"], starts[3] + 2: ["dil_conv_3x3"],
    }
    _compare("darts", "normal", picks, train)
    if not train:
        # DARTS_V2 reduction cell (pools)
        picks = {
            starts[0] + 0: ["max_pool_3x3"], starts[0] + 1: ["max_pool_3x3"],
            starts[1] + 2: ["skip_connect"], starts[1] + 1: ["max_pool_3x3"],
            starts[2] + 0: ["max_pool_3x3"], starts[2] + 2: ["skip_connect"],
            starts[3] + 2: ["skip_connect"], starts[3] + 1: ["max_pool_3x3"],
        }
        _compare("darts", "reduce", picks, train)


def _dead_mask(net: SuperNet) -> torch.Tensor:
    """A mask of the op_switch shape with scattered dead ops, one fully dead edge and, in the
    first group, a node without any live input."""
    gen = torch.Generator().manual_seed(1)
    alive = torch.rand(net.switch_shapes()[1], generator=gen) > 0.4
    alive[:, 1] = False
    cell = net.cells[0]
    for e in cell._incoming[0]:
        alive[0, e] = False
    return alive


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_alive_mask_keeps_outputs_and_live_gradients(space: str, tied: bool, train: bool) -> None:
    net = _net(space, tied).double().train(train)
    alive = _dead_mask(net)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    edge_shape, op_shape = net.switch_shapes()
    edge = torch.rand(edge_shape, dtype=torch.float64) + 0.5
    op = torch.randn(op_shape, dtype=torch.float64) * alive  # dead switches are zero

    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e, o = edge.clone().requires_grad_(True), op.clone().requires_grad_(True)
        out = net(x, e, o)
        (out**2).sum().backward()
        return out.detach(), e.grad, o.grad

    full = run()
    total = net.num_live_ops()
    net.set_alive(alive)
    assert net.num_live_ops() < total
    masked = run()
    torch.testing.assert_close(masked[0], full[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(masked[1], full[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(masked[2][alive], full[2][alive], rtol=0, atol=1e-12)
    # the dead op switches are not in the graph any more
    assert torch.all(masked[2][~alive] == 0) and full[2][~alive].abs().sum() > 0
    net.set_alive(None)
    assert net.num_live_ops() == total
    torch.testing.assert_close(run()[0], full[0], rtol=0, atol=0)


def test_alive_mask_keeps_live_switch_curvature() -> None:
    from pyronas.inference.curvature import diagonal_curvature

    net = _net("bayesnas8").double().eval()
    alive = _dead_mask(net)
    edge, op = net.init_switches()
    sites = {"edge_switch": edge, "op_switch": op * alive}
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    batches = [(x, torch.tensor([0, 1, 2, 3]))]

    def forward(s: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return net(xb, s["edge_switch"], s["op_switch"])

    full = diagonal_curvature(forward, sites, batches, module=net)
    net.set_alive(alive)
    masked = diagonal_curvature(forward, sites, batches, module=net)
    torch.testing.assert_close(masked["edge_switch"], full["edge_switch"], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(
        masked["op_switch"][alive], full["op_switch"][alive], rtol=1e-10, atol=1e-14
    )
    assert torch.all(masked["op_switch"][~alive] == 0)


def test_alive_mask_dead_node_is_zero_and_shape_is_checked() -> None:
    net = _net("bayesnas8").eval()
    cell = net.cells[0]
    alive = torch.ones(net.switch_shapes()[1], dtype=torch.bool)
    alive[0] = False  # every op of the normal cells
    net.set_alive(alive)
    s = torch.randn(2, 12, 8, 8)
    edge, op = net.init_switches()
    out = cell(s, s, edge[0], op[0] * 0)
    assert out.shape == (2, cell.multiplier * 4, 8, 8) and torch.all(out == 0)
    reduce_cell = net.cells[1]  # inputs: the stem (12 channels) and cell 0 (16)
    assert reduce_cell.reduction
    net.set_alive(~alive)  # every op of the reduction cells is dead
    y = reduce_cell(torch.randn(2, 12, 8, 8), torch.randn(2, 16, 8, 8), edge[1], op[1] * 0)
    assert y.shape == (2, reduce_cell.multiplier * 8, 4, 4) and torch.all(y == 0)
    with pytest.raises(ValueError, match="op_switch shape"):
        net.set_alive(torch.ones(2, 8, 6, dtype=torch.bool))
