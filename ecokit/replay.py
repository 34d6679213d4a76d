"""Replay: read the archive in time order and publish it again.

The archive (the ``archive`` rule) holds every message: topic (tag), payload (base64, so
the bytes come back exactly), qos, retain, and the receive time in ns. ``Archive.read``
pages through a window in time order without skipping anything (several topics may
share one timestamp, so a page boundary never cuts through one). ``Replayer`` keeps the
original spacing divided by ``speed`` (or sends as fast as the broker takes them),
optionally under a prefix and with another QoS, and measures how far each send was from
its planned time.
"""

from __future__ import annotations

import base64
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ecokit.acl import topic_matches
from ecokit.config.rules import topic_filter_problem
from ecokit.durations import UNIT_SECONDS, duration_seconds
from ecokit.errors import UsageError
from ecokit.mqtt.fast import FastMqtt
from ecokit.store.influx import InfluxV1, quote_ident

ARCHIVE = "archive"
PAGE = 5000
_RE2_META = set("\\.+*?()|[]{}^$/")


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    time_ns: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


def parse_time(text: str, *, now: dt.datetime | None = None) -> int:
    """A point in time in ns: ``now``, a duration ago (``90s``, ``15m``, ``1h``, ``2d``) or
    ISO 8601 (``2025-01-31T12:00:00Z``; without an offset it is UTC)."""
    now = now or dt.datetime.now(dt.UTC)
    text = text.strip()
    if text == "now":
        return int(now.timestamp() * 1e9)
    seconds = duration_seconds(text, units=tuple(UNIT_SECONDS), bare=False)
    if seconds is not None:
        return int((now.timestamp() - seconds) * 1e9)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is neither a duration (30s, 15m, 1h, 2d) nor an ISO 8601 time "
                         "(2025-01-31T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def _re2_escape(text: str) -> str:
    return "".join("\\" + c if c in _RE2_META else c for c in text)


def filter_regex(filters: Sequence[str]) -> str | None:
    """An InfluxQL regex (RE2, for the topic tag) matching what the MQTT filters match."""
    if not filters:
        return None
    alternatives = []
    for topic_filter in filters:
        problem = topic_filter_problem(topic_filter)
        if problem:
            raise UsageError(f"--topic {topic_filter!r} is not a topic filter: {problem}")
        levels = topic_filter.split("/")
        if levels == ["#"]:
            return None
        parts: list[str] = []
        for i, level in enumerate(levels):
            if level == "#":
                parts[-1] += "(\\/.*)?"
                break
            piece = "[^\\/]*" if level == "+" else _re2_escape(level)
            parts.append(piece if i == 0 else "\\/" + piece)
        alternatives.append("".join(parts))
    return "^(?:" + "|".join(alternatives) + ")$"


class Archive:
    """The archive measurement, read through InfluxDB's v1 API."""

    def __init__(self, client: InfluxV1, measurement: str = ARCHIVE, page: int = PAGE, *,
                 retention_policy: str | None = None) -> None:
        self.client = client
        # The archive keeps its own retention (the archive rule's `retention`): its points live
        # in that retention policy, not the database's default one.
        self.measurement = (f"{quote_ident(retention_policy)}.{quote_ident(measurement)}" if retention_policy
                            else quote_ident(measurement))
        self.page = page

    def _where(self, start_ns: int, end_ns: int, filters: Sequence[str]) -> str:
        where = f"time >= {start_ns} AND time < {end_ns}"
        regex = filter_regex(filters)
        if regex:
            where += f" AND topic =~ /{regex}/"
        return where

    def count(self, start_ns: int, end_ns: int, filters: Sequence[str] = ()) -> int:
        rows = list(self.client.rows(f"SELECT count(qos) FROM {self.measurement} "
                                     f"WHERE {self._where(start_ns, end_ns, filters)}"))
        return int(rows[0]["count"]) if rows else 0

    def last_time(self, start_ns: int, end_ns: int, filters: Sequence[str] = ()) -> int | None:
        """The time (ns) of the newest archived message in [start, end) matching ``filters``."""
        rows = list(self.client.rows(f"SELECT last(qos) FROM {self.measurement} "
                                     f"WHERE {self._where(start_ns, end_ns, filters)}"))
        return int(rows[0]["time"]) if rows else None

    def _query(self, where: str, limit: int | None) -> list[ArchivedMessage]:
        q = f"SELECT payload, qos, retain, topic FROM {self.measurement} WHERE {where} ORDER BY time ASC"
        if limit:
            q += f" LIMIT {limit}"
        out = []
        for row in self.client.rows(q):
            out.append(ArchivedMessage(int(row["time"]), row["topic"], base64.b64decode(row["payload"] or ""),
                                       int(row["qos"]), bool(row["retain"])))
        return out

    def read(self, start_ns: int, end_ns: int, filters: Sequence[str] = ()) -> Iterator[ArchivedMessage]:
        """Every archived message in [start, end) matching ``filters``, in time order."""
        regex = filter_regex(filters)
        extra = f" AND topic =~ /{regex}/" if regex else ""
        cursor, inclusive = start_ns, True
        while True:
            op = ">=" if inclusive else ">"
            rows = self._query(f"time {op} {cursor} AND time < {end_ns}{extra}", self.page)
            if not rows:
                return
            if len(rows) < self.page:
                yield from self._matching(rows, filters)
                return
            last = rows[-1].time_ns
            yield from self._matching([r for r in rows if r.time_ns < last], filters)
            # The page may end inside a group sharing one timestamp: take that group whole.
            same = sorted(self._query(f"time = {last}{extra}", None), key=lambda r: r.topic)
            yield from self._matching(same, filters)
            cursor, inclusive = last, False

    @staticmethod
    def _matching(rows: list[ArchivedMessage], filters: Sequence[str]) -> Iterator[ArchivedMessage]:
        for row in rows:
            if not filters or any(topic_matches(f, row.topic) for f in filters):
                yield row


