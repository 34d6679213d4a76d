"""The fleet processor service: ProcessorCore driven by MQTT (paho), results published back.

It subscribes to ``fleet/+/telemetry`` and ``fleet/+/status`` (the latter with MQTT 5
no-local, and it also ignores ``"source": "processor"``, so its own updates never come
back to it) and publishes at QoS 1, not retained:

- StatusUpdates to ``fleet/{id}/status`` (the retained status of a vehicle stays the
  device's own, its last will included);
- geofence transitions to ``fleet/{id}/events``;
- alerts firing and resolving to ``fleet/{id}/alerts``.

The geofence file is watched (mtime, size, inode every ``reload_interval`` seconds, and
at once on SIGHUP, which ``ecokit up`` sends when it delivers a changed file): a valid
new set replaces the old one without a restart; an invalid one is logged and counted and
the last valid set stays in force.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry, Counter, Gauge

from ecokit.daemon import OncePerKind
from ecokit.geofence.model import GeofenceError
from ecokit.geofence.store import GeofenceStore, GeofenceWatcher
from ecokit.processor.contract import ProcessorServiceConfig
from ecokit.processor.core import Outputs, ProcessorCore

TELEMETRY = "fleet/+/telemetry"
STATUS = "fleet/+/status"


class Processor:
    def __init__(self, config: ProcessorServiceConfig, *, log: logging.Logger,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.log = log
        self.settings = config.processor
        self.geofence_settings = config.geofences.defaults()
        alert_rules = config.alerts
        self.core = ProcessorCore(self.settings, self.geofence_settings, alert_rules)
        path = config.geofences.path
        self.watcher = GeofenceWatcher(GeofenceStore(Path(path))) if path else None
        self.reload_requested = threading.Event()
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.once = OncePerKind(log)
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("ecokit_processor_messages_received", "fleet messages received", ["kind"], registry=r)
        self.published = Counter("ecokit_processor_status_published", "status updates published",
                                 ["state", "reason"], registry=r)
        self.ignored = Counter("ecokit_processor_messages_ignored",
                               "messages not usable (bad payload, own status)", registry=r)
        self.skipped = Counter("ecokit_processor_fixes_skipped", "fixes not evaluated for geofences and alerts",
                               ["reason"], registry=r)
        self.events = Counter("ecokit_processor_geofence_events", "geofence transitions published", ["type"],
                              registry=r)
        self.alerts = Counter("ecokit_processor_alerts", "alerts fired and resolved", ["alert", "state"], registry=r)
        self.evaluated = Counter("ecokit_processor_fixes_evaluated", "fixes evaluated against geofences and alerts",
                                 registry=r)
        self.evaluation_time = Counter("ecokit_processor_fix_evaluation_seconds",
                                       "time spent evaluating fixes (divide by fixes_evaluated for the mean)",
                                       registry=r)
        self.reloads = Counter("ecokit_processor_geofence_reloads", "geofence file loads", ["result"], registry=r)
        self.fences = Gauge("ecokit_processor_geofences", "geofences in force", registry=r)
        self.fences.set_function(lambda: len(self.core.tracker.index))
        self.file_valid = Gauge("ecokit_processor_geofence_file_valid",
                                "1 when the geofence file on disk is valid (0: the last valid set is in force)",
                                registry=r)
        self.file_valid.set(1)
        vehicles = Gauge("ecokit_processor_vehicles", "vehicles by state", ["state"], registry=r)
        for name in ("online", "offline"):
            vehicles.labels(name).set_function(functools.partial(self._count, name))
        firing = Gauge("ecokit_processor_alerts_firing", "alerts firing now", ["alert"], registry=r)
        for name in alert_rules:
            firing.labels(name).set_function(functools.partial(self._firing, name))
        for kind in ("out_of_order", "duplicate", "future"):
            self.skipped.labels(kind)
        for kind in ("geofence_enter", "geofence_exit"):
            self.events.labels(kind)
        m = config.mqtt
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"ecokit-processor-{config.stack}-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(m.username, m.password)
        tls = m.tls_context()
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.host, self.port = m.host, m.port
        self._load_geofences(initial=True)

    def _count(self, state: str) -> int:
        with self.lock:
            return self.core.fleet.counts()[state]

    def _firing(self, name: str) -> int:
        with self.lock:
            return self.core.alerts.firing().get(name, 0)

    def is_ready(self) -> bool:
        return self.ready.is_set()

    # -- geofences -----------------------------------------------------------------------

    def _load_geofences(self, *, initial: bool = False, force: bool = False) -> None:
        if self.watcher is None:
            return
        try:
            fences = self.watcher.poll(force=force)
        except GeofenceError as exc:
            self.reloads.labels("invalid").inc()
            self.file_valid.set(0)
            self.log.error("geofence file is invalid; the last valid geofences stay in force",
                           extra={"file": str(self.watcher.store.path), "problems": exc.problems})
            return
        if fences is None:
            return
        self.reloads.labels("ok").inc()
        self.file_valid.set(1)
        with self.lock:
            out = self.core.set_fences(fences.fences, time.time())
        self._publish(out)
        for warning in fences.warnings:
            self.log.warning(warning, extra={"file": str(self.watcher.store.path)})
        self.log.info("geofences loaded" if initial else "geofences reloaded",
                      extra={"geofences": len(fences.fences), "file": str(self.watcher.store.path)})

    def request_reload(self, signum: int = 0, frame: object = None) -> None:
        self.reload_requested.set()

    # -- MQTT ----------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    props: Properties | None) -> None:
        if reason.is_failure:
            self.once(("connect", str(reason)), "the broker refused the processor", reason=str(reason))
            return
        client.subscribe([(TELEMETRY, SubscribeOptions(qos=1)), (STATUS, SubscribeOptions(qos=1, noLocal=True))])
        self.ready.set()
        self.log.info("subscribed", extra={"filters": [TELEMETRY, STATUS]})

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       props: Properties | None) -> None:
        self.ready.clear()
        self.once(("disconnect", str(reason)), "lost the broker; reconnecting", reason=str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        levels = msg.topic.split("/")
        if len(levels) != 3:
            return
        kind, vehicle = levels[2], levels[1]
        self.received.labels(kind).inc()
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            doc = None
        now = time.time()
        with self.lock:
            if kind == "telemetry":
                started = time.perf_counter()
                out = self.core.on_telemetry(vehicle, doc, now)
                if not out.ignored and out.skipped is None:
                    self.evaluated.inc()
                    self.evaluation_time.inc(time.perf_counter() - started)
            else:
                out = self.core.on_status(vehicle, doc, now)
        if out.ignored:
            self.ignored.inc()
        if out.skipped:
            self.skipped.labels(out.skipped).inc()
        self._publish(out)

    def _publish(self, out: Outputs) -> None:
        for update in out.status:
            self.client.publish(update.topic, update.payload(), qos=1, retain=False)
            self.published.labels(update.state, update.reason).inc()
            if update.reason != "periodic":
                self.log.info(f"{update.vehicle} is {update.state}",
                              extra={"vehicle": update.vehicle, "state": update.state, "reason": update.reason})
        for event in out.events:
            self.client.publish(event.topic, event.payload(), qos=1, retain=False)
            self.events.labels(event.type).inc()
        for alert in out.alerts:
            self.client.publish(alert.topic, alert.payload(), qos=1, retain=False)
            self.alerts.labels(alert.alert, alert.state).inc()
            self.log.info(f"alert {alert.alert} {alert.state} for {alert.vehicle}",
                          extra={"vehicle": alert.vehicle, "alert": alert.alert, "state": alert.state,
                                 "subject": alert.subject})

    def run(self, stop: threading.Event) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self.request_reload)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=True, properties=props)
        self.client.loop_start()
        interval = self.geofence_settings.reload_interval
        next_tick = next_poll = time.monotonic()
        try:
            while not stop.wait(0.1):
                now = time.monotonic()
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self._load_geofences(force=True)
                    next_poll = now + interval
                elif now >= next_poll:
                    self._load_geofences()
                    next_poll = now + interval
                if now >= next_tick:
                    with self.lock:
                        out = self.core.tick(time.time())
                    self._publish(out)
                    next_tick = now + 1.0
        finally:
            self.client.disconnect()
            self.client.loop_stop()
