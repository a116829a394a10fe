"""Search settings: one typed, nested home for every option of a search.

:class:`SearchSettings` holds seven sections (dataclasses): :class:`DataSettings`,
:class:`SupernetSettings`, :class:`PriorSettings` (a prior name or file and its options),
:class:`Type2Settings`, :class:`TrainingSettings`, :class:`RunSettings` and
:class:`StrategySettings` (the baselines). Everything else derives from these fields:

* the ``pyronas search`` flags (:func:`add_search_flags`: one flag per field, its help text
  from the field),
* the YAML schema: nested sections, ``prior: {name: laplace, options: {scale_edge: 0.1}}``;
  the flat keys of older presets and run folders (``lr: 0.1``, ``prior: hard``,
  ``lambda_edge: 0.01``) still load, each mapped to its unique field or prior option,
* the resolved ``config.yaml`` of a run folder (:meth:`SearchSettings.to_dict`),
* the engine settings (:func:`type2_config` builds :class:`~pyronas.inference.type2.Type2Config`
  from the fields marked with its attribute name; their defaults are the engine's).

:func:`load_search_settings` reads a file (or preset) and overrides and checks every choice
before anything else happens: the prior and its contract, its options, the curvature backend,
the search space, the strategy, the data set, numbers (positive, finite) and unknown keys (named
with the closest valid key). Default prior options (lambda, scales) live in the prior file only:
the keyword parameters of its ``init_hypers`` and their defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyronas.config import ConfigError, preset_layers, suggest
from pyronas.data import DATASETS
from pyronas.inference.type2 import LAPLACE_FORMS

__all__ = [
    "DATASETS",
    "PRIOR_SHORTCUTS",
    "STRATEGY_NAMES",
    "DataSettings",
    "PriorSettings",
    "RunSettings",
    "SearchSettings",
    "StrategySettings",
    "SupernetSettings",
    "TrainingSettings",
    "Type2Settings",
    "add_search_flags",
    "flat_choices",
    "flag_overrides",
    "load_search_settings",
    "prior_options",
    "type2_config",
]

STRATEGY_NAMES = ("bayesnas", "darts1", "darts2", "random")
SHORTCUT_HELP = {
    "lambda_edge": "price of an edge: keep an edge whose removal would raise the mean training "
    "loss by more than lambda / 2 nats",
    "lambda_op": "price of an op, as --lambda-edge; larger values keep fewer ops",
    "curvature_multiplier": "scale of the curvature in the hard / ard update (the batch size "
    "reproduces the authors' summed curvature)",
}
PRIOR_SHORTCUTS = tuple(SHORTCUT_HELP)
"""Prior options that also have a flag of their own (``--lambda-edge``)."""


def _engine_default(name: str) -> Any:
    """The default of a :class:`~pyronas.inference.type2.Type2Config` attribute."""
    from pyronas.inference.type2 import Type2Config

    return {f.name: f.default for f in dataclasses.fields(Type2Config)}[name]


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    positive: bool = False,
    engine: str | None = None,
    flat: str | None = None,
) -> Any:
    """A settings field.

    Parameters
    ----------
    default
        Its default value.
    help
        One line for ``--help`` and the docs.
    choices
        The allowed values (checked on load).
    minimum, positive
        Lower bound (inclusive), or ``> 0``.
    engine
        The :class:`~pyronas.inference.type2.Type2Config` attribute it sets.
    flat
        Its key in a flat config (default: the field name).
    """
    meta = {"help": help, "choices": choices, "minimum": minimum, "positive": positive,
            "engine": engine, "flat": flat}
    return field(default=default, metadata=meta)


@dataclass
class DataSettings:
    """The data set and its splits."""

    dataset: str = option("digits", "data set", choices=DATASETS)
    data_dir: str | None = option(None, "folder holding the data set files")
    download: bool = option(False, "download the data set when it is missing")
    train_size: int | None = option(
        None, "subsample the official training set to this many images (stratified)",
        positive=True)
    image_size: int | None = option(
        None, "resize images to this side length once at load time", positive=True)


@dataclass
class SupernetSettings:
    """The search space and the supernet built on it."""

    space: str = option("bayesnas8", "search space (bayesnas8, darts or nb201)")
    channels: int = option(8, "initial channels C of the supernet", positive=True)
    layers: int = option(5, "number of cells of the supernet", positive=True)
    tied: bool = option(True, "one set of switches per cell type (else one per cell)")


@dataclass
class PriorSettings:
    """The prior model: a name in ``models/`` or a path to a model file, and its options (the
    keyword parameters of its ``init_hypers``)."""

    name: str = option("hard", "prior model: a name in models/ (hard, ard, laplace, horseshoe) "
                       "or a path to a model file", flat="prior")
    options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "options of the prior's init_hypers", "options": True})


@dataclass
class Type2Settings:
    """The type-II loop: iterations, curvature, pruning and the genotype rule."""

    t_max: int = option(_engine_default("t_max"), "number of type-II iterations (MAP epoch + "
                        "Laplace + update)", positive=True, engine="t_max")
    schedule: str = option(
        _engine_default("schedule"), "paper (one epoch then update, t_max times) or released "
        "(warm-up on 10%% with switches frozen, switch epoch on 90%%, one update)",
        choices=("paper", "released"), engine="schedule")
    curvature: str = option(_engine_default("backend"), "curvature backend (ggn, fisher, exact, "
                            "layerwise or a registered one)", engine="backend")
    curvature_batches: int = option(
        _engine_default("curvature_batches"), "held-out batches the curvature is averaged over",
        positive=True, engine="curvature_batches")
    laplace: str = option(
        _engine_default("laplace"), "Laplace posterior over the switches: diag (diagonal of the "
        "curvature), full (full GGN matrix, evidence with its log-determinant, updates from "
        "its marginal variances) or block (block-diagonal per cell type)",
        choices=LAPLACE_FORMS, engine="laplace")
    threshold: float | None = option(
        _engine_default("threshold"), "prune a switch when its prior variance gamma falls "
        "below this", minimum=0.0, engine="threshold")
    z_threshold: float | None = option(
        _engine_default("z_threshold"), "also prune during the search when |mean| / sd falls "
        "below this", minimum=0.0, engine="z_threshold")
    z_select: float | None = option(
        None, "the genotype also needs a posterior |mean| / sd of at least this (default: off "
        "for the hard and ard priors, 2 for the others; 0 turns it off)", minimum=0.0)


@dataclass
class TrainingSettings:
    """SGD of the network weights and the switches."""

    epochs: int = option(_engine_default("epochs_per_iter"), "MAP epochs per type-II iteration",
                         positive=True, engine="epochs_per_iter")
    batch_size: int = option(32, "minibatch size", positive=True)
    lr: float = option(_engine_default("lr"), "SGD step of the network weights", positive=True,
                       engine="lr")
    switch_lr: float = option(0.1, "SGD step of the switches", positive=True, engine="site_lr")
    momentum: float = option(_engine_default("momentum"), "SGD momentum", minimum=0.0,
                             engine="momentum")
    weight_decay: float = option(_engine_default("weight_decay"),
                                 "weight decay of the network weights", minimum=0.0,
                                 engine="weight_decay")
    grad_clip: float | None = option(
        _engine_default("grad_clip"), "clip the gradient norm of the weights and, separately, "
        "of the switches (0 or null: off)", minimum=0.0, engine="grad_clip")
    bn_batches: int = option(4, "training batches that re-estimate batch-norm statistics per "
                             "iteration (0: off)", minimum=0)


@dataclass
class RunSettings:
    """Where and how the run executes, and what it reports."""

    seed: int = option(0, "random seed (the root of every seed stream)", minimum=0)
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    num_threads: int | None = option(None, "torch CPU threads (default: torch's)", positive=True)
    progress: bool = option(_engine_default("progress"), "show progress bars", engine="progress")
    out: str | None = option(None, "run folder to write (default runs/<strategy>-<time>)")
    resume: bool = option(False, "continue the run in --out from its last checkpoint")
    overwrite: bool = option(False, "replace what --out holds (another run, or files that "
                             "pyronas did not write)")
    posterior_draws: int = option(25, "posterior draws per chain of the ArviZ export",
                                  positive=True)
    loglik_batches: int = option(1, "validation batches of the ArviZ log likelihood",
                                 positive=True)


@dataclass
class StrategySettings:
    """The search strategy and the options of the baselines (DARTS, random search)."""

    name: str = option("bayesnas", "search strategy: bayesnas, darts1 / darts2 (DARTS first / "
                       "second order) or random", choices=STRATEGY_NAMES, flat="strategy")
    search_epochs: int = option(6, "total epochs of DARTS / random search with weight sharing",
                                positive=True)
    arch_lr: float = option(3e-4, "DARTS architecture Adam step", positive=True)
    arch_weight_decay: float = option(1e-3, "DARTS architecture weight decay", minimum=0.0)
    lr_min: float = option(1e-3, "floor of the cosine schedule of the baselines' weights",
                           minimum=0.0)
    alpha_init_std: float = option(1e-3, "sd of the initial DARTS architecture weights",
                                   minimum=0.0)
    random_mode: str = option("ws", "random search: ws (weight sharing) or plain (a random "
                              "cell, no training)", choices=("ws", "plain"))
    num_candidates: int = option(20, "cells scored by random search with weight sharing",
                                 positive=True)


SECTIONS: dict[str, type] = {
    "data": DataSettings,
    "supernet": SupernetSettings,
    "prior": PriorSettings,
    "type2": Type2Settings,
    "training": TrainingSettings,
    "run": RunSettings,
    "strategy": StrategySettings,
}
"""Section name -> its dataclass, in the order of ``config.yaml``."""


@dataclass
class SearchSettings:
    """Every option of a search, by section (see the module docstring)."""

    data: DataSettings = field(default_factory=DataSettings)
    supernet: SupernetSettings = field(default_factory=SupernetSettings)
    prior: PriorSettings = field(default_factory=PriorSettings)
    type2: Type2Settings = field(default_factory=Type2Settings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    run: RunSettings = field(default_factory=RunSettings)
    strategy: StrategySettings = field(default_factory=StrategySettings)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (the YAML schema of ``config.yaml``)."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def flat(self) -> dict[str, Any]:
        """Flat view: one key per field (``prior``, ``strategy`` for the names) plus the prior
        options, as the older flat configs spelled them."""
        out: dict[str, Any] = {}
        for section, f in _leaf_fields():
            out[_flat_key(section, f)] = getattr(getattr(self, section), f.name)
        out.update(self.prior.options)
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | SearchSettings) -> SearchSettings:
        """Validated settings from a nested or flat mapping (or settings, checked again)."""
        if isinstance(data, SearchSettings):
            data = data.to_dict()
        return _build([_nest(data, "settings")])


# --------------------------------------------------------------------------------------------
# field tables


def _leaf_fields() -> Iterator[tuple[str, dataclasses.Field]]:
    """``(section, field)`` of every field except the prior options."""
    for section, kind in SECTIONS.items():
        for f in dataclasses.fields(kind):
            if not f.metadata.get("options"):
                yield section, f


def _flat_key(section: str, f: dataclasses.Field) -> str:
    return f.metadata.get("flat") or f.name


FLAT_KEYS: dict[str, tuple[str, str]] = {
    _flat_key(section, f): (section, f.name) for section, f in _leaf_fields()
}
"""Flat key -> ``(section, field)``; every flat key names exactly one field."""
assert len(FLAT_KEYS) == sum(1 for _ in _leaf_fields()), "flat keys must be unique"


def _field(section: str, name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}[name]


def _field_types(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


def _allowed(hint: Any) -> tuple[tuple[type, ...], bool]:
    """The Python types a hint admits and whether it admits None."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    nullable = type(None) in args
    kinds = tuple(a for a in args if a is not type(None))
    return kinds, nullable


