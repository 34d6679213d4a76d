"""Load generators side by side on one broker, in one run: `ecokit bench` (the fast publish path,
with its latency and loss accounting on), `mosquitto_pub -l` (C, one client, one message per
stdin line) and a plain paho-mqtt loop (one client, ``publish()`` in a loop, paho's own thread).

For each QoS: every generator sends ``--messages`` messages of ``--payload-size`` bytes as fast
as it can to a throwaway local Mosquitto (bridge and processor off: the broker alone), while a
subscriber takes every message (ecokit bench: its own subscriber process, which measures
latency and loss; the others: ``mosquitto_sub -C N``, so the broker does the same work). The
figures per generator:

- sent msg/s: messages / seconds from the first to the last publish (ecokit: its send window;
  paho: until the last acknowledgement; mosquitto_pub: until the subscriber had the last message,
  see run_mosquitto_pub);
- CPU per message: the generator process's CPU (user + system) / messages; "msg/s per core" =
  messages / CPU seconds (what one fully used core would send);
- delivered: what the subscriber got; the broker's CPU (mean and busiest second): at ~100 % of a
  core the broker, not the generator, is the limit (Mosquitto serves every client on one thread).

The goal of issue 13: ecokit bench >= 1.0x ``mosquitto_pub -l`` in sent msg/s per core used.

    python benchmarks/generators.py                          # QoS 0 and 1, 200,000 messages each
    python benchmarks/generators.py --messages 500000 --qos 0 --publishers 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, stack  # noqa: E402
from ecokit.bench import BenchOptions, run_bench, stack_target, validate_scenario  # noqa: E402
from ecokit.bench.signals import ProcessSampler  # noqa: E402
from ecokit.bench.targets import broker_pid  # noqa: E402

# The broker alone, no queue limit, and a Receive Maximum of 1,000 (what a load generator that
# keeps many QoS 1 messages in flight needs; ecokit's default is 100).
QUIET_STACK = {"bridge": {"enabled": False}, "processor": {"enabled": False},
               "broker": {"max_queued_messages": 0, "max_inflight_messages": 1000}}

PAHO_LOOP = textwrap.dedent('''
    import sys, threading, time, resource
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    host, port, user, password, topic, qos, count, size = sys.argv[1:9]
    qos, count, size = int(qos), int(count), int(size)
    acked = [0]
    def on_publish(client, userdata, mid, reason, props):
        acked[0] += 1
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="generators-paho", protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(host, int(port))
    client.loop_start()
    payload = b"x" * size
    started = time.perf_counter()
    for _ in range(count):
        client.publish(topic, payload, qos=qos)
    last, still, progressed = -1, time.monotonic(), time.perf_counter()
    while acked[0] < count and time.monotonic() - still < 10:  # all written (QoS 0) or acknowledged
        if acked[0] != last:
            last, still, progressed = acked[0], time.monotonic(), time.perf_counter()
        time.sleep(0.001)
    # Until the last progress: when paho stalls (acknowledgements stop), the 10 s without
    # progress are not sending time, and only what was acknowledged counts as sent.
    seconds = progressed - started
    client.disconnect()
    client.loop_stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(seconds, usage.ru_utime + usage.ru_stime, acked[0])
''')


class Subscriber:
    """``mosquitto_sub -C N``: counts deliveries in its own process."""

    def __init__(self, port: int, user: str, password: str, topic: str, qos: int, count: int) -> None:
        self.proc = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", password,
                                      "-t", topic, "-q", str(qos), "-C", str(count), "-W", "300", "-V", "mqttv5"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines = 0
        self.thread = threading.Thread(target=self._count, daemon=True)
        self.thread.start()
        time.sleep(0.5)  # subscribed before anything is published

    def _count(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            self.lines += 1
        self.proc.wait()

    def delivered(self, timeout: float = 120.0) -> int:
        self.thread.join(timeout)
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by pid
            self.proc.wait()
        return self.lines


class BrokerCpu:
    """The broker process's CPU, sampled every second while a generator runs."""

    def __init__(self, pid: int | None) -> None:
        self.sampler = ProcessSampler(pid) if pid else None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BrokerCpu:
        if self.sampler is not None:
            self.sampler.sample()
            self.thread.start()
        return self

    def _run(self) -> None:
        assert self.sampler is not None
        while not self._stop.wait(1.0):
            self.sampler.sample()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.sampler is not None:
            self.thread.join()
            self.sampler.sample()

    def figures(self) -> dict[str, Any]:
        s = self.sampler.summary() if self.sampler else {}
        return {"broker_cpu_mean": s.get("cpu_percent_mean"), "broker_cpu_max": s.get("cpu_percent_max")}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ecokit(st: Any, qos: int, args: argparse.Namespace, user: str, password: str) -> dict[str, Any]:
    seconds = args.messages / args.rate[qos]
    spec = validate_scenario({
        "publishers": args.publishers, "qos": qos, "payload_size": args.payload_size, "subscribers": 1,
        "phases": [{"name": "flat", "duration": seconds, "total_rate": args.rate[qos]}]})
    with BrokerCpu(broker_pid(st)) as cpu:
        result = run_bench("generators", spec, stack_target(st), options=BenchOptions(
            workers=args.workers, signals=False, max_inflight=args.inflight, drain=60.0))
    pubs = result.connections["publishers"]
    total = result.total
    window = sum(p.duration_s for p in result.phases)
    send_seconds = total.sent / total.send_rate if total.send_rate else window
    return {"generator": f"ecokit bench ({args.publishers} clients, {args.workers} process)", "qos": qos,
            "messages": total.sent, "seconds": round(send_seconds, 2), "sent_per_s": round(total.send_rate),
            "cpu_s": pubs["cpu_s"], "delivered": total.unique, "lost": total.lost,
            "p50_ms": total.latency.get("p50_ms"), "p99_ms": total.latency.get("p99_ms"),
            "puback_p99_ms": total.puback.get("p99_ms"), "send_lag_p99_ms": total.send_lag.get("p99_ms"),
            "subscriber_cpu_s": result.connections["subscribers"]["cpu_s"], **cpu.figures()}


