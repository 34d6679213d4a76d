"""Options shared by many commands, and how a command gets its Stack."""

from __future__ import annotations

import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from ecokit.stack import Stack

# soft_wrap: paths and URLs are printed whole, never broken across lines.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

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


class LiveLine:
    """A status line redrawn in place on a terminal (``console``); elsewhere (CI logs, pipes)
    the same text printed to ``log`` at most every few seconds. Silent when ``quiet``."""

    def __init__(self, console: Console, log: Console, *, quiet: bool, transient: bool) -> None:
        self.quiet = quiet
        self.log = log
        self.live = Live(Text(""), console=console, refresh_per_second=4, transient=transient) \
            if console.is_terminal and not quiet else None
        self._printed = 0.0

    def __enter__(self) -> LiveLine:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def show(self, text: str) -> None:
        if self.live is not None:
            self.live.update(Text(text))
        elif not self.quiet and time.monotonic() - self._printed >= 5.0:
            self._printed = time.monotonic()
            self.log.print(text, markup=False, highlight=False)
