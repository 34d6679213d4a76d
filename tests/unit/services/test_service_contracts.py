"""The typed contract between the plan and ecokit's services: what the plan renders is what
each service validates at start, and a bad file fails at start naming the key at fault."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ecokit.bridge.contract import BridgeServiceConfig
from ecokit.brokerstats.contract import BrokerStatsServiceConfig
from ecokit.contract import ServiceConfig, load_service_config
from ecokit.errors import ConfigError
from ecokit.paths import Target
from ecokit.processor.contract import ProcessorServiceConfig
from ecokit.shadow.contract import ShadowServiceConfig
from ecokit.stack import Stack
from ecokit.testing import write_project

CONTRACTS: dict[str, type[ServiceConfig]] = {
    "bridge": BridgeServiceConfig, "processor": ProcessorServiceConfig, "shadow": ShadowServiceConfig,
    "brokerstats": BrokerStatsServiceConfig}
PROFILES = {"plain": {}, "mtls-only": {"tls": {"enabled": True, "mtls": True, "plain_listener": False}}}


@pytest.mark.parametrize("target", ["local", "docker"])
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_rendered_service_file_validates_against_its_contract(tmp_path: Path, target: Target,
                                                                    profile: str) -> None:
    # Prometheus on: the broker metrics service runs only to feed it.
    extra = {**PROFILES[profile], "prometheus": {"enabled": True}}
    stack = Stack.load(write_project(tmp_path / "p", devices=1, extra=extra), env={})
    specs = {s.name: s for s in stack.plan(target) if s.name in CONTRACTS}
    assert set(specs) == set(CONTRACTS)
    for name, spec in specs.items():
        rendered = spec.files[0]
        assert rendered.relpath == f"{name}.json"
        # The processor also gets the geofence file (reloadable); the rest only their config.
        assert [f.relpath for f in spec.files[1:]] == (["geofences.geojson"] if name == "processor" else [])
        config = CONTRACTS[name].model_validate_json(rendered.content)
        assert config.render() == rendered.content  # the file is the model, byte for byte
        assert config.mqtt.tls is (profile != "plain")
        assert (config.mqtt.cert is not None) is (profile == "mtls-only")
        if isinstance(config, BridgeServiceConfig):
            assert config.rules == stack.config.rules
            assert config.bridge == stack.config.bridge
        if isinstance(config, ProcessorServiceConfig):
            assert config.alerts == stack.config.alerts
            assert config.geofences.path is not None


def _bridge_file(tmp_path: Path) -> dict[str, object]:
    stack = Stack.load(write_project(tmp_path / "p", devices=1), env={})
    spec = next(s for s in stack.plan("local") if s.name == "bridge")
    data: dict[str, object] = json.loads(spec.files[0].content)
    return data


@pytest.mark.parametrize(("change", "key", "why"), [
    (lambda d: d["mqtt"].pop("port"), "mqtt.port", "required key is missing"),
    (lambda d: d["mqtt"].update(port="x"), "mqtt.port", "valid integer"),
    (lambda d: d["http"].update(bind="0.0.0.0"), "http.bind", "unknown key"),
    (lambda d: d["rules"]["telemetry"].update(qos=7), "rules.telemetry", "unknown key"),
    (lambda d: d.pop("spool_dir"), "spool_dir", "required key is missing"),
])
def test_a_bad_service_file_is_refused_with_the_key_at_fault(tmp_path: Path, change: object, key: str,
                                                              why: str) -> None:
    data = _bridge_file(tmp_path)
    change(data)  # type: ignore[operator]
    path = tmp_path / "bridge.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=why) as caught:
        load_service_config(path, BridgeServiceConfig)
    assert caught.value.source == str(path)
    assert caught.value.key is not None
    assert caught.value.key.startswith(key)


def test_a_service_started_with_a_bad_file_says_why_and_exits_2(tmp_path: Path) -> None:
    data = _bridge_file(tmp_path)
    data["mqtt"].pop("username")  # type: ignore[attr-defined]
    path = tmp_path / "bridge.json"
    path.write_text(json.dumps(data))
    done = subprocess.run([sys.executable, "-m", "ecokit.bridge", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    (line,) = [json.loads(x) for x in done.stdout.splitlines() if x.strip()]
    assert line["level"] == "error"
    assert line["msg"] == f"cannot start: {path}: mqtt.username: required key is missing"
    assert "Traceback" not in done.stderr


def test_the_shadow_service_refuses_a_file_without_a_client_id(tmp_path: Path) -> None:
    stack = Stack.load(write_project(tmp_path / "p", devices=1), env={})
    spec = next(s for s in stack.plan("local") if s.name == "shadow")
    data = json.loads(spec.files[0].content)
    del data["mqtt"]["client_id"]
    path = tmp_path / "shadow.json"
    path.write_text(json.dumps(data))
    done = subprocess.run([sys.executable, "-m", "ecokit.shadow.service", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"cannot start: {path}: mqtt.client_id: required key is missing" in done.stdout
    assert "Traceback" not in done.stderr
