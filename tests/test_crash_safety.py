"""Crash safety: a search killed at any point and resumed ends as if it had run through; run
folders are claimed, refused or replaced as the flags say; every artefact is written atomically.

The kill tests run the search in a subprocess (this file is its driver, see :func:`main`) that
sends itself SIGKILL at a chosen step: during a MAP epoch (the n-th minibatch objective), during
the curvature (after the n-th curvature is computed), while writing the checkpoint (after the
n-th ``torch.save`` has written its temporary file, before the rename) or while writing the
result files (after the cell diagrams are drawn into the staging folder).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

TINY = {
    "dataset": "digits",
    "train_size": 200,  # 100 training images: two MAP batches per epoch
    "channels": 4,
    "layers": 3,
    "batch_size": 50,
    "t_max": 2,
    "curvature_batches": 1,
    "bn_batches": 1,
    "posterior_draws": 3,
    "progress": False,
    "num_threads": 1,
}

# --------------------------------------------------------------------------------------------
# the subprocess driver


def _kill_on_call(module: Any, name: str, n: int, after: bool) -> None:
    """Replace ``module.name`` by a wrapper that SIGKILLs the process at its ``n``-th call
    (before the real call, or ``after`` it)."""
    real = getattr(module, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(*args, **kwargs)
        if calls[0] == n and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(module, name, wrapper)


def main(argv: list[str]) -> None:
    """``python test_crash_safety.py OVERRIDES_JSON [map|curvature|save|draw:N]``: run the
    search of the overrides, killing itself at the given step."""
    import pyronas.diagram
    import pyronas.inference.type2 as type2
    from pyronas.dispatch import run_strategy
    from pyronas.settings import load_search_settings

    overrides = json.loads(argv[0])
    if len(argv) > 1:
        where, n = argv[1].split(":")
        module, name, after = {
            "map": (type2, "map_objective", False),
            "curvature": (type2, "diagonal_curvature", True),
            "save": (torch, "save", True),
            "draw": (pyronas.diagram, "draw_genotype", True),
        }[where]
        _kill_on_call(module, name, int(n), after)
    run_strategy(load_search_settings(None, overrides))


def _run(out: Path, kill: str | None = None, **extra: Any) -> int:
    overrides = {**TINY, **extra, "out": str(out)}
    cmd = [sys.executable, __file__, json.dumps(overrides), *([kill] if kill else [])]
    env = {**os.environ, "PYRONAS_NO_PROGRESS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if kill is None and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _numbers(out: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall times."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in _rows(out)]


def _assert_same_result(out: Path, reference: Path) -> None:
    assert (out / "genotype.json").read_bytes() == (reference / "genotype.json").read_bytes()
    assert _numbers(out) == _numbers(reference)
    ours = torch.load(out / "posterior.pt", weights_only=False)
    theirs = torch.load(reference / "posterior.pt", weights_only=False)
    for site in ("edge_switch", "op_switch"):
        assert torch.equal(ours["mean"][site], theirs["mean"][site])
        assert torch.equal(ours["var"][site], theirs["var"][site])
    meta, ref = (json.loads((d / "metrics.json").read_text()) for d in (out, reference))
    assert {k: v for k, v in meta.items() if k != "search_seconds"} == {
        k: v for k, v in ref.items() if k != "search_seconds"}
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted search."""
    out = tmp_path_factory.mktemp("crash") / "reference"
    _run(out)
    return out


def test_search_killed_at_several_points_resumes_to_the_same_result(reference, tmp_path):
    out = tmp_path / "run"
    # before the first checkpoint: --resume starts the run over
    assert _run(out, "map:1") == -signal.SIGKILL
    assert (out / "run.json").is_file() and not (out / "checkpoint.pt").exists()
    # during the MAP epoch of iteration 2 (its first batch: two batches per epoch)
    assert _run(out, "map:3", resume=True) == -signal.SIGKILL
    assert [r["iteration"] for r in _rows(out)] == ["1"]
    # during the curvature of iteration 2
    assert _run(out, "curvature:1", resume=True) == -signal.SIGKILL
    assert [r["iteration"] for r in _rows(out)] == ["1"]
    # while writing the checkpoint of iteration 2: the old one stays whole
    assert _run(out, "save:1", resume=True) == -signal.SIGKILL
    assert torch.load(out / "checkpoint.pt", weights_only=False)["type2"]["iteration"] == 1
    assert any(p.name.startswith(".checkpoint.pt.") for p in out.iterdir())
    # while writing the result files: nothing of them is in the run folder yet
    assert _run(out, "draw:1", resume=True) == -signal.SIGKILL
    assert not (out / "genotype.json").exists() and not (out / "metrics.json").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=False)["type2"]["iteration"] == 2
    # the search stopped after its last checkpoint: --resume only writes the results
    assert _run(out, resume=True) == 0
    _assert_same_result(out, reference)
    # the search seconds of every process are counted, not only the last one's (which ran no
    # iteration)
    seconds = json.loads((out / "metrics.json").read_text())["search_seconds"]
    assert seconds > sum(float(r["seconds"]) for r in _rows(out))


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["map:1", "map:2", "map:4", "curvature:1", "curvature:2",
                                  "save:2", "save:3", "draw:1"])
def test_search_killed_once_resumes_to_the_same_result(reference, tmp_path, kill):
    out = tmp_path / "run"
    assert _run(out, kill) == -signal.SIGKILL
    assert _run(out, resume=True) == 0
    _assert_same_result(out, reference)


