"""NAS-Bench-201: lossless benchmark strings, the lookup (bundled table and official files),
its errors, and where a user meets it (run folders, ``genotype show``, ``analyze``)."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from test_nb201_projection import MULTI, MULTI_SCORES, sites_for

from pyronas.cli import main
from pyronas.genotype import (
    Genotype,
    GenotypeError,
    canonical,
    describe,
    format_nb201_string,
    from_nb201_string,
    genotype_from_dict,
    genotype_to_dict,
    load_genotype,
    nb201_dead_edges,
    parse_nb201_string,
    save_genotype,
    to_nb201_projection,
    to_nb201_string,
)
from pyronas.nb201 import (
    BUNDLED_SOURCE,
    LOOKUP_FILE,
    NB201Entry,
    NB201Error,
    NB201Table,
    bundled_table,
    format_entry,
    load_benchmark,
    lookup,
    open_table,
    read_benchmark_dict,
    run_lookup,
    table_from_api,
)
from pyronas.space import get_space

NB201 = get_space("nb201")
REPO = Path(__file__).resolve().parents[1]
SHARED_CSV = REPO.parent / "shared" / "data" / "nb201_accuracy_12epoch.csv"

# Known rows of the table (index, string, CIFAR-10 test %, CIFAR-100 val %)
RESNET_LIKE = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
    "skip_connect~2|"
)
BEST = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
ALL_SKIP = (
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|"
    "skip_connect~2|"
)
DEAD = "|none~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|"
"""Node 1 has no input, so its edge 1->2 is dead; benchmark entry 1520."""
PRUNED_DEAD = "|none~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|"
"""DEAD after the connectivity rule: another benchmark entry, with another accuracy."""
EMPTY = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def table_rows() -> list[dict[str, str]]:
    """The rows of the bundled CSV."""
    from importlib import resources

    data = (resources.files("pyronas.nb201_data") / "nb201_accuracy_12epoch.csv").read_text()
    return list(csv.DictReader(io.StringIO(data)))


# ---------------------------------------------------------------------------------------------
# 1. lossless benchmark strings
# ---------------------------------------------------------------------------------------------


def test_every_benchmark_string_round_trips_exactly():
    rows = table_rows()
    assert len(rows) == 15625
    disconnected = with_dead_edges = 0
    for row in rows:
        arch = row["arch_str"]
        assert format_nb201_string(parse_nb201_string(arch)) == arch
        try:
            g = from_nb201_string(arch)
        except GenotypeError as err:
            assert "no path" in str(err)
            disconnected += 1
            assert nb201_dead_edges(arch) == tuple(
                (src, 1 + j, op) for j, pairs in enumerate(parse_nb201_string(arch))
                for op, src in pairs
            )
            continue
        assert to_nb201_string(g) == arch
        assert g.nb201_string == arch
        if nb201_dead_edges(arch):
            with_dead_edges += 1
            # the cell itself follows the connectivity rule: written from it, the string changes
            assert format_nb201_string(g.normal) != arch
    # the benchmark's library marks exactly 341 strings invalid; 5,840 have dead edges
    assert disconnected == 341
    assert with_dead_edges == 5840


def test_dead_edges_are_kept_in_the_string_not_in_the_cell():
    g = from_nb201_string(DEAD)
    assert g.normal == ((), (("skip_connect", 0),), (("skip_connect", 2),))
    assert nb201_dead_edges(g) == nb201_dead_edges(DEAD) == ((1, 2, "nor_conv_3x3"),)
    assert to_nb201_string(g) == DEAD
    # the same cell built by hand (or derived by a search) has no dead edges: its own string
    same = Genotype(g.normal, [3], num_inputs=1, space="nb201")
    assert same == g and hash(same) == hash(g)
    assert to_nb201_string(same) == PRUNED_DEAD
    assert nb201_dead_edges(same) == ()
    # both strings are benchmark entries, with different accuracies
    assert lookup(DEAD).index != lookup(PRUNED_DEAD).index
    assert lookup(DEAD).test_accuracy() != lookup(PRUNED_DEAD).test_accuracy()
    # JSON, canonical and the one-op-per-edge projection keep the string
    assert genotype_from_dict(genotype_to_dict(g)).nb201_string == DEAD
    assert canonical(g).nb201_string == DEAD
    scores = np.ones((NB201.num_edges, NB201.num_ops))
    assert to_nb201_string(to_nb201_projection(g, scores)) == DEAD
    assert "nb201_string" not in genotype_to_dict(same)
    assert "its dead edges n0->n1: nor_conv_3x3" in describe(g)


def test_a_string_must_describe_its_cell():
    g = from_nb201_string(DEAD)
    with pytest.raises(GenotypeError, match="does not describe this cell"):
        Genotype(g.normal, [3], num_inputs=1, space="nb201", nb201_string=RESNET_LIKE)
    with pytest.raises(GenotypeError, match="space 'nb201'"):
        Genotype(g.normal, [3], num_inputs=1, space=None, nb201_string=DEAD)
    with pytest.raises(GenotypeError, match="not written as the benchmark writes it"):
        Genotype(g.normal, [3], num_inputs=1, space="nb201", nb201_string=f" {DEAD}")
    data = genotype_to_dict(g)
    data["nb201_string"] = PRUNED_DEAD.replace("skip_connect~2", "nor_conv_1x1~2")
    with pytest.raises(GenotypeError, match="does not describe"):
        genotype_from_dict(data)


# ---------------------------------------------------------------------------------------------
# 2. the lookup in the bundled table
# ---------------------------------------------------------------------------------------------


def test_bundled_table_is_the_shared_table_with_its_notice():
    from importlib import resources

    folder = resources.files("pyronas.nb201_data")
    shipped = (folder / "nb201_accuracy_12epoch.csv").read_bytes()
    if SHARED_CSV.is_file():  # the provenance copy beside the repository
        assert shipped == SHARED_CSV.read_bytes()
    notice = (folder / "README.md").read_text()
    assert "12-epoch" in notice and "MIT License" in notice and "BayesWatch" in notice
    table = bundled_table()
    assert len(table) == 15625 and table.epochs == 12 and table.source == BUNDLED_SOURCE


@pytest.mark.parametrize(
    "arch, index, c10_test, c100_val",
    [
        (RESNET_LIKE, 1, 88.22, 57.8),
        (BEST, 5374, 89.16, 61.14),
        (ALL_SKIP, 1835, 36.84, 10.32),
        (DEAD, 1520, 78.72, 43.98),
    ],
)
def test_lookup_of_known_entries(arch, index, c10_test, c100_val):
    entry = lookup(arch)
    assert entry.index == index and entry.arch == arch and entry.epochs == 12
    assert entry.accuracy["cifar10"]["test"] == pytest.approx(c10_test)
    assert entry.accuracy["cifar100"]["val"] == pytest.approx(c100_val)
    assert set(entry.accuracy) == {"cifar10", "cifar100", "ImageNet16-120"}
    assert lookup(from_nb201_string(arch)) == entry  # a genotype looks up the same entry


def test_percentiles():
    table = bundled_table()
    best = lookup(BEST)
    assert best.percentile["cifar10"]["test"] == 100.0  # the best CIFAR-10 test cell
    # percentile = share of cells with at most this accuracy, by brute force
    entry = lookup(RESNET_LIKE)
    column = table.accuracy[:, 0, 1]
    expected = 100.0 * np.mean(column <= entry.accuracy["cifar10"]["test"])
    assert entry.percentile["cifar10"]["test"] == pytest.approx(expected)
    assert 99.0 < expected < 100.0
    skip = lookup(ALL_SKIP)  # the DARTS collapse: among the worst 3 %
    assert skip.percentile["cifar10"]["test"] < 3.0
    empty = lookup(EMPTY)  # a disconnected cell is in the benchmark, at chance level
    assert not empty.connected and empty.accuracy["cifar10"]["test"] == pytest.approx(10.0)
    assert lookup(RESNET_LIKE).connected


@pytest.mark.parametrize(
    "cell, message",
    [
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
        ("|none~0|+|none~0|none~1|", "expected 3 '\\+'-separated nodes, got 2"),
        ("|none~0|+|none~0|+|none~0|none~1|skip_connect~2|", "node 2 needs 2 edges, got 1"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|skip_connect~2|", "should read 'op~0'"),
        (MULTI, "several ops on edge"),
        (load_genotype("DARTS_V2"), "not an NB201 cell"),
        (Genotype([[("sep_conv_3x3", 0)], [], [("skip_connect", 1)]], [3], num_inputs=1),
         "not an NB201 op"),
        (42, "expected a Genotype or a NAS-Bench-201 string"),
    ],
)
def test_cells_without_an_entry_say_why(cell, message):
    with pytest.raises(NB201Error, match=message):
        lookup(cell)


def test_sources_and_epochs_are_checked(tmp_path, monkeypatch):
    _hide(monkeypatch, "nas_201_api", "nats_bench")
    with pytest.raises(NB201Error, match="12-epoch figures only"):
        open_table(None, epochs=200)
    with pytest.raises(NB201Error, match="epochs must be one of 12, 200"):
        open_table(None, epochs=50)
    with pytest.raises(FileNotFoundError, match="not found"):
        open_table(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_text("not a benchmark")
    with pytest.raises(NB201Error, match="not a torch-saved"):
        load_benchmark(tmp_path / "junk.pth")
    torch.save({"meta_archs": []}, tmp_path / "other.pth")
    with pytest.raises(NB201Error, match="no key"):
        load_benchmark(tmp_path / "other.pth")
    (tmp_path / "NATS-tss.pickle.pbz2").write_bytes(b"")
    with pytest.raises(NB201Error, match="nats_bench package"):
        load_benchmark(tmp_path / "NATS-tss.pickle.pbz2")
    with pytest.raises(NB201Error, match="line 3"):
        NB201Table.from_csv(
            "index,arch_str,cifar10-val,cifar10-test,cifar100-val,cifar100-test,imagenet-val,"
            f"imagenet-test\n0,{BEST},1,2,3,4,5,6\n1,|bad|,1,2,3,4,5,6\n", "t")


# ---------------------------------------------------------------------------------------------
# the official file layout, on a tiny file written in it
# ---------------------------------------------------------------------------------------------

TINY_ARCHS = [RESNET_LIKE, BEST, ALL_SKIP, DEAD]
"""meta_archs of the tiny file; the last one (index 3) has no results in it."""

SETS = {
    "cifar10-valid": ("x-valid", "ori-test"),
    "cifar10": ("ori-test",),
    "cifar100": ("x-valid", "x-test", "ori-test"),
    "ImageNet16-120": ("x-valid", "x-test", "ori-test"),
}
"""The evaluation sets the benchmark keeps per data set."""

SEEDS = {"cifar10-valid": (777, 888), "cifar10": (777,), "cifar100": (777,),
         "ImageNet16-120": (777,)}


def final_accuracy(index: int, epochs: int, dataset: str, eval_set: str, seed: int) -> float:
    """The made-up last-epoch accuracy of the tiny file (distinct per key)."""
    d = list(SETS).index(dataset)
    s = SETS[dataset].index(eval_set)
    return 10.0 * index + d + 0.1 * s + (0.5 if seed == 888 else 0.0) + (20.0 if epochs == 200
                                                                            else 0.0)


def _trial(index: int, arch: str, dataset: str, seed: int, epochs: int) -> dict:
    """The state dict of the benchmark's ResultsCount: one training run."""
    evals = {name: final_accuracy(index, epochs, dataset, name, seed) for name in SETS[dataset]}
    per_epoch = {f"{name}@{e}": acc - (epochs - 1 - e) for name, acc in evals.items()
                 for e in range(epochs)}  # earlier epochs score lower: the last one is read
    return {
        "name": dataset, "net_state_dict": None,
        "train_acc1es": {e: 50.0 for e in range(epochs)},
        "train_acc5es": {e: 80.0 for e in range(epochs)},
        "train_losses": {e: 1.0 for e in range(epochs)},
        "train_times": {e: 2.0 for e in range(epochs)},
        "arch_config": {"channel": 16, "num_cells": 5, "arch_str": arch, "class_num": 10},
        "params": np.float64(0.8), "flop": 113.9, "seed": seed, "epochs": epochs,
        "latency": [np.float64(0.01)],
        "eval_names": list(evals),
        "eval_acc1es": per_epoch,
        "eval_times": {key: 0.5 for key in per_epoch},
        "eval_losses": {key: 1.5 for key in per_epoch},
    }


