"""Every declared dependency is used, and everything the installed package imports is declared
(pyproject.toml); development tools stay out of the wheel instead of shipping broken."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Imported only where the extra named is there by construction.
EXTRA_IMPORTS = {
    "pytest": ("testing", {"ecokit/pytest_plugin.py", "ecokit/conformance/test_mqtt_conformance.py"}),
}
# typer < 0.22 raises click's own exceptions; the import is guarded (typer >= 0.22 vendors click).
GUARDED = {"click": {"ecokit/cli/__init__.py"}}
# Loaded by name, not imported: the file that names it must still say so.
BY_NAME = {"websockets": ("ecokit/console/__main__.py", 'ws="websockets-sansio"')}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _excluded(relpath: str) -> bool:
    excluded = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["exclude"]
    return any(relpath == e or relpath.startswith(e.rstrip("/") + "/") for e in excluded)


def shipped_imports() -> dict[str, set[str]]:
    """Top-level third-party module → the shipped files importing it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "ecokit").rglob("*.py")):
        relpath = str(path.relative_to(ROOT))
        if _excluded(relpath):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top != "ecokit" and top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, set()).add(relpath)
    return found


def distribution(module: str) -> str:
    dists = packages_distributions().get(module)
    assert dists, f"{module} is imported but no installed distribution provides it"
    return dists[0].lower().replace("_", "-")


def test_everything_the_package_imports_is_declared() -> None:
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {name: {_name(r) for r in reqs} for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
    undeclared = []
    for module, files in shipped_imports().items():
        if module in GUARDED and files <= GUARDED[module]:
            continue
        dist = distribution(module)
        if dist in declared:
            continue
        extra = EXTRA_IMPORTS.get(module)
        if extra and dist in extras[extra[0]] and files <= extra[1]:
            continue
        undeclared.append(f"{module} ({dist}) in {sorted(files)}")
    assert undeclared == [], "imported by the installed package but not declared in pyproject.toml"


def test_every_declared_dependency_is_used() -> None:
    used = {distribution(module) for module in shipped_imports() if module not in GUARDED}
    for dist, (relpath, naming) in BY_NAME.items():
        assert naming in (ROOT / relpath).read_text(), f"{dist} is declared for {relpath}, which no longer names it"
        used.add(dist)
    unused = sorted({_name(r) for r in PYPROJECT["project"]["dependencies"]} - used)
    assert unused == [], "declared in pyproject.toml but imported nowhere in the package"


def test_development_tools_are_left_out_of_the_wheel() -> None:
    for tool in ("ecokit/dashboards.py", "ecokit/schemacheck/openapi.py"):
        assert _excluded(tool), tool
    dev_only = {"grafana_foundation_sdk", "jsonschema", "pyhocon", "referencing"}
    leaking = {m: f for m, f in shipped_imports().items() if m in dev_only}
    assert leaking == {}, "a shipped module imports a development-only library"
