"""Helpers shared by the benchmark scripts: a throwaway stack, fast publishers, machine notes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ecokit.mqtt.fast import FastMqtt
from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1
from ecokit.testing import running_stack, write_project


def machine() -> str:
    load = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
            f"load average before the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def rss_kb() -> int:
    """This process's resident memory, KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s() -> float:
    """CPU seconds (user + system) this process has used."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextmanager
def stack(extra: dict[str, Any], devices: int = 3, profile: str | None = None) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="ecokit-bench-") as folder:
        config = write_project(Path(folder), devices=devices, extra=extra)
        with running_stack(config, profile=profile) as running:
            yield running


def telemetry(vehicle: str, seq: int, ts: int) -> bytes:
    return json.dumps({"v": 1, "vehicle": vehicle, "seq": seq, "ts": ts, "lat": 52.5 + (seq % 1000) * 1e-5,
                       "lng": 13.4 + (seq % 777) * 1e-5, "speed": 40.0 + seq % 30, "heading": float(seq % 360),
                       "fuel": 80.0 - (seq % 500) * 0.1, "odometer": 10000.0 + seq * 0.01, "engine": True,
                       "status": "moving"}, separators=(",", ":")).encode()


def _publish_worker(host: str, port: int, username: str, password: str, index: int, vehicles: int,
                    count: int, ts0: int, rate: float | None, ready: Any, go: Any, done: Any) -> None:
    mqtt = FastMqtt(host, port, client_id=f"bench-pub-{index}-{os.getpid()}", username=username,
                    password=password)
    mqtt.connect()
    window = max(1, mqtt.send_quota - 1)
    names = [f"veh-{index:02d}-{v:04d}" for v in range(vehicles)]
    ready.set()
    go.wait()
    start = time.perf_counter()
    for i in range(count):
        vehicle = names[i % vehicles]
        mqtt.publish(f"fleet/{vehicle}/telemetry", telemetry(vehicle, i, ts0 + i), qos=1)
        if mqtt.inflight >= window or i % 64 == 63:
            mqtt.flush()
            while mqtt.inflight >= window:
                mqtt.read(0.05)
        if rate is not None:
            delay = start + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                mqtt.flush()
                time.sleep(delay)
    mqtt.flush()
    while mqtt.inflight:
        mqtt.read(0.05)
    mqtt.disconnect()
    done.put((index, time.perf_counter() - start))


def publish_parallel(st: Stack, *, processes: int, per_process: int, vehicles: int = 50,
                     rate: float | None = None) -> tuple[float, float]:
    """Publish QoS 1 telemetry from several processes; returns (wall start, seconds until all acknowledged)."""
    username, password = st.service_credentials("ecokit-admin")
    ctx = mp.get_context("fork")
    go = ctx.Event()
    done: Any = ctx.Queue()
    readies = []
    procs = []
    ts0 = int(time.time() * 1000) - 3_600_000
    for index in range(processes):
        ready = ctx.Event()
        proc = ctx.Process(target=_publish_worker, args=(
            "127.0.0.1", st.config.broker.ports.internal, username, password, index, vehicles, per_process,
            ts0 + index * 10_000_000, None if rate is None else rate / processes, ready, go, done))
        proc.start()
        procs.append(proc)
        readies.append(ready)
    for ready in readies:
        ready.wait(30)
    started = time.time()
    go.set()
    for _ in procs:
        done.get(timeout=600)
    seconds = time.time() - started
    for proc in procs:
        proc.join(10)
    return started, seconds


def influx_count(st: Stack, q: str) -> int:
    with InfluxV1(st.influx_endpoint("reader")) as client:
        rows = list(client.rows(q))
    return int(next(v for k, v in rows[0].items() if k.startswith("count"))) if rows else 0
