"""Hole 4: points InfluxDB refused vanished (a "partial write" was counted as written). The
rules now refuse what InfluxDB cannot store before writing (integer range, floats beyond
1e308, strings over 1 MiB, series keys over 64 KiB), and a point InfluxDB still refuses (a
field type conflict) is counted as dropped with the reason and dead-lettered."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
from security_support import DEVICES, client, count, metrics, telemetry

from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1
from ecokit.testing import SyncClient, running_stack, wait_for, write_project

PROBE_RULE = {"probe": {
    "topic": "lab/+/probe", "measurement": "probe", "tags": {"id": {"from": "topic", "segment": 2}},
    "fields": {"value": {"type": "float"}}, "time": {"from": "payload", "path": "ts", "unit": "ms"},
}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, server_binaries: None) -> Iterator[Stack]:
    project = write_project(tmp_path_factory.mktemp("refused"), devices=DEVICES,
                            users=[{"username": "lab-app", "publish": ["lab/#"]}],
                            extra={"bridge": {"flush_ms": 200, "batch_size": 500}, "rules": PROBE_RULE})
    with running_stack(project) as running:
        yield running


def test_a_401_digit_number_is_dead_lettered_with_its_payload_not_written(stack: Stack) -> None:
    base = int(time.time() * 1000) - 600_000
    started = time.time_ns()
    bad = telemetry("v1", 1, base + 1).replace(b'"speed": 40.0', b'"speed": ' + b"9" * 401)
    before = metrics(stack, "bridge")
    with client(stack) as admin, client(stack, "v1") as v1:
        admin.subscribe("ecokit/deadletter/#")
        v1.publish("fleet/v1/telemetry", bad, qos=1)
        v1.publish("fleet/v1/telemetry", telemetry("v1", 2, base + 2), qos=1)
        [letter] = admin.expect(1)
    doc = json.loads(letter.payload)
    assert (doc["rule"], doc["reason"], doc["field"]) == ("telemetry", "out_of_range", "speed")
    assert base64.b64decode(doc["payload"]) == bad
    wait_for("the good point", lambda: count(stack, f"SELECT count(lat) FROM telemetry WHERE vehicle = 'v1' AND "
                                                     f"time >= {base * 1_000_000}") == 1)
    wait_for("both messages archived", lambda: count(
        stack, f"SELECT count(qos) FROM ecokit_archive.archive WHERE topic = 'fleet/v1/telemetry' "
               f"AND time >= {started}") == 2)
    refused = 'ecokit_bridge_dropped_points_by_reason_total{reason="refused"}'
    assert metrics(stack, "bridge").get(refused, 0) == before.get(refused, 0), "InfluxDB refused nothing"


def test_points_influxdb_refuses_are_counted_as_dropped_and_dead_lettered(stack: Stack) -> None:
    base = int(time.time() * 1000) - 300_000
    started = time.time_ns()
    # Someone wrote `value` as a string before: InfluxDB now refuses float values for it.
    with InfluxV1(stack.influx_endpoint("admin")) as admin_db:
        admin_db.write(f'probe,id=seed value="text" {(base - 1) * 1_000_000}')
    username, password = "lab-app", stack.secret_values()["user/lab-app"]
    before = metrics(stack, "bridge")
    n = 5
    with client(stack) as admin, client(stack, "v2") as v2:
        admin.subscribe("ecokit/deadletter/probe")
        with SyncClient("127.0.0.1", stack.config.broker.ports.mqtt, username=username, password=password) as app:
            assert not app.connect()[0].is_failure
            for i in range(n):  # in the same batches as good telemetry
                app.publish(f"lab/p{i}/probe", json.dumps({"ts": base + i, "value": 1.5}).encode(), qos=1)
                v2.publish("fleet/v2/telemetry", telemetry("v2", i, base + i), qos=1)
        letters = admin.expect(n, timeout=30)
    for letter in letters:
        doc = json.loads(letter.payload)
        assert (doc["rule"], doc["reason"]) == ("probe", "refused")
        assert "conflict" in doc["field"], doc["field"]
        assert base64.b64decode(doc["payload"]).startswith(b"probe,id=p")
    after = metrics(stack, "bridge")
    refused = 'ecokit_bridge_dropped_points_by_reason_total{reason="refused"}'
    assert after[refused] - before.get(refused, 0) == n
    # The rest of the same batches was written: the telemetry, and every message's archive point.
    assert count(stack, f"SELECT count(lat) FROM telemetry WHERE vehicle = 'v2' AND time >= {base * 1_000_000}") == n
    assert count(stack, f"SELECT count(qos) FROM ecokit_archive.archive WHERE topic =~ /^lab\\/p[0-9]\\/probe$/ "
                        f"AND time >= {started}") == n
