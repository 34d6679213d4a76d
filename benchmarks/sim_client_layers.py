"""Which MQTT client layer can drive thousands of vehicles from one asyncio loop?

Measures, for each candidate, against a local Mosquitto started through ecokit:
connect success and time for N clients, resident memory per connected client
(RSS delta / N), and the cost of a QoS 0 / QoS 1 publish spread over all clients
(client CPU microseconds per message, messages/s).

Candidates: paho-mqtt driven by asyncio (add_reader/add_writer, what ecokit.sim uses),
aiomqtt (paho + asyncio futures, one task per client) and gmqtt (pure asyncio).
Each one runs in its own child process so RSS figures do not mix.

    python benchmarks/sim_client_layers.py --clients 2000 --messages 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import cpu_s, rss_kb  # noqa: E402
from ecokit.mqtt.loop import raise_nofile  # noqa: E402

LAYERS = ("paho-asyncio", "aiomqtt", "gmqtt")


async def _paho(host: str, port: int, user: str, pw: str, n: int, k: int) -> dict[str, Any]:
    from ecokit.mqtt.loop import PahoLoop, new_paho_client

    loop = asyncio.get_running_loop()
    driver = PahoLoop(loop)
    driver.start()
    base = rss_kb()
    t0 = time.perf_counter()
    connected: list[asyncio.Future[bool]] = []
    clients = []
    for i in range(n):
        fut: asyncio.Future[bool] = loop.create_future()
        c = new_paho_client(f"bench-paho-{i}", protocol=5)
        c.username_pw_set(user, pw)

        def on_connect(client: Any, ud: Any, flags: Any, rc: Any, props: Any, fut: Any = fut) -> None:
            if not fut.done():
                fut.set_result(not rc.is_failure)

        c.on_connect = on_connect
        driver.attach(c)
        clients.append(c)
        connected.append(fut)
    sem = asyncio.Semaphore(100)

    async def connect(c: Any, fut: asyncio.Future[bool]) -> bool:
        async with sem:
            await driver.connect(c, host, port, keepalive=60)
            return await fut

    ok = sum(await asyncio.gather(*(connect(c, f) for c, f in zip(clients, connected, strict=True))))
    t_conn = time.perf_counter() - t0
    mem = rss_kb() - base
    result: dict[str, Any] = {"connected": ok, "connect_s": t_conn, "rss_kb_per_client": mem / n}
    for qos in (0, 1):
        done = 0
        total = n * k
        finished: asyncio.Future[None] = loop.create_future()

        def on_publish(client: Any, ud: Any, mid: Any, rc: Any, props: Any, total: int = total,
                       finished: asyncio.Future[None] = finished) -> None:
            nonlocal done
            done += 1
            if done == total and not finished.done():
                finished.set_result(None)

        for c in clients:
            c.on_publish = on_publish
        payload = b"x" * 200
        c0, w0 = cpu_s(), time.perf_counter()
        for _ in range(k):
            for c in clients:
                c.publish("bench/t", payload, qos=qos)
            await asyncio.sleep(0)
        await asyncio.wait_for(finished, 120)
        wall, cpu = time.perf_counter() - w0, cpu_s() - c0
        result[f"qos{qos}_msgs_per_s"] = total / wall
        result[f"qos{qos}_cpu_us_per_msg"] = cpu / total * 1e6
    for c in clients:
        c.disconnect()
    await asyncio.sleep(0.5)
    driver.stop()
    return result


async def _aiomqtt(host: str, port: int, user: str, pw: str, n: int, k: int) -> dict[str, Any]:
    import aiomqtt
    from paho.mqtt.client import MQTTv5

    base = rss_kb()
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(100)
    clients: list[aiomqtt.Client] = []

    async def connect(i: int) -> bool:
        async with sem:
            c = aiomqtt.Client(host, port, identifier=f"bench-aio-{i}", username=user, password=pw,
                               protocol=aiomqtt.ProtocolVersion(MQTTv5), max_queued_outgoing_messages=0)
            try:
                await c.__aenter__()
            except aiomqtt.MqttError:
                return False
            clients.append(c)
            return True

    ok = sum(await asyncio.gather(*(connect(i) for i in range(n))))
    t_conn = time.perf_counter() - t0
    mem = rss_kb() - base
    result: dict[str, Any] = {"connected": ok, "connect_s": t_conn, "rss_kb_per_client": mem / n}
    payload = b"x" * 200
    for qos in (0, 1):
        c0, w0 = cpu_s(), time.perf_counter()
        for _ in range(k):
            await asyncio.gather(*(c.publish("bench/t", payload, qos=qos) for c in clients))
        wall, cpu = time.perf_counter() - w0, cpu_s() - c0
        total = len(clients) * k
        result[f"qos{qos}_msgs_per_s"] = total / wall
        result[f"qos{qos}_cpu_us_per_msg"] = cpu / total * 1e6
    for c in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.__aexit__(None, None, None), 5)
    return result


async def _gmqtt(host: str, port: int, user: str, pw: str, n: int, k: int) -> dict[str, Any]:
    import gmqtt

    base = rss_kb()
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(100)
    clients: list[gmqtt.Client] = []

    async def connect(i: int) -> bool:
        async with sem:
            c = gmqtt.Client(f"bench-g-{i}")
            c.set_auth_credentials(user, pw)
            try:
                await c.connect(host, port, keepalive=60)
            except Exception:
                return False
            clients.append(c)
            return True

    ok = sum(await asyncio.gather(*(connect(i) for i in range(n))))
    t_conn = time.perf_counter() - t0
    mem = rss_kb() - base
    result: dict[str, Any] = {"connected": ok, "connect_s": t_conn, "rss_kb_per_client": mem / n}
    payload = b"x" * 200
    for qos in (0, 1):
        c0, w0 = cpu_s(), time.perf_counter()
        total = len(clients) * k
        for _ in range(k):
            for c in clients:
                c.publish("bench/t", payload, qos=qos)
            await asyncio.sleep(0)
        # QoS 1: done when every client's store of unacknowledged messages is empty.
        deadline = time.monotonic() + 120
        while qos == 1 and time.monotonic() < deadline:
            if all(c._persistent_storage.is_empty for c in clients):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        wall, cpu = time.perf_counter() - w0, cpu_s() - c0
        result[f"qos{qos}_msgs_per_s"] = total / wall
        result[f"qos{qos}_cpu_us_per_msg"] = cpu / total * 1e6
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    return result


def worker(layer: str, host: str, port: int, user: str, pw: str, n: int, k: int) -> dict[str, Any]:
    raise_nofile(n * 3 + 256)
    fn = {"paho-asyncio": _paho, "aiomqtt": _aiomqtt, "gmqtt": _gmqtt}[layer]
    return asyncio.run(fn(host, port, user, pw, n, k))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--messages", type=int, default=5, help="messages per client per QoS")
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        host, port, user, pw = json.loads(os.environ["ECOKIT_BENCH_TARGET"])
        print(json.dumps(worker(args.worker, host, int(port), user, pw, args.clients, args.messages)))
        return

    from ecokit.testing import running_stack, write_project

    raise_nofile(args.clients * 2 + 1024)  # mosquitto inherits it
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_project(Path(tmp) / "bench", devices=1, stack="bench-layers",
                            extra={"prometheus": {"enabled": False}})
        with running_stack(cfg) as stack:
            url = stack.broker_endpoints()["mqtt"]
            host, port = url.split("//")[1].rsplit(":", 1)
            user, pw = stack.service_credentials("ecokit-admin")
            print(f"broker {url}; {args.clients} clients x {args.messages} msgs; "
                  f"load {os.getloadavg()[0]:.2f}; cpus {os.cpu_count()}")
            header = f"{'layer':<14}{'conn':>7}{'conn s':>8}{'KB/cli':>8}{'q0 msg/s':>10}{'q0 us/msg':>10}" \
                     f"{'q1 msg/s':>10}{'q1 us/msg':>10}"
            print(header)
            for layer in args.layers.split(","):
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", layer, "--clients", str(args.clients),
                     "--messages", str(args.messages)],
                    env={**os.environ, "ECOKIT_BENCH_TARGET": json.dumps([host, port, user, pw])},
                    capture_output=True, text=True, timeout=600, check=False)
                if proc.returncode != 0:
                    print(f"{layer:<14} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{layer:<14}{r['connected']:>7}{r['connect_s']:>8.2f}{r['rss_kb_per_client']:>8.1f}"
                      f"{r['qos0_msgs_per_s']:>10.0f}{r['qos0_cpu_us_per_msg']:>10.1f}"
                      f"{r['qos1_msgs_per_s']:>10.0f}{r['qos1_cpu_us_per_msg']:>10.1f}")


if __name__ == "__main__":
    main()
