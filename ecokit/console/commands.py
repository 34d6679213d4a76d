"""Commands to vehicles with a correlation id and a tracked life (docs/console.md, Commands).

- ``CommandStore``: SQLite, one row per command; every change is committed, so the list and
  the timers survive a restart.
- ``CommandEngine``: creates commands, publishes them (the wire format of
  ``ecokit.sim.commands``: the simulator's devices understand it), and moves them through
  ``lifecycle.CommandRecord`` on PUBACKs, device acks, vehicles coming online and deadlines.
  One worker thread applies every event in order; the MQTT callbacks only enqueue (paho
  calls ``on_publish`` holding its own lock, so they must never wait on ours).
- ``CommandChannel``: the console's paho connection for commands, with a persistent session
  so acks that arrive while the console restarts are delivered afterwards.
"""

from __future__ import annotations

import heapq
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, Counter

from ecokit.console.lifecycle import FINAL, STATES, CommandRecord
from ecokit.contract import MqttSettings
from ecokit.daemon import OncePerKind
from ecokit.errors import EcokitError
from ecokit.sim.commands import Command
from ecokit.sim.fleet import commands_topic
from ecokit.store.sqlite import open_database

ACKS = "fleet/+/commands/ack"
SESSION_EXPIRY = 86_400  # the broker keeps acks for the console for a day while it is away
TICK = 0.1  # seconds between deadline checks
PURGE_EVERY = 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id      TEXT PRIMARY KEY,
    batch   TEXT NOT NULL,
    vehicle TEXT NOT NULL,
    state   TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    record  TEXT NOT NULL                 -- every field of CommandRecord, JSON
);
CREATE INDEX IF NOT EXISTS commands_created ON commands (created);
CREATE INDEX IF NOT EXISTS commands_vehicle ON commands (vehicle, created);
CREATE INDEX IF NOT EXISTS commands_batch ON commands (batch);
CREATE INDEX IF NOT EXISTS commands_state ON commands (state);
"""


class CommandStoreError(EcokitError):
    """The command database cannot be opened or written."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _record_json(r: CommandRecord) -> str:
    return json.dumps({"id": r.id, "batch": r.batch, "vehicle": r.vehicle, "command": r.command, "args": r.args,
                       "created": r.created, "expires": r.expires, "timeout_ms": r.timeout_ms, "state": r.state,
                       "updated": r.updated, "sent_at": r.sent_at, "result": r.result, "detail": r.detail,
                       "latency_ms": r.latency_ms, "round_trip_ms": r.round_trip_ms,
                       "history": r.history}, separators=(",", ":"))


def _record(text: str) -> CommandRecord:
    d = json.loads(text)
    d["history"] = [(s, t) for s, t in d["history"]]
    return CommandRecord(**d)


