"""The Prometheus alerting rules for pipeline health: rendered next to prometheus.yml,
loaded by it, valid for promtool, and firing on the series they are meant for."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecokit.stack import Stack
from ecokit.testing import write_project


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("these tests need promtool (apt-get install prometheus; infra/install.sh does)", pytrace=False)
    return found


def rendered(tmp_path: Path, target: str = "local", extra: dict[str, Any] | None = None) -> Path:
    stack = Stack.load(write_project(tmp_path, extra={"prometheus": {"enabled": True}, **(extra or {})}), env={})
    if target == "local":
        stack.render("local")
        return stack.paths.service_config("prometheus")
    spec = next(s for s in stack.plan("docker") if s.name == "prometheus")
    folder = tmp_path / "docker-prometheus"
    folder.mkdir()
    for f in spec.files:
        assert f.container_path == f"/etc/prometheus/{f.relpath}"
        (folder / f.relpath).write_bytes(f.content)
    return folder


def check(*args: str, cwd: Path) -> str:
    result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("target", ["local", "docker"])
def test_prometheus_loads_the_rules_file_beside_its_config(tmp_path: Path, target: str) -> None:
    folder = rendered(tmp_path, target)
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]  # relative to prometheus.yml, in both runtimes
    assert "1 rule files found" in check("check", "config", "prometheus.yml", cwd=folder)
    assert "SUCCESS: 7 rules found" in check("check", "rules", "alerts.yml", cwd=folder)


def test_only_the_services_in_the_plan_get_rules(tmp_path: Path) -> None:
    folder = rendered(tmp_path, extra={"bridge": {"enabled": False}, "processor": {"enabled": False}})
    names = [r["alert"] for g in yaml.safe_load((folder / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert names == ["EcokitServiceDown"]


SERIES = [
    ('ecokit_bridge_dropped_points_total{job="ecokit-bridge"}', "0 0 0 10 20 20 20 20 20 20 20 20"),
    ('up{job="ecokit-bridge"}', "1 1 1 0 0 0 1 1 1 1 1 1"),
    ('ecokit_processor_messages_received_total{job="ecokit-processor", kind="telemetry"}',
     "0 60 120 180 240 240 240 240 240 240 240 240"),
    ('ecokit_bridge_deadletters_published_total{job="ecokit-bridge", rule="telemetry", reason="out_of_range"}',
     "0 0 6 12 18 24 30 36 42 48 54 60"),
    ('ecokit_processor_geofence_file_valid{job="ecokit-processor"}', "1 1 0 0 1 1 1 1 1 1 1 1"),
    ('ecokit_bridge_mqtt_connected{job="ecokit-bridge"}', "1 1 1 1 1 1 1 1 1 1 1 1"),
    ('ecokit_bridge_write_errors_total{job="ecokit-bridge", kind="http_503"}', "0 0 0 1 2 3 4 5 5 5 5 5 5 5 5"),
]
# (minute, alert, labels of the expected alert or None, values its annotations print)
EXPECTED: list[tuple[int, str, dict[str, str] | None, dict[str, str]]] = [
    (2, "EcokitBridgeDroppingPoints", None, {}),
    (4, "EcokitBridgeDroppingPoints", {"job": "ecokit-bridge"}, {"$value": "20"}),
    (11, "EcokitBridgeDroppingPoints", None, {}),
    (3, "EcokitServiceDown", None, {}),
    (5, "EcokitServiceDown", {"job": "ecokit-bridge"}, {"$labels.job": "ecokit-bridge"}),
    (7, "EcokitServiceDown", None, {}),
    (3, "EcokitNoTelemetry", None, {}),
    (7, "EcokitNoTelemetry", {}, {}),
    (4, "EcokitDeadLettersRising", None, {}),
    (10, "EcokitDeadLettersRising", {}, {"$value": "0.10"}),
    (3, "EcokitGeofenceFileInvalid", {"job": "ecokit-processor"}, {}),
    (5, "EcokitGeofenceFileInvalid", None, {}),
    (10, "EcokitBridgeDisconnected", None, {}),
    (4, "EcokitBridgeWriteErrors", None, {}),
    (6, "EcokitBridgeWriteErrors", {"job": "ecokit-bridge", "kind": "http_503"}, {}),
    (14, "EcokitBridgeWriteErrors", None, {}),
]


def _annotations(rule: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, text in rule.get("annotations", {}).items():
        for name, value in values.items():
            text = re.sub(r"\{\{ " + re.escape(name) + r'( \| printf "[^"]+")? \}\}', value, text)
        assert "{{" not in text, f"{rule['alert']}: give the test a value for {text!r}"
        out[key] = text
    return out


def test_each_rule_fires_on_its_failure_and_only_then(tmp_path: Path) -> None:
    folder = rendered(tmp_path)
    rules = {r["alert"]: r for g in yaml.safe_load((folder / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    cases = []
    for minute, name, labels, values in EXPECTED:
        expected = [] if labels is None else [{
            "exp_labels": {**rules[name]["labels"], **labels},
            "exp_annotations": _annotations(rules[name], values)}]
        cases.append({"eval_time": f"{minute}m", "alertname": name, "exp_alerts": expected})
    assert {c["alertname"] for c in cases} == set(rules), "every rule has a case"
    spec = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in SERIES],
                       "alert_rule_test": cases}]}
    (folder / "alerts_test.yml").write_text(yaml.safe_dump(spec))
    assert "SUCCESS" in check("test", "rules", "alerts_test.yml", cwd=folder)
