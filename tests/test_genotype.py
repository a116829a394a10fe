"""Genotype format, validation, bundled cells and conversions."""

from __future__ import annotations

import copy
import json

import pytest

from pyronas.genotype import (
    FORMAT,
    Genotype,
    GenotypeError,
    canonical,
    describe,
    from_darts,
    from_nb201_string,
    genotype_from_dict,
    genotype_to_dict,
    list_bundled,
    load_genotype,
    save_genotype,
    to_darts_pairs,
    to_darts_top2,
    to_nb201_string,
    validate,
)

BUNDLED = ["BAYESNAS_0.005", "BAYESNAS_0.007", "BAYESNAS_0.01", "DARTS_V1", "DARTS_V2"]

# The DARTS repository's genotypes, as flat lists of 2 pairs per node.
DARTS_LISTS = {
    "DARTS_V1": (
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    ),
    "DARTS_V2": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    ),
}

# The released BayesNAS cells in the authors' notation: in0 = previous cell (DARTS input 1),
# in1 = the cell before (DARTS input 0), n_k = DARTS node k + 2.
BAYESNAS_TEXT = {
    "BAYESNAS_0.01": (
        "n0 <- in0: sep5; in1: sep5, max, avg, skip. n1 <- in0: max, skip. "
        "n2 <- in0: skip; in1: max. n3 <- n0: avg.",
        "n0 <- in0: skip; in1: sep3, avg, max, sep5. n1 <- in1: max, avg. "
        "n2 <- in1: sep3, avg. n3 <- n0: sep5.",
    ),
    "BAYESNAS_0.007": (
        "n0 <- in1: sep3, skip. n1 <- in0: sep3, skip. n2 <- in0: skip; in1: sep3. "
        "n3 <- in1: sep5, max, avg; n0: skip.",
        "n0 <- in0: sep5, avg; in1: avg, max, skip, sep5. n1 <- in1: avg; n0: skip. "
        "n2 <- in1: avg; n0: sep5, skip. n3 <- n0: avg, max.",
    ),
    "BAYESNAS_0.005": (
        "n0 <- in1: max, avg, skip. n1 <- in0: skip; in1: sep5. n2 <- in0: avg; in1: skip, max. "
        "n3 <- in1: sep5; n0: max.",
        "n0 <- in0: sep3, sep5, max; in1: avg, max. n1 <- n0: max, avg, skip. "
        "n2 <- in1: skip, max. n3 <- in1: sep3, max; n0: max.",
    ),
}
_ABBR = {"sep3": "sep_conv_3x3", "sep5": "sep_conv_5x5", "max": "max_pool_3x3",
         "avg": "avg_pool_3x3", "skip": "skip_connect"}
_NODE = {"in0": 1, "in1": 0, "n0": 2, "n1": 3, "n2": 4, "n3": 5}


def _authors_cell(text: str) -> set[tuple[int, str, int]]:
    """{(dst, op, src)} in DARTS numbering from the authors' notation."""
    out = set()
    for stmt in text.split("."):
        if not stmt.strip():
            continue
        dst, rhs = (s.strip() for s in stmt.split("<-"))
        for part in rhs.split(";"):
            src, ops = (s.strip() for s in part.split(":"))
            for op in ops.split(","):
                out.add((_NODE[dst], _ABBR[op.strip()], _NODE[src]))
    return out


def _triples(g: Genotype, cell_type: str) -> set[tuple[int, str, int]]:
    return {(g.num_inputs + j, op, src) for j, pairs in enumerate(g.cell(cell_type))
            for op, src in pairs}


# ------------------------------------------------------------------ bundled cells and JSON


def test_list_bundled():
    assert list_bundled() == BUNDLED


@pytest.mark.parametrize("name", BUNDLED)
def test_json_round_trip(name, tmp_path):
    g = load_genotype(name)
    path = save_genotype(g, tmp_path / "sub" / "g.json")
    assert load_genotype(path) == g
    assert load_genotype(str(path)) == g
    assert genotype_from_dict(genotype_to_dict(g)) == g
    d = json.loads(path.read_text())
    assert d["format"] == FORMAT and d["num_inputs"] == 2 and d["space"] == "darts"
    assert d["normal_concat"] == [2, 3, 4, 5] and d["reduce_concat"] == [2, 3, 4, 5]


@pytest.mark.parametrize("name", ["darts_v2", "Darts_V1", "bayesnas_0.01", "BayesNAS_0.005"])
def test_bundled_names_case_insensitive(name):
    assert load_genotype(name) == load_genotype(name.upper())


