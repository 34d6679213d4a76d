"""When each vehicle's next fix is due: one heap of due times for the whole fleet (drift =
emission - due time), re-scheduling on an interval change, or flat out."""

from __future__ import annotations

import asyncio
import heapq
import time

from ecokit.sim.base import EARLY, SimulatorBase, VehicleSession, _now_ms, _resolve
from ecokit.sim.fleet import SimVehicle


class ScheduleMixin(SimulatorBase):
    """The telemetry schedule."""

    def _emit(self, dev: VehicleSession, dt: float) -> None:
        vehicle = dev.vehicle
        fix = vehicle.step(dt)
        self.stats.produced += 1
        self._send(dev, vehicle.topic, vehicle.telemetry(fix, _now_ms()), self.settings.qos)
        if dev.shadow is not None:
            self._shadow_changes(dev)  # the engine goes off at deliveries and fuel stations

    def _done(self, dev: VehicleSession) -> bool:
        count = self.settings.count
        return count is not None and dev.vehicle.seq >= count

    async def _schedule(self) -> None:
        loop, s = self._loop, self.settings
        n = len(self._devices)
        t0 = loop.time() + 0.05
        self.stats.publishing_since = t0  # asyncio's clock is time.monotonic()
        end = t0 + s.duration if s.duration is not None else None
        self._publish_end = end
        heap = self._heap
        for dev in self._devices:
            # Spread the first fixes over one interval so the broker sees a steady rate.
            heapq.heappush(heap, (t0 + dev.vehicle.interval * dev.index / n, 0, dev.index))
        record = self.stats.drift_us.record_value
        emitted = 0
        while heap and not self._stopping:
            due, gen, index = heap[0]
            if end is not None and due >= end:
                break
            now = loop.time()
            if due > now + EARLY:
                await self._sleep_until(due)
                continue
            heapq.heappop(heap)
            if gen != self._generation[index]:
                continue  # re-scheduled by set_interval
            dev = self._devices[index]
            self._emit(dev, dev.next_dt)
            dev.last_due = due
            record(max(1, int(abs(now - due) * 1e6)))
            if not self._done(dev):
                dev.next_dt = dev.vehicle.next_delay()
                heapq.heappush(heap, (due + dev.next_dt, gen, index))
            emitted += 1
            if emitted % 256 == 0:
                await asyncio.sleep(0)  # let the sockets breathe during a burst
        if end is not None and not self._stopping:
            # --duration: the run lasts exactly that long, even when the last fixes are early.
            while loop.time() < end and not self._stopping:
                await self._sleep_until(end)
            if not self._stopping:
                self._publish_stopped = end

    async def _sleep_until(self, when: float) -> None:
        """Sleep until ``when`` (loop time) or until woken (stop, re-schedule)."""
        waiter = self._loop.create_future()
        timer = self._loop.call_at(when, _resolve, waiter)
        self._waiter = waiter
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _flat_out(self) -> None:
        """Publish as fast as the broker takes it (simulated time still advances per fix)."""
        loop, s = self._loop, self.settings
        self.stats.publishing_since = time.monotonic()
        end = loop.time() + s.duration if s.duration is not None else None
        self._publish_end = end
        active = list(self._devices)
        while active and not self._stopping:
            if end is not None and loop.time() >= end:
                break
            progressed = False
            still = []
            for dev in active:
                if dev.online and not dev.flushing and dev.inflight < 50 and not dev.link.write_pending:
                    self._emit(dev, dev.vehicle.next_delay() if dev.vehicle.seq else 0.0)
                    progressed = True
                if not self._done(dev):
                    still.append(dev)
            active = still
            await asyncio.sleep(0 if progressed else 0.001)

    def _interval_changed(self, vehicle: SimVehicle, previous: float) -> None:
        dev = self._by_id[vehicle.id]
        if dev.last_due is not None and not self.settings.flat_out:
            # Re-schedule from the last fix with the new interval (older heap entries go stale).
            self._generation[dev.index] += 1
            delay = vehicle.next_delay()
            due = dev.last_due + delay
            now = self._loop.time()
            if due < now:  # shorter than the time since the last fix: the next one is due now
                due, delay = now, now - dev.last_due
            dev.next_dt = delay
            heapq.heappush(self._heap, (due, self._generation[dev.index], dev.index))
            self._wakeup()
        if self.on_interval is not None:
            self.on_interval(vehicle, previous)
