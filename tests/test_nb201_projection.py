"""One-op-per-edge projection of found NAS-Bench-201 cells, and what an nb201 search writes."""

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
    canonical,
    derive,
    from_nb201_string,
    load_genotype,
    multi_op_edges,
    to_nb201_projection,
    to_nb201_string,
)
from pyronas.space import get_space

NB201 = get_space("nb201")
EDGES = NB201.edges["normal"]  # (0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)


def score_table(entries: dict[tuple[int, int, str], float]) -> np.ndarray:
    """An ``(edge, op)`` float64 score table, zero except the ``(src, dst, op)`` entries."""
    scores = np.zeros((NB201.num_edges, NB201.num_ops), dtype=np.float64)
    for (src, dst, op), value in entries.items():
        scores[EDGES.index((src, dst)), NB201.ops.index(op)] = value
    return scores


def tokens(arch: str) -> list[list[str]]:
    """Per node, the ``op~input`` tokens of a NAS-Bench-201 string."""
    return [part.strip("|").split("|") for part in arch.split("+")]


# node 1 <- in: skip, conv3 | node 2 <- in: conv1; n1: avg, skip | node 3 <- in: (none);
# n1: conv3, conv1; n2: skip
MULTI = Genotype(
    normal=[
        [("skip_connect", 0), ("nor_conv_3x3", 0)],
        [("nor_conv_1x1", 0), ("avg_pool_3x3", 1), ("skip_connect", 1)],
        [("nor_conv_3x3", 1), ("nor_conv_1x1", 1), ("skip_connect", 2)],
    ],
    normal_concat=[3],
    num_inputs=1,
    space="nb201",
)
MULTI_SCORES = score_table(
    {
        (0, 1, "skip_connect"): 0.2,
        (0, 1, "nor_conv_3x3"): 0.7,  # largest on 0->1
        (0, 1, "avg_pool_3x3"): 5.0,  # not kept by the cell: ignored
        (0, 2, "nor_conv_1x1"): 0.1,
        (1, 2, "avg_pool_3x3"): 0.9,  # largest on 1->2
        (1, 2, "skip_connect"): 0.4,
        (0, 3, "nor_conv_3x3"): 9.0,  # the cell keeps nothing on 0->3: stays none
        (1, 3, "nor_conv_3x3"): 0.3,
        (1, 3, "nor_conv_1x1"): 0.8,  # largest on 1->3, listed second
        (2, 3, "skip_connect"): 0.05,
    }
)


def test_multi_op_cell_projects_to_the_largest_score_per_edge_and_none_on_empty():
    projection = to_nb201_projection(MULTI, MULTI_SCORES)
    assert projection == Genotype(
        normal=[
            [("nor_conv_3x3", 0)],
            [("nor_conv_1x1", 0), ("avg_pool_3x3", 1)],
            [("nor_conv_1x1", 1), ("skip_connect", 2)],
        ],
        normal_concat=[3],
        num_inputs=1,
        space="nb201",
    )
    arch = to_nb201_string(projection)
    assert arch == (
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
    )
    assert from_nb201_string(arch) == projection
    assert multi_op_edges(MULTI) == {
        (0, 1): ("skip_connect", "nor_conv_3x3"),
        (1, 2): ("avg_pool_3x3", "skip_connect"),
        (1, 3): ("nor_conv_3x3", "nor_conv_1x1"),
    }
    assert multi_op_edges(projection) == {}
    with pytest.raises(GenotypeError, match="several ops"):
        to_nb201_string(MULTI)


