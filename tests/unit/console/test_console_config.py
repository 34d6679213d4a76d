"""The console's configuration: the `console:` section of ecokit.yaml, the rendered file the
service validates at start, its place in the plan (user, rights, token) and `ecokit open`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ecokit.cli import main
from ecokit.config.loader import load_config
from ecokit.console.contract import load_console_config
from ecokit.console.service import ConsoleService
from ecokit.errors import ConfigError
from ecokit.stack import Stack
from ecokit.testing import write_project


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


@pytest.mark.parametrize(("text", "key", "expected"), [
    ("console: {batch_interval_ms: 5}", "console.batch_interval_ms", "greater than or equal to 20"),
    ("console: {tiles: {url: 'ftp://tiles/{z}/{x}/{y}.png'}}", "console.tiles.url", "http(s)"),
    ("console: {tiles: {url: 'https://tiles.example/{z}/{x}.png'}}", "console.tiles.url", "lacks {y}"),
    ("console: {history: {default_since: yesterday}}", "console.history.default_since", "not a duration"),
    ("console: {bind: localhost}", "console.bind", "not an IP address"),
    ("console: {colour: blue}", "console.colour", "unknown key; expected one of: enabled, port"),
])
def test_a_bad_console_section_fails_at_load_naming_the_key(tmp_path: Path, text: str, key: str,
                                                            expected: str) -> None:
    path = tmp_path / "ecokit.yaml"
    path.write_text(text + "\n")
    err = load_error(path)
    assert key in str(err)
    assert expected in str(err)


def test_the_console_port_must_not_collide(tmp_path: Path) -> None:
    path = tmp_path / "ecokit.yaml"
    path.write_text("console: {port: 8086}\n")
    assert "8086" in str(load_error(path))


def plan_of(project: Path) -> dict[str, object]:
    stack = Stack.load(project, env={})
    return {s.name: s for s in stack.plan("local")}


def test_the_plan_runs_the_console_with_its_own_user_token_and_reader(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", devices=2)
    stack = Stack.load(project, env={})
    spec = next(s for s in stack.plan("local") if s.name == "console")
    files = {f.relpath: f for f in spec.files}
    assert files["console.json"].mode == 0o600
    config = json.loads(files["console.json"].content)
    secrets = stack.secret_values()
    assert config["mqtt"]["username"] == "ecokit-console"
    assert config["mqtt"]["password"] == secrets["service/ecokit-console"]
    assert config["token"] == secrets["console/token"]
    assert len(config["token"]) >= 32
    assert config["influx"]["username"] == "ecokit-reader"
    assert config["http"] == {"host": "127.0.0.1", "port": stack.config.console.port}
    assert config["history"] == {"measurement": "telemetry", "tag": "vehicle"}
    assert config["bridge_metrics"].endswith(f":{stack.config.service_ports.bridge}/metrics")
    assert json.loads(files["devices.json"].content) == {"devices": [
        {"id": "vehicle-0001", "client_cert": False}, {"id": "vehicle-0002", "client_cert": False}]}
    assert spec.reloadable == ("devices.json", "geofences.geojson")
    # Locally the console edits the project's geofence file itself (the processor watches it).
    assert config["geofences"] == {"path": str(stack.geofences_file.resolve()), "writable": True}
    docker = next(s for s in stack.plan("docker") if s.name == "console")
    docker_config = json.loads(next(f for f in docker.files if f.relpath == "console.json").content)
    assert docker_config["geofences"] == {"path": "/ecokit/config/console/geofences.geojson", "writable": False}
    assert spec.reload_signal == "SIGHUP"
    assert spec.probe is not None
    assert spec.probe.path == "/readyz"


def test_the_console_can_be_switched_off(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", extra={"console": {"enabled": False}})
    assert "console" not in plan_of(project)


def test_the_console_user_may_read_fleet_state_and_send_commands_and_nothing_more(tmp_path: Path) -> None:
    policy = Stack.load(write_project(tmp_path / "p"), env={}).access_policy()

    def can(access: str, topic: str) -> bool:
        return policy.allows("ecokit-console", access, topic)  # type: ignore[arg-type]

    assert can("subscribe", "fleet/vehicle-0001/telemetry")
    assert can("subscribe", "fleet/vehicle-0001/status")
    assert can("subscribe", "fleet/vehicle-0001/commands/ack")
    assert can("publish", "fleet/vehicle-0001/commands")
    assert can("publish", "things/vehicle-0001/shadow/update")
    assert can("subscribe", "things/vehicle-0001/shadow/name/cfg/get/accepted")
    assert not can("publish", "fleet/vehicle-0001/telemetry"), "it must not forge telemetry"
    assert not can("publish", "fleet/vehicle-0001/status")
    assert not can("subscribe", "fleet/vehicle-0001/commands"), "it reads acks, not other senders' commands"
    assert not can("publish", "things/vehicle-0001/shadow/update/accepted"), "only the shadow service answers"
    assert not can("publish", "ecokit/deadletter/telemetry"), "the pipeline's rules dead-letter, not the console"
    assert not can("subscribe", "#")


def test_the_service_refuses_a_bad_rendered_file_naming_the_key(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p")
    stack = Stack.load(project, env={})
    stack.render("local")
    path = stack.paths.service_config("console") / "console.json"
    doc = json.loads(path.read_text())
    assert load_console_config(path).stack == "test"
    doc["settings"]["max_vehicles"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"console\.json: settings\.max_vehicles: .*greater than or equal to 1"):
        load_console_config(path)
    del doc["mqtt"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"console\.json: mqtt: required key is missing"):
        load_console_config(path)


def test_health_fails_when_the_intake_loop_died(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p")
    stack = Stack.load(project, env={})
    stack.render("local")
    service = ConsoleService(load_console_config(stack.paths.service_config("console") / "console.json"),
                             logging.getLogger("test"))
    try:
        assert service.health() == (False, "the MQTT intake stopped: not running")

        def crash(stop: object) -> None:
            raise RuntimeError("boom")

        service.intake.run = crash  # type: ignore[method-assign]
        service.intake.start(service.stop_event)
        service.intake.join(5)
        ok, reason = service.health()
        assert not ok
        assert "RuntimeError: boom" in reason
    finally:
        service.engine.store.close()


def test_open_prints_the_token_or_the_url_without_a_browser(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(var, raising=False)
    project = write_project(tmp_path / "p")
    token = Stack.load(project, env={}).secret_values()["console/token"]
    assert main(["open", "--token", "-c", str(project)]) == 0
    assert capsys.readouterr().out.strip() == token
    assert main(["open", "-c", str(project)]) == 0
    captured = capsys.readouterr()
    port = Stack.load(project, env={}).config.console.port
    assert captured.out.strip() == f"http://127.0.0.1:{port}/?token={token}"
    assert "ecokit up" in captured.err


def test_open_on_a_stack_without_console_says_which_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path / "p", extra={"console": {"enabled": False}})
    assert main(["open", "-c", str(project)]) == 1
    assert "console.enabled" in capsys.readouterr().err


def test_prometheus_scrapes_the_console(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", extra={"prometheus": {"enabled": True}})
    stack = Stack.load(project, env={})
    spec = next(s for s in stack.plan("local") if s.name == "prometheus")
    conf = spec.files[0].content.decode()
    assert "ecokit-console" in conf
    assert f"127.0.0.1:{stack.config.console.port}" in conf
