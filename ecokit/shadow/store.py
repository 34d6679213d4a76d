"""SQLite persistence of shadow records: one row per (thing, shadow name), WAL, survives restarts."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from types import TracebackType

from ecokit.errors import EcokitError
from ecokit.shadow.machine import ShadowKey, ShadowRecord
from ecokit.store.sqlite import open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS shadows (
    thing      TEXT NOT NULL,
    name       TEXT NOT NULL,          -- '' for the classic shadow
    version    INTEGER NOT NULL,
    deleted_at INTEGER,                -- set on a tombstone (deleted shadow remembering its version)
    updated_at INTEGER NOT NULL,
    record     TEXT NOT NULL,          -- ShadowRecord.to_json()
    PRIMARY KEY (thing, name)
);
"""


class ShadowStoreError(EcokitError):
    """The shadow database cannot be opened or written."""


class ShadowStore:
    """Records by key. Thread-safe (one connection, one lock); every put is committed."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self._db = open_database(path, SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ShadowStoreError(f"cannot open the shadow database {path}: {exc}") from exc
        self._lock = threading.Lock()

    def get(self, key: ShadowKey) -> ShadowRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM shadows WHERE thing = ? AND name = ?",
                                   (key.thing, key.name)).fetchone()
        return ShadowRecord.from_json(json.loads(row[0])) if row else None

    def put(self, key: ShadowKey, record: ShadowRecord) -> None:
        text = json.dumps(record.to_json(), separators=(",", ":"), ensure_ascii=False)
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO shadows (thing, name, version, deleted_at, updated_at, record) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (thing, name) DO UPDATE SET "
                    "version = excluded.version, deleted_at = excluded.deleted_at, "
                    "updated_at = excluded.updated_at, record = excluded.record",
                    (key.thing, key.name, record.version, record.deleted_at, record.timestamp, text))
        except sqlite3.Error as exc:
            raise ShadowStoreError(f"cannot write shadow {key} to {self.path}: {exc}") from exc

    def count(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM shadows WHERE deleted_at IS NULL").fetchone()
        return int(row[0])

    def keys(self) -> list[ShadowKey]:
        with self._lock:
            rows = self._db.execute(
                "SELECT thing, name FROM shadows WHERE deleted_at IS NULL ORDER BY thing, name").fetchall()
        return [ShadowKey(t, n) for t, n in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ShadowStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
