"""Route generation and vehicle physics: pure, so tested exhaustively without a broker."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecokit.config.regions import REGIONS, Region, RegionError, parse_region
from ecokit.sim.fleet import FleetSpec, build_fleet, build_vehicle
from ecokit.sim.routes import KMH, angle_between, bearing_deg, generate_route, haversine_m
from ecokit.sim.seeds import SplitMix64, seed_of
from ecokit.sim.vehicle import HARD_BRAKE, PROFILES, Fix, VehicleModel

BOX = parse_region("48.80,2.30,48.83,2.36")


def drive(model: VehicleModel, steps: int, dt: float) -> list[Fix]:
    fixes = [model.fix()]
    for _ in range(steps):
        model.advance(dt)
        fixes.append(model.fix())
    return fixes


# -- regions -----------------------------------------------------------------------------


def test_named_regions_and_boxes_parse() -> None:
    assert parse_region("paris") is REGIONS["paris"]
    assert parse_region("Dubai") is REGIONS["dubai"]
    box = parse_region("bbox: 40.0, -74.1, 40.1, -73.9")
    assert (box.south, box.west, box.north, box.east) == (40.0, -74.1, 40.1, -73.9)


@pytest.mark.parametrize("spec", ["tokyo", "1,2,3", "48.9,2.3,48.8,2.4", "a,b,c,d", "48.8,2.3,48.8001,2.3001",
                                  "10,10,20,30", "nan,1,2,3", "89,1,89.5,2", "10,170,11,-170"])
def test_bad_regions_are_refused_with_the_spec_named(spec: str) -> None:
    # A library error naming the value, not a CLI flag (the grammar also serves ecokit.yaml).
    with pytest.raises(RegionError, match=r"^region '"):
        parse_region(spec)


# -- geometry ----------------------------------------------------------------------------


def test_haversine_and_bearing_known_values() -> None:
    # One degree of latitude is ~111.2 km; due north is 0°, due east 90°.
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195, rel=1e-3)
    assert bearing_deg(0, 0, 1, 0) == pytest.approx(0.0)
    assert bearing_deg(0, 0, 0, 1) == pytest.approx(90.0)
    assert bearing_deg(0, 0, -1, 0) == pytest.approx(180.0)
    assert angle_between(350, 10) == pytest.approx(20)
    assert angle_between(90, 270) == pytest.approx(180)


# -- routes ------------------------------------------------------------------------------


@pytest.mark.parametrize("region", [REGIONS["paris"], REGIONS["dubai"], BOX], ids=lambda r: r.name)
@pytest.mark.parametrize("seed", range(25))
def test_routes_stay_inside_their_region_and_close(region: Region, seed: int) -> None:
    route = generate_route(random.Random(seed), region)
    assert route.legs >= 3
    assert all(region.contains(lat, lng) for lat, lng in route.points)
    assert all(length >= 20.0 for length in route.lengths)
    assert all(0 < limit <= 120 * KMH + 1e-9 for limit in route.limits)
    assert all(0 < c <= 120 * KMH + 1e-9 for c in route.corner_speeds)
    # Leg i ends where leg i+1 starts: the loop is closed.
    assert route.total_m == pytest.approx(sum(route.lengths))
    for i in range(route.legs):
        end = route.position(i, route.lengths[i])
        assert end == pytest.approx(route.points[(i + 1) % route.legs])


def test_same_rng_state_same_route_different_seed_different_route() -> None:
    a = generate_route(random.Random(7), REGIONS["paris"])
    b = generate_route(random.Random(7), REGIONS["paris"])
    c = generate_route(random.Random(8), REGIONS["paris"])
    assert a == b
    assert a != c


def test_dubai_has_more_highway_than_paris() -> None:
    def highway_share(region: Region) -> float:
        total = fast = 0.0
        for seed in range(30):
            r = generate_route(random.Random(seed), region)
            total += r.total_m
            fast += sum(length for length, limit in zip(r.lengths, r.limits, strict=True) if limit >= 90 * KMH)
        return fast / total

    assert highway_share(REGIONS["dubai"]) > highway_share(REGIONS["paris"])


# -- vehicle physics ---------------------------------------------------------------------


def _model(seed: int, region: Region = REGIONS["paris"], kind: str = "car", fuel_l: float | None = None
           ) -> VehicleModel:
    rng = random.Random(seed)
    route = generate_route(rng, region)
    return VehicleModel(route, PROFILES[kind], SplitMix64(seed), leg=rng.randrange(route.legs), fuel_l=fuel_l)


@pytest.mark.parametrize("dt", [0.2, 1.0, 5.0])
@pytest.mark.parametrize("seed", range(12))
def test_no_teleporting_and_bounded_speed_and_acceleration(seed: int, dt: float) -> None:
    model = _model(seed, kind=("car", "van", "truck")[seed % 3])
    fixes = drive(model, int(3000 / dt), dt)
    accel, brake = model.profile.accel, HARD_BRAKE
    for a, b in itertools.pairwise(fixes):
        travelled = (b.odometer_km - a.odometer_km) * 1000
        straight = haversine_m(a.lat, a.lng, b.lat, b.lng)
        # The straight line between two fixes is never longer than the road driven.
        assert straight <= travelled + 0.5
        assert 0 <= b.speed_kmh <= model.profile.max_speed / KMH + 1e-6
        # Distance covered fits the speeds at both ends (plus what acceleration adds).
        vmax = max(a.speed_kmh, b.speed_kmh) * KMH
        assert travelled <= vmax * dt + accel * dt * dt / 2 + 0.5 or dt > 1.0
        assert travelled <= model.profile.max_speed * dt + 1e-6
        # Speed changes smoothly: bounded by the acceleration and hard-braking limits.
        dv = (b.speed_kmh - a.speed_kmh) * KMH
        assert -brake * dt - 1e-6 <= dv <= accel * dt + 1e-6


@pytest.mark.parametrize("seed", range(10))
def test_odometer_is_monotonic_and_fuel_only_rises_at_the_pump(seed: int) -> None:
    model = _model(seed, fuel_l=PROFILES["car"].tank_l * 0.2)
    fixes = drive(model, 8000, 1.0)
    refuels = 0
    for a, b in itertools.pairwise(fixes):
        assert b.odometer_km >= a.odometer_km
        if b.fuel_pct > a.fuel_pct + 1e-9:
            assert b.refuelling or a.refuelling
            refuels += 1
        if b.odometer_km > a.odometer_km:
            assert b.fuel_pct < a.fuel_pct or b.refuelling or a.refuelling
        assert 0 <= b.fuel_pct <= 100
    assert refuels > 0, "starting at 20% the vehicle should have refuelled within ~2 hours"
    assert min(f.fuel_pct for f in fixes) > 5


@pytest.mark.parametrize("seed", range(10))
def test_heading_matches_the_direction_of_travel(seed: int) -> None:
    fixes = drive(_model(seed), 3000, 1.0)
    checked = 0
    for a, b in itertools.pairwise(fixes):
        if a.leg == b.leg and haversine_m(a.lat, a.lng, b.lat, b.lng) > 3:
            chord = bearing_deg(a.lat, a.lng, b.lat, b.lng)
            assert angle_between(chord, b.heading) < 1.0, (a, b)
            checked += 1
        assert 0 <= b.heading < 360
    assert checked > 500


@pytest.mark.parametrize("seed", range(10))
def test_statuses_follow_engine_and_speed(seed: int) -> None:
    fixes = drive(_model(seed), 5000, 1.0)
    seen = {f.status for f in fixes}
    assert {"moving", "idle"} <= seen
    for f in fixes:
        if not f.engine:
            assert f.status == "parked"
            assert f.speed_kmh == 0
        elif f.speed_kmh > 0.2:
            assert f.status == "moving"
        if f.status == "idle":
            assert f.engine
            assert f.speed_kmh < 0.2
    # Vehicles stop (lights) and start again; a long drive includes real stops.
    stops = sum(1 for a, b in itertools.pairwise(fixes) if a.status == "moving" and b.status != "moving")
    assert stops >= 3


def test_vehicles_drive_at_realistic_speeds() -> None:
    speeds = [f.speed_kmh for seed in range(6) for f in drive(_model(seed, REGIONS["dubai"]), 3000, 1.0)]
    assert max(speeds) > 80
    assert min(speeds) >= 0
    moving = [s for s in speeds if s > 1]
    assert 15 < sum(moving) / len(moving) < 100


def test_engine_stop_brakes_smoothly_then_parks_until_started() -> None:
    model = _model(3, REGIONS["dubai"])
    for _ in range(600):
        model.advance(0.5)
        if model.fix().speed_kmh > 40:
            break
    assert model.fix().speed_kmh > 40
    detail = model.engine_stop()
    assert "braking" in detail
    fixes = drive(model, 60, 0.5)
    for a, b in itertools.pairwise(fixes):
        assert b.speed_kmh <= a.speed_kmh + 1e-9
        assert (a.speed_kmh - b.speed_kmh) * KMH <= model.profile.brake * 0.5 + 1e-6
    assert fixes[-1].status == "parked"
    assert not fixes[-1].engine
    parked = fixes[-1]
    later = drive(model, 100, 1.0)[-1]
    assert (later.lat, later.lng, later.odometer_km) == (parked.lat, parked.lng, parked.odometer_km)
    assert model.engine_stop() == "engine already stopped"
    assert model.engine_start() == "engine started"
    assert model.engine_start() == "engine already running"
    moved = drive(model, 120, 1.0)[-1]
    assert moved.engine
    assert moved.odometer_km > parked.odometer_km


def test_negative_or_infinite_dt_is_refused() -> None:
    model = _model(1)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="dt"):
            model.advance(bad)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), dts=st.lists(st.floats(0.05, 12.0), min_size=5, max_size=60))
def test_any_dt_sequence_keeps_the_invariants(seed: int, dts: list[float]) -> None:
    model = _model(seed % 1000)
    prev = model.fix()
    for dt in dts:
        model.advance(dt)
        cur = model.fix()
        travelled = (cur.odometer_km - prev.odometer_km) * 1000
        assert travelled >= 0
        assert haversine_m(prev.lat, prev.lng, cur.lat, cur.lng) <= travelled + 0.5
        assert travelled <= model.profile.max_speed * dt + 1e-6
        assert REGIONS["paris"].contains(cur.lat, cur.lng)
        prev = cur


# -- fleet and determinism ---------------------------------------------------------------


def _messages(seed: int, ids: list[str], steps: int, jitter: float = 0.3) -> list[bytes]:
    fleet = build_fleet(FleetSpec(ids, REGIONS["paris"], seed, interval=1.0, jitter=jitter))
    out = []
    for _ in range(steps):
        for v in fleet:
            out.append(v.telemetry(v.step(v.next_delay()), ts_ms=0))
    return out


def test_same_seed_same_fleet_routes_and_messages() -> None:
    ids = [f"vehicle-{i:04d}" for i in range(20)]
    assert _messages(42, ids, 200) == _messages(42, ids, 200)
    a = build_fleet(FleetSpec(ids, REGIONS["paris"], 42))
    b = build_fleet(FleetSpec(ids, REGIONS["paris"], 42))
    assert [v.model.route for v in a] == [v.model.route for v in b]
    assert [(v.firmware, v.model.profile) for v in a] == [(v.firmware, v.model.profile) for v in b]


def test_other_seed_other_messages_and_vehicle_independent_of_fleet_size() -> None:
    ids = [f"vehicle-{i:04d}" for i in range(5)]
    assert _messages(42, ids, 50) != _messages(43, ids, 50)
    alone = build_vehicle("vehicle-0003", FleetSpec(["vehicle-0003"], REGIONS["paris"], 42))
    in_fleet = build_fleet(FleetSpec(ids, REGIONS["paris"], 42))[3]
    assert alone.model.route == in_fleet.model.route
    assert [alone.telemetry(alone.step(1.0), 0) for _ in range(100)] == \
           [in_fleet.telemetry(in_fleet.step(1.0), 0) for _ in range(100)]


def test_telemetry_follows_the_wire_format() -> None:
    import json

    v = build_fleet(FleetSpec(["truck-1"], REGIONS["dubai"], 1))[0]
    first = json.loads(v.telemetry(v.step(0.0), ts_ms=1_700_000_000_123))
    second = json.loads(v.telemetry(v.step(1.0), ts_ms=1_700_000_001_123))
    assert list(first) == ["v", "vehicle", "seq", "ts", "lat", "lng", "speed", "heading", "fuel", "odometer",
                           "engine", "status"]
    assert (first["v"], first["vehicle"], first["seq"], first["ts"]) == (1, "truck-1", 1, 1_700_000_000_123)
    assert second["seq"] == 2
    assert isinstance(first["engine"], bool)
    assert first["status"] in ("moving", "idle", "parked")
    assert 0 <= first["heading"] < 360
    assert 0 <= first["fuel"] <= 100
    assert REGIONS["dubai"].contains(first["lat"], first["lng"])


def test_jitter_is_seeded_and_bounded() -> None:
    spec = FleetSpec(["a"], REGIONS["paris"], 5, interval=1.0, jitter=0.2)
    delays = [build_vehicle("a", spec).next_delay() for _ in range(1)]
    v1, v2 = build_vehicle("a", spec), build_vehicle("a", spec)
    d1 = [v1.next_delay() for _ in range(500)]
    assert d1 == [v2.next_delay() for _ in range(500)]
    assert delays[0] == d1[0]
    assert all(0.8 <= d <= 1.2 for d in d1)
    assert max(d1) - min(d1) > 0.3


def test_publish_interval_changes_at_runtime_within_bounds() -> None:
    v = build_fleet(FleetSpec(["a"], REGIONS["paris"], 5, interval=1.0))[0]
    assert v.set_publish_interval(5) == 1.0
    assert v.next_delay() == 5.0
    assert v.reported_state()["publish_interval"] == 5.0
    with pytest.raises(ValueError, match="between"):
        v.set_publish_interval(0.0)
    with pytest.raises(ValueError, match="between"):
        v.set_publish_interval(86400)


def test_splitmix_is_deterministic_and_uniform() -> None:
    a, b = SplitMix64(seed_of("x", 1)), SplitMix64(seed_of("x", 1))
    xs = [a.random() for _ in range(20000)]
    assert xs == [b.random() for _ in range(20000)]
    assert all(0 <= x < 1 for x in xs)
    assert abs(sum(xs) / len(xs) - 0.5) < 0.01
    assert seed_of("x", 1) != seed_of("x", 2)
