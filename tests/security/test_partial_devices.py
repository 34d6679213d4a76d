"""Hole 8: a real device's readings were refused whole: the default telemetry rule required
all nine of ecokit's simulator fields. Only what a point needs (a position) is required now;
the other fields are typed and range-checked when present, and a missing `ts` means the
receive time, said in the point (time_received=true)."""

from __future__ import annotations

import json
import time

from security_support import client

from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1
from ecokit.testing import wait_for


def rows(stack: Stack, q: str) -> list[dict[str, object]]:
    with InfluxV1(stack.influx_endpoint("reader")) as reader:
        return list(reader.rows(q))


def test_a_device_with_fewer_sensors_is_stored_not_dead_lettered(stack: Stack) -> None:
    base = int(time.time() * 1000) - 900_000
    n = 50
    with client(stack) as admin, client(stack, "v3") as v3:
        admin.subscribe("ecokit/deadletter/#")
        for i in range(n):
            v3.publish("fleet/v3/telemetry", json.dumps({
                "vehicle": "v3", "ts": base + i * 1000, "lat": 48.85 + i * 1e-4, "lng": 2.35, "speed": 30.0 + i,
                "heading": 180.0, "fuel": 70.0}).encode(), qos=1)
        assert admin.drain(1.0) == [], "nothing dead-lettered"
    window = f"vehicle = 'v3' AND time >= {base * 1_000_000} AND time < {(base + n * 1000) * 1_000_000}"
    got = wait_for(f"{n} points", lambda: (r := rows(stack, f"SELECT * FROM telemetry WHERE {window}"))
                   and len(r) == n and r)
    first = got[0]
    assert (first["lat"], first["lng"], first["speed"], first["heading"], first["fuel"]) == (48.85, 2.35, 30.0, 180.0,
                                                                                           70.0)
    assert first.get("engine") is None
    assert first.get("status") is None


def test_present_fields_are_still_checked(stack: Stack) -> None:
    with client(stack) as admin, client(stack, "v3") as v3:
        admin.subscribe("ecokit/deadletter/telemetry")
        v3.publish("fleet/v3/telemetry", json.dumps({"ts": int(time.time() * 1000), "lat": 48.8, "lng": 2.3,
                                                     "fuel": 140}).encode(), qos=1)
        v3.publish("fleet/v3/telemetry", json.dumps({"ts": int(time.time() * 1000), "lng": 2.3}).encode(), qos=1)
        letters = [json.loads(m.payload) for m in admin.expect(2)]
    assert [(d["reason"], d["field"]) for d in letters] == [("out_of_range", "fuel"), ("missing_field", "lat")]


def test_a_reading_without_a_timestamp_gets_the_receive_time_and_says_so(stack: Stack) -> None:
    before = time.time_ns()
    with client(stack, "v3") as v3:
        v3.publish("fleet/v3/telemetry", json.dumps({"lat": -33.92, "lng": 18.42, "speed": 12.5}).encode(), qos=1)
    after = time.time_ns() + 5_000_000_000
    [point] = wait_for("the point", lambda: rows(
        stack, f"SELECT * FROM telemetry WHERE vehicle = 'v3' AND time_received = true AND time >= {before} "
               f"AND time <= {after}"))
    assert (point["lat"], point["lng"], point["speed"], point["time_received"]) == (-33.92, 18.42, 12.5, True)