@dataclass
class ReplaySummary:
    sent: int = 0
    bytes: int = 0
    acknowledged: int = 0
    topics: set[str] = field(default_factory=set)
    first_ns: int | None = None
    last_ns: int | None = None
    started: float = 0.0
    finished: float = 0.0
    errors_ms: list[float] = field(default_factory=list)  # send time minus planned time

    @property
    def duration(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.sent / self.duration

    def error_percentile(self, q: float) -> float | None:
        if not self.errors_ms:
            return None
        ordered = sorted(abs(e) for e in self.errors_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


Progress = Callable[[int], None]


class Replayer:
    """Publishes archived messages with their original spacing / ``speed`` (None: as fast as possible)."""

    def __init__(self, mqtt: FastMqtt, *, speed: float | None, prefix: str = "", qos: int | None = None,
                 window: int | None = None) -> None:
        if speed is not None and speed <= 0:
            raise UsageError("--speed must be positive or `max`")
        self.mqtt = mqtt
        self.speed = speed
        self.prefix = prefix
        self.qos = qos
        self.window = window

    def _topic(self, topic: str) -> str:
        return self.prefix + topic if self.prefix else topic

    def _wait_window(self, window: int) -> None:
        while self.mqtt.inflight >= window:
            self.mqtt.flush()
            self.mqtt.read(0.05)

    def run(self, messages: Iterator[ArchivedMessage], *, limit: int | None = None,
            progress: Progress | None = None, stop: threading.Event | None = None) -> ReplaySummary:
        summary = ReplaySummary()
        feed: queue.Queue[ArchivedMessage | None] = queue.Queue(maxsize=20_000)
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                for n, msg in enumerate(messages):
                    if limit is not None and n >= limit:
                        break
                    feed.put(msg)
            except BaseException as exc:
                failure.append(exc)
            finally:
                feed.put(None)

        reader = threading.Thread(target=produce, name="archive-reader", daemon=True)
        reader.start()
        window = max(1, min(self.window or self.mqtt.send_quota, self.mqtt.send_quota))
        mqtt, paced = self.mqtt, self.speed is not None
        origin_ns: int | None = None
        origin_wall = 0.0
        summary.started = time.perf_counter()
        reported = 0
        while True:
            msg = feed.get()
            if msg is None or (stop is not None and stop.is_set()):
                break
            qos = min(msg.qos if self.qos is None else self.qos, 1)  # QoS 2 is replayed at QoS 1
            if qos and mqtt.inflight >= window:
                self._wait_window(window)
            if paced:
                assert self.speed is not None
                if origin_ns is None:
                    origin_ns, origin_wall = msg.time_ns, time.perf_counter()
                planned = origin_wall + (msg.time_ns - origin_ns) / 1e9 / self.speed
                _sleep_until(planned, mqtt)
                mqtt.publish(self._topic(msg.topic), msg.payload, qos, msg.retain)
                mqtt.flush()
                summary.errors_ms.append((time.perf_counter() - planned) * 1000)
            else:
                mqtt.publish(self._topic(msg.topic), msg.payload, qos, msg.retain)
                if summary.sent % 256 == 255:
                    mqtt.flush()
                    mqtt.read(0.0)
            summary.sent += 1
            summary.bytes += len(msg.payload)
            summary.topics.add(msg.topic)
            summary.first_ns = msg.time_ns if summary.first_ns is None else summary.first_ns
            summary.last_ns = msg.time_ns
            if progress is not None and summary.sent - reported >= 200:
                progress(summary.sent - reported)
                reported = summary.sent
        mqtt.flush()
        deadline = time.monotonic() + 30
        while mqtt.inflight and time.monotonic() < deadline:
            mqtt.read(0.05)
        summary.finished = time.perf_counter()
        summary.acknowledged = summary.sent - mqtt.inflight
        if progress is not None and summary.sent > reported:
            progress(summary.sent - reported)
        if failure:
            raise failure[0]
        return summary


def _sleep_until(target: float, mqtt: FastMqtt) -> None:
    """Sleep until ``target`` (perf_counter), handling acknowledgements meanwhile; spin the last ms."""
    while True:
        remaining = target - time.perf_counter()
        if remaining <= 0:
            return
        if remaining > 0.003:
            if mqtt.inflight:
                mqtt.read(min(remaining - 0.002, 0.05))
            else:
                time.sleep(min(remaining - 0.002, 0.05))
        elif remaining > 0.0005:
            time.sleep(0.0002)
