"""Retraining loop on tiny digits networks: run-folder files, the cosine schedule, exact
resume, refusing a foreign checkpoint, NaN detection, op dropout, and the CIFAR-10 / ImageNet
experiment scripts on tiny data written here."""

import csv
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script

from pyronas import train as train_mod
from pyronas.checkpoint import CheckpointMismatchError, load_checkpoint
from pyronas.config import load_config
from pyronas.evalnet import NetworkCIFAR, count_parameters
from pyronas.genotype import load_genotype
from pyronas.train import NonFiniteLossError, OpDropout, retrain, run_retrain_cli

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "C": 4,
    "layers": 3,
    "epochs": 1,
    "batch_size": 32,
    "max_steps_per_epoch": 3,
    "max_eval_batches": 2,
    "train_size": 400,
    "augment": True,
    "cutout": 2,
    "drop_path_prob": 0.3,
    "device": "cpu",
    "num_threads": 1,
    "progress": False,
}


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def tiny(**kw) -> dict:
    return load_config("retrain_digits", {**TINY, **kw})


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_one_epoch_writes_the_run_folder(tmp_path: Path) -> None:
    cfg = tiny()
    metrics = retrain(cfg, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "config.yaml", "metrics.csv", "metrics.json", "checkpoint.pt",
    }  # fmt: skip
    rows = _rows(tmp_path)
    assert len(rows) == 1 and list(rows[0]) == list(train_mod.METRICS_COLUMNS)
    assert float(rows[0]["lr"]) == pytest.approx(cfg["lr"])
    assert 0.0 <= float(rows[0]["train_acc"]) <= 100.0 and float(rows[0]["images_per_s"]) > 0
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == metrics
    assert metrics["test_error"] == pytest.approx(100.0 - metrics["test_acc"])
    assert metrics["test_images"] == 2 * 64  # max_eval_batches x eval batch (2 x batch)
    net = NetworkCIFAR(load_genotype("DARTS_V2"), 4, 10, 3, False, 0.0, 1, 3)
    assert metrics["params"] == count_parameters(net)
    assert metrics["params_M"] == pytest.approx(metrics["params"] / 1e6)
    assert metrics["mult_adds"] > 0 and metrics["genotype"] == "DARTS_V2"
    assert metrics["device"] == "cpu" and "test_top5_error" not in metrics
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = tiny(epochs=3)
    straight = retrain(cfg, tmp_path / "a")
    stopped = retrain({**cfg, "stop_after_epoch": 2}, tmp_path / "b")
    assert stopped == {"stopped": True, "epochs_done": 2}
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 2
    resumed = retrain(cfg, tmp_path / "b", resume=True)

    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    mom_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(mom_a, mom_b, strict=True))
    assert resumed["test_acc"] == straight["test_acc"]

    rows_a, rows_b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert [r["epoch"] for r in rows_b] == ["1", "2", "3"]
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]
    # cosine schedule to 0 over the epochs, one value per epoch
    for r in rows_a:
        e = int(r["epoch"]) - 1
        assert float(r["lr"]) == pytest.approx(0.5 * cfg["lr"] * (1 + math.cos(math.pi * e / 3)))


def test_cli_entry_picks_the_dataset_preset(tmp_path: Path, capsys) -> None:
    overrides = {k: v for k, v in TINY.items() if k not in ("augment", "cutout")}
    overrides.update(dataset="digits", out=tmp_path / "run", genotype="DARTS_V1")
    assert run_retrain_cli(None, overrides) == 0
    printed = capsys.readouterr().out
    assert '"genotype": "DARTS_V1"' in printed
    cfg = load_config(tmp_path / "run" / "config.yaml")
    assert cfg["dataset"] == "digits" and cfg["auxiliary"] is False and cfg["augment"] is False


def test_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    cfg = tiny(epochs=2, stop_after_epoch=1)
    retrain(cfg, tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"keys that differ: lr, weight_decay"):
        retrain({**cfg, "lr": 0.1, "weight_decay": 0.0}, tmp_path, resume=True)
    with pytest.raises(CheckpointMismatchError, match="genotype"):
        retrain({**cfg, "genotype": "DARTS_V1"}, tmp_path, resume=True)
    with pytest.raises(FileExistsError, match="resume"):
        retrain(cfg, tmp_path)
    # runtime keys may change between the interrupted and the resumed run
    done = retrain({**cfg, "stop_after_epoch": None, "eval_every": 5}, tmp_path, resume=True)
    assert done["epochs"] == 2 and len(_rows(tmp_path)) == 2


