"""Stack lifecycle commands: init, doctor, render, up, status, ps, logs, restart, down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ecokit.cli.common import (
    ConfigOption,
    DebugOption,
    JsonOption,
    OutputOption,
    ProfileOption,
    RuntimeChoice,
    RuntimeOption,
    emit,
    err,
    human,
    load_stack,
    out,
)
from ecokit.errors import EcokitError
from ecokit.runtime.base import ServiceEvent
from ecokit.status import stack_status

if TYPE_CHECKING:
    from ecokit.stack import Stack
    from ecokit.status import StackStatus

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()

STATE_STYLE = {"running": "green", "stopped": "dim", "exited": "red", "unavailable": "yellow",
               "unhealthy": "red"}
PHASE_STYLE = {"ready": "green", "unchanged": "dim", "skipped": "yellow", "stopped": "dim"}


def _runtime(value: RuntimeChoice | None) -> str | None:
    return value.value if value is not None else None


class _Progress:
    """Prints each service event as one line, with a spinner while a service starts (on a
    terminal only: a log or a pipe gets the lines alone)."""

    def __init__(self, console: Console = out) -> None:
        self.console = console
        self.status = console.status("") if console.is_terminal else None

    def __call__(self, event: ServiceEvent) -> None:
        if event.phase in ("starting", "waiting", "provisioning", "stopping", "pulling", "reloading", "building"):
            if self.status is not None:
                self.status.update(f"{event.service}: {event.phase} {event.detail}".strip())
                self.status.start()
            return
        if self.status is not None:
            self.status.stop()
        style = PHASE_STYLE.get(event.phase, "")
        detail = f" [dim]({event.detail})[/dim]" if event.detail else ""
        self.console.print(f"  [{style}]{event.phase:>9}[/{style}]  {event.service}{detail}" if style
                           else f"  {event.phase:>9}  {event.service}{detail}")

    def close(self) -> None:
        if self.status is not None:
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
def doctor(config: ConfigOption = None, profile: ProfileOption = None, as_json: JsonOption = False,
           output: OutputOption = None, debug: DebugOption = False) -> None:
    """Check runtimes, binaries, free ports and certificates; say how to fix what is missing."""
    from ecokit.doctor import check_machine, check_stack

    checks = check_machine()
    try:
        checks += check_stack(load_stack(config, profile))
    except EcokitError as exc:
        from ecokit.doctor import Check

        checks.append(Check("config", "info" if "no ecokit.yaml" in str(exc) else "fail", str(exc),
                            exc.hint or ""))
    failed = [c for c in checks if c.level == "fail"]
    emit({"ready": not failed, "problems": len(failed),
          "checks": [{"area": c.area, "level": c.level, "detail": c.detail, "fix": c.fix or None} for c in checks]},
         as_json=as_json, output=output)
    if not as_json:
        table = Table(show_header=True, header_style="bold", box=None)
        for column in ("", "check", "result", "fix"):
            table.add_column(column)
        icons = {"ok": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]",
                 "info": "[blue]i[/blue]"}
        for check in checks:
            table.add_row(icons[check.level], check.area, check.detail, check.fix)
        out.print(table)
    if failed:
        err.print(f"[red]{len(failed)} problem(s) to fix[/red] (the ✗ lines above say how)")
        raise typer.Exit(1)
    if not as_json:
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
       as_json: JsonOption = False, output: OutputOption = None, debug: DebugOption = False) -> None:
    """Start the stack (idempotent: running services with unchanged config are left alone).

    The profile given (--profile) stays active for later commands, across down and up, until
    another one is given (--profile default goes back to none)."""
    stack = load_stack(config, profile)
    name = stack.resolve_runtime(_runtime(runtime))
    console = human(as_json)
    console.print(f"stack [bold]{stack.config.stack}[/bold] on the [bold]{name}[/bold] runtime"
                  + (f" with profile [bold]{stack.active_profile}[/bold]" if stack.active_profile else ""))
    progress = _Progress(console)
    try:
        actions = stack.up(name, progress=progress)
    finally:
        progress.close()
    for note in stack.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if all(a in ("unchanged", "skipped") for a in actions.values()):
        console.print("[green]Already up; nothing changed.[/green]")
    status = stack_status(stack)
    _open_warning(status)
    emit({**_status_document(status), "actions": actions}, as_json=as_json, output=output)
    if not as_json:
        _print_endpoints(stack, status)


def _status_document(status: Any) -> dict[str, Any]:
    doc: dict[str, Any] = status.to_dict()
    return doc


def _open_warning(status: Any) -> None:
    """An open broker is said loudly, on stderr (seen even when stdout is parsed)."""
    if not status.open_broker or status.state == "stopped":
        return
    urls = ", ".join(u for k, u in status.broker["endpoints"].items() if k in ("mqtt", "ws"))
    err.print(f"[bold red]OPEN BROKER:[/bold red] [red]clients without credentials may publish and subscribe to "
              f"any topic (but $SYS and ecokit's service topics) at {urls or 'every listener'}[/red]", soft_wrap=True)
    err.print("[yellow]hint:[/yellow] a test sandbox (profile open): keep it on loopback; "
              "`ecokit up --profile default` closes it", soft_wrap=True)


def _print_endpoints(stack: Stack, status: StackStatus) -> None:
    for name, url in status.broker["endpoints"].items():
        out.print(f"  {name:<10} {url}")
    out.print(f"  {'influxdb':<10} {status.influxdb['url']} (database {status.influxdb['database']})")
    for name, url in status.web.items():
        svc = next((s for s in status.services if s.name == name), None)
        if svc and svc.state == "running":
            out.print(f"  {name:<10} {url}")
    _print_console(stack, status)
    out.print("[dim]credentials: `ecokit status --json --show-secrets`, devices: `ecokit devices list`[/dim]")


def _print_console(stack: Stack, status: StackStatus) -> None:
    """The console's URL with its token, like Jupyter prints its own (this terminal only)."""
    svc = next((s for s in status.services if s.name == "console"), None)
    console = stack.console_status(show_secrets=True)
    if svc is None or console is None:
        return
    if svc.state == "running":
        out.print(f"  {'console':<10} [bold]{console['page']}[/bold]")
    else:
        out.print(f"  {'console':<10} {console['url']} [dim]({svc.state})[/dim]")


