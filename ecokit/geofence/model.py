"""Geofences as declared in ``config/geofences.geojson``: parsing and validation. No I/O.

The file is a GeoJSON FeatureCollection (RFC 7946). Each feature is one geofence:

    {"type": "Feature", "id": "depot-north",
     "properties": {"name": "Depot north", "tags": ["depot"], "min_inside_s": 30, "min_outside_s": 60},
     "geometry": {"type": "Polygon", "coordinates": [[[2.35, 48.85], [2.36, 48.85], ...]]}}

Positions are ``[longitude, latitude]`` (GeoJSON order). ``min_inside_s`` /
``min_outside_s`` (ThingsBoard's minInsideDuration/minOutsideDuration) are how long a
vehicle must stay inside (outside) before it counts as entered (left); unset, the
``geofences`` section's defaults apply. Any other property is kept as it is.

Everything wrong is reported at once, each problem naming the feature (``feature #3
(id "depot")``) and what to do; :func:`parse_geofences` raises :class:`GeofenceError`
with the list, so an invalid file never becomes the current set.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from ecokit.errors import ConfigError

GEOFENCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_DURATION_S = 86_400.0
# Properties ecokit reads; everything else is the user's and is kept untouched.
KNOWN_PROPERTIES = ("name", "tags", "min_inside_s", "min_outside_s", "id")
_INVALID_AT = re.compile(r"^(?P<reason>[^\[]+)\[(?P<x>[-0-9.eE+]+) (?P<y>[-0-9.eE+]+)")


class GeofenceError(ConfigError):
    """A geofence file (or one feature of it) is not acceptable; ``problems`` lists every
    problem found, each naming its feature."""

    def __init__(self, problems: Sequence[str], *, source: str) -> None:
        self.problems = list(problems)
        shown = self.problems[:20]
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        count = f"{len(self.problems)} problems" if len(self.problems) > 1 else "1 problem"
        super().__init__(f"{count}:\n  " + "\n  ".join(shown) + more, source=source,
                         hint="GeoJSON positions are [longitude, latitude]; rings repeat their first position "
                              "at the end (docs/geofences.md)")


@dataclass(frozen=True)
class Geofence:
    """One validated geofence. ``geometry`` is the shapely Polygon/MultiPolygon;
    ``feature`` the GeoJSON feature exactly as it will be written back."""

    id: str
    name: str
    tags: tuple[str, ...]
    geometry: BaseGeometry = field(compare=False, repr=False)
    min_inside_s: float | None = None
    min_outside_s: float | None = None
    feature: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min lng, min lat, max lng, max lat)."""
        b = self.geometry.bounds
        return (b[0], b[1], b[2], b[3])

    def summary(self) -> dict[str, Any]:
        """What `ecokit geofences list` and the console show of a fence."""
        return {"id": self.id, "name": self.name, "tags": list(self.tags),
                "type": self.geometry.geom_type, "vertices": _vertex_count(self.geometry),
                "area_km2": round(area_km2(self.geometry), 6), "bounds": [round(v, 6) for v in self.bounds],
                "min_inside_s": self.min_inside_s, "min_outside_s": self.min_outside_s}


@dataclass(frozen=True)
class GeofenceSet:
    fences: tuple[Geofence, ...] = ()
    warnings: tuple[str, ...] = ()

    def by_id(self) -> dict[str, Geofence]:
        return {f.id: f for f in self.fences}

    def to_geojson(self) -> dict[str, Any]:
        return {"type": "FeatureCollection", "features": [dict(f.feature) for f in self.fences]}

    def dumps(self) -> bytes:
        """The file as ecokit writes it: one feature per line, so diffs stay readable."""
        lines = [json.dumps(dict(f.feature), separators=(",", ":"), ensure_ascii=False) for f in self.fences]
        body = ",\n".join(lines)
        return ('{"type":"FeatureCollection","features":[\n' + body + ("\n" if lines else "") + "]}\n").encode()


def _vertex_count(geom: BaseGeometry) -> int:
    return int(shapely.get_num_coordinates(geom))


def area_km2(geom: BaseGeometry) -> float:
    """Approximate area (equirectangular projection at the fence's latitude)."""
    lat = (geom.bounds[1] + geom.bounds[3]) / 2
    return float(geom.area * 111.195 ** 2 * math.cos(math.radians(lat)))


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not valid JSON")


