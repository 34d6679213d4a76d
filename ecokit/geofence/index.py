"""Which geofences contain a position: an STRtree over prepared polygons (shapely/GEOS).

The tree narrows a fix to the fences whose bounding box holds it; GEOS then tests those
with the fence prepared (an indexed point-in-polygon, fast for fences with many
corners). ``benchmarks/geofence.py`` measures it against a scan of every fence and
against Traccar's ray casting. A position exactly on a boundary counts as outside.
"""

from __future__ import annotations

from collections.abc import Sequence

import shapely
from shapely import Point, STRtree

from ecokit.geofence.model import Geofence


class GeofenceIndex:
    def __init__(self, fences: Sequence[Geofence]) -> None:
        self.fences = tuple(fences)
        geometries = [f.geometry for f in self.fences]
        for geometry in geometries:
            shapely.prepare(geometry)
        self._tree = STRtree(geometries) if geometries else None

    def __len__(self) -> int:
        return len(self.fences)

    def containing(self, lng: float, lat: float) -> list[Geofence]:
        """The fences whose interior holds (lng, lat)."""
        if self._tree is None:
            return []
        fences = self.fences
        return [fences[i] for i in self._tree.query(Point(lng, lat), predicate="within").tolist()]

    def containing_many(self, positions: Sequence[tuple[float, float]]) -> list[list[Geofence]]:
        """``containing`` for many (lng, lat) at once: one vectorised query, about four times
        cheaper per position than one call each (benchmarks/README.md, "Geofences")."""
        out: list[list[Geofence]] = [[] for _ in positions]
        if self._tree is None or not positions:
            return out
        fences = self.fences
        points = shapely.points(list(positions))
        which, fence = self._tree.query(points, predicate="within")
        for i, f in zip(which.tolist(), fence.tolist(), strict=True):
            out[i].append(fences[f])
        return out