@pytest.mark.parametrize("name", ["DARTS_V1", "DARTS_V2"])
def test_darts_bundled_match_darts_lists(name):
    g = load_genotype(name)
    normal, reduce = DARTS_LISTS[name]
    assert to_darts_pairs(g, "normal") == normal
    assert to_darts_pairs(g, "reduce") == reduce
    assert from_darts(normal, [2, 3, 4, 5], reduce, [2, 3, 4, 5]) == g


@pytest.mark.parametrize("name", sorted(BAYESNAS_TEXT))
def test_bayesnas_bundled_match_released_cells(name):
    g = load_genotype(name)
    normal, reduce = BAYESNAS_TEXT[name]
    assert _triples(g, "normal") == _authors_cell(normal)
    assert _triples(g, "reduce") == _authors_cell(reduce)


def test_bayesnas_cells_have_multi_op_edges():
    g = load_genotype("BAYESNAS_0.01")
    # n0 <- in1: sep5, max, avg, skip  -> node 2 takes 4 ops from DARTS input 0
    assert sorted(op for op, src in g.normal[0] if src == 0) == sorted(
        ["sep_conv_5x5", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]
    )


def test_unknown_name_lists_bundled(tmp_path):
    with pytest.raises(GenotypeError, match="DARTS_V2") as err:
        load_genotype(tmp_path / "nope.json")
    assert "no genotype file" in str(err.value)


def test_python_source_is_not_evaluated(tmp_path):
    path = tmp_path / "g.py"
    path.write_text("__import__('os').system('touch PWNED')\n")
    with pytest.raises(GenotypeError, match="malformed JSON"):
        load_genotype(path)
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------ validation errors


def _good() -> dict:
    return genotype_to_dict(load_genotype("DARTS_V2"))


def _set(path, value):
    def mutate(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return d
    return mutate


def _delete(key):
    def mutate(d):
        del d[key]
        return d
    return mutate


BAD_DICTS = [
    (_set(["normal", 0, 0, 0], "conv_7x7"), "unknown op 'conv_7x7'"),
    (_set(["normal", 0, 0, 0], "none"), "unknown op 'none'"),
    (_set(["normal", 1, 0, 1], 7), "input index 7 out of range 0..5"),
    (_set(["normal", 1, 0, 1], -1), "input index -1 out of range"),
    (_set(["reduce", 1, 0, 1], 3), "reduce node 3 .*cycle"),
    (_set(["reduce", 2, 0, 1], 5), "reduce node 4 .*cycle"),
    (_set(["normal", 0], []), "normal node 2: node without input"),
    (_set(["normal", 1, 1], ["sep_conv_3x3", 0]), "normal node 3 .*duplicate pair"),
    (_set(["normal_concat"], [2, 3, 6]), "normal_concat: index 6 out of range 2..5"),
    (_set(["normal_concat"], [1, 2]), "normal_concat: index 1 out of range"),
    (_set(["normal_concat"], []), "normal_concat: empty"),
    (_set(["normal_concat"], [2, 2]), "normal_concat: repeated index"),
    (_set(["normal_concat"], "2345"), "normal_concat: expected a list"),
    (_set(["normal_concat"], [2.0, 3]), "normal_concat: expected integer"),
    (_set(["normal", 0, 0], ["sep_conv_3x3", "1"]), r"normal\[0\]\[0\]: expected an \[op, input\]"),
    (_set(["normal", 0, 0], ["sep_conv_3x3", True]), r"normal\[0\]\[0\]"),
    (_set(["normal", 0, 0], ["sep_conv_3x3", 1, 2]), r"normal\[0\]\[0\]"),
    (_set(["normal", 0], "sep_conv_3x3"), r"normal\[0\]: expected a list of \[op, input\]"),
    (_set(["normal"], {"a": 1}), "normal: expected a list of nodes"),
    (_set(["normal"], []), "normal: the cell has no intermediate node"),
    (_set(["reduce_concat"], None), "reduce and reduce_concat must be given together"),
    (_set(["num_inputs"], 0), "num_inputs must be a positive integer"),
    (_set(["num_inputs"], "2"), "num_inputs must be a positive integer"),
    (_set(["space"], 3), "space must be a string"),
    (_set(["format"], "darts"), "format 'darts' is not 'pyronas-genotype/1'"),
    (_set(["normal_conact"], [2]), r"unknown field\(s\) \['normal_conact'\]"),
    (_delete("format"), "missing field 'format'"),
    (_delete("normal"), "missing field 'normal'"),
    (_delete("normal_concat"), "missing field 'normal_concat'"),
]


@pytest.mark.parametrize("mutate, message", BAD_DICTS)
def test_malformed_dict_errors(mutate, message, tmp_path):
    bad = mutate(copy.deepcopy(_good()))
    with pytest.raises(GenotypeError, match=message):
        genotype_from_dict(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(GenotypeError, match="bad.json"):  # the file is named in the message
        load_genotype(path)


def test_unknown_op_lists_known_ops():
    with pytest.raises(GenotypeError) as err:
        Genotype([[("conv_7x7", 0)]], [2])
    for op in ("sep_conv_3x3", "skip_connect", "nor_conv_1x1"):
        assert op in str(err.value)


def test_ops_restricted_by_known_space():
    with pytest.raises(GenotypeError, match="of space 'nb201'"):
        Genotype([[("sep_conv_3x3", 0)]], [1], num_inputs=1, space="nb201")
    # an unknown space name only checks against all known ops
    assert Genotype([[("sep_conv_3x3", 0)]], [2], space="custom").space == "custom"


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ("", "malformed JSON"),
    ],
)
def test_malformed_json_text(text, message, tmp_path):
    path = tmp_path / "g.json"
    path.write_text(text)
    with pytest.raises(GenotypeError, match=message):
        load_genotype(path)


