"""Geofence membership: the STRtree index and the tracker's transitions, with property tests."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely import Point
from shapely.geometry import MultiPoint, mapping

from ecokit.geofence import Geofence, GeofenceEvent, GeofenceIndex, GeofenceTracker, parse_geofences

LNG0, LAT0 = 2.30, 48.80


def square(fid: str, lng: float, lat: float, size: float, **props: Any) -> dict[str, Any]:
    ring = [[lng, lat], [lng + size, lat], [lng + size, lat + size], [lng, lat + size], [lng, lat]]
    return {"type": "Feature", "id": fid, "properties": {"name": fid.title(), **props},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}


def fences(*features: dict[str, Any]) -> list[Geofence]:
    return list(parse_geofences({"type": "FeatureCollection", "features": list(features)}, source="test").fences)


def drive(tracker: GeofenceTracker, path: list[tuple[int, float, float]], vehicle: str = "v1") -> list[GeofenceEvent]:
    events: list[GeofenceEvent] = []
    for ts, lng, lat in path:
        result = tracker.on_fix(vehicle, ts, lat, lng)
        if isinstance(result, list):
            events += result
    return events


# -- the index -------------------------------------------------------------------------


def test_index_finds_exactly_the_fences_holding_a_point() -> None:
    fs = fences(square("a", 2.30, 48.80, 0.01), square("b", 2.305, 48.805, 0.01), square("far", 3.0, 49.0, 0.01))
    index = GeofenceIndex(fs)
    assert {f.id for f in index.containing(2.307, 48.807)} == {"a", "b"}
    assert {f.id for f in index.containing(2.301, 48.801)} == {"a"}
    assert index.containing(2.5, 48.5) == []
    assert GeofenceIndex([]).containing(2.3, 48.8) == []


def test_index_handles_holes_and_multipolygons() -> None:
    donut = {"type": "Feature", "id": "donut", "properties": {"name": "Donut"}, "geometry": {
        "type": "Polygon", "coordinates": [
            [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]]}}
    twins = {"type": "Feature", "id": "twins", "properties": {"name": "Twins"}, "geometry": {
        "type": "MultiPolygon", "coordinates": [
            [[[20, 0], [21, 0], [21, 1], [20, 1], [20, 0]]], [[[30, 0], [31, 0], [31, 1], [30, 1], [30, 0]]]]}}
    index = GeofenceIndex(fences(donut, twins))
    assert [f.id for f in index.containing(1, 1)] == ["donut"]
    assert index.containing(5, 5) == []  # in the hole
    assert [f.id for f in index.containing(30.5, 0.5)] == ["twins"]
    assert index.containing(25, 0.5) == []  # between the two parts


def test_many_positions_at_once_give_what_one_by_one_gives() -> None:
    rng = random.Random(11)
    fs = fences(*[square(f"s{i}", rng.uniform(0, 9), rng.uniform(0, 9), rng.uniform(0.1, 3)) for i in range(80)])
    index = GeofenceIndex(fs)
    positions = [(rng.uniform(-1, 11), rng.uniform(-1, 11)) for _ in range(2000)]
    assert index.containing_many(positions) == [index.containing(x, y) for x, y in positions]
    assert index.containing_many([]) == []
    assert GeofenceIndex([]).containing_many([(1.0, 1.0)]) == [[]]


def test_a_point_on_the_boundary_is_outside() -> None:
    index = GeofenceIndex(fences(square("a", 0, 0, 1)))
    assert index.containing(0.5, 0.0) == []
    assert index.containing(0.5, 1e-9) != []


# -- the tracker -----------------------------------------------------------------------


def test_enter_and_exit_carry_the_crossing_time_position_and_dwell() -> None:
    tracker = GeofenceTracker(fences(square("depot", 2.30, 48.80, 0.01, tags=["depot"])))
    path = [(1000, 2.29, 48.805), (2000, 2.305, 48.805), (3000, 2.306, 48.805), (9000, 2.32, 48.805)]
    enter, exit_ = drive(tracker, path)
    assert (enter.type, enter.geofence, enter.ts, enter.confirmed_ts) == ("geofence_enter", "depot", 2000, 2000)
    assert (enter.lat, enter.lng, enter.tags, enter.name) == (48.805, 2.305, ("depot",), "Depot")
    assert (exit_.type, exit_.ts, exit_.dwell_s) == ("geofence_exit", 9000, 7.0)
    assert enter.topic == "fleet/v1/events"
    doc = json.loads(enter.payload())
    assert doc == {"v": 1, "vehicle": "v1", "type": "geofence_enter", "geofence": "depot", "name": "Depot",
                   "tags": ["depot"], "ts": 2000, "confirmed_ts": 2000, "lat": 48.805, "lng": 2.305,
                   "source": "processor"}
    assert json.loads(exit_.payload())["dwell_s"] == 7.0
    assert tracker.inside("v1") == []


def test_min_inside_delays_the_enter_and_reports_the_real_crossing_time() -> None:
    tracker = GeofenceTracker(fences(square("d", 0, 0, 1, min_inside_s=10)))
    path = [(0, -1, 0.5)] + [(1000 * s, 0.5, 0.5) for s in range(1, 12)]
    (enter,) = drive(tracker, path)
    assert (enter.ts, enter.confirmed_ts) == (1000, 11000)  # entered at 1 s, known at 11 s


def test_edge_jitter_gives_one_enter_and_one_exit_with_hysteresis() -> None:
    fs = fences(square("d", 0, 0, 1))
    rng = random.Random(7)
    # Inside for half a minute, a minute of fixes wobbling across the east edge (never more
    # than 3 s on one side), then away for good.
    path = [(1000 * s, 0.5, 0.5) for s in range(0, 30)]
    side, s = 1, 30
    while s < 90:
        for _ in range(rng.randint(1, 3)):
            path.append((1000 * s, 1.0 + side * rng.uniform(0.00001, 0.0002), 0.5))
            s += 1
        side = -side
    path = [p for p in path if p[0] < 90_000]
    path += [(1000 * s, 2.0, 0.5) for s in range(90, 130)]
    plain = drive(GeofenceTracker(fs), path)
    assert len(plain) > 10  # Traccar's behaviour: every wobble is a crossing
    debounced = drive(GeofenceTracker(fs, min_inside_s=5, min_outside_s=5), path)
    assert [e.type for e in debounced] == ["geofence_enter", "geofence_exit"]
    assert debounced[1].ts == 90_000


def test_per_fence_durations_override_the_defaults() -> None:
    fs = fences(square("quick", 0, 0, 1, min_inside_s=0), square("slow", 0, 0, 1.5, min_inside_s=30))
    tracker = GeofenceTracker(fs, min_inside_s=10)
    events = drive(tracker, [(0, 0.5, 0.5), (5000, 0.5, 0.5), (31_000, 0.5, 0.5)])
    assert [(e.geofence, e.confirmed_ts) for e in events] == [("quick", 0), ("slow", 31_000)]


def test_out_of_order_and_repeated_fixes_never_flip_membership_and_are_counted() -> None:
    tracker = GeofenceTracker(fences(square("d", 0, 0, 1)))
    assert drive(tracker, [(1000, 0.5, 0.5)])[0].type == "geofence_enter"
    assert tracker.on_fix("v1", 500, 5.0, 5.0) == "out_of_order"  # a late fix from outside
    assert tracker.on_fix("v1", 1000, 5.0, 5.0) == "duplicate"
    assert tracker.inside("v1") == ["d"]
    assert tracker.skipped == {"out_of_order": 1, "duplicate": 1}
    assert drive(tracker, [(2000, 5.0, 5.0)])[0].type == "geofence_exit"


def test_vehicles_are_tracked_independently() -> None:
    tracker = GeofenceTracker(fences(square("d", 0, 0, 1)))
    assert len(drive(tracker, [(1000, 0.5, 0.5)], "a")) == 1
    assert tracker.on_fix("b", 500, 0.5, 0.5) != "out_of_order"  # b's clock is its own
    assert tracker.inside("a") == tracker.inside("b") == ["d"]


def test_reloading_keeps_membership_of_fences_that_stay_and_forgets_removed_ones() -> None:
    tracker = GeofenceTracker(fences(square("keep", 0, 0, 1), square("gone", 0, 0, 2)))
    assert len(drive(tracker, [(1000, 0.5, 0.5)])) == 2
    # "keep" grows: the vehicle is still inside it, so no second enter; "gone" is forgotten.
    tracker.set_fences(fences(square("keep", -1, -1, 3), square("new", 0, 0, 1)))
    events = drive(tracker, [(2000, 0.5, 0.5)])
    assert [(e.type, e.geofence) for e in events] == [("geofence_enter", "new")]
    assert sorted(tracker.inside("v1")) == ["keep", "new"]


def test_a_vehicle_already_inside_a_new_fence_enters_it_on_its_next_fix() -> None:
    tracker = GeofenceTracker([])
    assert drive(tracker, [(1000, 0.5, 0.5)]) == []
    tracker.set_fences(fences(square("d", 0, 0, 1)))
    assert [e.type for e in drive(tracker, [(2000, 0.5, 0.5)])] == ["geofence_enter"]


# -- properties ------------------------------------------------------------------------


@st.composite
def polygons(draw: st.DrawFn) -> list[dict[str, Any]]:
    features = []
    for n in range(draw(st.integers(1, 5))):
        # Corners on a 0.001 grid: a convex hull of denormal floats is not a polygon GEOS accepts.
        corners = draw(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), min_size=3, max_size=8))
        hull = MultiPoint([(x / 1000, y / 1000) for x, y in corners]).convex_hull
        if hull.geom_type != "Polygon" or hull.area < 0.5 or not hull.is_valid:
            continue
        geometry = json.loads(json.dumps(mapping(hull)))
        features.append({"type": "Feature", "id": f"f{n}", "properties": {"name": f"F{n}"}, "geometry": geometry})
    return features


paths = st.lists(st.tuples(st.floats(-1, 11), st.floats(-1, 11)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(features=polygons(), walk=paths)
def test_a_random_path_gets_one_enter_and_one_exit_per_crossing(features: list[dict[str, Any]],
                                                                  walk: list[tuple[float, float]]) -> None:
    fs = fences(*features)
    events = drive(GeofenceTracker(fs), [(1000 * (i + 1), x, y) for i, (x, y) in enumerate(walk)])
    for fence in fs:
        # The oracle: shapely's own test on every fix, no index, no preparation.
        inside = [fence.geometry.contains(Point(x, y)) for x, y in walk]
        crossings = [(i, now) for i, (before, now) in enumerate(zip([False, *inside[:-1]], inside, strict=True))
                     if before != now]
        mine = [e for e in events if e.geofence == fence.id]
        assert [(e.ts, e.type) for e in mine] == [
            (1000 * (i + 1), "geofence_enter" if entered else "geofence_exit") for i, entered in crossings]
        for enter, exit_ in zip(mine[::2], mine[1::2], strict=False):
            assert exit_.dwell_s == (exit_.ts - enter.ts) / 1000


@st.composite
def jittery_visits(draw: st.DrawFn) -> tuple[list[tuple[int, float, float]], int]:
    """Runs of fixes 1 s apart alternating outside/inside a unit square; runs shorter than
    the 10 s hysteresis are jitter, longer ones real visits. Returns the path and how many
    real visits (long inside runs each followed by a long outside run, or the end) it has."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    path: list[tuple[int, float, float]] = []
    t = 0
    visits = 0
    confirmed_inside = False
    for _ in range(draw(st.integers(1, 12))):
        long_visit = draw(st.booleans())
        # A jitter run spans at most 9 s (10 fixes); a real one at least 10 s.
        length = draw(st.integers(11, 30)) if long_visit else draw(st.integers(1, 10))
        target_inside = not confirmed_inside
        for _ in range(length):
            near_edge = rng.uniform(0.0001, 0.2)
            x = 1 - near_edge if target_inside else 1 + near_edge
            path.append((t, x, rng.uniform(0.1, 0.9)))
            t += 1000
        if long_visit:
            confirmed_inside = target_inside
            visits += target_inside
        # Back on the confirmed side for a moment between runs.
        for _ in range(draw(st.integers(1, 3))):
            x = 0.5 if confirmed_inside else 3.0
            path.append((t, x, 0.5))
            t += 1000
    return path, visits


