"""Send a command to one vehicle (or all of them) and collect the acknowledgements."""

from __future__ import annotations

import json
import queue
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ecokit.errors import BrokerError, UsageError
from ecokit.mqtt.loop import close_socket
from ecokit.mqtt.target import BrokerTarget, ClientAuth
from ecokit.sim.commands import Command
from ecokit.sim.fleet import BROADCAST_COMMANDS, commands_topic


@dataclass(frozen=True)
class Ack:
    vehicle: str
    result: str
    detail: str
    latency_ms: float  # the vehicle's handling time
    round_trip_ms: float  # from publishing the command to receiving this ack

    @classmethod
    def parse(cls, data: dict[str, Any], round_trip_ms: float) -> Ack:
        return cls(str(data.get("vehicle")), str(data.get("result")), str(data.get("detail", "")),
                   float(data.get("latency_ms") or 0.0), round_trip_ms)


def check_vehicle_id(vehicle: str) -> None:
    """A vehicle id is one topic level: no '/', '+', '#' (nor NUL), not empty."""
    bad = sorted({ch for ch in vehicle if ch in "/+#\0"})
    if not vehicle or bad:
        what = "is empty" if not vehicle else "contains " + ", ".join(repr(ch) for ch in bad)
        raise UsageError(f"{vehicle!r} is not a vehicle id: it {what} (an id is one MQTT topic level)",
                         hint="`ecokit devices list` shows the registered ids; broadcast with --all")


def send_command(target: BrokerTarget, auth: ClientAuth, command: Command, vehicle: str | None, *,
                 timeout: float = 5.0, expect: int | None = None,
                 on_ack: Callable[[Ack], None] | None = None) -> list[Ack]:
    """Publish ``command`` (to ``vehicle``, or broadcast when None) and wait for acks.

    Waits until ``expect`` acks arrived (1 for a single vehicle) or ``timeout`` passed.
    """
    if vehicle is not None:
        check_vehicle_id(vehicle)
    wanted = expect if expect is not None else (1 if vehicle is not None else None)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ecokit-command-{uuid.uuid4().hex[:10]}",
                         protocol=mqtt.MQTTv5)
    if auth.username is not None:
        client.username_pw_set(auth.username, auth.password)
    if target.tls:
        client.tls_set_context(target.tls_context(auth.client_cert))
    client.on_connect = lambda c, u, f, reason, p: events.put(("connack", reason))
    client.on_subscribe = lambda c, u, mid, reasons, p: events.put(("suback", reasons))
    client.on_publish = lambda c, u, mid, reason, p: events.put(("puback", reason))
    client.on_message = lambda c, u, msg: events.put(("message", (time.perf_counter(), bytes(msg.payload))))

    def wait(kind: str, what: str, limit: float = 5.0) -> Any:
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            try:
                got, value = events.get(timeout=left)
            except queue.Empty:
                break
            if got == kind:
                return value
        raise BrokerError(f"{target.url}: no {what} within {limit:g}s")

    try:
        client.connect(target.host, target.port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"cannot connect to {target.url}: {exc}") from None
    client.loop_start()
    acks: list[Ack] = []
    try:
        reason = wait("connack", "CONNACK")
        if reason.is_failure:
            raise BrokerError(f"{target.url} refused the connection: {reason}")
        ack_filter = f"fleet/{vehicle}/commands/ack" if vehicle else "fleet/+/commands/ack"
        client.subscribe(ack_filter, qos=1)
        reasons = wait("suback", f"SUBACK for {ack_filter}")
        if any(r.is_failure for r in reasons):
            raise BrokerError(f"{target.url} refused the subscription to {ack_filter} ({reasons[0]})")
        topic = commands_topic(vehicle) if vehicle else BROADCAST_COMMANDS
        sent = time.perf_counter()
        client.publish(topic, command.payload(), qos=1)
        reason = wait("puback", f"PUBACK for {topic}")
        if getattr(reason, "is_failure", False):
            raise BrokerError(f"{target.url} refused the command on {topic} ({reason})")
        deadline = time.monotonic() + timeout
        while (wanted is None or len(acks) < wanted) and (left := deadline - time.monotonic()) > 0:
            try:
                kind, value = events.get(timeout=left)
            except queue.Empty:
                break
            if kind != "message":
                continue
            at, payload = value
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("id") == command.id:
                ack = Ack.parse(data, (at - sent) * 1000)
                acks.append(ack)
                if on_ack is not None:
                    on_ack(ack)
    finally:
        client.disconnect()
        client.loop_stop()
        close_socket(client)
    return acks
