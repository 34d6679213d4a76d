"""The device-side helper, driven by the real state machine (no broker)."""

from __future__ import annotations

import json
from typing import Any

from ecokit.shadow import machine
from ecokit.shadow.device import IGNORE, DeviceShadow, Message
from ecokit.shadow.machine import ShadowKey, ShadowRecord
from ecokit.shadow.topics import key_prefix, parse_request


class FakeService:
    """The state machine plus topic routing: what the shadow service would answer."""

    def __init__(self) -> None:
        self.records: dict[ShadowKey, ShadowRecord] = {}
        self.now = 1000

    def send(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        request = parse_request(topic)
        assert request is not None, topic
        self.now += 1
        out = machine.handle(request.key, request.operation, self.records.get(request.key), payload, self.now)
        if out.record is not None:
            self.records[request.key] = out.record
        return [(f"{key_prefix(request.key)}/{r.suffix}", r.payload) for r in out.responses]


def exchange(service: FakeService, device: DeviceShadow, messages: list[Message]) -> int:
    """Deliver messages to the service and its answers back to the device until quiet."""
    rounds = 0
    pending = list(messages)
    while pending:
        rounds += 1
        assert rounds < 20, "device and service keep talking: a loop"
        replies = [r for m in pending for r in service.send(m.topic, m.payload)]
        pending = [out for topic, payload in replies if device.wants(topic)
                   for out in device.handle(topic, payload)]
    return rounds


def app_update(service: FakeService, thing: str, desired: dict[str, Any]) -> list[tuple[str, bytes]]:
    return service.send(f"things/{thing}/shadow/update", json.dumps({"state": {"desired": desired}}).encode())


def test_a_desired_change_is_applied_and_reported_back() -> None:
    service = FakeService()
    applied: list[Any] = []
    device = DeviceShadow("vehicle-0001")
    device.on("publish_interval", lambda v: applied.append(v) or v)
    exchange(service, device, [device.report({"engine": True, "publish_interval": 5, "firmware": "1.0"})])
    replies = app_update(service, "vehicle-0001", {"publish_interval": 2})
    delta = [(t, p) for t, p in replies if t.endswith("/update/delta")]
    assert len(delta) == 1
    reports = device.handle(*delta[0])
    assert applied == [2]
    exchange(service, device, reports)
    record = service.records[ShadowKey("vehicle-0001")]
    assert record.state["reported"] == {"engine": True, "publish_interval": 2, "firmware": "1.0"}
    assert record.delta() == ({}, {})
    assert device.reported["publish_interval"] == 2


def test_a_clamped_value_is_reported_once_and_does_not_loop() -> None:
    service = FakeService()
    device = DeviceShadow("vehicle-0001")
    device.on("publish_interval", lambda v: max(1, v))
    exchange(service, device, [device.report({"publish_interval": 5})])
    replies = app_update(service, "vehicle-0001", {"publish_interval": 0})
    reports = [m for t, p in replies if device.wants(t) for m in device.handle(t, p)]
    assert [json.loads(m.payload)["state"] for m in reports] == [{"reported": {"publish_interval": 1}}]
    exchange(service, device, reports)
    # A later sync sees the same delta again and reports nothing new.
    assert exchange(service, device, [device.sync()]) == 1


def test_sync_applies_a_delta_built_up_while_offline() -> None:
    service = FakeService()
    device = DeviceShadow("vehicle-0002")
    device.on("publish_interval", lambda v: v)
    exchange(service, device, [device.report({"publish_interval": 5})])
    app_update(service, "vehicle-0002", {"publish_interval": 30})
    exchange(service, device, [device.sync()])
    assert service.records[ShadowKey("vehicle-0002")].state["reported"] == {"publish_interval": 30}


def test_keys_without_handler_or_ignored_are_not_reported() -> None:
    service = FakeService()
    device = DeviceShadow("v")
    device.on("mode", lambda v: IGNORE)
    exchange(service, device, [device.report({"x": 1})])
    replies = app_update(service, "v", {"mode": "eco", "other": 1})
    assert [m for t, p in replies if device.wants(t) for m in device.handle(t, p)] == []
    assert device.desired == {"mode": "eco", "other": 1}


def test_on_delta_fallback_can_apply_any_key() -> None:
    device = DeviceShadow("v", on_delta=lambda delta: {k: v for k, v in delta.items() if k == "led"})
    payload = json.dumps({"state": {"led": "on", "x": 1}, "version": 3}).encode()
    messages = device.handle("things/v/shadow/update/delta", payload)
    assert [json.loads(m.payload)["state"] for m in messages] == [{"reported": {"led": "on"}}]


def test_deltas_older_than_the_known_version_are_dropped() -> None:
    device = DeviceShadow("v")
    device.on("a", lambda v: v)
    newer = json.dumps({"state": {"a": 2}, "version": 5}).encode()
    older = json.dumps({"state": {"a": 1}, "version": 4}).encode()
    assert device.handle("things/v/shadow/update/delta", newer)
    assert device.handle("things/v/shadow/update/delta", older) == []
    assert device.version == 5


def test_get_404_is_quiet_and_other_rejections_are_kept() -> None:
    device = DeviceShadow("v", "cfg")
    assert device.prefix == "things/v/shadow/name/cfg"
    assert device.handle("things/v/shadow/name/cfg/get/rejected",
                         b'{"code":404,"message":"No shadow exists with name: \'cfg\'"}') == []
    device.handle("things/v/shadow/name/cfg/update/rejected", b'{"code":409,"message":"Version conflict"}')
    assert device.last_rejection is not None
    assert device.last_rejection.code == 409


def test_non_json_and_foreign_topics_are_ignored() -> None:
    device = DeviceShadow("v")
    assert device.handle("things/v/shadow/update/delta", b"not json") == []
    assert not device.wants("things/w/shadow/update/delta")
    assert device.wants("things/v/shadow/update/delta")


def test_client_tokens_are_unique_and_fit_the_limit() -> None:
    device = DeviceShadow("v" * 128)
    tokens = {json.loads(device.sync().payload)["clientToken"] for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t.encode()) <= machine.MAX_CLIENT_TOKEN_BYTES for t in tokens)
