"""Deriving genotypes from pruning masks with the connectivity rule."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyronas.genotype import (
    Genotype,
    GenotypeError,
    alive_mask,
    apply_connectivity_rule,
    canonical,
    derive,
    from_nb201_string,
    load_genotype,
    parse_nb201_string,
    to_nb201_string,
    validate,
)
from pyronas.space import get_space

DARTS = get_space("darts")
NB201 = get_space("nb201")
B8 = get_space("bayesnas8")


def masks(space, live: dict[str, list[tuple[int, int, str]]]):
    """Masks keeping exactly the listed ``(src, dst, op)`` per cell type."""
    edge_shape, op_shape = space.switch_shapes()
    alive_edge = torch.zeros(edge_shape, dtype=torch.bool)
    alive_op = torch.zeros(op_shape, dtype=torch.bool)
    for t, cell_type in enumerate(space.cell_types):
        for src, dst, op in live.get(cell_type, []):
            e = space.edges[cell_type].index((src, dst))
            alive_edge[t, e] = True
            alive_op[t, e, space.ops.index(op)] = True
    return alive_edge, alive_op


REDUCE_OK = [(0, 2, "max_pool_3x3"), (1, 3, "skip_connect")]


def test_all_kept_gives_full_cell():
    edge_shape, op_shape = DARTS.switch_shapes()
    g = derive(DARTS, torch.ones(edge_shape, dtype=torch.bool), torch.ones(op_shape, dtype=bool))
    assert g.normal_concat == (2, 3, 4, 5) and g.space == "darts"
    assert [len(n) for n in g.normal] == [2 * 7, 3 * 7, 4 * 7, 5 * 7]


def test_edge_out_of_dead_node_is_removed():
    live = {
        "normal": [
            (0, 3, "sep_conv_3x3"),  # in0 -> n1
            (3, 4, "skip_connect"),  # n1 -> n2
            (2, 4, "max_pool_3x3"),  # n0 -> n2, but n0 has no input: removed
            (2, 5, "avg_pool_3x3"),  # n0 -> n3: removed, and n3 then dies
        ],
        "reduce": REDUCE_OK,
    }
    g = derive(DARTS, *masks(DARTS, live))
    assert g.normal == ((), (("sep_conv_3x3", 0),), (("skip_connect", 3),), ())
    assert g.normal_concat == (3, 4)
    assert g.reduce == ((("max_pool_3x3", 0),), (("skip_connect", 1),), (), ())
    assert g.reduce_concat == (2, 3)


def test_dead_nodes_cascade():
    # n0 has no input, so n0 -> n1 -> n2 -> n3 dies link by link; only in1 -> n3 keeps n3
    live = {
        "normal": [
            (2, 3, "sep_conv_3x3"),
            (3, 4, "sep_conv_5x5"),
            (4, 5, "skip_connect"),
            (1, 5, "dil_conv_3x3"),
        ],
        "reduce": REDUCE_OK,
    }
    g = derive(DARTS, *masks(DARTS, live))
    assert g.normal == ((), (), (), (("dil_conv_3x3", 1),))
    assert g.normal_concat == (5,)


def test_op_needs_its_edge_and_edge_needs_an_op():
    alive_edge, alive_op = masks(
        DARTS, {"normal": [(0, 2, "skip_connect"), (1, 2, "sep_conv_3x3")], "reduce": REDUCE_OK}
    )
    alive_edge[0, DARTS.edges["normal"].index((1, 2))] = False  # op kept, edge pruned
    e = DARTS.edges["normal"].index((1, 3))
    alive_edge[0, e] = True  # edge kept, no op kept
    g = derive(DARTS, alive_edge, alive_op)
    assert g.normal == ((("skip_connect", 0),), (), (), ())


def test_multi_op_edges_sorted_canonically():
    live = {
        "normal": [(1, 2, "skip_connect"), (1, 2, "sep_conv_5x5"), (0, 2, "avg_pool_3x3")],
        "reduce": REDUCE_OK,
    }
    g = derive(DARTS, *masks(DARTS, live))
    assert g.normal[0] == (("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("skip_connect", 1))
    assert canonical(g) == g


def test_nb201_nodes_not_reaching_output_are_removed():
    live = {
        "normal": [
            (0, 1, "nor_conv_3x3"),  # node 1: live input, but feeds nothing
            (0, 2, "nor_conv_1x1"),  # node 2: feeds nothing either
            (1, 2, "skip_connect"),
            (0, 3, "skip_connect"),
        ]
    }
    g = derive(NB201, *masks(NB201, live))
    assert g.reduce is None and g.reduce_concat is None and g.num_inputs == 1
    assert g.normal == ((), (), (("skip_connect", 0),))
    assert g.normal_concat == (3,)
    assert to_nb201_string(g) == "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"


def test_nb201_chain_kept():
    live = {"normal": [(0, 1, "nor_conv_3x3"), (1, 2, "nor_conv_1x1"), (2, 3, "avg_pool_3x3")]}
    g = derive(NB201, *masks(NB201, live))
    assert to_nb201_string(g) == (
        "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|avg_pool_3x3~2|"
    )


def test_nothing_survives_raises_without_scores():
    with pytest.raises(GenotypeError, match="normal cell: no intermediate node keeps a live input"):
        derive(DARTS, *masks(DARTS, {"normal": [(2, 3, "skip_connect")], "reduce": REDUCE_OK}))
    with pytest.raises(GenotypeError, match="normal cell"):  # nb201: nothing reaches node 3
        derive(NB201, *masks(NB201, {"normal": [(0, 1, "skip_connect")]}))


def test_fallback_keeps_strongest_input_edge(caplog):
    scores = torch.zeros(DARTS.switch_shapes()[1], dtype=torch.float64)
    e_dead = DARTS.edges["normal"].index((2, 3))
    scores[0, e_dead, 0] = 9.0  # strongest overall, but not from an input
    e = DARTS.edges["normal"].index((1, 4))
    scores[0, e, DARTS.ops.index("dil_conv_5x5")] = 2.0
    scores[0, DARTS.edges["normal"].index((0, 2)), 0] = 1.0
    with caplog.at_level(logging.WARNING, logger="pyronas.genotype"):
        g = derive(DARTS, *masks(DARTS, {"normal": [], "reduce": REDUCE_OK}), scores)
    assert g.normal == ((), (), (("dil_conv_5x5", 1),), ())
    assert g.normal_concat == (4,)
    assert "strongest single edge c_{k-1} -> n2 with dil_conv_5x5" in caplog.text
    # scores do not change a cell that survives
    assert (
        g.reduce
        == derive(
            DARTS, *masks(DARTS, {"normal": [(0, 2, "skip_connect")], "reduce": REDUCE_OK})
        ).reduce
    )


def test_fallback_nb201_uses_edge_into_output():
    scores = np.zeros(NB201.switch_shapes()[1])
    scores[0, NB201.edges["normal"].index((0, 1)), 2] = 5.0
    scores[0, NB201.edges["normal"].index((0, 3)), 1] = 1.0
    g = derive(NB201, *masks(NB201, {}), scores)
    assert g.normal == ((), (), ((NB201.ops[1], 0),))


@pytest.mark.parametrize(
    "edge, op, message",
    [
        (np.ones((2, 13), bool), np.ones((2, 14, 7), bool), r"alive_edge: .*shape \(2, 14\)"),
        (np.ones((2, 14), bool), np.ones((2, 14, 8), bool), r"alive_op: .*shape \(2, 14, 7\)"),
        (np.full((2, 14), 0.7), np.ones((2, 14, 7), bool), "expected a boolean mask"),
        (np.full((2, 14), 2), np.ones((2, 14, 7), bool), "expected a boolean mask"),
    ],
)
def test_bad_masks(edge, op, message):
    with pytest.raises(GenotypeError, match=message):
        derive(DARTS, edge, op)


def test_integer_and_list_masks_accepted():
    alive_edge, alive_op = masks(B8, {"normal": [(1, 2, "skip_connect")], "reduce": REDUCE_OK[:1]})
    g = derive(B8, alive_edge.int().tolist(), alive_op.numpy().astype(np.int64))
    assert g == derive(B8, alive_edge, alive_op)


@pytest.mark.parametrize(
    "name", ["DARTS_V1", "DARTS_V2", "BAYESNAS_0.01", "BAYESNAS_0.007", "BAYESNAS_0.005"]
)
def test_live_mask_round_trip_bundled(name):
    g = load_genotype(name)
    alive_edge, alive_op = alive_mask(DARTS, g)
    assert alive_op.sum() == sum(len(n) for t in g.cell_types for n in g.cell(t))
    assert derive(DARTS, alive_edge, alive_op) == canonical(g)


def test_live_mask_errors():
    # the released 0.007 normal cell uses in1 -> n3 (DARTS edge 0 -> 5), absent from bayesnas8
    with pytest.raises(
        GenotypeError, match=r"normal: edge c_\{k-2\}->n3 is not in space 'bayesnas8'"
    ):
        alive_mask(B8, load_genotype("BAYESNAS_0.007"))
    alive_mask(B8, load_genotype("BAYESNAS_0.01"))  # fits the reduced space
    with pytest.raises(GenotypeError, match="inputs"):
        alive_mask(NB201, load_genotype("DARTS_V2"))
    g = Genotype([[("skip_connect", 0)], [("skip_connect", 1)]], [2, 3])
    with pytest.raises(GenotypeError, match="cells"):
        alive_mask(DARTS, g)
    g = Genotype(
        [[("skip_connect", 0)], [("skip_connect", 1)]],
        [2, 3],
        [[("skip_connect", 0)], [("skip_connect", 1)]],
        [2, 3],
    )
    with pytest.raises(GenotypeError, match="2 nodes"):
        alive_mask(DARTS, g)


def test_connectivity_rule_drops_nodes_that_miss_the_output():
    # node 1 is fed by the input but reaches no output: the benchmark string keeps it, the rule
    # empties its slot (nodes keep their numbering) and the cell equals the one read from the
    # string, whose dead edge is exactly that one
    arch = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"
    raw = Genotype(normal=parse_nb201_string(arch), normal_concat=(3,), num_inputs=1,
                   space="nb201")
    assert raw.normal[0] == (("nor_conv_3x3", 0),)
    ruled = apply_connectivity_rule(raw, concat_all=False)
    assert ruled.normal == ((), (("skip_connect", 0),), (("avg_pool_3x3", 2),))
    assert ruled.normal_concat == (3,) and ruled.nb201_string is None
    assert ruled == from_nb201_string(arch)
    # with concat_all every node fed by an input is part of the output: nothing to drop
    assert apply_connectivity_rule(raw, concat_all=True).normal == raw.normal


def test_connectivity_rule_recomputes_the_darts_concat():
    g = load_genotype("DARTS_V2")
    partial = Genotype(normal=g.normal, normal_concat=(2, 3), reduce=g.reduce,
                       reduce_concat=(5,), space="darts")
    ruled = apply_connectivity_rule(partial)
    assert ruled.normal_concat == (2, 3, 4, 5) and ruled.reduce_concat == (2, 3, 4, 5)
    assert ruled == g


# ------------------------------------------------------------------ property test


def brute_force(space, alive_edge, alive_op, t):
    """Expected node sets by graph search over the live edges (independent of derive)."""
    cell_type = space.cell_types[t]
    live = [
        (src, dst, space.ops[k])
        for e, (src, dst) in enumerate(space.edges[cell_type])
        for k in range(space.num_ops)
        if alive_edge[t, e] and alive_op[t, e, k]
    ]
    reach = set(range(space.num_inputs))
    frontier = list(reach)
    while frontier:
        node = frontier.pop()
        for src, dst, _ in live:
            if src == node and dst not in reach:
                reach.add(dst)
                frontier.append(dst)
    kept = reach - set(range(space.num_inputs))
    if not space.concat:
        last = space.num_total_nodes - 1
        to_out = {last}
        changed = True
        while changed:
            changed = False
            for src, dst, _ in live:
                if dst in to_out and src in kept and src not in to_out:
                    to_out.add(src)
                    changed = True
        kept = kept & to_out if last in kept else set()
    ins = set(range(space.num_inputs))
    pairs = {(dst, op, src) for src, dst, op in live if dst in kept and (src in ins or src in kept)}
    return kept, pairs


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(["bayesnas8", "darts", "nb201"]),
    seed=st.integers(0, 2**32 - 1),
    p_edge=st.floats(0.05, 1.0),
    p_op=st.floats(0.05, 1.0),
    with_scores=st.booleans(),
)
def test_property_derive(name, seed, p_edge, p_op, with_scores):
    space = get_space(name)
    rng = np.random.default_rng(seed)
    edge_shape, op_shape = space.switch_shapes()
    alive_edge = rng.random(edge_shape) < p_edge
    alive_op = rng.random(op_shape) < p_op
    scores = rng.random(op_shape) if with_scores else None
    expected = [brute_force(space, alive_edge, alive_op, t) for t in range(len(space.cell_types))]
    if not with_scores and any(not kept for kept, _ in expected):
        with pytest.raises(GenotypeError, match="no intermediate node keeps a live input"):
            derive(space, alive_edge, alive_op)
        return
    g = derive(space, alive_edge, alive_op, scores)
    validate(g)
    assert g.space == name and g.num_inputs == space.num_inputs
    last = space.num_total_nodes - 1
    for t, cell_type in enumerate(space.cell_types):
        nodes = g.cell(cell_type)
        kept = {space.num_inputs + j for j, pairs in enumerate(nodes) if pairs}
        triples = {
            (space.num_inputs + j, op, src) for j, pairs in enumerate(nodes) for op, src in pairs
        }
        exp_kept, exp_pairs = expected[t]
        if exp_kept:
            assert kept == exp_kept and triples == exp_pairs
        else:  # fallback: one op on one edge from a cell input
            assert len(triples) == 1
            ((dst, op, src),) = triples
            assert src < space.num_inputs and (space.concat or dst == last)
        # DAG, every kept node has a live input from an input or a kept node, reachable
        for dst, _, src in triples:
            assert src < dst and (src < space.num_inputs or src in kept)
        concat = set(g.concat(cell_type))
        assert concat == (kept if space.concat else {last})
        if not space.concat:
            assert last in kept
    if not space.concat:
        edges = [(src, j) for j, pairs in enumerate(g.normal) for _, src in pairs]
        if len(edges) == len(set(edges)):
            assert to_nb201_string(g).count("~") == 6
        else:
            with pytest.raises(GenotypeError, match="several ops"):
                to_nb201_string(g)
    assert derive(space, *alive_mask(space, g)) == g
    assert apply_connectivity_rule(g, concat_all=space.concat) == g  # a derived cell is connected


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["bayesnas8", "darts", "nb201"]),
    seed=st.integers(0, 2**32 - 1),
    p_edge=st.floats(0.05, 1.0),
    p_op=st.floats(0.05, 1.0),
)
def test_property_derived_genotypes_build_and_run(name, seed, p_edge, p_op):
    # whatever the connectivity rule removed, the evaluation cells build and run
    import torch

    from pyronas.evalnet import Cell

    space = get_space(name)
    rng = np.random.default_rng(seed)
    edge_shape, op_shape = space.switch_shapes()
    alive_edge = rng.random(edge_shape) < p_edge
    alive_op = rng.random(op_shape) < p_op
    g = derive(space, alive_edge, alive_op, rng.random(op_shape))
    s = torch.randn(1, 2, 4, 4)
    for reduction in ([False, True] if g.reduce is not None else [False]):
        cell = Cell(g, 2, 2, 2, reduction=reduction, reduction_prev=False,
                    num_inputs=space.num_inputs).eval()
        out = cell(s, s)
        assert out.shape[1] == 2 * len(g.concat("reduce" if reduction else "normal"))
