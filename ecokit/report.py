"""What a command reports, as data: one JSON document, times in ISO 8601 UTC.

The CLI contract (README, "Output for scripts") in library form, shared by every command
that reports and by anything else that writes a report file:

- a report is one JSON object (lists sit under a named key, so keys can be added later);
- a time is an ISO 8601 UTC string ending in ``Z`` (``2025-01-31T12:00:00.123Z``) under its
  key; where the raw value is useful it sits alongside, as ``<key>_epoch`` (seconds) or
  ``<key>_ns`` (nanoseconds, where that precision is the data's: InfluxDB point times);
- units are in the key (``_ms``, ``_s``, ``_bytes``), values are numbers, never strings.

    from ecokit.report import iso_utc, stamped, to_json, write_json
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson


def iso_utc(epoch_s: float | None) -> str | None:
    """``2025-01-31T12:00:00.123Z`` for a Unix time in seconds (None stays None)."""
    if epoch_s is None:
        return None
    return _iso(dt.datetime.fromtimestamp(epoch_s, dt.UTC))


def iso_from_ns(epoch_ns: int | None) -> str | None:
    """ISO 8601 UTC for a Unix time in nanoseconds, to the millisecond."""
    if epoch_ns is None:
        return None
    seconds, rest = divmod(int(epoch_ns), 1_000_000_000)
    return _iso(dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=rest // 1000))


def iso_from_ms(epoch_ms: float | None) -> str | None:
    return None if epoch_ms is None else iso_utc(epoch_ms / 1000.0)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return _iso(dt.datetime.now(dt.UTC))


def stamped(key: str, epoch_s: float | None) -> dict[str, Any]:
    """``{key: ISO, key_epoch: seconds}``: a time with its raw value alongside."""
    return {key: iso_utc(epoch_s), f"{key}_epoch": None if epoch_s is None else round(epoch_s, 6)}


def stamped_ns(key: str, epoch_ns: int | None) -> dict[str, Any]:
    """``{key: ISO, key_ns: nanoseconds}``: for times whose nanoseconds are data."""
    return {key: iso_from_ns(epoch_ns), f"{key}_ns": epoch_ns}


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return _iso(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(document: Mapping[str, Any] | list[Any], *, indent: bool = True) -> str:
    """The document as JSON text (UTF-8, sorted as given, ends in a newline)."""
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME
    if indent:
        option |= orjson.OPT_INDENT_2
    return orjson.dumps(document, default=_default, option=option).decode()


def write_json(path: Path, document: Mapping[str, Any] | list[Any]) -> Path:
    """Write the document atomically (a reader never sees half a file); parents are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(to_json(document))
    os.replace(tmp, path)
    return path
