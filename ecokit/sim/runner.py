"""The simulator: a fleet of vehicles, one MQTT client each, on one asyncio event loop.

Each vehicle keeps one paho client (stable client id, persistent session: clean start
off with a session expiry, last will ``offline`` on its status topic) driven by
:class:`~ecokit.mqtt.loop.PahoLoop`. A single scheduler emits every vehicle's
telemetry at its due time (a heap of due times; drift = emission - due time). While a
vehicle is disconnected its messages go to the SQLite offline queue; after it
reconnects paho first re-sends what it had in flight, then the queue is flushed in
order, and only then do new messages go straight out again. Reconnects back off
exponentially with jitter. Commands are executed and acknowledged. With
``SimSettings.shadow`` each vehicle also keeps its device shadow (``ecokit.sim.shadow``):
it reports its state on connect and when it changes, syncs, and applies
``desired.publish_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import random
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from hdrh.histogram import HdrHistogram

from ecokit.errors import UsageError
from ecokit.mqtt.loop import PahoLoop, backoff_delay, new_paho_client, persistent_connect_args
from ecokit.mqtt.target import BrokerTarget, ClientAuth
from ecokit.sim.commands import CommandError, ack_payload, command_id_of, execute, parse_command
from ecokit.sim.fleet import BROADCAST_COMMANDS, SimVehicle, ack_topic, commands_topic, status_payload, status_topic
from ecokit.sim.offline import OfflineQueue
from ecokit.sim.shadow import VehicleShadow

EARLY = 0.001  # s: fixes due this soon are sent in the current batch (|drift| is what is recorded)
FLUSH_WINDOW = 200  # unacknowledged messages a vehicle may have while flushing its queue
ERRORS_KEPT = 20


@dataclass(frozen=True)
class SimSettings:
    qos: int = 1
    protocol: int = 5  # 5 or 4 (MQTT 3.1.1)
    keepalive: int = 30
    session_expiry: int = 3600
    duration: float | None = None  # seconds of publishing
    count: int | None = None  # telemetry messages per vehicle
    queue_path: Path = Path("sim-queue.sqlite")
    queue_limit: int = 10_000
    keep_queue: bool = False
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    connect_concurrency: int = 64
    connect_timeout: float = 60.0  # initial connect phase
    drain_timeout: float = 15.0
    flat_out: bool = False
    client_id_prefix: str = ""
    status_interval: float = 0.5
    shadow: bool = False  # report to things/{id}/shadow and apply desired.publish_interval
    shadow_sync_timeout: float = 10.0  # before publishing: wait this long at most for the shadows' answers

    def __post_init__(self) -> None:
        if self.qos not in (0, 1):
            raise UsageError(f"--qos {self.qos}: the simulator publishes telemetry at QoS 0 or 1")
        if self.protocol not in (4, 5):
            raise UsageError("--mqtt must be 5 or 3.1.1")
        if self.duration is not None and self.duration <= 0:
            raise UsageError("--duration must be positive")
        if self.count is not None and self.count < 1:
            raise UsageError("--count must be at least 1")
        if self.flat_out and self.duration is None and self.count is None:
            raise UsageError("flat-out mode (--rate 0) needs --count or --duration")


@dataclass
class Stats:
    """Live counters; the status line and the summary read them."""

    target: int = 0
    connected: int = 0
    ever_connected: int = 0
    produced: int = 0  # telemetry messages made by the vehicles
    sent: int = 0  # messages handed to the network (live or flushed)
    acked: int = 0  # QoS 1 acknowledgements from the broker
    flushed: int = 0  # messages that went through the offline queue
    reconnects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    errors: int = 0
    commands: int = 0
    shadow_reports: int = 0  # update requests sent (on connect, on change, after a delta)
    shadow_deltas: int = 0  # desired publish_interval values applied
    shadow_rejected: int = 0  # requests the shadow service refused
    shadow_sync_seconds: float = 0.0  # connected -> every vehicle heard back from its shadow
    started: float = field(default_factory=time.monotonic)
    publishing_since: float | None = None
    last_errors: deque[str] = field(default_factory=lambda: deque(maxlen=ERRORS_KEPT))
    drift_us: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 3_600_000_000, 3))

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_errors.append(message)


@dataclass(frozen=True)
class Snapshot:
    """One status-line's worth of numbers."""

    elapsed: float
    connected: int
    target: int
    produced: int
    sent: int
    acked: int
    queued: int
    dropped: int
    reconnects: int
    errors: int
    commands: int
    phase: str
    remaining: float | None
    shadow: bool = False
    shadow_reports: int = 0
    shadow_deltas: int = 0


