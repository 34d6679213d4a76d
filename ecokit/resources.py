"""Where the data that ships with ecokit lives: templates, profiles, dashboards.

In a wheel they sit under ``ecokit/_data/``; in a source checkout (and an editable
install) they are the top-level folders of the repository.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_SOURCE_LAYOUT = {"templates": "templates", "profiles": "infra/profiles", "dashboards": "dashboards"}


@cache
def data_dir(kind: str) -> Path:
    """The folder holding shipped data of ``kind`` (templates, profiles, dashboards)."""
    installed = _PACKAGE / "_data" / kind
    if installed.is_dir():
        return installed
    source = _PACKAGE.parent / _SOURCE_LAYOUT[kind]
    if source.is_dir():
        return source
    raise FileNotFoundError(f"ecokit's {kind} folder is missing (looked in {installed} and {source})")


def templates_dir() -> Path:
    return data_dir("templates")


def profiles_dir() -> Path:
    return data_dir("profiles")


def dashboards_dir() -> Path:
    return data_dir("dashboards")


def package_root() -> Path:
    """The folder to put on PYTHONPATH so a child Python process imports this same ecokit."""
    return _PACKAGE.parent
