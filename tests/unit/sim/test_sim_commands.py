"""Commands and acks: parsing, validation and their effect on a vehicle (no broker)."""

from __future__ import annotations

import json

import pytest

from ecokit.config.regions import REGIONS
from ecokit.sim.commands import (
    Command,
    CommandError,
    ack_payload,
    command_id_of,
    execute,
    new_command,
    parse_command,
)
from ecokit.sim.fleet import FleetSpec, SimVehicle, build_fleet


@pytest.fixture
def vehicle() -> SimVehicle:
    return build_fleet(FleetSpec(["car-1"], REGIONS["paris"], 3, interval=1.0))[0]


def test_command_roundtrips_through_its_wire_format() -> None:
    cmd = new_command("set_interval", {"seconds": 2.5}, ts_ms=123)
    parsed = parse_command(cmd.payload())
    assert parsed == cmd
    assert set(json.loads(cmd.payload())) == {"id", "name", "args", "ts"}


@pytest.mark.parametrize(("payload", "message"), [
    (b"not json", "not JSON"),
    (b"[1]", "JSON object"),
    (b'{"name": "ping"}', "missing command id"),
    (b'{"id": "x"}', "missing name"),
    (b'{"id": "x", "name": "ping", "args": [1]}', "args must be an object"),
    (b'{"id": "x", "name": "ping", "ts": "yesterday"}', "epoch milliseconds"),
])
def test_malformed_commands_are_refused_with_a_reason(payload: bytes, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command(payload)


def test_command_id_is_found_even_in_an_invalid_command() -> None:
    assert command_id_of(b'{"id": "abc", "name": 3}') == "abc"
    assert command_id_of(b"garbage") is None


def test_set_interval_changes_the_schedule_and_reports_the_change(vehicle: SimVehicle) -> None:
    changes = []
    detail = execute(vehicle, Command("1", "set_interval", {"seconds": 5}),
                     on_interval=lambda v, prev: changes.append((v.id, prev)))
    assert detail == "interval 1s -> 5s"
    assert vehicle.interval == 5.0
    assert changes == [("car-1", 1.0)]


@pytest.mark.parametrize("args", [{}, {"seconds": "5"}, {"seconds": True}, {"seconds": 0}, {"seconds": 1e6}])
def test_set_interval_with_bad_args_is_an_error(vehicle: SimVehicle, args: dict[str, object]) -> None:
    with pytest.raises(CommandError):
        execute(vehicle, Command("1", "set_interval", args))
    assert vehicle.interval == 1.0


def test_engine_commands_switch_the_engine(vehicle: SimVehicle) -> None:
    execute(vehicle, Command("1", "engine_stop"))
    vehicle.step(60.0)
    assert vehicle.model.fix().status == "parked"
    assert execute(vehicle, Command("2", "engine_start")) == "engine started"
    assert vehicle.model.engine


def test_ping_answers_with_the_reported_state(vehicle: SimVehicle) -> None:
    detail = execute(vehicle, Command("1", "ping"))
    state = json.loads(detail.removeprefix("pong "))
    assert state["publish_interval"] == 1.0
    assert state["firmware"] == vehicle.firmware
    assert state["engine"] in ("on", "off")


def test_unknown_commands_and_stray_args_are_errors(vehicle: SimVehicle) -> None:
    with pytest.raises(CommandError, match="unknown command 'reboot'"):
        execute(vehicle, Command("1", "reboot"))
    with pytest.raises(CommandError, match="takes no args"):
        execute(vehicle, Command("1", "ping", {"x": 1}))
    with pytest.raises(CommandError):
        new_command("reboot", ts_ms=0)


def test_ack_follows_the_wire_format() -> None:
    ack = json.loads(ack_payload("car-1", "abc", "ok", "pong", 0.12345, 99))
    assert ack == {"id": "abc", "vehicle": "car-1", "result": "ok", "detail": "pong", "latency_ms": 0.123,
                   "ts": 99}