def _arch_results(index: int, arch: str, epochs: int) -> dict:
    """The state dict of the benchmark's ArchResults of one cell at one schedule."""
    return {
        "arch_index": index, "arch_str": arch, "clear_net_done": True,
        "dataset_seed": {ds: list(seeds) for ds, seeds in SEEDS.items()},
        "all_results": {(ds, seed): _trial(index, arch, ds, seed, epochs)
                        for ds, seeds in SEEDS.items() for seed in seeds},
    }


def tiny_benchmark_dict() -> dict:
    """A NAS-Bench-201 v1_x file's dict: 4 strings, results for the first 3."""
    return {
        "meta_archs": list(TINY_ARCHS),
        "arch2infos": {i: {"less": _arch_results(i, arch, 12), "full": _arch_results(i, arch, 200)}
                       for i, arch in enumerate(TINY_ARCHS[:3])},
        "evaluated_indexes": [0, 1, 2],
    }


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nb201") / "NAS-Bench-201-tiny.pth"
    torch.save(tiny_benchmark_dict(), path)
    return path


def _hide(monkeypatch, *names):
    """Make the official packages unimportable, whether or not they are installed."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_official_layout_read_directly(tiny_file, monkeypatch):
    _hide(monkeypatch, "nas_201_api", "nats_bench")
    for epochs in (12, 200):
        table = open_table(tiny_file, epochs=epochs)
        assert len(table) == 4 and table.epochs == epochs and "nas_201_api" not in table.source
        entry = table.lookup(BEST)
        assert entry.index == 1 and entry.epochs == epochs and str(tiny_file) in entry.source
        # CIFAR-10 val: cifar10-valid x-valid, the mean over the two seeds
        assert entry.accuracy["cifar10"]["val"] == pytest.approx(
            np.mean([final_accuracy(1, epochs, "cifar10-valid", "x-valid", s) for s in (777, 888)])
        )
        # CIFAR-10 test: cifar10 ori-test (trained on train + valid), not cifar10-valid's
        assert entry.accuracy["cifar10"]["test"] == pytest.approx(
            final_accuracy(1, epochs, "cifar10", "ori-test", 777))
        for dataset in ("cifar100", "ImageNet16-120"):
            for split, eval_set in (("val", "x-valid"), ("test", "x-test")):
                assert entry.accuracy[dataset][split] == pytest.approx(
                    final_accuracy(1, epochs, dataset, eval_set, 777))
        # percentiles among the 3 cells with results: index 1 is the middle one
        assert entry.percentile["cifar10"]["test"] == pytest.approx(200 / 3)
        assert table.lookup(ALL_SKIP).percentile["cifar10"]["test"] == 100.0
        assert entry.num_cells == 3
    with pytest.raises(NB201Error, match="no results for it at 12 epochs"):
        open_table(tiny_file).lookup(DEAD)
    with pytest.raises(NB201Error, match="not in"):
        open_table(tiny_file).lookup(EMPTY)


def test_the_dict_layout_of_nats_bench_keys_works_too():
    data = tiny_benchmark_dict()
    for infos in data["arch2infos"].values():
        infos["12"], infos["200"] = infos.pop("less"), infos.pop("full")
    table = read_benchmark_dict(data, 12, "nats-like")
    assert table.lookup(RESNET_LIKE).accuracy["cifar10"]["test"] == pytest.approx(
        final_accuracy(0, 12, "cifar10", "ori-test", 777))


class FakeOfficialAPI:
    """What ``nas_201_api.NASBench201API`` offers the reader (meta_archs, get_more_info),
    computed from the dict the way the package does (mean over seeds at the last epoch)."""

    calls: list[tuple] = []

    def __init__(self, file_path_or_dict, verbose=True):
        self.data = file_path_or_dict
        self.meta_archs = self.data["meta_archs"]
        FakeOfficialAPI.calls.append(("init", type(file_path_or_dict).__name__, verbose))

    def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
        assert is_random is False and iepoch is None
        infos = self.data["arch2infos"].get(index)
        if infos is None:
            raise ValueError(f"Did not find {index} from arch2infos_dict.")
        results = infos["less" if hp == "12" else "full"]

        def mean(eval_set):
            values = [t["eval_acc1es"][f"{eval_set}@{t['epochs'] - 1}"]
                      for (ds, _), t in results["all_results"].items() if ds == dataset]
            return float(np.mean(values))

        if dataset == "cifar10-valid":
            return {"valid-accuracy": mean("x-valid"), "test-accuracy": mean("ori-test")}
        if dataset == "cifar10":
            return {"test-accuracy": mean("ori-test")}
        return {"valid-accuracy": mean("x-valid"), "test-accuracy": mean("x-test"),
                "valtest-accuracy": mean("ori-test")}


def test_the_official_package_is_used_when_importable(tiny_file, monkeypatch, caplog):
    module = types.ModuleType("nas_201_api")
    module.NASBench201API = FakeOfficialAPI
    monkeypatch.setitem(sys.modules, "nas_201_api", module)
    FakeOfficialAPI.calls.clear()
    table = load_benchmark(tiny_file, epochs=200)
    assert FakeOfficialAPI.calls == [("init", "dict", False)]  # the safely loaded dict
    assert "nas_201_api" in table.source
    _hide(monkeypatch, "nas_201_api")
    direct = load_benchmark(tiny_file, epochs=200)
    np.testing.assert_allclose(table.accuracy, direct.accuracy)

    class Broken(FakeOfficialAPI):
        def __init__(self, file_path_or_dict, verbose=True):
            raise RuntimeError("Weights only load failed")

    module.NASBench201API = Broken
    monkeypatch.setitem(sys.modules, "nas_201_api", module)
    with caplog.at_level(logging.WARNING, logger="pyronas.nb201"):
        fallback = load_benchmark(tiny_file, epochs=200)
    assert "reading the file directly" in caplog.text and "Weights only" in caplog.text
    assert "nas_201_api" not in fallback.source
    np.testing.assert_allclose(fallback.accuracy, direct.accuracy)


def test_the_real_official_package_reads_the_tiny_file(tiny_file):
    # runs where nas_201_api (pip install nas-bench-201) is installed; skipped otherwise
    api_module = pytest.importorskip("nas_201_api")
    data = torch.load(tiny_file, weights_only=False)
    for epochs in (12, 200):
        api = api_module.NASBench201API(data, verbose=False)
        table = table_from_api(api, epochs, "nas_201_api")
        np.testing.assert_allclose(table.accuracy,
                                   read_benchmark_dict(data, epochs, "direct").accuracy)
        assert "nas_201_api" in load_benchmark(tiny_file, epochs).source


def test_torch_safe_loader_refuses_code_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"meta_archs": [], "arch2infos": {}, "evaluated_indexes": [],
                "x": types.SimpleNamespace(a=1)}, path)
    with pytest.raises(NB201Error, match="safe loader refused"):
        load_benchmark(path)


# ---------------------------------------------------------------------------------------------
# 3. run folders, genotype show, analyze
# ---------------------------------------------------------------------------------------------


def test_save_projections_writes_the_lookup(tmp_path):
    from pyronas.search import _save_projections

    _save_projections(tmp_path, MULTI, NB201, sites_for(MULTI_SCORES))
    arch = (tmp_path / "genotype_nb201.txt").read_text().strip()
    saved = json.loads((tmp_path / LOOKUP_FILE).read_text())
    assert saved["arch"] == arch and saved["index"] == lookup(arch).index
    assert NB201Entry.from_dict(saved) == lookup(arch)
    assert run_lookup(tmp_path) == lookup(arch)


def test_run_lookup_against_another_source_rewrites_the_file(tmp_path, tiny_file, monkeypatch):
    _hide(monkeypatch, "nas_201_api", "nats_bench")
    (tmp_path / "genotype_nb201.txt").write_text(BEST + "\n")
    assert run_lookup(tmp_path).index == 5374  # no lookup file yet: the bundled table
    entry = run_lookup(tmp_path, open_table(tiny_file, 200), write=True)
    assert entry.index == 1 and entry.epochs == 200
    assert json.loads((tmp_path / LOOKUP_FILE).read_text())["epochs"] == 200
    assert run_lookup(tmp_path) == entry
    assert run_lookup(tmp_path / "nothing") is None


def test_search_cli_prints_the_entry_and_checks_the_source_first(tmp_path, capsys):
    config = tmp_path / "plain.yaml"
    config.write_text("space: nb201\nrandom_mode: plain\n")  # a random cell, no data
    out = tmp_path / "run"
    assert main(["search", "--config", str(config), "--strategy", "random", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    entry = run_lookup(out)
    assert entry.arch == (out / "genotype_nb201.txt").read_text().strip()
    assert format_entry(entry) in printed
    # a wrong benchmark file is reported before anything runs
    assert main(["search", "--config", str(config), "--strategy", "random", "--out",
                 str(tmp_path / "never"), "--nb201", str(tmp_path / "missing.pth")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_format_entry_names_the_schedule_and_the_dead_edges():
    text = format_entry(lookup(DEAD))
    assert "NAS-Bench-201 entry 1520 (12-epoch figures" in text
    assert "dead edges" in text and "1->2 nor_conv_3x3" in text
    assert "cifar10" in text and "78.72 %" in text


def test_genotype_show_of_an_nb201_string(tmp_path, capsys, tiny_file, monkeypatch):
    assert main(["genotype", "show", DEAD, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "NAS-Bench-201 entry 1520 (12-epoch figures" in out and "78.72 %" in out
    assert "n0 <- (removed)" in out
    # a file with the string (as a search writes it), and a genotype JSON of the space
    (tmp_path / "genotype_nb201.txt").write_text(BEST + "\n")
    assert main(["genotype", "show", str(tmp_path / "genotype_nb201.txt"), "--out",
                 str(tmp_path)]) == 0
    assert "entry 5374" in capsys.readouterr().out
    path = save_genotype(from_nb201_string(RESNET_LIKE), tmp_path / "g.json")
    assert main(["genotype", "show", str(path), "--out", str(tmp_path)]) == 0
    assert "entry 1 " in capsys.readouterr().out
    # the official file at 200 epochs
    _hide(monkeypatch, "nas_201_api", "nats_bench")
    assert main(["genotype", "show", BEST, "--out", str(tmp_path), "--nb201", str(tiny_file),
                 "--nb201-epochs", "200"]) == 0
    assert "entry 1 (200-epoch figures" in capsys.readouterr().out
    # a multi-op nb201 cell has no entry, and says so without failing the command
    path = save_genotype(MULTI, tmp_path / "multi.json")
    assert main(["genotype", "show", str(path), "--out", str(tmp_path)]) == 0
    assert "no NAS-Bench-201 entry: not a NAS-Bench-201 cell: several ops" in \
        capsys.readouterr().out
    # bad strings are bad input (exit 2)
    bad = "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert main(["genotype", "show", bad, "--out", str(tmp_path / "bad")]) == 2
    assert "unknown op 'conv'" in capsys.readouterr().err
    assert main(["genotype", "show", BEST, "--nb201-epochs", "200", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "12-epoch figures only" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # nothing drawn for bad input


def test_analyze_shows_the_lookup_and_a_table_across_runs(tmp_path, capsys):
    runs = []
    for i, arch in enumerate((BEST, ALL_SKIP)):
        run = tmp_path / f"baseline{i}"  # a baseline run: no posterior, a benchmark string
        run.mkdir()
        (run / "genotype_nb201.txt").write_text(arch + "\n")
        (run / "metrics.json").write_text(json.dumps({"strategy": "darts1"}))
        runs.append(run)
    out = tmp_path / "cmp"
    assert main(["analyze", *map(str, runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "NAS-Bench-201 entry 5374" in text and "NAS-Bench-201 entry 1835" in text
    assert "no posterior" in text
    with (out / "nb201.csv").open() as handle:
        rows = {r["run"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"baseline0", "baseline1"}
    assert float(rows["baseline0"]["cifar10_test"]) == pytest.approx(89.16)
    assert float(rows["baseline1"]["cifar10_test_percentile"]) < 3.0
    assert rows["baseline1"]["skip_connect"] == "6" and rows["baseline0"]["strategy"] == "darts1"
    assert (runs[0] / LOOKUP_FILE).is_file()  # written on the way


# ---------------------------------------------------------------------------------------------
# 4. experiments/nb201.py
# ---------------------------------------------------------------------------------------------


def _experiment(name):
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_nb201_experiment_smoke(tmp_path):
    experiment = _experiment("nb201")
    out, md = tmp_path / "nb201", tmp_path / "results.md"
    argv = ["--smoke", "--dataset", "digits", "--seeds", "0", "--strategies", "random-plain",
            "darts1", "--out", str(out), "--results-md", str(md)]
    assert experiment.main(argv) == 0
    rows = {r["strategy"]: r for r in json.loads((out / "summary.json").read_text())}
    for label in ("random-plain", "darts1"):
        run = out / label / "seed0"
        arch = (run / "genotype_nb201.txt").read_text().strip()
        assert arch.count("~") == 6  # one op or none on each of the 6 edges
        entry = lookup(arch)
        assert rows[label]["index"] == [entry.index]
        assert rows[label]["test"]["cifar10"] == [entry.accuracy["cifar10"]["test"]]
        assert rows[label]["skips"] == [arch.count("skip_connect")]
    text = md.read_text()
    assert "<!-- nb201:start -->" in text and "digits as a proxy" in text
    assert "**12-epoch** schedule" in text and "200-epoch schedule" in text
    assert "| optimum of the benchmark (index 5374) | - | 89.16 | 100.0 |" in text
    assert "| all-skip cell (the DARTS collapse) | - | 36.84 |" in text
    assert "| DrNAS | 94.36 |" in text
    # the table again from the run folders alone
    assert experiment.main([*argv, "--report-only"]) == 0
    assert json.loads((out / "summary.json").read_text())[1]["index"] == rows["darts1"]["index"]


def test_nb201_experiment_picks_cifar10_when_present(tmp_path):
    experiment = _experiment("nb201")
    args = experiment.parser().parse_args(["--data-dir", str(tmp_path)])
    assert experiment.resolve_dataset(args) == "fashion-mnist"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*[f"data_batch_{i}" for i in range(1, 6)], "test_batch"):
        (folder / name).write_bytes(b"")
    assert experiment.resolve_dataset(args) == "cifar10"
    overrides = experiment.search_overrides(
        experiment.parser().parse_args(["--dataset", "cifar10", "--seeds", "1"]), "darts2", 1)
    assert overrides["space"] == "nb201" and overrides["strategy"] == "darts2"
    assert overrides["search_epochs"] == overrides["t_max"] == 10 and overrides["layers"] == 17


def test_nb201_experiment_cpu_budget():
    experiment = _experiment("nb201")
    args = experiment.parser().parse_args(["--dataset", "fashion-mnist", "--budget", "cpu",
                                           "--epochs", "4"])
    overrides = experiment.search_overrides(args, "bayesnas-hard", 0)
    assert (overrides["channels"], overrides["layers"], overrides["train_size"]) == (8, 8, 5000)
    assert overrides["t_max"] == overrides["search_epochs"] == 4
    full = experiment.search_overrides(
        experiment.parser().parse_args(["--dataset", "fashion-mnist"]), "darts1", 0)
    assert (full["channels"], full["layers"]) == (16, 17)
