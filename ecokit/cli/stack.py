"""Stack lifecycle commands: init, doctor, render, up, status, logs, restart, down."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ecokit.cli.common import (
    ConfigOption,
    DebugOption,
    JsonOption,
    ProfileOption,
    RuntimeChoice,
    RuntimeOption,
    load_stack,
    out,
)
from ecokit.errors import EcokitError
from ecokit.runtime.base import ServiceEvent

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()

STATE_STYLE = {"running": "green", "stopped": "dim", "exited": "red", "unavailable": "yellow",
               "unhealthy": "red"}
PHASE_STYLE = {"ready": "green", "unchanged": "dim", "skipped": "yellow", "stopped": "dim"}


def _runtime(value: RuntimeChoice | None) -> str | None:
    return value.value if value is not None else None


class _Progress:
    """Prints each service event as one line, with a spinner while a service starts."""

    def __init__(self) -> None:
        self.status = out.status("")

    def __call__(self, event: ServiceEvent) -> None:
        if event.phase in ("starting", "waiting", "provisioning", "stopping", "pulling", "reloading", "building"):
            self.status.update(f"{event.service}: {event.phase} {event.detail}".strip())
            self.status.start()
            return
        self.status.stop()
        style = PHASE_STYLE.get(event.phase, "")
        detail = f" [dim]({event.detail})[/dim]" if event.detail else ""
        out.print(f"  [{style}]{event.phase:>9}[/{style}]  {event.service}{detail}" if style
                  else f"  {event.phase:>9}  {event.service}{detail}")

    def close(self) -> None:
        self.status.stop()


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="project folder (created if missing)")] = Path("."),
    stack_name: Annotated[str | None, typer.Option("--stack", help="stack name (default: folder name)")] = None,
    broker: Annotated[str, typer.Option(help="mosquitto | emqx")] = "mosquitto",
    devices: Annotated[int, typer.Option(help="devices to register", min=0, max=100000)] = 10,
    port_offset: Annotated[int, typer.Option(help="add this to every default port", min=0, max=50000)] = 0,
    force: Annotated[bool, typer.Option(help="overwrite existing files")] = False,
    debug: DebugOption = False,
) -> None:
    """Create ecokit.yaml, config/devices.yaml and config/users.yaml."""
    from ecokit.scaffold import init_project

    if broker not in ("mosquitto", "emqx"):
        raise typer.BadParameter("must be mosquitto or emqx", param_hint="--broker")
    result = init_project(directory, stack=stack_name, broker=broker, devices=devices,
                          port_offset=port_offset, force=force)
    for path in result.written:
        out.print(f"[green]wrote[/green]  {path}")
    for path in result.skipped:
        out.print(f"[yellow]kept[/yellow]   {path} [dim](exists; --force overwrites)[/dim]")
    out.print(f"\nNext: [bold]cd {directory} && ecokit up[/bold]")


@app.command()
def doctor(config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """Check runtimes, binaries, free ports and certificates; say how to fix what is missing."""
    from ecokit.doctor import check_machine, check_stack

    checks = check_machine()
    try:
        checks += check_stack(load_stack(config, profile))
    except EcokitError as exc:
        from ecokit.doctor import Check

        checks.append(Check("config", "info" if "no ecokit.yaml" in str(exc) else "fail", str(exc),
                            exc.hint or ""))
    table = Table(show_header=True, header_style="bold", box=None)
    for column in ("", "check", "result", "fix"):
        table.add_column(column)
    icons = {"ok": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]",
             "info": "[blue]i[/blue]"}
    for check in checks:
        table.add_row(icons[check.level], check.area, check.detail, check.fix)
    out.print(table)
    failed = [c for c in checks if c.level == "fail"]
    if failed:
        out.print(f"[red]{len(failed)} problem(s) to fix.[/red]")
        raise typer.Exit(1)
    out.print("[green]Ready.[/green]")


@app.command()
def render(config: ConfigOption = None, profile: ProfileOption = None, runtime: RuntimeOption = None,
           debug: DebugOption = False) -> None:
    """Render every service's configuration into .ecokit/<stack>/config/ and list the files."""
    stack = load_stack(config, profile)
    target = stack.resolve_runtime(_runtime(runtime))
    files = stack.render(target)
    out.print(f"stack [bold]{stack.config.stack}[/bold] ({target} runtime): {len(files)} files in "
              f"{stack.paths.config_dir}", soft_wrap=True)
    table = Table(box=None, header_style="bold")
    table.add_column("service")
    table.add_column("file", no_wrap=True)
    table.add_column("bytes", justify="right")
    table.add_column("mode")
    for path in files:
        service, *rest = path.relative_to(stack.paths.config_dir).parts
        table.add_row(service, "/".join(rest), str(path.stat().st_size), f"{path.stat().st_mode & 0o777:o}")
    out.print(table)
    for note in stack.notes:
        out.print(f"[yellow]note:[/yellow] {note}")


