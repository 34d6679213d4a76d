"""Options shared by many commands, and how a command gets its Stack."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ecokit.stack import Stack

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="ECOKIT_CONFIG", help="ecokit.yaml to use (default: nearest one)",
                 show_default=False, dir_okay=False),
]
ProfileOption = Annotated[
    str | None,
    typer.Option("--profile", "-p", envvar="ECOKIT_PROFILE",
                 help="overlay a profile (tls, mtls, default, or one of yours)", show_default=False),
]
class RuntimeChoice(StrEnum):
    auto = "auto"
    local = "local"
    docker = "docker"


RuntimeOption = Annotated[
    RuntimeChoice | None,
    typer.Option("--runtime", "-r", envvar="ECOKIT_RUNTIME", help="where services run (default: auto)",
                 show_default=False),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="show tracebacks", envvar="ECOKIT_DEBUG")]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def load_stack(config: Path | None, profile: str | None, overrides: dict[str, Any] | None = None) -> Stack:
    """The one place the CLI reads the environment and hands it to the library."""
    return Stack.load(config, profile=profile, env=dict(os.environ), overrides=overrides)
