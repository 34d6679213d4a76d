"""Alert rules: the `alerts:` section, and the engine that fires and resolves them once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecokit.config.alerts import AlertRule, Offline, Threshold, Zone, parse_condition
from ecokit.errors import ConfigError
from ecokit.geofence.tracker import GeofenceEvent
from ecokit.processor.alerts import AlertEngine, AlertUpdate
from ecokit.stack import Stack
from ecokit.testing import write_project

# -- the section -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "parsed"), [
    ("speed > 130 for 10s", Threshold("speed", ">", 130.0, 10.0)),
    ("fuel<10", Threshold("fuel", "<", 10.0)),
    ("gps.hdop >= 2.5 for 1m", Threshold("gps.hdop", ">=", 2.5, 60.0)),
    ("engine == false for 500ms", Threshold("engine", "==", False, 0.5)),
    ("temp != -4e1", Threshold("temp", "!=", -40.0)),
    ("offline for 5m", Offline(300.0)),
    ("enter tag:restricted", Zone("enter", "tag", "restricted")),
    ("exit fence:depot-north", Zone("exit", "fence", "depot-north")),
])
def test_conditions_parse(text: str, parsed: Any) -> None:
    assert parse_condition(text) == parsed


@pytest.mark.parametrize(("text", "message"), [
    ("speed >> 130", "is not an alert condition; expected FIELD OP VALUE"),
    ("speed > fast", "is not an alert condition"),
    ("speed > 130 for ever", "'ever' is not a duration"),
    ("speed > 130 for 10", "'10' is not a duration"),
    ("speed > 130 for 8d", "at most 7 days"),
    ("engine > true", "true/false compares only with == or !="),
    ("offline for 0s", "offline needs at least 1s"),
    ("enter restricted", "is not an alert condition"),
])
def test_bad_conditions_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_condition(text)


def load(tmp_path: Path, alerts: dict[str, Any]) -> Stack:
    return Stack.load(write_project(tmp_path, extra={"alerts": alerts}), env={})


def config_error(tmp_path: Path, alerts: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, alerts)
    return str(info.value)


def test_alerts_load_from_ecokit_yaml(tmp_path: Path) -> None:
    stack = load(tmp_path, {"overspeed": {"when": "speed > 130 for 10s", "clear": "speed < 120"},
                            "silent": {"when": "offline for 5m", "severity": "critical"}})
    assert stack.config.alerts["overspeed"].clear_condition == Threshold("speed", "<", 120.0)
    assert stack.config.alerts["silent"].severity == "critical"


def test_alert_errors_name_the_key(tmp_path: Path) -> None:
    assert "alerts.fast.when: 'sped' is not a numeric telemetry field (known: fuel, heading, lat, lng, odometer, " \
           "seq, speed)" in config_error(tmp_path, {"fast": {"when": "sped > 130"}})
    assert "alerts.off.when: 'speed' is not a boolean telemetry field (known: engine)" in config_error(
        tmp_path, {"off": {"when": "speed == true"}})
    assert "alert name 'Fast' must be lowercase" in config_error(tmp_path, {"Fast": {"when": "speed > 1"}})
    assert "alerts.x.when" in config_error(tmp_path, {"x": {"when": "speed >> 1"}})
    assert "severity" in config_error(tmp_path, {"x": {"when": "speed > 1", "severity": "loud"}})
    assert "alerts.x.for: unknown key" in config_error(tmp_path, {"x": {"when": "speed > 1", "for": "10s"}})


def test_a_clear_condition_must_leave_a_gap(tmp_path: Path) -> None:
    message = config_error(tmp_path, {"fast": {"when": "speed > 130", "clear": "speed < 140"}})
    assert "both hold for speed = 135" in message
    assert "leave a gap between them" in message
    assert "both hold for speed = 130" in config_error(tmp_path, {"f": {"when": "speed >= 130",
                                                                        "clear": "speed <= 130"}})
    assert "must compare the same field as when (speed)" in config_error(
        tmp_path, {"f": {"when": "speed > 130", "clear": "fuel < 10"}})
    assert "only threshold alerts take a clear condition" in config_error(
        tmp_path, {"f": {"when": "offline for 1m", "clear": "speed < 1"}})
    AlertRule(when="speed > 130", clear="speed <= 130")  # touching is fine: no value is both


# -- the engine ------------------------------------------------------------------------


def engine(**rules: dict[str, Any]) -> AlertEngine:
    return AlertEngine({name: AlertRule.model_validate(rule) for name, rule in rules.items()})


def feed(e: AlertEngine, speeds: list[float], *, field: str = "speed", step_ms: int = 1000,
         vehicle: str = "v1") -> list[AlertUpdate]:
    out = []
    for i, speed in enumerate(speeds):
        out += e.on_fix(vehicle, step_ms * i, {field: speed})
    return out


def test_a_threshold_must_hold_for_its_duration() -> None:
    e = engine(overspeed={"when": "speed > 130 for 5s"})
    # Above for 2 s, interrupted, then above from 4 s on: fires at 9 s.
    (firing,) = feed(e, [140, 140, 140, 100, 140, 140, 140, 140, 140, 140, 140])
    assert (firing.state, firing.ts, firing.since, firing.value, firing.subject) == (
        "firing", 9000, 4000, 140, "speed")


def test_fires_once_and_resolves_once() -> None:
    e = engine(overspeed={"when": "speed > 130 for 2s", "severity": "critical"})
    updates = feed(e, [100, 140, 150, 160, 170, 180, 120, 110])
    assert [(u.state, u.ts) for u in updates] == [("firing", 3000), ("resolved", 6000)]
    resolved = updates[1]
    assert (resolved.duration_s, resolved.reason, resolved.severity) == (3.0, "cleared", "critical")
    assert e.firing() == {"overspeed": 0}


def test_hysteresis_keeps_a_value_at_the_limit_from_flapping() -> None:
    hovering = [131, 129, 131, 129, 131, 125, 131, 121, 119, 125, 131]
    plain = feed(engine(a={"when": "speed > 130"}), hovering)
    assert len(plain) > 6
    banded = feed(engine(a={"when": "speed > 130", "clear": "speed < 120"}), hovering)
    assert [(u.state, u.ts) for u in banded] == [("firing", 0), ("resolved", 8000), ("firing", 10_000)]


def test_a_clear_duration_delays_the_resolve() -> None:
    e = engine(low={"when": "fuel < 10", "clear": "fuel > 15 for 3s"})
    updates = feed(e, [5, 20, 20, 5, 20, 20, 20, 20], field="fuel")
    assert [(u.state, u.ts, u.since) for u in updates] == [("firing", 0, 0), ("resolved", 7000, 4000)]


def test_fixes_without_the_field_change_nothing() -> None:
    e = engine(low={"when": "fuel < 10"})
    assert e.on_fix("v1", 0, {"speed": 3}) == []
    assert e.on_fix("v1", 1, {"fuel": "low"}) == []
    assert e.on_fix("v1", 2, {"fuel": True}) == []
    assert [u.state for u in e.on_fix("v1", 3, {"fuel": 5})] == ["firing"]
    assert e.on_fix("v1", 4, {"fuel": None}) == []
    assert e.firing() == {"low": 1}


def test_boolean_conditions_and_dotted_paths() -> None:
    e = engine(parked={"when": "engine == false for 1s"}, hdop={"when": "gps.hdop > 5"})
    assert e.on_fix("v1", 0, {"engine": False, "gps": {"hdop": 9}})[0].alert == "hdop"
    (parked,) = e.on_fix("v1", 1000, {"engine": False, "gps": {"hdop": 9}})
    assert parked.alert == "parked"
    assert json.loads(parked.payload())["flag"] is False
    assert "value" not in json.loads(parked.payload())


def test_each_vehicle_has_its_own_episode() -> None:
    e = engine(fast={"when": "speed > 100"})
    assert len(feed(e, [120], vehicle="a")) == 1
    assert len(feed(e, [120], vehicle="b")) == 1
    assert feed(e, [50], vehicle="a")[0].vehicle == "a"
    assert e.firing() == {"fast": 1}


def test_offline_fires_after_silence_and_resolves_on_the_next_message() -> None:
    e = engine(silent={"when": "offline for 30s"})
    assert e.on_activity("v1", 1000.0) == []
    assert e.tick(1029.0) == []
    (firing,) = e.tick(1031.0)
    assert (firing.state, firing.subject, firing.ts, firing.since, firing.value) == (
        "firing", "offline", 1_031_000, 1_000_000, 31.0)
    assert e.tick(1090.0) == []  # once
    (resolved,) = e.on_activity("v1", 1100.0)
    assert (resolved.state, resolved.reason, resolved.duration_s) == ("resolved", "activity", 69.0)


def event(kind: str, fence: str, ts: int, tags: tuple[str, ...] = ()) -> GeofenceEvent:
    return GeofenceEvent("v1", f"geofence_{kind}", fence, fence, tags, ts, ts, 0.0, 0.0)  # type: ignore[arg-type]


def test_zone_alerts_follow_geofence_events() -> None:
    e = engine(restricted={"when": "enter tag:restricted"}, left={"when": "exit fence:depot"})
    updates = e.on_events([event("enter", "zone-a", 1000, ("restricted",)), event("enter", "depot", 1000),
                           event("enter", "park", 1000, ("green",))])
    assert [(u.alert, u.state, u.geofence) for u in updates] == [("restricted", "firing", "zone-a")]
    updates = e.on_events([event("exit", "zone-a", 5000, ("restricted",)), event("exit", "depot", 6000)])
    assert [(u.alert, u.state, u.duration_s) for u in updates] == [("restricted", "resolved", 4.0),
                                                                   ("left", "firing", None)]
    (back,) = e.on_events([event("enter", "depot", 9000)])
    assert (back.alert, back.state, back.duration_s) == ("left", "resolved", 3.0)


def test_removing_a_fence_resolves_its_zone_alerts() -> None:
    e = engine(restricted={"when": "enter tag:restricted"})
    e.on_events([event("enter", "zone-a", 1000, ("restricted",))])
    assert e.fences_changed({"zone-a"}, 10.0) == []
    (resolved,) = e.fences_changed(set(), 10.0)
    assert (resolved.state, resolved.reason, resolved.geofence) == ("resolved", "geofence_removed", "zone-a")


def test_disabled_rules_do_nothing() -> None:
    e = engine(fast={"when": "speed > 1", "enabled": False})
    assert feed(e, [100]) == []
    assert e.firing() == {}


@settings(max_examples=200, deadline=None)
@given(speeds=st.lists(st.floats(0, 250), max_size=80), hold=st.integers(0, 5))
def test_firing_and_resolving_always_alternate(speeds: list[float], hold: int) -> None:
    updates = feed(engine(a={"when": f"speed > 130 for {hold}s", "clear": "speed < 110"}), speeds)
    assert [u.state for u in updates] == ["firing", "resolved"] * (len(updates) // 2) + (
        ["firing"] if len(updates) % 2 else [])
    for fired in updates[::2]:
        assert fired.ts - fired.since >= hold * 1000
        assert isinstance(fired.value, float)
        assert fired.value > 130
