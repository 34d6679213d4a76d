"""The docker runtime end to end on a real engine: mosquitto, InfluxDB 1.x and ecokit's own
services (bridge, processor, shadow), all in containers built on this machine."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from ecokit.cli import main
from ecokit.errors import EngineError, ReadinessTimeout, ServiceError
from ecokit.runtime.base import ReadinessContext, ServiceEvent
from ecokit.runtime.docker import DockerRuntime, Engine
from ecokit.runtime.docker.service import StackNames
from ecokit.services.spec import ContainerSpec, PortSpec, Probe, ServiceSpec
from ecokit.stack import Stack
from ecokit.status import stack_status
from ecokit.store.influx import InfluxV1
from ecokit.testing import SyncClient, free_port, wait_for, write_project
from ecokit.testing.docker_lane import DockerLane as Lane


def docker_project(folder: Path, lane: Lane, *, extra: dict[str, Any] | None = None) -> Path:
    config: dict[str, Any] = {"runtime": "docker", "broker": {"websockets": "off"}, "influxdb": {"version": 1},
                              "images": lane.images.config()}
    for key, value in (extra or {}).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return write_project(folder, devices=2, stack=f"dk{uuid.uuid4().hex[:8]}", extra=config)


@pytest.fixture
def docker_stack(tmp_path: Path, docker_lane: Lane, docker_host: str) -> Iterator[Path]:
    project = docker_project(tmp_path / "project", docker_lane)
    try:
        yield project
    finally:
        Stack.load(project, env={}).down(purge=True)


def telemetry(vehicle: str, seq: int) -> bytes:
    # Recent times: telemetry older than the database's retention (30 days) is refused by InfluxDB.
    start_ms = (int(time.time()) - 3600) * 1000
    return json.dumps({"v": 1, "vehicle": vehicle, "seq": seq, "ts": start_ms + seq * 1000,
                       "lat": 48.1 + seq / 1000, "lng": 11.5, "speed": 40.0 + seq, "heading": 90.0,
                       "fuel": 70.0, "odometer": 1000.0, "engine": True, "status": "moving"}).encode()


def count_points(stack: Stack, vehicle: str) -> int:
    with InfluxV1(stack.influx_endpoint("reader")) as client:
        rows = list(client.rows(f"SELECT count(\"seq\") FROM telemetry WHERE vehicle = '{vehicle}'"))
    return int(rows[0]["count"]) if rows else 0


def publish(stack: Stack, vehicle: str, seqs: range) -> None:
    host = stack.readiness().host
    user, password = stack.device_credentials(vehicle)
    with SyncClient(host, stack.config.broker.ports.mqtt, username=user, password=password) as client:
        reason, _, _ = client.connect()
        assert not reason.is_failure, reason
        for seq in seqs:
            client.publish(f"fleet/{vehicle}/telemetry", telemetry(vehicle, seq), qos=1)


def test_stack_lifecycle_on_a_real_engine(docker_stack: Path, docker_lane: Lane) -> None:
    stack = Stack.load(docker_stack, env={})
    names = StackNames(stack.config.stack)
    events: list[ServiceEvent] = []
    # broker, influxdb and ecokit's own services from the ecokit image
    services = [s.name for s in stack.plan("docker")]
    assert {"broker", "influxdb", "bridge", "processor", "shadow"} <= set(services)
    volumes = sorted(names.volume(s.name, v.name) for s in stack.plan("docker") for v in s.volumes)

    actions = stack.up(progress=events.append)
    assert actions == dict.fromkeys(services, "started")
    assert json.loads(stack.paths.state_file.read_text())["runtime"] == "docker"
    assert Stack.load(docker_stack, env={}).current_runtime() == "docker"
    assert {e.service for e in events if e.phase == "ready"} == set(services)

    # Every object is labelled and on the stack's own network.
    engine = docker_lane.engine
    labelled = docker_lane.leftovers(names.selector)
    assert sorted(labelled["containers"]) == sorted(names.container(s) for s in services)
    assert labelled["networks"] == [names.network]
    assert sorted(labelled["volumes"]) == volumes
    assert {names.volume("broker", "data"), names.volume("influxdb", "data"), names.volume("bridge", "spool")} <= set(
        volumes)
    broker = engine.container(names.container("broker"))
    assert broker is not None
    assert set(broker.attrs["NetworkSettings"]["Networks"]) == {names.network}
    # Secret files are 0600 and owned by the uid the service runs as; so are its volumes.
    out = broker.exec_run(["stat", "-c", "%u:%g %a %n", "/mosquitto/config/passwd", "/mosquitto/config/acl"])
    assert out.output.decode().split("\n")[:2] == ["1883:1883 600 /mosquitto/config/passwd",
                                                  "1883:1883 644 /mosquitto/config/acl"]
    bridge = engine.container(names.container("bridge"))
    assert bridge is not None
    out = bridge.exec_run(["stat", "-c", "%u %a", "/ecokit/config/bridge/bridge.json", "/var/lib/ecokit/spool"])
    assert out.output.decode().split() == ["10001", "600", "10001", "750"]

    status = stack_status(stack)
    assert status.state == "running"
    assert status.runtime == "docker"
    assert {s.name: s.state for s in status.services} == dict.fromkeys(services, "running")

    # publish -> broker -> bridge -> InfluxDB (containers talking over the stack network)
    publish(stack, "vehicle-0001", range(5))
    wait_for("5 telemetry points from the bridge", lambda: count_points(stack, "vehicle-0001") == 5, 30)
    wait_for("5 archived messages", lambda: archived(stack, "fleet/vehicle-0001/telemetry") == 5, 30)
    # ... -> `ecokit replay` reads the archive back and republishes through the broker.
    user, password = stack.service_credentials("ecokit-admin")
    with SyncClient("127.0.0.1", stack.config.broker.ports.internal, username=user,
                    password=password) as subscriber:
        subscriber.connect()
        subscriber.subscribe("replay/#", qos=1)
        assert main(["replay", "-c", str(docker_stack), "--since", "1h", "--topic", "fleet/vehicle-0001/telemetry",
                     "--speed", "max", "--prefix", "replay/"]) == 0
        got = subscriber.expect(5, timeout=20)
    assert {m.topic for m in got} == {"replay/fleet/vehicle-0001/telemetry"}
    assert sorted(json.loads(m.payload)["seq"] for m in got) == list(range(5))

    # Up twice: nothing changes, the same containers keep running.
    ids = {c: engine.container(names.container(c)).id for c in services}  # type: ignore[union-attr]
    assert Stack.load(docker_stack, env={}).up() == dict.fromkeys(services, "unchanged")
    assert ids == {c: engine.container(names.container(c)).id for c in ids}  # type: ignore[union-attr]

    # A registry change reloads Mosquitto (files copied in, SIGHUP) without a restart.
    devices_file = docker_stack.parent / "config" / "devices.yaml"
    registry = yaml.safe_load(devices_file.read_text())
    registry["devices"].append({"id": "truck-17"})
    devices_file.write_text(yaml.safe_dump(registry))
    stack = Stack.load(docker_stack, env={})
    assert stack.up()["broker"] == "reloaded"
    assert engine.container(names.container("broker")).id == ids["broker"]  # type: ignore[union-attr]
    publish(stack, "truck-17", range(2))
    wait_for("the new device's points", lambda: count_points(stack, "truck-17") == 2, 30)

    # A new geofence reaches the processor's container (copied in, SIGHUP), not a restart,
    # and its next fix inside gives an enter event.
    ring = [[11.49, 48.09], [11.51, 48.09], [11.51, 48.11], [11.49, 48.11], [11.49, 48.09]]
    stack.geofence_store().upsert({"type": "Feature", "id": "yard", "properties": {"name": "Yard"},
                                   "geometry": {"type": "Polygon", "coordinates": [ring]}})
    stack = Stack.load(docker_stack, env={})
    assert stack.up()["processor"] == "reloaded"
    assert engine.container(names.container("processor")).id == ids["processor"]  # type: ignore[union-attr]
    metrics = f"http://{stack.readiness().host}:{stack.config.service_ports.processor}/metrics"
    wait_for("the processor to load the new geofence",
             lambda: "ecokit_processor_geofences 1.0" in requests.get(metrics, timeout=5).text, timeout=20)
    with SyncClient("127.0.0.1", stack.config.broker.ports.internal, username=user,
                    password=password) as watcher:  # ecokit-admin: the internal listener
        watcher.connect()
        watcher.subscribe("fleet/vehicle-0002/events", qos=1)
        publish(stack, "vehicle-0002", range(2))  # telemetry() puts vehicles in Munich, inside the yard
        (event,) = watcher.expect(1, timeout=20)
    assert (json.loads(event.payload)["type"], json.loads(event.payload)["geofence"]) == ("geofence_enter", "yard")

    # Restarting the store keeps its data (named volume).
    stack.restart(["influxdb"])
    assert count_points(stack, "vehicle-0001") == 5

    # down: containers and network gone, volumes (data) kept; up again finds the data.
    assert sorted(stack.down()) == sorted(services)
    left = docker_lane.leftovers(names.selector)
    assert left["containers"] == []
    assert left["networks"] == []
    assert sorted(left["volumes"]) == volumes
    assert Stack.load(docker_stack, env={}).current_runtime() is None
    stack = Stack.load(docker_stack, env={})
    assert set(stack.up().values()) == {"started"}
    assert count_points(stack, "vehicle-0001") == 5

    # down --purge leaves nothing with the stack's label.
    stack.down(purge=True)
    assert docker_lane.leftovers(names.selector) == {"containers": [], "networks": [], "volumes": []}


def test_cli_up_status_logs_down(tmp_path: Path, docker_lane: Lane, docker_host: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Only broker and store (and the shadow service) here: the lifecycle test runs the rest.
    docker_stack = docker_project(tmp_path / "project", docker_lane,
                                  extra={"bridge": {"enabled": False}, "processor": {"enabled": False}})
    config = str(docker_stack)
    assert main(["up", "-c", config]) == 0
    out = capsys.readouterr().out
    assert "docker runtime" in out
    assert main(["status", "-c", config, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["runtime"] == "docker"
    assert status["state"] == "running"
    assert status["services"]["broker"]["container"].endswith("-broker")
    assert main(["logs", "broker", "-c", config, "-n", "5"]) == 0
    assert "New client connected" in capsys.readouterr().out
    assert main(["up", "-c", config]) == 0
    assert "nothing changed" in capsys.readouterr().out
    # Even with the state file lost, `down` finds the stack by its label.
    stack = Stack.load(docker_stack, env={})
    stack.paths.state_file.unlink()
    assert main(["down", "-c", config, "--purge"]) == 0
    assert docker_lane.leftovers(StackNames(stack.config.stack).selector) == {
        "containers": [], "networks": [], "volumes": []}


def _runtime(tmp_path: Path, lane: Lane) -> tuple[Stack, DockerRuntime]:
    stack = Stack.load(docker_project(tmp_path / "project", lane), env={})
    engine = Engine.connect({"DOCKER_HOST": lane.host})
    return stack, DockerRuntime(stack.docker_settings(), ReadinessContext("127.0.0.1"), engine=engine)


def test_readiness_timeout_names_the_service_and_shows_its_log(tmp_path: Path, docker_lane: Lane) -> None:
    stack, runtime = _runtime(tmp_path, docker_lane)
    port = free_port()
    spec = ServiceSpec(
        name="stuck", role="ecokit", description="never listens",
        ports=(PortSpec("http", 8080, port, "http"),),
        probe=Probe("tcp", "http", timeout=3.0),
        container=ContainerSpec(docker_lane.images.base, command=(
            "sh", "-c", "trap 'exit 0' TERM; echo starting stuck; echo 'fatal: cannot bind 0.0.0.0:8080' >&2; "
                        "sleep 300 & wait")),
    )
    try:
        with pytest.raises(ReadinessTimeout) as caught:
            runtime.up([spec], on_ready=lambda s: None)
        assert str(caught.value).startswith("stuck: not ready after 3s")
        assert "fatal: cannot bind 0.0.0.0:8080" in caught.value.log_tail
        assert "starting stuck" in caught.value.log_tail
        # Left stopped, not removed, so its log stays readable.
        assert "fatal: cannot bind" in "\n".join(runtime.logs("stuck", tail=10))
        assert runtime.status([spec])[0].state == "exited"
    finally:
        runtime.down(purge=True)
    assert docker_lane.leftovers(StackNames(stack.config.stack).selector) == {
        "containers": [], "networks": [], "volumes": []}


def test_crashing_service_fails_at_once_with_exit_code_and_log(tmp_path: Path, docker_lane: Lane) -> None:
    _, runtime = _runtime(tmp_path, docker_lane)
    spec = ServiceSpec(
        name="crashy", role="ecokit", description="exits",
        ports=(PortSpec("http", 8080, free_port(), "http"),),
        probe=Probe("tcp", "http", timeout=60.0),
        container=ContainerSpec(docker_lane.images.base, command=("sh", "-c", "echo 'config is broken' >&2; exit 3")),
    )
    started = time.monotonic()
    try:
        with pytest.raises(ServiceError) as caught:
            runtime.up([spec], on_ready=lambda s: None)
    finally:
        runtime.down(purge=True)
    assert time.monotonic() - started < 30
    assert not isinstance(caught.value, ReadinessTimeout)
    assert "crashy: stopped while starting (container exited with exit code 3)" in str(caught.value)
    assert "config is broken" in caught.value.log_tail


def test_tls_profile_places_certificates_readable_by_the_broker(tmp_path: Path, docker_lane: Lane,
                                                                docker_host: str) -> None:
    project = docker_project(tmp_path / "project", docker_lane, extra={"tls": {"plain_listener": False}})
    stack = Stack.load(project, profile="tls", env={})
    names = StackNames(stack.config.stack)
    try:
        # With no plain listener the readiness probe is an MQTT CONNECT over TLS: the
        # broker read its key (0600) as uid 1883.
        stack.up()
        broker = docker_lane.engine.container(names.container("broker"))
        assert broker is not None
        out = broker.exec_run(["stat", "-c", "%u %a %n", "/ecokit/certs/ca.pem", "/ecokit/certs/server.key",
                               "/ecokit/certs/server.pem"]).output.decode().split("\n")
        assert out[:3] == ["1883 644 /ecokit/certs/ca.pem", "1883 600 /ecokit/certs/server.key",
                           "1883 644 /ecokit/certs/server.pem"]
        # No device keys or the CA key in the container.
        listing = broker.exec_run(["find", "/ecokit/certs"]).output.decode()
        assert "ca.key" not in listing
        assert "clients" not in listing
    finally:
        Stack.load(project, env={}).down(purge=True)


def archived(stack: Stack, topic: str) -> int:
    with InfluxV1(stack.influx_endpoint("reader")) as client:
        rows = list(client.rows(f"SELECT count(\"qos\") FROM ecokit_archive.archive WHERE topic = '{topic}'"))
    return int(rows[0]["count"]) if rows else 0


def test_doctor_says_which_images_are_missing_and_how_to_get_them(tmp_path: Path, docker_lane: Lane,
                                                                  docker_host: str) -> None:
    from ecokit.doctor import check_images

    present = Stack.load(docker_project(tmp_path / "a", docker_lane), env={})
    assert [(c.level, c.detail) for c in check_images(present)] == [
        ("ok", f"all {len({s.container.image for s in present.plan('docker') if s.container})} images of the "
               "docker stack are present")]
    absent = Stack.load(docker_project(tmp_path / "b", docker_lane, extra={"images": {"ecokit": "ecokit/x:0.0.1"}}),
                        env={})
    [check] = check_images(absent)
    assert check.level == "warn"
    assert "ecokit/x:0.0.1" in check.detail
    assert check.fix == "docker build -f infra/Dockerfile -t ecokit/x:0.0.1 ."


def test_removing_what_is_already_gone_is_no_error(docker_lane: Lane) -> None:
    from ecokit.runtime.docker import ContainerConfig

    engine = docker_lane.engine
    name = f"ecokit-gone-{uuid.uuid4().hex[:8]}"
    network = engine.ensure_network(name, {"ecokit.stack": name})
    assert engine.ensure_network(name, {"ecokit.stack": name}).id == network.id  # found, not created twice
    volume = engine.ensure_volume(name, {"ecokit.stack": name})
    container = engine.create_container(ContainerConfig(name=name, image=docker_lane.images.base, network=name,
                                                        hostname="gone", labels={"ecokit.stack": name},
                                                        command=("true",), volumes=((name, "/data"),)))
    for _ in range(2):
        engine.stop(container)
        engine.remove(container)
    assert engine.state(container) == ("removed", None)
    for _ in range(2):
        engine.remove_network(network)
        engine.remove_volume(volume)
    assert docker_lane.leftovers({"ecokit.stack": name}) == {"containers": [], "networks": [], "volumes": []}
    with pytest.raises(EngineError, match=r"start .* failed \(HTTP 404\)"):
        engine.start(container)
