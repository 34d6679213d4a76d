"""Options shared by many commands, and how a command gets its Stack."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.live import Live
from rich.text import Text

from ecokit.machine import StackIndex, state_dir
from ecokit.report import to_json, write_json
from ecokit.stack import Stack

# Off a terminal (a pipe, a file, CI logs) nothing is cut to 80 columns: tables take their
# natural width. COLUMNS, when set, still wins.
PIPE_WIDTH = 10_000


class _Console(Console):
    @property
    def size(self) -> ConsoleDimensions:
        found = super().size
        if not self.is_terminal and self._width is None and "COLUMNS" not in os.environ:
            return ConsoleDimensions(PIPE_WIDTH, found.height)
        return found

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


# soft_wrap: paths and URLs are printed whole, never broken across lines.
out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False)

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
JsonOption = Annotated[bool, typer.Option(
    "--json", help="print one JSON document on stdout, nothing else (human output and progress go to stderr)")]
OutputOption = Annotated[Path | None, typer.Option(
    "--output", "-o", help="also write the JSON document to FILE", dir_okay=False, show_default=False)]


class _Emitted:
    """Whether this process already wrote its JSON document to stdout (main() then writes no
    error document after it)."""

    done = False


def emit(document: Mapping[str, Any], *, as_json: bool, output: Path | None = None) -> None:
    """The command's report: on stdout with ``--json``, into ``--output FILE`` when given."""
    if output is not None:
        write_json(output, document)
        if not as_json:
            err.print(f"[dim]report written to {output}[/dim]", soft_wrap=True)
    if as_json:
        sys.stdout.write(to_json(document))
        sys.stdout.flush()
        _Emitted.done = True


def emitted() -> bool:
    return _Emitted.done


def reset_emitted() -> None:
    _Emitted.done = False


def human(as_json: bool) -> Console:
    """Where a command's human-readable lines go: stdout, or stderr when stdout carries JSON."""
    return err if as_json else out


def load_stack(config: Path | None, profile: str | None, overrides: dict[str, Any] | None = None) -> Stack:
    """The one place the CLI reads the environment and hands it to the library."""
    return Stack.load(config, profile=profile, env=dict(os.environ), overrides=overrides)


def machine_index() -> StackIndex:
    """Where this machine's stacks are recorded (ECOKIT_STATE_DIR, XDG_STATE_HOME, ~/.local/state)."""
    return StackIndex(state_dir(dict(os.environ)))


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
