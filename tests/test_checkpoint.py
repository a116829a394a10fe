"""Checkpoints: atomic writes, RNG states restored exactly, identity mismatches named."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pyronas import checkpoint as ck


def _draws(gen: torch.Generator) -> tuple:
    return (
        random.random(),
        float(np.random.rand()),
        float(np.random.randn()),
        float(torch.rand(())),
        int(torch.randint(1000, (1,), generator=gen)),
    )


def test_rng_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    _draws(gen)
    np.random.randn()  # leave a cached gaussian in NumPy's state
    state = ck.capture_rng_state(gen)
    first = _draws(gen)
    ck.save_checkpoint({"rng": state}, tmp_path / "c.pt")
    _draws(gen)
    ck.restore_rng_state(ck.load_checkpoint(tmp_path / "c.pt")["rng"], gen)
    assert _draws(gen) == first


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = ck.load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert ck.latest_checkpoint(tmp_path) == path
    assert ck.latest_checkpoint(tmp_path / "none") is None


def test_identity_mismatch_names_the_keys() -> None:
    a = {"lr": 0.025, "C": 36, "seed": 0}
    b = {"lr": 0.1, "C": 36, "seed": 1}
    with pytest.raises(ck.CheckpointMismatchError) as info:
        ck.check_identity(a, b)
    msg = str(info.value)
    assert "lr, seed" in msg and "0.025" in msg and "0.1" in msg and "'C'" not in msg
    ck.check_identity(a, dict(a))


def test_config_hash_depends_on_identity_keys_only() -> None:
    cfg = {k: 1 for k in ck.IDENTITY_KEYS}
    h = ck.config_hash(cfg)
    assert h == ck.config_hash(dict(reversed(list(cfg.items()))))
    assert h == ck.config_hash({**cfg, "device": "cuda", "progress": False})
    assert h != ck.config_hash({**cfg, "lr": 2})


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04truncated"])
def test_a_corrupt_checkpoint_is_named_without_torch_internals(tmp_path: Path, content) -> None:
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    whole = path.read_bytes()
    path.write_bytes(content or whole[: len(whole) // 2])
    with pytest.raises(ck.CheckpointError, match="checkpoint.pt cannot be read: it is truncated "
                       "or corrupt.*--overwrite") as info:
        ck.load_checkpoint(path)
    assert "file an issue" not in str(info.value)
    assert isinstance(info.value, ValueError)  # the command line reports it as bad input