@dataclass(frozen=True)
class Summary:
    vehicles: int
    connected_at_end: int
    ever_connected: int
    produced: int
    sent: int
    acked: int
    flushed: int
    queued_left: int
    dropped: int
    reconnects: int
    disconnects: int
    connect_failures: int
    errors: int
    commands: int
    publish_seconds: float
    drift_ms: dict[str, float]
    per_vehicle: dict[str, int]
    last_errors: list[str]
    shadow: bool = False
    shadow_reports: int = 0
    shadow_deltas: int = 0
    shadow_rejected: int = 0
    shadow_sync_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.produced / self.publish_seconds if self.publish_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "per_vehicle"} | {
            "rate": round(self.rate, 1)}


class _Device:
    """A vehicle's connection state."""

    __slots__ = ("acks", "attempt", "auth", "client", "connack", "ever", "flushing", "index", "last_due", "next_dt",
                 "online", "reconnecting", "seen_commands", "shadow", "started", "vehicle")

    def __init__(self, index: int, vehicle: SimVehicle, client: mqtt.Client, auth: ClientAuth) -> None:
        self.index = index
        self.vehicle = vehicle
        self.client = client
        self.auth = auth
        self.online = False
        self.flushing = False
        self.ever = False
        self.reconnecting = False
        self.attempt = 0
        self.started = False  # connect() was called once; later attempts are reconnect()s
        self.last_due: float | None = None
        self.next_dt = 0.0  # simulated seconds to the next fix: the scheduled delay itself, so the
        # physics never sees clock arithmetic (same seed, same fixes, whatever the start time)
        self.connack: asyncio.Future[bool] | None = None
        self.seen_commands: deque[str] | None = None
        self.acks: dict[int, bool] | None = None  # QoS 1 messages waiting for their PUBACK
        self.shadow: VehicleShadow | None = None

    @property
    def inflight(self) -> int:
        return len(self.acks) if self.acks else 0


