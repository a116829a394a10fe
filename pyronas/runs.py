"""Run folders: where a search or a retraining writes what it did.

A run folder is self-describing: ``config.yaml`` (the resolved options plus package versions, git
SHA, seed and command line), ``metrics.csv`` (one row per iteration or epoch), result files and
the checkpoint it resumes from. A search also writes ``run.json`` (:data:`RUN_FILE`) first: the
mark that pyronas owns the folder, with the strategy and settings that started it.

Every file is written atomically: to a temporary file in the same folder, then moved over the
destination with ``os.replace`` (:func:`atomic_write_text`, :func:`staged_outputs`), so a crash
leaves either the old file or the new one, never half of one. Temporaries are named
``.<name>.<pid>.tmp`` (or a ``.staging-<pid>`` folder) and removed on resume
(:func:`remove_temporaries`).
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import io
import math
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ARTEFACT_PATTERNS",
    "RUN_FILE",
    "MetricsCSV",
    "RunFolderError",
    "atomic_write_bytes",
    "atomic_write_text",
    "compact_genotype",
    "device_description",
    "find_artefacts",
    "remove_artefacts",
    "remove_temporaries",
    "require_run_folder",
    "search_cost_gpu_days",
    "staged_outputs",
]

RUN_FILE = "run.json"
"""The file that marks a folder as a pyronas search run (format, strategy, settings)."""

ARTEFACT_PATTERNS: tuple[str, ...] = (
    RUN_FILE, "config.yaml", "metrics.csv", "metrics.json", "checkpoint.pt", "posterior.pt",
    "posterior.nc", "genotype*.json", "genotype_nb201.txt", "nb201_lookup.json", "cell*.png",
    "alphas.pt", "candidates.csv",
)  # fmt: skip
"""Names (``fnmatch`` patterns) of the files a search writes into its run folder: a folder
holding any of them is not written into without ``--resume`` or ``--overwrite``."""

TEMPORARY_PATTERNS = (".*.tmp", ".staging-*")
"""Names of the temporaries of :func:`atomic_write_bytes` and :func:`staged_outputs`."""


class RunFolderError(ValueError):
    """A folder is not the kind of run folder that was expected, or may not be written."""


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically: temporary file, flush, fsync, ``os.replace``.

    The file gets the mode a plain ``open`` would give (``0666`` less the umask, usually
    ``0644``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write text (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(text.encode("utf-8"), path)


@contextlib.contextmanager
def staged_outputs(out: str | Path) -> Iterator[Path]:
    """A staging folder inside ``out`` whose files move into ``out`` when the block ends.

    Writers that take a path (genotypes, diagrams, ArviZ files) write into the staging folder;
    when the block finishes without error every file is moved into ``out`` with ``os.replace``
    (each move is atomic), then the staging folder is removed. On an error nothing is moved.
    """
    out = Path(out)
    stage = out / f".staging-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        yield stage
        for item in sorted(stage.iterdir()):
            if item.is_file():
                with open(item, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(item, out / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def find_artefacts(out: str | Path) -> list[str]:
    """The names of the files in ``out`` that a search would write (:data:`ARTEFACT_PATTERNS`),
    sorted; empty when ``out`` does not exist."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.is_file()
                  and _matches(p.name, ARTEFACT_PATTERNS))


def remove_artefacts(out: str | Path) -> list[str]:
    """Delete the files :func:`find_artefacts` names (and any temporaries); other files and
    subfolders stay. Returns the names deleted."""
    names = find_artefacts(out)
    for name in names:
        (Path(out) / name).unlink()
    remove_temporaries(out)
    return names


def remove_temporaries(out: str | Path) -> None:
    """Delete what an interrupted atomic write left in ``out`` (``.<name>.<pid>.tmp`` files and
    ``.staging-<pid>`` folders)."""
    out = Path(out)
    if not out.is_dir():
        return
    for item in out.iterdir():
        if _matches(item.name, TEMPORARY_PATTERNS):
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


class MetricsCSV:
    """CSV of metric rows, one appended per iteration or epoch; the header is fixed by the first
    row.

    Every change rewrites the file atomically, so a crash never leaves half a row. On resume,
    rows past the checkpointed step are dropped so the file matches the state.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def truncate_after(self, key: str, last: int) -> None:
        """Keep only rows whose ``key`` column is ``<= last`` (for resumed runs)."""
        rows = self.read()
        kept = [row for row in rows if int(float(row[key])) <= last]
        if not kept:
            self.path.unlink(missing_ok=True)
            return
        if len(kept) < len(rows):
            self._write(list(kept[0]), kept)

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row, writing the header first if the file is new.

        Raises
        ------
        RunFolderError
            The file has a header with other columns (it is not this run's).
        """
        rows = self.read()
        fields = list(row)
        if rows and list(rows[0]) != fields:
            raise RunFolderError(
                f"{self.path} has the columns {', '.join(rows[0])}, not those of this run "
                f"({', '.join(fields)}); it was not written by this run"
            )
        self._write(fields, [*rows, {k: _fmt(v) for k, v in row.items()}])

    def _write(self, fields: list[str], rows: list[Mapping[str, Any]]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(buffer.getvalue(), self.path)

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
