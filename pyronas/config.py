"""YAML run configurations: loading, command-line overrides, validation, and the resolved copy.

A configuration is a flat dict of known keys (a *schema*: the dict of defaults, e.g.
:data:`RETRAIN_DEFAULTS`). :func:`load_config` reads a YAML file (or a preset name from the
source tree's ``experiments/configs``), fills in the defaults, applies overrides and validates
the result: an unknown key is an error that names the key and suggests the closest known one.

Two keys are special in a YAML file:

``base``
    Path (relative to the file) or preset name of a configuration this one extends; its keys are
    read first.
``run_info``
    Written by :func:`save_resolved_config` (versions, git SHA, command line); ignored on load, so
    a run folder's ``config.yaml`` can be loaded again to repeat the run.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from pyronas.data import DATASETS

__all__ = [
    "CONFIG_DIR",
    "RETRAIN_CHOICES",
    "RETRAIN_DEFAULTS",
    "RETRAIN_RANGES",
    "ConfigError",
    "check_device",
    "load_config",
    "merge_config",
    "package_versions",
    "parse_overrides",
    "preset_layers",
    "preset_path",
    "save_resolved_config",
    "suggest",
    "validate_config",
]

logger = logging.getLogger(__name__)


def _config_dir() -> Path:
    source_tree = Path(__file__).resolve().parents[1] / "experiments" / "configs"
    if source_tree.is_dir():
        return source_tree
    return Path(__file__).resolve().parent / "presets"


CONFIG_DIR = _config_dir()
"""Where presets are looked up by name: the source tree's ``experiments/configs`` (a checkout or
an editable install), else the copy a regular install ships as ``pyronas/presets``."""

CONFIG_FILE = "config.yaml"
RESERVED_KEYS = ("base", "run_info")

RETRAIN_DEFAULTS: dict[str, Any] = {
    # data
    "dataset": "cifar10",  # digits | fashion-mnist | cifar10 | imagenet
    "data_dir": None,
    "download": False,
    "train_size": None,  # subsample of the official training set (None: all)
    "image_size": None,  # resize at load time (None: native; ImageNet 224)
    "augment": True,  # DARTS crops/flips (ImageNet: random resized crop + colour jitter)
    "cutout": 16,
    "val_fraction": 0.0,  # >0: hold out this share of train for val_acc; 0: val_acc on test
    # network
    "genotype": "DARTS_V2",  # bundled name or path to a genotype JSON
    "network": "cifar",  # cifar | imagenet | pyramidnet (tree genotype, proxyless)
    "pyramid_depth": 110,  # network pyramidnet: depth 6 n + 2 (3 stages of n blocks)
    "pyramid_alpha": 84.0,  # network pyramidnet: widening over all blocks
    "C": 36,
    "layers": 20,
    "stem_multiplier": 3,
    "auxiliary": True,
    "auxiliary_weight": 0.4,
    "drop_path_prob": 0.2,  # final value; ramped linearly from 0 over the epochs
    "variant": "darts",  # darts | authors (dropout2d on op outputs, see op_dropout)
    "op_dropout": 0.2,  # final dropout2d rate on op outputs (variant authors only), ramped
    # optimiser and schedule
    "epochs": 600,
    "batch_size": 96,
    "lr": 0.025,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "lr_schedule": "cosine",  # cosine (to lr_min over epochs) | step (x lr_gamma per step)
    "lr_min": 0.0,
    "lr_gamma": 0.97,
    "lr_step_size": 1,
    "grad_clip": 5.0,  # max global gradient norm (0 or None: off)
    "label_smoothing": 0.0,
    "seed": 0,
    "max_steps_per_epoch": None,  # cap on training batches per epoch (smoke runs)
    # runtime (not part of the checkpoint's identity)
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "amp": True,  # mixed precision on CUDA (ignored on CPU)
    "amp_dtype": "float16",  # float16 (with GradScaler) | bfloat16
    "channels_last": False,
    "compile": False,  # torch.compile the network
    "num_workers": "auto",  # auto: 0 on CPU, min(8, cores) on CUDA
    "eval_batch_size": None,  # None: 2 x batch_size
    "max_eval_batches": None,  # cap on evaluation batches (smoke runs)
    "eval_every": 1,  # evaluate val_acc every this many epochs (and always at the last)
    "progress": True,  # tqdm bar per epoch (off when not a TTY or PYRONAS_NO_PROGRESS is set)
    "deterministic": False,  # cudnn deterministic, no benchmark
    "num_threads": None,  # torch CPU threads (None: torch's default)
    "stop_after_epoch": None,  # stop (resumably) once this many epochs are done
    "search_seconds": None,  # search cost of the genotype, for tables
    "search_device": None,
    "name": None,  # label of the genotype in tables (None: from the genotype name/path)
}
"""Schema and defaults of a retraining run (DARTS CIFAR-10 protocol)."""

RETRAIN_CHOICES: dict[str, tuple[Any, ...]] = {
    "dataset": DATASETS,
    "network": ("cifar", "imagenet", "pyramidnet"),
    "variant": ("darts", "authors"),
    "lr_schedule": ("cosine", "step"),
    "amp_dtype": ("float16", "bfloat16"),
}

RETRAIN_RANGES: dict[str, str] = {
    **dict.fromkeys(
        ("epochs", "batch_size", "C", "layers", "stem_multiplier", "lr", "lr_gamma",
         "pyramid_depth", "lr_step_size", "eval_every", "max_steps_per_epoch", "eval_batch_size",
         "max_eval_batches", "train_size", "image_size", "num_threads", "stop_after_epoch"),
        "positive",
    ),
    **dict.fromkeys(
        ("momentum", "weight_decay", "lr_min", "grad_clip", "cutout", "auxiliary_weight", "seed",
         "search_seconds", "pyramid_alpha"),
        "non-negative",
    ),
    **dict.fromkeys(("drop_path_prob", "op_dropout", "val_fraction", "label_smoothing"),
                    "fraction"),
}
"""The range of each numeric retraining key (None is always allowed where the default is
None): ``positive`` (> 0), ``non-negative`` (>= 0) or ``fraction`` (in [0, 1)). Every float
must also be finite."""

_RANGE_TESTS: dict[str, tuple[Any, str]] = {
    "positive": (lambda v: v > 0, "positive"),
    "non-negative": (lambda v: v >= 0, "at least 0"),
    "fraction": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
}

# keys whose value may be of a different type than the default's
_FREE_TYPES: dict[str, tuple[type, ...]] = {
    "num_workers": (int, str),
    "grad_clip": (int, float, type(None)),
    "genotype": (str,),
}


class ConfigError(ValueError):
    """A configuration file or override is malformed, or names an unknown key."""


def preset_path(name: str | Path) -> Path:
    """Resolve a config argument: an existing file, else a preset in :data:`CONFIG_DIR`.

    ``"retrain_digits"`` and ``"retrain_digits.yaml"`` both find
    ``experiments/configs/retrain_digits.yaml``.
    """
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    candidate = CONFIG_DIR / stem
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    hint = suggest(path.stem, known)
    raise ConfigError(
        f"no config file {str(name)!r} and no preset of that name in {CONFIG_DIR}"
        f"{hint}; presets: {', '.join(known) or 'none'}"
    )


def suggest(key: str, known: Iterable[str]) -> str:
    """``"; did you mean 'lr'?"`` for the closest known key, or ``""``."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def preset_layers(
    name: str | Path, seen: tuple[Path, ...] = ()
) -> list[tuple[Path, dict[str, Any]]]:
    """The YAML mappings of a config file (or preset) and its ``base`` chain, base first.

    ``run_info`` and ``base`` are dropped from each mapping.

    Returns
    -------
    list of (Path, dict)
        ``(file, its keys)`` per file of the chain.
    """
    path = preset_path(name).resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base' chain")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {kind}")
    data.pop("run_info", None)
    base = data.pop("base", None)
    if base is None:
        return [(path, data)]
    base_path = path.parent / str(base)
    return [*preset_layers(base_path if base_path.is_file() else str(base), (*seen, path)),
            (path, data)]


