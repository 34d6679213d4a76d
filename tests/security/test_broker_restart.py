"""Hole 3: a broker restart lost acknowledged telemetry (1,023 messages in one block at
2,000 msg/s): what devices published between the restart and the bridge's resubscription was
dropped, because its shared subscription did not survive. The bridge's plain subscription
lives in its persistent session, which Mosquitto saves and restores with its queue."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from security_support import count, telemetry

from ecokit.stack import Stack
from ecokit.testing import wait_for


class Publisher:
    """A device publishing telemetry at QoS 1 with a persistent session; a message counts
    as acknowledged once paho got its PUBACK (paho resends unacknowledged ones after a
    reconnect)."""

    def __init__(self, stack: Stack, device: str) -> None:
        username, password = stack.device_credentials(device)
        self.device = device
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.2, 1.0)
        self.client.max_inflight_messages_set(200)
        self.sent: dict[int, int] = {}  # mid -> seq (fewer than 65,535 messages: no mid reuse)
        self.acked_mids: set[int] = set()
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.client.on_publish = lambda c, u, mid, rc, p: self.acked_mids.add(mid) if not rc.is_failure else None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", stack.config.broker.ports.mqtt, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.connected.wait(10)

    def run(self, start_seq: int, n: int, base_ts: int, rate: float) -> None:
        began = time.monotonic()
        for i in range(n):
            seq = start_seq + i
            payload = telemetry(self.device, seq, base_ts + seq)
            self.sent[self.client.publish(f"fleet/{self.device}/telemetry", payload, qos=1).mid] = seq
            ahead = (i + 1) / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)

    def acked(self) -> set[int]:
        return {seq for mid, seq in list(self.sent.items()) if mid in self.acked_mids}

    def wait_acked(self, n: int, timeout: float = 60.0) -> set[int]:
        wait_for(f"{n} PUBACKs", lambda: len(self.acked()) >= n, timeout=timeout)
        return self.acked()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stored_seqs(stack: Stack, device: str, base_ts: int, n: int) -> int:
    window = f"vehicle = '{device}' AND time >= {base_ts * 1_000_000} AND time < {(base_ts + n) * 1_000_000}"
    return count(stack, f"SELECT count(seq) FROM telemetry WHERE {window}")


def restart_broker(stack: Stack) -> None:
    assert stack.loaded.config_file is not None
    Stack.load(stack.loaded.config_file, env={}).restart(["broker"])


def test_no_acknowledged_message_is_lost_across_a_broker_restart(stack: Stack) -> None:
    n, rate = 4000, 1000.0
    base_ts = int(time.time() * 1000) - 3_600_000
    publisher = Publisher(stack, "v4")
    try:
        sender = threading.Thread(target=publisher.run, args=(0, n, base_ts, rate))
        sender.start()
        time.sleep(1.0)  # mid-stream
        restart_broker(stack)
        sender.join(60)
        acked = publisher.wait_acked(n)
    finally:
        publisher.close()
    assert len(acked) == n, "every message was acknowledged in the end (paho resends what was not)"
    wait_for(f"{n} points", lambda: stored_seqs(stack, "v4", base_ts, n) >= n, timeout=60)
    assert stored_seqs(stack, "v4", base_ts, n) == n


def test_no_acknowledged_message_is_lost_when_the_bridge_is_paused_across_the_restart(stack: Stack) -> None:
    n = 1500
    base_ts = int(time.time() * 1000) - 7_200_000
    state = json.loads(stack.paths.state_file.read_text())
    bridge_pid = int(state["services"]["bridge"]["pid"])
    publisher = Publisher(stack, "v5")
    os.kill(bridge_pid, signal.SIGSTOP)
    try:
        publisher.run(0, n, base_ts, 2000.0)
        publisher.wait_acked(n)  # in the broker, queued for the paused bridge
        publisher.connected.clear()
        restart_broker(stack)
        assert publisher.connected.wait(15), "the device reconnected to the restarted broker"
        publisher.run(n, n, base_ts, 2000.0)  # published while the bridge is still away
        acked = publisher.wait_acked(2 * n)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(bridge_pid, signal.SIGCONT)
        publisher.close()
    assert len(acked) == 2 * n
    wait_for(f"{2 * n} points", lambda: stored_seqs(stack, "v5", base_ts, 2 * n) >= 2 * n, timeout=90)
    assert stored_seqs(stack, "v5", base_ts, 2 * n) == 2 * n