@settings(max_examples=150, deadline=None)
@given(case=jittery_visits())
def test_jitter_shorter_than_the_hysteresis_never_gives_an_event(case: tuple[list[tuple[int, float, float]], int]
                                                                  ) -> None:
    path, visits = case
    events = drive(GeofenceTracker(fences(square("d", 0, 0, 1)), min_inside_s=10, min_outside_s=10), path)
    enters = [e for e in events if e.type == "geofence_enter"]
    exits = [e for e in events if e.type == "geofence_exit"]
    assert len(enters) == visits
    assert len(exits) in (visits - 1, visits) if visits else not exits
    assert [e.type for e in events] == ["geofence_enter", "geofence_exit"] * (len(events) // 2) + (
        ["geofence_enter"] if len(events) % 2 else [])
    for enter, exit_ in zip(enters, exits, strict=False):
        assert exit_.dwell_s == (exit_.ts - enter.ts) / 1000
        assert exit_.dwell_s >= 10


@settings(max_examples=100, deadline=None)
@given(features=polygons(), walk=paths, stale=st.lists(st.tuples(st.integers(0, 59), st.floats(-1, 11),
                                                                 st.floats(-1, 11)), max_size=20))
def test_stale_fixes_change_nothing(features: list[dict[str, Any]], walk: list[tuple[float, float]],
                                    stale: list[tuple[int, float, float]]) -> None:
    fs = fences(*features)
    clean = [(1000 * (i + 1), x, y) for i, (x, y) in enumerate(walk)]
    mixed: list[tuple[int, float, float]] = []
    inserted = 0
    for i, fix in enumerate(clean):
        mixed.append(fix)
        for at, x, y in stale:
            if at == i:
                mixed.append((fix[0] - 500 * (1 + inserted % 2), x, y))  # older than the newest fix
                inserted += 1
    tracker = GeofenceTracker(fs)
    assert drive(tracker, mixed) == drive(GeofenceTracker(fs), clean)
    assert tracker.skipped["out_of_order"] == inserted


@pytest.mark.parametrize("seed", range(3))
def test_many_vehicles_many_fences_agree_with_a_brute_force_scan(seed: int) -> None:
    rng = random.Random(seed)
    fs = fences(*[square(f"s{i}", rng.uniform(0, 9), rng.uniform(0, 9), rng.uniform(0.1, 2)) for i in range(60)])
    tracker = GeofenceTracker(fs)
    inside: dict[tuple[str, str], bool] = {}
    for step in range(40):
        for v in range(25):
            x, y = rng.uniform(-1, 11), rng.uniform(-1, 11)
            result = tracker.on_fix(f"v{v}", 1000 * (step + 1), y, x)
            assert isinstance(result, list)
            for fence in fs:
                now = fence.geometry.contains(Point(x, y))
                was = inside.get((f"v{v}", fence.id), False)
                got = [e.type for e in result if e.geofence == fence.id]
                assert got == ([] if now == was else ["geofence_enter" if now else "geofence_exit"])
                inside[(f"v{v}", fence.id)] = now
