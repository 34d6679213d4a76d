"""A simulated vehicle's shadow wiring, against the real shadow state machine (no broker)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from ecokit.config.regions import REGIONS, parse_region
from ecokit.shadow import machine
from ecokit.shadow.device import Message
from ecokit.shadow.machine import ShadowKey, ShadowRecord
from ecokit.shadow.topics import key_prefix, parse_request
from ecokit.sim.commands import Command, execute
from ecokit.sim.fleet import MAX_INTERVAL, MIN_INTERVAL, FleetSpec, SimVehicle, build_fleet
from ecokit.sim.shadow import REPORTED_KEYS, VehicleShadow, desired_interval, json_seconds

THING = "vehicle-0001"


class ShadowService:
    """The pure state machine plus topic routing: what the shadow service answers."""

    def __init__(self) -> None:
        self.records: dict[ShadowKey, ShadowRecord] = {}
        self.now = 1_000
        self.requests = 0

    def send(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        request = parse_request(topic)
        assert request is not None, topic
        self.requests += 1
        self.now += 1
        out = machine.handle(request.key, request.operation, self.records.get(request.key), payload, self.now)
        if out.record is not None:
            self.records[request.key] = out.record
        return [(f"{key_prefix(request.key)}/{r.suffix}", r.payload) for r in out.responses]

    def desire(self, thing: str, desired: dict[str, Any]) -> list[tuple[str, bytes]]:
        return self.send(f"things/{thing}/shadow/update", json.dumps({"state": {"desired": desired}}).encode())

    def document(self, thing: str) -> dict[str, Any]:
        topic, payload = self.send(f"things/{thing}/shadow/get", b"{}")[0]
        assert topic.endswith("/get/accepted"), payload
        return dict(json.loads(payload))


class Bench:
    """A vehicle, its shadow binding and the service; ``apply`` records what the simulator is asked."""

    def __init__(self, interval: float = 1.0, region: str = "paris") -> None:
        self.vehicle = build_fleet(FleetSpec([THING], parse_region(region), 7, interval=interval))[0]
        self.applied: list[float] = []
        self.shadow = VehicleShadow(self.vehicle, self._apply)
        self.service = ShadowService()

    def _apply(self, vehicle: SimVehicle, seconds: float) -> None:
        self.applied.append(seconds)
        vehicle.set_publish_interval(seconds)

    def exchange(self, messages: list[Message] | list[tuple[str, bytes]], *, to_service: bool = True) -> int:
        """Deliver messages (to the service, or answers to the vehicle) until nobody has more to say."""
        rounds = 0
        pending: list[tuple[str, bytes]] = [(m[0], m[1]) for m in messages]
        if not to_service:
            pending = [(m.topic, m.payload) for t, p in pending if self.shadow.wants(t)
                       for m in self.shadow.handle(t, p)]
        while pending:
            rounds += 1
            assert rounds < 10, "vehicle and service keep talking"
            answers = [a for topic, payload in pending for a in self.service.send(topic, payload)]
            pending = [(m.topic, m.payload) for t, p in answers if self.shadow.wants(t)
                       for m in self.shadow.handle(t, p)]
        return rounds

    def connect(self) -> None:
        self.exchange(self.shadow.connected())

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.service.document(THING)["state"])


@pytest.mark.parametrize(("value", "expected"), [
    (5, 5.0), (0.5, 0.5), (MIN_INTERVAL, MIN_INTERVAL), (MAX_INTERVAL, MAX_INTERVAL),
    (0, MIN_INTERVAL), (-3, MIN_INTERVAL), (0.001, MIN_INTERVAL), (86_400, MAX_INTERVAL), (1e300, MAX_INTERVAL),
    ("5", None), (True, None), (False, None), (None, None), ([5], None), ({"s": 5}, None),
    (math.inf, None), (math.nan, None),
])
def test_desired_interval_is_validated_and_clamped(value: Any, expected: float | None) -> None:
    assert desired_interval(value) == expected


def test_intervals_are_reported_as_people_write_them() -> None:
    assert json_seconds(5.0) == 5
    assert isinstance(json_seconds(5.0), int)
    assert json_seconds(0.25) == 0.25


def test_connecting_reports_the_whole_state_then_syncs() -> None:
    bench = Bench(interval=2.0, region="dubai")
    report, sync = bench.shadow.connected()
    assert report.topic == f"things/{THING}/shadow/update"
    assert sync.topic == f"things/{THING}/shadow/get"
    assert report.qos == sync.qos == 1
    reported = json.loads(report.payload)["state"]["reported"]
    v = bench.vehicle
    assert tuple(reported) == REPORTED_KEYS
    assert reported == {"engine": v.model.engine, "publish_interval": 2, "firmware": v.firmware,
                        "kind": v.model.profile.kind, "region": "dubai"}
    bench.exchange([report, sync])
    assert bench.state == {"reported": reported}
    assert bench.applied == []


def test_a_desired_interval_reaches_the_vehicle_and_comes_back_reported() -> None:
    bench = Bench()
    bench.connect()
    answers = bench.service.desire(THING, {"publish_interval": 5})
    assert any(t.endswith("/update/delta") for t, _ in answers)
    rounds = bench.exchange(answers, to_service=False)
    assert bench.applied == [5.0]
    assert bench.vehicle.interval == 5.0
    assert bench.vehicle.next_delay() == 5.0
    assert rounds == 1  # one report, whose answer needs nothing more
    state = bench.state
    assert state["reported"]["publish_interval"] == 5
    assert state["desired"] == {"publish_interval": 5}
    assert "delta" not in state


def test_a_desired_change_made_while_offline_is_applied_by_the_sync_on_connect() -> None:
    bench = Bench(interval=1.0)
    bench.service.desire(THING, {"publish_interval": 0.5})  # the vehicle is not there yet
    bench.connect()
    assert bench.applied == [0.5]
    assert "delta" not in bench.state
    assert bench.state["reported"]["publish_interval"] == 0.5
    # Reconnecting (same vehicle, same shadow) applies nothing again and leaves no delta.
    bench.connect()
    assert bench.applied == [0.5]
    assert "delta" not in bench.state


def test_a_clamped_value_is_applied_once_reported_and_never_loops() -> None:
    bench = Bench()
    bench.connect()
    bench.exchange(bench.service.desire(THING, {"publish_interval": 0.001}), to_service=False)
    assert bench.applied == [MIN_INTERVAL]
    state = bench.state
    assert state["reported"]["publish_interval"] == MIN_INTERVAL
    assert state["delta"] == {"publish_interval": 0.001}  # the shadow shows the vehicle could not comply
    requests = bench.service.requests
    bench.connect()  # reconnect: the get's delta asks again; nothing is applied or reported twice
    assert bench.applied == [MIN_INTERVAL]
    assert bench.service.requests == requests + 2  # the report and the get: no report of the delta


@pytest.mark.parametrize("value", ["fast", True, {"seconds": 5}])
def test_a_desired_value_that_is_not_a_number_is_left_unapplied(value: Any) -> None:
    bench = Bench()
    bench.connect()
    rounds = bench.exchange(bench.service.desire(THING, {"publish_interval": value}), to_service=False)
    assert rounds == 0  # nothing reported
    assert bench.applied == []
    assert bench.vehicle.interval == 1.0
    assert bench.state["delta"] == {"publish_interval": value}


def test_the_same_desired_value_as_running_is_not_applied_again() -> None:
    bench = Bench(interval=2.0)
    bench.connect()
    bench.exchange(bench.service.desire(THING, {"publish_interval": 2.0}), to_service=False)
    assert bench.applied == []


def test_changes_are_reported_only_when_engine_or_interval_change() -> None:
    bench = Bench()
    bench.connect()
    v, shadow = bench.vehicle, bench.shadow
    for _ in range(30):  # telemetry steps with the engine as it was: nothing to report
        engine = v.model.engine
        v.step(1.0)
        if v.model.engine is engine:
            assert shadow.changes() is None
        else:
            bench.exchange([m for m in [shadow.changes()] if m is not None])
    execute(v, Command("1", "set_interval", {"seconds": 3}))
    message = shadow.changes()
    assert message is not None
    assert json.loads(message.payload)["state"]["reported"] == {"publish_interval": 3}
    bench.exchange([message])
    assert shadow.changes() is None
    execute(v, Command("2", "engine_stop"))
    v.step(60.0)  # brakes to a halt, engine off
    message = shadow.changes()
    assert message is not None
    assert json.loads(message.payload)["state"]["reported"] == {"engine": False}
    bench.exchange([message])
    assert bench.state["reported"]["engine"] is False
    assert shadow.changes() is None


def test_engine_changes_from_the_physics_are_reported_once_each() -> None:
    # Over simulated hours a vehicle stops at deliveries and fuel stations (engine off);
    # each switch is one report, far fewer than telemetry messages.
    vehicle = build_fleet(FleetSpec(["van-9"], REGIONS["paris"], 11, interval=1.0))[0]
    shadow = VehicleShadow(vehicle, lambda v, s: v.set_publish_interval(s))
    shadow.connected()
    reports, switches, engine = 0, 0, vehicle.model.engine
    for _ in range(4 * 3600):
        vehicle.step(1.0)
        if vehicle.model.engine is not engine:
            switches, engine = switches + 1, vehicle.model.engine
        if shadow.changes() is not None:
            reports += 1
    assert switches > 0
    assert reports == switches
    assert reports < 4 * 3600 / 100


def test_only_its_own_shadow_answers_are_taken() -> None:
    shadow = Bench().shadow
    assert shadow.wants(f"things/{THING}/shadow/update/delta")
    assert shadow.wants(f"things/{THING}/shadow/get/accepted")
    assert not shadow.wants("things/vehicle-0002/shadow/update/delta")
    assert not shadow.wants(f"things/{THING}/shadow/name/config/update/delta")
    assert not shadow.wants(f"things/{THING}/shadow/update/documents")
    assert set(shadow.subscriptions()) == {f"things/{THING}/shadow/{s}" for s in (
        "update/delta", "update/accepted", "update/rejected", "get/accepted", "get/rejected")}


def test_synced_once_the_service_answered() -> None:
    bench = Bench()
    assert not bench.shadow.synced
    report, sync = bench.shadow.connected()
    assert not bench.shadow.synced  # sent, not answered
    bench.exchange([report, sync])
    assert bench.shadow.synced


def test_a_refusal_also_counts_as_an_answer() -> None:
    bench = Bench()
    sync = bench.shadow.device.sync()  # a get before any report: no shadow yet, 404
    answers = bench.service.send(sync.topic, sync.payload)
    assert [t.rsplit("/", 1)[-1] for t, _ in answers] == ["rejected"]
    bench.exchange(answers, to_service=False)
    assert bench.shadow.synced
