"""SLOs of bench runs: parsing, merging and evaluation (no I/O)."""

from __future__ import annotations

import pytest

from ecokit.bench.slo import SloResult, check_phases, evaluate, merge_slos
from ecokit.config.slo import METRICS, Slo, SloError, format_value, parse_slo, slo_keys
from ecokit.errors import UsageError


@pytest.mark.parametrize(("text", "wanted"), [
    ("p99_ms=50", Slo("p99_ms", "max", 50.0)),
    ("p50_ms = 1.5", Slo("p50_ms", "max", 1.5)),
    ("loss=0", Slo("loss", "max", 0.0)),
    ("loss=0.1%", Slo("loss", "max", 0.001)),
    ("loss=1e-4", Slo("loss", "max", 0.0001)),
    ("min_rate=5000", Slo("rate", "min", 5000.0)),
    ("min_send_rate=.5", Slo("send_rate", "min", 0.5)),
    ("spike.p99_ms=200", Slo("p99_ms", "max", 200.0, "spike")),
    ("recovery.min_rate=900", Slo("rate", "min", 900.0, "recovery")),
    ("duplicates=0", Slo("duplicates", "max", 0.0)),
    ("min_rate=95%", Slo("rate", "min", 0.95, None, True)),
    ("spike.min_send_rate=50%", Slo("send_rate", "min", 0.5, "spike", True)),
    ("reconnects=3", Slo("reconnects", "max", 3.0)),
])
def test_slos_parse(text: str, wanted: Slo) -> None:
    assert parse_slo(text) == wanted


@pytest.mark.parametrize(("text", "message"), [
    ("p99_ms", "expected KEY=LIMIT"),
    ("p99=50", "unknown key 'p99'"),
    ("rate=5000", "write min_rate="),
    ("min_p99_ms=5", "write p99_ms="),
    ("p99_ms=fast", "not a number"),
    ("p99_ms=-1", ">= 0"),
    ("p99_ms=5%", "only loss and the rates take a percentage"),
    ("min_rate=101%", "at most 100% of the planned rate"),
    ("loss=2", "ratio between 0 and 1"),
    ("loss=150%", "ratio between 0 and 1"),
    ("p99_ms=inf", "not a number"),
    (".p99_ms=5", "empty phase name"),
])
def test_bad_slos_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SloError, match=message):
        parse_slo(text)


def test_slo_errors_are_usage_errors() -> None:
    # the CLI turns them into exit code 2
    assert issubclass(SloError, UsageError)


def test_every_metric_has_a_key_and_every_key_parses() -> None:
    keys = slo_keys()
    assert len(keys) == len(METRICS)
    for key in keys:
        assert parse_slo(f"{key}=1").key == key


def test_keys_and_text_round_trip() -> None:
    for text in ("p99_ms=50", "min_rate=5000", "spike.loss=0.5%", "min_rate=95%"):
        slo = parse_slo(text)
        assert parse_slo(str(slo)) == slo
    assert str(parse_slo("loss=0.1%")) == "loss=0.1%"
    assert parse_slo("spike.min_rate=5").key == "spike.min_rate"


def test_later_layers_replace_earlier_slos_with_the_same_key() -> None:
    scenario = [parse_slo("p99_ms=50"), parse_slo("loss=0")]
    flags = [parse_slo("p99_ms=20"), parse_slo("spike.p99_ms=100")]
    merged = merge_slos(scenario, flags)
    assert {s.key: s.limit for s in merged} == {"p99_ms": 20, "loss": 0, "spike.p99_ms": 100}


def test_phase_slos_must_name_a_phase() -> None:
    check_phases([parse_slo("spike.p99_ms=5"), parse_slo("p99_ms=5")], ["baseline", "spike"])
    with pytest.raises(SloError, match=r"no phase 'peak'.*baseline, spike"):
        check_phases([parse_slo("peak.p99_ms=5")], ["baseline", "spike"])


# -- evaluation -------------------------------------------------------------------------------