def run_mosquitto_pub(st: Any, qos: int, args: argparse.Namespace, user: str, password: str) -> dict[str, Any]:
    port = st.config.broker.ports.internal  # ecokit-admin: the internal listener
    topic = f"generators/mosquitto_pub/{qos}"
    sub = Subscriber(port, user, password, topic, qos, args.messages)
    lines = (b"x" * args.payload_size + b"\n") * args.messages
    # Fed through a pipe that stays open until the subscriber has every message, as a producer
    # would: at the end of its input mosquitto_pub 2.0.11 disconnects at once, and QoS 1 messages
    # it still queued never reach the broker. Its time is therefore until the last delivery.
    before = children_cpu_s()
    with BrokerCpu(broker_pid(st)) as cpu:
        started = time.perf_counter()
        proc = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", password,
                                 "-t", topic, "-q", str(qos), "-l", "-V", "mqttv5"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL)
        assert proc.stdin is not None
        feeder = threading.Thread(target=proc.stdin.write, args=(lines,), daemon=True)
        feeder.start()
        last, still = -1, time.monotonic()
        while sub.lines < args.messages and time.monotonic() - still < 10:
            if sub.lines != last:
                last, still = sub.lines, time.monotonic()
            time.sleep(0.002)
        seconds = time.perf_counter() - started
        feeder.join(10)
        proc.stdin.close()
        proc.wait(60)
        delivered = sub.delivered()
    cpu_s = children_cpu_s() - before
    return {"generator": "mosquitto_pub -l (1 client)", "qos": qos, "messages": args.messages,
            "seconds": round(seconds, 2), "sent_per_s": round(args.messages / seconds), "cpu_s": round(cpu_s, 3),
            "delivered": delivered, "lost": args.messages - delivered, **cpu.figures()}


def run_paho(st: Any, qos: int, args: argparse.Namespace, user: str, password: str) -> dict[str, Any]:
    port = st.config.broker.ports.internal  # ecokit-admin: the internal listener
    topic = f"generators/paho/{qos}"
    sub = Subscriber(port, user, password, topic, qos, args.messages)
    with BrokerCpu(broker_pid(st)) as cpu:
        done = subprocess.run([sys.executable, "-c", PAHO_LOOP, "127.0.0.1", str(port), user, password, topic,
                               str(qos), str(args.messages), str(args.payload_size)], capture_output=True, text=True,
                              check=True, timeout=900)
        delivered = sub.delivered()
    seconds_text, cpu_text, acked_text = done.stdout.split()
    seconds, cpu_s, acked = float(seconds_text), float(cpu_text), int(acked_text)
    return {"generator": "paho-mqtt loop (1 client)", "qos": qos, "messages": acked,
            "seconds": round(seconds, 2), "sent_per_s": round(acked / seconds), "cpu_s": round(cpu_s, 3),
            "delivered": delivered, "lost": args.messages - delivered,
            "stalled": acked < args.messages, **cpu.figures()}