@app.command()
def up(config: ConfigOption = None, profile: ProfileOption = None, runtime: RuntimeOption = None,
       debug: DebugOption = False) -> None:
    """Start the stack (idempotent: running services with unchanged config are left alone)."""
    stack = load_stack(config, profile)
    name = stack.resolve_runtime(_runtime(runtime))
    out.print(f"stack [bold]{stack.config.stack}[/bold] on the [bold]{name}[/bold] runtime"
              + (f" with profile [bold]{stack.loaded.profile}[/bold]" if stack.loaded.profile else ""))
    progress = _Progress()
    try:
        actions = stack.up(name, progress=progress)
    finally:
        progress.close()
    for note in stack.notes:
        out.print(f"[yellow]note:[/yellow] {note}")
    if all(a in ("unchanged", "skipped") for a in actions.values()):
        out.print("[green]Already up; nothing changed.[/green]")
    _print_endpoints(stack)


def _print_endpoints(stack: object) -> None:
    from ecokit.stack import Stack

    assert isinstance(stack, Stack)
    status = stack.status()
    for name, url in status.broker["endpoints"].items():
        out.print(f"  {name:<10} {url}")
    out.print(f"  {'influxdb':<10} {status.influxdb['url']} (database {status.influxdb['database']})")
    for name, url in status.web.items():
        svc = next((s for s in status.services if s.name == name), None)
        if svc and svc.state == "running":
            out.print(f"  {name:<10} {url}")
    out.print("[dim]credentials: `ecokit status --json --show-secrets`, devices: `ecokit devices list`[/dim]")


@app.command()
def status(config: ConfigOption = None, profile: ProfileOption = None, as_json: JsonOption = False,
           show_secrets: Annotated[bool, typer.Option("--show-secrets", help="include passwords and tokens")]
           = False, debug: DebugOption = False) -> None:
    """Show the stack's services, endpoints and where credentials live."""
    stack = load_stack(config, profile)
    st = stack.status(show_secrets=show_secrets)
    if as_json:
        out.print_json(json.dumps(st.to_dict()))
        return
    out.print(f"stack [bold]{st.stack}[/bold]: [bold]{st.state}[/bold]"
              + (f" on {st.runtime}" if st.runtime else ""))
    table = Table(box=None, header_style="bold")
    for column in ("service", "state", "pid/container", "ports", "detail"):
        table.add_column(column)
    for svc in st.services:
        style = STATE_STYLE.get(svc.state, "")
        ident = str(svc.pid or svc.container or "")
        ports = ", ".join(f"{k}:{v}" for k, v in svc.ports.items())
        table.add_row(svc.name, f"[{style}]{svc.state}[/{style}]", ident, ports, svc.detail)
    out.print(table)
    for name, url in st.broker["endpoints"].items():
        out.print(f"  {name:<10} {url}")
    out.print(f"  {'influxdb':<10} {st.influxdb['url']} db={st.influxdb['database']}")
    if st.broker.get("ca"):
        out.print(f"  {'ca':<10} {st.broker['ca']}")
    out.print(f"  {'secrets':<10} {st.credentials['secrets_file']}")
    for note in st.notes:
        out.print(f"[yellow]note:[/yellow] {note}")


@app.command()
def logs(service: Annotated[str, typer.Argument(help="service name, e.g. broker, influxdb")],
         follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n", help="lines to show", min=0)] = 50,
         config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """Print a service's log (the tail, or follow it with -f)."""
    stack = load_stack(config, profile)
    try:
        for line in stack.logs(service, follow=follow, tail=lines):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        pass


@app.command()
def restart(services: Annotated[list[str] | None, typer.Argument(help="services (default: all)")] = None,
            config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """Restart some or all services of the running stack."""
    stack = load_stack(config, profile)
    progress = _Progress()
    try:
        stack.restart(services or [], progress=progress)
    finally:
        progress.close()


@app.command()
def down(purge: Annotated[bool, typer.Option("--purge", help="also delete data and logs")] = False,
         config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """Stop this stack's services (only them). Data survives unless --purge."""
    stack = load_stack(config, profile)
    progress = _Progress()
    try:
        stopped = stack.down(purge=purge, progress=progress)
    finally:
        progress.close()
    if not stopped:
        out.print(f"stack {stack.config.stack} was not running")
    if purge:
        out.print(f"[yellow]purged[/yellow] data and logs under {stack.paths.root}")
