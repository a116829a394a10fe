"""Prior model files: one Pyro model of the architecture switches per file.

Every file (``hard``, ``ard``, ``laplace``, ``horseshoe``, or a user's ``.py`` file) follows one
contract (docs/contracts.md shows a complete new prior):

``init_hypers(space, *, <options with defaults>, cell_type_index=None) -> dict``
    Initial hyperparameters. The keyword parameters other than ``space`` and
    ``cell_type_index`` are the prior's options (:func:`prior_options`), their defaults the
    defaults. ``hypers["gamma"][site]`` holds the prior variance of every switch group,
    ``(cell_type, edge)`` / ``(cell_type, edge, op)``, where the prior has one.
``model(net, x, y, hypers, num_data) -> None``
    The Pyro model: ``pyro.sample`` of the switch sites under the switch plates, then the
    ``obs`` site (a scaled minibatch); :mod:`pyronas.models.common` holds the shared pieces.
``SITES`` (optional, default ``("edge_switch", "op_switch")``)
    Names of the switch sample sites.
``site_gamma(hypers, site) -> Tensor`` (optional, default: ``hypers["gamma"]`` per switch)
    Prior variance of every switch, what the engine prunes on.
``effective_gamma(hypers) -> dict`` (optional, default: ``hypers["gamma"]`` as it is)
    Effective prior variances per site, recomputed after every hyperparameter update.
``update_hypers(posterior, hypers) -> dict`` (optional)
    Closed-form type-II update from a diagonal Laplace posterior; without it the engine
    follows the evidence gradient of the entries named in ``hypers["learnable"]``.
``map_penalty(switches, hypers) -> Tensor`` (optional)
    Scalar MAP surrogate added to the mean minibatch loss (ARD-type priors); without it the
    MAP objective uses the model's log prior.
``map_proximal(switches, hypers, step) -> dict`` (optional)
    Proximal map of ``step * map_penalty`` (proximal SGD).

Use :func:`load_prior` to get a validated module with the defaults filled in,
:func:`list_priors` for the built-in names and :func:`prior_options` /
:func:`check_prior_options` for a prior's options.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import numbers
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "load_prior",
    "list_priors",
    "validate_prior",
    "prior_options",
    "check_prior_options",
    "REQUIRED",
    "OPTIONAL",
    "SHARED_MODULES",
    "WEIGHT_PRIORS",
]

REQUIRED: tuple[str, ...] = ("init_hypers", "model")
"""Names every prior file must define."""

OPTIONAL: tuple[str, ...] = (
    "update_hypers",
    "map_penalty",
    "map_proximal",
    "effective_gamma",
    "site_gamma",
    "prior_precision",
)
"""Functions a prior file may define; they must be callable when present. ``SITES``,
``site_gamma`` and ``effective_gamma`` default to :data:`pyronas.models.common.DEFAULTS`."""

SHARED_MODULES: frozenset[str] = frozenset({"common"})
"""Modules in this folder that are not priors (the shared building blocks)."""

WEIGHT_PRIORS: frozenset[str] = frozenset({"group_hard"})
"""Priors over network weights (network compression, :mod:`pyronas.compress`), not over the
architecture switches: imported directly, not listed by :func:`list_priors`."""

NOT_OPTIONS: tuple[str, ...] = ("space", "cell_type_index")
"""Parameters of ``init_hypers`` that are not options of the prior."""

_HERE = Path(__file__).resolve().parent


def list_priors() -> list[str]:
    """Names of the built-in prior files (``.py`` files here, not private, not shared)."""
    return sorted(
        p.stem
        for p in _HERE.glob("*.py")
        if not p.stem.startswith("_") and p.stem not in SHARED_MODULES | WEIGHT_PRIORS
    )


def _option_parameters(init_hypers: Any) -> list[inspect.Parameter]:
    params = list(inspect.signature(init_hypers).parameters.values())
    return [p for p in params[1:] if p.name not in NOT_OPTIONS]


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
    for name in (*REQUIRED, *OPTIONAL):
        if hasattr(module, name) and not callable(getattr(module, name)):
            problems.append(f"{name} is not callable")
    init = getattr(module, "init_hypers", None)
    if callable(init):
        for param in _option_parameters(init):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                problems.append(f"init_hypers takes *{param.name}: name every option")
            elif param.default is param.empty:
                problems.append(f"init_hypers option {param.name!r} has no default")
    if problems:
        raise ValueError(f"prior file {where} does not follow the contract: {'; '.join(problems)}")
    return module


def _with_defaults(module: ModuleType) -> ModuleType:
    """Give ``module`` the shared default of every optional entry it leaves out."""
    from pyronas.models.common import DEFAULTS

    for name, default in DEFAULTS.items():
        if not hasattr(module, name):
            setattr(module, name, default)
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
        The validated module; ``SITES``, ``site_gamma`` and ``effective_gamma`` are set to the
        defaults of :mod:`pyronas.models.common` where the file does not define them.

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
        module = importlib.import_module(f"{__name__}.{text}")
        return _with_defaults(validate_prior(module))

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
        hint = ""
        if isinstance(exc, ImportError) and "pyronas.models._common" in str(exc):
            hint = (" (pyronas.models._common is now pyronas.models.common, with switch_plates "
                    "and pyro.sample in the model instead of sample_switches: see "
                    "docs/contracts.md)")
        raise ValueError(f"prior file {text!r} failed to import: {exc}{hint}") from exc
    logger.info("loaded prior file %s", path)
    return _with_defaults(validate_prior(module, origin=str(path)))


def _as_prior(prior: ModuleType | str | Path) -> ModuleType:
    return load_prior(prior) if isinstance(prior, (str, Path)) else prior


def prior_options(prior: ModuleType | str | Path) -> dict[str, Any]:
    """The options of a prior and their defaults, in the order of ``init_hypers``.

    Parameters
    ----------
    prior
        A prior module (from :func:`load_prior`), a built-in name or a path to a prior file.

    Returns
    -------
    dict
        ``{option: default}``: the keyword parameters of ``init_hypers`` other than ``space``
        and ``cell_type_index``, e.g. ``{"scale_edge": 0.05, "scale_op": 0.05}`` for
        ``laplace``.
    """
    return {p.name: p.default for p in _option_parameters(_as_prior(prior).init_hypers)}


def check_prior_options(prior: ModuleType | str | Path, options: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` unless every entry of ``options`` is an option of ``prior``.

    Parameters
    ----------
    prior
        A prior module, a built-in name or a path to a prior file.
    options
        ``{option: value}``, e.g. from ``prior: {name: laplace, options: {scale_edge: 0.1}}``.

    Raises
    ------
    ValueError
        Naming the unknown option and the valid ones, or an option whose value is not a number
        where its default is one (an integer where the default is an integer).
    """
    module = _as_prior(prior)
    valid = prior_options(module)
    label = module.__name__.removeprefix(f"{__name__}.")
    for key, value in options.items():
        if key not in valid:
            names = ", ".join(valid) or "none"
            raise ValueError(f"prior {label!r} has no option {key!r}; its options: {names}")
        default = valid[key]
        if isinstance(default, bool) or not isinstance(default, numbers.Real):
            continue
        is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not is_number or (isinstance(default, numbers.Integral) and value != int(value)):
            kind = "an integer" if isinstance(default, numbers.Integral) else "a number"
            raise ValueError(
                f"prior {label!r} option {key!r} must be {kind} (default {default!r}), "
                f"got {value!r}"
            )
