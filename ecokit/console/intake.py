"""The console's MQTT intake: telemetry and status into the ``FleetStore``, the processor's
geofence events and alerts to the event feed, on a thread of its
own with ecokit's fast MQTT client (the bridge's intake: paho alone would cost about a
quarter of a core at 5,000 messages/s, benchmarks/README.md "paho receive rate").

Every message is handled on its own: one the console cannot use is counted by reason and
logged once per kind, and the next message is handled as if nothing happened. The console
does not dead-letter: the pipeline's rules (the bridge, or EMQX) already republish every
invalid telemetry and status message once to ``ecokit/deadletter/<rule>``, and a second copy
would double what people watching that topic count. The intake never waits for a browser: it
only takes the store's lock, which readers hold for microseconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ecokit.config.registry import DEVICE_ID
from ecokit.console.state import FleetStore, Rejected
from ecokit.console.stats import LatencyWindow, RateMeter
from ecokit.contract import MqttSettings
from ecokit.daemon import OncePerKind
from ecokit.mqtt.fast import FastMqtt, Received, Subscription, keep_connected, subscribe_or_fail
from ecokit.rules.engine import decode_json

TELEMETRY = "fleet/+/telemetry"
STATUS = "fleet/+/status"
EVENTS = "fleet/+/events"
ALERTS = "fleet/+/alerts"
# What a feed entry keeps of the processor's events and alerts (docs/geofences.md); anything
# else in a payload is dropped, so a frame never carries more than the page shows.
EVENT_KEYS = {"type", "geofence", "name", "tags", "ts", "confirmed_ts", "lat", "lng", "dwell_s"}
ALERT_KEYS = {"alert", "state", "severity", "condition", "subject", "ts", "since", "value", "flag", "geofence",
              "duration_s", "reason"}



class IntakeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter("ecokit_console_messages_received", "fleet messages received", ["kind"],
                                registry=registry)
        self.rejected = Counter("ecokit_console_messages_rejected", "messages the console could not use",
                                ["reason"], registry=registry)
        self.connected = Gauge("ecokit_console_mqtt_connected", "1 while the intake is subscribed",
                               registry=registry)


class Intake:
    def __init__(self, mqtt: MqttSettings, *, client_id: str, store: FleetStore, rate: RateMeter,
                 latency: LatencyWindow, on_online: Callable[[list[str]], None], metrics: IntakeMetrics,
                 log: logging.Logger, on_event: Callable[[dict[str, Any]], None] = lambda event: None) -> None:
        self.store = store
        self.on_event = on_event
        self.username = mqtt.username
        self.rate = rate
        self.latency = latency
        self.on_online = on_online
        self.metrics = metrics
        self.log = log
        self.once = OncePerKind(log)
        self.errors: dict[str, int] = {}
        self.mqtt = FastMqtt(mqtt.host, mqtt.port, client_id=client_id, username=mqtt.username,
                             password=mqtt.password, tls=mqtt.tls_context(), clean_start=True, session_expiry=0,
                             keepalive=30)
        self.ready = threading.Event()
        self.thread: threading.Thread | None = None
        self.failure: str | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self, stop: threading.Event) -> None:
        self.thread = threading.Thread(target=self._run, args=(stop,), name="intake", daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and self.failure is None

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        try:
            self.run(stop)
        except Exception as exc:  # the loop itself died: /healthz says so
            self.failure = f"{type(exc).__name__}: {exc}"
            self.log.exception("the MQTT intake stopped")

    def run(self, stop: threading.Event) -> None:
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
        subs = [Subscription(TELEMETRY, qos=0), Subscription(STATUS, qos=1), Subscription(EVENTS, qos=1),
                Subscription(ALERTS, qos=1)]
        subscribe_or_fail(self.mqtt, subs, self.username)
        self.ready.set()
        self.metrics.connected.set(1)
        self.once.seen.clear()
        self.log.info("subscribed", extra={"filters": [s.topic for s in subs]})

    def _consume(self, stop: threading.Event) -> None:
        mqtt = self.mqtt
        while not stop.is_set():
            messages = mqtt.read(0.2)
            if messages:
                acks = self.handle(messages)
                mqtt.ack(acks)
            mqtt.flush()
            mqtt.ping_if_due()

    # -- messages ---------------------------------------------------------------------

    def handle(self, messages: list[Received]) -> list[int]:
        """Apply a batch to the store; returns the packet ids to acknowledge."""
        now = time.time()
        now_ms = int(now * 1000)
        acks: list[int] = []
        online: set[str] = set()
        latencies: list[float] = []
        rejected: list[tuple[Received, str, str | None, str]] = []
        telemetry = status = 0
        events: list[dict[str, Any]] = []
        store = self.store
        with store.lock:
            for msg in messages:
                topic, payload, _, _, pid = msg
                if pid:
                    acks.append(pid)
                try:
                    levels = topic.split("/")
                    if len(levels) != 3:
                        raise Rejected("bad_topic", None, f"unexpected topic {topic}")
                    vehicle, kind = levels[1], levels[2]
                    # A user with wide publish rights could publish under any topic level;
                    # only a valid device id becomes a vehicle.
                    if not DEVICE_ID.match(vehicle):
                        raise Rejected("bad_topic", None, f"{vehicle[:80]!r} is not a vehicle id")
                    try:
                        doc = decode_json(payload)
                    except ValueError:
                        raise Rejected("not_json", None, "the payload is not JSON") from None
                    if kind in ("events", "alerts"):
                        events.append(feed_entry(vehicle, kind, doc))
                        continue
                    if kind == "telemetry":
                        telemetry += 1
                        came_online, ts = store.on_telemetry(vehicle, doc)
                        if ts is not None:
                            latencies.append(now_ms - ts)
                    else:
                        status += 1
                        came_online = store.on_status(vehicle, doc)
                    # Every vehicle heard from while online, not only those that just came
                    # online: a command queued while the console had not heard from it yet
                    # goes out with its next message.
                    if came_online or store.is_online(vehicle):
                        online.add(vehicle)
                except Rejected as exc:
                    rejected.append((msg, exc.reason, exc.field, str(exc)))
                except Exception as exc:  # a bug must cost one message, never the intake
                    rejected.append((msg, "internal", None, f"{type(exc).__name__}: {exc}"))
        if events:
            self.metrics.received.labels("events").inc(len(events))
            for event in events:
                self.on_event(event)
        if telemetry:
            self.metrics.received.labels("telemetry").inc(telemetry)
        if status:
            self.metrics.received.labels("status").inc(status)
        self.rate.add(len(messages), now)
        if latencies:
            self.latency.add(latencies, now)
        for msg, reason, field, detail in rejected:
            self._reject(msg, reason, field, detail)
        if online:
            self.on_online(sorted(online))
        return acks

    def _reject(self, msg: Received, reason: str, field: str | None, detail: str) -> None:
        self.metrics.rejected.labels(reason).inc()
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.once(("reject", reason, field or ""), f"cannot use a message: {detail}", reason=reason,
                  field=field, topic=msg[0])


def feed_entry(vehicle: str, kind: str, doc: Any) -> dict[str, Any]:
    """A processor event or alert as the event feed shows it: ``kind`` geofence or alert, the
    vehicle, and the payload's known keys (Rejected when it is not one)."""
    if not isinstance(doc, dict):
        raise Rejected("bad_event", None, f"a {kind} payload must be a JSON object")
    keys = EVENT_KEYS if kind == "events" else ALERT_KEYS
    entry = {k: v for k, v in doc.items() if k in keys}
    if type(entry.get("ts")) is not int:
        raise Rejected("bad_event", "ts", f"a {kind} payload needs an integer ts")
    entry["kind"] = "geofence" if kind == "events" else "alert"
    entry["vehicle"] = vehicle
    return entry
