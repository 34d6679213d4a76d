"""Alert rules evaluated per vehicle: fire once, resolve once. No I/O.

- Threshold rules see every in-order fix (device time). The condition must hold without
  interruption for ``for`` before the alert fires; once firing, the clear condition
  (default: the condition no longer holds) must hold for its own ``for`` before it
  resolves. A fix without the field (or with another type) changes nothing.
- Offline rules run on the processor's clock (``tick``): no message from the vehicle for
  the duration fires; its next message resolves.
- Zone rules follow geofence events (already debounced by the fences' min inside/outside
  times): the matching transition fires, the opposite one of the same fence resolves; a
  fence removed from the file resolves what it fired.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ecokit.config.alerts import AlertRule, Offline, Threshold, Zone
from ecokit.geofence.tracker import GeofenceEvent

AlertState = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class AlertUpdate:
    vehicle: str
    alert: str
    state: AlertState
    severity: str
    condition: str
    subject: str  # the field, "offline", or the geofence id
    ts: int  # ms: when it fired / resolved
    since: int  # ms: when the condition (or the clearing) began
    value: float | bool | None = None
    geofence: str | None = None
    duration_s: float | None = None  # resolved: how long it was firing
    reason: str | None = None  # resolved: cleared | activity | geofence_removed

    @property
    def topic(self) -> str:
        return f"fleet/{self.vehicle}/alerts"

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"v": 1, "vehicle": self.vehicle, "alert": self.alert, "state": self.state,
                               "severity": self.severity, "condition": self.condition, "subject": self.subject,
                               "ts": self.ts, "since": self.since, "source": "processor"}
        if isinstance(self.value, bool):
            doc["flag"] = self.value
        elif self.value is not None:
            doc["value"] = self.value
        if self.geofence is not None:
            doc["geofence"] = self.geofence
        if self.duration_s is not None:
            doc["duration_s"] = round(self.duration_s, 3)
        if self.reason is not None:
            doc["reason"] = self.reason
        return doc

    def payload(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(slots=True)
class _Episode:
    firing: bool = False
    pending_ts: int | None = None  # the condition (or its clearing) began here
    fired_ts: int = 0
    value: float | bool | None = None


@dataclass(frozen=True)
class _Compiled:
    name: str
    rule: AlertRule
    when: Threshold | Offline | Zone
    clear: Threshold | None
    path: tuple[str, ...] = ()


@dataclass
class _VehicleAlerts:
    episodes: dict[tuple[str, str], _Episode] = field(default_factory=dict)  # (alert, subject)
    last_activity: float | None = None


def _finite(value: Any) -> bool:
    """A number an alert can compare and report: finite, and an integer within 64 bits."""
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and -(2**63) <= value < 2**63


def _lookup(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = doc
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


class AlertEngine:
    def __init__(self, rules: Mapping[str, AlertRule]) -> None:
        self.rules = [_Compiled(name, r, r.condition, r.clear_condition,
                                tuple(r.condition.field.split(".")) if isinstance(r.condition, Threshold) else ())
                      for name, r in rules.items() if r.enabled]
        self._thresholds = [c for c in self.rules if isinstance(c.when, Threshold)]
        self._offline = [c for c in self.rules if isinstance(c.when, Offline)]
        self._zones = [c for c in self.rules if isinstance(c.when, Zone)]
        self.vehicles: dict[str, _VehicleAlerts] = {}

    def _vehicle(self, vehicle_id: str) -> _VehicleAlerts:
        vehicle = self.vehicles.get(vehicle_id)
        if vehicle is None:
            vehicle = self.vehicles[vehicle_id] = _VehicleAlerts()
        return vehicle

    def firing(self) -> dict[str, int]:
        """Alerts firing now, by alert name (every rule listed)."""
        out = {c.name: 0 for c in self.rules}
        for vehicle in self.vehicles.values():
            for (name, _), episode in vehicle.episodes.items():
                if episode.firing:
                    out[name] += 1
        return out

    # -- inputs --------------------------------------------------------------------------

    def on_activity(self, vehicle_id: str, now: float) -> list[AlertUpdate]:
        """Any message from the vehicle (processor clock, s): resolves its offline alerts."""
        vehicle = self._vehicle(vehicle_id)
        vehicle.last_activity = now
        out = []
        for c in self._offline:
            episode = vehicle.episodes.get((c.name, "offline"))
            if episode is not None and episode.firing:
                del vehicle.episodes[(c.name, "offline")]
                ts = int(now * 1000)
                out.append(AlertUpdate(vehicle_id, c.name, "resolved", c.rule.severity, c.rule.when, "offline", ts, ts,
                                       duration_s=(ts - episode.fired_ts) / 1000, reason="activity"))
        return out

    def on_fix(self, vehicle_id: str, ts: int, doc: Mapping[str, Any]) -> list[AlertUpdate]:
        """An in-order telemetry fix (``ts``: its device time, ms)."""
        if not self._thresholds:
            return []
        vehicle = self._vehicle(vehicle_id)
        out: list[AlertUpdate] = []
        for c in self._thresholds:
            when = c.when
            assert isinstance(when, Threshold)
            assert c.clear is not None
            value = _lookup(doc, c.path)
            if isinstance(when.value, bool):
                if not isinstance(value, bool):
                    continue
            elif not _finite(value):
                continue
            key = (c.name, when.field)
            episode = vehicle.episodes.get(key)
            if episode is None:
                if not when.holds(value):
                    continue  # the common case: nothing pending, nothing firing
                episode = vehicle.episodes[key] = _Episode()
            target, duration = (c.clear, c.clear.for_s) if episode.firing else (when, when.for_s)
            if not target.holds(value):
                episode.pending_ts = None
                if not episode.firing:
                    del vehicle.episodes[key]
                continue
            if episode.pending_ts is None:
                episode.pending_ts = ts
            if ts - episode.pending_ts < duration * 1000:
                continue
            since, episode.pending_ts = episode.pending_ts, None
            if not episode.firing:
                episode.firing, episode.fired_ts, episode.value = True, ts, value
                out.append(AlertUpdate(vehicle_id, c.name, "firing", c.rule.severity, c.rule.when, when.field, ts,
                                       since, value=value))
            else:
                del vehicle.episodes[key]
                out.append(AlertUpdate(vehicle_id, c.name, "resolved", c.rule.severity, c.rule.when, when.field, ts,
                                       since, value=value, duration_s=(ts - episode.fired_ts) / 1000,
                                       reason="cleared"))
        return out

    def on_events(self, events: Iterable[GeofenceEvent]) -> list[AlertUpdate]:
        out: list[AlertUpdate] = []
        if not self._zones:
            return out
        for event in events:
            kind = "enter" if event.type == "geofence_enter" else "exit"
            for c in self._zones:
                zone = c.when
                assert isinstance(zone, Zone)
                if not zone.matches(event.geofence, event.tags):
                    continue
                vehicle = self._vehicle(event.vehicle)
                key = (c.name, event.geofence)
                episode = vehicle.episodes.get(key)
                if kind == zone.kind and episode is None:
                    vehicle.episodes[key] = _Episode(firing=True, fired_ts=event.ts)
                    out.append(AlertUpdate(event.vehicle, c.name, "firing", c.rule.severity, c.rule.when,
                                           event.geofence, event.ts, event.ts, geofence=event.geofence))
                elif kind != zone.kind and episode is not None:
                    del vehicle.episodes[key]
                    out.append(AlertUpdate(event.vehicle, c.name, "resolved", c.rule.severity, c.rule.when,
                                           event.geofence, event.ts, event.ts, geofence=event.geofence,
                                           duration_s=(event.ts - episode.fired_ts) / 1000, reason="cleared"))
        return out

    def fences_changed(self, existing: set[str], now: float) -> list[AlertUpdate]:
        """Resolve zone alerts of fences that no longer exist."""
        out = []
        ts = int(now * 1000)
        zone_names = {c.name: c for c in self._zones}
        for vehicle_id, vehicle in self.vehicles.items():
            for key in [k for k in vehicle.episodes if k[0] in zone_names and k[1] not in existing]:
                episode = vehicle.episodes.pop(key)
                c = zone_names[key[0]]
                out.append(AlertUpdate(vehicle_id, c.name, "resolved", c.rule.severity, c.rule.when, key[1], ts, ts,
                                       geofence=key[1], duration_s=max(0.0, (ts - episode.fired_ts) / 1000),
                                       reason="geofence_removed"))
        return out

    def tick(self, now: float) -> list[AlertUpdate]:
        """Offline rules: vehicles silent for their duration (processor clock, s)."""
        out: list[AlertUpdate] = []
        if not self._offline:
            return out
        ts = int(now * 1000)
        for vehicle_id, vehicle in self.vehicles.items():
            if vehicle.last_activity is None:
                continue
            silent = now - vehicle.last_activity
            for c in self._offline:
                when = c.when
                assert isinstance(when, Offline)
                key = (c.name, "offline")
                if silent >= when.for_s and key not in vehicle.episodes:
                    vehicle.episodes[key] = _Episode(firing=True, fired_ts=ts)
                    since = int(vehicle.last_activity * 1000)
                    out.append(AlertUpdate(vehicle_id, c.name, "firing", c.rule.severity, c.rule.when, "offline", ts,
                                           since, value=round(silent, 3)))
        return out
