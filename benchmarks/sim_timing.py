"""The simulator's timing figures, which the integration tests only check loosely: how exactly
a vehicle keeps its telemetry interval (after a change too), and how fast it handles and
acknowledges a command.

A throwaway local stack (bridge and processor off: the broker alone), ``--vehicles`` vehicles
at ``--interval``; after ``--seconds`` / 2 one vehicle's interval is doubled by a
``set_interval`` command. Then ``--pings`` ping commands go to the fleet one after another.

    python benchmarks/sim_timing.py --vehicles 20 --interval 0.2 --seconds 10 --pings 100

Prints: spacing of the fixes (mean and p50/p99/max deviation from the interval, before and after
the change), command handling time in the vehicle (p50/p99/max) and the command round trip
(publish → ack received).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, stack  # noqa: E402
from ecokit.clients import fleet_ids, stack_connection  # noqa: E402
from ecokit.config.regions import REGIONS  # noqa: E402
from ecokit.sim.base import SimSettings  # noqa: E402
from ecokit.sim.commands import new_command  # noqa: E402
from ecokit.sim.control import send_command  # noqa: E402
from ecokit.sim.fleet import FleetSpec, build_fleet  # noqa: E402
from ecokit.sim.runner import Simulator  # noqa: E402
from ecokit.testing import SyncClient, wait_for  # noqa: E402

QUIET_STACK = {"bridge": {"enabled": False}, "processor": {"enabled": False}}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def spacing_figures(series: list[list[int]], interval_ms: float) -> dict[str, float]:
    """Gaps between consecutive fixes of each vehicle (``series``: their timestamps, ms)."""
    gaps = [b - a for ts in series for a, b in itertools.pairwise(sorted(ts))]
    errors = [abs(g - interval_ms) for g in gaps]
    return {"fixes": sum(len(ts) for ts in series), "mean_ms": round(statistics.fmean(gaps), 2),
            "deviation_p50_ms": round(percentile(errors, 50), 2), "deviation_p99_ms": round(percentile(errors, 99), 2),
            "deviation_max_ms": round(max(errors), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pings", type=int, default=100)
    args = parser.parse_args()
    print(machine())
    with stack(QUIET_STACK, devices=args.vehicles) as st:
        conn = stack_connection(st)
        admin = stack_connection(st, as_admin=True).auth("ecokit-admin")
        ids = fleet_ids(st, args.vehicles)
        fleet = build_fleet(FleetSpec(ids, REGIONS["paris"], 1, interval=args.interval))
        sim = Simulator(fleet, conn.target, conn.auth, SimSettings(
            qos=1, duration=args.seconds, queue_path=st.paths.root / "sim-timing.sqlite"))
        user, password = st.service_credentials("ecokit-admin")
        result: dict[str, Any] = {}
        with SyncClient(conn.target.host, conn.target.port, username=user, password=password) as sub:
            sub.connect()
            sub.subscribe("fleet/+/telemetry", qos=1)
            thread = threading.Thread(target=lambda: result.update(summary=asyncio.run(sim.run())), daemon=True)
            thread.start()
            wait_for("the fleet publishing", lambda: sim.stats.acked >= args.vehicles, 60)
            time.sleep(args.seconds / 2)
            changed = time.time() * 1000
            send_command(conn.target, admin, new_command("set_interval", {"seconds": args.interval * 2}, ts_ms=0),
                         ids[0], timeout=5)
            handling, round_trip = [], []
            for i in range(args.pings):
                acks = send_command(conn.target, admin, new_command("ping", ts_ms=0), ids[i % len(ids)], timeout=5)
                handling += [a.latency_ms for a in acks]
                round_trip += [a.round_trip_ms for a in acks]
            thread.join(args.seconds + 60)
            messages = sub.drain(1.0)
    docs = [json.loads(m.payload) for m in messages]
    by_vehicle: dict[str, list[int]] = {}
    for d in docs:
        by_vehicle.setdefault(d["vehicle"], []).append(d["ts"])
    interval_ms = args.interval * 1000
    changed_one = by_vehicle[ids[0]]
    figures = {
        "fleet_spacing": spacing_figures([ts for v, ts in by_vehicle.items() if v != ids[0]], interval_ms),
        "changed_vehicle_before": spacing_figures([[t for t in changed_one if t < changed]], interval_ms),
        "changed_vehicle_after": spacing_figures([[t for t in changed_one if t > changed + 2 * interval_ms]],
                                                 2 * interval_ms),
        "command_handling_ms": {"p50": round(percentile(handling, 50), 3), "p99": round(percentile(handling, 99), 3),
                                "max": round(max(handling), 3)},
        "command_round_trip_ms": {"p50": round(percentile(round_trip, 50), 2),
                                  "p99": round(percentile(round_trip, 99), 2), "max": round(max(round_trip), 2)},
        "drift_ms": result["summary"].drift_ms,
    }
    for name, value in figures.items():
        print(f"{name:<24} {value}")
    print(json.dumps({"vehicles": args.vehicles, "interval_s": args.interval, **figures}))


if __name__ == "__main__":
    main()
