"""Per-rule retention: the archive keeps a day, telemetry the database's retention, and a
rule's own retention becomes a retention policy (1.x) or a ``<db>/<policy>`` bucket (2.x)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ecokit.config.model import StackConfig
from ecokit.config.rules import RuleConfig, retention_policy
from ecokit.store.influx import v2_policy_buckets


def test_the_archive_keeps_a_day_and_telemetry_the_databases_thirty_days() -> None:
    config = StackConfig()
    assert config.rules["archive"].retention == "24h"
    assert config.rules["telemetry"].retention is None
    assert config.influxdb.retention == "30d"


def test_a_rules_policy_is_named_after_the_rule_not_its_duration() -> None:
    assert retention_policy("archive", "24h") == "ecokit_archive"
    assert retention_policy("archive", "0") == "ecokit_archive"
    assert retention_policy("telemetry", None) is None


@pytest.mark.parametrize("value", ["59m", "30s", "forever", "1y", ""])
def test_a_rule_retention_influxdb_would_refuse_is_refused_by_the_configuration(value: str) -> None:
    with pytest.raises(ValidationError):
        RuleConfig.model_validate({"topic": "a/+", "measurement": "m", "fields": {"v": {"type": "float"}},
                                   "retention": value})


def test_v2_buckets_follow_the_v1_mapping_of_db_and_rp() -> None:
    assert v2_policy_buckets("fleet", {"ecokit_archive": "24h", "ecokit_raw": "0", "ecokit_w": "2w"}) == [
        ("fleet/ecokit_archive", 86_400), ("fleet/ecokit_raw", 0), ("fleet/ecokit_w", 1_209_600)]


def test_the_stack_lists_the_policies_of_enabled_rules(tmp_path: Path) -> None:
    from ecokit.stack import Stack

    (tmp_path / "ecokit.yaml").write_text(
        "rules:\n  raw:\n    topic: raw/+\n    measurement: raw\n    retention: 2d\n"
        "    fields: {v: {type: float}}\n  unused:\n    topic: unused/+\n    measurement: unused\n    retention: 3d\n"
        "    enabled: false\n    fields: {v: {type: float}}\n")
    stack = Stack.load(tmp_path / "ecokit.yaml")
    assert stack.retention_policies() == {"ecokit_archive": "24h", "ecokit_raw": "2d"}
    assert stack.retention_policy_of("archive") == "ecokit_archive"
    assert stack.retention_policy_of("telemetry") is None
