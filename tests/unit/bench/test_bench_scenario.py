"""Bench scenarios: the model, the built-ins, overrides, the send schedule and topics (no I/O)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecokit.bench.scenario import (
    BUILTIN,
    DEVICE_TOPIC,
    Overrides,
    PhasePlan,
    apply_overrides,
    busiest,
    compile_phases,
    due_offset,
    expand_topic,
    find_scenario,
    max_qos,
    messages_of,
    planned_total,
    scenario_names,
    stagger,
    subscription_filter,
    validate_scenario,
)
from ecokit.config.bench import BenchConfig, ScenarioSpec, parse_duration, topic_pattern_problem
from ecokit.errors import ConfigError, UsageError
from ecokit.stack import Stack
from ecokit.testing import write_project


def spec(**data: Any) -> ScenarioSpec:
    data.setdefault("phases", [{"name": "only", "duration": "10s", "total_rate": 100}])
    return ScenarioSpec.model_validate(data)


def plan(rate_start: float, rate_end: float, duration: float, publishers: int = 1) -> PhasePlan:
    return PhasePlan(0, "p", 0.0, duration, publishers, rate_start, rate_end, 1, 64)


# -- the model -------------------------------------------------------------------------------


def test_builtins_are_steady_ramp_spike_soak_and_valid() -> None:
    assert list(BUILTIN) == ["steady", "ramp", "spike", "soak", "connect-ramp", "join-spike", "churn", "fleet-ramp"]
    for name, scenario in BUILTIN.items():
        phases = compile_phases(scenario)
        assert phases, name
        assert scenario.description


def test_builtin_shapes() -> None:
    steady = compile_phases(BUILTIN["steady"])
    assert [(p.total_rate_start, p.total_rate_end, p.duration) for p in steady] == [(1000, 1000, 60)]
    assert planned_total(steady) == 60_000
    ramp = compile_phases(BUILTIN["ramp"])[0]
    assert (ramp.total_rate_start, ramp.total_rate_end) == (100, 10_000)
    spike = compile_phases(BUILTIN["spike"])
    assert [p.name for p in spike] == ["baseline", "spike", "recovery"]
    assert spike[1].total_rate_start == 10 * spike[0].total_rate_start
    assert [p.start for p in spike] == [0, 20, 30]
    soak = compile_phases(BUILTIN["soak"])
    assert sum(p.duration for p in soak) == 1800
    assert len({p.total_rate_start for p in soak}) == 1


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("10s", 10), ("5m", 300), ("1h", 3600),
                                               ("2.5", 2.5), (3, 3.0), (" 1.5 s ", 1.5)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10x", "-1s", "0s", "s", "1 minute"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("data", "message"), [
    ({"phases": []}, "at least 1"),
    ({"phases": [{"name": "a", "duration": "1s"}]}, "exactly one of rate"),
    ({"phases": [{"name": "a", "duration": "1s", "rate": 1, "total_rate": 5}]}, "exactly one of rate"),
    ({"phases": [{"name": "a", "duration": "1s", "rate": 1}, {"name": "a", "duration": "1s", "rate": 1}]},
     "used twice"),
    ({"phases": [{"name": "Peak", "duration": "1s", "rate": 1}]}, "lowercase"),
    ({"phases": [{"name": "a", "duration": "soon", "rate": 1}]}, "not a duration"),
    ({"phases": [{"name": "a", "duration": "1s", "rate": -1}]}, "greater than or equal"),
    ({"topic": "bench/+/x"}, "wildcards"),
    ({"topic": "bench/{vehicle}"}, "unknown placeholder"),
    ({"topic": "$SYS/bench"}, "reserved"),
    ({"topic": "bench/{run"}, "unbalanced"),
    ({"payload_size": 10}, "below the 24 bytes"),
    ({"payload": "json", "payload_size": 64}, "below the 104 bytes"),
    ({"fanout": "shared", "subscribers": 0}, "shared needs at least one subscriber"),
    ({"slo": {"p99": 5}}, "unknown key 'p99'"),
    ({"slo": {"nope.p99_ms": 5}}, "names no phase"),
    ({"phases": [{"name": "a", "duration": "1s", "rate": 1, "slo": {"a.p99_ms": 5}}]}, "no phase prefix"),
    ({"qos": 3}, "Input should be 0, 1 or 2"),
    ({"color": "red"}, "Extra inputs are not permitted"),
])
def test_invalid_scenarios_say_what_is_wrong(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_scenario({"phases": [{"name": "only", "duration": "1s", "rate": 1}], **data}, name="test")


def test_a_bad_bench_section_in_ecokit_yaml_names_the_file_and_key(tmp_path: Path) -> None:
    config = write_project(tmp_path / "p", extra={"bench": {"scenarios": {"burst": {
        "phases": [{"name": "a", "duration": "5s", "total_rate": 100, "slo": {"p99ms": 3}}]}}}})
    with pytest.raises(ConfigError) as info:
        Stack.load(config, env={})
    text = str(info.value)
    assert "ecokit.yaml" in text
    assert "bench.scenarios.burst.phases.0.slo" in text
    assert "p99ms" in text


def test_custom_scenarios_load_from_ecokit_yaml_and_win_over_builtins(tmp_path: Path) -> None:
    config = write_project(tmp_path / "p", extra={"bench": {"scenarios": {
        "steady": {"publishers": 3, "phases": [{"name": "s", "duration": "2s", "rate": 5}]},
        "rush-hour": {"phases": [{"name": "morning", "duration": "1m", "total_rate": 10},
                                 {"name": "peak", "duration": "30s", "total_rate": 10, "ramp_to": 50,
                                  "qos": 0}]}}}})
    bench = Stack.load(config, env={}).config.bench
    assert scenario_names(bench) == ["steady", "ramp", "spike", "soak", "connect-ramp", "join-spike", "churn",
                                     "fleet-ramp", "rush-hour"]
    assert find_scenario("steady", bench).publishers == 3
    rush = compile_phases(find_scenario("rush-hour", bench))
    assert [(p.name, p.start, p.qos) for p in rush] == [("morning", 0, 1), ("peak", 60, 0)]
    assert find_scenario("ramp", bench) is BUILTIN["ramp"]


def test_an_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="soak, connect-ramp, join-spike, churn, fleet-ramp, mine") as info:
        find_scenario("nope", BenchConfig.model_validate(
            {"scenarios": {"mine": {"phases": [{"name": "a", "duration": 1, "rate": 1}]}}}))
    assert "bench.scenarios" in (info.value.hint or "")


# -- overrides --------------------------------------------------------------------------------


def test_duration_scales_every_phase_proportionally() -> None:
    spike = compile_phases(apply_overrides(BUILTIN["spike"], Overrides(duration=5)))
    assert [p.duration for p in spike] == pytest.approx([2, 1, 2])
    assert [p.start for p in spike] == pytest.approx([0, 2, 3])


def test_rate_sets_the_peak_total_rate() -> None:
    spike = compile_phases(apply_overrides(BUILTIN["spike"], Overrides(rate=2000)))
    assert [p.total_rate_start for p in spike] == pytest.approx([200, 2000, 200])
    ramp = compile_phases(apply_overrides(BUILTIN["ramp"], Overrides(rate=500)))[0]
    assert (ramp.total_rate_start, ramp.total_rate_end) == pytest.approx((5, 500))


def test_rate_scales_per_publisher_rates_after_publishers() -> None:
    s = spec(publishers=4, phases=[{"name": "a", "duration": 1, "rate": 10},
                                   {"name": "b", "duration": 1, "rate": 20, "publishers": 2}])
    out = compile_phases(apply_overrides(s, Overrides(publishers=8, rate=400)))
    assert [p.publishers for p in out] == [8, 4]
    # peak total after the publisher change: a = 8 x 10 = 80, b = 4 x 20 = 80 -> x5
    assert [p.total_rate_start for p in out] == pytest.approx([400, 400])


def test_publishers_scale_with_the_busiest_phase() -> None:
    s = spec(publishers=10, phases=[{"name": "a", "duration": 1, "total_rate": 10},
                                    {"name": "b", "duration": 1, "total_rate": 10, "publishers": 40}])
    out = compile_phases(apply_overrides(s, Overrides(publishers=20)))
    assert [p.publishers for p in out] == [5, 20]
    assert busiest(out) == 20
    # a total rate stays the total rate
    assert [p.total_rate_start for p in out] == pytest.approx([10, 10])


def test_qos_and_payload_size_override_every_phase() -> None:
    s = spec(phases=[{"name": "a", "duration": 1, "rate": 1, "qos": 0, "payload_size": 500},
                     {"name": "b", "duration": 1, "rate": 1}])
    out = compile_phases(apply_overrides(s, Overrides(qos=2, payload_size=64)))
    assert [(p.qos, p.payload_size) for p in out] == [(2, 64), (2, 64)]
    assert max_qos(out) == 2


def test_an_override_that_breaks_the_scenario_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="payload_size 64 is below the 104 bytes"):
        apply_overrides(BUILTIN["steady"], Overrides(payload="json", payload_size=64))
    with pytest.raises(UsageError, match="wildcards"):
        apply_overrides(BUILTIN["steady"], Overrides(topic="a/#"))
    with pytest.raises(UsageError, match="sends nothing"):
        apply_overrides(spec(phases=[{"name": "a", "duration": 1, "rate": 0}]), Overrides(rate=10))


def test_no_overrides_returns_the_same_scenario() -> None:
    assert apply_overrides(BUILTIN["soak"], Overrides()) is BUILTIN["soak"]


# -- the send schedule ----------------------------------------------------------------------


def test_constant_rate_is_evenly_spaced() -> None:
    assert [due_offset(4, 4, 10, m) for m in (0, 1, 2, 3)] == [0, 0.25, 0.5, 0.75]
    assert due_offset(4, 4, 10, 40) is None  # t = 10: outside the phase
    assert due_offset(4, 4, 10, 39.9) == pytest.approx(9.975)


RATES = st.one_of(st.just(0.0), st.floats(1e-3, 500))  # msg/s; nobody plans one message per 10^166 s


@given(a=RATES, b=RATES, duration=st.floats(0.1, 100), fraction=st.floats(0, 0.999))
def test_a_ramps_due_time_is_where_its_integral_reaches_m(a: float, b: float, duration: float,
                                                          fraction: float) -> None:
    total = (a + b) / 2 * duration
    m = total * fraction
    t = due_offset(a, b, duration, m)
    if a == 0 and b == 0:
        assert t is None  # a pause: nothing is ever due
        return
    if m == 0:
        assert t == 0
        return
    assert t is not None
    integral = a * t + (b - a) * t * t / (2 * duration)
    assert integral == pytest.approx(m, rel=1e-6, abs=1e-6)
    assert 0 <= t < duration


def test_due_times_increase_along_a_ramp_down() -> None:
    times = [due_offset(100, 0, 2, m) for m in range(0, 100)]
    assert all(t is not None for t in times)
    assert times == sorted(times)  # type: ignore[type-var]
    assert due_offset(100, 0, 2, 100) is None  # all 100 messages fit strictly before the end


def test_a_ramp_from_zero_starts_slowly() -> None:
    t1 = due_offset(0, 100, 10, 1)
    assert t1 == pytest.approx(math.sqrt(2 * 1 * 10 / 100))


def test_messages_of_matches_counting_due_times() -> None:
    for a, b, d, n in [(10, 10, 1, 3), (1, 30, 2, 4), (30, 1, 2, 4), (0.3, 0.3, 5, 10), (0, 0, 5, 2), (7, 0, 3, 1)]:
        phase = plan(a, b, d, n)
        for i in range(n):
            counted = 0
            while due_offset(a, b, d, counted + stagger(i, n)) is not None:
                counted += 1
            assert messages_of(phase, i) == counted, (a, b, d, n, i)


@settings(max_examples=200)
@given(rate=st.floats(0.01, 200), end=st.floats(0, 200), duration=st.floats(0.5, 20), publishers=st.integers(1, 50))
def test_a_phase_sends_its_integral_within_one_message(rate: float, end: float, duration: float,
                                                       publishers: int) -> None:
    phase = plan(rate / publishers, end / publishers, duration, publishers)
    expected = (rate + end) / 2 * duration
    assert abs(phase.planned() - expected) <= 1


def test_publishers_beyond_a_phases_count_send_nothing() -> None:
    assert messages_of(plan(5, 5, 1, 2), 2) == 0
    assert messages_of(plan(5, 5, 1, 2), 1) == 5


# -- topics ---------------------------------------------------------------------------------


def test_topics_expand_per_publisher() -> None:
    assert expand_topic("bench/{run}/{publisher}", run="ab12cd34", publisher=7, device="x") == "bench/ab12cd34/p00007"
    assert expand_topic(DEVICE_TOPIC, run="r", publisher=0, device="vehicle-0001") == "fleet/vehicle-0001/bench/r"
    assert expand_topic("all/{run}", run="r", publisher=3, device="d") == "all/r"


@pytest.mark.parametrize(("pattern", "wanted"), [
    ("bench/{run}/{publisher}", "bench/ab/+"),
    ("fleet/{device}/bench/{run}", "fleet/+/bench/ab"),
    ("x/p{publisher}-{run}/y", "x/+/y"),
    ("one/{run}", "one/ab"),
    ("static", "static"),
])
def test_the_subscription_filter_matches_every_publisher(pattern: str, wanted: str) -> None:
    assert subscription_filter(pattern, run="ab") == wanted


def test_topic_pattern_problems() -> None:
    assert topic_pattern_problem("bench/{run}/{publisher}") is None
    assert topic_pattern_problem("") == "the topic pattern is empty"
    assert "NUL" in (topic_pattern_problem("a\x00b") or "")
