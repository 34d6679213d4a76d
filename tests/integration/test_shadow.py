"""Device shadows end to end: a real stack (mosquitto + shadow service), devices and an app."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ecokit.cli import main
from ecokit.clients import shadow_client
from ecokit.runtime import process
from ecokit.shadow.client import ShadowClient
from ecokit.shadow.device import DeviceShadow
from ecokit.stack import Stack
from ecokit.testing import Received, SyncClient, wait_for

DEVICE, OTHER = "vehicle-0001", "vehicle-0002"


def broker_address(stack: Stack) -> tuple[str, int]:
    host_port = stack.broker_endpoints()["mqtt"].split("://", 1)[1]
    host, _, port = host_port.rpartition(":")
    return host, int(port)


def device_client(stack: Stack, device: str, **kwargs: Any) -> SyncClient:
    user, password = stack.device_credentials(device)
    client = SyncClient(*broker_address(stack), username=user, password=password, **kwargs)
    reason, _, _ = client.connect()
    assert not reason.is_failure, reason
    return client


@pytest.fixture
def app(running: Stack) -> Iterator[ShadowClient]:
    with shadow_client(running).connect() as client:
        yield client


class Vehicle:
    """A simulated device driving DeviceShadow over its own MQTT connection."""

    def __init__(self, stack: Stack, device: str) -> None:
        self.shadow = DeviceShadow(device)
        self.interval = 5
        self.applied = threading.Event()
        self.shadow.on("publish_interval", self._apply)
        self.client = device_client(stack, device)
        for topic in self.shadow.subscriptions():
            self.client.subscribe(topic)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _apply(self, value: Any) -> Any:
        self.interval = max(1, int(value))
        self.applied.set()
        return self.interval

    def publish(self, message: Any) -> None:
        self.client.publish(message.topic, message.payload, qos=1)

    def _loop(self) -> None:
        while not self.stop.is_set():
            for msg in self.client.drain(0.1):
                for out in self.shadow.handle(msg.topic, msg.payload):
                    self.publish(out)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.disconnect()


def test_device_and_app_exchange_desired_reported_and_delta(running: Stack, app: ShadowClient) -> None:
    vehicle = Vehicle(running, DEVICE)
    try:
        vehicle.publish(vehicle.shadow.report({"engine": True, "publish_interval": 5, "firmware": "1.4.2"}))
        wait_for("the device's first report", lambda: app.get(DEVICE).accepted, 5.0)
        reply = app.update(DEVICE, desired={"publish_interval": 2})
        assert reply.accepted
        assert vehicle.applied.wait(5), "the device never received the delta"
        assert vehicle.interval == 2

        def converged() -> dict[str, Any] | None:
            doc = app.get(DEVICE).document
            return doc if doc["state"]["reported"].get("publish_interval") == 2 else None

        doc = wait_for("publish_interval reported back", converged, 5.0)
        assert doc["state"]["reported"] == {"engine": True, "publish_interval": 2, "firmware": "1.4.2"}
        assert "delta" not in doc["state"]
        assert doc["version"] == 3
        assert doc["metadata"]["reported"]["publish_interval"]["timestamp"] >= \
            doc["metadata"]["desired"]["publish_interval"]["timestamp"]
    finally:
        vehicle.close()


def test_app_sees_every_reply_topic_and_version_conflicts(running: Stack, app: ShadowClient) -> None:
    user, password = running.service_credentials("ecokit-admin")
    with SyncClient(*broker_address(running), username=user, password=password) as watcher:
        watcher.connect()
        watcher.subscribe("things/vehicle-0003/shadow/name/config/#")
        first = app.update("vehicle-0003", name="config", desired={"mode": "eco"})
        assert first.version == 1
        conflict = app.update("vehicle-0003", name="config", desired={"mode": "sport"}, version=0)
        assert conflict.code == 409
        assert conflict.document["message"] == "Version conflict"
        seen = watcher.expect(6) + watcher.drain(0.5)
        topics = sorted(m.topic.removeprefix("things/vehicle-0003/shadow/name/config/") for m in seen)
        assert topics == ["update", "update", "update/accepted", "update/delta", "update/documents",
                          "update/rejected"]
    deleted = app.delete("vehicle-0003", name="config")
    assert deleted.accepted
    assert deleted.version == 1
    assert app.get("vehicle-0003", name="config").code == 404
    assert app.update("vehicle-0003", name="config", reported={"mode": "eco"}).version == 2


def test_a_device_reaches_only_its_own_shadows(running: Stack, app: ShadowClient) -> None:
    app.update(OTHER, desired={"publish_interval": 10})
    with device_client(running, DEVICE) as intruder:
        # Subscribing to another device's replies: Mosquitto's acl_file grants the SUBACK but
        # never delivers; a stricter broker refuses. Either way nothing may arrive.
        intruder.subscribe(f"things/{OTHER}/shadow/#")
        intruder.subscribe(f"things/{OTHER}/shadow/name/+/update/delta")
        intruder.publish(f"things/{OTHER}/shadow/update", json.dumps(
            {"state": {"desired": {"publish_interval": 999}}, "clientToken": "intruder"}), qos=1)
        intruder.publish(f"things/{OTHER}/shadow/delete", b"", qos=1)
        intruder.publish(f"things/{OTHER}/shadow/name/config/update", b'{"state":{"reported":{"x":1}}}', qos=1)
        app.update(OTHER, desired={"publish_interval": 11})
        leaked: list[Received] = intruder.drain(1.5)
        assert leaked == [], [m.topic for m in leaked]
    doc = app.get(OTHER).document
    assert doc["state"]["desired"] == {"publish_interval": 11}
    assert doc["version"] == 2
    assert app.get(OTHER, name="config").code == 404
    # The device can still use its own classic and named shadows.
    with device_client(running, DEVICE) as own:
        own.subscribe(f"things/{DEVICE}/shadow/name/config/update/accepted")
        own.publish(f"things/{DEVICE}/shadow/name/config/update", b'{"state":{"reported":{"x":1}}}', qos=1)
        (accepted,) = own.expect(1)
        assert json.loads(accepted.payload)["version"] == 1


def shadow_pid(stack: Stack) -> process.ProcessRef:
    entry = json.loads(stack.paths.state_file.read_text())["services"]["shadow"]
    return process.ProcessRef(int(entry["pid"]), int(entry["start_ticks"]))


def test_state_survives_a_restart_and_requests_sent_while_down_are_answered(
        running: Stack, app: ShadowClient) -> None:
    app.update(DEVICE, desired={"publish_interval": 7}, reported={"engine": False})
    running.restart(["shadow"])
    doc = app.get(DEVICE, timeout=10).document
    assert doc["state"]["desired"] == {"publish_interval": 7}
    assert doc["version"] == 1
    # Stopped outright (by its recorded pid): its persistent session queues the request.
    with device_client(running, DEVICE) as device:
        device.subscribe(f"things/{DEVICE}/shadow/update/accepted")
        assert process.stop(shadow_pid(running))
        device.publish(f"things/{DEVICE}/shadow/update", b'{"state":{"reported":{"engine":true}}}', qos=1)
        assert device.drain(0.5) == []
        Stack.load(running.loaded.path("ecokit.yaml"), env={}).up("local")
        (accepted,) = device.expect(1, timeout=15)
        assert json.loads(accepted.payload)["version"] == 2
    assert app.get(DEVICE).document["state"]["reported"] == {"engine": True}


def test_metrics_and_health_endpoints(running: Stack, app: ShadowClient) -> None:
    app.update(DEVICE, reported={"engine": True})
    base = f"http://127.0.0.1:{running.config.service_ports.shadow}"
    with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'ecokit_shadow_requests_total{operation="update",result="accepted"}' in text
    assert "ecokit_shadow_mqtt_connected 1.0" in text


def test_cli_update_get_delete(running: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(running.loaded.path("ecokit.yaml"))
    assert main(["shadow", "update", DEVICE, "--desired", '{"publish_interval": 3}', "-c", config]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert main(["shadow", "update", DEVICE, "--reported", '{"publish_interval": 3}', "--version", "0",
                 "-c", config]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["code"] == 409
    assert "update/rejected" in captured.err
    assert main(["shadow", "get", DEVICE, "-c", config]) == 0
    assert json.loads(capsys.readouterr().out)["state"]["delta"] == {"publish_interval": 3}
    assert main(["shadow", "get", DEVICE, "--name", "nope", "-c", config]) == 1
    assert json.loads(capsys.readouterr().out)["code"] == 404
    assert main(["shadow", "delete", DEVICE, "-c", config]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert main(["shadow", "update", DEVICE, "--desired", "[1]", "-c", config]) == 2


def test_paho_binding_reports_on_connect_and_applies_deltas(running: Stack, app: ShadowClient) -> None:
    from paho.mqtt.enums import CallbackAPIVersion

    from ecokit.shadow.device import PahoDeviceShadow

    user, password = running.device_credentials(OTHER)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{OTHER}-test", protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    applied: list[int] = []
    shadow = DeviceShadow(OTHER, handlers={"publish_interval": lambda v: applied.append(v) or v})
    binding = PahoDeviceShadow(client, shadow, initial_report=lambda: {"publish_interval": 5, "engine": True})
    binding.attach()
    client.connect(*broker_address(running))
    client.loop_start()
    try:
        wait_for("the initial report", lambda: app.get(OTHER).accepted, 5.0)
        app.update(OTHER, desired={"publish_interval": 9})
        wait_for("the delta applied", lambda: applied == [9], 5.0)
        wait_for("the applied value reported",
                 lambda: app.get(OTHER).document["state"]["reported"]["publish_interval"] == 9, 5.0)
        binding.report({"engine": False, "publish_interval": 9})
        wait_for("engine off", lambda: app.get(OTHER).document["state"]["reported"]["engine"] is False, 5.0)
    finally:
        client.disconnect()
        client.loop_stop()
