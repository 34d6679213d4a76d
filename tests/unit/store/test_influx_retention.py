"""Retention and shard durations as InfluxDB 1.x takes them (setup_v1)."""

from __future__ import annotations

import pytest

from ecokit.store.influx import shard_duration


@pytest.mark.parametrize(("retention", "shard"), [
    ("1h", "1h"), ("47h", "1h"), ("2d", "1d"), ("30d", "1d"), ("25w", "1d"), ("179d", "1d"), ("180d", "7d"),
    ("52w", "7d"), ("3600s", "1h"), ("90m", "1h"),
])
def test_shard_duration_never_exceeds_the_retention(retention: str, shard: str) -> None:
    # influxd refuses "retention policy duration must be greater than the shard duration"
    assert shard_duration(retention) == shard
