"""The `rules`, `bridge` and `processor` sections: defaults, merging, and errors that name the rule and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ecokit.config.loader import load_config
from ecokit.config.model import StackConfig
from ecokit.errors import ConfigError


def _load(tmp_path: Path, body: dict[str, Any], env: dict[str, str] | None = None) -> StackConfig:
    path = tmp_path / "ecokit.yaml"
    path.write_text(yaml.safe_dump(body))
    return load_config(path, env=env or {}).config


def _error(tmp_path: Path, rules: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, {"rules": rules})
    return str(info.value)


def test_default_stack_has_telemetry_status_events_alerts_and_archive_rules() -> None:
    rules = StackConfig().rules
    assert list(rules) == ["telemetry", "status", "events", "alerts", "archive"]
    tel = rules["telemetry"]
    assert tel.topic == "fleet/+/telemetry"
    assert tel.measurement == "telemetry"
    assert tel.tags["vehicle"].segment == 2
    assert {n: f.type for n, f in tel.fields.items()} == {
        "lat": "float", "lng": "float", "speed": "float", "heading": "float", "fuel": "float",
        "odometer": "float", "engine": "bool", "seq": "int", "status": "string"}
    assert (tel.time.from_, tel.time.path, tel.time.unit) == ("payload", "ts", "ms")
    archive = rules["archive"]
    assert archive.topic == "#"
    assert archive.payload == "raw"
    assert archive.time.from_ == "received"
    assert {n: (f.type, f.from_) for n, f in archive.fields.items()} == {
        "payload": ("string", "payload_base64"), "qos": ("int", "qos"), "retain": ("bool", "retain")}


def test_a_default_rule_is_merged_and_null_deletes(tmp_path: Path) -> None:
    config = _load(tmp_path, {"rules": {"telemetry": {"fields": {"heading": None, "fuel": {"max": 120}}},
                                        "status": None}})
    assert list(config.rules) == ["telemetry", "events", "alerts", "archive"]
    assert "heading" not in config.rules["telemetry"].fields
    assert config.rules["telemetry"].fields["fuel"].max == 120
    assert config.rules["telemetry"].fields["fuel"].min == 0


def test_the_archive_skips_bench_traffic_unless_exclude_is_emptied(tmp_path: Path) -> None:
    archive = StackConfig().rules["archive"]
    assert archive.exclude == ("bench/#", "fleet/+/bench/#")
    assert not archive.takes("bench/1a2b3c4d/p00000")
    assert not archive.takes("fleet/veh-0001/bench/1a2b3c4d")
    assert archive.excluded_by("bench/1a2b3c4d/p00000") == "bench/#"
    assert archive.takes("fleet/veh-0001/telemetry")
    assert archive.takes("benchmark/x")
    assert archive.excluded_by("benchmark/x") is None
    restored = _load(tmp_path, {"rules": {"archive": {"exclude": []}}}).rules["archive"]
    assert restored.exclude == ()
    assert restored.takes("bench/1a2b3c4d/p00000")
    assert restored.retention == "24h", "the rest of the default archive rule stays"


def test_environment_can_disable_a_rule(tmp_path: Path) -> None:
    config = _load(tmp_path, {}, env={"ECOKIT_RULES__ARCHIVE__ENABLED": "false"})
    assert config.rules["archive"].enabled is False
    assert config.rules["archive"].topic == "#"


def test_a_new_rule_is_validated(tmp_path: Path) -> None:
    config = _load(tmp_path, {"rules": {"temps": {"topic": "sites/+/temp", "measurement": "temp",
                                                   "tags": {"site": {"from": "topic", "segment": 2}},
                                                   "fields": {"c": {"min": -50, "max": 80}}}}})
    assert config.rules["temps"].fields["c"].type == "float"


@pytest.mark.parametrize(("rules", "expected"), [
    ({"t": {"topic": "a/#/b", "measurement": "m", "fields": {"x": {}}}},
     "rules.t.topic: 'a/#/b' is not a topic filter"),
    ({"t": {"topic": "a/#", "exclude": ["a/+x"], "measurement": "m", "fields": {"x": {}}}},
     "rules.t.exclude: 'a/+x' is not a topic filter: '+' must be a whole level"),
    ({"archive": {"exclude": "bench/#"}}, "rules.archive.exclude"),
    ({"t": {"topic": "a/b", "measurement": "9m", "fields": {"x": {}}}}, "rules.t.measurement"),
    ({"t": {"topic": "a/b", "measurement": "m", "fields": {"x": {"min": 5, "max": 1}}}},
     "rules.t.fields.x: min (5) is above max (1)"),
    ({"t": {"topic": "a/b", "measurement": "m", "fields": {"x": {"type": "bool", "min": 0}}}},
     "rules.t.fields.x: min/max apply to float and int fields"),
    ({"t": {"topic": "a/b", "measurement": "m", "fields": {"x": {"type": "decimal"}}}}, "rules.t.fields.x.type"),
    ({"t": {"topic": "a/b", "measurement": "m", "fields": {"x": {"required": False}}}},
     "rules.t: fields: at least one field must be required"),
    ({"t": {"topic": "a/+", "measurement": "m", "tags": {"id": {"from": "topic", "segment": 3}},
            "fields": {"x": {}}}}, "rules.t: tags.id: segment 3 is not a level"),
    ({"t": {"topic": "a/b", "measurement": "m", "payload": "raw", "fields": {"x": {}}}},
     "rules.t: fields.x: payload: raw rules do not parse the payload"),
    ({"t": {"topic": "a/b", "measurement": "m", "fields": {"x": {}}, "colour": "red"}}, "rules.t.colour: unknown key"),
    ({"Bad": {"topic": "a/b", "measurement": "m", "fields": {"x": {}}}}, "rule name 'Bad'"),
    ({"telemetry": {"fields": {"lat": {"type": "int", "min": 0.5}}}},
     "rules.telemetry.fields.lat: min/max of an int field must be 64-bit integers"),
    ({"t": {"topic": "a/b", "measurement": "m", "fields": {"s": {"type": "string", "values": ["it's"]}}}},
     "rules.t.fields.s: values: \"it's\" must be non-empty, printable, without quotes"),
    ({"t": {"topic": "a/b", "measurement": "m", "fields": {"x": {}}, "where": [{"path": "k", "op": "gt"}]}},
     "rules.t.where.0: op: gt needs a value"),
])
def test_rule_errors_name_the_rule_and_key(tmp_path: Path, rules: dict[str, Any], expected: str) -> None:
    message = _error(tmp_path, rules)
    assert expected in message
    assert message.startswith("ecokit.yaml: ") or "ecokit.yaml" in message


def test_bridge_and_processor_settings_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bridge\.batch_size"):
        _load(tmp_path, {"bridge": {"batch_size": 0}})
    with pytest.raises(ConfigError, match=r"processor\.offline_after"):
        _load(tmp_path, {"processor": {"offline_after": 0}})
    config = _load(tmp_path, {"bridge": {"flush_ms": 10, "enabled": False}, "processor": {"enabled": False}})
    assert config.bridge.flush_ms == 10
    assert config.bridge.enabled is False
    assert config.processor.enabled is False