def test_scores_may_be_a_tensor_and_ties_go_to_the_first_op_of_the_space():
    scores = torch.ones(NB201.num_edges, NB201.num_ops, dtype=torch.float64)
    projection = to_nb201_projection(MULTI, scores)
    # space order: skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
    assert to_nb201_string(projection) == (
        "|skip_connect~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
    )


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    p_edge=st.floats(0.05, 1.0),
    p_op=st.floats(0.05, 1.0),
)
def test_property_projection_is_a_benchmark_string_of_kept_ops(seed, p_edge, p_op):
    rng = np.random.default_rng(seed)
    edge_shape, op_shape = NB201.switch_shapes()
    alive_edge = rng.random(edge_shape) < p_edge
    alive_op = rng.random(op_shape) < p_op
    scores = rng.uniform(0.01, 1.0, size=op_shape).astype(np.float64)
    cell = derive(NB201, alive_edge, alive_op, scores)
    projection = to_nb201_projection(cell, scores[0])

    arch = to_nb201_string(projection)
    parsed = from_nb201_string(arch)
    assert parsed == projection
    assert to_nb201_string(parsed) == arch
    per_node = tokens(arch)
    assert [len(t) for t in per_node] == [1, 2, 3]
    assert multi_op_edges(projection) == {}
    for j, node_tokens in enumerate(per_node):
        dst = 1 + j
        for src, token in enumerate(node_tokens):
            op, _, idx = token.partition("~")
            assert idx == str(src)
            kept = [o for o, s in cell.normal[j] if s == src]
            if not kept:
                assert op == "none"
                continue
            assert op in kept
            e = EDGES.index((src, dst))
            best = max(scores[0, e, NB201.ops.index(o)] for o in kept)
            assert scores[0, e, NB201.ops.index(op)] == best


@pytest.mark.parametrize(
    "arch",
    [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
        "nor_conv_3x3~2|",
        "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|",
        "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|",
    ],
)
def test_one_op_per_edge_cell_projects_to_itself(arch):
    cell = from_nb201_string(arch)
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.01, 1.0, size=(NB201.num_edges, NB201.num_ops))
    projection = to_nb201_projection(cell, scores)
    assert projection == canonical(cell)
    assert to_nb201_string(projection) == arch


def test_bad_input_is_rejected():
    with pytest.raises(GenotypeError, match="shape"):
        to_nb201_projection(MULTI, np.zeros((1, NB201.num_edges, NB201.num_ops)))
    bad = MULTI_SCORES.copy()
    bad[0, 0] = np.nan
    with pytest.raises(GenotypeError, match="finite"):
        to_nb201_projection(MULTI, bad)
    with pytest.raises(GenotypeError, match="not an NB201 cell"):
        to_nb201_projection(load_genotype("DARTS_V2"), MULTI_SCORES)


# ---------------------------------------------------------------------------------------------
# What _save_projections writes for nb201
# ---------------------------------------------------------------------------------------------


def sites_for(scores: np.ndarray, cells: int = 1) -> dict[str, torch.Tensor]:
    """Switch sites whose ``|edge| * |op|`` is ``scores`` (edge switches 1, op signs mixed).

    With several ``cells`` (untied), cell 0 carries the scores and the others smaller ones.
    """
    op = torch.as_tensor(scores, dtype=torch.float64).repeat(cells, 1, 1)
    op[1:] *= 0.5
    op[:, ::2] *= -1.0  # the projection ranks by magnitude
    edge = -torch.ones(cells, NB201.num_edges, dtype=torch.float64)
    return {"op_switch": op, "edge_switch": edge}


@pytest.mark.parametrize("cells", [1, 5])
def test_save_projections_writes_the_projection_for_a_multi_op_cell(tmp_path, caplog, cells):
    from pyronas.genotype import load_genotype as load
    from pyronas.search import _save_projections

    with caplog.at_level(logging.INFO, logger="pyronas.search"):
        _save_projections(tmp_path, MULTI, NB201, sites_for(MULTI_SCORES, cells))
    expected = to_nb201_projection(MULTI, MULTI_SCORES)
    assert (tmp_path / "genotype_nb201.txt").read_text() == to_nb201_string(expected) + "\n"
    assert load(tmp_path / "genotype_nb201_projection.json") == expected
    assert "several ops survived" in caplog.text and "in->n0" in caplog.text
    assert not (tmp_path / "genotype_top2.json").exists()


def test_save_projections_takes_the_max_over_untied_cells(tmp_path):
    from pyronas.search import _save_projections

    sites = sites_for(MULTI_SCORES, cells=3)
    sites["op_switch"][2, EDGES.index((0, 1)), NB201.ops.index("skip_connect")] = 2.0
    _save_projections(tmp_path, MULTI, NB201, sites)
    text = (tmp_path / "genotype_nb201.txt").read_text()
    assert text.startswith("|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+")


def test_save_projections_writes_a_one_op_per_edge_cell_as_is(tmp_path):
    from pyronas.search import _save_projections

    arch = "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|"
    _save_projections(tmp_path, from_nb201_string(arch), NB201, sites_for(MULTI_SCORES))
    assert (tmp_path / "genotype_nb201.txt").read_text() == arch + "\n"
    assert not (tmp_path / "genotype_nb201_projection.json").exists()
