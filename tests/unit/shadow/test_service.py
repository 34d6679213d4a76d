"""The shadow service's message handling and its place in the plan (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from ecokit.services.spec import ServiceSpec
from ecokit.shadow.contract import ShadowServiceConfig
from ecokit.shadow.machine import ShadowKey, ShadowRecord
from ecokit.shadow.service import ShadowService
from ecokit.shadow.store import ShadowStore
from ecokit.shadow.topics import parse_request, reply_topics
from ecokit.stack import Stack
from ecokit.testing import write_project


def make_service(tmp_path: Path, clock: float = 1_700_000_000.0) -> ShadowService:
    config = ShadowServiceConfig(
        stack="t", mqtt={"host": "127.0.0.1", "port": 1, "username": "ecokit-shadow", "password": "pw",
                         "client_id": "cid"},
        database=str(tmp_path / "db" / "shadows.sqlite3"), http={"host": "127.0.0.1", "port": 0})
    return ShadowService(config, clock=lambda: clock)


def test_requests_are_answered_on_the_shadow_reply_topics(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    replies = service.handle("things/v1/shadow/name/cfg/update", b'{"state":{"desired":{"a":1}}}')
    assert [t for t, _ in replies] == ["things/v1/shadow/name/cfg/update/accepted",
                                       "things/v1/shadow/name/cfg/update/delta",
                                       "things/v1/shadow/name/cfg/update/documents"]
    got = service.handle("things/v1/shadow/name/cfg/get", b"")
    assert json.loads(got[0][1])["state"]["delta"] == {"a": 1}
    assert service.handle("things/v1/shadow/get", b"")[0][0] == "things/v1/shadow/get/rejected"


@pytest.mark.parametrize("topic", ["things/v1/shadow/update/accepted", "things/v1/shadow/list",
                                   "fleet/v1/telemetry", "things/v1/shadow/name/x/update/delta"])
def test_other_topics_are_not_requests(tmp_path: Path, topic: str) -> None:
    assert make_service(tmp_path).handle(topic, b"{}") == []


def test_state_survives_a_new_service_on_the_same_database(tmp_path: Path) -> None:
    first = make_service(tmp_path)
    first.handle("things/v1/shadow/update", b'{"state":{"reported":{"engine":true}}}')
    first.handle("things/v1/shadow/update", b'{"state":{"reported":{"firmware":"1.2"}}}')
    first.store.close()
    second = make_service(tmp_path, clock=1_700_000_100.0)
    doc = json.loads(second.handle("things/v1/shadow/get", b"")[0][1])
    assert doc["state"]["reported"] == {"engine": True, "firmware": "1.2"}
    assert doc["version"] == 2
    accepted = json.loads(second.handle("things/v1/shadow/update", b'{"state":{"reported":{}},"version":2}')[0][1])
    assert accepted["version"] == 3


def test_metrics_count_requests_and_rejections(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    service.handle("things/v1/shadow/update", b'{"state":{"reported":{"a":1}}}')
    service.handle("things/v1/shadow/update", b'{"state":{"reported":{"a":1}},"version":9}')
    text = generate_latest(service.metrics.registry).decode()
    assert 'ecokit_shadow_requests_total{operation="update",result="accepted"} 1.0' in text
    assert 'ecokit_shadow_rejections_total{code="409"} 1.0' in text
    assert "ecokit_shadow_shadows 1.0" in text


def test_store_round_trips_records_and_tombstones(tmp_path: Path) -> None:
    with ShadowStore(tmp_path / "s.sqlite3") as store:
        live = ShadowRecord(state={"reported": {"a": [1, "é"]}}, metadata={"reported": {"a": [{"timestamp": 1}] * 2}},
                            version=3, timestamp=1)
        store.put(ShadowKey("t"), live)
        store.put(ShadowKey("t", "n"), ShadowRecord(version=7, timestamp=2, deleted_at=2))
        assert store.get(ShadowKey("t")) == live
        assert store.get(ShadowKey("t", "n")) == ShadowRecord(version=7, timestamp=2, deleted_at=2)
        assert store.get(ShadowKey("x")) is None
        assert store.count() == 1
        assert store.keys() == [ShadowKey("t")]


def test_topic_parsing() -> None:
    request = parse_request("things/a:b/shadow/name/$cfg/delete")
    assert request is not None
    assert (request.key, request.operation) == (ShadowKey("a:b", "$cfg"), "delete")
    assert parse_request("things/a/shadow/patch") is None
    assert parse_request("$aws/things/a/shadow/get") is None
    assert reply_topics("a")["update/delta"] == "things/a/shadow/update/delta"


def shadow_spec(tmp_path: Path, extra: dict[str, object] | None = None) -> tuple[Stack, ServiceSpec]:
    stack = Stack.load(write_project(tmp_path / "p", devices=1, extra=extra), env={})
    return stack, next(s for s in stack.plan("local") if s.name == "shadow")


def test_the_plan_runs_the_shadow_service_after_the_broker(tmp_path: Path) -> None:
    stack, spec = shadow_spec(tmp_path)
    names = [s.name for s in stack.plan("local")]
    assert names.index("shadow") > names.index("broker")
    assert spec.local is not None
    assert spec.local.python
    assert spec.local.binary == "ecokit.shadow.service"
    assert spec.probe is not None
    assert spec.probe.path == "/readyz"
    assert spec.port("http").host == stack.config.service_ports.shadow
    (config_file,) = spec.files
    assert config_file.secret
    assert config_file.mode == 0o600
    config = json.loads(config_file.content)
    assert config["mqtt"]["username"] == "ecokit-shadow"
    assert config["mqtt"]["password"] == stack.service_credentials("ecokit-shadow")[1]
    assert config["mqtt"]["port"] == stack.config.broker.ports.mqtt
    assert config["database"].startswith(str(stack.paths.data_dir / "shadow"))


def test_without_a_plain_listener_the_service_uses_mqtts_and_its_client_cert(tmp_path: Path) -> None:
    _, spec = shadow_spec(tmp_path, {"tls": {"enabled": True, "mtls": True, "plain_listener": False}})
    broker = json.loads(spec.files[0].content)["mqtt"]
    assert broker["tls"] is True
    assert broker["ca"].endswith("ca.pem")
    assert broker["cert"].endswith("clients/ecokit-shadow.pem")


def test_docker_plan_uses_the_ecokit_image_and_service_names(tmp_path: Path) -> None:
    stack = Stack.load(write_project(tmp_path / "p", devices=1), env={})
    spec = next(s for s in stack.plan("docker") if s.name == "shadow")
    assert spec.container is not None
    assert spec.container.image == stack.config.images.ecokit
    config = json.loads(spec.files[0].content)
    assert config["mqtt"]["host"] == "broker"
    assert config["mqtt"]["port"] == 1883
    assert config["http"]["host"] == "0.0.0.0"
