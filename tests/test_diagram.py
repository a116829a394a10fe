"""Cell diagrams: graphviz and matplotlib paths, valid PNG/SVG output, a legible layout."""

from __future__ import annotations

import itertools
import shutil
import subprocess

import numpy as np
import pytest

from pyronas import diagram
from pyronas.diagram import (
    cell_figure,
    cell_graph,
    draw_genotype,
    math_label,
    show_genotype,
    to_dot,
)
from pyronas.genotype import (
    Genotype,
    GenotypeError,
    describe,
    from_nb201_string,
    load_genotype,
    save_genotype,
)
from pyronas.space import get_space

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAS_DOT = shutil.which("dot") is not None


def assert_valid(path, fmt):
    data = path.read_bytes()
    assert len(data) > 500
    if fmt == "png":
        assert data.startswith(PNG_MAGIC)
    else:
        head = data[:400].decode("utf-8", "replace")
        assert head.lstrip().startswith("<?xml") or head.lstrip().startswith("<svg")
        assert b"<svg" in data and data.rstrip().endswith(b"</svg>")


@pytest.fixture
def no_dot(monkeypatch):
    """Force the matplotlib fallback and fail if anything tries to run a program."""
    monkeypatch.setattr(diagram.shutil, "which", lambda name: None)

    def forbidden(*args, **kwargs):
        raise AssertionError("subprocess must not run without dot")

    monkeypatch.setattr(diagram.subprocess, "run", forbidden)


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_matplotlib_fallback(no_dot, tmp_path, fmt):
    paths = draw_genotype(load_genotype("BAYESNAS_0.01"), tmp_path / "a" / "cell", fmt=fmt)
    assert paths == [tmp_path / "a" / f"cell_normal.{fmt}", tmp_path / "a" / f"cell_reduce.{fmt}"]
    for p in paths:
        assert_valid(p, fmt)


@pytest.mark.skipif(not HAS_DOT, reason="graphviz dot not installed")
@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_dot_path(monkeypatch, tmp_path, fmt):
    def no_matplotlib(*args, **kwargs):
        raise AssertionError("matplotlib used although dot is available")

    monkeypatch.setattr(diagram, "_draw_matplotlib", no_matplotlib)
    paths = draw_genotype(load_genotype("DARTS_V2"), tmp_path / f"cell.{fmt}", fmt=fmt)
    assert [p.name for p in paths] == [f"cell_normal.{fmt}", f"cell_reduce.{fmt}"]
    for p in paths:
        assert_valid(p, fmt)
    if fmt == "svg":  # dot puts the edge labels into the SVG text
        text = paths[0].read_text()
        assert "sep_conv_3x3" in text and "dil_conv_3x3" in text


def test_dot_failure_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(diagram.shutil, "which", lambda name: "/nonexistent/dot")

    def fail(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0])

    monkeypatch.setattr(diagram.subprocess, "run", fail)
    paths = draw_genotype(load_genotype("DARTS_V1"), tmp_path / "c", fmt="png")
    for p in paths:
        assert_valid(p, "png")
    with pytest.raises(subprocess.CalledProcessError):
        draw_genotype(load_genotype("DARTS_V1"), tmp_path / "d", engine="dot")


def test_engine_dot_without_dot(no_dot, tmp_path):
    with pytest.raises(RuntimeError, match="not on the PATH"):
        draw_genotype(load_genotype("DARTS_V1"), tmp_path / "c", engine="dot")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown diagram format 'jpg'"):
        draw_genotype(load_genotype("DARTS_V1"), tmp_path / "c", fmt="jpg")
    with pytest.raises(ValueError, match="unknown diagram engine"):
        draw_genotype(load_genotype("DARTS_V1"), tmp_path / "c", engine="tikz")


def test_dot_text_one_edge_per_op():
    g = load_genotype("BAYESNAS_0.007")
    for cell_type in g.cell_types:
        text = to_dot(g, cell_type, group=False)
        op_edges = [line for line in text.splitlines() if "->" in line and "label=" in line]
        assert len(op_edges) == sum(len(p) for p in g.cell(cell_type))
        assert text.count("-> out") == len(g.concat(cell_type))
    # reduce n0 <- in1 (DARTS 0): avg, max, skip, sep5 -> four edges n0 -> n2
    assert to_dot(g, "reduce", group=False).count("n0 -> n2 ") == 4
    # grouped (the default with four ops on one edge): one edge listing the four ops
    grouped = to_dot(g, "reduce")
    assert grouped.count("n0 -> n2 ") == 1
    line = next(x for x in grouped.splitlines() if "n0 -> n2 " in x)
    assert line.count("\\n") == 3
    # node names as HTML subscripts
    assert "label=<<I>c</I><SUB>k-1</SUB>>" in grouped


def test_math_label():
    assert math_label("c_{k-1}") == "$c_{k-1}$"
    assert math_label("n0") == "$n_{0}$"
    assert math_label("c_{k-2}->n0") == "$c_{k-2} \\rightarrow n_{0}$"
    assert math_label("in") == "in"


