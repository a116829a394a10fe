"""The switch posterior a search leaves behind (``posterior.pt``, format ``pyronas-posterior/1``).

:class:`SearchPosterior` is the typed record: the diagonal Laplace posterior ``N(mean, var)`` of
both switch sites at the last type-II iteration, the curvature it came from, the final prior
hyperparameters and which switches are alive. It is written by the search and read by
:func:`pyronas.run_summary.load_run` and :func:`pyronas.arviz_export.to_arviz`.

Shapes (``L`` is the cell type when the switches are tied, the cell otherwise; ``E`` edges, ``K``
ops): ``edge_switch`` entries ``(L, E)``, ``op_switch`` entries ``(L, E, K)``; ``gamma`` and
``omega`` are per group, ``(cell_type, E[, K])``.

The class is also a read-only mapping with the keys of the file (``posterior["mean"]``), so code
written against the plain dict of earlier versions keeps working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pyronas.space import SITES

__all__ = ["FORMAT", "SITES", "PosteriorFileError", "SearchPosterior"]

FORMAT = "pyronas-posterior/1"
"""Format tag stored in the file."""


class PosteriorFileError(ValueError):
    """A ``posterior.pt`` that cannot be read or does not hold a pyronas posterior."""


def _cpu(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: torch.as_tensor(v).detach().cpu() for k, v in tensors.items()}


@dataclass(frozen=True)
class SearchPosterior(Mapping):
    """Laplace posterior of the switches at the end of a search.

    Attributes
    ----------
    space : str
        Name of the search space.
    mean, var : dict[str, Tensor]
        Posterior mean and variance per site, switch shapes; pruned switches have mean 0.
    gamma : dict[str, Tensor]
        Final prior variances per site, group shapes ``(cell_type, E[, K])``.
    prior : str or None
        Name or path of the prior model file.
    tied : bool
        Whether the switches are shared by the cells of one type.
    cell_type_index : Tensor or None
        ``(cell,)`` type of every cell of the supernet.
    num_data : int or None
        Training samples the likelihood was scaled to.
    curvature : dict[str, Tensor]
        Diagonal curvature of the mean loss per site (switch shapes).
    omega : dict[str, Tensor]
        Group-lasso weights per site (empty for priors without them).
    alive : dict[str, Tensor]
        Boolean masks of the switches still in the network.
    history : list[dict]
        One record per type-II iteration (log evidence, counts of alive switches, ...).
    precision_tril : Tensor or None
        ``(D, D)`` lower Cholesky factor of the full (or block-diagonal) posterior precision
        over all ``D`` switches, ``edge_switch`` then ``op_switch``, each flattened row-major,
        for a search with ``--laplace full | block`` (None for the diagonal form). ``var``
        holds its marginal variances; :func:`pyronas.arviz_export.posterior_draws` draws
        from the joint Gaussian, so the ArviZ export carries the correlations.
    """

    space: str
    mean: dict[str, Tensor]
    var: dict[str, Tensor]
    gamma: dict[str, Tensor]
    prior: str | None = None
    tied: bool = True
    cell_type_index: Tensor | None = None
    num_data: int | None = None
    curvature: dict[str, Tensor] = field(default_factory=dict)
    omega: dict[str, Tensor] = field(default_factory=dict)
    alive: dict[str, Tensor] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    precision_tril: Tensor | None = None

    def __post_init__(self) -> None:
        for site in SITES:
            for name in ("mean", "var"):
                if site not in getattr(self, name):
                    raise PosteriorFileError(f"posterior {name!r} has no site {site!r}")
            shape = tuple(self.mean[site].shape)
            if tuple(self.var[site].shape) != shape:
                raise PosteriorFileError(
                    f"posterior var of {site} has shape {tuple(self.var[site].shape)}, "
                    f"mean has {shape}"
                )
            if site in self.alive and tuple(self.alive[site].shape) != shape:
                raise PosteriorFileError(
                    f"alive mask of {site} has shape {tuple(self.alive[site].shape)}, "
                    f"mean has {shape}"
                )
        if self.precision_tril is not None:
            size = sum(self.mean[site].numel() for site in SITES)
            if tuple(self.precision_tril.shape) != (size, size):
                raise PosteriorFileError(
                    f"posterior precision_tril has shape {tuple(self.precision_tril.shape)}, "
                    f"expected ({size}, {size}) for the {size} switches"
                )

    # ---------------------------------------------------------------- construction and file I/O

    @classmethod
    def from_fit(
        cls,
        *,
        space: str,
        prior: str | None,
        tied: bool,
        cell_type_index: Tensor | None,
        num_data: int,
        mean: Mapping[str, Tensor],
        var: Mapping[str, Tensor],
        curvature: Mapping[str, Tensor],
        hypers: Mapping[str, Any],
        alive: Mapping[str, Tensor],
        history: list[dict[str, Any]],
        precision_tril: Tensor | None = None,
    ) -> SearchPosterior:
        """From a Laplace fit and the hyperparameters of a search; pruned means are set to 0.
        ``precision_tril`` (full and block forms) must flatten the sites in ``SITES`` order."""
        masks = _cpu(alive)
        return cls(
            space=space,
            prior=prior,
            tied=bool(tied),
            cell_type_index=None if cell_type_index is None else torch.as_tensor(
                cell_type_index).cpu(),
            num_data=int(num_data),
            # the Laplace fit precedes the pruning of its iteration: pruned switches are exactly 0
            mean={k: v.detach().cpu() * masks[k] for k, v in mean.items()},
            var=_cpu(var),
            curvature=_cpu(curvature),
            gamma=_cpu(hypers["gamma"]),
            omega=_cpu(hypers.get("omega", {})),
            alive=masks,
            history=list(history),
            precision_tril=None if precision_tril is None else precision_tril.detach().cpu(),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchPosterior:
        """From the dict stored in ``posterior.pt`` (checks the format tag and the entries)."""
        if not isinstance(data, Mapping):
            raise PosteriorFileError(f"posterior must be a dict, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != FORMAT:
            raise PosteriorFileError(f"posterior has format {fmt!r}, expected {FORMAT!r}")
        missing = [key for key in ("space", "mean", "var", "gamma") if key not in data]
        if missing:
            raise PosteriorFileError(f"posterior has no {missing[0]!r} entry")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: data[k] for k in names if k in data})

    def to_dict(self) -> dict[str, Any]:
        """The dict stored in ``posterior.pt`` (tensors on the CPU)."""
        out: dict[str, Any] = {"format": FORMAT}
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        return out

    def save(self, path: str | Path) -> Path:
        """Write ``posterior.pt`` atomically (temporary file + rename)."""
        from pyronas.checkpoint import save_checkpoint

        return save_checkpoint(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> SearchPosterior:
        """Read a ``posterior.pt``.

        Raises
        ------
        PosteriorFileError
            The file is missing, unreadable (truncated, not a torch file) or not a posterior.
        """
        path = Path(path)
        if not path.is_file():
            raise PosteriorFileError(f"{path} does not exist")
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # a corrupt or foreign file: say which, without torch's advice
            raise PosteriorFileError(
                f"{path} cannot be read ({type(err).__name__}); it is truncated or not a "
                "pyronas posterior: rerun the search with --resume"
            ) from err
        try:
            return cls.from_dict(data)
        except PosteriorFileError as err:
            raise PosteriorFileError(f"{path}: {err}") from None

    # ---------------------------------------------------------------- the mapping view

    def __getitem__(self, key: str) -> Any:
        if key == "format":
            return FORMAT
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(dataclasses.fields(self)) + 1
