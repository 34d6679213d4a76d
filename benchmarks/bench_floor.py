"""What `ecokit bench` measures on this machine: the latency floor of a local Mosquitto at
given rates, and the rate one publisher worker can offer before it falls behind.

1. ``floor``: for each QoS and rate, a steady run (50 publishers, one subscriber, 256-byte
   payloads, ``--seconds`` long) against a throwaway local stack (bridge and processor off, so
   the broker is alone); prints end-to-end latency percentiles, send lag, delivered rate and
   the broker's CPU.
2. ``ceiling``: a ramp from 1% of ``--peak`` to ``--peak`` msg/s with 1 and with 2 publisher workers;
   prints, per worker count, the highest one-second delivered rate and the offered rate at
   which the publishers first fell more than 100 ms behind their schedule.

    python benchmarks/bench_floor.py floor --rates 1000,5000,10000 --qos 0,1 --seconds 10
    python benchmarks/bench_floor.py ceiling --peak 40000 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, stack  # noqa: E402
from ecokit.bench import BUILTIN, BenchOptions, Overrides, apply_overrides, run_bench, stack_target  # noqa: E402

QUIET_STACK = {"bridge": {"enabled": False}, "processor": {"enabled": False}}


def floor(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with stack(QUIET_STACK) as st:
        target = stack_target(st)
        for qos in [int(q) for q in args.qos.split(",")]:
            for rate in [float(r) for r in args.rates.split(",")]:
                spec = apply_overrides(BUILTIN["steady"], Overrides(duration=args.seconds, rate=rate,
                                                                    publishers=args.publishers, qos=qos))
                load = machine()
                r = run_bench("steady", spec, target)
                t, lat, lag = r.total, r.total.latency, r.total.send_lag
                cpu = r.broker.get("process", {}).get("cpu_percent_mean")
                rows.append({"qos": qos, "offered": rate, "delivered": round(t.rate or 0), "lost": t.lost,
                             "p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "p99_ms": lat["p99_ms"],
                             "p999_ms": lat["p999_ms"], "max_ms": lat["max_ms"], "send_lag_p99_ms": lag["p99_ms"],
                             "broker_cpu_percent": cpu, "machine": load})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def ceiling(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with stack(QUIET_STACK) as st:
        target = stack_target(st)
        for workers in (1, 2):
            spec = apply_overrides(BUILTIN["ramp"], Overrides(duration=args.seconds, publishers=args.publishers))
            spec = apply_overrides(spec, Overrides(rate=args.peak))
            load = machine()
            r = run_bench("ramp", spec, target, options=BenchOptions(workers=workers, drain=30))
            timeline = [row for row in r.timeline if row["phase"] == "ramp"]
            best = max(timeline, key=lambda row: row["received"])
            behind = next((row for row in timeline if row["sent"] < 0.9 * row["offered"]), None)
            cpu = max((row.get("broker_cpu_percent") or 0 for row in timeline), default=None)
            rows.append({"workers": workers, "peak_offered": args.peak,
                         "best_second_delivered": best["received"], "at_offered": best["offered"],
                         "fell_behind_at_offered": behind["offered"] if behind else None,
                         "lost": r.total.lost, "broker_cpu_percent_max": cpu, "machine": load})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("floor")
    f.add_argument("--rates", default="1000,5000,10000")
    f.add_argument("--qos", default="0,1")
    f.add_argument("--seconds", type=float, default=10.0)
    f.add_argument("--publishers", type=int, default=50)
    c = sub.add_parser("ceiling")
    c.add_argument("--peak", type=float, default=40_000)
    c.add_argument("--seconds", type=float, default=20.0)
    c.add_argument("--publishers", type=int, default=100)
    args = parser.parse_args()
    print(f"# {machine()}", flush=True)
    (floor if args.what == "floor" else ceiling)(args)


if __name__ == "__main__":
    main()
