"""SQLite as ecokit's services keep their own state (shadows, the console's commands): one
connection shared by threads under the caller's lock, autocommit, WAL, the schema applied."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_database(path: Path | str, schema: str) -> sqlite3.Connection:
    """Open (creating its folder and tables) the database at ``path``; raises sqlite3.Error."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db