def load_json(text: str | bytes, *, source: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GeofenceError([f"not JSON: {exc}"], source=source) from None


def feature_label(index: int, feature: Any) -> str:
    """``feature #3 (id "depot", "Depot north")``: 1-based, with whatever names it has."""
    names = []
    if isinstance(feature, Mapping):
        fid = feature.get("id")
        props = feature.get("properties")
        if fid is None and isinstance(props, Mapping):
            fid = props.get("id")
        if isinstance(fid, str | int) and not isinstance(fid, bool):
            names.append(f"id {json.dumps(fid)}")
        if isinstance(props, Mapping) and isinstance(props.get("name"), str) and props["name"]:
            names.append(json.dumps(props["name"], ensure_ascii=False))
    return f"feature #{index + 1}" + (f" ({', '.join(names)})" if names else "")


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _fmt(position: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in position[:2]) + "]"


def _check_rings(where: str, polygon: Any, label: str) -> list[str]:
    """Shape, ranges, closure and lat/lng order of one Polygon's coordinates."""
    problems: list[str] = []
    if not isinstance(polygon, list) or not polygon:
        return [f"{where}: {label} needs a list of rings (the outer ring first, then holes)"]
    for r, ring in enumerate(polygon):
        ring_label = f"{label}ring {r}" + (" (outer)" if r == 0 else " (hole)")
        if not isinstance(ring, list):
            problems.append(f"{where}: {ring_label} is not a list of positions")
            continue
        bad = [p for p in ring if not (isinstance(p, list) and len(p) in (2, 3) and all(_is_number(v) for v in p))]
        if bad:
            problems.append(f"{where}: {ring_label}: {json.dumps(bad[0])} is not a position "
                            "([longitude, latitude] numbers, optionally an altitude)")
            continue
        if len(ring) < 4:
            problems.append(f"{where}: {ring_label} has {len(ring)} positions; a ring needs at least 4 "
                            "(three corners and the first one repeated at the end)")
            continue
        if ring[0][:2] != ring[-1][:2]:
            problems.append(f"{where}: {ring_label} is not closed: it starts at {_fmt(ring[0])} but ends at "
                            f"{_fmt(ring[-1])}; repeat the first position at the end")
        out_of_range = [p for p in ring if not (-180 <= p[0] <= 180 and -90 <= p[1] <= 90)]
        if out_of_range:
            p = out_of_range[0]
            if -90 <= p[0] <= 90 and -180 <= p[1] <= 180:
                problems.append(f"{where}: {ring_label}: position {_fmt(p)} has latitude {p[1]:g}, beyond ±90; "
                                f"it looks like [latitude, longitude]: GeoJSON is [longitude, latitude], "
                                f"so write {_fmt([p[1], p[0]])}")
            else:
                problems.append(f"{where}: {ring_label}: position {_fmt(p)} is off the globe "
                                "(longitude must be -180..180, latitude -90..90)")
            continue
        lngs = [p[0] for p in ring]
        if max(lngs) - min(lngs) > 180:
            problems.append(f"{where}: {ring_label} spans {max(lngs) - min(lngs):g}° of longitude: a polygon "
                            "crossing the antimeridian must be split into a MultiPolygon (RFC 7946 §3.1.9)")
    return problems


def _geometry_problems(where: str, geometry: Any) -> list[str]:
    if not isinstance(geometry, Mapping):
        return [f"{where}: has no geometry (a Polygon or MultiPolygon)"]
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        return _check_rings(where, coords, "")
    if kind == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            return [f"{where}: a MultiPolygon needs a non-empty list of polygons"]
        problems: list[str] = []
        for i, polygon in enumerate(coords):
            problems += _check_rings(where, polygon, f"polygon {i} ")
        return problems
    return [f"{where}: geometry type {kind!r} is not supported; a geofence is a Polygon or MultiPolygon"]


def _validity_problem(where: str, geom: BaseGeometry) -> str | None:
    """Topology (self-intersections, holes outside shells, ...) as shapely/GEOS sees it."""
    reason = shapely.is_valid_reason(geom)
    if reason == "Valid Geometry":
        return None if geom.area > 0 else f"{where}: the polygon has no area"
    if geom.area <= 0 and "self-intersection" not in reason.lower():
        return f"{where}: the polygon has no area (its corners lie on one line)"
    match = _INVALID_AT.match(reason)
    if not match:
        return f"{where}: not a valid polygon: {reason}"
    what = match.group("reason").strip()
    at = f"[{float(match.group('x')):g}, {float(match.group('y')):g}]"
    explained = {
        "self-intersection": "its boundary crosses or touches itself at {at} (e.g. a bow tie, or corners on one "
                             "line); reorder the corners or split it into separate polygons",
        "ring self-intersection": "a ring touches itself at {at}; split it into separate polygons",
        "hole lies outside shell": "a hole (ring 1 or later) lies outside the outer ring, near {at}",
        "nested shells": "one polygon of the MultiPolygon lies inside another, near {at}; make it a hole instead",
        "interior is disconnected": "its holes cut it in two near {at}; make it a MultiPolygon instead",
        "self-intersecting multipolygon": "two polygons of the MultiPolygon overlap near {at}; merge them",
    }.get(what.lower())
    if explained and what.lower() == "self-intersection" and geom.geom_type == "MultiPolygon":
        explained = "its boundaries cross at {at}: a ring crosses itself, or two of its polygons overlap (merge them)"
    if explained:
        return f"{where}: " + explained.format(at=at)
    return f"{where}: not a valid polygon: {what} at {at}"


def _duration(where: str, props: Mapping[str, Any], key: str, problems: list[str]) -> float | None:
    value = props.get(key)
    if value is None:
        return None
    if not _is_number(value) or not 0 <= value <= MAX_DURATION_S:
        problems.append(f"{where}: properties.{key} must be a number of seconds, 0..{MAX_DURATION_S:g}, "
                        f"not {json.dumps(value)}")
        return None
    return float(value)


def swapped_region_warning(fence: Geofence, region: tuple[float, float, float, float]) -> str | None:
    """A fence that lies outside ``region`` (min lng, min lat, max lng, max lat) while its
    [lat, lng]-swapped twin lies inside was probably written in the wrong order."""
    min_lng, min_lat, max_lng, max_lat = fence.bounds

    def overlaps(a: tuple[float, float, float, float]) -> bool:
        return not (a[2] < region[0] or a[0] > region[2] or a[3] < region[1] or a[1] > region[3])

    if overlaps((min_lng, min_lat, max_lng, max_lat)) or not overlaps((min_lat, min_lng, max_lat, max_lng)):
        return None
    return (f"geofence {fence.id!r} lies far from the simulated region but would lie inside it with latitude "
            "and longitude swapped: GeoJSON positions are [longitude, latitude]")


def parse_feature(index: int, feature: Any, problems: list[str]) -> Geofence | None:
    """One feature → a Geofence, or None with its problems appended."""
    where = feature_label(index, feature)
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        problems.append(f"{where}: is not a GeoJSON Feature (an object with \"type\": \"Feature\")")
        return None
    props = feature.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, Mapping):
        problems.append(f"{where}: properties must be an object")
        return None
    before = len(problems)
    fid = feature.get("id", props.get("id"))
    if fid is None:
        problems.append(f"{where}: has no id; give the feature an \"id\" such as \"depot-north\"")
    elif not isinstance(fid, str) or not GEOFENCE_ID.match(fid):
        problems.append(f"{where}: id {json.dumps(fid)} must be a string of letters, digits, '_', '.', ':' or "
                        "'-' (at most 64, starting with a letter or digit)")
    name = props.get("name")
    if name is None:
        name = fid if isinstance(fid, str) else ""
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or any(ord(c) < 0x20 for c in name):
        problems.append(f"{where}: properties.name must be a non-empty single-line string (at most 200)")
    tags = props.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and TAG.match(t) for t in tags):
        problems.append(f"{where}: properties.tags must be a list of words (letters, digits, '_', '.', ':', '-')")
        tags = []
    min_inside = _duration(where, props, "min_inside_s", problems)
    min_outside = _duration(where, props, "min_outside_s", problems)
    geometry_problems = _geometry_problems(where, feature.get("geometry"))
    problems += geometry_problems
    if geometry_problems or len(problems) > before:
        return None
    geom = shape(feature["geometry"])
    assert isinstance(geom, Polygon | MultiPolygon)
    invalid = _validity_problem(where, geom)
    if invalid:
        problems.append(invalid)
        return None
    assert isinstance(fid, str)
    assert isinstance(name, str)
    out_props = {k: v for k, v in props.items() if k != "id"}
    out_props["name"] = name
    if tags:
        out_props["tags"] = list(dict.fromkeys(tags))
    normalised = {"type": "Feature", "id": fid, "properties": out_props,
                  "geometry": {"type": feature["geometry"]["type"],
                               "coordinates": feature["geometry"]["coordinates"]}}
    return Geofence(fid, name, tuple(dict.fromkeys(tags)), geom, min_inside, min_outside, normalised)