def test_unused_node_may_be_empty_but_used_one_may_not():
    g = Genotype([[("skip_connect", 0)], [], [("sep_conv_3x3", 2)]], [2, 4])
    assert g.normal[1] == ()
    validate(g)
    with pytest.raises(GenotypeError, match="node 3: node without input"):
        Genotype([[("skip_connect", 0)], [], [("sep_conv_3x3", 3)]], [2, 4])
    with pytest.raises(GenotypeError, match="node 3: node without input"):
        Genotype([[("skip_connect", 0)], [], [("sep_conv_3x3", 2)]], [2, 3, 4])


def test_genotype_is_frozen_and_hashable():
    g = load_genotype("DARTS_V2")
    with pytest.raises(AttributeError):
        g.normal = ()  # type: ignore[misc]
    assert hash(g) == hash(load_genotype("darts_v2"))


# ------------------------------------------------------------------ conversions


@pytest.mark.parametrize("name", ["DARTS_V1", "DARTS_V2"])
def test_top2_of_darts_cell_is_identity(name):
    g = load_genotype(name)
    assert to_darts_top2(g) == g


def test_top2_without_weights_first_op_first_two_inputs():
    g = load_genotype("BAYESNAS_0.007")
    top = to_darts_top2(g)
    for cell_type in g.cell_types:
        for pairs, new in zip(g.cell(cell_type), top.cell(cell_type), strict=True):
            first: dict[int, str] = {}
            for op, src in pairs:
                first.setdefault(src, op)
            expected = [(op, src) for src, op in first.items()][:2]
            assert list(new) == expected
    # reduce n0 <- in0 (DARTS 1): sep5, avg; in1 (DARTS 0): avg, max, skip, sep5
    assert top.reduce[0] == (("sep_conv_5x5", 1), ("avg_pool_3x3", 0))
    # nodes with one input keep one pair, so the DARTS flat list is refused
    assert top.normal[0] == (("sep_conv_3x3", 0),)
    with pytest.raises(GenotypeError, match="needs exactly 2 per node"):
        to_darts_pairs(top)


def test_top2_with_weights_ranks_inputs_and_ops():
    g = Genotype(
        [[("skip_connect", 0), ("max_pool_3x3", 1)],
         [("skip_connect", 0), ("sep_conv_3x3", 0), ("avg_pool_3x3", 1), ("sep_conv_5x5", 2)]],
        [2, 3],
    )
    w = {(2, 0, "skip_connect"): 0.1, (2, 1, "max_pool_3x3"): 0.9,
         (3, 0, "skip_connect"): 0.2, (3, 0, "sep_conv_3x3"): 0.8,
         (3, 1, "avg_pool_3x3"): 0.3, (3, 2, "sep_conv_5x5"): 0.5}
    top = to_darts_top2(g, w)
    assert top.normal == (
        (("max_pool_3x3", 1), ("skip_connect", 0)),
        (("sep_conv_3x3", 0), ("sep_conv_5x5", 2)),
    )
    del w[(3, 1, "avg_pool_3x3")]
    with pytest.raises(GenotypeError, match=r"no weight for normal pair \(3, 1, 'avg_pool_3x3'\)"):
        to_darts_top2(g, w)


def test_from_darts_rejects_odd_lists():
    with pytest.raises(GenotypeError, match="2 pairs per node, got 3"):
        from_darts([("skip_connect", 0)] * 3, [2])


