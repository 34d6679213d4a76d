"""Replay's pure parts: times, topic filters as InfluxQL regexes, pacing."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from ecokit.acl import topic_matches
from ecokit.errors import UsageError
from ecokit.replay import filter_regex, parse_time

NOW = dt.datetime(2025, 1, 31, 12, 0, 0, tzinfo=dt.UTC)
NOW_NS = int(NOW.timestamp()) * 1_000_000_000


@pytest.mark.parametrize(("text", "ns"), [
    ("now", NOW_NS), ("1h", NOW_NS - 3600 * 10**9), ("15m", NOW_NS - 900 * 10**9), ("90s", NOW_NS - 90 * 10**9),
    ("2d", NOW_NS - 2 * 86400 * 10**9), ("500ms", NOW_NS - 500 * 10**6),
    ("2025-01-31T11:00:00Z", NOW_NS - 3600 * 10**9), ("2025-01-31T11:00:00", NOW_NS - 3600 * 10**9),
    ("2025-01-31T13:00:00+02:00", NOW_NS - 3600 * 10**9), ("2025-01-31T11:59:59.250Z", NOW_NS - 750 * 10**6),
])
def test_times_are_durations_ago_or_iso(text: str, ns: int) -> None:
    assert parse_time(text, now=NOW) == ns


@pytest.mark.parametrize("text", ["yesterday", "1y", "-5m", ""])
def test_bad_times_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="duration"):
        parse_time(text, now=NOW)


TOPICS = ["fleet/a/telemetry", "fleet/a/status", "fleet", "fleet/", "fleet//telemetry", "lab/x y,z=1/t",
          "a.b/c", "a+b/c", "ab/c", "other/fleet/a/telemetry", "fleet/a/telemetry/extra"]


@pytest.mark.parametrize("filters", [["fleet/+/telemetry"], ["fleet/#"], ["+/+/telemetry", "lab/#"], ["a.b/c"],
                                     ["fleet/+"], ["lab/x y,z=1/+"]])
def test_topic_filters_become_equivalent_regexes(filters: list[str]) -> None:
    regex = filter_regex(filters)
    assert regex is not None
    assert "/" not in regex.replace("\\/", "")
    python = re.compile(regex.replace("\\/", "/"))
    for topic in TOPICS:
        assert bool(python.match(topic)) == any(topic_matches(f, topic) for f in filters), (filters, topic)


def test_hash_alone_needs_no_regex() -> None:
    assert filter_regex([]) is None
    assert filter_regex(["#"]) is None


def test_bad_filters_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="not a topic filter"):
        filter_regex(["a/#/b"])