@pytest.mark.slow
def test_darts_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
    extra = {"strategy": "darts1", "search_epochs": 3}
    _run(tmp_path / "reference", **extra)
    out = tmp_path / "run"
    assert _run(out, "save:2", **extra) == -signal.SIGKILL  # writing the epoch-2 checkpoint
    assert _run(out, resume=True, **extra) == 0
    reference = tmp_path / "reference"
    assert (out / "genotype.json").read_bytes() == (reference / "genotype.json").read_bytes()
    assert _numbers(out) == _numbers(reference)
    assert torch.equal(torch.load(out / "alphas.pt")["alpha"],
                       torch.load(reference / "alphas.pt")["alpha"])


# --------------------------------------------------------------------------------------------
# run folders


def _settings(out: Path, **run: Any) -> Any:
    from pyronas.settings import load_search_settings

    return load_search_settings(None, {**TINY, "out": str(out), **run})


def test_a_folder_with_the_users_own_files_is_refused_and_left_alone(tmp_path):
    from pyronas.run_setup import claim_run_folder
    from pyronas.runs import RunFolderError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my: notes\n")
    (out / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(RunFolderError, match="no pyronas search.*config.yaml, metrics.csv.*"
                       "--resume.*--overwrite"):
        claim_run_folder(_settings(out), out, "bayesnas")
    with pytest.raises(RunFolderError, match="not a run to resume"):
        claim_run_folder(_settings(out, resume=True), out, "bayesnas")
    assert (out / "config.yaml").read_text() == "my: notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.csv"]


def test_overwrite_replaces_the_run_files_only(tmp_path):
    from pyronas.run_setup import claim_run_folder, read_run_file

    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "metrics.csv", "genotype.json", "cell_normal.png"):
        (out / name).write_text("old\n")
    (out / "notes.txt").write_text("keep me\n")
    (out / ".genotype.json.123.tmp").write_text("half")
    assert claim_run_folder(_settings(out, overwrite=True), out, "darts1") is False
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "run.json"]
    assert read_run_file(out)["strategy"] == "darts1"


def test_resume_names_what_is_wrong_with_the_folder(tmp_path):
    from pyronas.run_setup import claim_run_folder
    from pyronas.runs import RunFolderError

    with pytest.raises(RunFolderError, match="does not exist.*drop --resume"):
        claim_run_folder(_settings(tmp_path / "none", resume=True), tmp_path / "none", "bayesnas")
    out = tmp_path / "run"
    claim_run_folder(_settings(out), out, "bayesnas")
    assert claim_run_folder(_settings(out, resume=True), out, "bayesnas") is True
    with pytest.raises(RunFolderError, match="lr: 0.025 -> 0.1"):
        claim_run_folder(_settings(out, resume=True, lr=0.1), out, "bayesnas")
    with pytest.raises(RunFolderError, match="holds a bayesnas search, not a darts1"):
        claim_run_folder(_settings(out, resume=True), out, "darts1")
    with pytest.raises(RunFolderError, match="bayesnas search run, not finished.*--overwrite"):
        claim_run_folder(_settings(out), out, "bayesnas")
    with pytest.raises(RunFolderError, match="pass one of them"):
        claim_run_folder(_settings(out, resume=True, overwrite=True), out, "bayesnas")
    # more iterations, another device or thread count continue the same run
    claim_run_folder(_settings(out, resume=True, t_max=9, num_threads=2), out, "bayesnas")


def test_an_unwritable_out_gives_one_clear_message(tmp_path, monkeypatch):
    from pyronas.run_setup import claim_run_folder
    from pyronas.runs import RunFolderError

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    out = tmp_path / "ro"
    with pytest.raises(RunFolderError, match="cannot write the run folder .*ro: Permission "
                       "denied; choose a writable --out"):
        claim_run_folder(_settings(out), out, "bayesnas")
    (tmp_path / "file").write_text("")
    monkeypatch.undo()
    with pytest.raises(RunFolderError, match="cannot write the run folder"):
        claim_run_folder(_settings(tmp_path / "file" / "run"), tmp_path / "file" / "run",
                         "bayesnas")


# --------------------------------------------------------------------------------------------
# atomic files


def test_atomic_files_get_the_usual_mode(tmp_path):
    from pyronas.runs import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text("{}\n", tmp_path / "metrics.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_staged_outputs_move_in_only_when_all_are_written(tmp_path):
    from pyronas.runs import staged_outputs

    with pytest.raises(RuntimeError), staged_outputs(tmp_path) as stage:
        (stage / "genotype.json").write_text("{}")
        raise RuntimeError("drawing failed")
    assert list(tmp_path.iterdir()) == []
    with staged_outputs(tmp_path) as stage:
        (stage / "genotype.json").write_text("{}")
        (stage / "cell_normal.png").write_bytes(b"png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell_normal.png", "genotype.json"]


def test_metrics_csv_refuses_a_foreign_header_and_keeps_whole_rows(tmp_path):
    from pyronas.runs import MetricsCSV, RunFolderError

    path = tmp_path / "metrics.csv"
    path.write_bytes(b"epoch,loss\r\n1,0.5\r\n")
    with pytest.raises(RunFolderError, match="columns epoch, loss"):
        MetricsCSV(path).append({"iteration": 1, "val_acc": 0.5})
    assert path.read_bytes() == b"epoch,loss\r\n1,0.5\r\n"
    metrics = MetricsCSV(tmp_path / "m.csv")
    for i in (1, 2, 3):
        metrics.append({"iteration": i, "val_acc": i / 10})
    metrics.truncate_after("iteration", 2)
    assert [r["iteration"] for r in metrics.read()] == ["1", "2"]
    metrics.append({"iteration": 3, "val_acc": 0.25})
    assert metrics.path.read_bytes() == b"iteration,val_acc\r\n1,0.1\r\n2,0.2\r\n3,0.25\r\n"


if __name__ == "__main__":
    main(sys.argv[1:])
