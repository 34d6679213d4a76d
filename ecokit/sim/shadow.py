"""A simulated vehicle's device shadow. Pure: no I/O, no clock.

Binds a :class:`~ecokit.sim.fleet.SimVehicle` to the device-side helper
:class:`~ecokit.shadow.device.DeviceShadow` (classic shadow ``things/{id}/shadow``):

- after every (re)connect the vehicle subscribes to :meth:`VehicleShadow.subscriptions`,
  then publishes :meth:`VehicleShadow.connected`: a report of its whole state
  (``engine``, ``publish_interval``, ``firmware``, ``kind``, ``region``) and a ``get``
  whose answer applies any delta built up while it was offline;
- :meth:`VehicleShadow.changes` is cheap enough to call after every telemetry step and
  command: it returns a report only when the engine or the publish interval changed since
  the last report (nothing is sent per telemetry message);
- :meth:`VehicleShadow.handle` takes the shadow service's answers; a delta's
  ``publish_interval`` is validated (a number, not a bool), clamped to
  ``MIN_INTERVAL..MAX_INTERVAL`` and applied through ``apply_interval`` (the simulator's
  own path, the one ``set_interval`` commands take), and the interval the vehicle now runs
  with is reported back. A clamped value stays in the delta (desired differs from
  reported) but is not applied or reported again, so it cannot loop.

``status`` (moving / idle / parked) is not reported: it flips at every traffic light and
rides in every telemetry message; ``engine`` (off = parked) is the slow part of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ecokit.shadow.device import IGNORE, DeviceShadow, Message
from ecokit.sim.fleet import SimVehicle, clamp_interval

REPORTED_KEYS = ("engine", "publish_interval", "firmware", "kind", "region")
"""What a vehicle reports; ``engine`` and ``publish_interval`` change at run time."""

ApplyInterval = Callable[[SimVehicle, float], object]


def desired_interval(value: Any) -> float | None:
    """The interval a desired ``publish_interval`` asks for, clamped into the allowed range;
    None when it is not a finite number (then the vehicle leaves it unapplied)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return clamp_interval(value)


def json_seconds(seconds: float) -> int | float:
    """5.0 -> 5 (what a person writes in ``--desired``), 0.5 stays 0.5."""
    return int(seconds) if float(seconds).is_integer() else float(seconds)


class VehicleShadow:
    """One vehicle's side of its classic shadow. ``apply_interval(vehicle, seconds)`` changes
    the vehicle's interval (and re-schedules it); it is called only with a valid, new value."""

    __slots__ = ("apply_interval", "device", "vehicle")

    def __init__(self, vehicle: SimVehicle, apply_interval: ApplyInterval, *,
                 token_prefix: str | None = None) -> None:
        self.vehicle = vehicle
        self.apply_interval = apply_interval
        self.device = DeviceShadow(vehicle.id, handlers={"publish_interval": self._publish_interval},
                                   token_prefix=token_prefix)

    def state(self) -> dict[str, Any]:
        """The vehicle's ``reported`` section."""
        v = self.vehicle
        return {"engine": v.model.engine, "publish_interval": json_seconds(v.interval), "firmware": v.firmware,
                "kind": v.model.profile.kind, "region": v.region}

    def subscriptions(self) -> list[str]:
        """Its shadow's answer topics (QoS 1); subscribe before :meth:`connected`'s messages go out."""
        return self.device.subscriptions()

    def connected(self) -> list[Message]:
        """After every (re)connect: report the whole state, then ask for the shadow (sync)."""
        return [self.device.report(self.state()), self.device.sync()]

    def changes(self) -> Message | None:
        """A report of the engine and interval if either changed since the last report, else None."""
        v, reported = self.vehicle, self.device.reported
        engine = v.model.engine
        if reported.get("engine") is engine and reported.get("publish_interval") == v.interval:
            return None
        return self.device.report_changes({"engine": engine, "publish_interval": json_seconds(v.interval)})

    def wants(self, topic: str) -> bool:
        return topic.startswith(self.device.prefix) and self.device.wants(topic)

    def handle(self, topic: str, payload: bytes) -> list[Message]:
        """An answer of the shadow service; returns the reports to publish (if a delta was applied)."""
        return self.device.handle(topic, payload)

    @property
    def synced(self) -> bool:
        """The shadow service answered (accepted or refused) at least one of its requests."""
        return self.device.version > 0 or self.device.last_rejection is not None

    def _publish_interval(self, value: Any) -> Any:
        seconds = desired_interval(value)
        if seconds is None:
            return IGNORE  # not a number: left in the delta, unapplied and unreported
        if seconds != self.vehicle.interval:
            self.apply_interval(self.vehicle, seconds)
        return json_seconds(self.vehicle.interval)