def parse_geofences(doc: Any, *, source: str,
                    region: tuple[float, float, float, float] | None = None) -> GeofenceSet:
    """Validate a FeatureCollection; raises GeofenceError listing every problem."""
    if not isinstance(doc, Mapping) or doc.get("type") != "FeatureCollection":
        raise GeofenceError(["the file must be a GeoJSON FeatureCollection "
                             "({\"type\": \"FeatureCollection\", \"features\": [...]})"], source=source)
    features = doc.get("features")
    if not isinstance(features, list):
        raise GeofenceError(["\"features\" must be a list"], source=source)
    problems: list[str] = []
    fences: list[Geofence] = []
    first_seen: dict[str, int] = {}
    for index, feature in enumerate(features):
        fence = parse_feature(index, feature, problems)
        if fence is None:
            continue
        if fence.id in first_seen:
            problems.append(f"{feature_label(index, feature)}: duplicate id {fence.id!r}, already used by "
                            f"{feature_label(first_seen[fence.id], features[first_seen[fence.id]])}; "
                            "ids must be unique")
            continue
        first_seen[fence.id] = index
        fences.append(fence)
    if problems:
        raise GeofenceError(problems, source=source)
    warnings = []
    if region is not None:
        warnings = [w for f in fences if (w := swapped_region_warning(f, region))]
    return GeofenceSet(tuple(fences), tuple(warnings))


def parse_geofences_text(text: str | bytes, *, source: str,
                         region: tuple[float, float, float, float] | None = None) -> GeofenceSet:
    return parse_geofences(load_json(text, source=source), source=source, region=region)
