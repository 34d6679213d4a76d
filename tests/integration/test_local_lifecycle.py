"""The local runtime end to end: up/down/purge, idempotence, failures that name the
service, status --json, and registry changes reloading Mosquitto without dropping clients."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecokit.cli import main
from ecokit.errors import PortInUse, RuntimeUnavailable, ServiceError
from ecokit.runtime import process
from ecokit.runtime.probes import check_mqtt
from ecokit.services import plan as plan_module
from ecokit.services.context import PlanContext
from ecokit.services.spec import LocalCommand, PortSpec, Probe, ServiceSpec
from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1
from ecokit.testing import SyncClient, free_port, wait_for

HOST = "127.0.0.1"
ProjectFactory = Callable[..., Path]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ECOKIT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def managed(server_binaries: None) -> Iterator[Callable[[Path], Stack]]:
    """Stacks a test brings up and down itself; whatever is left is purged at the end."""
    projects: list[Path] = []

    def load(config_file: Path) -> Stack:
        projects.append(config_file)
        return Stack.load(config_file, env={})

    yield load
    for config_file in projects:
        Stack.load(config_file, env={}).down(purge=True)


def recorded_processes(stack: Stack) -> dict[str, process.ProcessRef]:
    state = json.loads(stack.paths.state_file.read_text())
    return {name: process.ProcessRef(int(e["pid"]), int(e["start_ticks"])) for name, e in state["services"].items()}


def processes_using(folder: Path) -> list[int]:
    """Pids whose command line mentions ``folder`` (anything the stack could have left)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(folder).encode() in cmdline:
            found.append(int(entry.name))
    return found


def admin(stack: Stack) -> SyncClient:
    user, password = stack.service_credentials("ecokit-admin")
    c = SyncClient(HOST, stack.config.broker.ports.mqtt, username=user, password=password)
    reason, _, _ = c.connect()
    assert not reason.is_failure, reason
    return c


def device(stack: Stack, device_id: str) -> SyncClient:
    user, password = stack.device_credentials(device_id)
    c = SyncClient(HOST, stack.config.broker.ports.mqtt, username=user, password=password)
    reason, _, _ = c.connect()
    assert not reason.is_failure, reason
    return c


# -- up / down --------------------------------------------------------------------------------


