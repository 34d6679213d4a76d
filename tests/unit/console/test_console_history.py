"""History downsampling (largest-triangle-three-buckets) and the time grammar of `since`."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecokit.console.history import downsample, parse_instant

NOW = 1_733_320_000_000


def track(n: int) -> list[dict[str, float]]:
    return [{"ts": 1000 * i, "lat": 48.0 + i / 1e4, "lng": 2.0, "speed": 30 + 20 * math.sin(i / 10), "fuel": 50.0}
            for i in range(n)]


def test_few_points_come_back_unchanged() -> None:
    points = track(10)
    assert downsample(points, 10) == points
    assert downsample(points, 500) == points


def test_many_points_are_reduced_to_max_points_keeping_first_last_and_order() -> None:
    points = track(3600)
    out = downsample(points, 500)
    assert len(out) == 500
    assert out[0] is points[0]
    assert out[-1] is points[-1]
    assert [p["ts"] for p in out] == sorted(p["ts"] for p in out)
    assert all(p in points for p in out[:50])  # real fixes, not averages


def test_a_speed_peak_survives() -> None:
    points = [{"ts": 1000 * i, "lat": 0.0, "lng": 0.0, "speed": 10.0, "fuel": 1.0} for i in range(5000)]
    points[2345]["speed"] = 180.0
    out = downsample(points, 50)
    assert max(p["speed"] for p in out) == 180.0


@given(st.integers(min_value=0, max_value=400), st.integers(min_value=2, max_value=120))
def test_never_more_than_max_points(n: int, max_points: int) -> None:
    out = downsample(track(n), max_points)
    assert len(out) == min(n, max_points)


def test_max_points_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        downsample(track(10), 1)


@pytest.mark.parametrize(("text", "expected"), [
    ("1h", NOW - 3_600_000),
    ("15m", NOW - 900_000),
    ("90s", NOW - 90_000),
    ("2d", NOW - 2 * 86_400_000),
    ("now", NOW),
    ("1733310000000", 1_733_310_000_000),
    ("2024-12-04T12:00:00Z", int(dt.datetime(2024, 12, 4, 12, tzinfo=dt.UTC).timestamp() * 1000)),
    ("2024-12-04T12:00:00", int(dt.datetime(2024, 12, 4, 12, tzinfo=dt.UTC).timestamp() * 1000)),
    ("2024-12-04T13:00:00+01:00", int(dt.datetime(2024, 12, 4, 12, tzinfo=dt.UTC).timestamp() * 1000)),
])
def test_since_accepts_durations_epoch_ms_and_iso(text: str, expected: int) -> None:
    assert parse_instant(text, now_ms=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1 fortnight", "12", ""])
def test_since_refuses_anything_else_saying_what_it_expects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_instant(text, now_ms=NOW)