def per_core(row: dict[str, Any]) -> float:
    return row["messages"] / row["cpu_s"] if row["cpu_s"] else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="per generator and QoS")
    parser.add_argument("--qos", default="0,1")
    parser.add_argument("--payload-size", type=int, default=100)
    parser.add_argument("--publishers", type=int, default=4, help="ecokit bench clients")
    parser.add_argument("--workers", type=int, default=1, help="ecokit bench publisher processes")
    parser.add_argument("--inflight", type=int, default=1000, help="ecokit bench: unacknowledged QoS 1 per client")
    parser.add_argument("--rate0", type=float, default=400_000, help="ecokit bench's offered msg/s at QoS 0 (above "
                        "what it can send, so it sends flat out)")
    parser.add_argument("--rate1", type=float, default=200_000, help="... at QoS 1")
    parser.add_argument("--skip-paho", action="store_true")
    args = parser.parse_args()
    args.rate = {0: args.rate0, 1: args.rate1, 2: args.rate1}
    from ecokit.mqtt.loop import raise_nofile

    raise_nofile(4096)
    print(machine())
    rows: list[dict[str, Any]] = []
    with stack(QUIET_STACK) as st:
        user, password = st.service_credentials("ecokit-admin")
        for qos in [int(q) for q in args.qos.split(",")]:
            generators = [run_ecokit, run_mosquitto_pub] + ([] if args.skip_paho else [run_paho])
            for generator in generators:
                rows.append(generator(st, qos, args, user, password))
                print(f"  {rows[-1]['generator']}, QoS {qos}: {rows[-1]['sent_per_s']:,} msg/s", flush=True)
    header = (f"{'generator':<40}{'QoS':>4}{'sent msg/s':>12}{'CPU s':>8}{'µs/msg':>8}{'msg/s/core':>12}"
              f"{'delivered':>11}{'broker CPU mean/max':>21}")
    print(header)
    for row in rows:
        cpu = f"{row['broker_cpu_mean'] or 0:.0f}/{row['broker_cpu_max'] or 0:.0f}%"
        print(f"{row['generator']:<40}{row['qos']:>4}{row['sent_per_s']:>12,}{row['cpu_s']:>8.2f}"
              f"{row['cpu_s'] * 1e6 / row['messages']:>8.2f}{per_core(row):>12,.0f}{row['delivered']:>11,}{cpu:>21}")
    for qos in sorted({r["qos"] for r in rows}):
        ours = next(r for r in rows if r["qos"] == qos and r["generator"].startswith("ecokit"))
        theirs = next(r for r in rows if r["qos"] == qos and r["generator"].startswith("mosquitto_pub"))
        ratio = ours["sent_per_s"] / theirs["sent_per_s"]
        print(f"QoS {qos}: ecokit bench / mosquitto_pub -l: sent msg/s {ratio:.2f}x,"
              f" msg/s per core used {per_core(ours) / per_core(theirs):.2f}x; ecokit latency p50/p99 "
              f"{ours['p50_ms']}/{ours['p99_ms']} ms, lost {ours['lost']}")
        for r in rows:
            if r["qos"] == qos and r.get("stalled"):
                print(f"QoS {qos}: {r['generator']} stalled: {r['messages']:,} of {args.messages:,} acknowledged, then "
                      "none for 10 s (its rate counts only those; paho keeps QoS 1 messages beyond max_inflight in "
                      "its own queue, released only as acknowledgements arrive)")
        limited = [r["generator"] for r in rows if r["qos"] == qos and (r["broker_cpu_max"] or 0) >= 95]
        if limited:
            print(f"QoS {qos}: the broker was at 100% of a core during: {', '.join(limited)} (the broker's ceiling)")
    load = os.getloadavg()
    print(f"load average after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
