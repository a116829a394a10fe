"""What a compression run found: its ArviZ export and the ``pyronas analyze`` report.

:func:`compress_to_arviz` turns ``posterior.pt`` into an ArviZ object whose dims are named after
the layers and their units (``fc1_out`` = the output neurons of ``fc1``, ``conv2_in`` = its input
channels):

* ``posterior``: per layer and grouping, independent draws of each unit's weight-group norm
  ``||w_g||_2`` under the Laplace Gaussian ``N(mean, var)`` of the weights whose groups all
  live (a weight in a dead group is exactly 0: its prior variance is 0); ``chain`` and
  ``draw`` are independent draws, not MCMC chains;
* ``constant_data``: per layer and grouping the group variance ``gamma`` (type-II estimate), the
  lasso weight ``omega``, whether the unit is alive, the MAP group norm; the per-iteration log
  evidence and live units.

The per-weight grouping (``prune_weights``) is not a dim: its dead weights are zero in the
draws of the unit norms.

:func:`analyze_compress_run` reads a run folder and writes ``summary.csv`` (units left per layer)
and ``plots/sparsity.png`` (per layer, the share of units and weights kept);
:func:`is_compress_run` tells such a folder from a search's.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyronas.arviz_export import LAPLACE_DRAWS, LAPLACE_DRAWS_NOTE, arviz_from_dict

__all__ = ["analyze_compress_run", "compress_to_arviz", "is_compress_run", "layer_rows"]

POSTERIOR_FORMAT = "pyronas-compress-posterior/1"
"""The ``format`` field of a compression run's ``posterior.pt``."""


class CompressRunError(ValueError):
    """A folder that is not a finished compression run (what is missing is named)."""


