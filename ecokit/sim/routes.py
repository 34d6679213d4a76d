"""Routes: closed polylines of road legs inside a region. Pure (no I/O, no clock).

A route is a loop of waypoints; leg ``i`` runs from waypoint ``i`` to waypoint ``i+1``
(the last leg returns to waypoint 0). Each leg has a speed limit from its road class;
each waypoint has a corner speed (from the turn angle) and may be a place to stop
(traffic light, delivery, fuel station). Legs follow a street grid with some noise,
turn back before the region's edge and the loop closes on itself, so a vehicle can
drive it forever. Lengths and bearings are great-circle values, the ones a subscriber
computes from two fixes.
"""

from __future__ import annotations

import bisect
import math
import random
from array import array
from dataclasses import dataclass

from ecokit.config.regions import EARTH_RADIUS_M, Region

KMH = 1 / 3.6

# Road classes: (speed limit range km/h, leg length range m).
ROAD_CLASSES = {
    "urban": ((30, 50), (150, 700)),
    "arterial": ((50, 80), (400, 1500)),
    "highway": ((90, 120), (1200, 4000)),
}
MIN_CORNER_SPEED = 15 * KMH  # a right-angle turn in town


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Initial great-circle bearing from the first point to the second, 0 <= b < 360 (0 = north)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lng2 - lng1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def angle_between(a: float, b: float) -> float:
    """Smallest absolute difference of two bearings in degrees (0..180)."""
    d = abs(a - b) % 360.0
    return 360.0 - d if d > 180.0 else d


@dataclass(frozen=True, eq=False)
class Route:
    """A closed polyline with per-leg speed limits and per-waypoint corner speeds and stops.

    Stored in flat arrays (8 bytes a number): thousands of vehicles each hold one.
    """

    lat: array[float]  # waypoint i; leg i runs from waypoint i to waypoint i+1 (mod n)
    lng: array[float]
    limits: array[float]  # speed limit of leg i, m/s
    corner_speeds: array[float]  # speed at which waypoint i can be passed, m/s
    stops: bytes  # 1 where a vehicle may stop at waypoint i
    lengths: array[float]  # leg lengths, m
    bearings: array[float]  # leg bearings, degrees
    starts: array[float]  # distance along the loop at which leg i starts, m

    @property
    def legs(self) -> int:
        return len(self.lat)

    @property
    def points(self) -> list[tuple[float, float]]:
        return list(zip(self.lat, self.lng, strict=True))

    @property
    def total_m(self) -> float:
        return self.starts[-1] + self.lengths[-1]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Route):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in
                   ("lat", "lng", "limits", "corner_speeds", "stops", "lengths", "bearings", "starts"))

    __hash__ = None  # type: ignore[assignment]

    def leg_at(self, s: float) -> int:
        """The leg that holds distance ``s`` along one lap (0 <= s < total)."""
        return max(0, bisect.bisect_right(self.starts, s) - 1)

    def position(self, leg: int, offset: float) -> tuple[float, float]:
        """(lat, lng) at ``offset`` metres into ``leg``."""
        nxt = leg + 1 if leg + 1 < len(self.lat) else 0
        length = self.lengths[leg]
        f = min(1.0, max(0.0, offset / length)) if length > 0 else 0.0
        lat1, lng1 = self.lat[leg], self.lng[leg]
        return lat1 + (self.lat[nxt] - lat1) * f, lng1 + (self.lng[nxt] - lng1) * f


class _Frame:
    """Local east/north metres around a point (equirectangular; fine for city-sized boxes)."""

    def __init__(self, lat0: float, lng0: float) -> None:
        self.lat0, self.lng0 = lat0, lng0
        self.k_lat = math.radians(1) * EARTH_RADIUS_M
        self.k_lng = self.k_lat * math.cos(math.radians(lat0))

    def to_m(self, lat: float, lng: float) -> tuple[float, float]:
        return (lng - self.lng0) * self.k_lng, (lat - self.lat0) * self.k_lat

    def to_deg(self, x: float, y: float) -> tuple[float, float]:
        return self.lat0 + y / self.k_lat, self.lng0 + x / self.k_lng


def _road_class(rng: random.Random, region: Region) -> str:
    mix = region.roads
    return rng.choices(("urban", "arterial", "highway"), weights=(mix.urban, mix.arterial, mix.highway))[0]


