"""Daily fleet analytics: one declaration rendered to InfluxQL continuous queries (1.x) and
a Flux task (2.x). The statements run against a real influxd in
tests/integration/test_geofences_alerts.py; here their shape is pinned."""

from __future__ import annotations

import re

import pytest

from ecokit.analytics import CQ_PREFIX, TASK_NAME, daily_rollup
from ecokit.config.analytics import DailyAnalyticsConfig

ROLLUP = daily_rollup(DailyAnalyticsConfig())


def test_three_continuous_queries_resample_two_days_into_one_row_per_vehicle_and_day() -> None:
    cqs = ROLLUP.continuous_queries("fleet")
    assert list(cqs) == [f"{CQ_PREFIX}stats", f"{CQ_PREFIX}distance", f"{CQ_PREFIX}moving"]
    for statement in cqs.values():
        assert statement.startswith(f'CREATE CONTINUOUS QUERY "{CQ_PREFIX}')
        assert ' ON "fleet" RESAMPLE EVERY 15m FOR 2d BEGIN SELECT ' in statement
        assert 'INTO "fleet"."autogen"."fleet_daily" FROM ' in statement
        assert statement.endswith('GROUP BY time(1d), "vehicle" END')
    assert ('SELECT spread("odometer") AS "odometer_km", mean("speed") AS "avg_speed", max("speed") AS '
            '"max_speed", count("speed") AS "fixes" INTO') in cqs[f"{CQ_PREFIX}stats"]


def test_numbers_survive_influxdb_reprinting_the_stored_query() -> None:
    # 1.x stores a CQ as its re-printed text with three decimals: 0.0174533 would become 0.017.
    for statement in ROLLUP.continuous_queries("fleet").values():
        assert not re.findall(r"\d+\.\d{4,}", statement), statement
    assert "time(1m)" in ROLLUP.continuous_queries("fleet")[f"{CQ_PREFIX}moving"]  # not time(60s)
    odd = daily_rollup(DailyAnalyticsConfig(every="90m", moving_speed=2.25))
    assert "RESAMPLE EVERY 90m" in odd.continuous_queries("fleet")[f"{CQ_PREFIX}stats"]
    assert daily_rollup(DailyAnalyticsConfig(every="120m")).every_s == 7200
    assert "RESAMPLE EVERY 2h" in daily_rollup(DailyAnalyticsConfig(every="120m")).continuous_queries("f")[
        f"{CQ_PREFIX}stats"]
    assert '"top_speed" > 2.250' in odd.continuous_queries("fleet")[f"{CQ_PREFIX}moving"]


def test_a_window_bounds_every_level_of_every_statement() -> None:
    statements = ROLLUP.influxql("fleet", (1_000, 2_000))
    for name, statement in statements.items():
        assert "CONTINUOUS" not in statement
        levels = statement.count("SELECT")
        assert statement.count("time >= 1000 AND time < 2000") == levels, name


def test_the_flux_task_computes_the_same_fields_the_same_way() -> None:
    task = ROLLUP.task("fleet", "ecokit")
    assert task.startswith(f'option task = {{name: "{TASK_NAME}", every: 15m}}\n')
    assert '|> range(start: date.truncate(t: -1d, unit: 1d), stop: now())' in task
    for name in ROLLUP.fields:
        assert f'into(field: "{name}")' in task
    assert task.count('timeSrc: "_start"') == 2  # days and minutes stamped at their start, as InfluxQL does
    assert "/ 57.296" in task
    assert "* 111.195" in task
    assert "r._value > 2.0" in task
    assert "r._value * 60" in task
    assert 'to(bucket: "fleet", org: "ecokit")' in task


def test_without_an_odometer_there_is_no_odometer_distance() -> None:
    rollup = daily_rollup(DailyAnalyticsConfig(measurement="daily"), source="tele", odometer=False)
    assert "odometer_km" not in rollup.fields
    assert "odometer" not in " ".join(rollup.continuous_queries("fleet").values())
    assert "odometer" not in rollup.flux("fleet", "ecokit")
    assert 'FROM "fleet"."autogen"."tele"' in rollup.continuous_queries("fleet")[f"{CQ_PREFIX}stats"]


def test_flux_strings_are_escaped() -> None:
    assert 'from(bucket: "we\\"ird")' in ROLLUP.flux('we"ird', "o")


@pytest.mark.parametrize("bad", ["15", "0m", "1d", "1.5h", "25h"])
def test_every_is_a_whole_number_of_seconds_minutes_or_hours(bad: str) -> None:
    with pytest.raises(ValueError, match="every"):
        DailyAnalyticsConfig(every=bad)
