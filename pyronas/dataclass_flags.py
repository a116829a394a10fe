"""Command-line flags made from the fields of a settings dataclass.

:func:`add_dataclass_flags` gives every field of a frozen settings class one ``--flag`` (the
field name with dashes) that defaults to ``None``, so that :func:`given_fields` returns only what
the user typed and the class's own defaults and checks apply to the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["add_dataclass_flags", "check_setting_keys", "given_fields"]


def _base_type(annotation: Any) -> Any:
    """``int`` for ``int | None``; the annotation itself otherwise."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    settings: type,
    help_texts: Mapping[str, str],
    choices: Mapping[str, Sequence[str]] | None = None,
    metavars: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """Add one flag per field of the dataclass ``settings`` to ``parser``.

    ``bool`` fields get ``--flag / --no-flag``; a tuple of floats takes that many numbers;
    mapping fields (set from a settings mapping only) get no flag. ``choices`` and ``metavars``
    (by field name) go to :meth:`argparse.ArgumentParser.add_argument`.
    """
    choices = choices or {}
    metavars = metavars or {}
    hints = typing.get_type_hints(settings)
    for f in dataclasses.fields(settings):
        kind = _base_type(hints[f.name])
        if typing.get_origin(kind) is dict or kind is dict:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "see --help"
        text = f"{help_texts.get(f.name, f.name.replace('_', ' '))} (default {default})"
        if f.name in choices:
            parser.add_argument(flag, choices=list(choices[f.name]), default=None, help=text)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=text)
        elif typing.get_origin(kind) is tuple:
            parts = typing.get_args(kind)
            parser.add_argument(flag, type=parts[0], nargs=len(parts), default=None, help=text,
                                metavar=metavars.get(f.name))
        else:
            parser.add_argument(flag, type=kind, default=None, help=text)


def given_fields(args: argparse.Namespace, settings: type) -> dict[str, Any]:
    """The fields of ``settings`` given on the command line (the flags not left at ``None``)."""
    names = {f.name for f in dataclasses.fields(settings)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def check_setting_keys(settings: type, values: Mapping[str, Any], what: str) -> None:
    """Raise ``ValueError`` for a key of ``values`` that is no field of ``settings``, naming
    the closest field and all of them (``what``: "compression", "proxyless", ...)."""
    names = [f.name for f in dataclasses.fields(settings)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown {what} setting {key!r}{hint} (settings: "
                             f"{', '.join(names)})")
