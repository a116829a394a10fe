"""Run folders: where a search or a retraining writes what it did.

A run folder is self-describing: ``config.yaml`` (the resolved options plus package versions, git
SHA, seed and command line), ``metrics.csv`` (one row per iteration or epoch), result files and
the checkpoint it resumes from.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


class RunFolderError(ValueError):
    """A folder is not the kind of run folder that was expected."""


def atomic_write_text(text: str, path: Path) -> None:
    """Write text to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class MetricsCSV:
    """Append-only CSV of metric rows; the header is fixed by the first row.

    On resume, rows past the checkpointed step are dropped so the file matches the state.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def truncate_after(self, key: str, last: int) -> None:
        """Keep only rows whose ``key`` column is ``<= last`` (for resumed runs)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows if int(float(row[key])) <= last]
        if not kept:
            self.path.unlink()
            return
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(kept[0]))
            writer.writeheader()
            writer.writerows(kept)

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row, writing the header first if the file is new."""
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(v) for k, v in row.items()})

    def read(self) -> list[dict[str, str]]:
        """All rows as dicts of strings."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return f"{value.item():.6g}"
    return value


def require_run_folder(path: Path, marker: str) -> Path:
    """Return ``path`` if it holds ``marker`` (e.g. ``posterior.pt``); else say what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path} is not a folder; expected a run folder written by pyronas")
    if not (path / marker).exists():
        present = sorted(p.name for p in path.iterdir())[:10]
        raise RunFolderError(
            f"{path} is not a search run folder: it has no {marker} "
            f"(found: {', '.join(present) or 'nothing'})"
        )
    return path