class Simulator:
    def __init__(self, fleet: list[SimVehicle], target: BrokerTarget, auth: Callable[[str], ClientAuth],
                 settings: SimSettings, *, progress: Callable[[Snapshot], None] | None = None,
                 on_interval: Callable[[SimVehicle, float], None] | None = None) -> None:
        if not fleet:
            raise UsageError("the fleet is empty")
        self.fleet = fleet
        self.target = target
        self.auth = auth
        self.settings = settings
        self.progress = progress
        self.on_interval = on_interval
        self.stats = Stats(target=len(fleet))
        self._waiter: asyncio.Future[None] | None = None
        self._stopping = False
        self._abort = False
        self._publish_stopped: float | None = None
        self._devices: list[_Device] = []
        self._by_id: dict[str, _Device] = {}
        self._heap: list[tuple[float, int, int]] = []
        self._generation: list[int] = []
        self._tls_shared: ssl.SSLContext | None = None
        self._jitter = random.Random()  # reconnect timing only: not part of the seeded content
        self._tasks: set[asyncio.Task[Any]] = set()
        self._phase = "connecting"
        self._publish_end: float | None = None
        self.queue: OfflineQueue | None = None
        self.discarded = 0

    # -- public --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop publishing now (Ctrl-C); the run then drains, says goodbye and returns.
        A second request skips the wait for acknowledgements and queued messages."""
        if self._stopping:
            self._abort = True
        self._stopping = True
        self._wakeup()

    def _wakeup(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)

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
        self._driver = PahoLoop(loop, connect_workers=min(32, self.settings.connect_concurrency))
        self._driver.start()
        self.queue = OfflineQueue(self.settings.queue_path, limit_per_vehicle=self.settings.queue_limit)
        if not self.settings.keep_queue:
            self.discarded = self.queue.discard_all()
        self._slots = asyncio.Semaphore(self.settings.connect_concurrency)
        ticker = loop.create_task(self._ticker())
        try:
            self._build_devices()
            await self._connect_all()
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
            self._driver.stop()
            self.queue.close()
        self._report()
        return self._summary()

    # -- set-up ----------------------------------------------------------------------------

    def _tls_context(self, auth: ClientAuth) -> ssl.SSLContext:
        if auth.client_cert is None:
            if self._tls_shared is None:
                self._tls_shared = self.target.tls_context()
            return self._tls_shared
        return self.target.tls_context(auth.client_cert)

    def _build_devices(self) -> None:
        s = self.settings
        run = uuid.uuid4().hex[:8]  # client tokens: unique per run and vehicle, short (5,000 of them)
        for index, vehicle in enumerate(self.fleet):
            auth = self.auth(vehicle.id)
            client = new_paho_client(s.client_id_prefix + vehicle.id, protocol=s.protocol, clean_start=False)
            client.user_data_set(None)
            if auth.username is not None:
                client.username_pw_set(auth.username, auth.password)
            if self.target.tls:
                client.tls_set_context(self._tls_context(auth))
            dev = _Device(index, vehicle, client, auth)
            if s.shadow:
                dev.shadow = VehicleShadow(vehicle, self._shadow_interval, token_prefix=f"{run}-{index:x}")
            client.user_data_set(dev)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            client.on_publish = self._on_publish
            client.on_subscribe = self._on_subscribe
            self._driver.attach(client)
            self._devices.append(dev)
            self._by_id[vehicle.id] = dev
            self._generation.append(0)

    async def _connect_all(self) -> None:
        for dev in self._devices:
            self._spawn(self._connect(dev))
        # Publishing starts once every vehicle has connected or failed once (it then keeps
        # retrying and queues offline), or after connect_timeout.
        deadline = time.monotonic() + self.settings.connect_timeout
        while time.monotonic() < deadline and not self._stopping:
            if all(d.ever or d.attempt > 0 for d in self._devices):
                break
            await asyncio.sleep(0.05)
        if self.settings.shadow:
            await self._sync_shadows()

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

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, dev: _Device) -> None:
        s, client = self.settings, dev.client
        dev.reconnecting = True
        ok = False
        try:
            async with self._slots:
                if self._phase == "closing":
                    return
                client.will_set(status_topic(dev.vehicle.id), status_payload(dev.vehicle.id, "offline", _now_ms()),
                                qos=1, retain=True)
                fut = dev.connack = self._loop.create_future()
                try:
                    if not dev.started:
                        dev.started = True
                        await self._driver.connect(client, self.target.host, self.target.port,
                                                   **persistent_connect_args(s.protocol, s.keepalive,
                                                                             s.session_expiry))
                    else:
                        await self._driver.reconnect(client)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    self.stats.connect_failures += 1
                    if isinstance(exc, ssl.SSLError | ValueError):
                        self.stats.error(f"{dev.vehicle.id}: cannot connect to {self.target.url}: {exc}")
                    else:
                        self.stats.last_errors.append(f"{dev.vehicle.id}: {self.target.url}: {exc}")
                    return
                try:
                    ok = await asyncio.wait_for(asyncio.shield(fut), timeout=max(10.0, float(s.keepalive)))
                except TimeoutError:
                    self.stats.connect_failures += 1
                    self.stats.error(f"{dev.vehicle.id}: no CONNACK from {self.target.url}")
                    with contextlib.suppress(Exception):
                        client.disconnect()
        finally:
            dev.connack = None
            dev.reconnecting = False
            if not (ok and dev.online):
                self._retry(dev)

    def _retry(self, dev: _Device) -> None:
        """Schedule the next connection attempt: exponential backoff with jitter."""
        if self._phase == "closing":
            return
        s = self.settings
        delay = backoff_delay(dev.attempt, s.backoff_min, s.backoff_max, self._jitter)
        dev.attempt += 1
        dev.reconnecting = True
        self._loop.call_later(delay, self._start_reconnect, dev)

    def _start_reconnect(self, dev: _Device) -> None:
        if dev.online or self._phase == "closing":
            dev.reconnecting = False
            return
        self._spawn(self._connect(dev))

    # -- paho callbacks (on the loop thread) -----------------------------------------------

    def _on_connect(self, client: mqtt.Client, dev: _Device, flags: Any, reason: Any, props: Any) -> None:
        fut = dev.connack
        if reason.is_failure:
            self.stats.error(f"{dev.vehicle.id}: {self.target.url} refused the connection: {reason}")
            if fut is not None and not fut.done():
                fut.set_result(False)
            return
        vid = dev.vehicle.id
        first = not dev.ever
        if dev.ever:
            self.stats.reconnects += 1
        else:
            self.stats.ever_connected += 1
        dev.ever, dev.online, dev.attempt = True, True, 0
        self.stats.connected += 1
        self._publish(dev, status_topic(vid), status_payload(vid, "online", _now_ms()), 1, True)
        shadow = dev.shadow
        if first or not flags.session_present:
            # Once per run even with a session present: an earlier run may have had other
            # subscriptions (shadows off). One SUBSCRIBE for commands and shadow answers.
            topics = [(commands_topic(vid), 1), (BROADCAST_COMMANDS, 1)]
            if shadow is not None:
                topics += [(t, 1) for t in shadow.subscriptions()]
            client.subscribe(topics)
        if shadow is not None:
            # After the SUBSCRIBE on the same connection: the answers find the subscriptions.
            for message in shadow.connected():
                self._publish(dev, message.topic, message.payload, message.qos)
            self.stats.shadow_reports += 1
        if self.queue is not None and self.queue.depth(vid):
            # paho re-sends its in-flight messages right after this callback returns;
            # the queue goes after them, so order is kept.
            dev.flushing = True
            self._spawn(self._flush(dev))
        if fut is not None and not fut.done():
            fut.set_result(True)

    def _on_disconnect(self, client: mqtt.Client, dev: _Device, flags: Any, reason: Any, props: Any) -> None:
        if dev.online:
            dev.online = False
            self.stats.connected -= 1
            if self._phase != "closing":
                self.stats.disconnects += 1
        dev.flushing = False  # paho re-sends what was in flight after the next CONNACK
        fut = dev.connack
        if fut is not None and not fut.done():
            fut.set_result(False)
        if self._phase != "closing" and not dev.reconnecting:
            self._retry(dev)

    def _on_publish(self, client: mqtt.Client, dev: _Device, mid: int, reason: Any, props: Any) -> None:
        acks = dev.acks
        if acks is not None and acks.pop(mid, False):
            self.stats.acked += 1

    def _on_subscribe(self, client: mqtt.Client, dev: _Device, mid: int, reasons: Any, props: Any) -> None:
        for rc in reasons:
            if getattr(rc, "is_failure", False):
                self.stats.error(f"{dev.vehicle.id}: subscription to its commands or shadow refused: {rc}")

    def _on_message(self, client: mqtt.Client, dev: _Device, msg: mqtt.MQTTMessage) -> None:
        started = time.perf_counter()
        vid = dev.vehicle.id
        payload = bytes(msg.payload)
        if msg.topic.startswith("things/"):
            # Shadow answers (also those an earlier run's session still subscribes to).
            if dev.shadow is not None and dev.shadow.wants(msg.topic):
                self._shadow_message(dev, msg.topic, payload)
            return
        try:
            cmd = parse_command(payload)
        except CommandError as exc:
            self.stats.error(f"{vid}: bad command on {msg.topic}: {exc}")
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

    # -- shadows ---------------------------------------------------------------------------

    def _apply_interval(self, vehicle: SimVehicle, seconds: float) -> float:
        """How an interval changes at run time (the API and shadow deltas; ``execute`` does the same
        for set_interval commands: SimVehicle.set_publish_interval, then _interval_changed)."""
        previous = vehicle.set_publish_interval(seconds)
        self._interval_changed(vehicle, previous)
        return previous

    def _shadow_interval(self, vehicle: SimVehicle, seconds: float) -> None:
        self._apply_interval(vehicle, seconds)
        self.stats.shadow_deltas += 1

    def _shadow_message(self, dev: _Device, topic: str, payload: bytes) -> None:
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

    def _shadow_changes(self, dev: _Device) -> None:
        """Report the engine / interval when they changed (offline: the next connect reports all)."""
        shadow = dev.shadow
        if shadow is None or not dev.online:
            return
        message = shadow.changes()
        if message is not None:
            self.stats.shadow_reports += 1
            self._publish(dev, message.topic, message.payload, message.qos)

    def _ack(self, dev: _Device, command_id: str | None, result: str, detail: str, started: float) -> None:
        latency = (time.perf_counter() - started) * 1000
        vid = dev.vehicle.id
        self._send(dev, ack_topic(vid), ack_payload(vid, command_id, result, detail, latency, _now_ms()), 1)

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

    # -- sending ---------------------------------------------------------------------------

    def _publish(self, dev: _Device, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        """Hand a message to paho; False if it could not take it (the connection just went)."""
        info = dev.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN):
            # A QoS 1 message paho could not write yet stays in its session and is re-sent.
            if qos > 0 and info.mid is not None:
                if dev.acks is None:
                    dev.acks = {}
                dev.acks[info.mid] = True
            self.stats.sent += 1
            return True
        return False

    def _send(self, dev: _Device, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Send now if the vehicle is online and its queue is empty, else queue (in order)."""
        if dev.online and not dev.flushing and self._publish(dev, topic, payload, qos, retain):
            return
        assert self.queue is not None
        vid = dev.vehicle.id
        if not self.queue.put(vid, topic, payload, qos, retain) and self.queue.dropped.get(vid) == 1:
            self.stats.error(f"{vid}: offline queue full ({self.queue.limit}); dropping its oldest messages")

    async def _flush(self, dev: _Device) -> None:
        queue, vid = self.queue, dev.vehicle.id
        assert queue is not None
        await asyncio.sleep(0)  # let paho re-send its own in-flight messages first
        while dev.online and dev.flushing:
            rows = queue.peek(vid, 100)
            if not rows:
                dev.flushing = False
                return
            last = None
            for row in rows:
                while dev.online and dev.inflight >= FLUSH_WINDOW:
                    await asyncio.sleep(0.005)
                if not dev.online or not self._publish(dev, row.topic, row.payload, row.qos, row.retain):
                    break
                last = row.id
                self.stats.flushed += 1
            if last is not None:
                queue.remove_through(vid, last)
            await asyncio.sleep(0)

    # -- schedule --------------------------------------------------------------------------

    def _emit(self, dev: _Device, dt: float) -> None:
        vehicle = dev.vehicle
        fix = vehicle.step(dt)
        self.stats.produced += 1
        self._send(dev, vehicle.topic, vehicle.telemetry(fix, _now_ms()), self.settings.qos)
        if dev.shadow is not None:
            self._shadow_changes(dev)  # the engine goes off at deliveries and fuel stations

    def _done(self, dev: _Device) -> bool:
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
                if dev.online and not dev.flushing and dev.inflight < 50 and not dev.client.want_write():
                    self._emit(dev, dev.vehicle.next_delay() if dev.vehicle.seq else 0.0)
                    progressed = True
                if not self._done(dev):
                    still.append(dev)
            active = still
            await asyncio.sleep(0 if progressed else 0.001)

    # -- ending ----------------------------------------------------------------------------

    def _busy(self) -> bool:
        assert self.queue is not None
        return self.queue.size > 0 or any(d.inflight > 0 for d in self._devices)

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout
        while self._busy() and time.monotonic() < deadline and not self._abort:
            await asyncio.sleep(0.02)

    async def _close(self) -> None:
        # Say goodbye on the status topic (a clean DISCONNECT suppresses the will), then go.
        ts = _now_ms()
        online = [d for d in self._devices if d.online]
        for dev in online:
            self._publish(dev, status_topic(dev.vehicle.id), status_payload(dev.vehicle.id, "offline", ts), 1,
                          True)
        deadline = time.monotonic() + 5.0
        while any(d.inflight > 0 for d in online if d.online) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for dev in self._devices:
            with contextlib.suppress(Exception):
                dev.client.disconnect()
        deadline = time.monotonic() + 3.0
        while any(d.online for d in self._devices) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # -- reporting -------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.settings.status_interval)
            if self.queue is not None and self.queue.total_queued:
                self.queue.commit()
            self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        st, q = self.stats, self.queue
        remaining = None
        if self._publish_end is not None and self._phase == "publishing":
            remaining = max(0.0, self._publish_end - self._loop.time())
        self.progress(Snapshot(
            elapsed=time.monotonic() - st.started, connected=st.connected, target=st.target, produced=st.produced,
            sent=st.sent, acked=st.acked, queued=q.size if q else 0, dropped=q.total_dropped if q else 0,
            reconnects=st.reconnects, errors=st.errors, commands=st.commands, phase=self._phase,
            remaining=remaining, shadow=self.settings.shadow, shadow_reports=st.shadow_reports,
            shadow_deltas=st.shadow_deltas))

    def _summary(self) -> Summary:
        st, q = self.stats, self.queue
        assert q is not None
        h = st.drift_us
        drift = {"p50": h.get_value_at_percentile(50) / 1000, "p99": h.get_value_at_percentile(99) / 1000,
                 "max": h.get_max_value() / 1000} if h.get_total_count() else {}
        started = st.publishing_since or time.monotonic()
        stopped = self._publish_stopped or time.monotonic()
        seconds = stopped - started
        return Summary(
            vehicles=len(self._devices), connected_at_end=st.connected, ever_connected=st.ever_connected,
            produced=st.produced, sent=st.sent, acked=st.acked, flushed=st.flushed, queued_left=q.size,
            dropped=q.total_dropped, reconnects=st.reconnects, disconnects=st.disconnects,
            connect_failures=st.connect_failures, errors=st.errors, commands=st.commands,
            publish_seconds=seconds, drift_ms=drift, per_vehicle={d.vehicle.id: d.vehicle.seq for d in self._devices},
            last_errors=list(st.last_errors), shadow=self.settings.shadow, shadow_reports=st.shadow_reports,
            shadow_deltas=st.shadow_deltas, shadow_rejected=st.shadow_rejected,
            shadow_sync_seconds=round(st.shadow_sync_seconds, 3))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
