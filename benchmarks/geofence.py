"""Geofence figures: 10,000 vehicles at 1 Hz against 1,000 polygons (target: < 30 µs per fix
evaluation on average, p99 < 200 µs, on one core, and the processor keeping up).

    python benchmarks/geofence.py evaluate [--vehicles 10000] [--fences 1000] [--seconds 30]
    python benchmarks/geofence.py service  [--vehicles 10000] [--fences 1000] [--seconds 60]

``evaluate`` runs the processor's pure core (``ProcessorCore.on_telemetry``: status, geofence
membership with min inside/outside times, and three alert rules) over every fix of a
simulated fleet, one fix at a time on one core, and times each call; then again the way the
service runs it, the fences of each batch of fixes looked up in one vectorised query. Beside it, on the same
fixes and fences: a scan of every prepared fence without the tree (shapely, no STRtree), and
Traccar's method (a bounding-box check, then ray casting, for every fence, in Python), on a
sample (it is slow). All three must agree on which fences hold each fix.

``service`` starts a local stack (mosquitto, the fleet processor with the same 1,000 fences;
the bridge off, so the processor has the machine), publishes the fleet at 1 Hz per vehicle
from two processes for the given time, and reports the processor's CPU, whether it kept up
(every message counted by its /metrics) and its own mean evaluation time per fix.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests
from _common import machine
from hdrh.histogram import HdrHistogram
from shapely import Polygon, prepare

from ecokit.config.alerts import AlertRule, GeofencesConfig
from ecokit.config.rules import ProcessorConfig
from ecokit.geofence import Geofence, parse_geofences
from ecokit.mqtt.fast import FastMqtt
from ecokit.processor.core import ProcessorCore
from ecokit.status import stack_status
from ecokit.testing import running_stack, write_project

# The Paris simulator region, roughly 30 x 25 km.
WEST, SOUTH, EAST, NORTH = 2.22, 48.78, 2.47, 49.00
KM_LAT = 111.195
KM_LNG = KM_LAT * math.cos(math.radians(48.9))
ALERTS = {"overspeed": {"when": "speed > 130 for 10s", "clear": "speed < 120"},
          "low_fuel": {"when": "fuel < 10", "clear": "fuel > 15"},
          "restricted": {"when": "enter tag:restricted"}}


def fence_features(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """Star-shaped polygons of 8-40 corners, 100 m to 1.5 km across, anywhere in the region."""
    rng = random.Random(seed)
    features = []
    for i in range(count):
        cx, cy = rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH)
        radius_km = rng.uniform(0.05, 0.75)
        corners = rng.randint(8, 40)
        ring = []
        for k in range(corners):
            angle = 2 * math.pi * k / corners
            r = radius_km * rng.uniform(0.6, 1.0)
            ring.append([round(cx + r * math.cos(angle) / KM_LNG, 6), round(cy + r * math.sin(angle) / KM_LAT, 6)])
        ring.append(ring[0])
        tags = ["restricted"] if i % 10 == 0 else ["depot"]
        features.append({"type": "Feature", "id": f"z{i:04d}", "properties": {
            "name": f"Zone {i}", "tags": tags, "min_inside_s": 5, "min_outside_s": 5},
            "geometry": {"type": "Polygon", "coordinates": [ring]}})
    return features


def fences(count: int) -> list[Geofence]:
    return list(parse_geofences({"type": "FeatureCollection", "features": fence_features(count)},
                                source="bench").fences)


class Fleet:
    """Vehicles driving straight lines at 20-130 km/h, turning now and then, in the region."""

    def __init__(self, vehicles: int, seed: int = 2) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.ids = [f"bv{i:05d}" for i in range(vehicles)]
        self.pos = [[rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH)] for _ in range(vehicles)]
        self.heading = [rng.uniform(0, 2 * math.pi) for _ in range(vehicles)]
        self.speed = [rng.uniform(20, 130) for _ in range(vehicles)]
        self.fuel = [rng.uniform(5, 100) for _ in range(vehicles)]

    def step(self, i: int, ts_ms: int) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.02:
            self.heading[i] += rng.uniform(-1.5, 1.5)
            self.speed[i] = min(140.0, max(0.0, self.speed[i] + rng.uniform(-20, 20)))
        km = self.speed[i] / 3600
        p = self.pos[i]
        p[0] += km * math.cos(self.heading[i]) / KM_LNG
        p[1] += km * math.sin(self.heading[i]) / KM_LAT
        if not (WEST <= p[0] <= EAST and SOUTH <= p[1] <= NORTH):
            self.heading[i] += math.pi  # bounce off the region's edge
            p[0], p[1] = min(EAST, max(WEST, p[0])), min(NORTH, max(SOUTH, p[1]))
        self.fuel[i] = max(0.0, self.fuel[i] - 0.001)
        return {"v": 1, "vehicle": self.ids[i], "seq": ts_ms, "ts": ts_ms, "lat": round(p[1], 6),
                "lng": round(p[0], 6), "speed": round(self.speed[i], 1), "heading": 0.0,
                "fuel": round(self.fuel[i], 2), "odometer": 0.0, "engine": True, "status": "moving"}


def traccar_contains(ring: list[tuple[float, float]], bbox: tuple[float, float, float, float],
                     lng: float, lat: float) -> bool:
    """Traccar's GeofencePolygon.containsPoint: a bounding-box check, then ray casting."""
    if not (bbox[0] <= lng <= bbox[2] and bbox[1] <= lat <= bbox[3]):
        return False
    inside = False
    j = len(ring) - 1
    for i in range(len(ring)):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > lat) != (yj > lat) and lng < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def _core(fs: list[Geofence]) -> ProcessorCore:
    return ProcessorCore(ProcessorConfig(offline_after=60, status_interval=30), GeofencesConfig(),
                         {n: AlertRule.model_validate(r) for n, r in ALERTS.items()}, fs)


