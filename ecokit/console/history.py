"""A vehicle's track from InfluxDB (the ``telemetry`` measurement, time = device ``ts``),
reduced to at most N points.

``downsample`` is pure: largest-triangle-three-buckets on speed over time. It keeps real
fixes (position, speed and fuel of one message), always the first and the last, and the
peaks a chart must show. Ranges above ``PREFETCH_LIMIT`` points are first thinned by
InfluxDB (``last()`` per time bucket) so a week of 1 Hz telemetry is never shipped whole.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ecokit.durations import UNIT_SECONDS, duration_seconds
from ecokit.store.influx import InfluxV1, quote_ident, quote_string

PREFETCH_LIMIT = 20_000
FIELDS = ("lat", "lng", "speed", "fuel", "heading")

Point = dict[str, Any]


def parse_instant(text: str, *, now_ms: int) -> int:
    """Epoch ms from ``now``, a duration ago (``15m``, ``1h``, ``2d``), epoch milliseconds, or
    ISO 8601 (UTC when it has no offset). ValueError says what was expected."""
    text = text.strip()
    if text == "now":
        return now_ms
    if text.isdigit() and len(text) >= 10:
        return int(text)
    seconds = duration_seconds(text, units=tuple(UNIT_SECONDS), bare=False)
    if seconds is not None:
        return now_ms - int(seconds * 1000)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (15m, 1h, 2d), epoch milliseconds nor an ISO 8601 "
                         "time (2025-01-31T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _triangle(a: Point, b: Point, c: tuple[float, float]) -> float:
    ax, ay = a["ts"], a.get("speed") or 0.0
    bx, by = b["ts"], b.get("speed") or 0.0
    return float(abs((ax - c[0]) * (by - ay) - (ax - bx) * (c[1] - ay)))


def downsample(points: Sequence[Point], max_points: int) -> list[Point]:
    """At most ``max_points`` of ``points`` (ordered by ``ts``), by largest-triangle-three-
    buckets on (ts, speed). Fewer points come back unchanged."""
    n = len(points)
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    if n <= max_points:
        return list(points)
    if max_points == 2:
        return [points[0], points[-1]]
    out = [points[0]]
    every = (n - 2) / (max_points - 2)
    a = 0
    for i in range(max_points - 2):
        start = math.floor(i * every) + 1
        end = min(math.floor((i + 1) * every) + 1, n - 1)
        # The average of the next bucket is the third corner.
        nstart, nend = end, min(math.floor((i + 2) * every) + 1, n)
        nxt = points[nstart:nend] or [points[-1]]
        avg = (sum(p["ts"] for p in nxt) / len(nxt), sum((p.get("speed") or 0.0) for p in nxt) / len(nxt))
        best, best_area = start, -1.0
        for j in range(start, max(end, start + 1)):
            area = _triangle(points[a], points[j], avg)
            if area > best_area:
                best, best_area = j, area
        out.append(points[best])
        a = best
    out.append(points[-1])
    return out


@dataclass(frozen=True)
class History:
    vehicle: str
    since: int
    until: int
    count: int
    points: list[Point]
    downsampled: bool

    def to_api(self) -> dict[str, Any]:
        return {"vehicle": self.vehicle, "since": self.since, "until": self.until, "count": self.count,
                "downsampled": self.downsampled, "points": self.points}


def _rows_to_points(rows: Sequence[dict[str, Any]]) -> list[Point]:
    out = []
    for row in rows:
        if row.get("lat") is None or row.get("lng") is None:
            continue
        out.append({"ts": int(row["time"]), **{f: row.get(f) for f in FIELDS}})
    return out


def vehicle_history(client: InfluxV1, *, measurement: str, tag: str, vehicle: str, since: int, until: int,
                    max_points: int) -> History:
    """The vehicle's fixes in [since, until] (epoch ms), at most ``max_points`` of them."""
    where = (f"{quote_ident(tag)} = {quote_string(vehicle)} AND time >= {since * 1_000_000} "
             f"AND time <= {until * 1_000_000}")
    source = quote_ident(measurement)
    counted = list(client.rows(f"SELECT count(lat) FROM {source} WHERE {where}", epoch="ms"))
    count = int(counted[0].get("count", 0)) if counted else 0
    if count == 0:
        return History(vehicle, since, until, 0, [], False)
    if count <= PREFETCH_LIMIT:
        rows = client.rows(f"SELECT {', '.join(quote_ident(f) for f in FIELDS)} FROM {source} WHERE {where} "
                           "ORDER BY time ASC", epoch="ms")
    else:
        bucket_ms = max(1, math.ceil((until - since) / PREFETCH_LIMIT))
        selects = ", ".join(f"last({quote_ident(f)}) AS {quote_ident(f)}" for f in FIELDS)
        rows = client.rows(f"SELECT {selects} FROM {source} WHERE {where} GROUP BY time({bucket_ms}ms) fill(none) "
                           "ORDER BY time ASC", epoch="ms")
    points = _rows_to_points(list(rows))
    reduced = downsample(points, max_points)
    return History(vehicle, since, until, count, reduced, len(reduced) < count)
