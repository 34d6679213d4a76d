"""A bench run and the stack's pipeline: the plan header, --pipeline's refusal, the archive count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from ecokit.bench.pipeline import SETTLE_S, measure_archive, pipeline_view, require_archive
from ecokit.config.model import StackConfig
from ecokit.errors import UsageError

BENCH_TOPIC = "bench/1a2b3c4d/p00000"


def _config(**sections: Any) -> StackConfig:
    return StackConfig.model_validate(sections)


def test_default_stack_does_not_archive_bench_topics() -> None:
    view = pipeline_view(_config(), BENCH_TOPIC)
    assert view.header(1000) == ("pipeline: bench topics are not archived (rules.archive.exclude bench/#): "
                                 "the broker alone is measured")
    assert view.summary() == {"measured": False, "engine": "the ecokit bridge", "rules": [],
                              "excluded_by": {"archive": "bench/#"}}
    devices = pipeline_view(_config(), "fleet/veh-0001/bench/1a2b3c4d")
    assert "rules.archive.exclude fleet/+/bench/#" in devices.header(1)


def test_header_names_the_rules_that_take_bench_traffic_and_their_load() -> None:
    view = pipeline_view(_config(rules={"archive": {"exclude": []}}), BENCH_TOPIC)
    assert view.archived
    header = view.header(30_000)
    assert header.startswith("pipeline: rules archive (#) take the bench messages: the broker also delivers each "
                             "message to the ecokit bridge, which writes it to InfluxDB (up to 30,000 points")
    emqx = pipeline_view(_config(broker={"kind": "emqx"}, rules={"archive": {"exclude": []}}), BENCH_TOPIC)
    assert "rule SQL and one HTTP write to InfluxDB" in emqx.header(1)


def test_no_bridge_means_nothing_is_stored() -> None:
    view = pipeline_view(_config(bridge={"enabled": False}, rules={"archive": {"exclude": []}}), BENCH_TOPIC)
    assert not view.archived
    assert view.header(1) == ("pipeline: the stack stores nothing (bridge.enabled: false): "
                              "the broker alone is measured")
    with pytest.raises(UsageError, match=r"bridge\.enabled: false"):
        require_archive(view)


def test_pipeline_refuses_a_run_the_archive_would_skip_and_says_how_to_restore_it() -> None:
    with pytest.raises(UsageError) as info:
        require_archive(pipeline_view(_config(), BENCH_TOPIC))
    assert "rules.archive.exclude has bench/#" in str(info.value)
    assert info.value.hint is not None
    assert "rules: {archive: {exclude: []}}" in info.value.hint
    narrowed = pipeline_view(_config(rules={"archive": {"topic": "fleet/#"}}), BENCH_TOPIC)
    with pytest.raises(UsageError, match=r"rule archive \(fleet/#\) does not match it"):
        require_archive(narrowed)
    assert narrowed.header(1) == "pipeline: no rule takes the bench topics: the broker alone is measured"
    require_archive(pipeline_view(_config(rules={"archive": {"exclude": []}}), BENCH_TOPIC))


class _Archive:
    """Counts that grow as the pipeline drains (one per call), and the last point's time."""

    def __init__(self, counts: Sequence[int], last_ns: int) -> None:
        self.counts = list(counts)
        self.last_ns = last_ns
        self.filters: list[list[str]] = []

    def count(self, start_ns: int, end_ns: int, filters: Sequence[str] = ()) -> int:
        self.filters.append(list(filters))
        return self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]

    def last_time(self, start_ns: int, end_ns: int, filters: Sequence[str] = ()) -> int | None:
        return self.last_ns


class _Clock:
    def __init__(self, start_ns: int) -> None:
        self.now = start_ns

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


def test_archive_count_waits_until_every_sent_message_is_stored() -> None:
    clock = _Clock(10_000_000_000)
    archive = _Archive([0, 40, 90, 100], last_ns=10_000_000_000 + 5_000_000)
    got = measure_archive(archive, "bench/r/+", sent=100, start_ns=0, last_send_ns=10_000_000_000,  # type: ignore[arg-type]
                          wait_s=30, clock=clock, sleep=clock.sleep)
    assert (got.stored, got.complete) == (100, True)
    assert archive.filters == [["bench/r/+"]] * 4
    assert got.stored_lag_ms == pytest.approx(300.0)  # seen complete at the fourth count, 0.1 s apart
    assert got.stored_lag_upper_bound is False
    assert got.receive_lag_ms == pytest.approx(5.0)
    assert got.to_dict()["missing"] == 0


def test_archive_count_stops_when_the_pipeline_stops_storing() -> None:
    clock = _Clock(0)
    got = measure_archive(_Archive([0, 70], last_ns=1), "bench/r/+", sent=100, start_ns=0,  # type: ignore[arg-type]
                          last_send_ns=0, wait_s=30, clock=clock, sleep=clock.sleep)
    assert (got.stored, got.complete) == (70, False)
    assert got.waited_s == pytest.approx(SETTLE_S + 0.1, abs=0.01)
    assert got.to_dict()["missing"] == 30
    at_once = measure_archive(_Archive([5], last_ns=1), "bench/r/+", sent=5, start_ns=0,  # type: ignore[arg-type]
                              last_send_ns=0, wait_s=2, clock=clock, sleep=clock.sleep)
    assert (at_once.complete, at_once.stored_lag_upper_bound) == (True, True)
    nothing = measure_archive(_Archive([0], last_ns=0), "bench/r/+", sent=5, start_ns=0,  # type: ignore[arg-type]
                              last_send_ns=0, wait_s=2, clock=clock, sleep=clock.sleep)
    assert (nothing.stored, nothing.stored_lag_ms, nothing.receive_lag_ms) == (0, None, None)
    assert nothing.waited_s == pytest.approx(2.0, abs=0.01)
