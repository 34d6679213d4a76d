"""The `ecokit` command: parse, call the library, print. Nothing else lives here.

Expected failures (EcokitError) become one red line and exit code 1; usage errors exit 2;
``--debug`` (or ECOKIT_DEBUG=1) shows the traceback as well.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.markup import escape

from ecokit.cli import bench, certs, compose, conformance, devices, geofences, pipeline, shadow, simulate, stack
from ecokit.cli.common import err, out, reset_emitted
from ecokit.errors import EcokitError, UsageError


def _click_errors() -> tuple[type[Exception], ...]:
    """Click's exception base: typer >= 0.22 vendors click as ``typer._click`` (and does not
    depend on click); older typer raises click's own."""
    found: list[type[Exception]] = []
    try:
        from typer._click.exceptions import ClickException as Vendored

        found.append(Vendored)
    except ImportError:
        pass
    try:
        from click import ClickException

        found.append(ClickException)
    except ImportError:
        pass
    return tuple(found)


CLICK_ERRORS = _click_errors()

app = typer.Typer(
    name="ecokit",
    help="An MQTT test ecosystem: broker, InfluxDB, Grafana, fleet simulator, shadows, replay.",
    no_args_is_help=True,
    # --install-completion / --show-completion (bash, zsh, fish, PowerShell): typer's own.
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from ecokit import __version__

        out.print(f"ecokit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                                help="print ecokit's version and exit")] = False) -> None:
    """An MQTT test ecosystem: broker, InfluxDB, Grafana, fleet simulator, shadows, replay."""

# Each module holds its own commands (its own Typer); joined here, in this order.
for _module in (bench, certs, compose, conformance, devices, geofences, pipeline, shadow, simulate, stack):
    app.add_typer(_module.app)


def _debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("ECOKIT_DEBUG", "") not in ("", "0", "false")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    reset_emitted()
    try:
        result = app(args=args, prog_name="ecokit", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except CLICK_ERRORS as exc:
        exc.show()  # type: ignore[attr-defined]
        return int(exc.exit_code)  # type: ignore[attr-defined]
    except (typer.Abort, KeyboardInterrupt):
        err.print("[red]Aborted.[/red]")
        return 130
    except UsageError as exc:
        err.print(f"[red]Usage error:[/red] {escape(str(exc))}", soft_wrap=True)
        if exc.hint:
            err.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}", soft_wrap=True)
        _error_document(args, exc)
        return 2
    except EcokitError as exc:
        if debug:
            err.print_exception(show_locals=False)
        _print_error(exc)
        _error_document(args, exc)
        return 1
    return int(result) if isinstance(result, int) else 0


def _error_document(args: Sequence[str], exc: EcokitError) -> None:
    """Under --json, a script parsing stdout gets one document even when the command failed."""
    from ecokit.cli.common import emitted
    from ecokit.report import to_json

    if "--json" in args and not emitted():
        sys.stdout.write(to_json({"error": {"type": type(exc).__name__, "message": str(exc), "hint": exc.hint}}))
        sys.stdout.flush()


def _print_error(exc: EcokitError) -> None:
    from ecokit.errors import ServiceError

    # Messages quote user data ([lng, lat] positions, topics): never read them as markup.
    err.print(f"[bold red]Error:[/bold red] [red]{escape(str(exc))}[/red]", soft_wrap=True)
    if isinstance(exc, ServiceError) and exc.log_tail:
        err.print(f"[dim]--- last lines of the {exc.service} log ---[/dim]")
        err.print(exc.log_tail, markup=False, highlight=False, soft_wrap=True)
    if exc.hint:
        err.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}", soft_wrap=True)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
