"""config/geofences.geojson: every validation error names its feature and says what to do;
writes are atomic and an invalid set never replaces a valid one."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from ecokit.geofence import GeofenceError, GeofenceStore, GeofenceWatcher, parse_geofences, parse_geofences_text
from ecokit.geofence.model import swapped_region_warning

PARIS = (2.2, 48.8, 2.5, 48.95)  # min lng, min lat, max lng, max lat


def ring(*corners: tuple[float, float]) -> list[list[float]]:
    return [list(c) for c in corners]


SQUARE = ring((2.30, 48.86), (2.32, 48.86), (2.32, 48.87), (2.30, 48.87), (2.30, 48.86))


def feature(fid: Any = "depot", coords: Any = None, kind: str = "Polygon", **props: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "Feature", "properties": {"name": "Depot", **props},
                           "geometry": {"type": kind, "coordinates": [SQUARE] if coords is None else coords}}
    if fid is not None:
        out["id"] = fid
    return out


def collection(*features: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def problems(doc: Any) -> list[str]:
    with pytest.raises(GeofenceError) as info:
        parse_geofences(doc, source="config/geofences.geojson")
    assert str(info.value).startswith("config/geofences.geojson: ")
    return info.value.problems


def only_problem(doc: Any) -> str:
    (problem,) = problems(doc)
    return problem


# -- validation ------------------------------------------------------------------------


def test_a_valid_file_gives_its_fences_with_defaults_and_kept_properties() -> None:
    fences = parse_geofences(collection(feature(tags=["depot", "north"], min_inside_s=30, colour="#f00"),
                                        feature("yard", name=None)), source="f")
    depot, yard = fences.fences
    assert (depot.id, depot.name, depot.tags, depot.min_inside_s, depot.min_outside_s) == (
        "depot", "Depot", ("depot", "north"), 30.0, None)
    assert depot.feature["properties"]["colour"] == "#f00"
    assert yard.name == "yard"  # no name: the id
    assert depot.summary()["vertices"] == 5
    assert 1.5 < depot.summary()["area_km2"] < 1.7


def test_properties_id_is_accepted_and_moved_to_the_feature() -> None:
    doc = feature(None)
    doc["properties"]["id"] = "depot"
    (fence,) = parse_geofences(collection(doc), source="f").fences
    assert fence.id == "depot"
    assert fence.feature["id"] == "depot"
    assert "id" not in fence.feature["properties"]


def test_what_ecokit_writes_reads_back_identically() -> None:
    fences = parse_geofences(collection(feature(tags=["a"]), feature("b", kind="MultiPolygon", coords=[[SQUARE]])),
                             source="f")
    again = parse_geofences_text(fences.dumps(), source="f")
    assert again.dumps() == fences.dumps()
    assert [f.id for f in again.fences] == ["depot", "b"]


def test_not_json() -> None:
    with pytest.raises(GeofenceError, match="not JSON"):
        parse_geofences_text(b'{"type": "FeatureCollection", "features": [', source="f")
    with pytest.raises(GeofenceError, match="NaN is not valid JSON"):
        parse_geofences_text(b'{"type": "FeatureCollection", "features": [NaN]}', source="f")


def test_not_a_feature_collection() -> None:
    assert "must be a GeoJSON FeatureCollection" in only_problem(feature())
    assert "must be a GeoJSON FeatureCollection" in only_problem([feature()])
    assert '"features" must be a list' in only_problem({"type": "FeatureCollection", "features": {}})


def test_not_a_feature() -> None:
    assert only_problem(collection({"type": "Polygon", "coordinates": [SQUARE]})).startswith(
        'feature #1: is not a GeoJSON Feature')


def test_missing_and_malformed_ids() -> None:
    assert 'feature #1 ("Depot"): has no id' in only_problem(collection(feature(None)))
    assert 'id 7 must be a string' in only_problem(collection(feature(7)))
    assert 'id "a b" must be a string' in only_problem(collection(feature("a b")))
    assert 'id "x/y"' in only_problem(collection(feature("x/y")))


def test_duplicate_ids_name_both_features() -> None:
    problem = only_problem(collection(feature("a"), feature("b"), feature("a", name="Again")))
    assert problem == ('feature #3 (id "a", "Again"): duplicate id \'a\', already used by feature #1 '
                       '(id "a", "Depot"); ids must be unique')


def test_bad_name_tags_and_durations() -> None:
    assert "properties.name must be a non-empty single-line string" in only_problem(collection(feature(name="")))
    assert "properties.name" in only_problem(collection(feature(name="two\nlines")))
    assert "properties.tags must be a list of words" in only_problem(collection(feature(tags="depot")))
    assert "properties.tags" in only_problem(collection(feature(tags=["has space"])))
    assert "properties.min_inside_s must be a number of seconds" in only_problem(
        collection(feature(min_inside_s=-1)))
    assert "properties.min_outside_s" in only_problem(collection(feature(min_outside_s="30s")))
    assert "properties must be an object" in only_problem(collection({**feature(), "properties": []}))


def test_geometry_missing_or_of_another_type() -> None:
    assert "has no geometry" in only_problem(collection({**feature(), "geometry": None}))
    point = only_problem(collection(feature(kind="Point", coords=[2.3, 48.8])))
    assert "geometry type 'Point' is not supported; a geofence is a Polygon or MultiPolygon" in point


def test_malformed_coordinates() -> None:
    assert "needs a list of rings" in only_problem(collection(feature(coords=[])))
    assert "ring 0 (outer) is not a list of positions" in only_problem(collection(feature(coords=["x"])))
    bad = only_problem(collection(feature(coords=[[[2.3, 48.8], [2.3], [2.4, 48.9], [2.3, 48.8]]])))
    assert "[2.3] is not a position" in bad
    assert "is not a position" in only_problem(collection(feature(coords=[[[2.3, True], [2.3, 48.8]]])))
    assert "a MultiPolygon needs a non-empty list of polygons" in only_problem(
        collection(feature(kind="MultiPolygon", coords=[])))


def test_too_few_positions() -> None:
    problem = only_problem(collection(feature(coords=[ring((0, 0), (1, 0), (0, 0))])))
    assert "ring 0 (outer) has 3 positions; a ring needs at least 4" in problem


def test_an_unclosed_ring_says_where_it_starts_and_ends() -> None:
    problem = only_problem(collection(feature(coords=[SQUARE[:-1]])))
    assert problem == ('feature #1 (id "depot", "Depot"): ring 0 (outer) is not closed: it starts at [2.3, 48.86] '
                       'but ends at [2.3, 48.87]; repeat the first position at the end')


def test_a_hole_that_is_not_closed_is_named_as_a_hole() -> None:
    hole = ring((2.305, 48.862), (2.31, 48.862), (2.31, 48.865))
    hole.append([2.305, 48.865])
    assert "ring 1 (hole) is not closed" in only_problem(collection(feature(coords=[SQUARE, hole])))


def test_lat_lng_swapped_is_detected_and_explained() -> None:
    swapped = [[lat, lng] for lng, lat in ring((100.1, 10.0), (100.2, 10.0), (100.2, 10.1), (100.1, 10.0))]
    problem = only_problem(collection(feature(coords=[swapped])))
    assert "position [10, 100.1] has latitude 100.1, beyond ±90" in problem
    assert "it looks like [latitude, longitude]: GeoJSON is [longitude, latitude], so write [100.1, 10]" in problem


def test_a_position_off_the_globe() -> None:
    assert "is off the globe" in only_problem(collection(feature(coords=[ring((200, 100), (201, 100), (201, 101),
                                                                              (200, 100))])))


def test_a_swap_that_stays_in_range_is_a_warning_near_the_region() -> None:
    # [48.86, 2.30] is a valid position (off Somalia); with Paris as the region it is a swap.
    swapped = [[lat, lng] for lng, lat in SQUARE]
    fences = parse_geofences(collection(feature(coords=[swapped]), feature("ok")), source="f", region=PARIS)
    assert len(fences.fences) == 2
    (warning,) = fences.warnings
    assert "'depot' lies far from the simulated region" in warning
    assert "GeoJSON positions are [longitude, latitude]" in warning
    assert swapped_region_warning(fences.fences[1], PARIS) is None


def test_a_polygon_across_the_antimeridian_must_be_split() -> None:
    wide = ring((179, 0), (-179, 0), (-179, 1), (179, 1), (179, 0))
    assert "must be split into a MultiPolygon (RFC 7946" in only_problem(collection(feature(coords=[wide])))


def test_a_self_intersecting_ring_says_where() -> None:
    bow = ring((2.30, 48.86), (2.32, 48.87), (2.32, 48.86), (2.30, 48.87), (2.30, 48.86))
    problem = only_problem(collection(feature(coords=[bow])))
    assert "its boundary crosses or touches itself at [2.31, 48.865] (e.g. a bow tie" in problem


def test_corners_on_one_line() -> None:
    flat = ring((0, 0), (1, 0), (2, 0), (0, 0))
    assert "crosses or touches itself" in only_problem(collection(feature(coords=[flat])))


def test_a_hole_outside_its_shell_and_overlapping_parts() -> None:
    outside = ring((5, 5), (6, 5), (6, 6), (5, 5))
    square = ring((0, 0), (4, 0), (4, 4), (0, 4), (0, 0))
    assert "a hole (ring 1 or later) lies outside the outer ring, near [5, 5]" in only_problem(
        collection(feature(coords=[square, outside])))
    nested = [[square], [ring((1, 1), (2, 1), (2, 2), (1, 1))]]
    assert "lies inside another" in only_problem(collection(feature(kind="MultiPolygon", coords=nested)))
    overlapping = [[square], [ring((3, 3), (6, 3), (6, 6), (3, 6), (3, 3))]]
    assert "two of its polygons overlap" in only_problem(collection(feature(kind="MultiPolygon",
                                                                            coords=overlapping)))
    cut = ring((0, 2), (2, 0), (4, 2), (2, 4), (0, 2))
    assert "cut it in two" in only_problem(collection(feature(coords=[square, cut])))


def test_every_problem_is_reported_at_once() -> None:
    found = problems(collection(feature("a"), feature(None), feature("a"), feature("c", coords=[SQUARE[:-1]])))
    assert [p.split(":")[0] for p in found] == ['feature #2 ("Depot")', 'feature #3 (id "a", "Depot")',
                                                'feature #4 (id "c", "Depot")']


# -- the store -------------------------------------------------------------------------


def test_a_missing_file_is_an_empty_set(tmp_path: Path) -> None:
    assert GeofenceStore(tmp_path / "none.geojson").load().fences == ()


def test_import_merges_by_id_and_replace_swaps_the_set(tmp_path: Path) -> None:
    store = GeofenceStore(tmp_path / "config" / "geofences.geojson")
    first = store.import_features(collection(feature("a"), feature("b")), source="in")
    assert (first.added, first.total) == (("a", "b"), 2)
    second = store.import_features(collection(feature("b", name="B2"), feature("c")), source="in")
    assert (second.added, second.updated, second.total) == (("c",), ("b",), 3)
    again = store.import_features(feature("c"), source="in")  # a single Feature works too
    assert again.unchanged == ("c",)
    assert [f.id for f in store.load().fences] == ["a", "b", "c"]
    replaced = store.import_features(collection(feature("z")), source="in", replace=True)
    assert (replaced.added, replaced.removed, replaced.total) == (("z",), ("a", "b", "c"), 1)
    assert [f.id for f in store.load().fences] == ["z"]


def test_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    store = GeofenceStore(tmp_path / "g.geojson")
    store.import_features(collection(feature("a")), source="in")
    before = store.path.read_bytes()
    result = store.import_features(collection(feature("b")), source="in", dry_run=True)
    assert result.added == ("b",)
    assert store.path.read_bytes() == before


def test_an_invalid_import_never_replaces_the_valid_file(tmp_path: Path) -> None:
    store = GeofenceStore(tmp_path / "g.geojson")
    store.import_features(collection(feature("a")), source="in")
    before, inode = store.path.read_bytes(), store.path.stat().st_ino
    with pytest.raises(GeofenceError, match=r"zones\.geojson: 1 problem"):
        store.import_features(collection(feature("b", coords=[SQUARE[:-1]])), source="zones.geojson")
    with pytest.raises(GeofenceError):
        store.upsert(feature("a", coords=[SQUARE[:-1]]))
    assert store.path.read_bytes() == before
    assert store.path.stat().st_ino == inode
    assert sorted(os.listdir(tmp_path)) == [".g.geojson.lock", "g.geojson"]  # no temporary left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    store = GeofenceStore(tmp_path / "g.geojson")
    store.import_features(collection(feature("a")), source="in")
    before = store.path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.import_features(collection(feature("b")), source="in")
    assert store.path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [".g.geojson.lock", "g.geojson"]


def test_upsert_and_delete_one_fence(tmp_path: Path) -> None:
    store = GeofenceStore(tmp_path / "g.geojson")
    store.upsert(feature("a"))
    store.upsert(feature("b"))
    renamed = store.upsert(feature("a", name="Renamed"))
    assert renamed.name == "Renamed"
    assert [f.id for f in store.load().fences] == ["a", "b"]  # kept its place
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert [f.id for f in store.load().fences] == ["b"]
    with pytest.raises(GeofenceError, match=r'the geofence \("Depot"\): has no id'):
        store.upsert(feature(None))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    store = GeofenceStore(tmp_path / "g.geojson")

    def write(prefix: str) -> None:
        for i in range(15):
            GeofenceStore(store.path).upsert(feature(f"{prefix}{i}"))

    threads = [threading.Thread(target=write, args=(p,)) for p in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.load().fences) == 45


def test_the_watcher_sees_every_change_and_reports_an_invalid_one(tmp_path: Path) -> None:
    store = GeofenceStore(tmp_path / "g.geojson")
    watcher = GeofenceWatcher(store)
    assert watcher.poll() is not None  # the first look always loads (here: no file, no fences)
    assert watcher.poll() is None
    store.upsert(feature("a"))
    changed = watcher.poll()
    assert changed is not None
    assert [f.id for f in changed.fences] == ["a"]
    assert watcher.poll() is None
    # A hand edit that breaks the file, within the same mtime tick as the last write.
    stat = store.path.stat()
    store.path.write_text(json.dumps(collection(feature("a"), feature("a"))))
    os.utime(store.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(GeofenceError, match="duplicate id"):
        watcher.poll()
    assert watcher.poll() is None  # the same broken content is reported once
    store.path.write_text(json.dumps(collection(feature("b"))))
    fixed = watcher.poll()
    assert fixed is not None
    assert [f.id for f in fixed.fences] == ["b"]
    assert watcher.poll(force=True) is not None


def test_a_broken_file_can_be_replaced_but_not_merged_into(tmp_path: Path) -> None:
    store = GeofenceStore(tmp_path / "g.geojson")
    store.path.write_text(json.dumps(collection(feature("a"), feature("a"))))
    with pytest.raises(GeofenceError) as info:
        store.import_features(collection(feature("b")), source="in")
    assert info.value.hint is not None
    assert "--replace" in info.value.hint
    result = store.import_features(collection(feature("b")), source="in", replace=True)
    assert (result.added, result.total) == (("b",), 1)
    assert [f.id for f in store.load().fences] == ["b"]
    store.path.write_text("{broken")
    before = store.path.read_bytes()
    assert store.import_features(collection(feature("c")), source="in", replace=True, dry_run=True).total == 1
    assert store.path.read_bytes() == before  # a dry run never writes, even over a broken file
