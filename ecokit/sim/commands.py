"""Commands to vehicles and their acknowledgements (docs/DEVELOPING.md wire format). Pure.

    fleet/{id}/commands, fleet/broadcast/commands:
        {"id": uuid, "name": str, "args": {...}, "ts": epoch_ms}
    fleet/{id}/commands/ack:
        {"id", "vehicle", "result": "ok"|"error", "detail", "latency_ms", "ts"}

Commands: ``set_interval`` (args ``{"seconds": s}``), ``engine_start``, ``engine_stop``,
``ping``. ``latency_ms`` is the vehicle's handling time, from receiving the command to
sending its acknowledgement.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ecokit.sim.fleet import SimVehicle


@dataclass(frozen=True)
class CommandSpec:
    """A command the simulated devices understand, as the console's API lists it."""

    name: str
    description: str
    args: Mapping[str, str] = field(default_factory=dict)  # argument name → JSON type


COMMAND_SPECS = (
    CommandSpec("set_interval", "publish telemetry every `seconds` from now on", {"seconds": "number"}),
    CommandSpec("engine_start", "start the engine and drive on"),
    CommandSpec("engine_stop", "brake to a halt and switch the engine off until engine_start"),
    CommandSpec("ping", "answer with the vehicle's current state"),
)
COMMANDS = tuple(spec.name for spec in COMMAND_SPECS)


class CommandError(ValueError):
    """A command that cannot be carried out; its text goes into the ack's ``detail``."""


@dataclass(frozen=True)
class Command:
    id: str
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    ts: int | None = None

    def payload(self) -> bytes:
        return json.dumps({"id": self.id, "name": self.name, "args": dict(self.args), "ts": self.ts},
                          separators=(",", ":")).encode()


def new_command(name: str, args: Mapping[str, Any] | None = None, *, ts_ms: int) -> Command:
    """A command with a fresh id, checked before it is sent."""
    cmd = Command(str(uuid.uuid4()), name, dict(args or {}), ts_ms)
    validate(cmd)
    return cmd


def parse_command(payload: bytes) -> Command:
    """Decode a command message; CommandError names what is wrong (its id when it has one)."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError("a command must be a JSON object")
    cid, name, args, ts = data.get("id"), data.get("name"), data.get("args", {}), data.get("ts")
    if not isinstance(cid, str) or not cid:
        raise CommandError("missing command id")
    if not isinstance(name, str):
        raise CommandError(f"command {cid}: missing name")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise CommandError(f"command {cid}: args must be an object")
    if ts is not None and not isinstance(ts, int):
        raise CommandError(f"command {cid}: ts must be epoch milliseconds")
    return Command(cid, name, args, ts)


def _seconds(args: Mapping[str, Any]) -> float:
    value = args.get("seconds")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError("set_interval needs args {\"seconds\": number}")
    return float(value)


def validate(cmd: Command) -> None:
    if cmd.name not in COMMANDS:
        raise CommandError(f"unknown command {cmd.name!r}; known: {', '.join(COMMANDS)}")
    if cmd.name == "set_interval":
        seconds = _seconds(cmd.args)
        from ecokit.sim.fleet import check_interval

        try:
            check_interval(seconds)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    elif cmd.args:
        raise CommandError(f"{cmd.name} takes no args, got {sorted(cmd.args)}")


def execute(vehicle: SimVehicle, cmd: Command,
            on_interval: Callable[[SimVehicle, float], None] | None = None) -> str:
    """Carry out ``cmd`` on ``vehicle``; returns the ack detail or raises CommandError."""
    validate(cmd)
    if cmd.name == "set_interval":
        seconds = _seconds(cmd.args)
        previous = vehicle.set_publish_interval(seconds)
        if on_interval is not None:
            on_interval(vehicle, previous)
        return f"interval {previous:g}s -> {seconds:g}s"
    if cmd.name == "engine_start":
        return vehicle.model.engine_start()
    if cmd.name == "engine_stop":
        return vehicle.model.engine_stop()
    state = vehicle.reported_state()
    return "pong " + json.dumps(state, separators=(",", ":"))


def ack_payload(vehicle_id: str, command_id: str | None, result: str, detail: str, latency_ms: float,
                ts_ms: int) -> bytes:
    return json.dumps({"id": command_id, "vehicle": vehicle_id, "result": result, "detail": detail,
                       "latency_ms": round(latency_ms, 3), "ts": ts_ms}, separators=(",", ":")).encode()


def command_id_of(payload: bytes) -> str | None:
    """The id of a (possibly malformed) command, so even its error ack can be matched."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    cid = data.get("id") if isinstance(data, dict) else None
    return cid if isinstance(cid, str) else None
