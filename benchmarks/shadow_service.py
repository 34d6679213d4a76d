"""Shadow figures: state machine updates/s, and update round trips through a real stack.

    python benchmarks/shadow_service.py [--requests 2000] [--things 50]

Starts a throwaway local stack (mosquitto + shadow service), measures:
- machine: pure `handle(update)` calls per second (no I/O);
- latency: sequential update → update/accepted round trips as ecokit-admin (p50/p99);
- throughput: a burst of updates over many things, published at once, until every
  accepted answer has arrived (requests/s through broker + service + SQLite).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecokit.clients import shadow_client
from ecokit.shadow import machine
from ecokit.testing import SyncClient, running_stack, write_project


def bench_machine(n: int) -> float:
    key = machine.ShadowKey("bench")
    record = None
    payloads = [json.dumps({"state": {"reported": {"speed": i, "engine": i % 2 == 0,
                                                   "pos": {"lat": 48.1, "lng": 11.5}}}}).encode()
                for i in range(n)]
    started = time.perf_counter()
    for i, payload in enumerate(payloads):
        record = machine.handle(key, "update", record, payload, 1_700_000_000 + i).record
    return n / (time.perf_counter() - started)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--things", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {bench_machine(20000):,.0f} updates/s (pure state machine, one shadow)")
    with tempfile.TemporaryDirectory() as tmp:
        config = write_project(Path(tmp) / "p", devices=1, stack="bench")
        with running_stack(config) as stack:
            with shadow_client(stack).connect() as app:
                app.update("warmup", reported={"x": 0})
                latencies = []
                for i in range(500):
                    started = time.perf_counter()
                    reply = app.update("latency", reported={"seq": i})
                    latencies.append((time.perf_counter() - started) * 1000)
                    assert reply.accepted
                print(f"latency: update round trip p50 {percentile(latencies, 50):.2f} ms, "
                      f"p99 {percentile(latencies, 99):.2f} ms (500 sequential requests)")
            host_port = stack.broker_endpoints()["mqtt"].split("://")[1]
            host, port = host_port.rsplit(":", 1)
            user, password = stack.service_credentials("ecokit-admin")
            with SyncClient(host, int(port), username=user, password=password) as c:
                c.client.max_inflight_messages_set(1000)
                c.connect()
                c.subscribe("things/+/shadow/update/accepted", 1)
                started = time.perf_counter()
                for i in range(args.requests):
                    thing = f"thing-{i % args.things}"
                    c.client.publish(f"things/{thing}/shadow/update",
                                     json.dumps({"state": {"reported": {"seq": i}}}), qos=1)
                got = 0
                deadline = time.monotonic() + 120
                while got < args.requests and time.monotonic() < deadline:
                    try:
                        c.messages.get(timeout=1)
                        got += 1
                    except queue.Empty:
                        pass
                elapsed = time.perf_counter() - started
                print(f"throughput: {got}/{args.requests} updates over {args.things} things answered in "
                      f"{elapsed:.2f} s = {got / elapsed:,.0f} requests/s")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
