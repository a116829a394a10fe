"""Reading and writing genotypes: the JSON format and the bundled cells.

Genotypes are stored as JSON (``pyronas-genotype/1``, see :mod:`pyronas.genotype`), never as
Python source; the bundled ones (``DARTS_V1``, ``DARTS_V2``, ``BAYESNAS_0.01``, ...) are the JSON
files of ``pyronas/genotype/bundled/``, loaded by name.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyronas.genotype.cell import Genotype
from pyronas.genotype.nodes import Cell, GenotypeError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

FORMAT = "pyronas-genotype/1"
"""Value of the ``format`` field of genotype JSON files."""

_FIELDS = {
    "format",
    "space",
    "num_inputs",
    "normal",
    "normal_concat",
    "reduce",
    "reduce_concat",
    "nb201_string",
}


def genotype_to_dict(genotype: Genotype) -> dict[str, Any]:
    """The JSON-ready dict of a genotype (format ``pyronas-genotype/1``).

    ``nb201_string`` is included only when the genotype has one.
    """

    def cell(nodes: Cell | None) -> list | None:
        return None if nodes is None else [[[op, src] for op, src in n] for n in nodes]

    data: dict[str, Any] = {
        "format": FORMAT,
        "space": genotype.space,
        "num_inputs": genotype.num_inputs,
        "normal": cell(genotype.normal),
        "normal_concat": list(genotype.normal_concat),
        "reduce": cell(genotype.reduce),
        "reduce_concat": None if genotype.reduce_concat is None else list(genotype.reduce_concat),
    }
    if genotype.nb201_string is not None:
        data["nb201_string"] = genotype.nb201_string
    return data


def genotype_from_dict(data: Any, source: str = "genotype") -> Genotype:
    """Build and validate a genotype from its JSON dict.

    Parameters
    ----------
    data
        The decoded JSON object.
    source
        Where it came from (a file name), used in error messages.
    """
    if not isinstance(data, dict):
        raise GenotypeError(f"{source}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise GenotypeError(f"{source}: unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}")
    for key in ("format", "normal", "normal_concat"):
        if key not in data:
            raise GenotypeError(f"{source}: missing field {key!r}")
    if data["format"] != FORMAT:
        raise GenotypeError(f"{source}: format {data['format']!r} is not {FORMAT!r}")
    try:
        return Genotype(
            normal=data["normal"],
            normal_concat=data["normal_concat"],
            reduce=data.get("reduce"),
            reduce_concat=data.get("reduce_concat"),
            num_inputs=data.get("num_inputs", 2),
            space=data.get("space"),
            nb201_string=data.get("nb201_string"),
        )
    except GenotypeError as err:
        raise GenotypeError(f"{source}: {err}") from None


def genotype_to_json(genotype: Genotype) -> str:
    """JSON text of a genotype, one node per line."""
    d = genotype_to_dict(genotype)
    lines = ["{"]
    items = list(d.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if key in ("normal", "reduce") and value is not None:
            nodes = ",\n    ".join(json.dumps(n) for n in value)
            lines.append(f'  "{key}": [\n    {nodes}\n  ]{comma}')
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_genotype(genotype: Genotype, path: str | Path) -> Path:
    """Write a genotype as JSON to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(genotype_to_json(genotype), encoding="utf-8")
    return path


def _bundled_dir() -> Traversable:
    return resources.files("pyronas.genotype.bundled")


def list_bundled() -> list[str]:
    """Names of the bundled genotypes (``DARTS_V1``, ``DARTS_V2``, ``BAYESNAS_0.01``, ...)."""
    return sorted(
        p.name[: -len(".json")] for p in _bundled_dir().iterdir() if p.name.endswith(".json")
    )


def _parse_json_text(text: str, source: str) -> Genotype:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise GenotypeError(f"{source}: malformed JSON: {err}") from None
    return genotype_from_dict(data, source)


def load_genotype(name_or_path: str | Path) -> Genotype:
    """Load a genotype from a JSON file, or a bundled one by name (case-insensitive).

    An existing file wins over a bundled name. The JSON is parsed, never executed.
    """
    path = Path(name_or_path)
    if path.is_file():
        return _parse_json_text(path.read_text(encoding="utf-8"), str(path))
    by_upper = {name.upper(): name for name in list_bundled()}
    name = by_upper.get(str(name_or_path).upper())
    if name is None:
        raise GenotypeError(
            f"no genotype file {str(name_or_path)!r} and no bundled genotype of that name; "
            f"bundled: {', '.join(by_upper.values())}"
        )
    text = (_bundled_dir() / f"{name}.json").read_text(encoding="utf-8")
    return _parse_json_text(text, f"bundled genotype {name}")
