"""`ecokit conformance`: the MQTT 3.1.1 / 5.0 checks against a broker, a table by spec area."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ecokit.cli.common import (
    ConfigOption,
    DebugOption,
    JsonOption,
    OutputOption,
    ProfileOption,
    emit,
    err,
    human,
    load_stack,
)
from ecokit.errors import ConfigError, UsageError

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()

OUTCOME_STYLE = {"passed": "green", "failed": "red", "xfail": "yellow", "skipped": "blue"}


@app.command()
def conformance(
    broker: Annotated[str | None, typer.Option(
        "--broker", envvar="ECOKIT_BROKER_URL", show_default=False,
        help="broker under test: mqtt://, mqtts://, ws://, wss:// [user:password@]host:port "
             "(default: the project's running stack)")] = None,
    username: Annotated[str | None, typer.Option("--username", "--broker-username", show_default=False,
                                                 help="with --broker: username")] = None,
    password: Annotated[str | None, typer.Option("--password", "--broker-password", show_default=False,
                                                 help="with --broker: password")] = None,
    ca: Annotated[Path | None, typer.Option("--ca", "--broker-ca", dir_okay=False, show_default=False,
                                            help="with --broker: CA file for mqtts:// and wss://")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", "--broker-cert", dir_okay=False, show_default=False,
                                              help="with --broker: client certificate (mTLS)")] = None,
    key: Annotated[Path | None, typer.Option("--key", "--broker-key", dir_okay=False, show_default=False,
                                             help="with --broker: client key (mTLS)")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", "--broker-insecure",
                                           help="with --broker: do not verify the server certificate")] = False,
    restricted_username: Annotated[str | None, typer.Option(
        "--restricted-username", show_default=False,
        help="with --broker: a user with limited rights, for the authorization checks")] = None,
    restricted_password: Annotated[str | None, typer.Option("--restricted-password", show_default=False)] = None,
    denied_topic: Annotated[str | None, typer.Option(
        "--denied-topic", show_default=False,
        help="with --broker: a topic the restricted user may neither publish nor subscribe to")] = None,
    bundled: Annotated[bool, typer.Option(
        "--bundled", help="start a Mosquitto for the run (local runtime, profiles tls and mtls) and test it; "
                          "its known gaps are pinned, any other outcome fails")] = False,
    checks: Annotated[list[str] | None, typer.Option("--check", "-k", show_default=False,
                                                     help="only checks whose name contains this (repeatable)")]
    = None,
    areas: Annotated[list[str] | None, typer.Option("--area", show_default=False,
                                                    help="only this spec area (repeatable)")] = None,
    list_checks: Annotated[bool, typer.Option("--list", help="list the checks by spec area and exit")] = False,
    junit: Annotated[Path | None, typer.Option("--junit", dir_okay=False, show_default=False,
                                               help="also write a JUnit XML report to FILE")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=5, help="seconds after which a stuck check fails")]
    = 120.0,
    as_json: JsonOption = False, output: OutputOption = None,
    config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False,
) -> None:
    """Run the MQTT 3.1.1 / 5.0 conformance checks; a table by spec area, exit 1 when one fails.

    A behaviour the broker does not support is an expected failure (xfail) with the reason; a
    check that cannot run against this target (no TLS listener, no restricted user) is skipped
    with the reason. `pytest --pyargs ecokit.conformance` runs the same checks."""
    from ecokit.conformance import select

    chosen = select(checks or (), areas or ())
    if list_checks:
        _list(chosen, as_json, output)
        return
    if bundled and broker:
        raise UsageError("give --broker URL or --bundled, not both")
    if not broker and any(v is not None for v in (username, password, ca, cert, key, restricted_username,
                                                   denied_topic)):
        raise UsageError("--username, --password, --ca, --cert, --key and --restricted-* go with --broker URL")
    if (cert is None) != (key is None):
        raise UsageError("--cert and --key go together")
    console = human(as_json)
    with _targets(broker, username, password, ca, cert, key, insecure, restricted_username, restricted_password,
                  denied_topic, bundled, config, profile, console) as targets:
        console.print(f"MQTT conformance: {len(chosen)} checks against {targets.main.description}")
        report = _run(targets, chosen, timeout)
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(report.junit_xml())
        err.print(f"[dim]JUnit XML written to {junit}[/dim]", soft_wrap=True)
    emit(report.to_dict(), as_json=as_json, output=output)
    if not as_json:
        _print_report(report)
    if report.interrupted:
        raise typer.Exit(130)
    if not report.passed:
        raise typer.Exit(1)


@contextlib.contextmanager
def _targets(broker: str | None, username: str | None, password: str | None, ca: Path | None, cert: Path | None,
             key: Path | None, insecure: bool, restricted_username: str | None, restricted_password: str | None,
             denied_topic: str | None, bundled: bool, config: Path | None, profile: str | None,
             console: Any) -> Iterator[Any]:
    from ecokit.conformance import (
        Credentials,
        Target,
        bundled_targets,
        check_reachable,
        running_stack_targets,
        url_targets,
    )

    if broker:
        for path in (ca, cert, key):
            if path is not None and not path.is_file():
                raise UsageError(f"{path} does not exist")
        restricted = Credentials(restricted_username, restricted_password) if restricted_username else None
        target = Target.from_url(broker, username=username, password=password,
                                 ca_file=str(ca) if ca else None, cert_file=str(cert) if cert else None,
                                 key_file=str(key) if key else None, insecure=insecure, restricted=restricted,
                                 denied_topic=denied_topic)
        target.description = f"{target.url} (given by --broker)"
        check_reachable(target)
        yield url_targets(target)
        return
    if bundled:
        with tempfile.TemporaryDirectory(prefix="ecokit-conformance-") as tmp, contextlib.ExitStack() as stacks:
            with err.status("starting the bundled broker (Mosquitto, profile tls)") if err.is_terminal \
                    else contextlib.nullcontext():
                targets = stacks.enter_context(bundled_targets(Path(tmp)))
            yield targets
        return
    try:
        stack = load_stack(config, profile)
    except ConfigError as exc:
        if "no ecokit.yaml" in str(exc):
            raise ConfigError(str(exc), hint="give --broker URL, run it in a project whose stack is up, or "
                                             "--bundled to let ecokit start a broker for the run") from None
        raise
    targets = running_stack_targets(stack)
    check_reachable(targets.main)
    yield targets


def _run(targets: Any, chosen: list[Any], timeout: float) -> Any:
    from ecokit.conformance import run_checks

    total = len(chosen)
    if err.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("starting", total=total)

            def on_progress(event: str, check: Any, result: Any) -> None:
                if event == "start":
                    progress.update(task, description=f"[bold]{check.area}[/bold] {check.name}")
                elif event == "done":
                    progress.advance(task)
                    if result.outcome == "failed":
                        progress.console.print(Text(f"  failed: {check.name}: {_first_line(result.reason)}",
                                                    style="red"), soft_wrap=True)

            return run_checks(targets, chosen, progress=on_progress, timeout=timeout)

    area_started = [time.monotonic()]
    area_results: list[Any] = []

    def on_plain(event: str, check: Any, result: Any) -> None:
        # Off a terminal: one line as each spec area begins and one when it is done.
        if event == "area":
            err.print(f"{check.area}: {sum(1 for c in chosen if c.area == check.area)} checks ...")
            area_started[0] = time.monotonic()
            area_results.clear()
        elif event == "done":
            area_results.append(result)
            if len(area_results) == sum(1 for c in chosen if c.area == check.area):
                counts = ", ".join(f"{n} {o}" for o in ("passed", "failed", "xfail", "skipped")
                                   if (n := sum(1 for r in area_results if r.outcome == o)))
                err.print(f"{check.area}: {counts} ({time.monotonic() - area_started[0]:.1f}s)")

    return run_checks(targets, chosen, progress=on_plain, timeout=timeout)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text and text.strip() else ""


def _print_report(report: Any) -> None:
    from ecokit.cli.common import out

    table = Table(box=None, header_style="bold", title=f"broker: {report.target}", title_justify="left")
    table.add_column("spec area")
    for outcome in ("passed", "failed", "xfail", "skipped"):
        table.add_column(outcome, justify="right")
    for area, counts in report.by_area().items():
        table.add_row(area, *(_count(counts[o], o) for o in ("passed", "failed", "xfail", "skipped")))
    totals = report.totals()
    table.add_row("[bold]total[/bold]", *(_count(totals[o], o) for o in ("passed", "failed", "xfail", "skipped")))
    out.print(table)
    for title, outcome in (("not supported / broker-specific (xfail)", "xfail"),
                           ("could not run against this target (skipped)", "skipped"), ("failed", "failed")):
        chosen = [r for r in report.results if r.outcome == outcome]
        if chosen:
            out.print(f"[{OUTCOME_STYLE[outcome]}]{title}:[/{OUTCOME_STYLE[outcome]}]")
            for r in chosen:
                out.print(Text(f"  {r.name}: {_first_line(r.reason)}"), soft_wrap=True)
    if report.notes:
        out.print("[dim]observed (informational):[/dim]")
        for check, text in report.notes:
            out.print(Text(f"  {check}: {text}", style="dim"), soft_wrap=True)
    seconds = (report.finished or time.time()) - report.started
    summary = ", ".join(f"{totals[o]} {o}" for o in ("passed", "failed", "xfail", "skipped") if totals[o])
    if report.interrupted:
        out.print(f"[yellow]interrupted after {len(report.results)} checks[/yellow] ({summary}) in {seconds:.0f}s")
    elif report.passed:
        out.print(f"[green]conformance passed[/green]: {summary} in {seconds:.0f}s")
    else:
        err.print(f"[bold red]Error:[/bold red] [red]conformance failed: {summary}[/red] in {seconds:.0f}s")


def _count(n: int, outcome: str) -> str:
    return f"[{OUTCOME_STYLE[outcome]}]{n}[/{OUTCOME_STYLE[outcome]}]" if n else "[dim]0[/dim]"


def _list(chosen: list[Any], as_json: bool, output: Path | None) -> None:
    from ecokit.cli.common import out

    emit({"checks": [{"name": c.name, "area": c.area, "spec": c.spec, "needs": c.needs or None} for c in chosen]},
         as_json=as_json, output=output)
    if as_json:
        return
    table = Table(box=None, header_style="bold")
    for column in ("spec area", "check", "spec"):
        table.add_column(column)
    for c in chosen:
        table.add_row(c.area, c.name, c.spec)
    out.print(table)
    out.print(f"{len(chosen)} checks")
