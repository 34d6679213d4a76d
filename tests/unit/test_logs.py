"""Every service's log at once (ecokit.logs): merged by the time each line carries."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from ecokit.errors import ServiceError
from ecokit.logs import follow_all, line_time, merge_by_time


def test_times_are_read_from_the_formats_the_services_write() -> None:
    assert line_time("2025-01-31T12:00:01: New client connected") is not None  # Mosquitto (local time)
    assert line_time('ts=2025-01-31T12:00:00.500000Z lvl=info msg="Listening"') == 1738324800.5  # influxd
    assert line_time(json.dumps({"ts": "2025-01-31T12:00:00.250Z", "msg": "bridge started"})) == 1738324800.25
    assert line_time(json.dumps({"ts": 1738324800250, "msg": "epoch ms"})) == 1738324800.25
    assert line_time("=== ecokit start ===") is None


def test_lines_interleave_by_time_and_keep_each_logs_order() -> None:
    r2 = json.dumps({"ts": "2025-01-31T12:00:02.000Z", "msg": "r2"})
    r4 = json.dumps({"ts": "2025-01-31T12:00:04.000Z", "msg": "r4"})
    merged = merge_by_time({
        "broker": ["2025-01-31T12:00:01Z: b1", "a continuation without a time", "2025-01-31T12:00:03Z: b3"],
        "bridge": [r2, r4],
    })
    assert merged == [("broker", "2025-01-31T12:00:01Z: b1"), ("broker", "a continuation without a time"),
                      ("bridge", r2), ("broker", "2025-01-31T12:00:03Z: b3"), ("bridge", r4)]


def test_following_prints_lines_as_any_service_writes_them() -> None:
    def slow(lines: list[str], delay: float) -> Iterator[str]:
        for line in lines:
            time.sleep(delay)
            yield line

    def broken() -> Iterator[str]:
        raise ServiceError("shadow", "has no log yet")
        yield ""  # pragma: no cover

    got = list(follow_all({"a": slow(["a1", "a2"], 0.05), "b": slow(["b1"], 0.01), "shadow": broken()}))
    assert sorted(got) == [("a", "a1"), ("a", "a2"), ("b", "b1"),
                           ("shadow", "(log unavailable: shadow: has no log yet)")]
    assert got.index(("b", "b1")) < got.index(("a", "a2"))
