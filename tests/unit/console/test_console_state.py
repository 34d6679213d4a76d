"""The console's last-known vehicle state: inputs, rejections, LRU bound, filters, changes."""

from __future__ import annotations

from typing import Any

import pytest

from ecokit.console.state import FleetStore, Rejected, VehicleFilter

T0 = 1_733_320_000_000


def fix(ts: int = T0, **over: Any) -> dict[str, Any]:
    doc = {"v": 1, "vehicle": "x", "seq": 1, "ts": ts, "lat": 48.85, "lng": 2.35, "speed": 30.0, "heading": 90.0,
           "fuel": 50.0, "odometer": 12.5, "engine": True, "status": "moving"}
    doc.update(over)
    return doc


def test_telemetry_sets_the_full_state_and_brings_the_vehicle_online() -> None:
    store = FleetStore(10)
    came_online, ts = store.on_telemetry("v1", fix())
    assert (came_online, ts) == (True, T0)
    v = store.get("v1")
    assert v is not None
    assert v.full() == {"id": "v1", "lat": 48.85, "lng": 2.35, "ts": T0, "speed": 30.0, "heading": 90.0,
                        "fuel": 50.0, "odometer": 12.5, "engine": True, "status": "moving", "online": True,
                        "last_seen": T0, "derived_speed": None, "seq": 1}
    assert store.on_telemetry("v1", fix(T0 + 1000)) == (False, T0 + 1000)


@pytest.mark.parametrize(("doc", "reason", "field"), [
    ([1, 2], "not_json", None),
    (fix(lat=None), "missing_field", "lat"),
    ({**fix(), "ts": None}, "missing_field", "ts"),
    (fix(lat=91), "out_of_range", "lat"),
    (fix(lng="2.3"), "wrong_type", "lng"),
    (fix(speed=-1), "out_of_range", "speed"),
    (fix(fuel=101), "out_of_range", "fuel"),
    ({**fix(), "ts": 1.5}, "wrong_type", "ts"),
    (fix(engine="on"), "wrong_type", "engine"),
    (fix(status="flying"), "bad_value", "status"),
    (fix(lat=float("nan")), "wrong_type", "lat"),
])
def test_unusable_telemetry_is_rejected_by_reason_and_changes_nothing(doc: Any, reason: str, field: str | None) -> None:
    store = FleetStore(10)
    store.on_telemetry("v1", fix())
    store.take_changes()
    with pytest.raises(Rejected) as caught:
        store.on_telemetry("v1", doc)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    v = store.get("v1")
    assert v is not None
    assert v.lat == 48.85
    assert store.take_changes() == ([], [])


def test_an_older_fix_does_not_move_the_vehicle_back() -> None:
    store = FleetStore(10)
    store.on_telemetry("v1", fix(T0 + 5000, lat=1.0))
    assert store.on_telemetry("v1", fix(T0, lat=2.0)) == (False, None)
    v = store.get("v1")
    assert v is not None
    assert v.lat == 1.0
    assert store.stale == 1


def test_status_messages_set_online_offline_and_the_processor_fields() -> None:
    store = FleetStore(10)
    assert store.on_status("v1", {"state": "online", "ts": T0, "source": "device"}) is True
    store.on_telemetry("v1", fix(T0 + 1000))
    assert store.on_status("v1", {"state": "offline", "ts": T0 + 5000, "source": "processor", "reason": "timeout",
                                  "last_seen": T0 + 1000, "derived_speed": 41.5}) is False
    v = store.get("v1")
    assert v is not None
    assert (v.online, v.status, v.derived_speed, v.last_seen) == (False, "offline", 41.5, T0 + 1000)
    # Telemetry after that makes it online again, and says so.
    assert store.on_telemetry("v1", fix(T0 + 6000)) == (True, T0 + 6000)
    assert store.get("v1").status == "moving"  # type: ignore[union-attr]


def test_an_old_last_will_after_newer_telemetry_is_ignored() -> None:
    store = FleetStore(10)
    store.on_telemetry("v1", fix(T0 + 10_000))
    store.on_status("v1", {"state": "offline", "ts": T0, "source": "device"})
    assert store.get("v1").online is True  # type: ignore[union-attr]


