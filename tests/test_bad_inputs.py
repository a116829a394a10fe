"""The bad-input catalogue: every case of docs/bad-inputs.md, run through ``pyronas.cli.main``.

The table in docs/bad-inputs.md is the expectation: for every row this file builds the command
(in a temporary folder), runs it and checks the exit status and that the message of the row is
what the user sees on stderr (``...`` in a message stands for a path or other text that
varies), in one line and without a traceback. A case without a row, or a row without a case,
fails the test.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import pyronas.train as train_mod
from pyronas.checkpoint import load_checkpoint
from pyronas.cli import main
from pyronas.config import RETRAIN_CHOICES

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"

TINY_RETRAIN = """\
base: retrain_digits
C: 4
layers: 2
train_size: 200
batch_size: 32
max_steps_per_epoch: 2
max_eval_batches: 1
epochs: 1
device: cpu
num_threads: 1
progress: false
"""
"""A retraining of a second or so on the digits (its data load included)."""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _tiny(tmp: Path, extra: str = "") -> str:
    """A tiny retraining config (plus ``extra`` YAML lines) in ``tmp``."""
    return str(_write(tmp / "tiny.yaml", TINY_RETRAIN + extra))


def _retrain(tmp: Path, *flags: str, extra: str = "") -> list[str]:
    return ["retrain", "--config", _tiny(tmp, extra), "--out", str(tmp / "run"), *flags]


def _search(tmp: Path, *flags: str) -> list[str]:
    return ["search", "--dataset", "digits", "--out", str(tmp / "run"), *flags]


def _search_yaml(tmp: Path, text: str) -> list[str]:
    return _search(tmp, "--config", str(_write(tmp / "search.yaml", text)))


def _genotype(tmp: Path, mutate: Callable[[dict], None]) -> list[str]:
    """``retrain --genotype`` of DARTS_V2's JSON changed by ``mutate``."""
    from pyronas.genotype import genotype_to_dict, load_genotype

    data = genotype_to_dict(load_genotype("DARTS_V2"))
    mutate(data)
    path = _write(tmp / "genotype.json", json.dumps(data))
    return _retrain(tmp, "--genotype", str(path))


def _set(key: str, value: object) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        data[key] = value

    return mutate


def _node(cell: str, node: int, pairs: list) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        data[cell][node] = pairs

    return mutate


# --------------------------------------------------------------------------------------------
# data files


def _idx(dims: tuple[int, ...], values: bytes | None = None) -> bytes:
    magic = 2051 if len(dims) == 3 else 2049
    size = 1
    for d in dims:
        size *= d
    body = values if values is not None else bytes(i % 10 for i in range(size))
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + body


def _fashion(tmp: Path, broken: str) -> list[str]:
    """Four tiny Fashion-MNIST IDX files in ``tmp/fm``, one of them ``broken``."""
    folder = tmp / "fm"
    folder.mkdir()
    files = {
        "train-images-idx3-ubyte": _idx((20, 28, 28)),
        "train-labels-idx1-ubyte": _idx((20,)),
        "t10k-images-idx3-ubyte": _idx((10, 28, 28)),
        "t10k-labels-idx1-ubyte": _idx((10,)),
    }
    images = "train-images-idx3-ubyte"
    if broken == "empty":
        files[images] = b""
    elif broken == "truncated":
        files[images] = files[images][:116]
    elif broken == "corrupt":
        files[images] = files["train-labels-idx1-ubyte"]
    elif broken == "labels":
        files["train-labels-idx1-ubyte"] = _idx((20,), bytes([12] * 20))
    elif broken == "count":
        files["train-labels-idx1-ubyte"] = _idx((19,))
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return _retrain(tmp, "--dataset", "fashion-mnist", "--data-dir", str(folder))


# --------------------------------------------------------------------------------------------
# runs that fail on the way


def _finished_epoch(tmp: Path, epochs: int = 1) -> None:
    """A retraining run of ``epochs`` epochs in ``tmp/run`` (for the resume cases)."""
    assert main(_retrain(tmp, "--epochs", str(epochs))) == 0


def _raise_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int, error: BaseException) -> None:
    """Make ``_train_epoch`` raise ``error`` in ``epoch`` (1-based)."""
    real = train_mod._train_epoch

    def train_epoch(*args, **kwargs):
        if args[-1] + 1 == epoch:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_train_epoch", train_epoch)


