"""Cell diagrams: graphviz and matplotlib paths, valid PNG/SVG output."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pyronas import diagram
from pyronas.diagram import draw_genotype, show_genotype, to_dot
from pyronas.genotype import (
    GenotypeError,
    describe,
    from_nb201_string,
    load_genotype,
    save_genotype,
)

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
        text = to_dot(g, cell_type)
        op_edges = [line for line in text.splitlines() if "->" in line and "label=" in line]
        assert len(op_edges) == sum(len(p) for p in g.cell(cell_type))
        assert text.count("-> out") == len(g.concat(cell_type))
    # reduce n0 <- in1 (DARTS 0): avg, max, skip, sep5 -> four edges n0 -> n2
    assert to_dot(g, "reduce").count("n0 -> n2 ") == 4


def test_nb201_single_cell_and_removed_nodes(no_dot, tmp_path):
    g = from_nb201_string("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    assert g.normal[1] == ()
    paths = draw_genotype(g, tmp_path / "nb", fmt="svg")
    assert [p.name for p in paths] == ["nb_normal.svg"]
    assert_valid(paths[0], "svg")
    assert "n2 [" not in to_dot(g, "normal")  # the removed node is not drawn


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
