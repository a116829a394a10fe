"""Proxyless search: tree-cell semantics, the PyramidNet backbone, supernet == evaluation net,
the tree dependency of the prior, derivation rules, and a smoke search + retrain."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_script
from torch import nn

from pyronas.genotype.nodes import GenotypeError
from pyronas.models import hard
from pyronas.proxyless.pyramidnet import (
    ProxylessSuperNet,
    PyramidTreeNet,
    blocks_per_stage,
    pyramid_widths,
)
from pyronas.proxyless.space import derive_tree, proxyless_space, template_edges
from pyronas.proxyless.tree import (
    SEARCH_OP,
    TREECELL_A,
    TreeBranch,
    TreeGenotype,
    TreeNode,
    load_tree_genotype,
    proxyless_template,
    searchable_paths,
    split_sizes,
    tree_genotype_from_dict,
    tree_genotype_to_dict,
)
from pyronas.proxyless.tree_cell import MixedTreeEdge, TreeCell
from pyronas.proxyless.tree_ops import CANDIDATE_OPS

# ------------------------------------------------------------------ tree-node semantics


def _cell(node: TreeNode, C: int) -> TreeCell:
    return TreeCell(node, C, C).double().eval()


def test_copy_add_sums_the_branches():
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    node = TreeNode((TreeBranch("identity"), TreeBranch("identity"), TreeBranch("max_pool_3x3")))
    expected = 2 * x + nn.functional.max_pool2d(x, 3, 1, 1)
    torch.testing.assert_close(_cell(node, 4)(x), expected, rtol=0, atol=0)


def test_split_concat_works_on_channel_slices():
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    node = TreeNode((TreeBranch("identity"), TreeBranch("avg_pool_3x3")), split="split",
                    merge="concat")
    assert split_sizes(5, 2) == [3, 2]
    avg = nn.functional.avg_pool2d(x[:, 3:], 3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(_cell(node, 5)(x), torch.cat([x[:, :3], avg], 1), rtol=0,
                               atol=0)


def test_split_add_gives_each_branch_its_slice():
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    node = TreeNode((TreeBranch("identity"), TreeBranch("identity")), split="split")
    out = TreeCell(node, 4, 2).double()(x)
    torch.testing.assert_close(out, x[:, :2] + x[:, 2:], rtol=0, atol=0)


def test_branch_bn_is_a_residual_around_the_child():
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    child = TreeNode((TreeBranch("max_pool_3x3"),))
    node = TreeNode((TreeBranch("identity", child),), branch_bn=True)
    cell = _cell(node, 2)
    bn = cell.bns[0]
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.weight.copy_(torch.tensor([2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2]))
    pooled = nn.functional.max_pool2d(x, 3, 1, 1)
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64).view(1, 2, 1, 1)
    var = torch.tensor([4.0, 0.25], dtype=torch.float64).view(1, 2, 1, 1)
    w = torch.tensor([2.0, 3.0], dtype=torch.float64).view(1, 2, 1, 1)
    b = torch.tensor([0.1, -0.2], dtype=torch.float64).view(1, 2, 1, 1)
    expected = (pooled - mean) / torch.sqrt(var + bn.eps) * w + b + x
    torch.testing.assert_close(cell(x), expected)


def test_stride_sits_on_the_root_edges():
    cell = TreeCell(TREECELL_A, 8, 8, stride=2)
    assert cell(torch.randn(2, 8, 7, 7)).shape == (2, 8, 4, 4)


def test_drop_path_only_in_training_and_never_on_the_residual():
    torch.manual_seed(0)
    x = torch.randn(64, 2, 3, 3, dtype=torch.float64)
    child = TreeNode((TreeBranch("max_pool_3x3"),))
    cell = TreeCell(TreeNode((TreeBranch("identity", child),), branch_bn=True), 2, 2).double()
    cell.drop_prob = 0.5
    cell.eval()
    torch.testing.assert_close(cell(x), cell(x))
    cell.train()
    out = cell(x)
    # dropped samples keep exactly the residual (the identity edge's output)
    kept_residual = torch.isclose(out, x).flatten(1).all(1)
    assert 10 < int(kept_residual.sum()) < 54


def test_bad_trees_are_refused_with_a_reason():
    with pytest.raises(GenotypeError, match="unknown tree op"):
        TreeNode((TreeBranch("conv_9x9"),))
    with pytest.raises(GenotypeError, match="no child"):
        TreeNode((TreeBranch("group_conv_3x3", expand=2),))
    with pytest.raises(GenotypeError, match="merge"):
        TreeNode((TreeBranch("identity"),), merge="mul")
    with pytest.raises(GenotypeError, match=r"cells\[0\].branches\[0\]"):
        tree_genotype_from_dict({"format": "pyronas-tree/1",
                                 "cells": [{"branches": [{"op": "sep_3x3", "kernel": 3}]}]})
    with pytest.raises(ValueError, match="cannot downsample"):
        TreeCell(TreeNode((TreeBranch("identity"),)), 4, 4, stride=2)


def test_tree_genotype_json_round_trip(tmp_path):
    genotype = TreeGenotype((TREECELL_A, proxyless_template()), name="two")
    data = json.loads(json.dumps(tree_genotype_to_dict(genotype)))
    assert tree_genotype_from_dict(data) == genotype
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    assert load_tree_genotype(path) == genotype
    assert load_tree_genotype("TreeCell-A").cells == (TREECELL_A,)


# ------------------------------------------------------------------ backbone and counts


def test_pyramid_widths_of_the_paper_configuration():
    widths = pyramid_widths(110, 84)
    assert blocks_per_stage(110) == 18 and len(widths) == 54
    assert widths[0] == 18 and widths[-1] == 100
    assert all(w % 2 == 0 for w in widths) and widths == sorted(widths)
    with pytest.raises(ValueError, match="6 n \\+ 2"):
        blocks_per_stage(100)


def test_parameter_count_of_pyramidnet110_with_treecell_a():
    """Path-Level EAS reports 5.7 M for TreeCell-A in PyramidNet-110 (alpha 84)."""
    net = PyramidTreeNet(TreeGenotype((TREECELL_A,)), 110, 84)
    total = sum(p.numel() for p in net.parameters())
    cells = sum(p.numel() for b in net.blocks for p in b.cell.parameters())
    assert total == 5_736_930
    assert cells == 3_972_540
    assert total - cells == 1_764_390  # stem, 1x1 bottlenecks, batch norms, classifier
    assert net.classifier.in_features == 400


def test_network_shapes_and_downsampling():
    net = PyramidTreeNet(TreeGenotype((TREECELL_A,)), 14, 12, num_classes=7, in_channels=1)
    logits, aux = net(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 7) and aux is None
    supernet = ProxylessSuperNet(14, 12, num_classes=7, in_channels=1)
    edge, op = supernet.init_switches()
    assert edge.shape == (6, 12) and op.shape == (6, 12, 7)
    assert supernet(torch.randn(2, 1, 8, 8), edge, op).shape == (2, 7)
    with pytest.raises(ValueError, match=r"\(block, edge\)"):
        supernet(torch.randn(2, 1, 8, 8), edge[:1], op)


def test_the_paper_supernet_has_4536_op_switches():
    space = proxyless_space(54)
    edge_shape, op_shape = space.switch_shapes()
    assert edge_shape == (54, 12) and op_shape == (54, 12, 7)
    assert 54 * 12 * 7 == 4536


# ------------------------------------------------------------------ supernet == eval net


def _copy_cell(eval_cell: TreeCell, super_cell: TreeCell, choice: list[int],
               alive: list[bool]) -> None:
    """Copy the weights of the chosen ops (and everything fixed) into the evaluation cell,
    walking the template and the derived tree side by side."""

    def kept(cell: TreeCell, i: int) -> bool:
        edge = cell.edges[i]
        if isinstance(edge, MixedTreeEdge) and not alive[edge.index]:
            return False
        child = cell.children_[i]
        if isinstance(child, TreeCell):
            return any(kept(child, j) for j in range(len(child.edges))) or not isinstance(
                edge, MixedTreeEdge)
        return True

    def walk(e: TreeCell, s: TreeCell) -> None:
        j = 0
        for i, edge in enumerate(s.edges):
            if not kept(s, i):
                continue
            if isinstance(edge, MixedTreeEdge):
                e.edges[j].load_state_dict(edge.ops[choice[edge.index]].state_dict())
            else:
                e.edges[j].load_state_dict(edge.state_dict())
            if isinstance(e.children_[j], TreeCell):
                e.bns[j].load_state_dict(s.bns[i].state_dict())
                walk(e.children_[j], s.children_[i])
            j += 1
        assert j == len(e.edges)

    walk(eval_cell, super_cell)


def _randomise_bn(net: nn.Module, gen: torch.Generator) -> None:
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                if m.affine:
                    m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))


@pytest.mark.parametrize("dead", [(), (1, 8), (0, 9, 10, 11)])
def test_one_hot_supernet_equals_the_derived_network(dead):
    """Edge-switch 0 on the ``dead`` edges of every block (none; leaves; a top edge whose
    leaves live, and a top edge with its leaves), one op per live edge, the dead ops left out
    (``set_alive``): the supernet and the network of the derived trees agree."""
    gen = torch.Generator().manual_seed(3)
    supernet = ProxylessSuperNet(8, 8, num_classes=5, in_channels=2).double()
    _randomise_bn(supernet, gen)
    supernet.eval()
    blocks, edges, ops = supernet.switch_shapes()[1]
    choice = torch.randint(0, ops, (blocks, edges), generator=gen)
    edge = torch.ones(blocks, edges, dtype=torch.float64)
    edge[:, list(dead)] = 0.0
    op = nn.functional.one_hot(choice, ops).double()
    alive = op.bool() & edge.bool().unsqueeze(-1)
    supernet.set_alive(alive)  # as the search does once the switches are pruned
    trees = tuple(derive_tree(supernet.template, alive[b], op[b]) for b in range(blocks))
    net = PyramidTreeNet(TreeGenotype(trees), 8, 8, num_classes=5, in_channels=2).double()
    own = {k: v for k, v in supernet.state_dict().items() if ".cell." not in k}
    net.load_state_dict(own, strict=False)
    for b in range(blocks):
        _copy_cell(net.blocks[b].cell, supernet.blocks[b].cell, choice[b].tolist(),
                   edge[b].bool().tolist())
    net.eval()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(net(x)[0], supernet(x, edge, op))


# ------------------------------------------------------------------ space and derivation


def test_template_edges_form_the_tree_dependency():
    edges, num_inputs = template_edges(proxyless_template())
    assert num_inputs == 2 and len(edges) == 12
    parents = {dst: src for src, dst in edges}
    # per half: 2 edges out of the input, each the parent of 2 leaf edges
    for half in (0, 1):
        tops = [dst for src, dst in edges if src == half]
        assert len(tops) == 2
        for top in tops:
            assert sorted(dst for dst, src in parents.items() if src == top).__len__() == 2


def test_hard_prior_gates_the_leaves_by_their_parent_edge():
    space = proxyless_space(2)
    edge = torch.ones(2, 12, dtype=torch.float64)
    op = torch.ones(2, 12, 7, dtype=torch.float64)
    edge[0, 0] = 0.0  # block 0, the first top edge of half 0
    eff_edge, eff_op = hard.apply_hierarchy(edge, op, tuple(space.edges[t] for t in
                                                           space.cell_types), space.num_inputs)
    # edge order: top edge 0 with leaves 1, 2; top edge 3 with leaves 4, 5; then half 1
    assert float(eff_edge[0, 1]) == 0.0 and float(eff_edge[0, 2]) == 0.0
    assert float(eff_edge[0, 4]) > 0.0 and bool((eff_op[1] > 0).all())


def test_derivation_removes_dead_parents_and_childless_edges():
    template = proxyless_template()
    alive = torch.ones(12, 7, dtype=torch.bool)
    scores = torch.zeros(12, 7)
    scores[:, 3] = 1.0  # sep_7x7 everywhere
    alive[0] = False  # top edge 0 of half 0 dead: its two leaves go with it
    alive[4] = alive[5] = False  # both leaves of top edge 3: it feeds nothing, removed
    tree = derive_tree(template, alive, scores)
    halves = tree.branches[0].child
    assert halves is not None
    assert halves.branches[0].child is None  # half 0 lost its subtree: a bare identity
    sub1 = halves.branches[1].child
    assert sub1 is not None and len(sub1.branches) == 2
    assert all(b.op == "sep_7x7" for b in sub1.branches)
    assert next(searchable_paths(tree), None) is None
    assert SEARCH_OP not in json.dumps(tree_genotype_to_dict(TreeGenotype((tree,))))


def test_derivation_keeps_the_strongest_live_op():
    alive = torch.zeros(12, 7, dtype=torch.bool)
    alive[:, [1, 2]] = True
    scores = torch.rand(12, 7)
    scores[:, 0] = 10.0  # dead op with the largest score is ignored
    scores[:, 2] = scores[:, 1] + 0.5
    tree = derive_tree(proxyless_template(), alive, scores)
    ops = []

    def walk(n: TreeNode) -> None:
        for b in n.branches:
            ops.append(b.op)
            if b.child is not None:
                walk(b.child)

    walk(tree)
    assert ops.count(CANDIDATE_OPS[2]) == 12


# ------------------------------------------------------------------ smoke search + retrain


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    from pyronas.proxyless.search import run_proxyless_search

    out = tmp_path_factory.mktemp("proxyless") / "run"
    return run_proxyless_search(
        {"dataset": "digits", "depth": 8, "alpha": 8, "t_max": 2, "batch_size": 32,
         "max_batches": 3, "curvature_batches": 1, "device": "cpu", "threshold": 1e-3}, out)


def test_smoke_search_writes_a_run_folder(search_run):
    out = search_run.out
    for name in ("config.yaml", "metrics.csv", "posterior.pt", "posterior.nc", "genotype.json",
                 "trees.txt", "metrics.json"):
        assert (out / name).is_file(), name
    genotype = load_tree_genotype(out / "genotype.json")
    assert len(genotype.cells) == 3
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("iteration,log_evidence")
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["switches"] == 3 * 12 + 3 * 12 * 7
    with pytest.raises(FileExistsError, match="finished search"):
        from pyronas.proxyless.search import run_proxyless_search

        run_proxyless_search({"dataset": "digits", "depth": 8}, out)


def test_smoke_retrain_of_the_found_trees(search_run, tmp_path):
    from pyronas.train import retrain

    metrics = retrain({"genotype": str(search_run.out / "genotype.json"),
                       "network": "pyramidnet", "pyramid_depth": 8, "pyramid_alpha": 8,
                       "dataset": "digits", "epochs": 1, "batch_size": 64, "device": "cpu",
                       "max_steps_per_epoch": 3, "max_eval_batches": 2, "auxiliary": False,
                       "progress": False}, tmp_path / "retrain")
    assert 0.0 <= metrics["test_error"] <= 100.0
    assert (tmp_path / "retrain" / "metrics.json").is_file()


def test_retrain_names_the_network_a_genotype_needs(tmp_path):
    from pyronas.train import retrain

    with pytest.raises(GenotypeError, match="network: pyramidnet"):
        retrain({"genotype": "TreeCell-A", "dataset": "digits", "epochs": 1, "device": "cpu"},
                tmp_path / "a")
    with pytest.raises(GenotypeError, match="tree genotype"):
        retrain({"genotype": "DARTS_V2", "network": "pyramidnet", "pyramid_depth": 8,
                 "dataset": "digits", "epochs": 1, "device": "cpu"}, tmp_path / "b")


def test_cli_genotype_show_draws_a_block(tmp_path, capsys):
    from pyronas.cli import main

    assert main(["genotype", "show", "TreeCell-A", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "conv_1x1 -> node concat/split" in out
    assert (tmp_path / "TreeCell-A_block0.png").is_file()


def test_experiment_script_smoke(tmp_path):

    module = load_script("experiments/proxyless_cifar10.py")
    search, train = module.configs(module.parse_args([]))
    assert (search["batch_size"], search["lr"], search["depth"]) == (32, 0.1, 110)
    assert (train["batch_size"], train["lr"], train["lr_schedule"]) == (64, 0.1, "cosine")
    assert train["cutout"] > 0 and train["drop_path_prob"] > 0
    summary = module.main(["--smoke", "--out", str(tmp_path / "exp")])
    assert [r["name"] for r in summary["retrain"]] == ["BayesNAS proxyless", "TreeCell-A"]
    table = (tmp_path / "exp" / "results.md").read_text()
    assert "TreeCell-A (Path-Level EAS)" in table and "| 3.14 |" in table


def test_cli_proxyless_search_and_its_bad_input(tmp_path, capsys):
    from pyronas.cli import main

    out = tmp_path / "px"
    code = main(["proxyless", "--dataset", "digits", "--depth", "8", "--alpha", "8",
                 "--t-max", "1", "--max-batches", "2", "--curvature-batches", "1",
                 "--fractions", "0.8", "0.1", "0.1", "--device", "cpu", "--out", str(out),
                 "--prior-option", "lambda_op=0.005"])
    assert code == 0
    assert "lambda_op: 0.005" in (out / "config.yaml").read_text()
    assert len(load_tree_genotype(out / "genotype.json").cells) == 3
    assert "run folder" in capsys.readouterr().out
    assert main(["proxyless", "--dataset", "digits", "--depth", "9", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "6 n + 2" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