@pytest.mark.parametrize("doc", [{"state": "sleeping"}, {"ts": T0}, "offline", {"state": "online", "ts": -1}])
def test_bad_status_is_rejected(doc: Any) -> None:
    with pytest.raises(Rejected):
        FleetStore(10).on_status("v1", doc)


def test_a_vehicle_known_only_by_status_has_no_position_and_unknown_status() -> None:
    store = FleetStore(10)
    store.on_status("v1", {"state": "online", "ts": T0})
    lite = store.snapshot()[0]
    assert lite == {"id": "v1", "lat": None, "lng": None, "ts": None, "speed": None, "heading": None,
                    "status": "unknown", "fuel": None, "online": True}


def test_the_least_recently_heard_from_vehicle_is_forgotten_first_and_announced() -> None:
    store = FleetStore(3)
    for i in range(3):
        store.on_telemetry(f"v{i}", fix(T0 + i))
    store.take_changes()
    store.on_telemetry("v0", fix(T0 + 10))  # v0 is fresh again; v1 is now the oldest
    store.on_telemetry("v3", fix(T0 + 11))
    assert sorted(store.ids()) == ["v0", "v2", "v3"]
    vehicles, removed = store.take_changes()
    assert sorted(v["id"] for v in vehicles) == ["v0", "v3"]
    assert removed == ["v1"]
    assert store.evicted == 1


def test_changes_hold_the_latest_state_once_per_vehicle() -> None:
    store = FleetStore(10)
    for n in range(5):
        store.on_telemetry("v1", fix(T0 + n, speed=float(n)))
    vehicles, _ = store.take_changes()
    assert [(v["id"], v["speed"]) for v in vehicles] == [("v1", 4.0)]
    assert store.take_changes() == ([], [])


@pytest.fixture
def fleet() -> FleetStore:
    store = FleetStore(100)
    store.on_telemetry("truck-1", fix(lat=48.85, lng=2.35, fuel=80.0, status="moving"))
    store.on_telemetry("truck-2", fix(lat=48.86, lng=2.30, fuel=10.0, status="idle"))
    store.on_telemetry("van-3", fix(lat=25.2, lng=55.3, fuel=60.0, status="parked"))
    store.on_telemetry("van-4", fix(lat=0.0, lng=179.5, fuel=None, status="moving"))
    store.on_status("van-4", {"state": "offline", "ts": T0 + 1})
    store.on_status("ghost-5", {"state": "online", "ts": T0})
    return store


@pytest.mark.parametrize(("flt", "expected"), [
    (VehicleFilter(), ["ghost-5", "truck-1", "truck-2", "van-3", "van-4"]),
    (VehicleFilter(statuses=frozenset({"moving"})), ["truck-1"]),
    (VehicleFilter(statuses=frozenset({"offline", "unknown"})), ["ghost-5", "van-4"]),
    (VehicleFilter(min_fuel=50), ["truck-1", "van-3"]),
    (VehicleFilter(bbox=(2.0, 48.0, 3.0, 49.0)), ["truck-1", "truck-2"]),
    (VehicleFilter(bbox=(179.0, -1.0, -179.0, 1.0)), ["van-4"]),  # across the antimeridian
    (VehicleFilter(q="VAN"), ["van-3", "van-4"]),
    (VehicleFilter(online=False), ["van-4"]),
    (VehicleFilter(statuses=frozenset({"idle", "moving"}), min_fuel=20), ["truck-1"]),
])
def test_filters_combine_with_and(fleet: FleetStore, flt: VehicleFilter, expected: list[str]) -> None:
    total, items = fleet.query(flt, limit=100, offset=0)
    assert [v["id"] for v in items] == expected
    assert total == len(expected)


def test_paging_is_by_id_and_total_counts_every_match(fleet: FleetStore) -> None:
    total, items = fleet.query(VehicleFilter(), limit=2, offset=2)
    assert total == 5
    assert [v["id"] for v in items] == ["truck-2", "van-3"]
    assert fleet.query(VehicleFilter(), limit=2, offset=10) == (5, [])


def test_counts_by_status(fleet: FleetStore) -> None:
    assert fleet.counts() == {"total": 5, "active": 4, "moving": 1, "idle": 1, "parked": 1, "offline": 1,
                              "unknown": 1}
