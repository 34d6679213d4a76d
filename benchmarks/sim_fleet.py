"""5,000 vehicles at 1 msg/s each from one process, against a local Mosquitto.

Starts a stack through ecokit (free ports, local runtime) with one registered device per
vehicle, then runs the simulator in this process with each vehicle's own credentials.
Prints: connect success, publish schedule drift (p50/p99/max), client-side memory per
vehicle (RSS delta / vehicles: fleet + MQTT clients + offline queue), the process's CPU
use, and what a subscriber received.

    python benchmarks/sim_fleet.py --vehicles 5000 --seconds 60 --qos 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--qos", type=int, default=1, choices=(0, 1))
    ap.add_argument("--region", default="paris")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, args.vehicles * 2 + 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))  # mosquitto inherits it too

    import gc

    from ecokit.sim.fleet import FleetSpec, build_fleet
    from ecokit.sim.regions import parse_region
    from ecokit.sim.runner import SimSettings, Simulator, Snapshot
    from ecokit.sim.targets import fleet_ids, stack_connection
    from ecokit.testing import running_stack, write_project

    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_project(Path(tmp) / "bench", devices=args.vehicles, stack="bench-fleet",
                            extra={"broker": {"password_iterations": 1000}})
        t = time.monotonic()
        with running_stack(cfg) as stack:
            print(f"stack up in {time.monotonic() - t:.1f}s: {stack.broker_endpoints()['mqtt']}; "
                  f"{args.vehicles} vehicles every {args.interval:g}s for {args.seconds:g}s at QoS {args.qos}; "
                  f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
            conn = stack_connection(stack)
            ids = fleet_ids(stack, args.vehicles)
            user, password = stack.service_credentials("ecokit-admin")
            # The subscriber runs in its own process (mosquitto_sub), so it does not share
            # this process's CPU; it exits 0 once it has every expected message.
            expected = int(args.vehicles * round(args.seconds / args.interval))
            sub = subprocess.Popen(
                ["mosquitto_sub", "-h", conn.target.host, "-p", str(conn.target.port), "-u", user, "-P", password,
                 "-t", "fleet/+/telemetry", "-q", str(args.qos), "-C", str(expected),
                 "-W", str(int(args.seconds + 180))], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)

            gc.collect()
            base = rss_kb()
            fleet = build_fleet(FleetSpec(ids, parse_region(args.region), 42, interval=args.interval))
            samples: list[int] = []
            state: dict[str, float] = {}

            def progress(s: Snapshot) -> None:
                if s.phase == "publishing" and s.remaining is not None and "cpu0" not in state \
                        and s.elapsed > 0 and s.connected == s.target:
                    state["cpu0"], state["t0"], state["produced0"] = cpu_s(), time.monotonic(), s.produced
                if s.phase == "publishing":
                    samples.append(rss_kb())
                    state["cpu1"], state["t1"], state["produced1"] = cpu_s(), time.monotonic(), s.produced

            settings = SimSettings(qos=args.qos, duration=args.seconds, queue_path=Path(tmp) / "q.sqlite",
                                   status_interval=1.0, connect_timeout=120)
            sim = Simulator(fleet, conn.target, conn.auth, settings, progress=progress)
            t = time.monotonic()
            summary = asyncio.run(sim.run())
            total = time.monotonic() - t
            try:
                sub_rc = sub.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sub.kill()
                sub_rc = sub.wait()
            steady = sorted(samples)[len(samples) // 2] if samples else rss_kb()
            cpu = (state.get("cpu1", 0) - state.get("cpu0", 0)) / max(1e-9, state.get("t1", 1) - state.get("t0", 0))
            rate = (state.get("produced1", 0) - state.get("produced0", 0)) / max(
                1e-9, state.get("t1", 1) - state.get("t0", 0))
            print(f"connect success      {summary.ever_connected}/{summary.vehicles} "
                  f"({100 * summary.ever_connected / summary.vehicles:.1f}%), {summary.connect_failures} failed "
                  "attempts")
            print(f"telemetry            {summary.produced} messages in {summary.publish_seconds:.1f}s "
                  f"({summary.rate:.0f} msg/s; steady {rate:.0f} msg/s); subscriber "
                  f"{'received all ' + str(expected) if sub_rc == 0 else f'did not get all {expected} (rc {sub_rc})'}")
            print(f"schedule drift       p50 {summary.drift_ms['p50']:.2f} ms, p99 {summary.drift_ms['p99']:.2f} ms, "
                  f"max {summary.drift_ms['max']:.2f} ms")
            print(f"memory per vehicle   {(steady - base) / args.vehicles:.1f} KB (RSS {base / 1024:.0f} MB -> "
                  f"{steady / 1024:.0f} MB median while publishing)")
            print(f"simulator CPU        {cpu * 100:.0f}% of one core while publishing")
            print(f"acked {summary.acked}, reconnects {summary.reconnects}, errors {summary.errors}, "
                  f"queued left {summary.queued_left}, whole run {total:.1f}s")


if __name__ == "__main__":
    main()
