"""The Simulator's device shadows: wait (boundedly) for every vehicle's shadow after
connecting, apply a desired ``publish_interval``, report the engine and interval when they
change. The per-vehicle protocol itself is :class:`~ecokit.sim.shadow.VehicleShadow`."""

from __future__ import annotations

import asyncio
import time

from ecokit.sim.base import SimulatorBase, VehicleSession
from ecokit.sim.fleet import SimVehicle


class ShadowSyncMixin(SimulatorBase):
    """Shadows of the fleet's vehicles."""

    async def _sync_shadows(self) -> None:
        """Wait (boundedly) until every connected vehicle heard back from its shadow: a desired
        interval set while the fleet was stopped then holds from the first fix, and the burst of
        answers (two per vehicle) is handled before the schedule starts, not in its way."""
        self._phase = "syncing"
        timeout = self.settings.shadow_sync_timeout
        started = time.monotonic()
        deadline = started + timeout
        waiting = [d for d in self._devices if d.shadow is not None]
        while waiting and not self._stopping:
            waiting = [d for d in waiting if d.online and d.shadow is not None and not d.shadow.synced]
            if not waiting or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        self.stats.shadow_sync_seconds = time.monotonic() - started
        if waiting and not self._stopping:
            self.stats.error(f"{len(waiting)} vehicle(s) heard nothing from their shadows within {timeout:g}s "
                             f"(e.g. {waiting[0].vehicle.id}); is the shadow service running?")

    def _apply_interval(self, vehicle: SimVehicle, seconds: float) -> float:
        """How an interval changes at run time (the API and shadow deltas; ``execute`` does the same
        for set_interval commands: SimVehicle.set_publish_interval, then _interval_changed)."""
        previous = vehicle.set_publish_interval(seconds)
        self._interval_changed(vehicle, previous)
        return previous

    def _shadow_interval(self, vehicle: SimVehicle, seconds: float) -> None:
        self._apply_interval(vehicle, seconds)
        self.stats.shadow_deltas += 1

    def _shadow_message(self, dev: VehicleSession, topic: str, payload: bytes) -> None:
        shadow = dev.shadow
        assert shadow is not None
        before = shadow.device.last_rejection
        for message in shadow.handle(topic, payload):
            self.stats.shadow_reports += 1
            if dev.online:
                self._publish(dev, message.topic, message.payload, message.qos)
        rejection = shadow.device.last_rejection
        if rejection is not None and rejection is not before and rejection.code != 404:
            self.stats.shadow_rejected += 1
            self.stats.error(f"{dev.vehicle.id}: the shadow service refused a request on {topic}: "
                             f"{rejection.code} {rejection.message}")

    def _shadow_changes(self, dev: VehicleSession) -> None:
        """Report the engine / interval when they changed (offline: the next connect reports all)."""
        shadow = dev.shadow
        if shadow is None or not dev.online:
            return
        message = shadow.changes()
        if message is not None:
            self.stats.shadow_reports += 1
            self._publish(dev, message.topic, message.payload, message.qos)
