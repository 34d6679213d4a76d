"""Hole 2: one message stopped the fleet processor for good while every health signal
stayed green. Any exception in a message path is now caught per message, counted and
dead-lettered; a dead MQTT loop fails /healthz; `ecokit up` restarts an unhealthy service."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry
from security_support import client, healthz, metrics

from ecokit.bridge.contract import BridgeServiceConfig
from ecokit.bridge.service import Bridge
from ecokit.contract import load_service_config
from ecokit.daemon import MessageGuard, NetworkLoop
from ecokit.rules.engine import Message, Outcome
from ecokit.shadow.contract import ShadowServiceConfig
from ecokit.shadow.service import ShadowService
from ecokit.stack import Stack
from ecokit.status import stack_status
from ecokit.testing import free_port, wait_for

DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


def fix(vehicle: str, ts: Any, lat: float = 52.5) -> bytes:
    return json.dumps({"v": 1, "vehicle": vehicle, "ts": ts, "lat": lat, "lng": 13.4}).encode()


def processor_status(messages: list[Any], vehicle: str) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        doc = json.loads(m.payload)
        if m.topic == f"fleet/{vehicle}/status" and doc.get("source") == "processor":
            out.append(doc)
    return out


def test_poison_telemetry_does_not_stop_the_fleet_processor(stack: Stack) -> None:
    before = metrics(stack, "processor")
    now = int(time.time() * 1000)
    with client(stack) as admin, client(stack, "v1") as v1, client(stack, "v2") as v2, client(stack, "v3") as v3:
        admin.subscribe("fleet/+/status")
        v1.publish("fleet/v1/telemetry", DEEP, qos=1)  # RecursionError in json.loads
        v2.publish("fleet/v2/telemetry", fix("v2", now), qos=1)  # a valid fix...
        v2.publish("fleet/v2/telemetry", fix("v2", int("9" * 401)), qos=1)  # ...then an OverflowError
        v3.publish("fleet/v3/telemetry", fix("v3", now), qos=1)
        got = admin.expect(2, timeout=15)
        assert processor_status(got, "v2")[0]["state"] == "online"
        assert processor_status(got, "v3")[0]["state"] == "online", "still processing after the poison"
    assert healthz(stack, "processor") == 200
    after = metrics(stack, "processor")
    ignored = "ecokit_processor_messages_ignored_total"
    assert after[ignored] - before.get(ignored, 0) == 2


def test_the_shadow_service_answers_a_request_ten_thousand_deep_with_400(stack: Stack) -> None:
    deep = b'{"state":{"desired":' + DEEP + b"}}"
    with client(stack, "v1") as v1:
        v1.subscribe("things/v1/shadow/update/rejected")
        v1.subscribe("things/v1/shadow/update/accepted")
        v1.publish("things/v1/shadow/update", deep, qos=1)
        [rejected] = v1.expect(1, timeout=15)
        assert rejected.topic == "things/v1/shadow/update/rejected"
        assert json.loads(rejected.payload)["code"] == 400
        v1.publish("things/v1/shadow/update", b'{"state":{"reported":{"ok":true}}}', qos=1)
        [accepted] = v1.expect(1, timeout=15)
        assert accepted.topic == "things/v1/shadow/update/accepted"
    assert healthz(stack, "shadow") == 200


def paho_client(stack: Stack, user: str) -> mqtt.Client:
    username, password = stack.service_credentials(user)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{user}-{os.getpid()}", protocol=mqtt.MQTTv5)
    c.username_pw_set(username, password)
    return c


def test_a_handler_that_raises_is_counted_dead_lettered_and_its_loop_lives_on(stack: Stack) -> None:
    registry = CollectorRegistry()
    guard = MessageGuard("processor", registry, logging.getLogger("test"))
    handled: list[bytes] = []
    subscribed = threading.Event()

    def handler(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.payload == b"boom":
            raise ZeroDivisionError("a bug")
        handled.append(bytes(msg.payload))

    c = paho_client(stack, "ecokit-processor")
    c.on_message = guard.wrap(handler)
    c.on_connect = lambda cl, *_: cl.subscribe("fleet/+/diag", qos=1)
    c.on_subscribe = lambda *_: subscribed.set()
    c.connect_async("127.0.0.1", stack.config.broker.ports.internal)
    loop = NetworkLoop(c, logging.getLogger("test"))
    loop.start()
    try:
        assert subscribed.wait(10)
        with client(stack) as admin, client(stack, "v1") as v1:
            admin.subscribe("ecokit/deadletter/processor")
            v1.publish("fleet/v1/diag", b"boom", qos=1)
            v1.publish("fleet/v1/diag", b"after", qos=1)
            [letter] = admin.expect(1)
        wait_for("the message after the failure", lambda: handled == [b"after"], timeout=10)
        doc = json.loads(letter.payload)
        assert (doc["rule"], doc["reason"], doc["field"], doc["topic"]) == \
               ("processor", "error", "ZeroDivisionError", "fleet/v1/diag")
        assert registry.get_sample_value("ecokit_processor_messages_failed_total",
                                         {"reason": "ZeroDivisionError"}) == 1
        assert loop.alive()
    finally:
        loop.stop()


def test_a_dead_network_loop_fails_healthz(stack: Stack, tmp_path: Path) -> None:
    # The shadow service (a paho service) beside the stack's own: its own database, client id
    # and HTTP port. A callback that raises past the guard ends paho's loop; /healthz says so.
    config = load_service_config(stack.paths.service_config("shadow") / "shadow.json", ShadowServiceConfig)
    port = free_port()
    config = config.model_copy(update={
        "database": str(tmp_path / "shadows.sqlite3"), "session_expiry": 0,
        "mqtt": config.mqtt.model_copy(update={"client_id": f"ecokit-shadow-test-{port}"}),
        "http": config.http.model_copy(update={"port": port})})
    service = ShadowService(config)
    service.start()
    try:
        wait_for("the shadow service to subscribe", service.ready.is_set, timeout=10)
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200

        def unguarded(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            raise RuntimeError("what an unguarded callback does to paho's loop")

        assert service._client is not None
        service._client.on_message = unguarded
        with client(stack, "v1") as v1:
            v1.publish("things/v1/shadow/get", b"{}", qos=1)
        wait_for("/healthz to fail", lambda: requests.get(f"http://127.0.0.1:{port}/healthz",
                                                            timeout=5).status_code == 503, timeout=10)
        assert not service.is_alive()
    finally:
        service.stop()


def test_up_restarts_a_service_that_fails_its_health_check(stack: Stack) -> None:
    state = json.loads(stack.paths.state_file.read_text())
    pid = int(state["services"]["processor"]["pid"])
    os.kill(pid, signal.SIGSTOP)  # it answers nothing now, /healthz included
    try:
        status = {s.name: s for s in stack_status(Stack.load(stack.loaded.config_file, env={})).services}
        assert status["processor"].state == "unhealthy"
        actions = Stack.load(stack.loaded.config_file, env={}).up()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert actions["processor"] == "restarted"
    assert {a for name, a in actions.items() if name != "processor"} == {"unchanged"}
    new_pid = int(json.loads(stack.paths.state_file.read_text())["services"]["processor"]["pid"])
    assert new_pid != pid
    assert healthz(stack, "processor") == 200
    status = {s.name: s for s in stack_status(Stack.load(stack.loaded.config_file, env={})).services}
    assert status["processor"].state == "running"


@pytest.mark.parametrize("service", ["bridge", "processor", "shadow"])
def test_healthy_services_answer_healthz(stack: Stack, service: str) -> None:
    assert healthz(stack, service) == 200


def test_a_message_whose_evaluation_raises_is_dead_lettered_by_the_bridge(stack: Stack, tmp_path: Path) -> None:
    config = load_service_config(stack.paths.service_config("bridge") / "bridge.json", BridgeServiceConfig)
    config = config.model_copy(update={"spool_dir": str(tmp_path / "spool")})
    bridge = Bridge(config, log=logging.getLogger("test"))
    bridge.mqtt.client_id = f"test-bridge-{os.getpid()}"  # not the running bridge's session
    real = bridge.engine.evaluate

    def evaluate(msg: Message) -> list[Outcome]:
        if msg.payload == b"boom":
            raise KeyError("a bug in a rule")
        return real(msg)

    bridge.engine.evaluate = evaluate  # type: ignore[method-assign]
    stop = threading.Event()
    runner = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for("the test bridge to subscribe", bridge.is_ready, timeout=10)
        with client(stack) as admin, client(stack, "v1") as v1:
            admin.subscribe("ecokit/deadletter/bridge")
            v1.publish("fleet/v1/diag", b"boom", qos=1)  # archived only (events/alerts are the processor's)
            v1.publish("fleet/v1/diag", b"fine", qos=1)
            [letter] = admin.expect(1)
        doc = json.loads(letter.payload)
        assert (doc["rule"], doc["reason"], doc["field"]) == ("bridge", "error", "KeyError")
        assert base64.b64decode(doc["payload"]) == b"boom"
        wait_for("the next message archived", lambda: bridge.registry.get_sample_value(
            "ecokit_bridge_points_written_total") == 2, timeout=10)  # "boom"'s archive point + "fine"
        assert bridge.is_alive()
    finally:
        stop.set()
        runner.join(20)
