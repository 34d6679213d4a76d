"""Console figures on a throwaway local stack (mosquitto, influxd, bridge, processor, shadow,
console): a fleet of --vehicles at 1 msg/s each, QoS 1, published by paced processes.

    python benchmarks/console.py [--vehicles 5000] [--seconds 30] [--warmup 10] [--slow-clients 1]

Figures (goals from issue 12): the console's CPU (% of one core) and RSS over the measured
window, and publish → WebSocket frame latency: every telemetry message carries its publish
time (``ts``, epoch ms, set just before the publish), and a WebSocket client timestamps each
diff frame as it arrives; the latency of a vehicle in a frame is arrival - ts (p50, p99,
max). The page's own frame time is benchmarks/console_page.py's.

Side by side, on the same traffic in the same run: the bridge's and the fleet processor's
CPU (they read the same messages), so a noisy machine shows in the ratios. --slow-clients
opens stream clients that never read, to show that they cost neither latency nor memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import websockets
from _common import machine, stack

from ecokit.console.client import ConsoleEndpoint
from ecokit.mqtt.fast import FastMqtt
from ecokit.stack import Stack
from ecokit.status import stack_status

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            out[key] = int(value.split()[0]) / 1024
    return out["VmRSS"], out["VmHWM"]


def payload(vehicle: str, seq: int, ts: int) -> bytes:
    return json.dumps({"v": 1, "vehicle": vehicle, "seq": seq, "ts": ts, "lat": 48.80 + (hash(vehicle) % 1000) * 1e-4,
                       "lng": 2.25 + (seq % 1000) * 1e-5, "speed": 30.0 + seq % 40, "heading": float(seq % 360),
                       "fuel": 80.0 - (seq % 500) * 0.1, "odometer": 1000.0 + seq * 0.01, "engine": True,
                       "status": "moving"}, separators=(",", ":")).encode()


def publisher(host: str, port: int, username: str, password: str, ids: list[str], seconds: float,
              ready: Any, go: Any, done: Any) -> None:
    """One message per vehicle per second, spread evenly over the second, ts = publish time."""
    mqtt = FastMqtt(host, port, client_id=f"bench-console-{os.getpid()}", username=username, password=password)
    mqtt.connect()
    window = max(1, mqtt.send_quota - 1)
    ready.set()
    go.wait()
    start = time.monotonic()
    step = 1.0 / len(ids)
    sent = 0
    n = 0
    while True:
        due = start + n * step
        if due - start >= seconds:
            break
        delay = due - time.monotonic()
        if delay > 0.002:
            mqtt.flush()
            time.sleep(delay)
        vehicle = ids[n % len(ids)]
        mqtt.publish(f"fleet/{vehicle}/telemetry", payload(vehicle, n // len(ids), time.time_ns() // 1_000_000), qos=1)
        sent += 1
        n += 1
        if n % 32 == 0:
            mqtt.flush()
        while mqtt.inflight >= window:
            mqtt.read(0.01)
        if n % 256 == 0:
            mqtt.read(0)
            mqtt.ping_if_due()
    mqtt.flush()
    deadline = time.monotonic() + 10
    while mqtt.inflight and time.monotonic() < deadline:
        mqtt.read(0.05)
    mqtt.disconnect()
    done.put(sent)


def pid_of(st: Stack, service: str) -> int:
    for svc in stack_status(st).services:
        if svc.name == service and svc.pid:
            return int(svc.pid)
    raise RuntimeError(f"{service} has no pid")


async def watch(endpoint: ConsoleEndpoint, seconds: float, warmup: float, slow: int) -> dict[str, Any]:
    url = endpoint.url.replace("http://", "ws://") + "/stream"
    headers = {"Authorization": f"Bearer {endpoint.token}"}
    # Slow clients: connected, never reading: a tiny receive queue and a 4 KiB socket receive
    # buffer, so TCP pushes back on the console within a frame or two.
    sleepers = []
    host, port = endpoint.url.removeprefix("http://").rsplit(":", 1)
    for _ in range(slow):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sleepers.append(await websockets.connect(url, additional_headers=headers, max_queue=1, max_size=None,
                                                 sock=sock, compression=None))
    latencies: list[float] = []
    frames = vehicles = 0
    sizes: list[int] = []
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        snapshot = json.loads(await ws.recv())
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < warmup + seconds:
            raw = await asyncio.wait_for(ws.recv(), timeout=10)
            arrived = time.time() * 1000
            if elapsed < warmup or not raw.startswith('{"type":"diff"'):
                continue
            frame = json.loads(raw)
            frames += 1
            sizes.append(len(raw))
            for v in frame["vehicles"]:
                vehicles += 1
                if v["ts"] is not None:
                    latencies.append(arrived - v["ts"])
    for sleeper in sleepers:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sleeper.close(), timeout=2)
    latencies.sort()

    def q(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else float("nan")

    return {"snapshot_vehicles": len(snapshot["vehicles"]), "diff_frames": frames, "vehicle_updates": vehicles,
            "updates_per_s": round(vehicles / seconds, 1), "frame_kb_avg": round(statistics.mean(sizes) / 1024, 1)
            if sizes else 0, "latency_ms": {"p50": q(0.50), "p99": q(0.99), "max": round(latencies[-1], 1)
                                            if latencies else None, "samples": len(latencies)}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    before = machine()
    settings = {"bridge": {"flush_ms": 50}, "console": {"max_vehicles": max(20_000, args.vehicles)}}
    with stack(settings) as st:
        endpoint = ConsoleEndpoint.for_stack(st)
        assert endpoint is not None
        pids = {name: pid_of(st, name) for name in ("console", "bridge", "processor", "broker")}
        username, password = st.service_credentials("ecokit-admin")
        ids = [f"veh-{n:05d}" for n in range(args.vehicles)]
        ctx = mp.get_context("fork")
        go, done = ctx.Event(), ctx.Queue()
        procs, readies = [], []
        total = args.warmup + args.seconds + 2
        for index in range(args.publishers):
            ready = ctx.Event()
            proc = ctx.Process(target=publisher, args=("127.0.0.1", st.config.broker.ports.mqtt, username, password,
                                                       ids[index::args.publishers], total, ready, go, done))
            proc.start()
            procs.append(proc)
            readies.append(ready)
        for ready in readies:
            ready.wait(30)
        go.set()

        async def measured() -> tuple[dict[str, Any], dict[str, float], dict[str, float], float]:
            task = asyncio.create_task(watch(endpoint, args.seconds, args.warmup, args.slow_clients))
            await asyncio.sleep(args.warmup)
            cpu0 = {name: proc_cpu_s(pid) for name, pid in pids.items()}
            t0 = time.monotonic()
            await asyncio.sleep(args.seconds)
            cpu1 = {name: proc_cpu_s(pid) for name, pid in pids.items()}
            elapsed = time.monotonic() - t0
            return await task, cpu0, cpu1, elapsed

        stream, cpu0, cpu1, elapsed = asyncio.run(measured())
        rss, hwm = proc_rss_mb(pids["console"])
        sent = sum(done.get(timeout=60) for _ in procs)
        for proc in procs:
            proc.join(10)
        import requests

        stats = requests.get(endpoint.url + "/api/stats", headers={"Authorization": f"Bearer {endpoint.token}"},
                             timeout=5).json()
        metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in requests.get(
            endpoint.url + "/metrics", timeout=5).text.splitlines() if line.startswith("ecokit_console_stream_")}
    cpu = {name: round(100 * (cpu1[name] - cpu0[name]) / elapsed, 1) for name in pids}
    return {
        "machine": before,
        "vehicles": args.vehicles, "rate_per_vehicle": 1, "qos": 1, "seconds": args.seconds, "warmup": args.warmup,
        "published": sent, "slow_clients": args.slow_clients,
        "console": {"cpu_pct_of_core": cpu["console"], "rss_mb": round(rss, 1), "rss_peak_mb": round(hwm, 1),
                    "vehicles_held": stats["vehicles"]["total"], "msg_rate": stats["messages"]["rate"],
                    "device_to_console_ms": stats["latency_ms"]},
        "stream": {**stream, "coalesced_for_slow_clients": metrics.get("ecokit_console_stream_coalesced_total", 0.0),
                   "closed_slow": metrics.get("ecokit_console_stream_closed_slow_total", 0.0)},
        "side_by_side_cpu_pct_of_core": cpu,
        "goals": {"cpu_lt_25": cpu["console"] < 25, "rss_lt_300mb": hwm < 300,
                  "p99_lt_400ms": stream["latency_ms"]["p99"] < 400},
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--slow-clients", type=int, default=1, help="stream clients that never read")
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