class CommandStore:
    """Commands by id. Thread-safe (one connection, one lock); every write is committed."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self._db = open_database(path, SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise CommandStoreError(f"cannot open the command database {path}: {exc}") from exc
        self._lock = threading.Lock()

    def put(self, records: Iterable[CommandRecord]) -> None:
        rows = [(r.id, r.batch, r.vehicle, r.state, r.created, r.updated, _record_json(r)) for r in records]
        try:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO commands (id, batch, vehicle, state, created, updated, record) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                    "updated = excluded.updated, record = excluded.record", rows)
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with self._lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise CommandStoreError(f"cannot write commands to {self.path}: {exc}") from exc

    def get(self, command_id: str) -> CommandRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM commands WHERE id = ?", (command_id,)).fetchone()
        return _record(row[0]) if row else None

    def recent(self, *, vehicle: str | None = None, states: Sequence[str] = (), batch: str | None = None,
             limit: int = 100) -> list[CommandRecord]:
        """Newest first."""
        where, params = [], []
        if vehicle is not None:
            where.append("vehicle = ?")
            params.append(vehicle)
        if batch is not None:
            where.append("batch = ?")
            params.append(batch)
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        sql = "SELECT record FROM commands" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created DESC, rowid DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*params, limit)).fetchall()
        return [_record(r[0]) for r in rows]

    def unfinished(self) -> list[CommandRecord]:
        final = tuple(FINAL)
        with self._lock:
            rows = self._db.execute(f"SELECT record FROM commands WHERE state NOT IN ({', '.join('?' * len(final))}) "
                                    "ORDER BY created", final).fetchall()
        return [_record(r[0]) for r in rows]

    def purge(self, before_ms: int) -> int:
        """Delete finished commands last changed before ``before_ms``."""
        final = tuple(FINAL)
        with self._lock:
            marks = ", ".join("?" * len(final))
            cur = self._db.execute(f"DELETE FROM commands WHERE updated < ? AND state IN ({marks})",
                                   (before_ms, *final))
        return cur.rowcount

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM commands GROUP BY state").fetchall()
        return {state: n for state, n in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CommandChannel:
    """The console's paho connection for commands: publish at QoS 1, PUBACK reason codes,
    acks on ``fleet/+/commands/ack``. Callbacks only enqueue events for the engine."""

    def __init__(self, settings: MqttSettings, *, client_id: str, events: queue.Queue[tuple[str, Any]],
                 log: logging.Logger) -> None:
        self.events = events
        self.log = log
        self.once = OncePerKind(log)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(settings.username, settings.password)
        tls = settings.tls_context()
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.reconnect_delay_set(1, 10)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.host, self.port = settings.host, settings.port
        self.subscribed = threading.Event()

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def ready(self) -> bool:
        return self.subscribed.is_set() and self.client.is_connected()

    def publish(self, topic: str, payload: bytes, expiry_s: int) -> int | None:
        """The packet id of a QoS 1 publish, or None when it could not be handed to the socket.

        ``expiry_s`` is the MQTT 5 Message Expiry Interval: a broker holding the command for a
        device that went away drops it when the command expires, so it never runs late."""
        if not self.ready:
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.MessageExpiryInterval = max(1, expiry_s)
        info = self.client.publish(topic, payload, qos=1, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    props: Properties | None) -> None:
        if reason.is_failure:
            self.once(("connect", str(reason)), "the broker refused the console's command connection",
                      reason=str(reason))
            return
        client.subscribe(ACKS, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      props: Properties | None) -> None:
        if any(r.is_failure for r in reasons):
            self.once(("subscribe", str(reasons[0])), f"the broker refused the subscription to {ACKS}",
                      reason=str(reasons[0]))
            return
        self.subscribed.set()
        self.events.put(("connected", None))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       props: Properties | None) -> None:
        self.subscribed.clear()
        self.events.put(("disconnected", str(reason)))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    props: Properties | None) -> None:
        self.events.put(("puback", (mid, int(reason.value), str(reason))))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.events.put(("ack", (msg.topic, bytes(msg.payload))))


@dataclass(frozen=True)
class AckDoc:
    id: str
    result: str
    detail: str | None
    latency_ms: float | None


def parse_ack(topic: str, payload: bytes) -> tuple[str, AckDoc]:
    """(vehicle from the topic, the ack). ValueError names what is wrong."""
    levels = topic.split("/")
    if len(levels) != 4 or levels[0] != "fleet" or levels[2:] != ["commands", "ack"]:
        raise ValueError(f"not an ack topic: {topic}")
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not_json") from None
    if not isinstance(data, dict):
        raise ValueError("not_json")
    cid, result = data.get("id"), data.get("result")
    if not isinstance(cid, str) or not cid:
        raise ValueError("missing_field")
    if result not in ("ok", "error"):
        raise ValueError("bad_value")
    detail = data.get("detail")
    latency = data.get("latency_ms")
    return levels[1], AckDoc(cid, result, str(detail) if detail is not None else None,
                             float(latency) if isinstance(latency, int | float) and not isinstance(latency, bool)
                             else None)


class CommandMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.states = Counter("ecokit_console_commands", "command state changes", ["state"], registry=registry)
        self.acks = Counter("ecokit_console_command_acks", "device acks: applied, late, duplicate, unknown, "
                            "foreign (another vehicle's command), bad", ["kind"], registry=registry)


Publisher = Callable[[str, bytes, int], "int | None"]


class CommandEngine:
    """Every command's life. ``submit`` is called from request threads; everything else
    happens on the engine's worker thread, in the order events arrived."""

    def __init__(self, store: CommandStore, *, is_online: Callable[[str], bool],
                 on_change: Callable[[list[CommandRecord]], None], metrics: CommandMetrics,
                 log: logging.Logger, keep_days: float = 30.0, clock: Callable[[], int] = _now_ms) -> None:
        self.store = store
        self.is_online = is_online
        self.on_change = on_change
        self.metrics = metrics
        self.log = log
        self.keep_ms = int(keep_days * 86_400_000)
        self.clock = clock
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.lock = threading.RLock()
        self.active: dict[str, CommandRecord] = {}
        self.queued: dict[str, list[str]] = {}  # vehicle → ids of its queued commands, oldest first
        self.by_mid: dict[int, str] = {}
        self.deadlines: list[tuple[int, str]] = []
        self.publish: Publisher = lambda topic, payload, expiry_s: None
        self.connected = False
        self.thread: threading.Thread | None = None
        self.failure: str | None = None
        for record in store.unfinished():
            self._track(record)
        if self.active:
            log.info("resumed unfinished commands", extra={"commands": len(self.active)})

    # -- bookkeeping (under self.lock) ---------------------------------------------------

    def _track(self, r: CommandRecord) -> None:
        if r.final:
            self.active.pop(r.id, None)
            return
        self.active[r.id] = r
        if r.state == "queued":
            ids = self.queued.setdefault(r.vehicle, [])
            if r.id not in ids:
                ids.append(r.id)
        deadline = r.next_deadline()
        if deadline is not None:
            heapq.heappush(self.deadlines, (deadline, r.id))

    def _unqueue(self, r: CommandRecord) -> None:
        ids = self.queued.get(r.vehicle)
        if ids and r.id in ids:
            ids.remove(r.id)
            if not ids:
                del self.queued[r.vehicle]

    def _changed(self, records: list[CommandRecord]) -> None:
        if not records:
            return
        self.store.put(records)
        for r in records:
            self.metrics.states.labels(r.state).inc()
            self._track(r)
        self.on_change(records)

    def _send(self, r: CommandRecord, now: int) -> bool:
        """Publish a queued command; False when it must stay queued."""
        payload = Command(r.id, r.command, r.args, now).payload()
        with self.lock:
            expiry_s = -(-(r.expires - now) // 1000)  # whole seconds, rounded up
            mid = self.publish(commands_topic(r.vehicle), payload, expiry_s) if self.connected else None
            if mid is None:
                return False
            self._unqueue(r)
            self.by_mid[mid] = r.id
            return r.mark_sent(now)

    # -- API ---------------------------------------------------------------------------

    def submit(self, vehicles: Sequence[str], name: str, args: dict[str, Any], *, timeout_s: float,
               expires_s: float) -> tuple[str, list[CommandRecord]]:
        """One command per vehicle (already validated); sent now to online vehicles."""
        now = self.clock()
        batch = str(uuid.uuid4())
        records = [CommandRecord(id=str(uuid.uuid4()), batch=batch, vehicle=v, command=name, args=dict(args),
                                 created=now, expires=now + int(expires_s * 1000), timeout_ms=int(timeout_s * 1000))
                   for v in vehicles]
        with self.lock:
            for r in records:
                if not (self.connected and self.is_online(r.vehicle) and self._send(r, now)):
                    r.detail = ("the console is not connected to the broker" if not self.connected
                                else "the vehicle is offline; sent when it comes online")
            self._changed(records)
        return batch, records

    def get(self, command_id: str) -> CommandRecord | None:
        with self.lock:
            r = self.active.get(command_id)
            if r is not None:
                return CommandRecord(**{**r.__dict__, "history": list(r.history)})
        return self.store.get(command_id)

    def vehicles_online(self, vehicles: Iterable[str]) -> None:
        """Called by the intake with the vehicles it heard from online (thread-safe, and
        cheap when nothing is queued, which is the common case)."""
        if self.queued:
            wanted = [v for v in vehicles if v in self.queued]
            if wanted:
                self.events.put(("online", wanted))

    # -- worker ------------------------------------------------------------------------

    def start(self, channel: CommandChannel) -> None:
        self.publish = channel.publish
        self.thread = threading.Thread(target=self._run, name="commands", daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and self.failure is None

    def _run(self) -> None:
        last_purge = 0.0
        try:
            while True:
                try:
                    kind, value = self.events.get(timeout=TICK)
                except queue.Empty:
                    kind, value = "tick", None
                if kind == "stop":
                    return
                self.handle(kind, value)
                if time.monotonic() - last_purge > PURGE_EVERY:
                    last_purge = time.monotonic()
                    purged = self.store.purge(self.clock() - self.keep_ms)
                    if purged:
                        self.log.info("deleted old finished commands", extra={"commands": purged})
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            self.log.exception("the command engine stopped")

    def stop(self) -> None:
        if self.thread is not None:
            self.events.put(("stop", None))
            self.thread.join(timeout=5)

    def handle(self, kind: str, value: Any) -> None:
        """Apply one event (the worker's loop; tests call it directly)."""
        now = self.clock()
        with self.lock:
            changed: list[CommandRecord] = []
            if kind == "puback":
                mid, code, reason = value
                cid = self.by_mid.pop(mid, None)
                r = self.active.get(cid) if cid else None
                if r is not None and r.on_puback(now, code=code, reason=reason):
                    changed.append(r)
            elif kind == "ack":
                self._on_ack(*value, now=now, changed=changed)
            elif kind == "online":
                for vehicle in value:
                    for cid in list(self.queued.get(vehicle, ())):
                        r = self.active.get(cid)
                        if r is not None and self._send(r, now):
                            changed.append(r)
            elif kind == "connected":
                self.connected = True
                # Pending PUBACKs of the last connection will never come under those ids.
                self.by_mid.clear()
                for vehicle in list(self.queued):
                    if self.is_online(vehicle):
                        for cid in list(self.queued.get(vehicle, ())):
                            r = self.active.get(cid)
                            if r is not None and self._send(r, now):
                                changed.append(r)
            elif kind == "disconnected":
                self.connected = False
            changed += self._expire(now)
            self._changed(changed)

    def _on_ack(self, topic: str, payload: bytes, *, now: int, changed: list[CommandRecord]) -> None:
        try:
            vehicle, ack = parse_ack(topic, payload)
        except ValueError:
            self.metrics.acks.labels("bad").inc()
            return
        r = self.active.get(ack.id)
        if r is None:
            stored = self.store.get(ack.id)
            kind = "unknown" if stored is None else ("foreign" if stored.vehicle != vehicle else
                                                     stored.on_ack(now, result=ack.result, detail=ack.detail,
                                                                   latency_ms=ack.latency_ms))
            self.metrics.acks.labels(kind).inc()
            return
        if r.vehicle != vehicle:
            # A device may only answer its own commands (the topic names it; the ACL keeps it honest).
            self.metrics.acks.labels("foreign").inc()
            return
        self._unqueue(r)
        outcome = r.on_ack(now, result=ack.result, detail=ack.detail, latency_ms=ack.latency_ms)
        self.metrics.acks.labels(outcome).inc()
        if outcome == "applied":
            changed.append(r)

    def _expire(self, now: int) -> list[CommandRecord]:
        changed = []
        while self.deadlines and self.deadlines[0][0] <= now:
            _, cid = heapq.heappop(self.deadlines)
            r = self.active.get(cid)
            if r is not None and r.check_deadlines(now):
                self._unqueue(r)
                changed.append(r)
        return changed

    def counts(self) -> dict[str, int]:
        with self.lock:
            out: dict[str, int] = dict.fromkeys(STATES, 0)
            for r in self.active.values():
                out[r.state] += 1
            return out