# --------------------------------------------------------------------------------------------
# prior options


def prior_options(prior: Any) -> dict[str, Any]:
    """The options of a prior module and their defaults (:func:`pyronas.models.prior_options`)."""
    from pyronas import models

    return dict(models.prior_options(prior))


def _check_prior(prior_section: dict[str, Any], loose: dict[str, Any]) -> PriorSettings:
    """Load the prior (contract checked) and resolve its options: the given ones over the
    prior's defaults. ``loose`` are flat keys that name no settings field: each must be an
    option of the prior, else it is an unknown key (named with the closest valid one)."""
    from pyronas.models import check_prior_options, load_prior

    name = prior_section.get("name", PriorSettings.name)
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise ConfigError(f"prior name must be a string, got {name!r}")
    try:
        prior = load_prior(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    accepted = prior_options(prior)
    valid = ", ".join(accepted) or "none"
    for key in loose:
        if key not in accepted and key not in PRIOR_SHORTCUTS:
            known = [*FLAT_KEYS, *SECTIONS, *accepted]
            raise ConfigError(f"unknown config key {key!r}{suggest(key, known)}")
    given = {**loose, **(prior_section.get("options") or {})}
    for key, value in given.items():
        if key not in accepted:
            raise ConfigError(
                f"prior {name!r} has no option {key!r}{suggest(key, accepted)}; its options: "
                f"{valid}"
            )
        given[key] = _check_option(key, value, accepted[key])
    options = {k: given.get(k, v) for k, v in accepted.items()}
    try:
        check_prior_options(prior, options)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return PriorSettings(name=name, options=options)


def _check_option(key: str, value: Any, default: Any) -> Any:
    """A prior option's value: a finite number where the default is a number."""
    if not isinstance(default, (int, float)) or isinstance(default, bool):
        return value
    if isinstance(value, str):
        value = _to_float(f"prior option {key!r}", value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"prior option {key!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"prior option {key!r} must be finite, got {value!r}")
    return float(value) if isinstance(default, float) else value


# --------------------------------------------------------------------------------------------
# loading


def _nest(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A nested or flat mapping as ``{section: {field: value}}``; flat keys that name no field
    are kept under ``("prior", "loose")`` as candidate prior options."""
    out: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    loose: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, Mapping):
            section = dict(value)
            if key == "prior":
                options = section.get("options")
                if options is not None and not isinstance(options, Mapping):
                    raise ConfigError(f"{where}: prior options must be a mapping, got {options!r}")
                if options is not None:
                    section["options"] = dict(options)
            out[key].update(section)
        elif key in FLAT_KEYS:
            section, name = FLAT_KEYS[key]
            out[section][name] = value
        else:
            loose[key] = value
    out["prior"].setdefault("options", {})
    out["prior"]["loose"] = loose
    return out


def _merge(layers: Iterable[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    merged["prior"] = {"options": {}, "loose": {}}
    for layer in layers:
        for section, values in layer.items():
            values = dict(values)
            if section == "prior":
                current = merged["prior"].get("name", PriorSettings.name)
                if "name" in values and values["name"] != current:
                    # another prior: the options of the previous one do not carry over
                    merged["prior"] = {"options": {}, "loose": {}}
                options, loose = values.pop("options", {}), values.pop("loose", {})
                # a later layer wins whether it spells an option nested or flat
                for key in options:
                    merged["prior"]["loose"].pop(key, None)
                for key in loose:
                    merged["prior"]["options"].pop(key, None)
                merged["prior"]["options"].update(options)
                merged["prior"]["loose"].update(loose)
            merged[section].update(values)
    return merged


def _to_float(what: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{what} must be a number, got {value!r}") from None


def _check_value(section: str, name: str, value: Any, hint: Any) -> Any:
    """``value`` coerced (paths to str, number strings to float) and checked."""
    what = f"config key {section}.{name}"
    meta = _field(section, name).metadata
    kinds, nullable = _allowed(hint)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{what} may not be null")
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if float in kinds and isinstance(value, str):
        value = _to_float(what, value)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds) + (" or null" if nullable else "")
        raise ConfigError(f"{what} must be {names}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta.get("positive") and not value > 0:
            raise ConfigError(f"{what} must be positive, got {value!r}")
        minimum = meta.get("minimum")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{what} must be at least {minimum}, got {value!r}")
    return value


def _check_choices(settings: SearchSettings) -> None:
    """The choices whose valid values live in registries: space, curvature backend."""
    import pyronas.inference  # noqa: F401  (registers every curvature backend)
    from pyronas.inference.curvature import BACKENDS
    from pyronas.space import SPACES

    if settings.supernet.space not in SPACES:
        raise ConfigError(
            f"unknown search space {settings.supernet.space!r}"
            f"{suggest(settings.supernet.space, SPACES)}; known: {', '.join(sorted(SPACES))}"
        )
    if settings.type2.curvature not in BACKENDS:
        raise ConfigError(
            f"unknown curvature backend {settings.type2.curvature!r}"
            f"{suggest(settings.type2.curvature, BACKENDS)}; known: {', '.join(sorted(BACKENDS))}"
        )
    device = settings.run.device
    kind, _, index = device.partition(":")
    if device != "auto" and (kind not in ("cpu", "cuda") or (index and not index.isdigit())):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def _build(layers: list[dict[str, Any]]) -> SearchSettings:
    """Validated settings of nested layers (:func:`_nest`), later layers winning."""
    merged = _merge(layers)
    prior_section = merged.pop("prior")
    loose = prior_section.pop("loose")
    sections: dict[str, Any] = {}
    for section, values in merged.items():
        hints = _field_types(section)
        for name in values:
            if name not in hints:
                raise ConfigError(
                    f"unknown config key {section}.{name}{suggest(name, hints)}; "
                    f"{section} has: {', '.join(hints)}"
                )
        sections[section] = SECTIONS[section](
            **{k: _check_value(section, k, v, hints[k]) for k, v in values.items()}
        )
    unknown = [k for k in prior_section if k not in ("name", "options")]
    if unknown:
        raise ConfigError(f"unknown config key prior.{unknown[0]}; prior has: name, options")
    sections["prior"] = _check_prior(prior_section, loose)
    settings = SearchSettings(**sections)
    _check_choices(settings)
    _check_prior_values(settings)
    return settings


def _check_prior_values(settings: SearchSettings) -> None:
    """The prior's own checks of its option values (``lambda_edge`` must be positive, ...): its
    ``init_hypers`` run once on the search space, before any data is read."""
    import inspect

    from pyronas.models import load_prior
    from pyronas.space import get_space

    prior = load_prior(settings.prior.name)
    if next(iter(inspect.signature(prior.init_hypers).parameters), None) != "space":
        return
    try:
        prior.init_hypers(get_space(settings.supernet.space), **settings.prior.options)
    except ValueError as err:
        raise ConfigError(f"prior {settings.prior.name!r}: {err}") from None


def load_search_settings(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> SearchSettings:
    """Defaults, then the YAML file or preset (and its ``base`` chain), then ``overrides``.

    Parameters
    ----------
    path
        A YAML file, a preset name, or None for the defaults alone.
    overrides
        Nested (``{"training": {"lr": 0.1}}``) or flat (``{"lr": 0.1}``) values.

    Raises
    ------
    ConfigError
        Any key, value or choice that is not valid (see the module docstring); raised before
        any data is read or any folder is written.
    """
    layers = []
    if path is not None:
        for where, data in preset_layers(path):
            layers.append(_nest(data, str(where)))
    layers.append(_nest(dict(overrides or {}), "overrides"))
    try:
        return _build(layers)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None


def flat_choices() -> dict[str, tuple[Any, ...]]:
    """Flat key -> valid values, for the fields with a fixed set (and the search space)."""
    from pyronas.space import SPACES

    out = {_flat_key(section, f): f.metadata["choices"] for section, f in _leaf_fields()
           if f.metadata.get("choices")}
    out["space"] = tuple(SPACES)
    return out


def type2_config(settings: SearchSettings, **extra: Any) -> Any:
    """The :class:`~pyronas.inference.type2.Type2Config` of the settings: every field marked
    ``engine=<attribute>`` sets that attribute; ``extra`` sets others."""
    from pyronas.inference.type2 import Type2Config

    values = {
        f.metadata["engine"]: getattr(getattr(settings, section), f.name)
        for section, f in _leaf_fields()
        if f.metadata.get("engine")
    }
    return Type2Config(**values, **extra)


# --------------------------------------------------------------------------------------------
# command line


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_search_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per settings field (``--lr``, ``--t-max``, ``--prior``, ``--strategy``), one
    group per section, plus ``--prior-option KEY=VALUE`` (repeatable) and the shortcuts
    ``--lambda-edge``, ``--lambda-op``, ``--curvature-multiplier`` for prior options. Every
    flag defaults to None (not given); :func:`flag_overrides` collects the given ones."""
    for section, kind in SECTIONS.items():
        about = " ".join((kind.__doc__ or "").split("\n\n")[0].split()).replace("``", "")
        group = parser.add_argument_group(section, about)
        hints = _field_types(section)
        for f in dataclasses.fields(kind):
            if f.metadata.get("options"):
                continue
            key = _flat_key(section, f)
            kinds, _ = _allowed(hints[f.name])
            text = f.metadata["help"]
            if f.default is not None and f.default is not dataclasses.MISSING:
                text += f" (default {f.default})"
            dest = f"settings:{section}.{f.name}"
            if bool in kinds:
                group.add_argument(_flag(key), dest=dest, action=argparse.BooleanOptionalAction,
                                   default=None, help=text)
            else:
                kind_ = kinds[0] if kinds[0] in (int, float) else str
                group.add_argument(_flag(key), dest=dest, type=kind_, default=None, help=text,
                                   metavar=key.upper())
        if section == "prior":
            group.add_argument("--prior-option", dest="settings:prior.option", action="append",
                               default=None, metavar="KEY=VALUE",
                               help="an option of the prior's init_hypers (repeatable), e.g. "
                               "scale_edge=0.1 for laplace, tau0=0.5 for horseshoe")
            for key, about in SHORTCUT_HELP.items():
                group.add_argument(_flag(key), dest=f"settings:prior.options.{key}", type=float,
                                   default=None, metavar=key.split("_")[0].upper(),
                                   help=f"{about}; the prior option {key} (default: the prior "
                                   "file's; an error for a prior without this option)")


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The nested overrides of the flags given on the command line."""
    from pyronas.config import parse_overrides

    out: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith("settings:") or value is None:
            continue
        path = dest.removeprefix("settings:")
        if path == "prior.option":
            options.update(parse_overrides(value))
        elif path.startswith("prior.options."):
            options[path.removeprefix("prior.options.")] = value
        else:
            section, name = path.split(".")
            out.setdefault(section, {})[name] = os.fspath(value) if isinstance(
                value, os.PathLike) else value
    if options:
        out.setdefault("prior", {})["options"] = options
    return out