def _run(core: ProcessorCore, fixes: list[tuple[int, dict[str, Any]]], clock: Any) -> tuple[HdrHistogram, int, int]:
    """Every fix through the core, timing each call with ``clock`` (ns)."""
    hist = HdrHistogram(1, 60_000_000_000, 3)
    events = alerts = 0
    for now, doc in fixes:
        started = clock()
        out = core.on_telemetry(doc["vehicle"], doc, now)
        hist.record_value(max(1, clock() - started))
        events += len(out.events)
        alerts += len(out.alerts)
    return hist, events, alerts


def _figures(hist: HdrHistogram) -> dict[str, float]:
    return {"mean_us": round(hist.get_mean_value() / 1000, 2),
            "p50_us": round(hist.get_value_at_percentile(50) / 1000, 2),
            "p99_us": round(hist.get_value_at_percentile(99) / 1000, 2),
            "p999_us": round(hist.get_value_at_percentile(99.9) / 1000, 2),
            "max_us": round(hist.get_max_value() / 1000, 2)}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    fs = fences(args.fences)
    fleet = Fleet(args.vehicles)
    t0 = 1_700_000_000
    fixes = [(t0 + s, fleet.step(i, (t0 + s) * 1000)) for s in range(args.seconds) for i in range(args.vehicles)]
    n = len(fixes)
    # Wall clock per call (what a message waits), then the same work timed in this
    # thread's CPU time (what the core costs, whatever else the machine runs).
    cpu0, wall0 = time.process_time(), time.perf_counter()
    wall_hist, events, alerts = _run(_core(fs), fixes, time.perf_counter_ns)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    cpu_hist, _, _ = _run(_core(fs), fixes, time.thread_time_ns)
    # As the service does it: the fences of a batch of fixes looked up in one query.
    batched = _core(fs)
    cpu0 = time.process_time()
    for i in range(0, n, args.batch):
        chunk = fixes[i:i + args.batch]
        located = batched.locate([doc for _, doc in chunk])
        for (now, doc), where in zip(chunk, located, strict=True):
            batched.on_telemetry(doc["vehicle"], doc, now, located=where)
    batched_us = (time.process_time() - cpu0) / n * 1e6
    core = _core(fs)

    # The references, on the same fixes (a sample for the slow one).
    prepared = [f.geometry for f in fs]
    for g in prepared:
        prepare(g)
    from shapely import contains_xy

    bounds = [f.bounds for f in fs]
    sample = fixes[:: max(1, n // args.sample)]
    started = time.process_time()  # CPU time: the references are compared on the work they do
    scan_hits = [{fs[k].id for k, g in enumerate(prepared)
                  if bounds[k][0] <= d["lng"] <= bounds[k][2] and bounds[k][1] <= d["lat"] <= bounds[k][3]
                  and contains_xy(g, d["lng"], d["lat"])} for _, d in sample]
    scan_us = (time.process_time() - started) / len(sample) * 1e6
    rings = []
    for f in fs:
        geom = f.geometry
        assert isinstance(geom, Polygon)
        rings.append(list(geom.exterior.coords))
    started = time.process_time()
    traccar_hits = [{fs[k].id for k in range(len(fs)) if traccar_contains(rings[k], bounds[k], d["lng"], d["lat"])}
                    for _, d in sample]
    traccar_us = (time.process_time() - started) / len(sample) * 1e6
    started = time.process_time()
    tree_hits = [{f.id for f in core.tracker.index.containing(d["lng"], d["lat"])} for _, d in sample]
    tree_us = (time.process_time() - started) / len(sample) * 1e6
    agree = scan_hits == traccar_hits == tree_hits
    return {
        "what": "ProcessorCore.on_telemetry per fix (status + geofences + 3 alert rules), one core",
        "vehicles": args.vehicles, "fences": len(fs), "fixes": n, "seconds_of_fleet": args.seconds,
        "per_fix_cpu_time": _figures(cpu_hist), "per_fix_wall_time": _figures(wall_hist),
        f"batched_{args.batch}_mean_cpu_us": round(batched_us, 2),
        "fixes_per_cpu_second": round(n / cpu),
        "core_share_at_1hz": f"{args.vehicles / (n / cpu) * 100:.1f} % of one core for {args.vehicles} vehicles",
        "events": events, "alerts": alerts, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "lookup_only_cpu_us": {"strtree_prepared (ecokit)": round(tree_us, 2),
                               "scan_prepared (no tree)": round(scan_us, 2),
                           "traccar (bbox + ray casting, Python)": round(traccar_us, 2),
                           "sample": len(sample), "all_agree": agree},
    }


def _publisher(host: str, port: int, username: str, password: str, index: int, vehicles: int, processes: int,
               seconds: int, go: Any, done: Any) -> None:
    fleet = Fleet(vehicles, seed=2)
    mine = range(index, vehicles, processes)
    mqtt = FastMqtt(host, port, client_id=f"bench-geofence-{index}-{os.getpid()}", username=username,
                    password=password)
    mqtt.connect()
    window = max(1, mqtt.send_quota - 1)
    go.wait()
    start = time.perf_counter()
    sent = 0
    late = 0.0
    for second in range(seconds):
        ts = int(time.time() * 1000)
        for i in mine:
            doc = fleet.step(i, ts)
            mqtt.publish(f"fleet/{doc['vehicle']}/telemetry", json.dumps(doc, separators=(",", ":")).encode(), qos=1)
            sent += 1
            if mqtt.inflight >= window or sent % 64 == 0:
                mqtt.flush()
                while mqtt.inflight >= window:
                    mqtt.read(0.05)
        mqtt.flush()
        delay = start + second + 1 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            late = max(late, -delay)
    while mqtt.inflight:
        mqtt.read(0.05)
    mqtt.disconnect()
    done.put((index, sent, late))


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _metrics(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {name: float(value) for line in text.splitlines() if line and not line.startswith("#")
            for name, _, value in [line.rpartition(" ")]}


def _sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def service(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ecokit-bench-") as folder:
        config = write_project(Path(folder), devices=1, extra={
            "bridge": {"enabled": False}, "processor": {"offline_after": 120, "status_interval": 0},
            "alerts": ALERTS})
        features = fence_features(args.fences)
        (Path(folder) / "config" / "geofences.geojson").write_text(
            json.dumps({"type": "FeatureCollection", "features": features}))
        with running_stack(config) as stack:
            port = stack.config.service_ports.processor
            pid = next(s.pid for s in stack_status(stack).services if s.name == "processor")
            assert pid is not None
            username, password = stack.service_credentials("ecokit-admin")
            ctx = mp.get_context("fork")
            go, done = ctx.Event(), ctx.Queue()
            procs = [ctx.Process(target=_publisher, args=(
                "127.0.0.1", stack.config.broker.ports.mqtt, username, password, index, args.vehicles, 2,
                args.seconds, go, done)) for index in range(2)]
            for proc in procs:
                proc.start()
            time.sleep(1.0)
            before = _metrics(port)
            ticks0, wall0 = _cpu_ticks(pid), time.perf_counter()
            go.set()
            results = [done.get(timeout=args.seconds + 300) for _ in procs]
            published = sum(r[1] for r in results)
            published_at = time.perf_counter()
            key = 'ecokit_processor_messages_received_total{kind="telemetry"}'
            target = before.get(key, 0) + published
            while _metrics(port).get(key, 0) < target and time.perf_counter() - published_at < 120:
                time.sleep(0.2)
            caught_up = time.perf_counter() - published_at
            ticks1, wall1 = _cpu_ticks(pid), time.perf_counter()
            after = _metrics(port)
            for proc in procs:
                proc.join(10)
    hz = os.sysconf("SC_CLK_TCK")
    cpu = (ticks1 - ticks0) / hz
    evaluated_key = "ecokit_processor_fixes_evaluated_total"
    evaluated = after[evaluated_key] - before.get(evaluated_key, 0)
    eval_s = after["ecokit_processor_fix_evaluation_seconds_total"] - before.get(
        "ecokit_processor_fix_evaluation_seconds_total", 0)
    return {
        "what": "the fleet processor service (fast intake, JSON, core, publishing) fed by 2 publisher processes",
        "vehicles": args.vehicles, "fences": args.fences, "seconds": args.seconds, "published": published,
        "received": int(after[key] - before.get(key, 0)), "evaluated": int(evaluated),
        "skipped": {k.split('"')[1]: int(v) for k, v in after.items()
                    if k.startswith("ecokit_processor_fixes_skipped_total")},
        "caught_up_after_last_publish_s": round(caught_up, 2),
        "publisher_worst_lag_s": round(max(r[2] for r in results), 3),
        "processor_cpu_s": round(cpu, 1), "processor_cpu_percent_of_one_core": round(cpu / (wall1 - wall0) * 100, 1),
        "processor_cpu_us_per_message": round(cpu / max(1, published) * 1e6, 1),
        "processor_mean_evaluation_wall_us": round(eval_s / max(1, evaluated) * 1e6, 2),
        "geofence_events": int(_sum(after, "ecokit_processor_geofence_events_total")
                               - _sum(before, "ecokit_processor_geofence_events_total")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["evaluate", "service"])
    parser.add_argument("--vehicles", type=int, default=10_000)
    parser.add_argument("--fences", type=int, default=1_000)
    parser.add_argument("--seconds", type=int, default=None)
    parser.add_argument("--sample", type=int, default=2_000, help="fixes for the reference lookups")
    parser.add_argument("--batch", type=int, default=256, help="fixes per batched lookup (evaluate)")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 30 if args.mode == "evaluate" else 60
    print(f"machine: {machine()}")
    result = evaluate(args) if args.mode == "evaluate" else service(args)
    result["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
