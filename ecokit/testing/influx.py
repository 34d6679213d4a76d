"""Ask a stack's InfluxDB what landed, and wait for it with a deadline."""

from __future__ import annotations

import time
from typing import Any

from ecokit.errors import StoreError
from ecokit.replay import parse_time
from ecokit.store.influx import InfluxV1, quote_ident, quote_string


class InfluxHelper:
    """InfluxQL over the v1 API (every InfluxDB version serves it), as the stack's reader."""

    def __init__(self, client: InfluxV1) -> None:
        self.client = client

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """Rows of every series (tags included); times in nanoseconds since the epoch."""
        return list(self.client.rows(influxql))

    def points(self, measurement: str = "telemetry", *, since: str = "15m", limit: int = 1000,
               **tags: str) -> list[dict[str, Any]]:
        """The newest points of ``measurement`` since ``since`` (a duration or an ISO time), oldest
        first, filtered by tag values (``vehicle="vehicle-0001"``)."""
        where = [f"time >= {parse_time(since)}"] + [f"{quote_ident(k)} = {quote_string(v)}" for k, v in tags.items()]
        rows = self.query(f"SELECT * FROM {quote_ident(measurement)} WHERE {' AND '.join(where)} "
                          f"ORDER BY time DESC LIMIT {int(limit)}")
        return rows[::-1]

    def wait_for(self, measurement: str = "telemetry", *, count: int = 1, timeout: float = 15.0,
                 since: str = "15m", interval: float = 0.2, **tags: str) -> list[dict[str, Any]]:
        """Poll until ``count`` points match; AssertionError naming what was there at the deadline."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        last_error: StoreError | None = None
        while True:
            try:
                rows = self.points(measurement, since=since, limit=max(count, 1000), **tags)
                last_error = None
            except StoreError as exc:  # the bridge may not have created the measurement yet
                last_error = exc
            if len(rows) >= count:
                return rows
            if time.monotonic() >= deadline:
                where = ", ".join(f"{k}={v}" for k, v in tags.items()) or "any tags"
                raise AssertionError(f"expected {count} point(s) in {measurement!r} ({where}) within {timeout}s, "
                                     f"found {len(rows)}" + (f"; last error: {last_error}" if last_error else ""))
            time.sleep(interval)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> InfluxHelper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