def _checkpoint_epoch(tmp: Path) -> int:
    return int(load_checkpoint(tmp / "run" / "checkpoint.pt")["epoch"])


def _no_run_folder(tmp: Path) -> None:
    assert not (tmp / "run").exists(), "a refused command must not create its run folder"


def _read_only_out(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``--out`` inside a folder the user may not write to (simulated where we are root)."""
    locked = tmp / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)
    else:
        real_mkdir = Path.mkdir

        def mkdir(self: Path, *args, **kwargs):
            if locked in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    return ["retrain", "--config", _tiny(tmp), "--out", str(locked / "run")]


def _two_image_folders(tmp: Path, classes: int) -> Path:
    """An ``imagefolder`` tree of ``classes`` classes of tiny PNGs (rewritten in place)."""
    from PIL import Image

    root = tmp / "images"
    for c in range(4):
        folder = root / f"class{c}"
        if c >= classes:
            if folder.exists():
                for f in folder.iterdir():
                    f.unlink()
                folder.rmdir()
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(12):
            Image.new("RGB", (8, 8), (20 * c, 10 * i, 0)).save(folder / f"{i}.png")
    return root


@dataclass(frozen=True)
class Case:
    """One row of the catalogue: the command, and what to check besides the message."""

    argv: Callable[[Path, pytest.MonkeyPatch], list[str]]
    after: Callable[[Path], None] | None = None


def _plain(build: Callable[[Path], list[str]], after: Callable[[Path], None] | None = None
           ) -> Case:
    return Case(lambda tmp, _: build(tmp), after)


def _nan_run(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
    return _retrain(tmp, "--epochs", "3", extra="lr: 1.0e+12\n")


def _nothing_kept(tmp: Path) -> None:
    assert not (tmp / "run" / "checkpoint.pt").exists()
    assert not (tmp / "run" / "metrics.json").exists()


def _exploding_run(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
    return _retrain(tmp, "--epochs", "3", extra="lr: 3\ngrad_clip: 0\n")


def _kept_epoch_1(tmp: Path) -> None:
    assert _checkpoint_epoch(tmp) == 1
    assert not (tmp / "run" / "metrics.json").exists()
    rows = (tmp / "run" / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 2  # the header and epoch 1


def _oom(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _raise_in_epoch(monkeypatch, 1, torch.OutOfMemoryError("CUDA out of memory. Tried ..."))
    return _retrain(tmp, "--batch-size", "64")


def _interrupt(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _raise_in_epoch(monkeypatch, 2, KeyboardInterrupt())
    return _retrain(tmp, "--epochs", "2")


def _two_processes_odd_batch(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A search started as one of 2 torchrun processes with a batch they cannot split."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    return _search(tmp, "--batch-size", "49")


def _search_raising(error: BaseException) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    """A search whose strategy raises ``error`` once it runs."""
    import pyronas.dispatch

    def build(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        def run_strategy(settings, out_dir=None):
            raise error

        monkeypatch.setattr(pyronas.dispatch, "run_strategy", run_strategy)
        return _search(tmp, "--batch-size", "48")

    return build


def _existing(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
    _finished_epoch(tmp)
    return _retrain(tmp)


def _resume_other_config(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
    _finished_epoch(tmp)
    return _retrain(tmp, "--resume", extra="lr: 0.01\n")


def _resume_other_classes(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
    flags = ["--dataset", "imagefolder", "--data-dir", str(_two_image_folders(tmp, 2))]
    extra = "augment: false\ntrain_size: null\n"
    assert main(_retrain(tmp, *flags, extra=extra)) == 0
    _two_image_folders(tmp, 3)
    return _retrain(tmp, *flags, "--resume", extra=extra)


def _users_files(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
    (tmp / "run").mkdir()
    _write(tmp / "run" / "config.yaml", "my: notes\n")
    _write(tmp / "run" / "metrics.csv", "date,weight\n")
    return _retrain(tmp)


def _users_files_kept(tmp: Path) -> None:
    assert (tmp / "run" / "config.yaml").read_text(encoding="utf-8") == "my: notes\n"
    assert (tmp / "run" / "metrics.csv").read_text(encoding="utf-8") == "date,weight\n"


def _corrupt_checkpoint(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    return _retrain(tmp, "--resume")


def _resume_nothing(tmp: Path, _: pytest.MonkeyPatch) -> list[str]:
    return _retrain(tmp, "--resume")


def _resume_after(tmp: Path) -> None:
    assert _checkpoint_epoch(tmp) == 1


def _compress(tmp: Path, *flags: str) -> list[str]:
    return ["compress", "--dataset", "digits", "--device", "cpu", "--max-batches", "3",
            "--pretrain-epochs", "1", "--curvature-batches", "1", "--lambda-weight", "1e-9",
            *flags, "--out", str(tmp / "run")]


def _no_dense_network_kept(tmp: Path) -> None:
    assert not (tmp / "run" / "dense.pt").exists()


def _compress_interrupted_in_loop(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from pyronas.runs import MetricsCSV

    append = MetricsCSV.append

    def stop_at_iteration_2(self, row):
        if row.get("iteration") == 2:
            raise KeyboardInterrupt
        append(self, row)

    monkeypatch.setattr(MetricsCSV, "append", stop_at_iteration_2)
    return _compress(tmp, "--t-max", "2")


def _loop_kept_at_iteration_1(tmp: Path) -> None:
    state = torch.load(tmp / "run" / "type2.pt", weights_only=False)
    assert state["type2"]["iteration"] == 1 and (tmp / "run" / "dense.pt").is_file()


CASES: dict[str, Case] = {
    # configuration files and keys
    "retrain: mistyped config key": _plain(lambda t: _retrain(t, extra="lrr: 0.1\n")),
    "search: mistyped prior option": _plain(lambda t: _search_yaml(t, "lamda_edge: 0.1\n")),
    "search: mistyped key in a section": _plain(
        lambda t: _search_yaml(t, "training:\n  lrr: 0.1\n")),
    "retrain: wrong value type": _plain(lambda t: _retrain(t, extra="epochs: ten\n")),
    "search: wrong value type": _plain(
        lambda t: _search_yaml(t, "training:\n  batch_size: big\n")),
    "config file that is not YAML": _plain(lambda t: _search_yaml(t, "lr: [0.1\n")),
    "config file that does not exist": _plain(lambda t: _search(t, "--config", "nope.yaml")),
    # unknown names
    "unknown prior": _plain(lambda t: _search(t, "--prior", "hardd")),
    "unknown prior option": _plain(lambda t: _search(t, "--prior-option", "lamda=1")),
    "unknown search space": _plain(lambda t: _search(t, "--space", "nasnet")),
    "unknown strategy": _plain(lambda t: _search(t, "--strategy", "dartz")),
    "unknown curvature backend": _plain(lambda t: _search(t, "--curvature", "hessian")),
    "search: unknown data set": _plain(lambda t: _search(t, "--dataset", "mnist")),
    "retrain: unknown data set": _plain(lambda t: _retrain(t, "--dataset", "mnist")),
    "model-info: unknown data set": _plain(
        lambda t: ["model-info", "--genotype", "DARTS_V2", "--dataset", "mnist"]),
    "unknown bundled genotype": _plain(lambda t: _retrain(t, "--genotype", "DARTS_V3")),
    # prior files
    "prior file with a syntax error": _plain(
        lambda t: _search(t, "--prior", str(_write(t / "mine.py", "def model(:\n")))),
    "prior file without model": _plain(lambda t: _search(
        t, "--prior", str(_write(t / "mine.py", "def init_hypers(space):\n    return {}\n")))),
    # genotype files
    "genotype: malformed JSON": _plain(
        lambda t: _retrain(t, "--genotype", str(_write(t / "g.json", '{"normal": [[')))),
    "genotype: unknown op": _plain(
        lambda t: _genotype(t, _node("normal", 0, [["conv_9x9", 0], ["sep_conv_3x3", 1]]))),
    "genotype: cycle": _plain(
        lambda t: _genotype(t, _node("normal", 1, [["sep_conv_3x3", 3], ["sep_conv_3x3", 1]]))),
    "genotype: input out of range": _plain(
        lambda t: _genotype(t, _node("normal", 3, [["skip_connect", 0], ["dil_conv_3x3", 9]]))),
    "genotype: dangling node": _plain(lambda t: _genotype(t, _node("reduce", 1, []))),
    "genotype: concat out of range": _plain(
        lambda t: _genotype(t, _set("normal_concat", [2, 3, 4, 9]))),
    "genotype show: no such genotype": _plain(
        lambda t: ["genotype", "show", "NOPE", "--out", str(t)]),
    "model-info: broken genotype": _plain(lambda t: [
        "model-info", "--genotype", str(_write(t / "g.json", "[1, 2]"))]),
    "model-info: malformed NAS-Bench-201 string": _plain(
        lambda t: ["model-info", "--genotype", "|nor_conv_3x3~0|+|nor_conv_3x3~3|"]),
    # data files
    "data files missing": _plain(lambda t: _retrain(
        t, "--dataset", "cifar10", "--data-dir", str(t))),
    "data file empty": _plain(lambda t: _fashion(t, "empty")),
    "data file truncated": _plain(lambda t: _fashion(t, "truncated")),
    "data file of another kind": _plain(lambda t: _fashion(t, "corrupt")),
    "data file with bad labels": _plain(lambda t: _fashion(t, "labels")),
    "data files that disagree": _plain(lambda t: _fashion(t, "count")),
    # numbers
    "retrain --epochs -3": _plain(lambda t: _retrain(t, "--epochs", "-3")),
    "retrain --epochs 0": _plain(lambda t: _retrain(t, "--epochs", "0")),
    "retrain --batch-size 0": _plain(lambda t: _retrain(t, "--batch-size", "0")),
    "retrain layers: 0": _plain(lambda t: _retrain(t, extra="layers: 0\n")),
    "retrain C: 0": _plain(lambda t: _retrain(t, extra="C: 0\n")),
    "retrain lr: 0": _plain(lambda t: _retrain(t, extra="lr: 0\n")),
    "retrain lr: .nan": _plain(lambda t: _retrain(t, extra="lr: .nan\n")),
    "retrain weight_decay: -1": _plain(lambda t: _retrain(t, extra="weight_decay: -1\n")),
    "retrain drop_path_prob: 1.5": _plain(lambda t: _retrain(t, extra="drop_path_prob: 1.5\n")),
    "search --epochs 0": _plain(lambda t: _search(t, "--epochs", "0")),
    "search --batch-size 0": _plain(lambda t: _search(t, "--batch-size", "0")),
    "search --channels 0": _plain(lambda t: _search(t, "--channels", "0")),
    "search --t-max 0": _plain(lambda t: _search(t, "--t-max", "0")),
    "search --lr -0.1": _plain(lambda t: _search(t, "--lr", "-0.1")),
    "search --lr nan": _plain(lambda t: _search(t, "--lr", "nan")),
    "search lr: .nan": _plain(lambda t: _search_yaml(t, "training:\n  lr: .nan\n")),
    "search --threshold -1": _plain(lambda t: _search(t, "--threshold", "-1")),
    "search --lambda-edge -1": _plain(lambda t: _search(t, "--lambda-edge", "-1")),
    "compress --group-price fc1:in": _plain(lambda t: [
        "compress", "--group-price", "fc1:in", "--out", str(t / "run")]),
    "compress: price for a layer the network lacks": _plain(lambda t: [
        "compress", "--dataset", "digits", "--group-price", "conv1:out=2",
        "--out", str(t / "run")]),
    "compress --max-units for a layer the network lacks": _plain(lambda t: [
        "compress", "--dataset", "digits", "--max-units", "conv1=16",
        "--out", str(t / "run")]),
    "compress: weight price without --prune-weights": _plain(lambda t: [
        "compress", "--dataset", "digits", "--group-price", "fc2:weight=2",
        "--out", str(t / "run")]),
    "compress --finetune-distill 1.5": _plain(lambda t: [
        "compress", "--dataset", "digits", "--finetune-distill", "1.5",
        "--out", str(t / "run")]),
    "compress --dense-from a folder without a dense network": _plain(lambda t: [
        "compress", "--dataset", "digits", "--dense-from", str(t), "--out", str(t / "run")]),
    # devices
    "retrain --device tpu": _plain(lambda t: _retrain(t, "--device", "tpu")),
    "search --device tpu": _plain(lambda t: _search(t, "--device", "tpu")),
    "torchrun search: batch not a multiple of the processes": Case(_two_processes_odd_batch),
    # runs that stop on the way
    "retrain: learning rate that makes the loss non-finite": Case(_nan_run, _nothing_kept),
    "retrain: learning rate that makes the loss explode": Case(_exploding_run, _kept_epoch_1),
    "retrain: out of memory": Case(_oom),
    "retrain: Ctrl-C": Case(_interrupt, _resume_after),
    "compress: learning rate that makes the loss non-finite": _plain(
        lambda t: _compress(t, "--lr", "1e9"), _no_dense_network_kept),
    "compress: Ctrl-C in the type-II loop": Case(_compress_interrupted_in_loop,
                                                 _loop_kept_at_iteration_1),
    "search: out of memory": Case(_search_raising(torch.OutOfMemoryError("CUDA out of memory"))),
    "search: Ctrl-C": Case(_search_raising(KeyboardInterrupt())),
    "retrain: --out holds a run, no --resume": Case(_existing, _resume_after),
    "retrain --resume: another configuration": Case(_resume_other_config, _resume_after),
    "retrain --resume: data set with another number of classes": Case(_resume_other_classes),
    "retrain --resume: nothing to resume": Case(_resume_nothing),
    "retrain --resume: corrupt checkpoint": Case(_corrupt_checkpoint),
    "retrain --resume --overwrite": _plain(lambda t: _retrain(t, "--resume", "--overwrite")),
    "retrain: --out holds files pyronas did not write": Case(_users_files, _users_files_kept),
    "retrain: read-only --out": Case(_read_only_out),
    "analyze: not a run folder": _plain(lambda t: ["analyze", str(t)]),
}


# --------------------------------------------------------------------------------------------
# the table


def doc_rows() -> dict[str, tuple[int, str]]:
    """``case -> (exit status, message)`` of the table in docs/bad-inputs.md (``\\|`` is a
    ``|`` inside a cell, as Markdown tables spell it)."""
    rows: dict[str, tuple[int, str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        inner = line.strip().removeprefix("|").removesuffix("|")
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]
        if len(cells) != 3 or not cells[1].isdigit():
            continue
        case, code, message = cells
        assert case not in rows, f"row {case!r} appears twice"
        rows[case] = (int(code), message.strip("`"))
    return rows


ROWS = doc_rows()


def _shows(message: str, err: str) -> bool:
    """Whether ``err`` holds ``message``, ``...`` matching any text."""
    pattern = ".*?".join(re.escape(part) for part in message.split("..."))
    return re.search(pattern, err) is not None


def test_every_case_has_a_row_and_every_row_a_case() -> None:
    assert sorted(ROWS) == sorted(CASES)


def test_retraining_takes_every_data_set_of_the_registry() -> None:
    from pyronas.data import DATASETS

    assert set(RETRAIN_CHOICES["dataset"]) == set(DATASETS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_case(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    code, message = ROWS[case]
    spec = CASES[case]
    argv = spec.argv(tmp_path, monkeypatch)
    capsys.readouterr()
    fresh = not (tmp_path / "run").exists()
    try:
        got = main(argv)
    except SystemExit as stop:  # argparse refuses the command line
        got = stop.code
    err = capsys.readouterr().err
    assert got == code, err
    assert _shows(message, err), f"expected {message!r} in:\n{err}"
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.startswith("pyronas")]
    assert len(last) == 1 and _shows(message, last[0]), err
    if code == 2 and fresh:
        _no_run_folder(tmp_path)
    if spec.after is not None:
        spec.after(tmp_path)


def test_verbose_shows_the_traceback(tmp_path: Path, capsys) -> None:
    assert main(["-v", *_retrain(tmp_path, "--epochs", "-3")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err
    assert err.rstrip().splitlines()[-1].startswith("pyronas: error: ")


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _raise_in_epoch(monkeypatch, 1, ZeroDivisionError("a bug"))
    with pytest.raises(ZeroDivisionError):
        main(_retrain(tmp_path))


def test_overwrite_replaces_a_run_and_keeps_other_files(tmp_path: Path) -> None:
    _finished_epoch(tmp_path)
    _write(tmp_path / "run" / "notes.txt", "mine\n")
    assert main(_retrain(tmp_path, "--overwrite", "--epochs", "2")) == 0
    assert _checkpoint_epoch(tmp_path) == 2
    assert (tmp_path / "run" / "notes.txt").read_text(encoding="utf-8") == "mine\n"
