"""Reading a search run folder and summarising its switch posterior.

:func:`load_run` reads ``posterior.pt``, ``config.yaml``, ``metrics.csv`` and ``genotype.json``
of a run folder (layout in ``docs/contracts.md``); :meth:`Run.to_arviz` gives the ArviZ object
(``posterior.nc`` when the search wrote one, else built from ``posterior.pt``) and
:func:`summary_table` one row per ``(cell type, edge, op)``.

Inclusion score
---------------
The inclusion of a switch ``s`` is how consistently its posterior puts it on one side of zero,

    inclusion(s) = |E[sign(s)]| = |P(s > 0) - P(s < 0)|,

which for the Laplace posterior ``N(m, v)`` is ``2 Phi(|m| / sqrt(v)) - 1 = erf(|z| / sqrt 2)``
with ``z = m / sqrt(v)``: 0 when the posterior is centred on 0, close to 1 when zero is many
posterior sds away (``|z| = 1.96`` gives 0.95). It is computable from draws as well (NUTS,
:func:`inclusion_from_draws`). An op on an edge is active only when both its edge switch and its
op switch are non-zero, so the inclusion of an op is ``inclusion(edge) * inclusion(op)`` (the
posterior is factorised), and 0 when either switch was pruned.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pyronas.genotype import Genotype, derive, load_genotype
from pyronas.runs import MetricsCSV, RunFolderError, require_run_folder
from pyronas.search_posterior import PosteriorFileError, SearchPosterior
from pyronas.space import SearchSpace, get_space

log = logging.getLogger(__name__)

POSTERIOR_FILE = "posterior.pt"
ARVIZ_FILE = "posterior.nc"


# --------------------------------------------------------------------------------------------
# inclusion


def inclusion_gaussian(mean: Any, sd: Any) -> np.ndarray:
    """``|E sign(s)|`` for ``s ~ N(mean, sd^2)``: ``erf(|mean| / (sd sqrt 2))``, elementwise.

    ``sd = 0`` gives 1 for a non-zero mean and 0 for a zero mean.
    """
    mean = np.abs(np.asarray(mean, dtype=np.float64))
    sd = np.asarray(sd, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), np.where(mean > 0, np.inf, 0.0))
    return np.vectorize(lambda t: math.erf(t / math.sqrt(2.0)), otypes=[float])(z)


def inclusion_from_draws(draws: Any, axis: int | tuple[int, ...] = 0) -> np.ndarray:
    """``|mean(sign(s))|`` over the sample axes of draws (the Monte Carlo inclusion)."""
    return np.abs(np.mean(np.sign(np.asarray(draws, dtype=np.float64)), axis=axis))


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class Run:
    """A search run folder, loaded.

    Attributes
    ----------
    path
        The folder.
    posterior
        The switch posterior of ``posterior.pt`` (also a read-only mapping with its keys).
    config
        ``config.yaml`` as a dict (empty when the file is missing).
    metrics
        Rows of ``metrics.csv`` as dicts of strings (empty when missing).
    genotype
        ``genotype.json`` when present, else ``None``.
    """

    path: Path
    posterior: SearchPosterior
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, str]] = field(default_factory=list)
    genotype: Genotype | None = None

    @property
    def name(self) -> str:
        """The folder name."""
        return self.path.name

    @property
    def space(self) -> SearchSpace:
        """The search space of the run."""
        return get_space(self.posterior["space"])

    @property
    def tied(self) -> bool:
        """Whether the switches are per cell type."""
        return bool(self.posterior.get("tied", True))

    @property
    def prior(self) -> str:
        """Name of the prior model file."""
        return str(self.posterior.get("prior") or config_name(self.config, "prior"))

    def log_evidence(self) -> list[float]:
        """Log evidence per type-II iteration (posterior history, else metrics.csv)."""
        history = self.posterior.get("history") or []
        if history:
            return [float(h["log_evidence"]) for h in history]
        return [float(r["log_evidence"]) for r in self.metrics if r.get("log_evidence")]

    def to_arviz(
        self, num_chains: int = 2, num_draws: int = 250, seed: int = 0, rebuild: bool = False
    ) -> Any:
        """The ArviZ object: ``posterior.nc`` if the run has one (and not ``rebuild``), else
        :func:`pyronas.arviz_export.to_arviz` on ``posterior.pt`` (no ``log_likelihood``
        group then)."""
        from pyronas.arviz_export import load_arviz, to_arviz

        nc = self.path / ARVIZ_FILE
        if nc.is_file() and not rebuild:
            return load_arviz(nc)
        return to_arviz(self.posterior, self.space, num_chains, num_draws, seed)

    def kept_mask(self) -> np.ndarray:
        """Bool ``(group, edge, op)``: ops in the derived cell.

        From ``genotype.json`` when present; otherwise the not-pruned ops after the connectivity
        rule of :func:`pyronas.genotype.derive` (tied switches) or simply the not-pruned ops
        (untied switches).
        """
        space = self.space
        alive_edge = _alive(self.posterior, "edge_switch")
        alive_op = _alive(self.posterior, "op_switch")
        live = alive_edge[..., None] & alive_op
        if not self.tied:
            return live
        genotype = self.genotype
        if genotype is None:
            try:
                genotype = derive(space, alive_edge, alive_op)
            except ValueError as err:
                log.warning("could not derive a genotype (%s); using the not-pruned ops", err)
                return live
        mask = np.zeros_like(live)
        for t, cell_type in enumerate(space.cell_types):
            if cell_type not in genotype.cell_types:
                continue
            pairs = {
                (op, src, space.num_inputs + j)
                for j, node in enumerate(genotype.cell(cell_type))
                for op, src in node
            }
            for e, (src, dst) in enumerate(space.edges[cell_type]):
                for k, op in enumerate(space.ops):
                    mask[t, e, k] = (op, src, dst) in pairs
        return mask


def _alive(posterior: Mapping[str, Any], site: str) -> np.ndarray:
    alive = (posterior.get("alive") or {}).get(site)
    if alive is None:
        return np.ones(tuple(posterior["mean"][site].shape), dtype=bool)
    return torch.as_tensor(alive).cpu().numpy().astype(bool)


def config_name(config: Mapping[str, Any], section: str) -> str:
    """The ``prior`` or ``strategy`` name of a run's ``config.yaml``, nested
    (``prior: {name: hard, options: ...}``) or flat as older runs wrote it (``prior: hard``)."""
    value = config.get(section)
    if isinstance(value, Mapping):
        value = value.get("name")
    return "" if value is None else str(value)


def load_run(path: str | Path) -> Run:
    """Load a search run folder.

    Raises
    ------
    RunFolderError
        When ``path`` is not a folder or has no ``posterior.pt``, or the file is not a pyronas
        posterior.
    """
    folder = require_run_folder(Path(path), POSTERIOR_FILE)
    try:
        posterior = SearchPosterior.load(folder / POSTERIOR_FILE)
    except PosteriorFileError as err:
        raise RunFolderError(str(err)) from None
    config: dict[str, Any] = {}
    if (folder / "config.yaml").is_file():
        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    metrics = MetricsCSV(folder / "metrics.csv").read()
    genotype = None
    if (folder / "genotype.json").is_file():
        genotype = load_genotype(folder / "genotype.json")
    return Run(folder, posterior, dict(config), metrics, genotype)


# --------------------------------------------------------------------------------------------
# the summary table


@dataclass(frozen=True)
class SummaryRow:
    """One ``(cell type, edge, op)`` of a run.

    ``mean``/``sd``/``gamma`` are those of the op switch; ``edge_*`` those of its edge switch;
    ``inclusion`` is the op's inclusion (module docstring) and ``kept`` whether the op is in the
    derived cell. ``group`` is the cell type (tied switches) or ``cell<i>`` (untied).
    """

    cell_type: str
    edge: str
    op: str
    mean: float
    sd: float
    gamma: float
    inclusion: float
    kept: bool
    group: str
    edge_index: int
    edge_mean: float
    edge_sd: float
    edge_gamma: float
    edge_inclusion: float
    omega: float = float("nan")


def summary_table(run: Run) -> list[SummaryRow]:
    """One :class:`SummaryRow` per switch group ``(cell type or cell, edge, op)``."""
    post = run.posterior
    space = run.space

    def arr(key: str, site: str) -> np.ndarray:
        return torch.as_tensor(post[key][site]).detach().cpu().double().numpy()

    mean_e, mean_o = arr("mean", "edge_switch"), arr("mean", "op_switch")
    sd_e = np.sqrt(np.clip(arr("var", "edge_switch"), 0, None))
    sd_o = np.sqrt(np.clip(arr("var", "op_switch"), 0, None))
    gamma_e, gamma_o = arr("gamma", "edge_switch"), arr("gamma", "op_switch")
    omega_o = arr("omega", "op_switch") if "op_switch" in (post.get("omega") or {}) else None
    alive_e, alive_o = _alive(post, "edge_switch"), _alive(post, "op_switch")
    inc_e = np.where(alive_e, inclusion_gaussian(mean_e, sd_e), 0.0)
    inc_o = np.where(alive_o, inclusion_gaussian(mean_o, sd_o), 0.0)
    inclusion = inc_e[..., None] * inc_o
    kept = run.kept_mask()
    if run.tied:
        types = list(range(len(space.cell_types)))
    else:
        types = [int(t) for t in torch.as_tensor(post["cell_type_index"]).tolist()]

    rows = []
    for g, t in enumerate(types):
        cell_type = space.cell_types[t]
        group = cell_type if run.tied else f"cell{g}"
        names = space.edge_names(cell_type)
        for e in range(space.num_edges):
            for k, op in enumerate(space.ops):
                rows.append(
                    SummaryRow(
                        cell_type=cell_type, edge=names[e], op=op,
                        mean=float(mean_o[g, e, k]), sd=float(sd_o[g, e, k]),
                        gamma=float(gamma_o[t, e, k]), inclusion=float(inclusion[g, e, k]),
                        kept=bool(kept[g, e, k]), group=group, edge_index=e,
                        edge_mean=float(mean_e[g, e]), edge_sd=float(sd_e[g, e]),
                        edge_gamma=float(gamma_e[t, e]), edge_inclusion=float(inc_e[g, e]),
                        omega=float(omega_o[t, e, k]) if omega_o is not None else float("nan"),
                    )
                )
    return rows


def write_summary_csv(rows: list[SummaryRow], path: str | Path) -> Path:
    """Write summary rows to CSV (one column per :class:`SummaryRow` field)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(SummaryRow)])
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))
    return path


__all__ = [
    "Run",
    "RunFolderError",
    "SummaryRow",
    "inclusion_from_draws",
    "inclusion_gaussian",
    "load_run",
    "summary_table",
    "write_summary_csv",
]
