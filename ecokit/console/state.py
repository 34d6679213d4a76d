"""The last known state of every vehicle, bounded (least recently heard from is forgotten
first). Pure: no I/O, every input carries its own clock; the caller holds ``lock``.

Inputs are the wire formats of docs/DEVELOPING.md: telemetry (``fleet/{id}/telemetry``), the
device's status and last will, and the fleet processor's status (``fleet/{id}/status``, with
``last_seen`` and ``derived_speed``). A message the console cannot use raises ``Rejected``
with a reason and the field at fault; the state is left as it was.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MOTION = ("moving", "idle", "parked")
STATUSES = (*MOTION, "offline", "unknown")

Doc = dict[str, Any]


class Rejected(ValueError):
    """A message the console cannot use: ``reason`` as the dead letters name it."""

    def __init__(self, reason: str, field: str | None, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


def _number(doc: Doc, key: str, low: float | None = None, high: float | None = None,
            required: bool = False) -> float | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise Rejected("missing_field", key, f"{key} is missing")
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise Rejected("wrong_type", key, f"{key} must be a number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise Rejected("out_of_range", key, f"{key}={value} is outside [{low}, {high}]")
    return float(value)


def _millis(doc: Doc, key: str, required: bool = False) -> int | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise Rejected("missing_field", key, f"{key} is missing")
        return None
    if type(value) is not int or value < 0:
        raise Rejected("wrong_type", key, f"{key} must be epoch milliseconds (a non-negative integer)")
    return value


class VehicleState:
    __slots__ = ("derived_speed", "engine", "fuel", "heading", "id", "last_seen", "lat", "lng", "motion",
                 "odometer", "online", "seq", "speed", "status_ts", "ts")

    def __init__(self, vehicle_id: str) -> None:
        self.id = vehicle_id
        self.lat: float | None = None
        self.lng: float | None = None
        self.ts: int | None = None  # device time of the newest fix (ms)
        self.speed: float | None = None
        self.heading: float | None = None
        self.fuel: float | None = None
        self.odometer: float | None = None
        self.engine: bool | None = None
        self.seq: int | None = None
        self.motion: str | None = None  # the device's own moving | idle | parked
        self.online: bool | None = None
        self.status_ts: int | None = None  # time of the status message that set `online`
        self.last_seen: int | None = None
        self.derived_speed: float | None = None

    @property
    def status(self) -> str:
        if self.online is False:
            return "offline"
        return self.motion or "unknown"

    def lite(self) -> Doc:
        """What the stream sends (docs/console.md, VehicleLite)."""
        return {"id": self.id, "lat": self.lat, "lng": self.lng, "ts": self.ts, "speed": self.speed,
                "heading": self.heading, "status": self.status, "fuel": self.fuel, "online": self.online}

    def full(self) -> Doc:
        return {"id": self.id, "lat": self.lat, "lng": self.lng, "ts": self.ts, "speed": self.speed,
                "heading": self.heading, "fuel": self.fuel, "odometer": self.odometer, "engine": self.engine,
                "status": self.status, "online": self.online, "last_seen": self.last_seen,
                "derived_speed": self.derived_speed, "seq": self.seq}


@dataclass(frozen=True)
class VehicleFilter:
    statuses: frozenset[str] = frozenset()
    min_fuel: float | None = None
    bbox: tuple[float, float, float, float] | None = None  # min lng, min lat, max lng, max lat
    q: str | None = None
    online: bool | None = None

    def matches(self, v: VehicleState) -> bool:
        if self.statuses and v.status not in self.statuses:
            return False
        if self.online is not None and v.online is not self.online:
            return False
        if self.min_fuel is not None and (v.fuel is None or v.fuel < self.min_fuel):
            return False
        if self.bbox is not None:
            if v.lat is None or v.lng is None:
                return False
            min_lng, min_lat, max_lng, max_lat = self.bbox
            if not (min_lat <= v.lat <= max_lat):
                return False
            # A box crossing the antimeridian has min_lng > max_lng.
            inside = (min_lng <= v.lng <= max_lng) if min_lng <= max_lng else (v.lng >= min_lng or v.lng <= max_lng)
            if not inside:
                return False
        return not (self.q and self.q.lower() not in v.id.lower())


class FleetStore:
    """Vehicles by id in least-recently-updated order, with the ids changed since the last
    ``take_changes`` (for the stream's diffs) and the ids forgotten meanwhile."""

    def __init__(self, max_vehicles: int) -> None:
        self.max_vehicles = max_vehicles
        self.vehicles: OrderedDict[str, VehicleState] = OrderedDict()
        self.changed: set[str] = set()
        self.removed: set[str] = set()
        self.evicted = 0
        self.stale = 0  # fixes older than the one held (an offline queue draining, a replay)
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.vehicles)

    def get(self, vehicle_id: str) -> VehicleState | None:
        return self.vehicles.get(vehicle_id)

    def _touch(self, vehicle_id: str) -> VehicleState:
        v = self.vehicles.get(vehicle_id)
        if v is None:
            v = self.vehicles[vehicle_id] = VehicleState(vehicle_id)
            self.removed.discard(vehicle_id)
            while len(self.vehicles) > self.max_vehicles:
                gone, _ = self.vehicles.popitem(last=False)
                self.changed.discard(gone)
                self.removed.add(gone)
                self.evicted += 1
        else:
            self.vehicles.move_to_end(vehicle_id)
        self.changed.add(vehicle_id)
        return v

    def on_telemetry(self, vehicle_id: str, doc: Any) -> tuple[bool, int | None]:
        """Apply one telemetry message. Returns (came online, the fix's device ts when it is
        the newest fix of the vehicle, else None)."""
        if not isinstance(doc, dict):
            raise Rejected("not_json", None, "telemetry must be a JSON object")
        ts = _millis(doc, "ts", required=True)
        lat = _number(doc, "lat", -90, 90, required=True)
        lng = _number(doc, "lng", -180, 180, required=True)
        speed = _number(doc, "speed", 0)
        heading = _number(doc, "heading", 0, 360)
        fuel = _number(doc, "fuel", 0, 100)
        odometer = _number(doc, "odometer", 0)
        engine, seq, motion = doc.get("engine"), doc.get("seq"), doc.get("status")
        if engine is not None and type(engine) is not bool:
            raise Rejected("wrong_type", "engine", "engine must be true or false")
        if seq is not None and (type(seq) is not int or seq < 0):
            raise Rejected("wrong_type", "seq", "seq must be a non-negative integer")
        if motion is not None and motion not in MOTION:
            raise Rejected("bad_value", "status", f"status must be one of {', '.join(MOTION)}")
        current = self.vehicles.get(vehicle_id)
        if current is not None and current.ts is not None and ts is not None and ts < current.ts:
            self.stale += 1
            return False, None
        v = self._touch(vehicle_id)
        v.ts, v.lat, v.lng, v.speed, v.heading, v.fuel = ts, lat, lng, speed, heading, fuel
        v.odometer, v.engine, v.seq, v.motion = odometer, engine, seq, motion
        if ts is not None and (v.last_seen is None or ts > v.last_seen):
            v.last_seen = ts
        came_online = v.online is not True
        v.online = True
        return came_online, ts

    def on_status(self, vehicle_id: str, doc: Any) -> bool:
        """Apply a device or processor status; returns whether the vehicle came online."""
        if not isinstance(doc, dict):
            raise Rejected("not_json", None, "a status must be a JSON object")
        state = doc.get("state")
        if state not in ("online", "offline"):
            raise Rejected("bad_value" if state is not None else "missing_field", "state",
                           "state must be online or offline")
        ts = _millis(doc, "ts")
        last_seen = _millis(doc, "last_seen")
        derived = _number(doc, "derived_speed", 0)
        v = self.vehicles.get(vehicle_id)
        if (state == "offline" and v is not None and v.ts is not None and ts is not None and ts < v.ts
                and doc.get("source") != "processor"):
            # An old last will (e.g. retained from a previous session) after newer telemetry.
            return False
        v = self._touch(vehicle_id)
        if last_seen is not None and (v.last_seen is None or last_seen > v.last_seen):
            v.last_seen = last_seen
        if derived is not None:
            v.derived_speed = derived
        came_online = state == "online" and v.online is not True
        v.online = state == "online"
        v.status_ts = ts
        return came_online

    def take_changes(self) -> tuple[list[Doc], list[str]]:
        """VehicleLite of every vehicle changed since the last call, and the ids forgotten."""
        changed, removed = self.changed, self.removed
        self.changed, self.removed = set(), set()
        vehicles = self.vehicles
        return [vehicles[i].lite() for i in changed if i in vehicles], sorted(removed)

    def lite_of(self, ids: Iterable[str]) -> tuple[list[Doc], list[str]]:
        """VehicleLite of ``ids`` now, and those of them no longer held."""
        out, gone = [], []
        for i in ids:
            v = self.vehicles.get(i)
            if v is None:
                gone.append(i)
            else:
                out.append(v.lite())
        return out, gone

    def snapshot(self) -> list[Doc]:
        return [v.lite() for v in self.vehicles.values()]

    def query(self, flt: VehicleFilter, *, limit: int, offset: int) -> tuple[int, list[Doc]]:
        matches = sorted((v for v in self.vehicles.values() if flt.matches(v)), key=lambda v: v.id)
        return len(matches), [v.full() for v in matches[offset:offset + limit]]

    def ids(self) -> list[str]:
        return list(self.vehicles)

    def is_online(self, vehicle_id: str) -> bool:
        v = self.vehicles.get(vehicle_id)
        return v is not None and v.online is True

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("total", "active", *STATUSES), 0)
        out["total"] = len(self.vehicles)
        for v in self.vehicles.values():
            out[v.status] += 1
            if v.online:
                out["active"] += 1
        return out