def test_upper_and_lower_bounds() -> None:
    slos = [parse_slo("p99_ms=50"), parse_slo("min_rate=1000"), parse_slo("loss=0")]
    results = evaluate(slos, {"p99_ms": 73.2, "rate": 1500.0, "loss": 0.0}, {})
    assert [r.ok for r in results] == [False, True, True]
    assert results[0].line == "SLO violated: p99_ms = 73.2 ms > 50.0 ms"
    assert results[1].line == "SLO met: min_rate = 1,500/s >= 1,000/s"
    assert results[2].line == "SLO met: loss = 0% <= 0%"


def test_limits_are_inclusive() -> None:
    results = evaluate([parse_slo("p99_ms=50"), parse_slo("min_rate=10")], {"p99_ms": 50.0, "rate": 10.0}, {})
    assert all(r.ok for r in results)


def test_a_violated_lower_bound_and_a_loss_with_its_counts() -> None:
    results = evaluate([parse_slo("min_rate=5000"), parse_slo("loss=0")], {"rate": 4321.0, "loss": 0.0012},
                       {}, {None: {"loss": "60 of 50,000"}})
    assert results[0].line == "SLO violated: min_rate = 4,321/s < 5,000/s"
    assert results[1].line == "SLO violated: loss = 0.12% (60 of 50,000) > 0%"


def test_a_relative_rate_is_a_share_of_the_planned_rate() -> None:
    slo = parse_slo("min_rate=95%")
    met, missed = evaluate([slo], {"rate": 960.0, "planned_rate": 1000.0}, {}), \
        evaluate([slo], {"rate": 900.0, "planned_rate": 1000.0}, {})
    assert met[0].ok
    assert missed[0].line == "SLO violated: min_rate = 900/s < 950/s (95% of the planned rate)"
    assert missed[0].to_dict()["limit"] == 950
    assert missed[0].to_dict()["relative"] == 0.95
    unplanned = evaluate([slo], {"rate": 900.0}, {})
    assert unplanned[0].line == "SLO violated: min_rate: not measured (no planned rate to compare with)"


def test_phase_slos_use_the_phase_figures() -> None:
    slo = parse_slo("spike.p99_ms=100")
    ok, bad = evaluate([slo, slo], {"p99_ms": 500.0}, {"spike": {"p99_ms": 80.0}}), \
        evaluate([slo], {"p99_ms": 1.0}, {"spike": {"p99_ms": 120.0}})
    assert ok[0].ok
    assert bad[0].line == "SLO violated: spike.p99_ms = 120.0 ms > 100.0 ms in phase spike"


def test_a_metric_that_was_not_measured_violates_its_slo() -> None:
    results = evaluate([parse_slo("p99_ms=50"), parse_slo("loss=0"), parse_slo("spike.reconnects=0")],
                       {"p99_ms": None, "loss": None}, {"spike": {}},
                       {"spike": {"reconnects": "only measured for the whole run"}})
    assert [r.ok for r in results] == [False, False, False]
    assert results[0].line == "SLO violated: p99_ms: not measured (no message was received)"
    assert results[1].line == "SLO violated: loss: not measured (no subscriber measured deliveries)"
    assert results[2].line == ("SLO violated: spike.reconnects: not measured in phase spike "
                               "(only measured for the whole run)")


def test_results_serialise() -> None:
    result = SloResult(parse_slo("p99_ms=5"), 7.0, False)
    assert result.to_dict() == {"key": "p99_ms", "metric": "p99_ms", "phase": None, "bound": "max", "limit": 5.0,
                                "relative": None, "actual": 7.0, "ok": False,
                                "line": "SLO violated: p99_ms = 7 ms > 5 ms"}


@pytest.mark.parametrize(("value", "kind", "text"), [
    (0.0, "ratio", "0%"), (0.00123, "ratio", "0.123%"), (1.0, "ratio", "100%"),
    (0.25, "ms", "0.25 ms"), (12.345, "ms", "12.3 ms"), (1234.5, "ms", "1,234.5 ms"),
    (5000.0, "rate", "5,000/s"), (2.5, "rate", "2.5/s"), (3.0, "count", "3"), (2.5, "count", "2.5"),
])
def test_values_are_formatted_for_people(value: float, kind: str, text: str) -> None:
    assert format_value(value, kind) == text  # type: ignore[arg-type]
