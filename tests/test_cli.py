"""Smoke runs of the ``pyronas`` command line and the experiment scripts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyronas.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    for command in (["search"], ["retrain"], ["model-info"], ["genotype", "show"], ["analyze"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "usage:" in out and "--" in out


def test_model_info_prints_published_size(capsys):
    assert main(["model-info", "--genotype", "DARTS_V2", "--dataset", "cifar10"]) == 0
    out = capsys.readouterr().out
    assert "3.349 M (auxiliary head excluded)" in out
    assert "mult-adds" in out and "normal cell" in out


def test_genotype_list_and_show(tmp_path, capsys):
    assert main(["genotype", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"DARTS_V1", "DARTS_V2"} <= set(names) and len(names) >= 5
    assert main(["genotype", "show", "BAYESNAS_0.01", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "normal cell" in out
    assert sorted(p.name for p in tmp_path.glob("*.png"))


def test_bad_genotype_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "pyronas-genotype/1", "num_inputs": 2,
                               "normal": [[["conv_9x9", 0]]], "normal_concat": [2]}))
    assert main(["genotype", "show", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pyronas: error:" in err and "conv_9x9" in err


def test_analyze_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    assert "not a search run folder" in capsys.readouterr().err


def test_search_rejects_unknown_space(capsys):
    assert main(["search", "--space", "nasnet", "--out", "unused"]) == 2
    assert "nasnet" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "pyronas.cli", "--help"], capture_output=True,
                         text=True, check=True)
    assert "search" in out.stdout and "retrain" in out.stdout


def test_compare_script_smoke(tmp_path):
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        import compare_fashion_mnist as compare
    finally:
        sys.path.pop(0)
    md = tmp_path / "results.md"
    md.write_text("# Results\n")
    code = compare.main(["--smoke", "--dataset", "digits", "--seeds", "0", "--random-cells", "1",
                         "--out", str(tmp_path / "cmp"), "--results-md", str(md)])
    assert code == 0
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert len(summary["found"]) == 1 and 0 <= summary["found"][0] <= 100
    assert "<!-- fashion-compare:start -->" in md.read_text()


def test_random_cell_has_the_same_size():
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        import compare_fashion_mnist as compare
    finally:
        sys.path.pop(0)
    from pyronas.genotype import load_genotype

    found = load_genotype("BAYESNAS_0.01")
    cell = compare.random_cell_like(found, "darts", seed=3)
    assert cell != found
    # the connectivity rule may only remove ops, never add
    assert sum(len(p) for p in cell.normal) <= sum(len(p) for p in found.normal)