def _read_yaml(path: Path) -> dict[str, Any]:
    """One flat mapping of a file and its ``base`` chain (later files override)."""
    merged: dict[str, Any] = {}
    for _, data in preset_layers(path):
        merged.update(data)
    return merged


def parse_overrides(items: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Turn ``["lr=0.1", "auxiliary=false"]`` into ``{"lr": 0.1, "auxiliary": False}``.

    Values are parsed as YAML scalars (``null``, numbers, booleans, lists); a mapping is returned
    as a plain dict.
    """
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse the value: {exc}") from exc
    return out


def _coerce(cfg: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Read strings such as ``"3e-4"`` (YAML 1.1 takes them for text) as floats where the
    schema's default is a float, and paths as strings."""
    for key, value in cfg.items():
        if isinstance(value, os.PathLike):
            cfg[key] = os.fspath(value)
        elif isinstance(schema.get(key), float) and isinstance(value, str):
            try:
                cfg[key] = float(value)
            except ValueError:
                pass
    return cfg


def validate_config(
    cfg: Mapping[str, Any],
    schema: Mapping[str, Any] = RETRAIN_DEFAULTS,
    choices: Mapping[str, tuple[Any, ...]] | None = None,
    ranges: Mapping[str, str] | None = None,
) -> None:
    """Check keys, value types and ranges against a schema.

    Parameters
    ----------
    cfg
        The keys to check (a whole config or some overrides).
    schema
        The dict of known keys and their defaults.
    choices, ranges
        Allowed values per key, and numeric ranges (see :data:`RETRAIN_RANGES`); default:
        :data:`RETRAIN_CHOICES` and :data:`RETRAIN_RANGES` for the retraining schema, none
        otherwise.

    Raises
    ------
    ConfigError
        An unknown key (naming it and the closest known key), a value of the wrong type, a
        value outside the allowed choices or range, a float that is not finite, or an unknown
        ``device``.
    """
    retraining = schema is RETRAIN_DEFAULTS
    if choices is None:
        choices = RETRAIN_CHOICES if retraining else {}
    if ranges is None:
        ranges = RETRAIN_RANGES if retraining else {}
    for key, value in cfg.items():
        if key not in schema:
            raise ConfigError(f"unknown config key {key!r}{suggest(key, schema)}")
        default = schema[key]
        allowed = _FREE_TYPES.get(key)
        if allowed is None:
            if default is None:
                continue
            if isinstance(default, bool):
                allowed = (bool,)
            elif isinstance(default, int):
                allowed = (int,)
            elif isinstance(default, float):
                allowed = (int, float)
            else:
                allowed = (type(default),)
        ok = isinstance(value, allowed) and not (
            isinstance(value, bool) and bool not in allowed
        )
        if not ok:
            names = " or ".join(t.__name__ for t in allowed)
            raise ConfigError(f"config key {key!r} must be {names}, got {value!r}")
        if key in choices and value not in choices[key]:
            raise ConfigError(
                f"config key {key!r} must be one of {', '.join(map(str, choices[key]))}, "
                f"got {value!r}"
            )
        _check_number(key, value, ranges.get(key))
    if retraining and "device" in cfg:
        check_device(cfg["device"])
    workers = cfg.get("num_workers", "auto")
    if retraining and workers != "auto" and (not isinstance(workers, int) or workers < 0):
        raise ConfigError(f"config key 'num_workers' must be 'auto' or an integer >= 0, "
                          f"got {workers!r}")


def _check_number(key: str, value: Any, kind: str | None) -> None:
    """A float must be finite; a number must lie in its range (``kind``, see
    :data:`RETRAIN_RANGES`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
    if kind is not None:
        test, words = _RANGE_TESTS[kind]
        if not test(value):
            raise ConfigError(f"config key {key!r} must be {words}, got {value!r}")


def check_device(device: Any) -> None:
    """Refuse a device name other than ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises
    ------
    ConfigError
        Naming the device and the valid names.
    """
    kind, _, index = str(device).partition(":")
    if device != "auto" and (kind not in ("cpu", "cuda") or (index and not index.isdigit())):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def merge_config(
    cfg: Mapping[str, Any],
    overrides: Iterable[str] | Mapping[str, Any] | None,
    schema: Mapping[str, Any] = RETRAIN_DEFAULTS,
) -> dict[str, Any]:
    """A copy of ``cfg`` with ``overrides`` (``key=value`` strings or a mapping) applied and
    validated."""
    out = dict(cfg)
    extra = _coerce(parse_overrides(overrides), schema)
    validate_config(extra, schema)
    out.update(extra)
    validate_config(out, schema)
    return out


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    schema: Mapping[str, Any] = RETRAIN_DEFAULTS,
) -> dict[str, Any]:
    """Defaults, then the YAML file (or preset), then the overrides; validated.

    Parameters
    ----------
    path
        A YAML file, a preset name (see :func:`preset_path`), or None for the defaults alone.
    overrides
        ``key=value`` strings (command line) or a mapping.
    schema
        The dict of known keys and their defaults.

    Returns
    -------
    dict
        Every key of ``schema``.
    """
    cfg = dict(schema)
    if path is not None:
        data = _coerce(_read_yaml(path), schema)
        try:
            validate_config(data, schema)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        cfg.update(data)
    return merge_config(cfg, overrides, schema)


def package_versions() -> dict[str, str]:
    """Versions of python, torch, pyro, numpy (``"absent"`` for a missing package)."""
    versions = {"python": platform.python_version()}
    for module, label in (("torch", "torch"), ("pyro", "pyro"), ("numpy", "numpy")):
        try:
            versions[label] = str(__import__(module).__version__)
        except ImportError:
            versions[label] = "absent"
    return versions


def git_sha(cwd: str | Path | None = None) -> str | None:
    """The commit of the source tree (``+dirty`` if tracked files changed), or None."""
    cwd = Path(__file__).resolve().parent if cwd is None else Path(cwd)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def save_resolved_config(
    cfg: Mapping[str, Any],
    run_dir: str | Path,
    argv: Iterable[str] | None = None,
    seed: int | None = None,
) -> Path:
    """Write ``run_dir/config.yaml``: the resolved config plus a ``run_info`` block.

    ``run_info`` holds the package versions (torch, pyro, numpy, python), the git SHA (None
    outside a git checkout), the seed (``seed``, else ``cfg["seed"]``), the command line and the
    time. The file loads back with :func:`load_config` (a search's nested settings with
    :func:`pyronas.settings.load_search_settings`).

    Returns
    -------
    Path
        The file written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = sys.argv if argv is None else list(argv)
    data = dict(cfg)
    data["run_info"] = {
        "versions": package_versions(),
        "git_sha": git_sha(),
        "seed": cfg.get("seed") if seed is None else seed,
        "command": shlex.join(str(a) for a in argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    from pyronas.runs import atomic_write_text

    return atomic_write_text(yaml.safe_dump(data, sort_keys=False), run_dir / CONFIG_FILE)
