"""The fleet processor service: ProcessorCore fed from MQTT, its results published back.

It subscribes to ``fleet/+/telemetry`` and ``fleet/+/status`` (the latter with MQTT 5
no-local, and it also ignores ``"source": "processor"``, so its own updates never come
back to it) and publishes at QoS 1, not retained:

- StatusUpdates to ``fleet/{id}/status`` (the retained status of a vehicle stays the
  device's own, its last will included);
- geofence transitions to ``fleet/{id}/events``;
- alerts firing and resolving to ``fleet/{id}/alerts``.

The processor reads every telemetry message of the fleet, like the bridge, so it uses the
same fast intake (``ecokit.mqtt.fast``): paho spends about four fifths of the processor's
time in its own per-packet work (benchmarks/README.md, "Geofences"). One thread runs the
intake, the once-a-second tick and the geofence reloads; messages are acknowledged after
they were handled. The fences of a received batch of fixes are looked up in one vectorised
query; the per-vehicle logic then runs fix by fix, in order. Each message is handled on its
own: an exception is counted by type, dead-lettered to ``ecokit/deadletter/processor`` and
the next message goes on.

The geofence file is watched (mtime, size, inode every ``reload_interval`` seconds, and at
once on SIGHUP, which ``ecokit up`` sends when it delivers a changed file): a valid new set
replaces the old one between two messages; an invalid one is logged and counted and the
last valid set stays in force.
"""

from __future__ import annotations

import base64
import gc
import json
import logging
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ecokit.daemon import OncePerKind
from ecokit.geofence.model import GeofenceError
from ecokit.geofence.store import GeofenceStore, GeofenceWatcher
from ecokit.mqtt.fast import FastMqtt, Received, Subscription, keep_connected, subscribe_or_fail
from ecokit.processor.contract import ProcessorServiceConfig
from ecokit.processor.core import Outputs, ProcessorCore
from ecokit.rules.engine import decode_json

TELEMETRY = "fleet/+/telemetry"
STATUS = "fleet/+/status"
DEADLETTER = "ecokit/deadletter/processor"


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.received = Counter("ecokit_processor_messages_received", "fleet messages received", ["kind"],
                                registry=r)
        self.published = Counter("ecokit_processor_status_published", "status updates published",
                                 ["state", "reason"], registry=r)
        self.ignored = Counter("ecokit_processor_messages_ignored",
                               "messages not usable (bad payload, own status)", registry=r)
        self.failed = Counter("ecokit_processor_messages_failed",
                              "messages whose handling raised (dead-lettered), by exception type", ["reason"],
                              registry=r)
        self.skipped = Counter("ecokit_processor_fixes_skipped", "fixes not evaluated for geofences and alerts",
                               ["reason"], registry=r)
        self.events = Counter("ecokit_processor_geofence_events", "geofence transitions published", ["type"],
                              registry=r)
        self.alerts = Counter("ecokit_processor_alerts", "alerts fired and resolved", ["alert", "state"],
                              registry=r)
        self.evaluated = Counter("ecokit_processor_fixes_evaluated",
                                 "fixes evaluated against geofences and alerts", registry=r)
        self.evaluation_time = Counter("ecokit_processor_fix_evaluation_seconds",
                                       "time spent evaluating fixes (divide by fixes_evaluated for the mean)",
                                       registry=r)
        self.reloads = Counter("ecokit_processor_geofence_reloads", "geofence file loads", ["result"], registry=r)
        self.fences = Gauge("ecokit_processor_geofences", "geofences in force", registry=r)
        self.file_valid = Gauge("ecokit_processor_geofence_file_valid",
                                "1 when the geofence file on disk is valid (0: the last valid set is in force)",
                                registry=r)
        self.connected = Gauge("ecokit_processor_mqtt_connected", "1 while subscribed to the broker", registry=r)
        self.vehicles = Gauge("ecokit_processor_vehicles", "vehicles by state", ["state"], registry=r)
        self.firing = Gauge("ecokit_processor_alerts_firing", "alerts firing now", ["alert"], registry=r)
        self.file_valid.set(1)
        for kind in ("out_of_order", "duplicate", "future"):
            self.skipped.labels(kind)
        for kind in ("geofence_enter", "geofence_exit"):
            self.events.labels(kind)
        self.telemetry = self.received.labels("telemetry")
        self.status = self.received.labels("status")


