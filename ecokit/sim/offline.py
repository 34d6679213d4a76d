"""The vehicles' offline queue: messages a vehicle produced while disconnected.

One SQLite database holds every vehicle's queue (a row per message, ordered by an
autoincrement id, indexed by vehicle), so each vehicle's messages leave in the order
they were made. Each vehicle's queue is bounded: when it is full the oldest message
is dropped to make room, and every drop is counted (``dropped``), never silent.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    vehicle TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_vehicle ON queue (vehicle, id);
"""


class Queued(NamedTuple):
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class OfflineQueue:
    def __init__(self, path: Path, *, limit_per_vehicle: int = 10_000) -> None:
        if limit_per_vehicle < 1:
            raise ValueError("the offline queue needs room for at least one message per vehicle")
        self.path = path
        self.limit = limit_per_vehicle
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level="DEFERRED")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._depth: dict[str, int] = dict(
            self._db.execute("SELECT vehicle, COUNT(*) FROM queue GROUP BY vehicle").fetchall())
        self.dropped: dict[str, int] = {}
        self.total_dropped = 0
        self.total_queued = 0

    def depth(self, vehicle: str) -> int:
        return self._depth.get(vehicle, 0)

    @property
    def size(self) -> int:
        return sum(self._depth.values())

    def put(self, vehicle: str, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        """Queue a message; False when the vehicle's queue was full and its oldest message went."""
        depth = self._depth.get(vehicle, 0)
        room = True
        if depth >= self.limit:
            self._db.execute("DELETE FROM queue WHERE id = (SELECT MIN(id) FROM queue WHERE vehicle = ?)",
                             (vehicle,))
            depth -= 1
            self.dropped[vehicle] = self.dropped.get(vehicle, 0) + 1
            self.total_dropped += 1
            room = False
        self._db.execute("INSERT INTO queue (vehicle, topic, payload, qos, retain) VALUES (?, ?, ?, ?, ?)",
                         (vehicle, topic, payload, qos, int(retain)))
        self._depth[vehicle] = depth + 1
        self.total_queued += 1
        return room

    def peek(self, vehicle: str, limit: int = 100) -> list[Queued]:
        """The vehicle's oldest messages, oldest first."""
        if not self._depth.get(vehicle):
            return []
        rows = self._db.execute("SELECT id, topic, payload, qos, retain FROM queue WHERE vehicle = ? "
                                "ORDER BY id LIMIT ?", (vehicle, limit)).fetchall()
        return [Queued(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in rows]

    def remove_through(self, vehicle: str, last_id: int) -> int:
        """Forget the vehicle's messages up to and including ``last_id`` (they were sent)."""
        cur = self._db.execute("DELETE FROM queue WHERE vehicle = ? AND id <= ?", (vehicle, last_id))
        removed = cur.rowcount
        left = self._depth.get(vehicle, 0) - removed
        if left > 0:
            self._depth[vehicle] = left
        else:
            self._depth.pop(vehicle, None)
        return removed

    def discard_all(self) -> int:
        """Empty every queue (messages left by an earlier run); returns how many went."""
        n = self.size
        self._db.execute("DELETE FROM queue")
        self._db.commit()
        self._depth.clear()
        return n

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()
