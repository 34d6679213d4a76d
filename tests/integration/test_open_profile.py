"""Profile open, the sandbox for third-party client suites, against a real Mosquitto: clients
without credentials run an interoperability-style suite (Eclipse Paho's topics, wildcards,
retained messages, QoS, zero-length client ids) while ecokit's service topics stay closed
to them and devices keep their ACL."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecokit.cli import main
from ecokit.stack import Stack
from ecokit.testing import SyncClient, running_stack, write_project

# The topics of the Paho interoperability suite (client_test.py's "topics" and "wildtopics").
TOPICS = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
WILDCARDS = {"TopicA/+": {"TopicA/B", "TopicA/C"}, "+/C": {"Topic/C", "TopicA/C"}, "#": set(TOPICS),
             "/#": {"/TopicA"}, "TopicA/#": {"TopicA", "TopicA/B", "TopicA/C"}}


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = write_project(tmp_path_factory.mktemp("open"), devices=["dev-1", "dev-2"], stack="opensandbox")
    with running_stack(config, profile="open") as stack:
        yield stack


def address(stack: Stack) -> tuple[str, int]:
    host, port = stack.broker_endpoints()["mqtt"].removeprefix("mqtt://").rsplit(":", 1)
    return host, int(port)


def anonymous(stack: Stack) -> SyncClient:
    client = SyncClient(*address(stack), client_id=f"interop-{uuid.uuid4().hex[:8]}")
    reason, _, _ = client.connect()
    assert not reason.is_failure, f"the open broker refused a client without credentials: {reason}"
    return client


def as_user(stack: Stack, username: str, password: str) -> SyncClient:
    client = SyncClient(*address(stack), username=username, password=password)
    reason, _, _ = client.connect()
    assert not reason.is_failure
    return client


def test_status_and_up_say_loudly_that_the_broker_is_open(open_stack: Stack, capsys: pytest.CaptureFixture[str]) \
        -> None:
    config = str(open_stack.loaded.config_file)
    assert main(["status", "-c", config]) == 0
    captured = capsys.readouterr()
    assert "OPEN BROKER" in captured.err
    assert "profile open" in captured.out
    assert main(["up", "-c", config, "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["open_broker"] is True
    assert doc["profile"] == "open", "the recorded profile stays active"
    assert "OPEN BROKER" in captured.err


def test_an_interoperability_suite_runs_without_credentials(open_stack: Stack) -> None:
    with anonymous(open_stack) as sub, anonymous(open_stack) as pub:
        for pattern, expected in WILDCARDS.items():
            sub.subscribe(pattern, 2)
            for topic in TOPICS:
                pub.publish(topic, f"{pattern}:{topic}".encode(), qos=1)
            got = sub.expect(len(expected), timeout=5) + sub.drain(0.3)
            assert {m.topic for m in got} == expected, pattern
            sub.unsubscribe(pattern)
        # Retained messages on every topic, delivered through "#", then cleared.
        for qos, topic in enumerate(TOPICS[:3]):
            pub.publish(topic, f"retained qos {qos}".encode(), qos=qos, retain=True)
        time.sleep(0.3)
        with anonymous(open_stack) as late:
            late.subscribe("#", 2)
            retained = {m.topic for m in late.expect(3) if m.retain}
            assert retained == set(TOPICS[:3])
        for topic in TOPICS[:3]:
            pub.publish(topic, b"", qos=1, retain=True)
        # QoS 0, 1 and 2 round trips.
        sub.subscribe("TopicA/B", 2)
        for qos in (0, 1, 2):
            pub.publish("TopicA/B", f"qos{qos}".encode(), qos=qos)
        assert sorted(m.qos for m in sub.expect(3)) == [0, 1, 2]
    # A zero-length client id with a clean session is accepted (MQTT 3.1.1 [MQTT-3.1.3-6]).
    from ecokit.conformance import raw

    with raw.RawConnection(*address(open_stack)) as conn:
        conn.send(raw.connect("", clean=True))
        assert conn.expect(raw.CONNACK).reason() == 0


def test_service_topics_and_sys_writes_stay_closed(open_stack: Stack) -> None:
    admin_user, admin_password = open_stack.service_credentials("ecokit-admin")
    with anonymous(open_stack) as stranger, as_user(open_stack, admin_user, admin_password) as admin:
        admin.subscribe("ecokit/#", 1)
        admin.subscribe("things/+/shadow/#", 1)
        for topic in ("ecokit/deadletter/telemetry", "things/dev-1/shadow/update/accepted",
                      "things/dev-1/shadow/name/cfg/get/rejected", "$SYS/broker/forged"):
            reason = stranger.publish(topic, b'{"forged": true}', qos=1)
            assert reason is not None
            assert reason.is_failure, f"an anonymous client published to {topic}"
        assert admin.drain(0.5) == []
        # A dead letter the bridge publishes reaches the admin, never an anonymous `#`.
        stranger.subscribe("#", 1)
        stranger.publish("fleet/dev-9/telemetry", b"not json", qos=1)
        letters = [m for m in admin.expect(1, timeout=10) if m.topic.startswith("ecokit/deadletter/")]
        assert letters, "the bridge dead-lettered the bad message"
        seen = stranger.drain(1.0)
        assert [m.topic for m in seen if m.topic.startswith("ecokit/")] == []
        assert "fleet/dev-9/telemetry" in {m.topic for m in seen}


def test_devices_keep_their_acl_on_an_open_broker(open_stack: Stack) -> None:
    username, password = open_stack.device_credentials("dev-1")
    with as_user(open_stack, username, password) as device, anonymous(open_stack) as watcher:
        watcher.subscribe("fleet/#", 1)
        denied = device.publish("fleet/dev-2/telemetry", b"{}", qos=1)
        assert denied is not None
        assert denied.is_failure
        assert watcher.drain(0.5) == []
        refused = SyncClient(*address(open_stack), username="dev-1", password="wrong-password")
        reason, _, _ = refused.connect()
        refused.disconnect()
        assert reason.is_failure, "a wrong password is still refused: credentials, when given, are checked"


def test_the_conformance_command_runs_anonymously_against_the_sandbox(open_stack: Stack, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    url = open_stack.broker_endpoints()["mqtt"]
    junit = tmp_path / "junit.xml"
    code = main(["conformance", "--broker", url, "--area", "topics", "--area", "retained", "--area", "TLS",
                 "--area", "authorization", "--json", "--junit", str(junit)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, [c for c in report["checks"] if c["outcome"] == "failed"]
    assert report["passed"] is True
    assert report["areas"]["TLS"]["skipped"] == 2, "no TLS listener: skipped with the reason"
    assert report["areas"]["authorization"]["skipped"] == 4, "no restricted user given"
    assert report["areas"]["topics"]["passed"] == 4
    import xml.etree.ElementTree as ET

    root = ET.parse(junit).getroot()
    assert int(root.get("tests", "0")) == len(report["checks"])
    assert {s.get("name") for s in root} == {"topics", "retained", "authorization", "TLS"}
