"""Replay figures on a throwaway local stack (mosquitto + influxd; bridge and processor off so
only replay runs; the archive is written directly into InfluxDB).

    python benchmarks/replay.py max [--messages 200000]
    python benchmarks/replay.py paced [--messages 1000] [--seconds 20] [--speed 1]

max: `--speed max` messages/s from the first publish until the broker acknowledged the
last one (QoS 1), with a subscriber checking that every message arrived in order with the
same bytes. Reading the archive (InfluxDB queries, paging) is included.

paced: archived messages with irregular spacing (bursts and gaps) over --seconds; the
figure is how far each send time is from its planned time (start + original offset /
speed): p50, p99, max in ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, stack, telemetry

from ecokit.clients import replay_publisher
from ecokit.mqtt.fast import FastMqtt, Subscription
from ecokit.replay import Archive, Replayer
from ecokit.rules.lineproto import escape_tag
from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1

SETTINGS = {"bridge": {"enabled": False}, "processor": {"enabled": False}, "broker": {"max_queued_messages": 0}}


def archive_messages(st: Stack, times_ns: list[int]) -> list[tuple[str, bytes]]:
    """Write archive points directly (what the bridge would have stored)."""
    messages = []
    lines = []
    for i, t in enumerate(times_ns):
        topic = f"fleet/veh-{i % 200:04d}/telemetry"
        payload = telemetry(f"veh-{i % 200:04d}", i, t // 1_000_000)
        messages.append((topic, payload))
        lines.append(f'archive,topic={escape_tag(topic)} payload="{base64.b64encode(payload).decode()}",'
                     f"qos=1i,retain=false {t}")
    with InfluxV1(st.influx_endpoint("admin")) as client:
        for start in range(0, len(lines), 10_000):
            client.write("\n".join(lines[start:start + 10_000]), precision="ns")
    return messages


class Collector(threading.Thread):
    """Subscribes to the replay prefix and keeps what arrives."""

    def __init__(self, st: Stack, expected: int) -> None:
        super().__init__(daemon=True)
        username, password = st.service_credentials("ecokit-admin")
        self.mqtt = FastMqtt("127.0.0.1", st.config.broker.ports.mqtt, client_id="bench-replay-sub",
                             username=username, password=password)
        self.mqtt.connect()
        self.mqtt.subscribe([Subscription("bench/#", 1)])
        self.expected = expected
        self.got: list[tuple[str, bytes]] = []
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while len(self.got) < self.expected and time.monotonic() < deadline:
            messages = self.mqtt.read(0.2)
            self.got += [(topic, payload) for topic, payload, _, _, _ in messages]
            self.mqtt.ack([m[4] for m in messages if m[2]])
            self.mqtt.flush()
        self.done.set()
        self.mqtt.disconnect()


def run(st: Stack, messages: list[tuple[str, bytes]], start: int, end: int, speed: float | None) -> dict[str, Any]:
    collector = Collector(st, len(messages))
    collector.start()
    mqtt = replay_publisher(st)
    with InfluxV1(st.influx_endpoint("reader")) as client:
        summary = Replayer(mqtt, speed=speed, prefix="bench/").run(Archive(client).read(start, end))
    mqtt.disconnect()
    collector.done.wait(120)
    identical = [(t, p) for t, p in collector.got] == [("bench/" + t, p) for t, p in messages]
    result: dict[str, Any] = {"messages": len(messages), "sent": summary.sent, "acknowledged": summary.acknowledged,
                              "received_identical_in_order": identical, "seconds": round(summary.duration, 2),
                              "messages_per_second": round(summary.rate)}
    if summary.errors_ms:
        result.update({"send_error_ms_p50": round(summary.error_percentile(50) or 0, 3),
                       "send_error_ms_p99": round(summary.error_percentile(99) or 0, 3),
                       "send_error_ms_max": round(summary.error_percentile(100) or 0, 3)})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("max")
    m.add_argument("--messages", type=int, default=200_000)
    p = sub.add_parser("paced")
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--speed", type=float, default=1)
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    rng = random.Random(7)
    base = (int(time.time()) - 7200) * 1_000_000_000
    if args.what == "max":
        times = [base + i * 50_000 for i in range(args.messages)]  # 20,000 msg/s originally
        speed = None
    else:
        # Irregular spacing: bursts (1 ms apart) and gaps, spread over --seconds.
        gaps = [rng.choice([0.001, 0.001, 0.005, 0.02, 0.05]) * rng.uniform(0.5, 1.5) for _ in range(args.messages)]
        scale = args.seconds / sum(gaps)
        times, t = [], base
        for gap in gaps:
            t += int(gap * scale * 1e9)
            times.append(t)
        speed = args.speed
    with stack(SETTINGS) as st:
        messages = archive_messages(st, times)
        result = run(st, messages, times[0], times[-1] + 1, speed)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
