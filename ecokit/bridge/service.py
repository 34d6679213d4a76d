"""The bridge: MQTT (QoS 1, persistent session) → rules → on-disk spool → InfluxDB.

Intake (main thread): read every PUBLISH that arrived, evaluate the rules, append the
points to the spool, then acknowledge the messages (so an acknowledged message is on
disk), and republish rejections to ``ecokit/deadletter/<rule>``.
Writer (a thread): take up to ``batch_size`` points, or what waited ``flush_ms``, and
write them; on failure keep them and retry with backoff, so InfluxDB being down or slow
only grows the spool (bounded by ``buffer_mb``; beyond it points are dropped and counted).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ecokit.bridge.contract import BridgeServiceConfig
from ecokit.bridge.spool import Spool
from ecokit.config.rules import BridgeConfig, RuleConfig
from ecokit.daemon import OncePerKind
from ecokit.errors import BrokerError, StoreError
from ecokit.mqtt.fast import FastMqtt, Subscription
from ecokit.rules.engine import Message, Point, Rejection, RuleEngine
from ecokit.store.influx import InfluxEndpoint, InfluxV1

SHARE_GROUP = "ecokit-bridge"
SESSION_EXPIRY = 86_400  # the broker keeps the bridge's queue for a day while it is away
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BridgeMetrics:
    """The bridge's Prometheus metrics (names are shared with the Grafana dashboards)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter("ecokit_bridge_messages_received", "MQTT messages received", registry=registry)
        self.written = Counter("ecokit_bridge_points_written", "points written to InfluxDB", registry=registry)
        self.rejected = Counter("ecokit_bridge_messages_rejected", "messages a rule rejected (dead-lettered)",
                                ["rule", "reason"], registry=registry)
        self.buffered = Gauge("ecokit_bridge_buffered_points", "points in the on-disk buffer, not yet written",
                              registry=registry)
        self.dropped = Counter("ecokit_bridge_dropped_points",
                               "points lost: buffer full, or refused by InfluxDB as invalid", registry=registry)
        self.latency = Histogram("ecokit_bridge_write_latency_seconds", "duration of one InfluxDB write",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.write_errors = Counter("ecokit_bridge_write_errors", "failed InfluxDB writes (retried)", ["kind"],
                                    registry=registry)
        self.deadletters = Counter("ecokit_bridge_deadletters_published", "dead letters republished",
                                   registry=registry)
        self.connected = Gauge("ecokit_bridge_mqtt_connected", "1 while subscribed to the broker", registry=registry)


def subscription_filters(rules: dict[str, RuleConfig]) -> list[str]:
    """The fewest filters covering every enabled rule."""
    filters = sorted({r.topic for r in rules.values() if r.enabled})
    return ["#"] if "#" in filters else filters


class Writer(threading.Thread):
    """Drains the spool into InfluxDB, in order, retrying with backoff."""

    def __init__(self, spool: Spool, endpoint: InfluxEndpoint, settings: BridgeConfig, metrics: BridgeMetrics,
                 log: logging.Logger, stop: threading.Event) -> None:
        super().__init__(name="influx-writer", daemon=True)
        self.spool = spool
        self.client = InfluxV1(endpoint, timeout=30.0)
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.once = OncePerKind(log)
        self.stop = stop
        self.healthy = True

    def run(self) -> None:
        backoff = 0.2
        max_wait = self.settings.flush_ms / 1000
        while True:
            batch = self.spool.take(self.settings.batch_size, max_wait, self.stop)
            if batch is None:
                if self.stop.is_set():
                    return
                continue
            started = time.perf_counter()
            try:
                self.client.write(batch.data, precision="ns")
            except StoreError as exc:
                if exc.status in (400, 413, 422):
                    dropped = _dropped_count(exc.body or "", batch.lines)
                    self.metrics.dropped.inc(dropped)
                    self.metrics.write_errors.labels("refused").inc()
                    self.once(("refused", str(exc.status)), "InfluxDB refused points as invalid; they are dropped",
                              error=str(exc), points=dropped)
                    self.spool.commit(batch)
                    self.metrics.written.inc(batch.lines - dropped)
                    continue
                kind = "unreachable" if exc.status is None else f"http_{exc.status}"
                self.metrics.write_errors.labels(kind).inc()
                self.healthy = False
                self.once(("retry", kind), "InfluxDB write failed; points stay in the buffer and are retried",
                          error=str(exc))
                if self.stop.wait(backoff):
                    # Stopping: what is unwritten stays on disk for the next start.
                    return
                backoff = min(backoff * 2, 5.0)
                continue
            self.metrics.latency.observe(time.perf_counter() - started)
            self.spool.commit(batch)
            self.metrics.written.inc(batch.lines)
            if not self.healthy:
                self.log.info("InfluxDB writes succeed again", extra={"buffered": self.spool.pending_lines})
                self.once.seen.clear()
            self.healthy = True
            backoff = 0.2


def _dropped_count(body: str, lines: int) -> int:
    match = re.search(r"dropped=(\d+)", body)
    return min(int(match.group(1)), lines) if match else lines


class Bridge:
    """The bridge: a consumer of the shared subscription with its own spool."""

    def __init__(self, config: BridgeServiceConfig, *, log: logging.Logger,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.log = log
        self.settings = config.bridge
        self.rules = config.rules
        self.engine = RuleEngine(self.rules)
        self.registry = registry or CollectorRegistry()
        self.metrics = BridgeMetrics(self.registry)
        spool_dir = Path(config.spool_dir) / "lines"
        self.spool = Spool(spool_dir, max_bytes=self.settings.buffer_mb * 1024 * 1024)
        self.metrics.buffered.set_function(lambda: self.spool.pending_lines)
        if self.spool.recovered_lines:
            log.info("found unwritten points from the last run; writing them first",
                     extra={"points": self.spool.recovered_lines})
        self.once = OncePerKind(log)
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.filters = subscription_filters(self.rules)
        self._last_ns = 0
        mqtt = config.mqtt
        self.client_id = f"ecokit-bridge-{config.stack}"
        self.mqtt = FastMqtt(mqtt.host, mqtt.port, client_id=self.client_id, username=mqtt.username,
                             password=mqtt.password, tls=mqtt.tls_context(), clean_start=False,
                             session_expiry=SESSION_EXPIRY, keepalive=30)
        self._subs_file = Path(config.spool_dir) / "subscriptions.json"

    # -- lifecycle ------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.ready.is_set()

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop``; then let the writer finish what it can and return."""
        self.stop = stop
        writer = Writer(self.spool, self.config.influx.endpoint(), self.settings, self.metrics,
                        self.log, stop)
        writer.start()
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    self._connect()
                    backoff = 0.5
                    self._consume(stop)
                except (OSError, ConnectionError, BrokerError) as exc:
                    self.ready.clear()
                    self.metrics.connected.set(0)
                    self.mqtt.close()
                    if stop.is_set():
                        break
                    self.once(("mqtt", type(exc).__name__), "lost the broker; reconnecting", error=str(exc))
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.ready.clear()
            self.mqtt.disconnect()
            writer.join(timeout=15)
            self.spool.close()

    def _topics(self) -> list[str]:
        # A shared subscription: a second bridge (a rolling restart, more capacity) shares
        # the load instead of writing every point twice. Mosquitto queues shared messages
        # for an offline persistent member and keeps retain-as-published (checked on 2.0.11).
        return [f"$share/{SHARE_GROUP}/{f}" for f in self.filters]

    def _connect(self) -> None:
        present = self.mqtt.connect()
        wanted = self._topics()
        # Retain handling 2: retained messages are not re-sent on (re)subscribe, so the
        # archive only records publishes as they happen; retain-as-published keeps the flag.
        qos = self.settings.qos
        codes = self.mqtt.subscribe([Subscription(t, qos, retain_as_published=True, retain_handling=2)
                                     for t in wanted])
        refused = [t for t, c in zip(wanted, codes, strict=False) if c >= 0x80]
        if refused:
            raise BrokerError(f"the broker refused the subscription to {', '.join(refused)} "
                              f"(reason {codes[0]:#x}); check the ACL of ecokit-bridge")
        if present:
            self._drop_stale_subscriptions(wanted)
        self._subs_file.write_text(json.dumps(wanted))
        self.ready.set()
        self.metrics.connected.set(1)
        self.once.seen.clear()
        self.log.info("subscribed", extra={"filters": wanted, "session_present": present,
                                           "client_id": self.client_id})

    def _drop_stale_subscriptions(self, wanted: Sequence[str]) -> None:
        try:
            previous = json.loads(self._subs_file.read_text())
        except (FileNotFoundError, ValueError):
            return
        stale = [t for t in previous if t not in wanted]
        if stale:
            self.mqtt.unsubscribe(stale)

    # -- the intake loop ------------------------------------------------------------

    def _receive_ns(self) -> int:
        """Receive time in ns, unique per message even for a burst within one clock tick."""
        now = time.time_ns()
        if now <= self._last_ns:
            now = self._last_ns + 1
        self._last_ns = now
        return now

    def _consume(self, stop: threading.Event) -> None:
        mqtt, engine, spool, metrics = self.mqtt, self.engine, self.spool, self.metrics
        while not stop.is_set():
            messages = mqtt.read(0.2)
            if not messages:
                mqtt.ping_if_due()
                mqtt.flush()
                continue
            lines: list[str] = []
            acks: list[int] = []
            rejections: list[tuple[Rejection, Message]] = []
            for topic, payload, qos, retain, pid in messages:
                msg = Message(topic, payload, qos, retain, self._receive_ns())
                for outcome in engine.evaluate(msg):
                    if type(outcome) is Point:
                        lines.append(outcome.line)
                    else:
                        assert isinstance(outcome, Rejection)
                        rejections.append((outcome, msg))
                if pid:
                    acks.append(pid)
            metrics.received.inc(len(messages))
            if lines:
                data = ("\n".join(lines) + "\n").encode("utf-8")
                if not spool.append(data, len(lines)):
                    metrics.dropped.inc(len(lines))
                    self.once(("buffer_full",), "the on-disk buffer is full; new points are dropped",
                              buffer_mb=self.settings.buffer_mb)
            for rejection, msg in rejections:
                self._reject(rejection, msg)
            mqtt.ack(acks)
            mqtt.flush()
            mqtt.ping_if_due()

    def _reject(self, rejection: Rejection, msg: Message) -> None:
        self.metrics.rejected.labels(rejection.rule, rejection.reason).inc()
        self.once(("reject", rejection.rule, rejection.reason, rejection.field),
                  f"rule {rejection.rule} rejected a message: {rejection.detail}",
                  rule=rejection.rule, reason=rejection.reason, field=rejection.field, topic=msg.topic)
        # Never exceed the broker's receive maximum with QoS 1 messages in flight.
        qos = 0 if self.mqtt.inflight >= max(1, self.mqtt.send_quota - 1) else 1
        self.mqtt.publish(rejection.topic, rejection.deadletter(msg), qos=qos)
        self.metrics.deadletters.inc()
