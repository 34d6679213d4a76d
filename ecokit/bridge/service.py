"""The bridge: MQTT (QoS 1, persistent session) → rules → on-disk spool → InfluxDB.

Intake (main thread): read every PUBLISH that arrived, evaluate the rules, append the
points to the spool, then acknowledge the messages (so an acknowledged message is on
disk), and republish rejections to ``ecokit/deadletter/<rule>``.
Writer (a thread): take up to ``batch_size`` points, or what waited ``flush_ms``, and
write them; on failure keep them and retry with backoff, so InfluxDB being down or slow
only grows the spool (bounded by ``buffer_mb``; beyond it points are dropped and counted).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ecokit.bridge.contract import BridgeServiceConfig
from ecokit.bridge.spool import Spool
from ecokit.config.rules import DEADLETTER_PREFIX, BridgeConfig, RuleConfig, retention_policy
from ecokit.daemon import FAILED, OncePerKind
from ecokit.errors import BrokerError, StoreError
from ecokit.mqtt.fast import FastMqtt, Subscription
from ecokit.rules.engine import Message, Point, Rejection, RuleEngine, deadletter_document
from ecokit.store.influx import InfluxEndpoint, InfluxV1

BRIDGE = "bridge"  # the dead-letter "rule" of messages whose evaluation raised
REFUSED_REASON = "refused"  # the dead-letter reason of a point InfluxDB would not store
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
        self.dropped_by = Counter("ecokit_bridge_dropped_points_by_reason",
                                  "points lost, by reason (buffer_full, disk_error, refused)", ["reason"],
                                  registry=registry)
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
                 log: logging.Logger, stop: threading.Event,
                 refused: Callable[[bytes, str], None] = lambda line, reason: None) -> None:
        super().__init__(name="influx-writer", daemon=True)
        self.spool = spool
        self.refused = refused  # each point InfluxDB refuses, with its reason
        self.client = InfluxV1(endpoint, timeout=30.0)
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.once = OncePerKind(log)
        self.stop = stop
        self.healthy = True

    def run(self) -> None:
        while True:
            try:
                if self._drain():
                    return
            except Exception as exc:  # a bug must not silently end all writes: log, wait, go on
                self.metrics.write_errors.labels(type(exc).__name__).inc()
                self.healthy = False
                self.once(("writer", type(exc).__name__), "the InfluxDB writer failed unexpectedly; retrying",
                          error=f"{type(exc).__name__}: {exc}"[:300])
                if self.stop.wait(1.0):
                    return

    def _drain(self) -> bool:
        """Write batches until stopped (True) ."""
        backoff = 0.2
        max_wait = self.settings.flush_ms / 1000
        while True:
            batch = self.spool.take(self.settings.batch_size, max_wait, self.stop)
            if batch is None:
                if self.stop.is_set():
                    return True
                continue
            started = time.perf_counter()
            try:
                self.client.write(batch.data, precision="ns")
            except StoreError as exc:
                if exc.status in REFUSED:
                    # A "partial write": InfluxDB stored some lines and refused others, and
                    # its dropped=N does not count lines it could not parse. Find each refused
                    # line, count and dead-letter it; only the rest counts as written.
                    self.metrics.write_errors.labels("refused").inc()
                    refused = self._isolate(batch.data.splitlines(keepends=True))
                    for line, reason in refused:
                        self.refused(line, reason)
                    self.metrics.dropped.inc(len(refused))
                    self.metrics.dropped_by.labels("refused").inc(len(refused))
                    self.once(("refused", str(exc.status)), "InfluxDB refused points; they are counted as dropped "
                              "and dead-lettered", error=str(exc)[:300], points=len(refused))
                    self.spool.commit(batch)
                    self.metrics.written.inc(batch.lines - len(refused))
                    continue
                kind = "unreachable" if exc.status is None else f"http_{exc.status}"
                self.metrics.write_errors.labels(kind).inc()
                self.healthy = False
                self.once(("retry", kind), "InfluxDB write failed; points stay in the buffer and are retried",
                          error=str(exc))
                if self.stop.wait(backoff):
                    # Stopping: what is unwritten stays on disk for the next start.
                    return True
                backoff = min(backoff * 2, 5.0)
                continue
            self.metrics.latency.observe(time.perf_counter() - started)
            self.spool.commit(batch)
            self.metrics.written.inc(batch.lines)
            if not self.healthy:
                self.log.info("InfluxDB writes succeed again", extra={"buffered": self.spool.pending_lines,
                                                                     "policy": self.client.endpoint.retention_policy})
                self.once.seen.clear()
            self.healthy = True
            backoff = 0.2


    def _isolate(self, lines: list[bytes]) -> list[tuple[bytes, str]]:
        """Write ``lines`` again, halving what InfluxDB refuses down to single lines; returns
        those it refuses with its reason. Lines written twice are stored once (same series,
        same time). An error other than a refusal propagates: the batch stays in the spool."""
        try:
            self.client.write(b"".join(lines), precision="ns")
            return []
        except StoreError as exc:
            if exc.status not in REFUSED:
                raise
            if len(lines) == 1:
                return [(lines[0].rstrip(b"\n"), _refusal_reason(exc.body or str(exc)))]
        half = len(lines) // 2
        return self._isolate(lines[:half]) + self._isolate(lines[half:])


REFUSED = (400, 413, 422)  # InfluxDB will never take these points as they are


def _refusal_reason(body: str) -> str:
    """InfluxDB's reason for refusing one line, without the line itself."""
    parsed = re.search(r"unable to parse '.*': (.+?)(?: dropped=\d+)?$", body, re.DOTALL)
    text = parsed.group(1) if parsed else re.sub(r"^partial write: | dropped=\d+$", "", body)
    return text.strip()[:200]


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
        # One spool (and writer) per retention policy the rules write to: a write names one
        # policy. The default policy's spool keeps its old folder, "lines".
        self.policy_of = {name: retention_policy(name, rule.retention) for name, rule in self.rules.items()
                          if rule.enabled}
        budget = self.settings.buffer_mb * 1024 * 1024
        self.spools: dict[str | None, Spool] = {}
        for policy in sorted(set(self.policy_of.values()), key=lambda p: p or ""):
            folder = Path(config.spool_dir) / ("lines" if policy is None else f"lines-{policy}")
            self.spools[policy] = Spool(folder, max_bytes=budget // max(1, len(set(self.policy_of.values()))))
        if None not in self.spools:
            self.spools[None] = Spool(Path(config.spool_dir) / "lines", max_bytes=budget)
        self.spool = self.spools[None]
        self.metrics.buffered.set_function(lambda: sum(s.pending_lines for s in self.spools.values()))
        recovered = sum(s.recovered_lines for s in self.spools.values())
        if recovered:
            log.info("found unwritten points from the last run; writing them first", extra={"points": recovered})
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
        self.writer: Writer | None = None
        self.writers: list[Writer] = []
        # Points InfluxDB refused (from the writer thread), dead-lettered by the intake loop.
        self.refused: queue.SimpleQueue[tuple[bytes, str]] = queue.SimpleQueue()
        self._rule_of = {rule.measurement: name for name, rule in reversed(list(self.rules.items()))}

    # -- lifecycle ------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.ready.is_set()

    def is_alive(self) -> bool:
        """The writer threads run (the intake loop is the main thread: its end ends the process)."""
        return all(w.is_alive() for w in self.writers) or self.stop.is_set()

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop``; then let the writers finish what they can and return."""
        self.stop = stop
        endpoint = self.config.influx.endpoint()
        self.writers = [Writer(spool, dataclasses.replace(endpoint, retention_policy=policy), self.settings,
                               self.metrics, self.log, stop,
                               refused=lambda line, reason: self.refused.put((line, reason)))
                        for policy, spool in self.spools.items()]
        self.writer = self.writers[0]
        for writer in self.writers:
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
            for writer in self.writers:
                writer.join(timeout=15)
            for spool in self.spools.values():
                spool.close()

    def _topics(self) -> list[str]:
        # Plain subscriptions of one persistent session, never a shared group: Mosquitto
        # 2.0.11 grants any client a `$share/...` subscription and checks read rights only
        # when it delivers, so a device that joined the bridge's group took a share of every
        # message and dropped it. A plain subscription is also kept, with its queue, across
        # a broker restart; messages published meanwhile wait for the bridge.
        return list(self.filters)

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
        try:
            self._subs_file.write_text(json.dumps(wanted))
        except OSError as exc:  # a full disk must not keep the bridge from consuming
            self.once(("subscriptions_file",), "cannot record the subscriptions", error=str(exc))
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
        mqtt, engine, metrics = self.mqtt, self.engine, self.metrics
        policy_of, single = self.policy_of, len(self.spools) == 1
        while not stop.is_set():
            messages = mqtt.read(0.2)
            self._deadletter_refused()
            if not messages:
                mqtt.ping_if_due()
                mqtt.flush()
                continue
            lines: dict[str | None, list[str]] = {}
            acks: list[int] = []
            rejections: list[tuple[Rejection, Message]] = []
            for topic, payload, qos, retain, pid in messages:
                msg = Message(topic, payload, qos, retain, self._receive_ns())
                try:
                    outcomes = engine.evaluate(msg)
                except Exception as exc:  # one message must never stop the intake
                    outcomes = [Rejection(BRIDGE, FAILED, type(exc).__name__, f"{type(exc).__name__}: {exc}"[:300])]
                for outcome in outcomes:
                    if type(outcome) is Point:
                        lines.setdefault(None if single else policy_of.get(outcome.rule), []).append(outcome.line)
                    else:
                        assert isinstance(outcome, Rejection)
                        rejections.append((outcome, msg))
                if pid:
                    acks.append(pid)
            metrics.received.inc(len(messages))
            for policy, policy_lines in lines.items():
                spool = self.spools[policy]
                try:
                    data = ("\n".join(policy_lines) + "\n").encode("utf-8")
                except UnicodeEncodeError:  # the rules refuse what has no UTF-8; never the batch
                    data, policy_lines = self._encodable(policy_lines)
                    if not policy_lines:
                        continue
                if not spool.append(data, len(policy_lines)):
                    # Acknowledged all the same: a full buffer or disk degrades to counted
                    # drops, never to a broker queue that grows until it fails too.
                    reason = spool.refusal or "buffer_full"
                    metrics.dropped_by.labels(reason).inc(len(policy_lines))
                    metrics.dropped.inc(len(policy_lines))
                    self.once(("dropped", reason), "points cannot be buffered and are dropped",
                              reason=reason, buffer_mb=self.settings.buffer_mb, error=spool.refusal_detail)
            for rejection, msg in rejections:
                self._reject(rejection, msg)
            mqtt.ack(acks)
            mqtt.flush()
            mqtt.ping_if_due()

    def _encodable(self, lines: list[str]) -> tuple[bytes, list[str]]:
        kept = []
        for line in lines:
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                self.metrics.dropped_by.labels("unencodable").inc()
                self.metrics.dropped.inc()
                self.once(("dropped", "unencodable"), "a point has no UTF-8 form and is dropped", line=line[:200])
                continue
            kept.append(line)
        return ("\n".join(kept) + "\n").encode("utf-8"), kept

    def _deadletter_refused(self) -> None:
        """Republish the points InfluxDB refused: the line protocol ecokit tried to write
        (the message's own payload is in its archive point), under its rule's dead letters."""
        while True:
            try:
                line, reason = self.refused.get_nowait()
            except queue.Empty:
                return
            measurement = re.split(rb"(?<!\\)[, ]", line, maxsplit=1)[0].decode("utf-8", "replace")
            rule = self._rule_of.get(measurement, BRIDGE)
            self._publish_deadletter(f"{DEADLETTER_PREFIX}/{rule}",
                                     deadletter_document(rule, REFUSED_REASON, reason, "", line))

    def _reject(self, rejection: Rejection, msg: Message) -> None:
        self.metrics.rejected.labels(rejection.rule, rejection.reason).inc()
        self.once(("reject", rejection.rule, rejection.reason, rejection.field),
                  f"rule {rejection.rule} rejected a message: {rejection.detail}",
                  rule=rejection.rule, reason=rejection.reason, field=rejection.field, topic=msg.topic)
        if msg.topic.startswith(DEADLETTER_PREFIX + "/"):
            return  # counted; a dead letter of a dead letter would never end
        self._publish_deadletter(rejection.topic, rejection.deadletter(msg))

    def _publish_deadletter(self, topic: str, payload: bytes) -> None:
        # Never exceed the broker's receive maximum with QoS 1 messages in flight.
        qos = 0 if self.mqtt.inflight >= max(1, self.mqtt.send_quota - 1) else 1
        self.mqtt.publish(topic, payload, qos=qos)
        self.metrics.deadletters.inc()