NB201_STRINGS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_1x1~2|",
    "|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|",
    "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|none~0|skip_connect~1|avg_pool_3x3~2|",
]


@pytest.mark.parametrize("arch", NB201_STRINGS)
def test_nb201_round_trip(arch):
    g = from_nb201_string(arch)
    assert g.num_inputs == 1 and g.reduce is None and g.normal_concat == (3,)
    assert g.space == "nb201"
    assert to_nb201_string(g) == arch
    assert from_nb201_string(to_nb201_string(g)) == g


def test_nb201_parse_content():
    g = from_nb201_string(NB201_STRINGS[0])
    assert g.normal == (
        (("nor_conv_3x3", 0),),
        (("nor_conv_3x3", 0), ("avg_pool_3x3", 1)),
        (("skip_connect", 0), ("nor_conv_3x3", 1), ("skip_connect", 2)),
    )
    # node 1 is dead (only 'none' in), so its edge 1->2 is dropped; node 2 survives via 0->2
    g = from_nb201_string("|none~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|")
    assert g.normal == ((), (("skip_connect", 0),), (("skip_connect", 2),))


@pytest.mark.parametrize(
    "arch, message",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "expected 3"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "no path"),
        ("|none~0|+|none~1|none~0|+|none~0|none~1|skip_connect~2|", "should read 'op~0'"),
        ("|none~0|+|none~0|+|none~0|none~1|skip_connect~2|", "node 2 needs 2 edges"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|", r"not in \|..\|"),
    ],
)
def test_nb201_malformed(arch, message):
    with pytest.raises(GenotypeError, match=message):
        from_nb201_string(arch)


def test_nb201_string_refuses_multi_op_edges_and_other_cells():
    g = Genotype([[("skip_connect", 0), ("nor_conv_3x3", 0)], [], [("skip_connect", 1)]], [3],
                 num_inputs=1)
    with pytest.raises(GenotypeError, match="edge 0->1 has several ops"):
        to_nb201_string(g)
    with pytest.raises(GenotypeError, match="not an NB201 cell"):
        to_nb201_string(load_genotype("DARTS_V2"))
    g = Genotype([[("sep_conv_3x3", 0)], [], [("skip_connect", 1)]], [3], num_inputs=1)
    with pytest.raises(GenotypeError, match="not an NB201 op"):
        to_nb201_string(g)


def test_canonical_sorts_pairs():
    g = load_genotype("DARTS_V1")
    c = canonical(g)
    assert c.normal[0] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    assert c != g and canonical(c) == c
    assert {frozenset(n) for n in c.normal} == {frozenset(n) for n in g.normal}


def test_describe():
    text = describe(load_genotype("BAYESNAS_0.01"))
    lines = text.splitlines()
    assert lines[0] == "space: darts"
    assert lines[1] == "normal cell (output: concat of n0, n1, n2, n3):"
    # n3 <- n0: avg in the authors' notation
    assert "  n3 <- n0: avg_pool_3x3" in lines
    assert "  n1 <- c_{k-1}: max_pool_3x3, skip_connect" in lines
    assert sum(line.startswith("  n") for line in lines) == 8
    g = Genotype([[("skip_connect", 0)], [], [("sep_conv_3x3", 2)]], [2, 4])
    assert "  n1 <- (removed)" in describe(g).splitlines()
    g = from_nb201_string("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    assert describe(g).splitlines() == [
        "space: nb201",
        "normal cell (output: n2):",
        "  n0 <- in: nor_conv_3x3",
        "  n1 <- (removed)",
        "  n2 <- in: skip_connect; n0: nor_conv_1x1",
    ]


# Each module of the package imports only the modules listed before it (no import cycle; an
# import for type hints alone, under ``if TYPE_CHECKING``, is not an import at run time).
LAYERS = ["nodes", "nb201_string", "cell", "io", "convert", "derivation", "summary"]


@pytest.mark.parametrize("module", LAYERS)
def test_package_modules_import_only_lower_layers(module):
    import ast
    import importlib

    path = importlib.import_module(f"pyronas.genotype.{module}").__file__
    tree = ast.parse(open(path, encoding="utf-8").read())
    imported = {
        node.module.rsplit(".", 1)[1]
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        and node.module is not None
        and node.module.startswith("pyronas.genotype.")
    }
    assert imported <= set(LAYERS[: LAYERS.index(module)]), imported


def test_public_names_come_from_the_package():
    import pyronas.genotype as package

    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert not missing
    assert not hasattr(package, "prune")  # renamed: apply_connectivity_rule
