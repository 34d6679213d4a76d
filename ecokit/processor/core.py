"""Everything the fleet processor derives from one message, without I/O: status
(FleetState), geofence transitions (GeofenceTracker) and alerts (AlertEngine).

The MQTT service feeds it and publishes what it returns; the unit tests and
``benchmarks/geofence.py`` drive it directly. Every input carries its own clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ecokit.config.alerts import AlertRule, GeofencesConfig
from ecokit.config.rules import ProcessorConfig
from ecokit.geofence.model import Geofence
from ecokit.geofence.tracker import GeofenceEvent, GeofenceTracker
from ecokit.processor.alerts import AlertEngine, AlertUpdate
from ecokit.processor.state import FleetState, StatusUpdate, parse_fix

# A parsed fix (ts ms, lat, lng) and the fences holding it.
Located = tuple[tuple[int, float, float], list[Geofence]]

# A fix this far ahead of the processor's clock is a broken device clock: taken as the
# newest fix it would make every later (correct) fix look out of order.
MAX_FUTURE_MS = 300_000


@dataclass
class Outputs:
    status: list[StatusUpdate] = field(default_factory=list)
    events: list[GeofenceEvent] = field(default_factory=list)
    alerts: list[AlertUpdate] = field(default_factory=list)
    skipped: str | None = None  # why a fix was not evaluated: out_of_order, duplicate, future
    ignored: bool = False  # the message was not usable at all


class ProcessorCore:
    def __init__(self, settings: ProcessorConfig, geofences: GeofencesConfig | None = None,
                 alerts: Mapping[str, AlertRule] | None = None, fences: Sequence[Geofence] = ()) -> None:
        geofences = geofences or GeofencesConfig()
        self.fleet = FleetState(offline_after=settings.offline_after, status_interval=settings.status_interval)
        self.tracker = GeofenceTracker(fences, min_inside_s=geofences.min_inside_s,
                                       min_outside_s=geofences.min_outside_s)
        self.alerts = AlertEngine(alerts or {})

    def locate(self, docs: Sequence[Any]) -> list[Located | None]:
        """Parse many telemetry payloads and look up the fences of every usable fix in one
        vectorised query; pass each result to :meth:`on_telemetry` as ``located``."""
        fixes = [parse_fix(doc) for doc in docs]
        usable = [(i, fix) for i, fix in enumerate(fixes) if fix is not None]
        hits = self.tracker.index.containing_many([(lng, lat) for _, (_, lat, lng) in usable])
        out: list[Located | None] = [None] * len(docs)
        for (i, fix), found in zip(usable, hits, strict=True):
            out[i] = (fix, found)
        return out

    def on_telemetry(self, vehicle: str, doc: Any, now: float, *, located: Located | None = None) -> Outputs:
        fix = located[0] if located is not None else parse_fix(doc)
        if fix is None:
            self.fleet.ignored += 1
            return Outputs(ignored=True)
        out = Outputs(status=self.fleet.on_fix(vehicle, fix, now), alerts=self.alerts.on_activity(vehicle, now))
        ts, lat, lng = fix
        if ts > now * 1000 + MAX_FUTURE_MS:
            out.skipped = "future"
            return out
        result = self.tracker.on_fix(vehicle, ts, lat, lng, None if located is None else located[1])
        if isinstance(result, str):
            out.skipped = result
            return out
        if result:
            out.events = result
            out.alerts += self.alerts.on_events(result)
        out.alerts += self.alerts.on_fix(vehicle, ts, doc)
        return out

    def on_status(self, vehicle: str, doc: Any, now: float) -> Outputs:
        before = self.fleet.ignored
        out = Outputs(status=self.fleet.on_status(vehicle, doc, now))
        out.ignored = self.fleet.ignored != before
        if not out.ignored and doc.get("state") == "online":
            out.alerts = self.alerts.on_activity(vehicle, now)
        return out

    def tick(self, now: float) -> Outputs:
        return Outputs(status=self.fleet.tick(now), alerts=self.alerts.tick(now))

    def set_fences(self, fences: Sequence[Geofence], now: float) -> Outputs:
        self.tracker.set_fences(fences)
        return Outputs(alerts=self.alerts.fences_changed({f.id for f in fences}, now))
