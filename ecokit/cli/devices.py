"""`ecokit devices list | add`."""

from __future__ import annotations

import itertools
from typing import Annotated

import typer
from rich.table import Table

from ecokit.cli.common import (
    ConfigOption,
    DebugOption,
    JsonOption,
    OutputOption,
    ProfileOption,
    emit,
    human,
    load_stack,
    out,
)
from ecokit.errors import UsageError

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()

devices_app = typer.Typer(help="The device registry (config/devices.yaml).", no_args_is_help=True)
app.add_typer(devices_app, name="devices")


@devices_app.command("list")
def list_devices(as_json: JsonOption = False, output: OutputOption = None,
                 show_secrets: Annotated[bool, typer.Option("--show-secrets", help="include passwords")] = False,
                 config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """Registered devices, their usernames and certificates."""
    stack = load_stack(config, profile)
    rows = []
    for device in stack.devices():
        cert = stack.cert_paths.client_cert(device.id)
        row = {"id": device.id, "username": device.id,
               "password_source": "registry" if device.password else "secrets",
               "cert": str(cert) if cert.exists() else None, "meta": device.meta}
        if show_secrets:
            row["password"] = stack.device_password(device)
        rows.append(row)
    emit({"registry": str(stack.devices_file), "count": len(rows), "devices": rows}, as_json=as_json, output=output)
    if as_json:
        return
    table = Table(box=None, header_style="bold", title=f"{len(rows)} devices in {stack.devices_file}")
    for column in ("id", "password", "cert"):
        table.add_column(column)
    for row in rows:
        password = row.get("password") or f"[dim]({row['password_source']})[/dim]"
        table.add_row(str(row["id"]), str(password), str(row["cert"] or "[dim]-[/dim]"))
    out.print(table)


@devices_app.command("add")
def add(ids: Annotated[list[str] | None, typer.Argument(help="device ids")] = None,
        count: Annotated[int, typer.Option("--count", help="add N numbered devices", min=0)] = 0,
        prefix: Annotated[str, typer.Option("--prefix", help="prefix of numbered devices")] = "vehicle-",
        as_json: JsonOption = False, output: OutputOption = None,
        config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """Register devices; their passwords are generated into the stack's secrets."""
    if not ids and not count:
        raise UsageError("give device ids or --count N")
    stack = load_stack(config, profile)
    wanted = list(ids or [])
    if count:
        taken = {d.id for d in stack.devices()} | set(wanted)
        width = max(4, len(str(len(taken) + count)))
        numbered = (f"{prefix}{n:0{width}d}" for n in itertools.count(1))
        wanted += list(itertools.islice((i for i in numbered if i not in taken), count))
    added = stack.add_devices(wanted)
    stack.secret_values()  # generate their passwords now, in one locked write
    console = human(as_json)
    console.print(f"[green]added {len(added)}[/green] device(s) to {stack.devices_file}"
                  + (f": {', '.join(added[:10])}{' …' if len(added) > 10 else ''}" if added else " (all existed)"))
    loaded = False
    if added and stack.current_runtime() and stack.runtime(stack.current_runtime() or "local").is_up():
        # The running broker learns the new credentials now (Mosquitto: SIGHUP, no restart).
        if stack.config.tls.enabled:
            stack.generate_certs()
        stack.up()
        loaded = True
        console.print("[green]loaded[/green] into the running broker")
    emit({"registry": str(stack.devices_file), "added": added, "existing": [i for i in wanted if i not in added],
          "loaded_into_broker": loaded}, as_json=as_json, output=output)
