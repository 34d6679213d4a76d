"""The simulator: a fleet of vehicles, one MQTT client each, on one asyncio event loop.

Each vehicle keeps one MQTT connection, its link (stable client id, persistent session: clean
start off with a session expiry, last will ``offline`` on its status topic): the fast path
(``ecokit.mqtt.publisher``, the default) or paho, ``ecokit.sim.links``. A single scheduler
emits every vehicle's telemetry at its due time (a heap of due times; drift = emission - due
time). While a vehicle is disconnected its messages go to the SQLite offline queue; after it
reconnects the link first re-sends what was unacknowledged, then the queue is flushed in
order, and only then do new messages go straight out again. Reconnects back off
exponentially with jitter. Commands are executed and acknowledged. With
``SimSettings.shadow`` each vehicle also keeps its device shadow (``ecokit.sim.shadow``):
it reports its state on connect and when it changes, syncs, and applies
``desired.publish_interval``.

The class is composed of one part per concern (``ecokit.sim.base`` says which); this module
holds the public API, the run itself and command handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

from ecokit.errors import UsageError
from ecokit.mqtt.target import BrokerTarget, ClientAuth
from ecokit.sim.base import SimSettings, VehicleSession, _now_ms
from ecokit.sim.commands import CommandError, ack_payload, command_id_of, execute, parse_command
from ecokit.sim.fleet import SimVehicle, ack_topic
from ecokit.sim.links import link_driver
from ecokit.sim.offline import OfflineQueue
from ecokit.sim.reporting import ReportingMixin
from ecokit.sim.schedule import ScheduleMixin
from ecokit.sim.session import SessionMixin
from ecokit.sim.shadow import VehicleShadow
from ecokit.sim.shadow_sync import ShadowSyncMixin
from ecokit.sim.stats import Snapshot, Stats, Summary


class Simulator(SessionMixin, ScheduleMixin, ShadowSyncMixin, ReportingMixin):
    """A fleet of vehicles on one asyncio loop; ``await run()`` returns the :class:`Summary`."""

    def __init__(self, fleet: list[SimVehicle], target: BrokerTarget, auth: Callable[[str], ClientAuth],
                 settings: SimSettings, *, progress: Callable[[Snapshot], None] | None = None,
                 on_interval: Callable[[SimVehicle, float], None] | None = None,
                 start_gate: Callable[[], Awaitable[None]] | None = None) -> None:
        if not fleet:
            raise UsageError("the fleet is empty")
        self.fleet = fleet
        self.target = target
        self.auth = auth
        self.settings = settings
        self.progress = progress
        self.on_interval = on_interval
        # Awaited between connecting and publishing: a worker of a split fleet waits there for
        # the others, whose connects would otherwise compete with its first fixes for the CPU.
        self.start_gate = start_gate
        self.stats = Stats(target=len(fleet))
        self._waiter = None
        self._stopping = False
        self._abort = False
        self._publish_stopped = None
        self._devices = []
        self._by_id = {}
        self._heap = []
        self._generation = []
        self._connected_at_end = None
        self._jitter = random.Random()  # reconnect timing only: not part of the seeded content
        self._tasks = set()
        self._phase = "connecting"
        self._publish_end = None
        self.queue = None
        self.discarded = 0

    # -- public --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop publishing now (Ctrl-C); the run then drains, says goodbye and returns.
        A second request skips the wait for acknowledgements and queued messages."""
        if self._stopping:
            self._abort = True
        self._stopping = True
        self._wakeup()

    def set_publish_interval(self, vehicle_id: str, seconds: float) -> float:
        """Change a vehicle's telemetry interval now (its next fix is re-scheduled); returns the
        previous interval. What ``set_interval`` commands and a shadow's desired state do."""
        dev = self._by_id[vehicle_id]
        previous = self._apply_interval(dev.vehicle, seconds)
        self._shadow_changes(dev)
        return previous

    def shadow_of(self, vehicle_id: str) -> VehicleShadow | None:
        """The vehicle's shadow binding (None unless ``SimSettings.shadow``)."""
        return self._by_id[vehicle_id].shadow

    def send(self, vehicle_id: str, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish as the vehicle, in order with its telemetry (queued offline when disconnected)."""
        self._send(self._by_id[vehicle_id], topic, payload, qos, retain)

    async def run(self) -> Summary:
        loop = asyncio.get_running_loop()
        self._loop = loop
        s = self.settings
        self._links = link_driver(s.client, loop, self.target, self, protocol=s.protocol, keepalive=s.keepalive,
                                  session_expiry=s.session_expiry, connect_concurrency=s.connect_concurrency)
        self._links.start()
        self.queue = OfflineQueue(self.settings.queue_path, limit_per_vehicle=self.settings.queue_limit)
        if not self.settings.keep_queue:
            self.discarded = self.queue.discard_all()
        self._slots = asyncio.Semaphore(self.settings.connect_concurrency)
        ticker = loop.create_task(self._ticker())
        try:
            self._build_devices()
            await self._connect_all()
            if self.start_gate is not None and not self._stopping:
                await self.start_gate()
            self._phase = "publishing"
            # Thousands of long-lived vehicles and clients make every full garbage collection
            # a pause of ~100 ms in the middle of the schedule; move them out of its reach.
            gc.collect()
            gc.freeze()
            if not self._stopping:
                if self.settings.flat_out:
                    await self._flat_out()
                else:
                    await self._schedule()
            if self._publish_stopped is None:
                self._publish_stopped = time.monotonic()
            self._phase = "draining"
            await self._drain()
            self._phase = "closing"
            await self._close()
        finally:
            gc.unfreeze()
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            for task in list(self._tasks):
                task.cancel()
            self._links.stop()
            self.queue.close()
        self._report()
        return self._summary()

    # -- commands and shadow answers (from the vehicle's link, on the loop thread) -------------

    def link_message(self, dev: VehicleSession, topic: str, payload: bytes) -> None:
        started = time.perf_counter()
        vid = dev.vehicle.id
        if topic.startswith("things/"):
            # Shadow answers (also those an earlier run's session still subscribes to).
            if dev.shadow is not None and dev.shadow.wants(topic):
                self._shadow_message(dev, topic, payload)
            return
        try:
            cmd = parse_command(payload)
        except CommandError as exc:
            self.stats.error(f"{vid}: bad command on {topic}: {exc}")
            self._ack(dev, command_id_of(payload), "error", str(exc), started)
            return
        seen = dev.seen_commands
        if seen is None:
            seen = dev.seen_commands = deque(maxlen=32)
        if cmd.id in seen:  # a QoS 1 re-delivery: acknowledge again, do not run twice
            self._ack(dev, cmd.id, "ok", "duplicate delivery; already handled", started)
            return
        seen.append(cmd.id)
        self.stats.commands += 1
        try:
            detail = execute(dev.vehicle, cmd, on_interval=self._interval_changed)
        except CommandError as exc:
            self._ack(dev, cmd.id, "error", str(exc), started)
            return
        self._ack(dev, cmd.id, "ok", detail, started)
        self._shadow_changes(dev)

    def _ack(self, dev: VehicleSession, command_id: str | None, result: str, detail: str, started: float) -> None:
        latency = (time.perf_counter() - started) * 1000
        vid = dev.vehicle.id
        self._send(dev, ack_topic(vid), ack_payload(vid, command_id, result, detail, latency, _now_ms()), 1)