def test_up_twice_is_a_no_op(running: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    before = recorded_processes(running)
    planned = {s.name for s in running.plan("local")}
    assert set(before) == planned
    config_file = running.loaded.config_file
    assert config_file is not None
    actions = Stack.load(config_file, env={}).up()
    assert actions == dict.fromkeys(planned, "unchanged")
    assert main(["up", "--config", str(config_file)]) == 0
    assert "Already up; nothing changed." in capsys.readouterr().out
    assert recorded_processes(running) == before
    assert all(process.is_alive(ref) for ref in before.values())


def test_down_leaves_no_process(make_project: ProjectFactory, managed: Callable[[Path], Stack]) -> None:
    stack = managed(make_project())
    stack.up()
    refs = recorded_processes(stack)
    assert set(refs) == {s.name for s in stack.plan("local")}
    assert all(process.is_alive(ref) for ref in refs.values())
    ports = [p.host for s in stack.plan("local") for p in s.ports]
    assert sorted(Stack.load(stack.loaded.config_file, env={}).down()) == sorted(refs)  # type: ignore[arg-type]
    for ref in refs.values():
        # Gone entirely: not running, not a zombie, no thread left (or the pid is reused).
        assert process.start_ticks(ref.pid) != ref.start_ticks, f"pid {ref.pid} is still there"
        assert not process.is_alive(ref)
    assert processes_using(stack.paths.root) == []
    assert not stack.paths.state_file.exists()
    for port in ports:
        assert process.port_is_free(HOST, port)


def test_down_stops_only_this_stack(make_project: ProjectFactory, managed: Callable[[Path], Stack]) -> None:
    one = managed(make_project(stack="one"))
    two = managed(make_project(stack="two"))
    one.up()
    two.up()
    Stack.load(one.loaded.config_file, env={}).down()  # type: ignore[arg-type]
    assert all(process.is_alive(ref) for ref in recorded_processes(two).values())
    assert check_mqtt(HOST, two.config.broker.ports.mqtt, username="ecokit-health",
                      password=two.service_credentials("ecokit-health")[1]).ok


def test_data_survives_down_and_up_and_purge_removes_it(make_project: ProjectFactory,
                                                         managed: Callable[[Path], Stack]) -> None:
    config_file = make_project()
    stack = managed(config_file)
    stack.up()
    with admin(stack) as a:
        a.publish("fleet/vehicle-0001/status", b'{"state": "online"}', qos=1, retain=True)
    with InfluxV1(stack.influx_endpoint("writer")) as writer:
        writer.write("telemetry,vehicle=vehicle-0001 speed=42.5 1700000000000000000")

    refs = recorded_processes(stack)
    Stack.load(config_file, env={}).down()
    assert all(process.start_ticks(ref.pid) != ref.start_ticks for ref in refs.values())
    stack = Stack.load(config_file, env={})
    stack.up()
    with admin(stack) as a:
        a.subscribe("fleet/vehicle-0001/status")
        [msg] = a.expect(1)
        assert (msg.payload, msg.retain) == (b'{"state": "online"}', True)
    with InfluxV1(stack.influx_endpoint("reader")) as reader:
        rows = list(reader.rows("SELECT speed, vehicle FROM telemetry"))
    assert [(r["time"], r["speed"], r["vehicle"]) for r in rows] == [(1700000000000000000, 42.5, "vehicle-0001")]

    Stack.load(config_file, env={}).down(purge=True)
    assert not stack.paths.data_dir.exists()
    assert not stack.paths.logs_dir.exists()
    assert stack.paths.secrets_file.exists(), "purge deletes data, not the stack's identity"
    stack = Stack.load(config_file, env={})
    stack.up()
    with admin(stack) as a:
        a.subscribe("fleet/vehicle-0001/status")
        a.publish("fleet/vehicle-0001/status", b"barrier", qos=1)
        [msg] = a.expect(1)
        assert msg.payload == b"barrier", "a retained message would have arrived first"
    with InfluxV1(stack.influx_endpoint("reader")) as reader:
        assert list(reader.rows("SELECT speed FROM telemetry")) == []


def test_restart_starts_new_processes(running: Stack) -> None:
    before = recorded_processes(running)
    running.restart(["broker"])
    after = recorded_processes(running)
    assert after["influxdb"] == before["influxdb"]
    assert after["broker"] != before["broker"]
    assert not process.is_alive(before["broker"])
    assert check_mqtt(HOST, running.config.broker.ports.mqtt, username="ecokit-health",
                      password=running.service_credentials("ecokit-health")[1]).ok


def test_logs_show_the_service_output(running: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = running.loaded.config_file
    assert main(["logs", "broker", "--lines", "200", "--config", str(config_file)]) == 0
    assert "mosquitto version" in capsys.readouterr().out


# -- failures name the service ------------------------------------------------------------


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("Error:")]


def test_a_busy_port_fails_before_anything_starts(make_project: ProjectFactory, managed: Callable[[Path], Stack],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config_file = make_project()
    stack = managed(config_file)
    port = stack.config.influxdb.port
    with socket.create_server((HOST, port)):
        assert main(["up", "--config", str(config_file)]) == 1
        err = capsys.readouterr().err
        me = f"pid {os.getpid()} ({Path('/proc/self/comm').read_text().strip()})"
        assert error_lines(err) == [f"Error: influxdb: port {HOST}:{port} (influxdb.port, from {config_file}) "
                                    f"is already in use by {me}"]
        assert "Traceback" not in err
        with pytest.raises(PortInUse):
            Stack.load(config_file, env={}).up()
    assert not stack.paths.state_file.exists(), "the broker was not started either"
    assert processes_using(stack.paths.root) == []


def ghost_service(ctx: PlanContext) -> ServiceSpec:
    return ServiceSpec(name="ghost", role="ecokit", description="a service whose binary is missing",
                       local=LocalCommand("ecokit-test-no-such-binary", install_hint="pip install ghost"))


def test_a_missing_binary_fails_with_one_line_naming_the_service(
        make_project: ProjectFactory, managed: Callable[[Path], Stack], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "ECOKIT_SERVICES", [ghost_service])
    config_file = make_project()
    stack = managed(config_file)
    assert main(["up", "--config", str(config_file)]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == ["Error: ghost: `ecokit-test-no-such-binary` is not installed (pip install ghost)"]
    assert "Traceback" not in err
    with pytest.raises(RuntimeUnavailable, match=r"^ghost: "):
        Stack.load(config_file, env={}).up()
    assert processes_using(stack.paths.root) == []


def test_a_service_that_dies_while_starting_names_itself_with_its_log_tail(
        make_project: ProjectFactory, managed: Callable[[Path], Stack], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()

    def crasher(ctx: PlanContext) -> ServiceSpec:
        script = "echo 'crasher: cannot open /nowhere/crasher.json' >&2; exit 3"
        return ServiceSpec(name="crasher", role="ecokit", description="dies at once",
                           ports=(PortSpec("http", port, port, "http"),),
                           probe=Probe("tcp", "http", timeout=30.0),
                           local=LocalCommand("sh", ("-c", script)))

    monkeypatch.setattr(plan_module, "ECOKIT_SERVICES", [crasher])
    config_file = make_project()
    stack = managed(config_file)
    started = time.monotonic()
    assert main(["up", "--config", str(config_file)]) == 1
    assert time.monotonic() - started < 15, "a dead service fails at once, not after the probe timeout"
    err = capsys.readouterr().err
    assert error_lines(err) == ["Error: crasher: stopped while starting (exit code 3)"]
    assert "--- last lines of the crasher log ---" in err
    assert "crasher: cannot open /nowhere/crasher.json" in err
    assert "Traceback" not in err
    with pytest.raises(ServiceError) as info:
        Stack.load(config_file, env={}).up()
    assert info.value.service == "crasher"
    assert "cannot open /nowhere/crasher.json" in info.value.log_tail
    state = json.loads(stack.paths.state_file.read_text())
    assert "crasher" not in state["services"], "a failed service is not recorded as running"


# -- status --json ----------------------------------------------------------------------------


def test_status_json_describes_the_running_stack(running: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = running.loaded.config_file
    assert main(["status", "--json", "--config", str(config_file)]) == 0
    status: dict[str, Any] = json.loads(capsys.readouterr().out)
    refs = recorded_processes(running)
    assert status["runtime"] == "local"
    assert status["state"] == "running"
    assert status["stack"] == "test"
    for name in ("broker", "influxdb", "bridge", "processor"):
        assert status["services"][name]["state"] == "running"
        assert status["services"][name]["pid"] == refs[name].pid
        assert Path(status["services"][name]["log"]).is_file()
    mqtt_port = running.config.broker.ports.mqtt
    assert status["broker"]["kind"] == "mosquitto"
    assert status["broker"]["endpoints"] == {"mqtt": f"mqtt://127.0.0.1:{mqtt_port}"}
    assert status["broker"]["ca"] is None
    influx = status["influxdb"]
    assert influx["url"] == f"http://127.0.0.1:{running.config.influxdb.port}"
    assert influx["database"] == "fleet"
    assert (influx["username"], influx["writer_username"]) == ("ecokit-reader", "ecokit-writer")
    assert "password" not in influx, "secrets only with --show-secrets"
    credentials = status["credentials"]
    assert credentials["secrets_file"] == str(running.paths.secrets_file)
    assert credentials["devices_registry"] == str(running.devices_file)
    assert credentials["users_registry"] == str(running.users_file)
    assert credentials["certs_dir"] == str(running.cert_paths.root)
    assert "ecokit-admin" in credentials["service_users"]
    assert "service_passwords" not in credentials
    # What status says is enough to connect.
    assert InfluxV1(running.influx_endpoint("reader")).ping() is not None
    assert check_mqtt(HOST, mqtt_port, username="ecokit-health",
                      password=running.service_credentials("ecokit-health")[1]).ok


def test_status_json_with_secrets(running: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json", "--show-secrets", "--config", str(running.loaded.config_file)]) == 0
    status = json.loads(capsys.readouterr().out)
    influx = status["influxdb"]
    with InfluxV1(running.influx_endpoint("reader")) as reader:
        assert reader.endpoint.password == influx["password"]
        reader.query("SHOW MEASUREMENTS")
    user, password = "ecokit-admin", status["credentials"]["service_passwords"]["ecokit-admin"]
    assert check_mqtt(HOST, running.config.broker.ports.mqtt, username=user, password=password).ok


def test_status_after_down_says_stopped(make_project: ProjectFactory, managed: Callable[[Path], Stack],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config_file = make_project()
    managed(config_file).up()
    assert main(["down", "--config", str(config_file)]) == 0
    capsys.readouterr()
    assert main(["status", "--json", "--config", str(config_file)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "stopped"
    assert {s["state"] for s in status["services"].values()} == {"stopped"}


# -- registry changes while up ------------------------------------------------------------


def test_registering_a_device_while_up_reloads_mosquitto_without_dropping_clients(
        running: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = running.loaded.config_file
    assert config_file is not None
    broker_before = recorded_processes(running)["broker"]
    with admin(running) as a, device(running, "vehicle-0001") as v1:
        v1.subscribe("fleet/vehicle-0001/commands")
        a.subscribe("fleet/+/telemetry")
        # `devices add` on a running stack loads the new credentials at once.
        assert main(["devices", "add", "late-1", "--config", str(config_file)]) == 0
        stack = Stack.load(config_file, env={})
        user, password = stack.device_credentials("late-1")
        assert set(stack.up().values()) == {"unchanged"}, "already reloaded"
        assert recorded_processes(stack)["broker"] == broker_before, "same process: reloaded, not restarted"
        wait_for("mosquitto logs the SIGHUP reload",
                 lambda: "Reloading config" in stack.paths.log("broker").read_text(), 10)
        wait_for("the new device can connect", lambda: check_mqtt(HOST, stack.config.broker.ports.mqtt, username=user,
                                    password=password).ok, 10)
        with device(stack, "late-1") as late:
            late.publish("fleet/late-1/telemetry", b"hello", qos=1)
            [msg] = a.expect(1)
            assert msg.topic == "fleet/late-1/telemetry", "its ACL is loaded too"
        a.publish("fleet/vehicle-0001/commands", b"still there?", qos=1)
        [cmd] = v1.expect(1)
        assert cmd.payload == b"still there?"
        assert v1.disconnects.empty(), "the device was not dropped"
        assert a.disconnects.empty(), "the admin was not dropped"
    capsys.readouterr()
