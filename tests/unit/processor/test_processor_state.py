"""The fleet processor's state machine."""

from __future__ import annotations

import json

import pytest

from ecokit.processor.state import FleetState, haversine_km


def fix(ts: int, lat: float, lng: float) -> dict[str, object]:
    return {"v": 1, "ts": ts, "lat": lat, "lng": lng, "speed": 0.0}


@pytest.fixture
def fleet() -> FleetState:
    return FleetState(offline_after=60, status_interval=30)


def test_haversine_of_one_degree_of_latitude() -> None:
    assert haversine_km(0, 0, 1, 0) == pytest.approx(111.195, abs=0.01)


def test_first_telemetry_brings_a_vehicle_online(fleet: FleetState) -> None:
    (update,) = fleet.on_telemetry("v1", fix(1_000, 52.0, 13.0), now=10.0)
    assert (update.vehicle, update.state, update.reason, update.last_seen) == ("v1", "online", "activity", 1_000)
    doc = json.loads(update.payload())
    assert doc["source"] == "processor"
    assert doc["ts"] == 10_000
    assert doc["state"] == "online"
    assert update.topic == "fleet/v1/status"


def test_speed_is_derived_from_consecutive_fixes(fleet: FleetState) -> None:
    fleet.on_telemetry("v1", fix(0, 0.0, 0.0), now=1.0)
    fleet.on_telemetry("v1", fix(3_600_000, 1.0, 0.0), now=2.0)  # one degree north in an hour
    assert fleet.vehicles["v1"].derived_speed == pytest.approx(111.195, abs=0.01)


def test_a_redelivered_or_older_fix_changes_nothing(fleet: FleetState) -> None:
    fleet.on_telemetry("v1", fix(0, 0.0, 0.0), now=1.0)
    fleet.on_telemetry("v1", fix(60_000, 0.01, 0.0), now=2.0)
    speed = fleet.vehicles["v1"].derived_speed
    assert fleet.on_telemetry("v1", fix(60_000, 0.01, 0.0), now=3.0) == []
    assert fleet.on_telemetry("v1", fix(30_000, 5.0, 5.0), now=4.0) == []
    assert fleet.vehicles["v1"].derived_speed == speed
    assert fleet.vehicles["v1"].last_seen == 60_000


def test_an_impossible_jump_is_not_a_speed(fleet: FleetState) -> None:
    fleet.on_telemetry("v1", fix(0, 0.0, 0.0), now=1.0)
    fleet.on_telemetry("v1", fix(1_000, 10.0, 10.0), now=2.0)
    assert fleet.vehicles["v1"].derived_speed is None


def test_silence_takes_a_vehicle_offline_and_traffic_brings_it_back(fleet: FleetState) -> None:
    fleet.on_telemetry("v1", fix(0, 0.0, 0.0), now=0.0)
    assert fleet.tick(59.0) == []
    (offline,) = fleet.tick(60.0)
    assert (offline.state, offline.reason, offline.derived_speed) == ("offline", "timeout", None)
    assert fleet.tick(120.0) == []
    (online,) = fleet.on_telemetry("v1", fix(130_000, 0.0, 0.0), now=130.0)
    assert (online.state, online.reason) == ("online", "activity")


def test_last_will_takes_a_vehicle_offline_once(fleet: FleetState) -> None:
    fleet.on_telemetry("v1", fix(0, 0.0, 0.0), now=0.0)
    will = {"v": 1, "vehicle": "v1", "state": "offline", "ts": 5_000, "source": "device"}
    (update,) = fleet.on_status("v1", will, now=5.0)
    assert (update.state, update.reason, update.last_seen) == ("offline", "last_will", 5_000)
    assert fleet.on_status("v1", will, now=6.0) == []
    (back,) = fleet.on_status("v1", {**will, "state": "online", "ts": 7_000}, now=7.0)
    assert (back.state, back.reason) == ("online", "device")


def test_its_own_status_messages_are_ignored(fleet: FleetState) -> None:
    (update,) = fleet.on_telemetry("v1", fix(0, 0.0, 0.0), now=0.0)
    assert fleet.on_status("v1", json.loads(update.payload()), now=1.0) == []
    offline_from_processor = {"state": "offline", "ts": 1, "source": "processor"}
    assert fleet.on_status("v1", offline_from_processor, now=2.0) == []
    assert fleet.vehicles["v1"].state == "online"
    assert fleet.ignored == 2


def test_active_vehicles_get_periodic_updates(fleet: FleetState) -> None:
    fleet.on_telemetry("v1", fix(0, 0.0, 0.0), now=0.0)
    assert fleet.on_telemetry("v1", fix(10_000, 0.0, 0.001), now=10.0) == []
    (update,) = fleet.on_telemetry("v1", fix(30_000, 0.0, 0.002), now=30.0)
    assert update.reason == "periodic"
    assert update.derived_speed is not None


@pytest.mark.parametrize("doc", [None, [], {"ts": "x", "lat": 1, "lng": 1}, {"ts": 1, "lat": 95, "lng": 1},
                                 {"ts": 1, "lat": True, "lng": 1}])
def test_unusable_telemetry_is_ignored(fleet: FleetState, doc: object) -> None:
    assert fleet.on_telemetry("v1", doc, now=1.0) == []
    assert fleet.ignored == 1
    assert "v1" not in fleet.vehicles
