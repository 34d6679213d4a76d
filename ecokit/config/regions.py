"""Where a fleet drives: named regions and bounding boxes given by the user (the grammar of
``simulator.region`` and ``ecokit simulate --region``). Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ecokit.errors import UsageError

EARTH_RADIUS_M = 6_371_008.8


class RegionError(UsageError):
    """A region that is neither a known name nor a valid box."""


@dataclass(frozen=True)
class RoadMix:
    """How often a leg of a route is an urban street, an arterial road or a highway."""

    urban: float
    arterial: float
    highway: float


@dataclass(frozen=True)
class Region:
    """A latitude/longitude box (south < north, west < east) and the kind of roads in it."""

    name: str
    south: float
    west: float
    north: float
    east: float
    roads: RoadMix = RoadMix(0.5, 0.3, 0.2)

    @property
    def center(self) -> tuple[float, float]:
        return (self.south + self.north) / 2, (self.west + self.east) / 2

    def contains(self, lat: float, lng: float) -> bool:
        return self.south <= lat <= self.north and self.west <= lng <= self.east

    @property
    def size_m(self) -> tuple[float, float]:
        """(east-west, north-south) extent in metres at the box's middle latitude."""
        lat0 = math.radians(self.center[0])
        width = math.radians(self.east - self.west) * EARTH_RADIUS_M * math.cos(lat0)
        height = math.radians(self.north - self.south) * EARTH_RADIUS_M
        return width, height

    def describe(self) -> str:
        return f"{self.name} ({self.south:g},{self.west:g} .. {self.north:g},{self.east:g})"


REGIONS: dict[str, Region] = {
    # Inside the Boulevard Périphérique, plus the Bois on both sides: mostly city streets.
    "paris": Region("paris", 48.815, 2.225, 48.902, 2.470, RoadMix(0.6, 0.3, 0.1)),
    # From Jebel Ali to Deira along Sheikh Zayed Road: a lot of highway.
    "dubai": Region("dubai", 24.980, 55.050, 25.290, 55.400, RoadMix(0.3, 0.3, 0.4)),
}

MIN_SIDE_M = 1_000.0
MAX_SIDE_M = 500_000.0


def parse_region(spec: str) -> Region:
    """A region by name (``paris``, ``dubai``) or a box ``SOUTH,WEST,NORTH,EAST`` in degrees."""
    text = spec.strip()
    if text.lower() in REGIONS:
        return REGIONS[text.lower()]
    parts = [p.strip() for p in text.removeprefix("bbox:").split(",")]
    if len(parts) != 4:
        raise RegionError(f"region {spec!r}: expected one of {', '.join(REGIONS)} "
                         "or a box SOUTH,WEST,NORTH,EAST (degrees)")
    try:
        south, west, north, east = (float(p) for p in parts)
    except ValueError:
        raise RegionError(f"region {spec!r}: the box needs four numbers SOUTH,WEST,NORTH,EAST") from None
    if not all(math.isfinite(v) for v in (south, west, north, east)):
        raise RegionError(f"region {spec!r}: coordinates must be finite numbers")
    if not (-85 <= south < north <= 85):
        raise RegionError(f"region {spec!r}: latitudes must satisfy -85 <= SOUTH < NORTH <= 85")
    if not (-180 <= west < east <= 180):
        raise RegionError(f"region {spec!r}: longitudes must satisfy -180 <= WEST < EAST <= 180 "
                         "(boxes across the antimeridian are not supported)")
    region = Region("bbox", south, west, north, east)
    width, height = region.size_m
    if min(width, height) < MIN_SIDE_M or max(width, height) > MAX_SIDE_M:
        raise RegionError(f"region {spec!r}: the box is {width / 1000:.1f} km x {height / 1000:.1f} km; "
                         f"each side must be between {MIN_SIDE_M / 1000:g} and {MAX_SIDE_M / 1000:g} km")
    return region
