"""5,000 vehicles at 1 msg/s each from one process (or 20,000 from two), against a local Mosquitto.

Starts a stack through ecokit (free ports, local runtime; the broker alone unless
``--pipeline``) with one registered device per vehicle, then runs the simulator in this
process (``--workers N``: in N forked processes) with each vehicle's own credentials.
Prints: connect success, publish schedule drift (p50/p99/max), client-side memory per
vehicle (RSS delta / vehicles: fleet + MQTT clients + offline queue), the simulator's CPU
while publishing (and per message), and what a subscriber received. ``--client paho`` runs
the vehicles on paho instead of the fast path (the same run, the other client: compare).

With ``--shadow`` every vehicle also keeps its device shadow (reports on connect and on
change, syncs, applies desired.publish_interval; the stack runs the shadow service), and at
mid-run ``--desired-sample`` vehicles are sent ``desired.publish_interval = 0.5``: printed are
the shadow traffic, how many vehicles got their sync answer, and the time from the desired
update to the vehicle's report of the new interval (update/accepted seen by a watcher).

    python benchmarks/sim_fleet.py --vehicles 5000 --seconds 60 --qos 1 [--shadow]
    python benchmarks/sim_fleet.py --vehicles 19900 --workers 2 --seconds 60 --qos 1
    python benchmarks/sim_fleet.py --vehicles 4000 --interval 0.25 --client paho   # 16,000 msg/s, paho

One Mosquitto serves every vehicle, and each vehicle is one of its sockets: the per-process
open-file limit (``ulimit -Hn``) bounds the fleet (the script says so before it starts).
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from benchmarks._common import cpu_s, rss_kb  # noqa: E402
from ecokit.mqtt.loop import raise_nofile  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--qos", type=int, default=1, choices=(0, 1))
    ap.add_argument("--region", default="paris")
    ap.add_argument("--shadow", action=argparse.BooleanOptionalAction, default=False,
                    help="vehicles keep their device shadows")
    ap.add_argument("--workers", type=int, default=1,
                    help="simulator processes sharing the fleet (ecokit simulate --workers); memory per vehicle "
                         "is printed for 1 only")
    ap.add_argument("--desired-sample", type=int, default=20,
                    help="with --shadow: vehicles sent a desired publish_interval at mid-run")
    ap.add_argument("--client", choices=("fast", "paho"), default="fast", help="each vehicle's MQTT client")
    ap.add_argument("--sub-qos", type=int, choices=(0, 1), default=None,
                    help="QoS of the counting subscriber (default: --qos); 0 spares the broker a PUBACK per "
                         "message, the harness's own cost")
    ap.add_argument("--pipeline", action="store_true",
                    help="keep the bridge, processor and console on (every message also goes to InfluxDB)")
    args = ap.parse_args()

    limit = raise_nofile(args.vehicles * 2 + 1024)  # mosquitto inherits it too
    if limit < args.vehicles + BROKER_RESERVE:
        sys.exit(f"this machine allows {limit} open files per process (hard limit; raising it needs "
                 f"CAP_SYS_RESOURCE): one Mosquitto serving {args.vehicles} vehicles needs about "
                 f"{args.vehicles + BROKER_RESERVE}; at most {limit - BROKER_RESERVE} vehicles here")

    import gc

    from ecokit.clients import fleet_ids, stack_connection
    from ecokit.config.regions import parse_region
    from ecokit.sim.base import SimSettings
    from ecokit.sim.fleet import FleetSpec, build_fleet
    from ecokit.sim.runner import Simulator
    from ecokit.sim.stats import Snapshot
    from ecokit.testing import running_stack, write_project

    with tempfile.TemporaryDirectory() as tmp:
        extra: dict[str, Any] = {"broker": {"password_iterations": 1000}}
        if not args.pipeline:
            extra.update(bridge={"enabled": False}, processor={"enabled": False}, console={"enabled": False})
        cfg = write_project(Path(tmp) / "bench", devices=args.vehicles, stack="bench-fleet", extra=extra)
        t = time.monotonic()
        with running_stack(cfg) as stack:
            print(f"stack up in {time.monotonic() - t:.1f}s: {stack.broker_endpoints()['mqtt']}; "
                  f"{args.vehicles} vehicles every {args.interval:g}s for {args.seconds:g}s at QoS {args.qos}, "
                  f"{args.client} client, {args.workers} process(es), pipeline {'on' if args.pipeline else 'off'}; "
                  f"cpus {os.cpu_count()}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            conn = stack_connection(stack)
            admin = stack_connection(stack, as_admin=True).target  # the subscriber, as ecokit-admin
            ids = fleet_ids(stack, args.vehicles)
            user, password = stack.service_credentials("ecokit-admin")
            # The subscriber runs in its own process (mosquitto_sub), so it does not share
            # this process's CPU; it writes a line per message (flushed each time) to a file.
            received = Path(tmp) / "received.txt"
            with received.open("wb") as sink:
                sub = subprocess.Popen(
                    ["mosquitto_sub", "-h", admin.host, "-p", str(admin.port), "-u", user, "-P", password,
                     "-t", "fleet/+/telemetry", "-q", str(args.qos if args.sub_qos is None else args.sub_qos),
                     "-F", "%t"],
                    stdout=sink, stderr=subprocess.DEVNULL)
            time.sleep(0.5)

            gc.collect()
            base = rss_kb()
            fleet = build_fleet(FleetSpec(ids, parse_region(args.region), 42, interval=args.interval))
            samples: list[int] = []
            state: dict[str, float] = {}

            from ecokit.bench.targets import broker_pid

            others = {"broker": broker_pid(stack) or 0, "subscriber": sub.pid}

            def sim_cpu() -> float:
                return cpu_s() if args.workers == 1 else processes_cpu(sim.pids)

            def progress(s: Snapshot) -> None:
                if s.phase == "publishing" and s.remaining is not None and "cpu0" not in state \
                        and s.elapsed > 0 and s.connected == s.target:
                    state["cpu0"], state["t0"], state["produced0"] = sim_cpu(), time.monotonic(), s.produced
                    state.update({f"{k}0": processes_cpu([pid]) for k, pid in others.items()})
                if s.phase == "publishing":
                    samples.append(rss_kb())
                    state["cpu1"], state["t1"], state["produced1"] = sim_cpu(), time.monotonic(), s.produced
                    state.update({f"{k}1": processes_cpu([pid]) for k, pid in others.items()})

            settings = SimSettings(qos=args.qos, duration=args.seconds, queue_path=Path(tmp) / "q.sqlite",
                                   status_interval=1.0, connect_timeout=120, shadow=args.shadow, client=args.client)
            sim: Any = Simulator(fleet, conn.target, conn.auth, settings, progress=progress)
            if args.workers > 1:
                from ecokit.sim.workers import WorkerFleet

                sim = WorkerFleet(fleet, conn.target, conn.auth, settings, args.workers, progress=progress)
            probe: dict[str, Any] = {"ready": threading.Event()}
            prober = None
            if args.shadow and args.desired_sample:
                prober = threading.Thread(target=desired_probe, args=(stack, ids[:args.desired_sample],
                                                                      args.seconds / 2 + 5, probe), daemon=True)
                prober.start()
                probe["ready"].wait(30)
            t = time.monotonic()
            children_before = children_cpu()
            summary = asyncio.run(sim.run()) if args.workers == 1 else sim.run()
            total = time.monotonic() - t
            deadline = time.monotonic() + 60
            while lines(received) < summary.produced and time.monotonic() < deadline:
                time.sleep(0.2)
            got = lines(received)
            sub.terminate()
            sub.wait(10)
            if prober is not None:
                prober.join(30)
            steady = sorted(samples)[len(samples) // 2] if samples else rss_kb()
            cpu = (state.get("cpu1", 0) - state.get("cpu0", 0)) / max(1e-9, state.get("t1", 1) - state.get("t0", 0))
            rate = (state.get("produced1", 0) - state.get("produced0", 0)) / max(
                1e-9, state.get("t1", 1) - state.get("t0", 0))
            print(f"connect success      {summary.ever_connected}/{summary.vehicles} "
                  f"({100 * summary.ever_connected / summary.vehicles:.1f}%), {summary.connect_failures} failed "
                  "attempts")
            print(f"telemetry            {summary.produced} messages in {summary.publish_seconds:.1f}s "
                  f"({summary.rate:.0f} msg/s; steady {rate:.0f} msg/s); subscriber "
                  + (f"received all {got}" if got >= summary.produced else f"received {got} of {summary.produced}"))
            print(f"schedule drift       p50 {summary.drift_ms['p50']:.2f} ms, p99 {summary.drift_ms['p99']:.2f} ms, "
                  f"max {summary.drift_ms['max']:.2f} ms")
            per_message = cpu / rate * 1e6 if rate > 0 else 0.0
            if args.workers == 1:
                print(f"memory per vehicle   {(steady - base) / args.vehicles:.1f} KB (RSS {base / 1024:.0f} MB -> "
                      f"{steady / 1024:.0f} MB median while publishing)")
                print(f"simulator CPU        {cpu * 100:.0f}% of one core while publishing, {per_message:.1f} us "
                      "per message")
            else:
                used = children_cpu() - children_before
                print(f"simulator CPU        {args.workers} worker processes: {cpu * 100:.0f}% of one core while "
                      f"publishing, {per_message:.1f} us per message; {used:.1f} CPU s over the whole run "
                      "(connects included)")
            window = max(1e-9, state.get("t1", 1) - state.get("t0", 0))
            print("broker, subscriber   " + ", ".join(
                f"{k} {(state.get(f'{k}1', 0) - state.get(f'{k}0', 0)) / window * 100:.0f}%" for k in others)
                + " of one core while publishing (the same window)")
            print(f"load average         {' '.join(f'{x:.2f}' for x in os.getloadavg())} after the run")
            print(f"acked {summary.acked}, reconnects {summary.reconnects}, errors {summary.errors}, "
                  f"queued left {summary.queued_left}, whole run {total:.1f}s")
            if args.shadow and args.workers == 1:
                synced = sum(1 for vid in ids if (sh := sim.shadow_of(vid)) is not None and sh.device.version > 0)
                print(f"shadows              {summary.shadow_reports} reports "
                      f"({summary.shadow_reports - summary.vehicles} after connect: engine/interval changes), "
                      f"{synced}/{summary.vehicles} vehicles answered by the service, "
                      f"{summary.shadow_deltas} desired intervals applied, {summary.shadow_rejected} refused; "
                      f"publishing started {summary.shadow_sync_seconds:.2f}s after the last connect (sync)")
                lat = sorted(probe.get("latency_ms", []))
                if lat:
                    print(f"desired -> reported  {len(lat)}/{len(probe['sent'])} vehicles, "
                          f"p50 {lat[len(lat) // 2]:.1f} ms, max {lat[-1]:.1f} ms (while publishing)")
                elif "error" in probe:
                    print(f"desired -> reported  failed: {probe['error']}")
            for line in summary.last_errors[-3:]:
                print(f"  error: {line}")


BROKER_RESERVE = 40  # Mosquitto's own descriptors (listeners, log, epoll, persistence) and the other clients


def processes_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of the live processes ``pids`` (the simulator workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def desired_probe(stack: Any, sample: list[str], after: float, result: dict[str, Any]) -> None:
    """At ``after`` s, set desired.publish_interval = 0.5 for each vehicle of ``sample``; time until
    its report of 0.5 shows on update/accepted."""
    import json

    from ecokit.clients import shadow_client, stack_connection
    from ecokit.testing import SyncClient

    try:
        target = stack_connection(stack, as_admin=True).target
        user, password = stack.service_credentials("ecokit-admin")
        seen: dict[str, float] = {}
        with SyncClient(target.host, target.port, username=user, password=password) as watcher, \
                shadow_client(stack).connect() as app:
            # Connected before the vehicles' sockets open: paho's own loop uses select(), which
            # cannot watch a descriptor above 1023. Subscribed only now, and only to the sample:
            # this process's memory is measured.
            watcher.connect()
            result["ready"].set()
            time.sleep(after)
            for vid in sample:
                watcher.subscribe(f"things/{vid}/shadow/update/accepted", qos=1)
            sent: dict[str, float] = {}
            for vid in sample:
                sent[vid] = time.monotonic()
                app.update(vid, desired={"publish_interval": 0.5}, timeout=10)
            result["sent"] = sent
            deadline = time.monotonic() + 15
            while len(seen) < len(sample) and time.monotonic() < deadline:
                for msg in watcher.drain(0.1):
                    doc = json.loads(msg.payload)
                    vid = msg.topic.split("/")[1]
                    if vid in sent and vid not in seen and \
                            (doc.get("state") or {}).get("reported", {}).get("publish_interval") == 0.5:
                        seen[vid] = msg.received_at
            result["latency_ms"] = [(seen[v] - sent[v]) * 1000 for v in seen]
    except Exception as exc:  # reported by the main thread
        result["error"] = repr(exc)
    finally:
        result["ready"].set()


if __name__ == "__main__":
    main()