@app.command()
def status(config: ConfigOption = None, profile: ProfileOption = None, as_json: JsonOption = False,
           output: OutputOption = None,
           show_secrets: Annotated[bool, typer.Option("--show-secrets", help="include passwords and tokens")]
           = False, debug: DebugOption = False) -> None:
    """Show the stack's services, endpoints, active profile and where credentials live."""
    stack = load_stack(config, profile)
    st = stack_status(stack, show_secrets=show_secrets)
    _open_warning(st)
    emit(_status_document(st), as_json=as_json, output=output)
    if as_json:
        return
    since = f", up {_age(st.started)}" if st.started and st.state != "stopped" else ""
    out.print(f"stack [bold]{st.stack}[/bold]: [bold]{st.state}[/bold]"
              + (f" on {st.runtime}" if st.runtime else "") + since
              + f", profile [bold]{st.profile or 'none'}[/bold]")
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
    _print_console(stack, st)
    if st.broker.get("ca"):
        out.print(f"  {'ca':<10} {st.broker['ca']}")
    out.print(f"  {'secrets':<10} {st.credentials['secrets_file']}")
    for note in st.notes:
        out.print(f"[yellow]note:[/yellow] {note}")


def _age(started: float) -> str:
    seconds = max(0, int(time.time() - started))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 86400}d"