def dense_genotype(num_ops: int, seed: int = 0) -> Genotype:
    """A bayesnas8 genotype with ``num_ops`` ops per cell type, several on most edges."""
    space = get_space("bayesnas8")
    rng = np.random.default_rng(seed)
    cells = []
    for cell_type in space.cell_types:
        pairs = [(e, k) for e in range(space.num_edges) for k in range(space.num_ops)]
        chosen = sorted(rng.choice(len(pairs), size=num_ops, replace=False))
        nodes: list[list[tuple[str, int]]] = [[] for _ in range(space.num_nodes)]
        for i in chosen:
            e, k = pairs[i]
            src, dst = space.edges[cell_type][e]
            nodes[dst - space.num_inputs].append((space.ops[k], src))
        cells.append(nodes)
    concat = tuple(range(2, 2 + space.num_nodes))
    return Genotype(cells[0], concat, cells[1], concat, num_inputs=2, space="bayesnas8")


def _layout_problems(fig) -> list[str]:
    """Overlapping texts and artists outside the figure, from the renderer's extents."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    canvas = fig.bbox
    problems = []
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    artists = [*boxes, *[(repr(p), p.get_window_extent(renderer)) for p in fig.axes[0].patches]]
    for name, box in artists:
        if (box.x0 < canvas.x0 - 0.5 or box.y0 < canvas.y0 - 0.5 or box.x1 > canvas.x1 + 0.5
                or box.y1 > canvas.y1 + 0.5):
            problems.append(f"{name} outside the canvas")
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
        h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
        if w > 0.5 and h > 0.5:
            problems.append(f"{a!r} overlaps {b!r}")
    return problems


@pytest.mark.parametrize("group", [None, False])
def test_dense_cell_layout_is_legible(group):
    g = dense_genotype(40)
    for cell_type in g.cell_types:
        graph = cell_graph(g, cell_type)
        assert graph.max_ops_per_edge() > diagram.GROUP_ABOVE
        fig = cell_figure(graph, group)
        texts = [t.get_text() for t in fig.axes[0].texts]
        if group is None:  # grouped: one text line per op, drawn once per edge box
            assert sum(t in get_space("bayesnas8").ops for t in texts) == 40
        assert "$c_{k-1}$" in texts and "$n_{0}$" in texts and "$c_{k}$" in texts
        assert _layout_problems(fig) == []


def test_layout_check_catches_overlap():
    fig = cell_figure(cell_graph(load_genotype("DARTS_V2"), "normal"))
    assert _layout_problems(fig) == []
    ax = fig.axes[0]
    first = ax.texts[0]
    ax.text(*first.get_position(), "on top", fontsize=10)
    ax.text(ax.get_xlim()[1], 0, "outside", fontsize=10)
    problems = _layout_problems(fig)
    assert any("overlaps" in p and "on top" in p for p in problems)
    assert any("outside" in p for p in problems)


def test_nb201_single_cell_and_removed_nodes(no_dot, tmp_path):
    g = from_nb201_string("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    assert g.normal[1] == ()
    paths = draw_genotype(g, tmp_path / "nb", fmt="svg")
    assert [p.name for p in paths] == ["nb_normal.svg"]
    assert_valid(paths[0], "svg")
    assert "n2 [" not in to_dot(g, "normal")  # the removed node is not drawn


def test_show_genotype_writes_next_to_the_file(tmp_path, no_dot, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    a = save_genotype(load_genotype("DARTS_V2"), tmp_path / "runs" / "a" / "genotype.json")
    b = save_genotype(load_genotype("DARTS_V1"), tmp_path / "runs" / "b_cell.json")
    _, paths_a = show_genotype(a)
    _, paths_b = show_genotype(b)
    assert paths_a == [a.parent / "genotype_normal.png", a.parent / "genotype_reduce.png"]
    assert paths_b == [b.parent / "b_cell_normal.png", b.parent / "b_cell_reduce.png"]
    string = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
    other = "|skip_connect~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
    (p1,), (p2,) = show_genotype(string)[1], show_genotype(other)[1]
    assert p1 != p2 and p1.resolve().parent == p2.resolve().parent == work  # two files
    assert sorted(x.name for x in work.iterdir()) == sorted([p1.name, p2.name])


def test_genotype_show_command(tmp_path, no_dot, monkeypatch, capsys):
    from pyronas.cli import main

    monkeypatch.chdir(tmp_path)
    path = save_genotype(load_genotype("BAYESNAS_0.01"), tmp_path / "run" / "genotype.json")
    assert main(["genotype", "show", str(path)]) == 0
    assert (path.parent / "genotype_normal.png").is_file()
    assert main(["genotype", "show", str(path), "--out", str(tmp_path / "pics")]) == 0
    assert (tmp_path / "pics" / "genotype_reduce.png").is_file()
    assert f"wrote {tmp_path / 'pics' / 'genotype_reduce.png'}" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("use_file", [False, True])
def test_show_genotype(tmp_path, use_file, no_dot):
    name = "bayesnas_0.005"
    source = name
    if use_file:
        source = save_genotype(load_genotype(name), tmp_path / "found.json")
    text, paths = show_genotype(source, tmp_path / "out")
    assert text == describe(load_genotype(name))
    stem = "found" if use_file else name
    assert [p.name for p in paths] == [f"{stem}_normal.png", f"{stem}_reduce.png"]
    for p in paths:
        assert_valid(p, "png")


def test_show_genotype_invalid_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "pyronas-genotype/1", "normal": [[["conv9", 0]]], '
                   '"normal_concat": [2]}')
    with pytest.raises(GenotypeError, match="unknown op 'conv9'"):
        show_genotype(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
