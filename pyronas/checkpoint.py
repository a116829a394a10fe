"""Atomic checkpoints, RNG state capture, and the config check on resume.

A checkpoint is a dict saved with ``torch.save`` to a temporary file in the destination folder,
flushed to disk and moved over the old one with ``os.replace``, so a crash mid-write leaves the
previous checkpoint intact. Everything in it loads with ``torch.load(weights_only=True)``:
tensors, numbers, strings, lists, tuples and dicts (the NumPy RNG key is stored as a tensor).

A checkpoint records the *identity* of its run: the config keys that define the model, the data
and the optimiser (:data:`IDENTITY_KEYS`). :func:`check_identity` refuses to resume a run whose
identity differs, naming the keys that differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyronas.runs import RunFolderError

__all__ = [
    "CHECKPOINT_NAME",
    "IDENTITY_KEYS",
    "CheckpointError",
    "CheckpointMismatchError",
    "capture_rng_state",
    "check_identity",
    "config_hash",
    "identity",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"

IDENTITY_KEYS: tuple[str, ...] = (
    "dataset", "train_size", "image_size", "augment", "cutout", "val_fraction",
    "genotype", "network", "C", "layers", "stem_multiplier", "auxiliary", "auxiliary_weight",
    "drop_path_prob", "variant", "op_dropout",
    "epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_schedule", "lr_min",
    "lr_gamma", "lr_step_size", "grad_clip", "label_smoothing", "seed", "max_steps_per_epoch",
)  # fmt: skip
"""Config keys that define the model, data and optimiser of a run: a checkpoint only resumes a
run that agrees on all of them. Runtime keys (device, AMP, workers, progress bar, ...) may
change between the interrupted and the resumed run."""


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a run with a different configuration."""


class CheckpointError(RunFolderError):
    """A checkpoint file that cannot be read (truncated, corrupt or not a torch file)."""


def identity(cfg: Mapping[str, Any], keys: Iterable[str] = IDENTITY_KEYS) -> dict[str, Any]:
    """The identity-defining subset of ``cfg`` (missing keys read as None)."""
    return {k: cfg.get(k) for k in keys}


def config_hash(cfg: Mapping[str, Any], keys: Iterable[str] = IDENTITY_KEYS) -> str:
    """SHA-256 (hex, 16 characters) of the identity subset, key order independent."""
    text = json.dumps(identity(cfg, keys), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_identity(saved: Mapping[str, Any], current: Mapping[str, Any], where: str = "") -> None:
    """Raise if two identity dicts differ, naming every differing key with both values.

    Raises
    ------
    CheckpointMismatchError
    """
    keys = sorted(set(saved) | set(current))
    diff = [k for k in keys if saved.get(k) != current.get(k)]
    if diff:
        details = "; ".join(
            f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in diff
        )
        raise CheckpointMismatchError(
            f"refusing to resume from {where or 'the checkpoint'}: it was written with a "
            f"different configuration (keys that differ: {', '.join(diff)}; {details}). "
            "Resume with the original configuration or start a new run folder."
        )


def capture_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global RNGs (CUDA too when initialised), and
    of ``generator`` (e.g. a DataLoader's) if given."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"]).astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "generator": generator.get_state() if generator is not None else None,
    }
    return state


def restore_rng_state(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError) as exc:  # different GPU count: keep going
            logger.warning("could not restore the CUDA RNG states: %s", exc)
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary ``.<name>.<pid>.tmp`` in the same
    folder, fsync, ``os.replace``): a crash leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", weights_only: bool = True
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only`` loading unless
    told otherwise).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        The file cannot be read (truncated, corrupt, not a torch file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=weights_only)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} cannot be read: it is truncated or corrupt ({reason}); delete it to start "
            "the run over, or pass --overwrite"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a pyronas checkpoint (it holds a "
                              f"{type(state).__name__}, not a dict)")
    return state


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``run_dir/checkpoint.pt`` if it exists, else None."""
    path = Path(run_dir) / CHECKPOINT_NAME
    return path if path.is_file() else None