def generate_route(rng: random.Random, region: Region, *, target_km: float | None = None) -> Route:
    """A closed route inside ``region``, drawn from ``rng`` only (same state, same route)."""
    frame = _Frame(*region.center)
    width, height = region.size_m
    margin_x, margin_y = width * 0.05, height * 0.05
    half_w, half_h = width / 2 - margin_x, height / 2 - margin_y
    if target_km is None:
        target_km = rng.uniform(8.0, 30.0)
    # Long legs must fit in the box: a highway leg in a small box becomes an arterial one.
    longest = max(200.0, min(half_w, half_h))

    x, y = rng.uniform(-half_w, half_w) * 0.6, rng.uniform(-half_h, half_h) * 0.6
    grid = rng.uniform(0, 90)  # orientation of the local street grid
    heading = grid + 90 * rng.randrange(4)
    pts: list[tuple[float, float]] = [(x, y)]
    classes: list[str] = []
    total = 0.0
    while total < target_km * 1000 or len(pts) < 4:
        cls = _road_class(rng, region)
        (_lo_kmh, _hi_kmh), (lo_m, hi_m) = ROAD_CLASSES[cls]
        length = min(rng.uniform(lo_m, hi_m), longest)
        for _ in range(12):
            rad = math.radians(heading)
            nx, ny = x + length * math.sin(rad), y + length * math.cos(rad)
            if abs(nx) <= half_w and abs(ny) <= half_h:
                break
            # Turn towards the middle of the box, on the grid.
            to_center = math.degrees(math.atan2(-x, -y)) % 360
            heading = grid + 90 * round((to_center - grid) / 90) + rng.uniform(-20, 20)
            length *= 0.8
        else:
            nx, ny = max(-half_w, min(half_w, nx)), max(-half_h, min(half_h, ny))
        pts.append((nx, ny))
        classes.append(cls)
        total += math.hypot(nx - x, ny - y)
        x, y = nx, ny
        heading += rng.choice((-90, 0, 0, 90)) + rng.uniform(-12, 12)
    # Close the loop along the grid: across, then back up to the start.
    x0, y0 = pts[0]
    corner = (x0, y) if rng.random() < 0.5 else (x, y0)
    if math.hypot(corner[0] - x, corner[1] - y) > 1 and math.hypot(corner[0] - x0, corner[1] - y0) > 1:
        pts.append(corner)
        classes.append(_road_class(rng, region))
    classes.append(_road_class(rng, region))  # the leg back to the start

    merged_pts, merged_cls = _drop_short_legs(pts, classes)
    points = tuple(frame.to_deg(px, py) for px, py in merged_pts)
    return _finish(rng, points, merged_cls)


def _drop_short_legs(pts: list[tuple[float, float]], classes: list[str],
                     shortest: float = 20.0) -> tuple[list[tuple[float, float]], list[str]]:
    """Remove waypoints until every leg is at least ``shortest`` metres (a zero leg has no bearing)."""
    pts, classes = list(pts), list(classes)
    changed = True
    while changed and len(pts) > 3:
        changed = False
        for i in range(len(pts)):
            j = (i + 1) % len(pts)
            if math.hypot(pts[j][0] - pts[i][0], pts[j][1] - pts[i][1]) < shortest:
                del pts[j], classes[j]
                changed = True
                break
    if len(pts) < 3 or any(math.hypot(pts[(i + 1) % len(pts)][0] - p[0], pts[(i + 1) % len(pts)][1] - p[1])
                           < shortest for i, p in enumerate(pts)):
        # Degenerate walk (tiny box): a block around the middle instead.
        pts = [(-100.0, -100.0), (100.0, -100.0), (100.0, 100.0), (-100.0, 100.0)]
        classes = ["urban"] * 4
    return pts, classes


def _finish(rng: random.Random, points: tuple[tuple[float, float], ...], classes: list[str]) -> Route:
    n = len(points)
    lengths, bearings, limits = [], [], []
    for i in range(n):
        (lat1, lng1), (lat2, lng2) = points[i], points[(i + 1) % n]
        lengths.append(haversine_m(lat1, lng1, lat2, lng2))
        bearings.append(bearing_deg(lat1, lng1, lat2, lng2))
        lo, hi = ROAD_CLASSES[classes[i]][0]
        limits.append(rng.choice(range(lo, hi + 1, 10)) * KMH)
    corner, stops = [], []
    for i in range(n):
        incoming, outgoing = (i - 1) % n, i
        turn = angle_between(bearings[incoming], bearings[outgoing])
        slowest = min(limits[incoming], limits[outgoing])
        # Straight on at the road's speed, down to walking-pace-ish for a hairpin.
        factor = max(0.0, 1.0 - turn / 80.0)
        corner.append(max(min(MIN_CORNER_SPEED, slowest), slowest * factor))
        # Traffic lights and kerbs are in town; highways have exits, not stops.
        in_town = limits[incoming] <= 80 * KMH + 1e-9
        stops.append(in_town and rng.random() < 0.45)
    starts, acc = [], 0.0
    for length in lengths:
        starts.append(acc)
        acc += length
    return Route(array("d", (p[0] for p in points)), array("d", (p[1] for p in points)), array("d", limits),
                 array("d", corner), bytes(stops), array("d", lengths), array("d", bearings), array("d", starts))
