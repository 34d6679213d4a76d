"""How fast a QoS 1 subscriber drains a queue: paho-mqtt vs ecokit.mqtt.fast.

    python benchmarks/paho_receive.py [--messages 100000]

A throwaway mosquitto (loopback, free port) queues --messages QoS 1 telemetry messages for
an offline persistent session; then the subscriber connects and drains them with an empty
handler (acknowledging each). No rule evaluation, no InfluxDB: this is the ceiling of the
MQTT client alone, the reason the bridge and replay use ecokit.mqtt.fast (see README).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
from _common import machine, telemetry
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecokit.mqtt.fast import FastMqtt, Subscription
from ecokit.runtime import process
from ecokit.testing import free_port


def fill(port: int, count: int) -> None:
    pub = FastMqtt("127.0.0.1", port, client_id="fill")
    pub.connect()
    for i in range(count):
        pub.publish(f"fleet/veh-{i % 100:04d}/telemetry", telemetry("v", i, 1_700_000_000_000 + i), qos=1)
        if pub.inflight > 500:
            pub.flush()
            while pub.inflight > 100:
                pub.read(0.05)
    pub.flush()
    while pub.inflight:
        pub.read(0.05)
    pub.disconnect()


def paho_session(port: int, client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    return client


def drain_paho(port: int, count: int) -> float:
    setup = paho_session(port, "paho-drain")
    setup.subscribe("fleet/#", 1)
    setup.loop_start()
    time.sleep(0.5)
    setup.disconnect()
    setup.loop_stop()
    fill(port, count)
    received = 0
    first: list[float] = []
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal received
        if not first:
            first.append(time.perf_counter())
        received += 1
        if received >= count:
            done.set()

    client = paho_session(port, "paho-drain")
    client.on_message = on_message
    client.loop_start()
    done.wait(300)
    seconds = time.perf_counter() - first[0]
    client.disconnect()
    client.loop_stop()
    return count / seconds


def drain_fast(port: int, count: int) -> float:
    setup = FastMqtt("127.0.0.1", port, client_id="fast-drain", clean_start=False, session_expiry=3600)
    setup.connect()
    setup.subscribe([Subscription("fleet/#", 1)])
    setup.disconnect()
    fill(port, count)
    client = FastMqtt("127.0.0.1", port, client_id="fast-drain", clean_start=False, session_expiry=3600)
    client.connect()
    received, started = 0, None
    while received < count:
        messages = client.read(1.0)
        if messages and started is None:
            started = time.perf_counter()
        received += len(messages)
        client.ack([m[4] for m in messages if m[2]])
        client.flush()
    assert started is not None
    seconds = time.perf_counter() - started
    client.disconnect()
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ecokit-bench-") as folder:
        conf = Path(folder) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
                        "max_inflight_messages 0\npersistence false\nlog_dest none\n")
        ref = process.spawn(["/usr/sbin/mosquitto", "-c", str(conf)], log_path=Path(folder) / "log",
                            cwd=Path(folder), env={})
        try:
            time.sleep(0.5)
            result = {"messages": args.messages,
                      "paho_msgs_per_second": round(drain_paho(port, args.messages)),
                      "fastmqtt_msgs_per_second": round(drain_fast(port, args.messages))}
        finally:
            process.stop(ref)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
