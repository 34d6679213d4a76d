"""Connection-shaped phases (pure): ramps of clients, joins, leaves, churn, connects at a rate,
and the messages publishers send only while they are planned online."""

from __future__ import annotations

from typing import Any

import pytest

from ecokit.bench.scenario import (
    BUILTIN,
    CONNECT,
    DISCONNECT,
    RECONNECT,
    Overrides,
    apply_overrides,
    busiest,
    compile_connections,
    compile_phases,
    due_offset,
    messages_of,
    stagger,
    validate_scenario,
)
from ecokit.config.slo import SloError, parse_slo
from ecokit.errors import ConfigError


def spec(phases: list[dict[str, Any]], **extra: Any) -> Any:
    return validate_scenario({"publishers": 10, "phases": phases, **extra})


def counted(phase: Any, publisher: int) -> int:
    """Messages of one publisher in one phase by walking the due times (the slow, obvious way)."""
    window = phase.window_of(publisher)
    if publisher >= phase.publishers or window is None:
        return 0
    n, k = 0, 0
    while True:
        t = due_offset(phase.rate_start, phase.rate_end, phase.duration, k + stagger(publisher, phase.publishers))
        if t is None:
            return n
        if window[0] <= t < window[1]:
            n += 1
        k += 1


def test_a_ramp_of_clients_connects_them_evenly_and_they_send_only_once_online() -> None:
    scenario = spec([{"name": "ramp", "duration": "10s", "ramp_clients": 100, "rate": 2},
                     {"name": "hold", "duration": "5s", "rate": 2}], publishers=100)
    plan = compile_connections(scenario)
    assert plan.at_start == 0
    assert plan.clients == 100
    assert [e.kind for e in plan.events] == [CONNECT] * 100
    assert [e.publisher for e in plan.events] == list(range(100))
    assert [round(e.t, 6) for e in plan.events[:3]] == [0.0, 0.1, 0.2]
    phases = compile_phases(scenario)
    assert busiest(phases) == 100
    ramp, hold = phases
    # Publisher 50 comes online at 5 s: half the ramp at 2 msg/s.
    assert messages_of(ramp, 50) == counted(ramp, 50) == 10
    assert messages_of(hold, 50) == 10
    assert ramp.planned() == sum(counted(ramp, i) for i in range(100))
    assert 900 <= ramp.planned() <= 1100  # the area under the ramp: 100 clients x 2/s x 10 s / 2


def test_a_join_spike_adds_new_publishers_within_the_window() -> None:
    scenario = BUILTIN["join-spike"]
    plan = compile_connections(scenario)
    assert plan.at_start == 200
    assert plan.clients == 2200
    joins = [e for e in plan.events if e.phase == 1]
    assert len(joins) == 2000
    assert {e.publisher for e in joins} == set(range(200, 2200))
    assert min(e.t for e in joins) >= 10.0
    assert max(e.t for e in joins) < 40.0
    assert plan.connects_in(1) == 2000


def test_leave_disconnects_the_last_connected_for_good() -> None:
    scenario = spec([{"name": "a", "duration": "4s", "rate": 1},
                     {"name": "b", "duration": "4s", "rate": 1, "leave": 4}])
    plan = compile_connections(scenario)
    assert plan.at_start == 10
    assert [(e.kind, e.publisher) for e in plan.events] == [(DISCONNECT, 9), (DISCONNECT, 8), (DISCONNECT, 7),
                                                            (DISCONNECT, 6)]
    b = compile_phases(scenario)[1]
    for i in range(10):
        assert messages_of(b, i) == counted(b, i)
    assert messages_of(b, 0) == 4
    assert messages_of(b, 9) < 4


def test_churn_reconnects_a_fraction_per_second_round_robin() -> None:
    scenario = BUILTIN["churn"]
    plan = compile_connections(scenario)
    churn = [e for e in plan.events if e.phase == 1]
    assert len(churn) == int(0.05 * 500 * 30)
    assert {e.kind for e in churn} == {RECONNECT}
    assert len({e.publisher for e in churn}) == 500  # everyone's turn comes
    # Churn does not change who is planned online, so no message is planned away.
    phases = compile_phases(scenario)
    assert phases[1].planned() == 500 * 30


def test_connect_rate_connects_until_the_phase_has_its_publishers() -> None:
    plan = compile_connections(BUILTIN["connect-ramp"])
    assert plan.at_start == 0
    assert len(plan.events) == 1000
    assert plan.events[-1].t == pytest.approx(9.99)
    short = compile_connections(spec([{"name": "a", "duration": "2s", "connect_rate": 3}]))
    assert len(short.events) == 6  # the phase ends before all 10 could connect


def test_scaling_a_connection_scenario_scales_clients_and_time() -> None:
    scaled = apply_overrides(BUILTIN["fleet-ramp"], Overrides(publishers=50, duration=12))
    plan = compile_connections(scaled)
    assert plan.clients == 50
    assert max(e.t for e in plan.events) < 10.0
    joined = apply_overrides(BUILTIN["join-spike"], Overrides(publishers=220, duration=5))
    plan = compile_connections(joined)
    assert (plan.at_start, plan.clients) == (20, 220)
    assert joined.phases[1].join_seconds == pytest.approx(3.0)


@pytest.mark.parametrize(("phase", "message"), [
    ({"name": "a", "duration": "1s", "rate": 1, "join": 5, "leave": 2}, "join and leave are given"),
    ({"name": "a", "duration": "1s", "rate": 1, "join_within": "1s"}, "join_within goes with join"),
    ({"name": "a", "duration": "1s", "join": 5, "join_within": "2s"}, "longer than the phase"),
    ({"name": "a", "duration": "1s"}, "exactly one of rate"),
])
def test_invalid_connection_phases_say_what_is_wrong(phase: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec([phase])


def test_a_phase_that_only_connects_publishes_nothing() -> None:
    scenario = spec([{"name": "a", "duration": "5s", "ramp_clients": 10}])
    assert compile_phases(scenario)[0].planned() == 0


@pytest.mark.parametrize(("text", "key", "bound", "limit"), [
    ("connect_success=99%", "connect_success", "min", 0.99),
    ("join.connect_p95_ms=100", "join.connect_p95_ms", "max", 100.0),
    ("puback_p95_ms=200", "puback_p95_ms", "max", 200.0),
    ("broker_cpu=80%", "broker_cpu", "max", 0.8),
    ("broker_cpu=150%", "broker_cpu", "max", 1.5),
])
def test_connection_and_broker_slos_parse(text: str, key: str, bound: str, limit: float) -> None:
    slo = parse_slo(text)
    assert (slo.key, slo.bound, slo.limit) == (key, bound, pytest.approx(limit))
    assert parse_slo(str(slo)) == slo


def test_connect_success_takes_no_min_prefix() -> None:
    with pytest.raises(SloError, match="lower bound already"):
        parse_slo("min_connect_success=99%")
