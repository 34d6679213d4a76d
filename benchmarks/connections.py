"""10,000 concurrent connections from one bench process, and the memory each one costs.

`ecokit bench` (one publisher process, the fast publish path) against a throwaway local Mosquitto
(bridge and processor off): ``--clients`` publishers connect before the run (``--connect-rate``
per second at most, through the normal connect path: every connect timed), then each sends
``--rate`` msg/s for ``--seconds`` at QoS 1 while one subscriber checks every message arrived.
Figures: connected / attempted, connect time percentiles, the publisher process's resident
memory growth per connection (RSS after all connected minus RSS before the clients were built,
both after a garbage collection), delivered, latency, PUBACK latency, broker CPU and memory.
Goal (issue 13): 10,000 connections from one process, < 10 KB per connection.

The file-descriptor limit of this process is raised before the stack starts, so the broker
(started by this process) and the worker inherit it.

    python benchmarks/connections.py                           # 10,000 clients
    python benchmarks/connections.py --clients 20000 --rate 0.05
    python benchmarks/connections.py --tls --clients 2000      # TLS connects, as registered devices

``--tls``: the stack's ``tls`` profile; the publishers are that many registered devices with their
own credentials on the TLS device listener (ecokit-admin, the subscriber, stays on the internal
listener), and the connect time is split into TCP, TLS handshake and CONNECT → CONNACK.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, stack  # noqa: E402
from ecokit.bench import BenchOptions, parse_slo, run_bench, stack_target, validate_scenario  # noqa: E402
from ecokit.mqtt.loop import raise_nofile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=0.2, help="msg/s of each client")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64, help="connects under way at once")
    parser.add_argument("--tls", action="store_true", help="publishers as devices over the TLS listener")
    args = parser.parse_args()
    limit = raise_nofile(args.clients * 2 + 1024)
    print(machine() + f"; open-file limit {limit}")
    extra = {"bridge": {"enabled": False}, "processor": {"enabled": False}, "broker": {"max_queued_messages": 0}}
    spec = validate_scenario({"publishers": args.clients, "qos": 1, "payload_size": 64, "phases": [
        {"name": "hold", "duration": args.seconds, "rate": args.rate}]})
    with stack(extra, devices=args.clients if args.tls else 3, profile="tls" if args.tls else None) as st:
        target = stack_target(st, devices=args.clients) if args.tls else stack_target(st)
        result = run_bench("connections", spec, target, slos=[parse_slo("loss=0")],
                           options=BenchOptions(connect_timeout=300, connect_concurrency=args.concurrency,
                                                drain=30))
    pubs = result.connections["publishers"]
    setup = pubs.get("connect_before_run") or {}
    total = setup.get("total_ms", {})
    process = result.broker.get("process", {})
    figures = {
        "clients": args.clients, "connected": pubs["ever_connected"], "connected_at_end": pubs["connected_at_end"],
        "attempts": setup.get("attempts"), "connect_p50_ms": total.get("p50_ms"), "connect_p99_ms": total.get("p99_ms"),
        "connect_max_ms": total.get("max_ms"), "tls": args.tls,
        **{f"{step}_p50_ms": setup.get(f"{step}_ms", {}).get("p50_ms") for step in ("tcp", "tls", "connack")},
        **{f"{step}_p99_ms": setup.get(f"{step}_ms", {}).get("p99_ms") for step in ("tcp", "tls", "connack")},
        "memory_kb_per_connection": pubs.get("memory_kb_per_connection"),
        "sent": result.total.sent, "delivered": result.total.unique, "lost": result.total.lost,
        "latency_p50_ms": result.total.latency.get("p50_ms"), "latency_p99_ms": result.total.latency.get("p99_ms"),
        "puback_p99_ms": result.total.puback.get("p99_ms"), "publisher_cpu_s": pubs["cpu_s"],
        "broker_cpu_mean": process.get("cpu_percent_mean"), "broker_rss_mb_max": process.get("rss_mb_max"),
        "passed": result.passed, "warnings": result.warnings, "errors": result.errors[-3:],
    }
    print(f"connected {figures['connected']:,} of {args.clients:,} from one process "
          f"({figures['attempts']:,} attempts); connect p50/p99/max {figures['connect_p50_ms']}/"
          f"{figures['connect_p99_ms']}/{figures['connect_max_ms']} ms")
    steps = [s for s in ("tcp", "tls", "connack") if figures[f"{s}_p50_ms"] is not None]
    print("  of which p50/p99: " + ", ".join(f"{s} {figures[f'{s}_p50_ms']}/{figures[f'{s}_p99_ms']} ms"
                                           for s in steps))
    print(f"memory: {figures['memory_kb_per_connection']} KB per connection (goal < 10 KB)")
    print(f"messages: sent {figures['sent']:,}, delivered {figures['delivered']:,}, lost {figures['lost']}; latency "
          f"p50/p99 {figures['latency_p50_ms']}/{figures['latency_p99_ms']} ms, "
          f"PUBACK p99 {figures['puback_p99_ms']} ms")
    print(f"broker: CPU mean {figures['broker_cpu_mean']}% of a core, RSS max {figures['broker_rss_mb_max']} MB")
    load = os.getloadavg()
    print(f"load average after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
