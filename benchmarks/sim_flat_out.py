"""Flat-out: how many messages/s the simulator pushes through a local Mosquitto, at QoS 0
and QoS 1, next to `mosquitto_pub` on the same broker.

For each QoS: a subscriber (`mosquitto_sub`, its own process) waits for every message;
the simulator publishes ``--vehicles`` x ``--count`` telemetry messages as fast as the
broker takes them (``--rate 0``); the figure is messages delivered to the subscriber per
second of the simulator's publishing. Then `mosquitto_pub -l` (one client, one message
per stdin line) publishes the same number of telemetry-sized messages, timed the same
way.

The stack runs the broker alone by default (bridge and fleet processor off), so the two
publishers compete with the broker and the subscriber only; ``--pipeline`` keeps the bridge
and processor writing every message to InfluxDB, as a stack does in use.

    python benchmarks/sim_flat_out.py --vehicles 100 --count 500 [--pipeline]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Subscriber:
    """`mosquitto_sub -C N` in its own process; records when it has received all N."""

    def __init__(self, host: str, port: int, user: str, password: str, topic: str, qos: int, count: int) -> None:
        self.proc = subprocess.Popen(["mosquitto_sub", "-h", host, "-p", str(port), "-u", user, "-P", password,
                                      "-t", topic, "-q", str(qos), "-C", str(count), "-W", "300"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.done_at: float | None = None
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()
        time.sleep(0.5)  # subscribed before anything is published

    def _wait(self) -> None:
        self.rc = self.proc.wait()
        self.done_at = time.monotonic()

    def result(self) -> tuple[bool, float]:
        self.thread.join(300)
        if self.done_at is None:
            self.proc.kill()
            self.proc.wait()
            return False, time.monotonic()
        return self.rc == 0, self.done_at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=100)
    ap.add_argument("--count", type=int, default=500, help="messages per vehicle")
    ap.add_argument("--pipeline", action="store_true",
                    help="keep the bridge and processor on (every message also written to InfluxDB)")
    args = ap.parse_args()
    from ecokit.mqtt.loop import raise_nofile

    raise_nofile(args.vehicles * 2 + 1024)  # mosquitto inherits it too

    from ecokit.clients import fleet_ids, stack_connection
    from ecokit.config.regions import REGIONS
    from ecokit.sim.base import SimSettings
    from ecokit.sim.fleet import FleetSpec, build_fleet
    from ecokit.sim.runner import Simulator
    from ecokit.testing import running_stack, write_project

    total = args.vehicles * args.count
    with tempfile.TemporaryDirectory() as tmp:
        quiet = None if args.pipeline else {"bridge": {"enabled": False}, "processor": {"enabled": False}}
        cfg = write_project(Path(tmp) / "bench", devices=args.vehicles, stack="bench-flat", extra=quiet)
        with running_stack(cfg) as stack:
            conn = stack_connection(stack)
            host, port = conn.target.host, conn.target.port
            user, password = stack.service_credentials("ecokit-admin")
            print(f"broker {conn.target.url}; {args.vehicles} vehicles x {args.count} = {total} messages per run; "
                  f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}; "
                  f"bridge and processor {'on' if args.pipeline else 'off'}")
            sample = build_fleet(FleetSpec(["vehicle-0001"], REGIONS["paris"], 1))[0]
            payload = sample.telemetry(sample.step(0.0), time.time_ns() // 1_000_000)
            print(f"{'publisher':<34}{'QoS':>4}{'sent msg/s':>12}{'delivered msg/s':>17}{'complete':>10}")
            for qos in (0, 1):
                sub = Subscriber(host, port, user, password, "fleet/+/telemetry", qos, total)
                fleet = build_fleet(FleetSpec(fleet_ids(stack, args.vehicles), REGIONS["paris"], 1))
                sim = Simulator(fleet, conn.target, conn.auth,
                                SimSettings(qos=qos, count=args.count, flat_out=True,
                                            queue_path=Path(tmp) / f"q{qos}.sqlite"))
                summary = asyncio.run(sim.run())
                start = sim.stats.publishing_since or 0.0
                ok, done = sub.result()
                print(f"{f'ecokit simulate ({args.vehicles} clients)':<34}{qos:>4}{summary.rate:>12,.0f}"
                      f"{total / (done - start):>17,.0f}{'yes' if ok else 'NO':>10}")

                sub = Subscriber(host, port, user, password, "bench/flat", qos, total)
                lines = (payload.replace(b"\n", b" ") + b"\n") * total
                t0 = time.monotonic()
                subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-u", user, "-P", password, "-t",
                                "bench/flat", "-q", str(qos), "-l"], input=lines, check=True,
                               stdout=subprocess.DEVNULL)
                sent = time.monotonic()
                ok, done = sub.result()
                print(f"{'mosquitto_pub -l (1 client)':<34}{qos:>4}{total / (sent - t0):>12,.0f}"
                      f"{total / (done - t0):>17,.0f}{'yes' if ok else 'NO':>10}")


if __name__ == "__main__":
    main()
