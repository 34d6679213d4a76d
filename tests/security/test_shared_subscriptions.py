"""Hole 1: a device stole the bridge's messages by joining its shared subscription group
(`$share/ecokit-bridge/#`): Mosquitto 2.0.11 grants any `$share/...` subscription and checks
read rights only when it delivers, so the device's share was dropped: one such connection
lost 499 of 1,000 messages, four lost 799. No ecokit consumer joins a shared group on
Mosquitto any more; a device's `$share/...` subscription forms a group of its own."""

from __future__ import annotations

import json
import time

from security_support import client, count, metrics, telemetry

from ecokit.stack import Stack
from ecokit.testing import SyncClient, wait_for

GROUPS = ["$share/ecokit-bridge/#", "$share/ecokit-bridge/fleet/#", "$share/ecokit-bridge/fleet/+/telemetry",
          "$share/ecokit-processor/fleet/+/telemetry", "$share/ecokit-shadow/things/+/shadow/+"]


def test_devices_in_every_group_name_steal_nothing_from_the_pipeline(stack: Stack) -> None:
    attackers: list[SyncClient] = []
    try:
        for device in ("v1", "v3", "v4", "v5"):  # four hostile devices, each in every group
            attacker = client(stack, device)
            for group in GROUPS:
                attacker.subscribe(group, qos=1)
            attackers.append(attacker)
        before = metrics(stack, "bridge")
        start = int(time.time() * 1000) - 60_000
        n = 1000
        with client(stack, "v2") as v2, client(stack) as admin:
            admin.subscribe("fleet/v2/status")
            for i in range(n):
                v2.publish("fleet/v2/telemetry", telemetry("v2", i, start + i), qos=1)
            # The processor saw them all as well: v2 went online exactly once.
            [status] = admin.expect(1, timeout=10)
            assert json.loads(status.payload)["state"] == "online"
            window = f"vehicle = 'v2' AND time >= {start * 1_000_000} AND time < {(start + n) * 1_000_000}"
            wait_for(f"{n} telemetry points", lambda: count(stack, f"SELECT count(lat) FROM telemetry WHERE {window}")
                     >= n, timeout=30)
            assert count(stack, f"SELECT count(lat) FROM telemetry WHERE {window}") == n
            after = metrics(stack, "bridge")
            received = "ecokit_bridge_messages_received_total"
            assert after[received] - before[received] >= n
        for attacker in attackers:
            assert [m.topic for m in attacker.drain(0.2)] == [], "and the devices read nothing of v2's"
    finally:
        for attacker in attackers:
            attacker.disconnect()


def test_the_shadow_service_answers_every_request_while_a_device_sits_in_its_group(stack: Stack) -> None:
    with client(stack, "v6") as thief, client(stack, "v2") as v2:
        thief.subscribe("$share/ecokit-shadow/things/+/shadow/+", qos=1)
        thief.subscribe("$share/x/things/+/shadow/+", qos=1)
        v2.subscribe("things/v2/shadow/update/accepted")
        for i in range(20):
            v2.publish("things/v2/shadow/update", json.dumps({"state": {"reported": {"i": i}}}).encode(), qos=1)
        assert len(v2.expect(20, timeout=15)) == 20
        assert thief.drain(0.2) == []
