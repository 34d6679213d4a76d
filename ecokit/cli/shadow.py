"""`ecokit shadow get | update | delete THING`: talk to the shadow service as ecokit-admin."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ecokit.cli.common import ConfigOption, DebugOption, ProfileOption, err, load_stack, out
from ecokit.errors import UsageError

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()

shadow_app = typer.Typer(help="Device shadows (AWS IoT semantics): get, update, delete.", no_args_is_help=True)
app.add_typer(shadow_app, name="shadow")

ThingArg = Annotated[str, typer.Argument(help="thing name (a device id)")]
NameOption = Annotated[str, typer.Option("--name", "-n", help="named shadow (default: the classic shadow)")]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="seconds to wait for the answer", min=0.1)]


def _json_object(value: str | None, option: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"{option} must be a JSON object, e.g. '{{\"publish_interval\": 5}}'")
    return parsed


def _show(reply: Any) -> int:
    out.print_json(json.dumps(reply.document))
    if reply.accepted:
        err.print(f"[green]{reply.topic}[/green]")
        return 0
    err.print(f"[red]{reply.topic}: {reply.document.get('code')} {reply.document.get('message')}[/red]")
    return 1


def _client(config: Any, profile: str | None, thing: str, name: str) -> Any:
    from ecokit.clients import shadow_client
    from ecokit.shadow.client import check_names

    check_names(thing, name)  # before connecting: a bad name is the user's, not the broker's
    stack = load_stack(config, profile)
    stack.require_running()
    return shadow_client(stack).connect()


@shadow_app.command("get")
def get(thing: ThingArg, name: NameOption = "", timeout: TimeoutOption = 5.0, config: ConfigOption = None,
        profile: ProfileOption = None, debug: DebugOption = False) -> int:
    """Print a shadow's document (state, delta, metadata, version)."""
    with _client(config, profile, thing, name) as client:
        return _show(client.get(thing, name=name, timeout=timeout))


@shadow_app.command("update")
def update(
    thing: ThingArg, name: NameOption = "",
    desired: Annotated[str | None, typer.Option("--desired", "-d", help="JSON object merged into desired")] = None,
    reported: Annotated[str | None, typer.Option("--reported", "-r",
                                                 help="JSON object merged into reported")] = None,
    version: Annotated[int | None, typer.Option("--version", help="apply only if the shadow is at this version",
                                                min=0)] = None,
    timeout: TimeoutOption = 5.0, config: ConfigOption = None, profile: ProfileOption = None,
    debug: DebugOption = False,
) -> int:
    """Merge --desired / --reported into a shadow (null removes a field)."""
    want = _json_object(desired, "--desired")
    have = _json_object(reported, "--reported")
    if want is None and have is None:
        raise UsageError("give --desired JSON and/or --reported JSON")
    with _client(config, profile, thing, name) as client:
        return _show(client.update(thing, desired=want, reported=have, version=version, name=name,
                                   timeout=timeout))


@shadow_app.command("delete")
def delete(thing: ThingArg, name: NameOption = "", timeout: TimeoutOption = 5.0, config: ConfigOption = None,
           profile: ProfileOption = None, debug: DebugOption = False) -> int:
    """Delete a shadow (its version is kept for a shadow recreated within 48 hours)."""
    with _client(config, profile, thing, name) as client:
        return _show(client.delete(thing, name=name, timeout=timeout))
