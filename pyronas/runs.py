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


# What a search run records
# --------------------------------------------------------------------------------------------

SECONDS_PER_DAY = 86400.0

_SHORT_OPS = {
    "sep_conv_3x3": "sep3",
    "sep_conv_5x5": "sep5",
    "dil_conv_3x3": "dil3",
    "dil_conv_5x5": "dil5",
    "max_pool_3x3": "max",
    "avg_pool_3x3": "avg",
    "skip_connect": "skip",
    "nor_conv_1x1": "conv1",
    "nor_conv_3x3": "conv3",
}


def compact_genotype(genotype: Any) -> str:
    """One-line genotype for logs and ``metrics.csv``: ``normal[n0<-1:sep3+skip,...] ...``."""
    parts = []
    for cell_type in genotype.cell_types:
        nodes = []
        for j, pairs in enumerate(genotype.cell(cell_type)):
            by_src: dict[int, list[str]] = {}
            for op, src in pairs:
                by_src.setdefault(src, []).append(_SHORT_OPS.get(op, op))
            if by_src:
                edges = ",".join(f"{s}:{'+'.join(ops)}" for s, ops in sorted(by_src.items()))
                nodes.append(f"n{j}<-{edges}")
        parts.append(f"{cell_type}[{' '.join(nodes)}]")
    return " ".join(parts)


def search_cost_gpu_days(seconds: float, device: str | torch.device | None) -> float | None:
    """Search cost in GPU-days: ``seconds / 86400`` when ``device`` is a GPU, else ``None``.

    Parameters
    ----------
    seconds
        Wall time of the search.
    device
        ``"cuda"``, ``"cuda:0"``, a ``torch.device``, ``"cpu"``, ``None`` (unknown) ...
    """
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"search seconds must be finite and >= 0, got {seconds}")
    if device is None:
        return None
    kind = torch.device(device).type if not isinstance(device, str) else device.split(":")[0]
    if kind not in ("cuda", "mps", "xpu"):
        return None
    return seconds / SECONDS_PER_DAY


def device_description(device: torch.device) -> str:
    """``"cuda (NVIDIA H100 ...)"`` for a GPU, ``"cpu"`` otherwise."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