class Processor:
    def __init__(self, config: ProcessorServiceConfig, *, log: logging.Logger,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.log = log
        self.settings = config.processor
        self.geofence_settings = config.geofences.defaults()
        self.core = ProcessorCore(self.settings, self.geofence_settings, config.alerts)
        path = config.geofences.path
        self.watcher = GeofenceWatcher(GeofenceStore(Path(path))) if path else None
        self.reload_requested = threading.Event()
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.once = OncePerKind(log)
        self.registry = registry or CollectorRegistry()
        self.metrics = ProcessorMetrics(self.registry)
        m = config.mqtt
        self.mqtt = FastMqtt(m.host, m.port, client_id=f"ecokit-processor-{config.stack}-{uuid.uuid4().hex[:6]}",
                             username=m.username, password=m.password, tls=m.tls_context(), clean_start=True,
                             session_expiry=0, keepalive=30)
        self._backlog: list[Received] = []
        self._load_geofences(initial=True)
        self._gauges()
        # What exists now (fences, indexes, modules) lives as long as the process: keep it out
        # of the collector's full passes, which otherwise stall a message for tens of ms.
        gc.collect()
        gc.freeze()

    def _gauges(self) -> None:
        """The state gauges, set by the intake thread (the only one touching the core), so a
        /metrics scrape never waits for it."""
        m = self.metrics
        m.fences.set(len(self.core.tracker.index))
        for state, count in self.core.fleet.counts().items():
            m.vehicles.labels(state).set(count)
        for name, count in self.core.alerts.firing().items():
            m.firing.labels(name).set(count)

    def is_ready(self) -> bool:
        return self.ready.is_set()

    def is_alive(self) -> bool:
        """The intake loop is the main thread: if it ends, the process ends."""
        return True

    # -- geofences -----------------------------------------------------------------------

    def _load_geofences(self, *, initial: bool = False, force: bool = False) -> None:
        if self.watcher is None:
            return
        try:
            fences = self.watcher.poll(force=force)
        except GeofenceError as exc:
            self.metrics.reloads.labels("invalid").inc()
            self.metrics.file_valid.set(0)
            self.log.error("geofence file is invalid; the last valid geofences stay in force",
                           extra={"file": str(self.watcher.store.path), "problems": exc.problems})
            return
        if fences is None:
            return
        self.metrics.reloads.labels("ok").inc()
        self.metrics.file_valid.set(1)
        out = self.core.set_fences(fences.fences, time.time())
        if not initial:
            self._publish(out)
            self._gauges()
        for warning in fences.warnings:
            self.log.warning(warning, extra={"file": str(self.watcher.store.path)})
        self.log.info("geofences loaded" if initial else "geofences reloaded",
                      extra={"geofences": len(fences.fences), "file": str(self.watcher.store.path)})

    def request_reload(self, signum: int = 0, frame: object = None) -> None:
        self.reload_requested.set()

    # -- the intake ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.stop = stop
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self.request_reload)
        try:
            keep_connected(self.mqtt, stop, connect=self._connect, consume=self._consume, lost=self._lost)
        finally:
            self.ready.clear()
            self.metrics.connected.set(0)

    def _lost(self, exc: Exception) -> None:
        self.ready.clear()
        self.metrics.connected.set(0)
        self.once(("mqtt", type(exc).__name__), "lost the broker; reconnecting", error=str(exc))

    def _connect(self) -> None:
        self.mqtt.connect()
        subscribe_or_fail(self.mqtt, [Subscription(TELEMETRY, 1), Subscription(STATUS, 1, no_local=True)],
                          self.config.mqtt.username)
        self.ready.set()
        self.metrics.connected.set(1)
        self.once.seen.clear()
        self.log.info("subscribed", extra={"filters": [TELEMETRY, STATUS]})

    def _consume(self, stop: threading.Event) -> None:
        mqtt = self.mqtt
        interval = self.geofence_settings.reload_interval
        next_tick = next_poll = time.monotonic()
        while not stop.is_set():
            messages, self._backlog = (self._backlog, []) if self._backlog else (mqtt.read(0.1), [])
            if messages:
                acks = self._handle_batch(messages)
                mqtt.ack(acks)
            now = time.monotonic()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._load_geofences(force=True)
                next_poll = now + interval
            elif now >= next_poll:
                self._load_geofences()
                next_poll = now + interval
            if now >= next_tick:
                self._publish(self.core.tick(time.time()))
                self._gauges()
                next_tick = now + 1.0
            mqtt.flush()
            mqtt.ping_if_due()

    def _handle_batch(self, messages: list[Received]) -> list[int]:
        """Handle each message on its own (a failure costs that message only); the packet ids
        to acknowledge. The fences of the batch's fixes are looked up together first."""
        metrics, core, clock = self.metrics, self.core, time.perf_counter
        now = time.time()
        acks = [pid for _, _, _, _, pid in messages if pid]
        decoded: list[tuple[Received, str, str, Any]] = []
        for message in messages:
            levels = message[0].split("/")
            if len(levels) != 3:
                continue
            try:
                doc = decode_json(message[1])
            except (ValueError, RecursionError):  # not JSON, or nested beyond the parser
                doc = None
            decoded.append((message, levels[2], levels[1], doc))
        try:
            located = core.locate([doc if kind == "telemetry" else None for _, kind, _, doc in decoded])
        except Exception as exc:  # the lookup of every fix again, one by one, below
            self.once(("locate", type(exc).__name__), "the batched fence lookup failed; looking up one by one",
                      error=f"{type(exc).__name__}: {exc}"[:300])
            located = [None] * len(decoded)
        results: list[Outputs] = []
        for (message, kind, vehicle, doc), where in zip(decoded, located, strict=True):
            try:
                if kind == "telemetry":
                    metrics.telemetry.inc()
                    started = clock()
                    out = core.on_telemetry(vehicle, doc, now, located=where)
                    if not out.ignored and out.skipped is None:
                        metrics.evaluated.inc()
                        metrics.evaluation_time.inc(clock() - started)
                else:
                    metrics.status.inc()
                    out = core.on_status(vehicle, doc, now)
            except Exception as exc:  # one message never stops the processor
                self._failed(message, exc)
                continue
            if out.ignored:
                metrics.ignored.inc()
            if out.skipped:
                metrics.skipped.labels(out.skipped).inc()
            if out.status or out.events or out.alerts:
                results.append(out)
        for out in results:
            self._publish(out)
        return acks

    def _failed(self, message: Received, exc: Exception) -> None:
        topic, payload, qos, retain, _ = message
        reason = type(exc).__name__
        self.metrics.failed.labels(reason).inc()
        self.once(("failed", reason), "a message could not be handled; it is dead-lettered",
                  topic=topic, error=f"{reason}: {exc}"[:300])
        letter = json.dumps({"rule": "processor", "reason": "error", "field": reason, "topic": topic, "qos": qos,
                             "retain": retain, "payload": base64.b64encode(payload).decode()},
                            separators=(",", ":")).encode()
        self._send(DEADLETTER, letter)

    # -- publishing ----------------------------------------------------------------------

    def _send(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1, within the broker's receive maximum: at the limit, wait for
        acknowledgements (publishes read meanwhile are handled next)."""
        mqtt = self.mqtt
        limit = max(1, mqtt.send_quota - 1)
        while mqtt.inflight >= limit and not self.stop.is_set():
            mqtt.flush()
            self._backlog += mqtt.read(0.05)
        mqtt.publish(topic, payload, qos=1)

    def _publish(self, out: Outputs) -> None:
        metrics = self.metrics
        for update in out.status:
            self._send(update.topic, update.payload())
            metrics.published.labels(update.state, update.reason).inc()
            if update.reason != "periodic":
                self.log.info(f"{update.vehicle} is {update.state}",
                              extra={"vehicle": update.vehicle, "state": update.state, "reason": update.reason})
        for event in out.events:
            self._send(event.topic, event.payload())
            metrics.events.labels(event.type).inc()
        for alert in out.alerts:
            self._send(alert.topic, alert.payload())
            metrics.alerts.labels(alert.alert, alert.state).inc()
            self.log.info(f"alert {alert.alert} {alert.state} for {alert.vehicle}",
                          extra={"vehicle": alert.vehicle, "alert": alert.alert, "state": alert.state,
                                 "subject": alert.subject})
