"""Bridge figures on a throwaway local stack (mosquitto + influxd + the ecokit bridge).

    python benchmarks/bridge.py throughput [--rate 20000] [--seconds 15] [--publishers 2]
    python benchmarks/bridge.py throughput --rate 0 --messages 300000   # capacity, unlimited broker queue
    python benchmarks/bridge.py latency [--probes 200] [--background 5000] [--flush-ms 200]

throughput: publishers (QoS 1) offer telemetry at --rate messages/s for --seconds; the
figure is messages per second from the first publish until InfluxDB holds every telemetry
point and every archive point, with the exact counts checked (zero loss), the bridge's
dropped counter at zero, and the lag (how long after the last publish the last point was
stored) showing whether the rate was sustained or a backlog built up. Each message gives
two points (telemetry + archive). --rate 0 publishes as fast as possible into an unlimited
broker queue (broker.max_queued_messages: 0), which measures the bridge's capacity; with
the default bound of 100,000 queued messages per client, mosquitto drops QoS 1 messages
for a bridge that falls that far behind.

latency: one probe message at a time (while a background publisher keeps a steady load),
timed from publish until a query returns it: p50/p95 publish-to-queryable.
The fleet processor is off so the figures are the bridge's alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import influx_count, machine, publish_parallel, stack, telemetry

from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1
from ecokit.testing import SyncClient


def bridge_metrics(st: Stack) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{st.config.service_ports.bridge}/metrics", timeout=5).text
    out = {}
    for line in text.splitlines():
        if line.startswith("ecokit_bridge_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {"processor": {"enabled": False}}
    if not args.rate:
        settings["broker"] = {"max_queued_messages": 0}
    with stack(settings) as st:
        wanted = int(args.rate * args.seconds) if args.rate else args.messages
        total = wanted - wanted % args.publishers
        started, publish_seconds = publish_parallel(st, processes=args.publishers,
                                                    per_process=total // args.publishers,
                                                    rate=args.rate or None)
        published = started + publish_seconds
        telemetry_done = archive_done = None
        progress, last_change = (-1, -1), time.time()
        while archive_done is None and time.time() - last_change < 15:  # give up after 15 s without progress
            counts = (influx_count(st, "SELECT count(seq) FROM telemetry"),
                      influx_count(st, "SELECT count(qos) FROM archive"))
            if counts != progress:
                progress, last_change = counts, time.time()
            if telemetry_done is None and counts[0] >= total:
                telemetry_done = time.time()
            if counts[1] >= total and telemetry_done is not None:
                archive_done = time.time()
            time.sleep(0.1)
        time.sleep(1)
        stored = influx_count(st, "SELECT count(seq) FROM telemetry")
        archived = influx_count(st, "SELECT count(qos) FROM archive")
        m = bridge_metrics(st)
    if archive_done is None:
        return {"messages": total, "telemetry_points": stored, "archive_points": archived, "zero_loss": False,
                "bridge_received": m.get("ecokit_bridge_messages_received_total"),
                "note": "messages were lost (the broker drops QoS 1 beyond broker.max_queued_messages)"}
    seconds = archive_done - started
    return {
        "messages": total, "publishers": args.publishers, "offered_rate": args.rate or "max",
        "publish_rate": round(total / publish_seconds),
        "lag_after_last_publish_s": round(archive_done - published, 2),
        "telemetry_points": stored, "archive_points": archived,
        "zero_loss": stored == total and archived == total and m.get("ecokit_bridge_dropped_points_total") == 0,
        "seconds": round(seconds, 2), "messages_per_second": round(total / seconds),
        "points_per_second": round(2 * total / seconds),
        "bridge_received": m.get("ecokit_bridge_messages_received_total"),
        "bridge_written": m.get("ecokit_bridge_points_written_total"),
        "bridge_dropped": m.get("ecokit_bridge_dropped_points_total"),
        "influx_write_mean_ms": round(1000 * m["ecokit_bridge_write_latency_seconds_sum"]
                                      / max(1, m["ecokit_bridge_write_latency_seconds_count"]), 1),
    }


def _background(host: str, port: int, username: str, password: str, rate: float, stop: Any) -> None:
    from ecokit.mqtt.fast import FastMqtt

    mqtt = FastMqtt(host, port, client_id="bench-background", username=username, password=password)
    mqtt.connect()
    start, i = time.perf_counter(), 0
    ts0 = int(time.time() * 1000) - 7_200_000
    while not stop.is_set():
        vehicle = f"bg-{i % 100:03d}"
        mqtt.publish(f"fleet/{vehicle}/telemetry", telemetry(vehicle, i, ts0 + i), qos=1)
        i += 1
        delay = start + i / rate - time.perf_counter()
        mqtt.flush()
        mqtt.read(0.0)
        if delay > 0:
            time.sleep(delay)
    mqtt.disconnect()


def latency(args: argparse.Namespace) -> dict[str, Any]:
    settings = {"processor": {"enabled": False}, "bridge": {"flush_ms": args.flush_ms}}
    with stack(settings) as st:
        username, password = st.service_credentials("ecokit-admin")
        ctx = mp.get_context("fork")
        stop = ctx.Event()
        bg = None
        if args.background:
            bg = ctx.Process(target=_background, args=("127.0.0.1", st.config.broker.ports.mqtt, username,
                                                       password, args.background, stop))
            bg.start()
            time.sleep(2)
        samples = []
        client = InfluxV1(st.influx_endpoint("reader"))
        with SyncClient("127.0.0.1", st.config.broker.ports.mqtt, username=username, password=password) as pub:
            pub.connect()
            base = int(time.time() * 1000)
            for n in range(args.probes):
                ts = base + n
                sent = time.perf_counter()
                pub.publish("fleet/probe/telemetry", telemetry("probe", n, ts), qos=1)
                q = f"SELECT count(seq) FROM telemetry WHERE vehicle = 'probe' AND time = {ts * 1_000_000}"
                while True:
                    rows = list(client.rows(q))
                    if rows and rows[0].get("count"):
                        break
                    if time.perf_counter() - sent > 30:
                        raise AssertionError(f"probe {n} never became queryable")
                    time.sleep(0.002)
                samples.append((time.perf_counter() - sent) * 1000)
        client.close()
        stop.set()
        if bg is not None:
            bg.join(10)
    samples.sort()

    def pct(p: float) -> float:
        return round(samples[min(len(samples) - 1, int(p / 100 * len(samples)))], 1)

    return {"probes": len(samples), "background_msgs_per_second": args.background, "flush_ms": args.flush_ms,
            "p50_ms": pct(50), "p95_ms": pct(95), "max_ms": round(samples[-1], 1),
            "note": "includes the 2 ms polling interval of the probe query"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--rate", type=float, default=20_000, help="offered msgs/s in total (0: as fast as possible)")
    t.add_argument("--seconds", type=float, default=15)
    t.add_argument("--messages", type=int, default=300_000, help="with --rate 0")
    t.add_argument("--publishers", type=int, default=2)
    lat = sub.add_parser("latency")
    lat.add_argument("--probes", type=int, default=200)
    lat.add_argument("--background", type=float, default=5000, help="steady load, msgs/s (0: none)")
    lat.add_argument("--flush-ms", type=int, default=50, help="bridge.flush_ms (the default is 50)")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    result = throughput(args) if args.what == "throughput" else latency(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
