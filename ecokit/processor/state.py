"""The fleet processor's state machine: no I/O, every input carries its own clock.

Per vehicle it tracks the last position fix, the speed derived from consecutive fixes
(haversine distance over the device-time difference), ``last_seen`` (newest device
timestamp) and online/offline:

- telemetry (or a device's ``online`` status) makes an unknown or offline vehicle online;
- a device's ``offline`` status (its last will, or a clean goodbye) makes it offline;
- no traffic for ``offline_after`` seconds makes an online vehicle offline (``tick``).

Every change gives a StatusUpdate; an online vehicle that keeps sending also gets one
every ``status_interval`` seconds (0: changes only). Updates carry ``"source":
"processor"``; status messages from the processor itself are ignored, so it never loops.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from ecokit.config.rules import INT64

EARTH_RADIUS_KM = 6371.0088
MAX_DERIVED_SPEED = 1500.0  # km/h; faster "movement" is a bad fix, not a vehicle

State = Literal["online", "offline"]


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class StatusUpdate:
    vehicle: str
    state: State
    ts: int  # ms, the processor's clock
    reason: str  # activity | device | last_will | timeout | periodic
    last_seen: int | None = None
    derived_speed: float | None = None

    @property
    def topic(self) -> str:
        return f"fleet/{self.vehicle}/status"

    def payload(self) -> bytes:
        doc: dict[str, Any] = {"v": 1, "vehicle": self.vehicle, "state": self.state, "ts": self.ts,
                               "source": "processor", "reason": self.reason}
        if self.last_seen is not None:
            doc["last_seen"] = self.last_seen
        if self.derived_speed is not None:
            doc["derived_speed"] = round(self.derived_speed, 3)
        return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Vehicle:
    id: str
    state: State | None = None
    last_seen: int | None = None  # newest device timestamp (ms)
    last_activity: float | None = None  # processor clock (s) of the last message
    fix: tuple[int, float, float] | None = None  # (ts ms, lat, lng) of the newest fix
    derived_speed: float | None = None
    last_update: float | None = None  # processor clock (s) of the last StatusUpdate


def _number(value: Any) -> float | None:
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        # float() of a 400-digit integer raises OverflowError; such a value is no coordinate.
        return float(value) if abs(value) <= MAX_COORDINATE else None
    return None


MAX_COORDINATE = 1_000


def _timestamp(value: Any) -> int | None:
    """A device timestamp (ms) that fits 64 bits, as InfluxDB's; else None. A 401-digit
    one would make the derived speed's division overflow."""
    return value if type(value) is int and -INT64 - 1 <= value <= INT64 else None


def parse_fix(doc: Any) -> tuple[int, float, float] | None:
    """(ts ms, lat, lng) of a telemetry payload, or None when it has no usable fix."""
    if not isinstance(doc, dict):
        return None
    ts, lat, lng = _timestamp(doc.get("ts")), _number(doc.get("lat")), _number(doc.get("lng"))
    if ts is None or lat is None or lng is None or not (-90 <= lat <= 90 and -180 <= lng <= 180):
        return None
    return ts, lat, lng


class FleetState:
    def __init__(self, *, offline_after: float, status_interval: float) -> None:
        self.offline_after = offline_after
        self.status_interval = status_interval
        self.vehicles: dict[str, Vehicle] = {}
        self.ignored = 0  # inputs that were not usable (bad payloads, our own statuses)

    def _vehicle(self, vehicle_id: str) -> Vehicle:
        vehicle = self.vehicles.get(vehicle_id)
        if vehicle is None:
            vehicle = self.vehicles[vehicle_id] = Vehicle(vehicle_id)
        return vehicle

    def _update(self, v: Vehicle, state: State, reason: str, now: float) -> StatusUpdate:
        v.state = state
        v.last_update = now
        return StatusUpdate(v.id, state, int(now * 1000), reason, v.last_seen,
                            v.derived_speed if state == "online" else None)

    def on_telemetry(self, vehicle_id: str, doc: Any, now: float) -> list[StatusUpdate]:
        fix = parse_fix(doc)
        if fix is None:
            self.ignored += 1
            return []
        return self.on_fix(vehicle_id, fix, now)

    def on_fix(self, vehicle_id: str, fix: tuple[int, float, float], now: float) -> list[StatusUpdate]:
        """A telemetry fix already parsed by :func:`parse_fix`."""
        ts, lat, lng = fix
        v = self._vehicle(vehicle_id)
        v.last_activity = now
        if v.fix is None or ts > v.fix[0]:
            if v.fix is not None:
                hours = (ts - v.fix[0]) / 3_600_000
                speed = haversine_km(v.fix[1], v.fix[2], lat, lng) / hours
                if speed <= MAX_DERIVED_SPEED:
                    v.derived_speed = speed
            v.fix = (ts, lat, lng)
            v.last_seen = ts if v.last_seen is None else max(v.last_seen, ts)
        # An older or repeated fix (QoS 1 redelivery, reordering) changes nothing but activity.
        if v.state != "online":
            return [self._update(v, "online", "activity", now)]
        if self.status_interval and (v.last_update is None or now - v.last_update >= self.status_interval):
            return [self._update(v, "online", "periodic", now)]
        return []

    def on_status(self, vehicle_id: str, doc: Any, now: float) -> list[StatusUpdate]:
        if not isinstance(doc, dict) or doc.get("source") == "processor":
            self.ignored += 1
            return []
        state = doc.get("state")
        if state not in ("online", "offline"):
            self.ignored += 1
            return []
        v = self._vehicle(vehicle_id)
        ts = _timestamp(doc.get("ts"))
        if ts is not None:
            v.last_seen = ts if v.last_seen is None else max(v.last_seen, ts)
        if state == "online":
            v.last_activity = now
            return [] if v.state == "online" else [self._update(v, "online", "device", now)]
        return [] if v.state == "offline" else [self._update(v, "offline", "last_will", now)]

    def tick(self, now: float) -> list[StatusUpdate]:
        """Vehicles that went quiet for ``offline_after`` seconds go offline."""
        out = []
        for v in self.vehicles.values():
            if v.state == "online" and v.last_activity is not None and now - v.last_activity >= self.offline_after:
                out.append(self._update(v, "offline", "timeout", now))
        return out

    def counts(self) -> dict[str, int]:
        out = {"online": 0, "offline": 0}
        for v in self.vehicles.values():
            if v.state in out:
                out[v.state] += 1
        return out
