"""The layering of docs/architecture.md, checked on the import statements of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pyronas": ROOT / "pyronas", "pyronas.models": ROOT / "models",
            "pyronas.inference": ROOT / "inference"}  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """``(imported module, names)`` of every pyronas import of module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("pyronas"):
                found.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("pyronas")]
    return found


def _inside(target: str, prefixes: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


# module prefix -> the only pyronas packages its modules may import
ALLOWED = {
    "pyronas.inference": ("pyronas.inference",),
    "pyronas.data": ("pyronas.data",),
    "pyronas.genotype": ("pyronas.genotype", "pyronas.space"),
    "pyronas.models": ("pyronas.models", "pyronas.space", "pyronas.inference"),
    "pyronas.space": (),
    "pyronas.runtime": (),
    "pyronas.ops": (),
    "pyronas.supernet": ("pyronas.ops", "pyronas.space"),
    "pyronas.compress.networks": ("pyronas.compress",),
    "pyronas.compress.surgery": ("pyronas.compress",),
    "pyronas.compress.baselines": ("pyronas.compress",),
    "pyronas.proxyless.tree_ops": (),
    "pyronas.proxyless.tree": ("pyronas.proxyless", "pyronas.genotype"),
    "pyronas.proxyless.tree_cell": ("pyronas.proxyless", "pyronas.evalnet"),
    "pyronas.proxyless.pyramidnet": ("pyronas.proxyless", "pyronas.evalnet"),
    "pyronas.proxyless.space": ("pyronas.proxyless", "pyronas.space"),
    "pyronas.proxyless.draw": ("pyronas.proxyless",),
}

# module prefix -> pyronas packages its modules must never import
FORBIDDEN = {
    "pyronas.settings": ("pyronas.search", "pyronas.strategies", "pyronas.run_setup",
                         "pyronas.dispatch", "pyronas.cli"),
    "pyronas.run_setup": ("pyronas.search", "pyronas.strategies", "pyronas.dispatch"),
    "pyronas.search": ("pyronas.strategies", "pyronas.dispatch", "pyronas.cli"),
    "pyronas.strategies": ("pyronas.search", "pyronas.dispatch", "pyronas.cli"),
}  # fmt: skip


@pytest.mark.parametrize("prefix", sorted(ALLOWED))
def test_lower_layers_import_only_what_they_may(prefix: str) -> None:
    allowed = ALLOWED[prefix]
    bad = [
        f"{name} imports {target}"
        for name in MODULES if _inside(name, (prefix,))
        for target, _ in _imports(name) if not _inside(target, allowed)
    ]  # fmt: skip
    assert not bad, bad


@pytest.mark.parametrize("prefix", sorted(FORBIDDEN))
def test_no_upward_imports(prefix: str) -> None:
    bad = [
        f"{name} imports {target}"
        for name in MODULES if _inside(name, (prefix,))
        for target, _ in _imports(name) if _inside(target, FORBIDDEN[prefix])
    ]  # fmt: skip
    assert not bad, bad


def test_no_private_names_imported_across_modules() -> None:
    bad = [
        f"{name} imports {target}.{alias}"
        for name in MODULES
        for target, aliases in _imports(name) if target != name
        for alias in aliases if alias.startswith("_") and not alias.startswith("__")
    ]  # fmt: skip
    assert not bad, bad


def test_every_package_module_is_seen() -> None:
    for expected in ("pyronas.search", "pyronas.models.hard", "pyronas.inference.type2",
                     "pyronas.data.datasets", "pyronas.genotype.derivation"):
        assert expected in MODULES
