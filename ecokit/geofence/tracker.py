"""Per-vehicle geofence membership and its transitions. No I/O; time is the fixes' own.

For every (vehicle, fence) pair the tracker keeps the *confirmed* state (outside until
proven otherwise) and, while the raw state of the latest fixes disagrees with it, when
that disagreement began. ThingsBoard's model: the disagreement must last
``min_inside_s`` (to enter) or ``min_outside_s`` (to leave) without interruption before
it is confirmed; one fix back on the confirmed side cancels it. So a vehicle whose fixes
jitter across an edge gives one enter, not ten. With both at 0 every crossing counts at
once (Traccar's behaviour).

An event carries the time of the first fix of the confirmed run (``ts``: when the
vehicle really crossed) and of the fix that confirmed it (``confirmed_ts``); an exit
carries the dwell time inside. Fixes not newer than the vehicle's newest fix (QoS 1
redeliveries, buffered fixes sent late) never change membership: they are skipped and
counted by reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ecokit.geofence.index import GeofenceIndex
from ecokit.geofence.model import Geofence

EventType = Literal["geofence_enter", "geofence_exit"]
SkipReason = Literal["out_of_order", "duplicate"]


@dataclass(frozen=True, slots=True)
class GeofenceEvent:
    vehicle: str
    type: EventType
    geofence: str
    name: str
    tags: tuple[str, ...]
    ts: int  # ms: first fix on the new side
    confirmed_ts: int  # ms: the fix that confirmed the transition
    lat: float
    lng: float
    dwell_s: float | None = None  # exits: time inside, from the enter's ts to this ts

    @property
    def topic(self) -> str:
        return f"fleet/{self.vehicle}/events"

    def to_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {"v": 1, "vehicle": self.vehicle, "type": self.type, "geofence": self.geofence,
                                  "name": self.name, "tags": list(self.tags), "ts": self.ts,
                                  "confirmed_ts": self.confirmed_ts, "lat": self.lat, "lng": self.lng,
                                  "source": "processor"}
        if self.dwell_s is not None:
            doc["dwell_s"] = round(self.dwell_s, 3)
        return doc

    def payload(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(slots=True)
class _Membership:
    """One (vehicle, fence) pair that is inside, or outside with a run of fixes inside."""

    inside: bool = False
    entered_ts: int = 0  # ts of the confirmed enter (for the dwell time)
    pending_ts: int | None = None  # first fix of the current run on the other side
    pending_pos: tuple[float, float] = (0.0, 0.0)


@dataclass(slots=True)
class _Vehicle:
    last_ts: int | None = None
    fences: dict[str, _Membership] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Rule:
    fence: Geofence
    min_inside_ms: int
    min_outside_ms: int


class GeofenceTracker:
    def __init__(self, fences: Sequence[Geofence] = (), *, min_inside_s: float = 0.0,
                 min_outside_s: float = 0.0) -> None:
        self.default_inside = min_inside_s
        self.default_outside = min_outside_s
        self.vehicles: dict[str, _Vehicle] = {}
        self.skipped: dict[str, int] = {"out_of_order": 0, "duplicate": 0}
        self.index = GeofenceIndex(())
        self._rules: dict[str, _Rule] = {}
        self.set_fences(fences)

    def set_fences(self, fences: Sequence[Geofence]) -> None:
        """Swap in a new set. Membership of fences that still exist (by id) is kept, so an
        edited polygon does not re-enter every vehicle inside it; fences that are gone
        are forgotten without an exit (a fence that does not exist cannot be left)."""
        self.index = GeofenceIndex(fences)
        self._rules = {
            f.id: _Rule(f, round(1000 * (self.default_inside if f.min_inside_s is None else f.min_inside_s)),
                        round(1000 * (self.default_outside if f.min_outside_s is None else f.min_outside_s)))
            for f in fences}
        for vehicle in self.vehicles.values():
            for fid in [fid for fid in vehicle.fences if fid not in self._rules]:
                del vehicle.fences[fid]

    def inside(self, vehicle_id: str) -> list[str]:
        """Ids of the fences the vehicle is (confirmed) inside."""
        vehicle = self.vehicles.get(vehicle_id)
        return [] if vehicle is None else [fid for fid, m in vehicle.fences.items() if m.inside]

    def forget(self, vehicle_id: str) -> None:
        self.vehicles.pop(vehicle_id, None)

    def on_fix(self, vehicle_id: str, ts: int, lat: float, lng: float,
               hits: list[Geofence] | None = None) -> list[GeofenceEvent] | SkipReason:
        """Evaluate one fix: the transitions it confirms, or why it was skipped. ``hits``: the
        fences holding the position, when already looked up (``index.containing_many``)."""
        vehicle = self.vehicles.get(vehicle_id)
        if vehicle is None:
            vehicle = self.vehicles[vehicle_id] = _Vehicle()
        elif vehicle.last_ts is not None and ts <= vehicle.last_ts:
            reason: SkipReason = "duplicate" if ts == vehicle.last_ts else "out_of_order"
            self.skipped[reason] += 1
            return reason
        vehicle.last_ts = ts
        states = vehicle.fences
        if hits is None:
            hits = self.index.containing(lng, lat)
        if not hits and not states:
            return []  # the common case: nowhere near a fence
        events: list[GeofenceEvent] = []
        hit_ids = set()
        for fence in hits:
            hit_ids.add(fence.id)
            state = states.get(fence.id)
            if state is None:
                state = states[fence.id] = _Membership()
            self._step(vehicle_id, state, self._rules[fence.id], True, ts, lat, lng, events)
        for fid in [fid for fid in states if fid not in hit_ids]:
            state = states[fid]
            self._step(vehicle_id, state, self._rules[fid], False, ts, lat, lng, events)
            if not state.inside and state.pending_ts is None:
                del states[fid]
        return events

    @staticmethod
    def _step(vehicle_id: str, state: _Membership, rule: _Rule, raw_inside: bool, ts: int, lat: float,
              lng: float, events: list[GeofenceEvent]) -> None:
        if raw_inside == state.inside:
            state.pending_ts = None  # back on the confirmed side: a jitter, not a crossing
            return
        if state.pending_ts is None:
            state.pending_ts, state.pending_pos = ts, (lat, lng)
        if ts - state.pending_ts < (rule.min_inside_ms if raw_inside else rule.min_outside_ms):
            return
        fence, since = rule.fence, state.pending_ts
        plat, plng = state.pending_pos
        if raw_inside:
            state.inside, state.entered_ts = True, since
            events.append(GeofenceEvent(vehicle_id, "geofence_enter", fence.id, fence.name, fence.tags, since, ts,
                                        plat, plng))
        else:
            state.inside = False
            events.append(GeofenceEvent(vehicle_id, "geofence_exit", fence.id, fence.name, fence.tags, since, ts,
                                        plat, plng, dwell_s=(since - state.entered_ts) / 1000))
        state.pending_ts = None
