"""Geofences: the file (``config/geofences.geojson``), its validation, the spatial index
and the per-vehicle membership tracker the fleet processor runs (docs/geofences.md)."""

from ecokit.geofence.index import GeofenceIndex
from ecokit.geofence.model import Geofence, GeofenceError, GeofenceSet, parse_geofences, parse_geofences_text
from ecokit.geofence.store import GeofenceStore, GeofenceWatcher, ImportResult
from ecokit.geofence.tracker import GeofenceEvent, GeofenceTracker

__all__ = [
    "Geofence",
    "GeofenceError",
    "GeofenceEvent",
    "GeofenceIndex",
    "GeofenceSet",
    "GeofenceStore",
    "GeofenceTracker",
    "GeofenceWatcher",
    "ImportResult",
    "parse_geofences",
    "parse_geofences_text",
]
