"""Prior model files: one Pyro model of the architecture switches per file.

Every file (``hard``, ``ard``, ``laplace``, ``horseshoe``, or a user's ``.py`` file) follows one
contract:

``SITES``
    Names of the switch sample sites, ``("edge_switch", "op_switch")``.
``init_hypers(space, **options) -> dict``
    Initial hyperparameters; ``hypers["gamma"][site]`` holds the effective prior variance of every
    switch group, ``(cell_type, edge)`` / ``(cell_type, edge, op)``.
``model(net, x, y, hypers, num_data) -> None``
    The Pyro model: the switch sites and the ``obs`` site (a scaled minibatch).
``update_hypers(posterior, hypers) -> dict`` (optional)
    Closed-form type-II update from a diagonal Laplace posterior.
``map_penalty(switches, hypers) -> Tensor`` (optional)
    Scalar MAP surrogate added to the mean minibatch loss (ARD-type priors).
``effective_gamma(hypers) -> dict`` (optional)
    Effective prior variances per site, recomputed after gradient updates of the entries named
    in ``hypers["learnable"]``.

Use :func:`load_prior` to get a validated module and :func:`list_priors` for the built-in names.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

__all__ = ["load_prior", "list_priors", "validate_prior", "REQUIRED", "OPTIONAL"]

REQUIRED: tuple[str, ...] = ("SITES", "init_hypers", "model")
"""Names every prior file must define."""

OPTIONAL: tuple[str, ...] = (
    "update_hypers",
    "map_penalty",
    "map_proximal",
    "effective_gamma",
    "site_gamma",
)
"""Functions a prior file may define; they must be callable when present."""

_HERE = Path(__file__).resolve().parent


def list_priors() -> list[str]:
    """Names of the built-in prior files (``.py`` files here not starting with ``_``)."""
    return sorted(p.stem for p in _HERE.glob("*.py") if not p.stem.startswith("_"))


def validate_prior(module: ModuleType, origin: str | None = None) -> ModuleType:
    """Check that ``module`` follows the prior-file contract and return it.

    Raises
    ------
    ValueError
        Naming every missing or malformed entry.
    """
    where = origin or module.__name__
    problems: list[str] = []
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    sites = getattr(module, "SITES", None)
    if sites is not None and not (
        isinstance(sites, (tuple, list)) and sites and all(isinstance(s, str) for s in sites)
    ):
        problems.append(f"SITES must be a non-empty tuple of site names, got {sites!r}")
    for name in ("init_hypers", "model", *OPTIONAL):
        if hasattr(module, name) and not callable(getattr(module, name)):
            problems.append(f"{name} is not callable")
    if problems:
        raise ValueError(f"prior file {where} does not follow the contract: {'; '.join(problems)}")
    return module


def load_prior(name_or_path: str | Path) -> ModuleType:
    """Load a prior model file by built-in name or by path to a ``.py`` file.

    Parameters
    ----------
    name_or_path
        A name from :func:`list_priors` (``"hard"``) or a path to a Python file.

    Returns
    -------
    ModuleType
        The validated module.

    Raises
    ------
    ValueError
        Unknown name, missing file, a file that fails to import, or a contract violation.
    """
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or text.endswith(".py") or "/" in text or "\\" in text
    if not is_path:
        if text not in list_priors():
            raise ValueError(f"unknown prior {text!r}; known: {list_priors()} or a path to a .py")
        return validate_prior(importlib.import_module(f"{__name__}.{text}"))

    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(f"prior file {text!r} does not exist")
    if path.suffix != ".py":
        raise ValueError(f"prior file {text!r} is not a .py file")
    module_name = f"pyronas_prior_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import prior file {text!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ValueError(f"prior file {text!r} failed to import: {exc}") from exc
    logger.info("loaded prior file %s", path)
    return validate_prior(module, origin=str(path))