@app.command()
def ps(as_json: JsonOption = False, output: OutputOption = None,
       all_stacks: Annotated[bool, typer.Option("--all", "-a", help="also stacks that are down (not yet purged)")]
       = False, debug: DebugOption = False) -> None:
    """Every ecokit stack on this machine: state, runtime, profile, endpoints, project."""
    from ecokit.cli.common import machine_index
    from ecokit.stack import Stack

    rows: list[dict[str, Any]] = []
    for entry in machine_index().entries():
        row = _ps_row(entry, Stack)
        if all_stacks or row["state"] != "stopped":
            rows.append(row)
    emit({"stacks": rows}, as_json=as_json, output=output)
    if as_json:
        return
    if not rows:
        out.print("no ecokit stack is running on this machine" + ("" if all_stacks else " (--all shows stopped ones)"))
        return
    table = Table(box=None, header_style="bold")
    for column in ("stack", "state", "runtime", "profile", "up", "endpoints", "project"):
        table.add_column(column)
    for row in rows:
        style = {"running": "green", "partial": "yellow", "stopped": "dim"}.get(row["state"], "red")
        state = f"[{style}]{row['state']}[/{style}] {row['services_running']}/{row['services']}" \
            if row["services"] else f"[{style}]{row['state']}[/{style}]"
        endpoints = " ".join(row["endpoints"].values())
        table.add_row(row["stack"], state, row["runtime"] or "", row["profile"] or "",
                      _age(row["started_at_epoch"]) if row["started_at_epoch"] and row["state"] != "stopped" else "",
                      endpoints, row["project_dir"])
    out.print(table)


def _ps_row(entry: Any, stack_class: Any) -> dict[str, Any]:
    from ecokit.report import stamped

    row: dict[str, Any] = {"stack": entry.stack, "project_dir": entry.project_dir, "config_file": entry.config_file,
                           "runtime": entry.runtime, "profile": entry.profile,
                           **stamped("started_at", entry.started), "state": "unknown", "services": 0,
                           "services_running": 0, "endpoints": {}, "open_broker": False, "error": None}
    try:
        stack = stack_class.load(Path(entry.config_file), profile=entry.profile, env={})
        st = stack_status(stack)
    except EcokitError as exc:
        row["error"] = str(exc)
        return row
    required = [s for s in st.services if s.state != "unavailable"]
    row.update(state=st.state, runtime=st.runtime or entry.runtime, services=len(required),
               services_running=sum(1 for s in required if s.state == "running"),
               endpoints=dict(st.broker["endpoints"]), open_broker=st.open_broker)
    return row


@app.command()
def logs(service: Annotated[str | None, typer.Argument(help="a service (broker, influxdb, ...); none: all of "
                                                            "them, interleaved, each line prefixed")] = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n", help="lines to show (per service)", min=0)] = 50,
         config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """Print a service's log, or every service's, interleaved by time (the tail, or follow it with -f)."""
    from ecokit.logs import all_logs

    stack = load_stack(config, profile)
    try:
        if service is not None:
            for line in stack.logs(service, follow=follow, tail=lines):
                out.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        names = stack.service_names()
        width = max(len(n) for n in names)
        colours = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green")
        for name, line in all_logs(stack, names, follow=follow, tail=lines):
            colour = colours[names.index(name) % len(colours)] if name in names else "white"
            out.print(f"[{colour}]{name:<{width}} |[/{colour}] ", end="")
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


@app.command("open")
def open_console(
    token_only: Annotated[bool, typer.Option("--token", help="print only the console token (for scripts)")] = False,
    print_only: Annotated[bool, typer.Option("--print", help="print the URL; do not open a browser")] = False,
    config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False,
) -> None:
    """Open the fleet console in the default browser (prints its URL with the token)."""
    from ecokit.console.client import ConsoleEndpoint
    from ecokit.errors import ConfigError

    stack = load_stack(config, profile)
    endpoint = ConsoleEndpoint.for_stack(stack)
    if endpoint is None:
        raise ConfigError("this stack has no console", key="console.enabled", hint="set console.enabled: true")
    if token_only:
        out.print(endpoint.token, markup=False, highlight=False)
        return
    out.print(endpoint.page, markup=False, highlight=False)
    if stack.current_runtime() is None:
        err.print("[yellow]note:[/yellow] the stack is not up; run `ecokit up` first")
        return
    if not print_only and not _open_browser(endpoint.page):
        err.print("[dim]no browser here: open the URL above in one[/dim]")


def _open_browser(url: str) -> bool:
    """Open ``url`` in a graphical browser; False where there is none (a server, SSH, CI).

    Text browsers are never used: they would take over this terminal."""
    import os
    import sys
    import webbrowser

    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        if not (os.environ.get("BROWSER") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return False
    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False