def is_compress_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds a compression run (its ``metrics.json`` names a network and its
    units before and after pruning)."""
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "units_after" in data and "network" in data


def _unit_norms(weight: torch.Tensor, grouping: str, lead: int) -> torch.Tensor:
    """The L2 norm of each unit of ``weight``, whose first ``lead`` dims are draws.

    ``weight`` is ``(*draws, out, in)`` or ``(*draws, out, in, kh, kw)``; the result is
    ``(*draws, out)`` for ``grouping == "out"`` and ``(*draws, in)`` for ``"in"``.
    """
    squares = weight.pow(2)
    kernel = tuple(range(lead + 2, weight.dim()))
    if kernel:
        squares = squares.sum(kernel)
    axis = lead + 1 if grouping == "out" else lead
    return squares.sum(axis).sqrt()


def _kept_weights(alive: Mapping[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """``shape``: 1 where every group covering the weight lives (the precisions of the
    groupings add, so one dead group makes the weight's prior a point mass at 0), else 0."""
    kept = torch.ones(shape, dtype=torch.float64)
    extra = (1,) * (len(shape) - 2)
    if "out" in alive:
        kept = kept * alive["out"].double().reshape(-1, 1, *extra)
    if "in" in alive:
        kept = kept * alive["in"].double().reshape(1, -1, *extra)
    if "weight" in alive:
        kept = kept * alive["weight"].double().reshape(shape)
    return kept


def compress_to_arviz(posterior: Mapping[str, Any], num_chains: int = 2, num_draws: int = 100,
                      seed: int = 0) -> Any:
    """ArviZ object of a compression run's posterior (see the module docstring).

    Parameters
    ----------
    posterior
        The content of ``posterior.pt`` (format ``pyronas-compress-posterior/1``).
    num_chains, num_draws
        Independent Laplace draws, shaped as ArviZ's ``(chain, draw)``.
    seed
        Seed of the draws.
    """
    if posterior.get("format") != POSTERIOR_FORMAT:
        raise CompressRunError(f"not a compression posterior (format {posterior.get('format')!r},"
                               f" expected {POSTERIOR_FORMAT!r})")
    generator = torch.Generator().manual_seed(seed)
    draws: dict[str, np.ndarray] = {}
    constant: dict[str, np.ndarray] = {}
    coords: dict[str, Any] = {}
    dims: dict[str, list[str]] = {}
    for layer in posterior["layers"]:
        name = layer["name"]
        site = f"{name}.weight"
        kept = _kept_weights(posterior["alive"][site], posterior["mean"][site].shape)
        mean = posterior["mean"][site].detach().cpu().double() * kept
        sd = posterior["var"][site].detach().cpu().double().clamp_min(0).sqrt() * kept
        groupings = {g: gamma for g, gamma in posterior["gamma_group"][site].items()
                     if g != "weight"}  # single weights: in ``kept``, not a dim of units
        norms = {g: np.empty((num_chains, num_draws, len(gamma)))
                 for g, gamma in groupings.items()}
        for chain in range(num_chains):  # one weight draw gives every grouping's norms
            noise = torch.randn((num_draws, *mean.shape), generator=generator,
                                dtype=torch.float64)
            weights = mean + sd * noise
            for grouping in groupings:
                norms[grouping][chain] = _unit_norms(weights, grouping, 1).numpy()
        for grouping, gamma in groupings.items():
            dim = f"{name}_{grouping}"
            coords[dim] = np.arange(len(gamma))
            draws[f"{dim}_norm"] = norms[grouping]
            dims[f"{dim}_norm"] = [dim]
            alive = posterior["alive"][site][grouping]
            for key, value in (("gamma", gamma), ("omega", posterior["omega"][site][grouping]),
                               ("alive", alive.to(torch.int8)),
                               ("map_norm", _unit_norms(mean, grouping, 0))):
                constant[f"{dim}_{key}"] = value.detach().cpu().numpy()
                dims[f"{dim}_{key}"] = [dim]
    history = list(posterior.get("history") or [])
    if history:
        coords["iteration"] = [int(h["iteration"]) for h in history]
        constant["log_evidence"] = np.array([float(h["log_evidence"]) for h in history])
        constant["weights_kept"] = np.array([int(h.get("weights_kept", -1)) for h in history])
        dims["log_evidence"] = dims["weights_kept"] = ["iteration"]
    attrs = {"network": str(posterior["network"]), "dataset": str(posterior["dataset"]),
             "num_data": int(posterior["num_data"]), "draws": LAPLACE_DRAWS,
             "draws_note": LAPLACE_DRAWS_NOTE, "source": "pyronas compress"}
    return arviz_from_dict({"posterior": draws, "constant_data": constant}, coords, dims, attrs)


def layer_rows(summary: Mapping[str, Any], layers: list[Mapping[str, Any]]
               ) -> list[dict[str, Any]]:
    """One row per unit layer (the input, then every layer's outputs): units before and after.

    ``summary`` is ``metrics.json`` (``units_before`` / ``units_after``: the input features,
    then each layer's output units) and ``layers`` the posterior's layer list.
    """
    names = ["input"] + [str(layer["name"]) for layer in layers]
    before, after = summary["units_before"], summary["units_after"]
    if not len(names) == len(before) == len(after):
        raise CompressRunError(f"metrics.json lists {len(before)} unit layers, the posterior "
                               f"{len(names)}")
    return [{"layer": n, "units_before": int(b), "units_after": int(a),
             "kept_fraction": a / b if b else 0.0}
            for n, b, a in zip(names, before, after, strict=True)]


def _layer_weights(posterior: Mapping[str, Any], pruned_state: Mapping[str, torch.Tensor]
                   ) -> list[tuple[str, int, int]]:
    """``(layer, dense weights, kept weights)``: the posterior's and the pruned network's
    (its nonzero weights: single weights pruned inside the kept units are stored as 0)."""
    out = []
    for layer in posterior["layers"]:
        site = f"{layer['name']}.weight"
        if site not in pruned_state:
            raise CompressRunError(f"pruned_state.pt has no {site}")
        out.append((str(layer["name"]), posterior["mean"][site].numel(),
                    int(torch.count_nonzero(pruned_state[site]))))
    return out


def _plot_sparsity(rows: list[dict[str, Any]], weights: list[tuple[str, int, int]],
                   path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_units, ax_weights) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [r["layer"] for r in rows]
    kept = [100 * r["kept_fraction"] for r in rows]
    ax_units.bar(names, [100] * len(names), color="#dddddd", label="dense")
    ax_units.bar(names, kept, color="#3b75af", label="units kept")
    for i, r in enumerate(rows):
        ax_units.text(i, kept[i] + 2, f"{r['units_after']}/{r['units_before']}", ha="center",
                      fontsize=8)
    ax_units.set_ylabel("units kept (%)")
    ax_units.set_ylim(0, 115)
    ax_units.set_title("units per layer")
    wnames = [w[0] for w in weights]
    wkept = [100 * w[2] / w[1] if w[1] else 0.0 for w in weights]
    ax_weights.bar(wnames, [100] * len(wnames), color="#dddddd")
    ax_weights.bar(wnames, wkept, color="#c44e52", label="weights kept")
    for i, (_, dense, kept_w) in enumerate(weights):
        ax_weights.text(i, wkept[i] + 2, f"{kept_w:,}/{dense:,}", ha="center", fontsize=7)
    ax_weights.set_ylabel("weights kept (%)")
    ax_weights.set_ylim(0, 115)
    ax_weights.set_title("weights per layer (nonzero after pruning)")
    fig.suptitle(title)
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def analyze_compress_run(folder: str | Path) -> dict[str, Any]:
    """Report of one compression run; writes ``summary.csv`` and ``plots/sparsity.png``.

    Returns
    -------
    dict
        ``rows`` (:func:`layer_rows`), ``weights`` (per layer: name, dense, kept), ``summary``
        (``metrics.json``) and the paths written (``csv``, ``plot``).

    Raises
    ------
    CompressRunError
        The folder lacks ``metrics.json``, ``posterior.pt`` or ``pruned_state.pt`` (an
        unfinished run).
    """
    from pyronas.runs import atomic_write_text

    folder = Path(folder)
    for name in ("metrics.json", "posterior.pt", "pruned_state.pt"):
        if not (folder / name).is_file():
            raise CompressRunError(f"{folder} has no {name}: not a finished compression run")
    summary = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    posterior = torch.load(folder / "posterior.pt", map_location="cpu", weights_only=False)
    if posterior.get("format") != POSTERIOR_FORMAT:
        raise CompressRunError(f"{folder / 'posterior.pt'} is not a compression posterior")
    pruned_state = torch.load(folder / "pruned_state.pt", map_location="cpu", weights_only=True)
    rows = layer_rows(summary, posterior["layers"])
    weights = _layer_weights(posterior, pruned_state)
    lines = ["layer,units_before,units_after,kept_fraction"]
    lines += [f"{r['layer']},{r['units_before']},{r['units_after']},{r['kept_fraction']:.6f}"
              for r in rows]
    csv_path = folder / "summary.csv"
    atomic_write_text("\n".join(lines) + "\n", csv_path)
    title = (f"{summary['network']} on {summary['dataset']}: "
             f"{summary['compression_ratio']:.1f}x fewer weights, test error "
             f"{100 * summary['test_error_before']:.2f} -> "
             f"{100 * summary['test_error_after']:.2f} %")
    plot = _plot_sparsity(rows, weights, folder / "plots" / "sparsity.png", title)
    return {"rows": rows, "weights": weights, "summary": summary, "csv": csv_path, "plot": plot}


def read_summary_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``summary.csv`` written by :func:`analyze_compress_run`."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))
