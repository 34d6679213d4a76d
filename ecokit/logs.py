"""Every service's log at once: interleaved by time, each line with its service.

Without ``follow`` the last lines of each log are merged by the time written at the start
of each line (ISO 8601, as Mosquitto, influxd and ecokit's JSON logs write it; a time
without a zone is local time, as Mosquitto's log_timestamp_format is); a line without a
time keeps its place after the line before it. With ``follow`` lines are printed as they
arrive, whichever service writes them.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ecokit.errors import EcokitError

ISO_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2}(?:\.\d+)?)(Z|[+-]\d{2}:?\d{2})?")


def line_time(line: str) -> float | None:
    """The time at the start of a log line (seconds since the epoch), None when it has none."""
    head = line[:120]
    if head.startswith("{"):
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            for key in ("ts", "time", "timestamp"):
                value = doc.get(key)
                if isinstance(value, int | float):
                    return float(value) / (1000.0 if value > 1e11 else 1.0)
                if isinstance(value, str):
                    return _iso(value)
    found = ISO_TIME.search(head)
    if found is None:
        return None
    zone = found.group(3) or ""
    return _iso(f"{found.group(1)}T{found.group(2)}{zone}")


def _iso(text: str) -> float | None:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, like Mosquitto's strftime
    return when.timestamp()


def merge_by_time(logs: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """(service, line) of every log, in time order; each log's own order is kept."""
    keyed: list[list[tuple[float, int, str, str]]] = []
    for rank, (service, lines) in enumerate(logs.items()):
        last = float("-inf")
        entries = []
        for line in lines:
            found = line_time(line)
            last = max(last, found) if found is not None else last
            entries.append((last, rank, service, line))
        keyed.append(entries)
    return [(service, line) for _, _, service, line in heapq.merge(*keyed, key=lambda e: (e[0], e[1]))]


def follow_all(streams: dict[str, Iterator[str]]) -> Iterator[tuple[str, str]]:
    """(service, line) as any of the streams yields one (one reader thread per stream)."""
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue(maxsize=10_000)

    def read(service: str, stream: Iterator[str]) -> None:
        try:
            for line in stream:
                lines.put((service, line))
        except EcokitError as exc:
            lines.put((service, f"(log unavailable: {exc})"))
        finally:
            lines.put((service, None))

    for service, stream in streams.items():
        threading.Thread(target=read, args=(service, stream), name=f"log-{service}", daemon=True).start()
    open_streams = len(streams)
    while open_streams:
        service, line = lines.get()
        if line is None:
            open_streams -= 1
            continue
        yield service, line


def all_logs(stack: Any, services: Iterable[str], *, follow: bool, tail: int) -> Iterator[tuple[str, str]]:
    """Every service's log of ``stack`` (a service with no log yet is left out)."""
    if follow:
        streams = {}
        for name in services:
            try:
                streams[name] = iter(stack.logs(name, follow=True, tail=tail))
            except EcokitError:
                continue
        yield from follow_all(streams)
        return
    collected: dict[str, list[str]] = {}
    for name in services:
        try:
            collected[name] = list(stack.logs(name, follow=False, tail=tail))
        except EcokitError:
            continue
    yield from merge_by_time(collected)