def test_nan_loss_names_epoch_and_step_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = train_mod.build_network
    calls = {"n": 0}

    class Poisoned(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.cells = net.cells

        def forward(self, x):
            logits, aux = self.net(x)
            if self.training:
                calls["n"] += 1
                if calls["n"] == 5:  # epoch 2 (3 steps per epoch), step 2
                    logits = logits * float("nan")
            return logits, aux

    def build(*args, **kwargs):
        return Poisoned(real_build(*args, **kwargs))

    monkeypatch.setattr(train_mod, "build_network", build)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2"):
        retrain(tiny(epochs=3), tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "metrics.json").exists()


def test_op_dropout_drops_whole_channels_in_training_only() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = NetworkCIFAR(load_genotype("BAYESNAS_0.01"), 4, 10, 3, False, 0.0, 1, 3)
    hooks = OpDropout(net, p=0.5)
    outputs = []
    hooks.handles.append(net.cells[0].ops[0].register_forward_hook(
        lambda m, i, o: outputs.append(o.detach())
    ))  # fmt: skip
    x = torch.randn(2, 1, 8, 8)
    net.train()
    net(x)
    out = outputs[-1]  # (batch, C, H, W) after dropout2d
    per_channel = out.flatten(2)
    zero = (per_channel == 0).all(dim=2)
    assert zero.any() and (~zero).any()  # some channels dropped entirely, others kept
    net.eval()
    hooks.p = 0.5
    a, _ = net(x)
    hooks.remove()
    b, _ = net(x)
    assert torch.equal(a, b)  # no effect in eval mode


def test_authors_variant_step_schedule_and_val_split(tmp_path: Path) -> None:
    cfg = tiny(
        variant="authors", op_dropout=0.2, drop_path_prob=0.0, genotype="BAYESNAS_0.007",
        epochs=2, lr_schedule="step", lr_gamma=0.97, val_fraction=0.25, max_steps_per_epoch=2,
    )  # fmt: skip
    metrics = retrain(cfg, tmp_path)
    assert metrics["variant"] == "authors" and metrics["genotype"] == "BAYESNAS_0.007"
    rows = _rows(tmp_path)
    assert [float(r["lr"]) for r in rows] == pytest.approx([cfg["lr"], 0.97 * cfg["lr"]])
    assert all(0.0 <= float(r["val_acc"]) <= 100.0 for r in rows)


def _write_tiny_cifar(folder: Path, n: int = 16) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def _run_script(script: str, *args: str) -> dict:
    """Run an experiment script's ``main`` in this process (its ``__main__`` block only adds
    logging); returns the metrics it prints."""
    return load_script(f"experiments/{script}").main(list(args))


def test_cifar10_smoke_script(tmp_path: Path) -> None:
    _write_tiny_cifar(tmp_path / "data" / "cifar-10-batches-py")
    out = tmp_path / "run"
    metrics = _run_script(
        "retrain_cifar10.py", "--smoke", "--data-dir", str(tmp_path / "data"), "--out", str(out),
        "--genotype", "BAYESNAS_0.01", "--seed", "3", "--set", "num_threads=1",
    )  # fmt: skip
    assert metrics["genotype"] == "BAYESNAS_0.01" and metrics["seed"] == 3
    assert metrics["test_images"] == 16
    cfg = load_config(out / "config.yaml")
    assert cfg["C"] == 4 and cfg["cutout"] == 16 and cfg["auxiliary"] is True
    assert (out / "checkpoint.pt").is_file() and len(_rows(out)) == 1


def test_imagenet_smoke_script(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for c in ("n01", "n02", "n03"):
            folder = tmp_path / "imagenet" / split / c
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    out = tmp_path / "run"
    metrics = _run_script(
        "imagenet_transfer.py", "--smoke", "--data-dir", str(tmp_path / "imagenet"),
        "--out", str(out), "--set", "num_threads=1",
    )  # fmt: skip
    assert metrics["network"] == "imagenet" and metrics["test_images"] == 6
    assert 0.0 <= metrics["test_top5_error"] <= metrics["test_error"] <= 100.0
    assert load_config(out / "config.yaml")["label_smoothing"] == 0.1
