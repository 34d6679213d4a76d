"""The coordinator of a bench run: plans the clients, starts the worker processes, keeps time,
collects ticks for the live view and the timeline, and turns the reports into a result.

    coordinator (this process: $SYS reader, broker process sampler, progress, result)
      ├── subscriber worker   every subscriber, fastmqtt or paho on one asyncio loop
      └── publisher workers  the publishers, paho on PahoLoop, one scheduler each

Workers are ``python -m ecokit.bench.worker`` children talking over a socket pair (pickled
messages, ``ecokit.bench.protocol``), in their own session so that Ctrl-C reaches only the
coordinator (which stops them in order); a worker whose coordinator vanishes sees its socket
close and exits. Publishers and subscribers live in separate processes so that a burst of
publishing never delays the receive timestamps (one Python process cannot do both without
the GIL and the event loop adding their own latency). Every process has the same wall clock,
which is what the payload's send time and the receive time are read from.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from typing import Any

from ecokit.bench.payload import run_tag
from ecokit.bench.protocol import (
    ClientSettings,
    PublisherClient,
    PublisherJob,
    PublisherReport,
    PubTick,
    Ready,
    SubscriberClient,
    SubscriberJob,
    SubscriberReport,
    SubTick,
)
from ecokit.bench.results import BenchResult, Timeline, build_result
from ecokit.bench.scenario import (
    DEFAULT_TOPIC,
    DEVICE_TOPIC,
    PhasePlan,
    busiest,
    compile_connections,
    compile_phases,
    expand_topic,
    max_qos,
    subscription_filter,
)
from ecokit.bench.signals import ProcessSampler, SysMonitor
from ecokit.bench.slo import check_phases
from ecokit.bench.targets import BenchTarget
from ecokit.config.bench import ScenarioSpec
from ecokit.config.slo import Slo
from ecokit.errors import BrokerError, EcokitError, UsageError
from ecokit.resources import package_root


class BenchError(EcokitError):
    """A bench run could not be carried out (a worker died, nobody could connect, ...)."""


class BenchStopped(BenchError):
    """Stopped (Ctrl-C) before the first phase began: there is nothing to report."""


@dataclass(frozen=True)
class BenchOptions:
    workers: int = 1  # publisher processes
    protocol: int = 5  # 5 or 4 (MQTT 3.1.1)
    keepalive: int = 30
    connect_timeout: float = 30.0
    connect_concurrency: int = 64
    max_inflight: int = 100
    drain: float = 10.0  # at most this long after the last phase for acknowledgements and deliveries
    settle: float = 2.0  # ... and no longer than this once nothing new arrives
    tick: float = 1.0  # seconds between progress reports (and timeline rows)
    client_id_prefix: str = "ecokit-bench"
    library: str = "auto"  # subscribers: auto, fast (ecokit.mqtt.fast) or paho
    signals: bool = True  # read $SYS and sample a local broker process

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.protocol not in (4, 5):
            raise UsageError("the MQTT protocol must be 5 or 3.1.1")
        if self.library not in ("auto", "fast", "paho"):
            raise UsageError(f"subscriber library {self.library!r}: expected auto, fast or paho")
        if self.tick <= 0 or self.drain < 0 or self.settle <= 0:
            raise UsageError("tick and settle must be positive, drain not negative")


@dataclass(frozen=True)
class Progress:
    """One status line's worth of numbers."""

    state: str  # connecting, running, draining, done
    phase: str | None
    elapsed: float  # seconds since the start of the first phase
    remaining: float | None
    offered: float  # planned total msg/s right now
    send_rate: float  # msg/s over the last tick
    rate: float  # unique deliveries/s over the last tick
    sent: int
    received: int
    p50_ms: float | None
    p99_ms: float | None
    publishers_connected: int
    publishers: int
    subscribers_connected: int
    subscribers: int
    reconnects: int
    errors: int


@dataclass
class _Worker:
    kind: str  # pub | sub
    index: int
    process: subprocess.Popen[bytes]
    conn: Connection
    log: Any  # the worker's stderr (a temporary file)
    ready: Ready | None = None
    report: PublisherReport | SubscriberReport | None = None
    error: str | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError, ValueError):
            self.log.seek(0)
            text: str = self.log.read().decode("utf-8", "replace")
            return "\n".join(text.strip().splitlines()[-lines:])
        return ""


class Bench:
    """One run of one scenario against one target."""

    def __init__(self, name: str, spec: ScenarioSpec, target: BenchTarget, *, slos: Sequence[Slo] = (),
                 options: BenchOptions | None = None, progress: Callable[[Progress], None] | None = None) -> None:
        if target.devices and spec.topic == DEFAULT_TOPIC:
            # Devices may publish only under fleet/{their id}/: the default topic moves there.
            spec = spec.model_copy(update={"topic": DEVICE_TOPIC})
        self.name = name
        self.spec = spec
        self.target = target
        self.options = options or BenchOptions()
        self.progress = progress
        self.phases: tuple[PhasePlan, ...] = compile_phases(spec)
        self.connections = compile_connections(spec)
        check_phases(slos, [p.name for p in self.phases])
        self.slos = list(slos)
        self.run_id = secrets.token_hex(4)
        self.tag = run_tag(self.run_id)
        self._stop_requested = False
        self._stop_sent = False
        self._stopped_ns: int | None = None
        qos = max_qos(self.phases)
        library = self.options.library
        websocket = target.broker.websocket_path is not None
        if library == "auto":
            library = "fast" if self.options.protocol == 5 and qos <= 1 and not websocket else "paho"
        elif library == "fast" and (qos > 1 or self.options.protocol != 5 or websocket):
            raise UsageError("the fast subscriber speaks MQTT 5 at QoS 0/1 over TCP/TLS; QoS 2, MQTT 3.1.1 and "
                             "websockets need paho")
        self.library = library
        self.filter = subscription_filter(spec.topic, run=self.run_id)
        self.publishers = self._publisher_clients()
        self.subscribers = self._subscriber_clients(qos)

    # -- plan ------------------------------------------------------------------------------

    def _publisher_clients(self) -> list[PublisherClient]:
        count = busiest(self.phases)
        devices = self.target.devices
        if devices and len(devices) < count:
            raise UsageError(f"{count} publishers as devices need {count} devices; the target has {len(devices)}")
        prefix = f"{self.options.client_id_prefix}-{self.run_id}"
        clients = []
        for i in range(count):
            client_id = f"{prefix}-p{i:05d}"
            device, auth = devices[i] if devices else (client_id, self.target.auth)
            clients.append(PublisherClient(i, client_id, expand_topic(self.spec.topic, run=self.run_id, publisher=i,
                                                                        device=device), auth))
        return clients

    def _subscriber_clients(self, qos: int) -> list[SubscriberClient]:
        wanted = self.filter
        if self.spec.fanout == "shared":
            wanted = f"$share/ecokit-bench-{self.run_id}/{self.filter}"
        prefix = f"{self.options.client_id_prefix}-{self.run_id}"
        return [SubscriberClient(j, f"{prefix}-s{j:03d}", wanted, qos, self.target.auth)
                for j in range(self.spec.subscribers)]

    def settings(self) -> dict[str, Any]:
        return {
            "publishers": len(self.publishers), "subscribers": len(self.subscribers), "fanout": self.spec.fanout,
            "topic": self.spec.topic, "filter": self.subscribers[0].filter if self.subscribers else self.filter,
            "payload": self.spec.payload, "mqtt": "5" if self.options.protocol == 5 else "3.1.1",
            "workers": self.options.workers, "subscriber_library": self.library,
            "as_devices": self.target.as_devices, "transport": self.target.broker.scheme,
            "connected_at_start": self.connections.at_start,
            "phases": [{"name": p.name, "start_s": round(p.start, 3), "duration_s": round(p.duration, 3),
                        "publishers": p.publishers, "offered": p.describe_rate(), "qos": p.qos,
                        "payload_size": p.payload_size, "planned": p.planned(),
                        "connects_planned": self.connections.connects_in(p.index)} for p in self.phases],
        }

    def planned_total(self) -> int:
        return sum(p.planned() for p in self.phases)

    # -- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop publishing now (Ctrl-C); the run drains and reports what it measured."""
        self._stop_requested = True

    def run(self) -> BenchResult:
        o = self.options
        settings = ClientSettings(protocol=o.protocol, keepalive=o.keepalive, connect_timeout=o.connect_timeout,
                                  connect_concurrency=o.connect_concurrency, max_inflight=o.max_inflight)
        workers: list[_Worker] = []
        sys_monitor: SysMonitor | None = None
        sampler: ProcessSampler | None = None
        try:
            self._emit_progress("connecting", workers, None)
            if self.subscribers:
                job = SubscriberJob(0, self.target.broker, tuple(self.subscribers), len(self.phases), self.tag,
                                    self.spec.payload, self.spec.fanout == "shared", self.library, settings, o.tick)
                workers.append(self._spawn("sub", 0, job))
            count = min(o.workers, len(self.publishers))
            plan = self.connections
            for n in range(count):
                clients = tuple(self.publishers[n::count])
                mine = {c.index for c in clients}
                publishers_at = self.target.device_broker or self.target.broker
                pjob = PublisherJob(n, publishers_at, clients, self.phases, self.tag, self.spec.payload,
                                    settings, o.drain, o.tick, plan.at_start if plan.shaped else -1,
                                    tuple(e for e in plan.events if e.publisher in mine))
                workers.append(self._spawn("pub", n, pjob))
            self._await_ready(workers)
            if o.signals:
                sys_monitor = SysMonitor(self.target.broker, self.target.auth)
                sys_monitor.start()
                if self.target.broker_pid:
                    sampler = ProcessSampler(self.target.broker_pid)
                    sampler.sample()
            started_at = datetime.now(UTC).isoformat(timespec="seconds")
            t0_ns = time.time_ns() + 300_000_000
            for w in workers:
                w.conn.send(("start", t0_ns))
            timeline = Timeline(self.phases, o.tick)
            self._collect(workers, timeline, t0_ns, sampler)
        finally:
            if sys_monitor is not None:
                sys_monitor.stop()
            self._shutdown(workers)
        broker: dict[str, Any] = {}
        if sys_monitor is not None:
            broker["sys"] = sys_monitor.summary()
        if sampler is not None:
            broker["process"] = sampler.summary()
        pubs = [w.report for w in workers if w.kind == "pub" and isinstance(w.report, PublisherReport)]
        subs = [w.report for w in workers if w.kind == "sub" and isinstance(w.report, SubscriberReport)]
        result = build_result(
            scenario=self.name, description=self.spec.description, run_id=self.run_id,
            target=self.target.description, started_at=started_at, settings=self.settings(), phases=self.phases,
            t0_ns=t0_ns, stopped_ns=self._stopped_ns, publishers=pubs, subscribers=subs,
            subscriber_count=len(self.subscribers), shared=self.spec.fanout == "shared", slos=self.slos,
            timeline=timeline.rows(), broker=broker)
        self._emit_progress("done", workers, timeline, t0_ns)
        return result

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, kind: str, index: int, job: PublisherJob | SubscriberJob) -> _Worker:
        """``python -m ecokit.bench.worker FD`` with one end of a socket pair as FD."""
        ours, theirs = socket.socketpair()
        log = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the worker runs; closed in _shutdown)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root()), env.get("PYTHONPATH", "")) if p)
        try:
            process = subprocess.Popen([sys.executable, "-m", "ecokit.bench.worker", str(theirs.fileno())],
                                       pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=log, env=env, close_fds=True,
                                       start_new_session=True)
        except OSError as exc:
            ours.close()
            log.close()
            raise BenchError(f"cannot start a bench worker ({sys.executable} -m ecokit.bench.worker): {exc}") from exc
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        worker = _Worker(kind, index, process, conn, log)
        conn.send(("subscribers" if kind == "sub" else "publishers", job))
        return worker

    def _receive(self, w: _Worker) -> tuple[Any, ...] | None:
        try:
            message: tuple[Any, ...] = w.conn.recv()
            return message
        except (EOFError, OSError):
            if w.report is None and w.error is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.process.wait(timeout=2.0)
                code = w.process.poll()
                tail = w.log_tail()
                w.error = (f"the {'subscriber' if w.kind == 'sub' else 'publisher'} worker exited unexpectedly"
                           + (f" (exit code {code})" if code is not None else "")
                           + (f":\n{tail}" if tail else ""))
            return None

    def _await_ready(self, workers: list[_Worker]) -> None:
        deadline = time.monotonic() + self.options.connect_timeout + 60.0
        pending = {id(w.conn): w for w in workers}
        while pending:
            if self._stop_requested:
                raise BenchStopped("stopped while connecting; nothing was measured")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"the clients did not connect to {self.target.broker.url} within "
                                 f"{self.options.connect_timeout:g}s")
            for conn in wait([x.conn for x in pending.values()], timeout=min(left, 0.25)):
                w = pending[id(conn)]
                message = self._receive(w)
                if message is None:
                    raise BenchError(w.error or "a worker died")
                if message[0] == "error":
                    raise BenchError(str(message[1]))
                if message[0] == "ready":
                    w.ready = message[1]
                    del pending[id(conn)]
            self._emit_progress("connecting", workers, None)
        refused = [text for w in workers if w.ready for text in w.ready.refused]
        if refused:
            raise BrokerError(refused[0], hint="check the credentials and the broker's ACL for the bench topics "
                                                f"({self.filter})")
        for w in workers:
            assert w.ready is not None
            if w.ready.connected == 0 and w.ready.clients > 0:
                last = w.ready.errors[-1] if w.ready.errors else "no answer"
                who = "subscribers" if w.kind == "sub" else "publishers"
                raise BrokerError(f"none of the {who} could connect to {self.target.broker.url} ({last})")
            if w.kind == "sub" and w.ready.connected < w.ready.clients:
                last = w.ready.errors[-1] if w.ready.errors else "no answer"
                raise BrokerError(f"only {w.ready.connected} of {w.ready.clients} subscribers could connect to "
                                  f"{self.target.broker.url} ({last})")

    def _collect(self, workers: list[_Worker], timeline: Timeline, t0_ns: int, sampler: ProcessSampler | None) -> None:
        o = self.options
        pubs = [w for w in workers if w.kind == "pub"]
        subs = [w for w in workers if w.kind == "sub"]
        end_ns = t0_ns + int(sum(p.duration for p in self.phases) * 1e9)
        sampled_tick = 0
        seen: dict[int, set[int]] = {}  # tick -> workers that reported it
        finish_sent = False
        drain_started: float | None = None
        last_unique, last_change = -1, time.monotonic()
        while any(w.report is None and w.error is None for w in workers):
            if self._stop_requested and not self._stop_sent:
                self._stop_sent = True
                self._stopped_ns = time.time_ns()
                for w in pubs:
                    with contextlib.suppress(OSError):
                        w.conn.send(("stop",))
            live = [w.conn for w in workers if w.report is None and w.error is None]
            for conn in wait(live, timeout=0.1):
                w = next(x for x in workers if x.conn is conn)
                message = self._receive(w)
                if message is None:
                    continue
                kind = message[0]
                if kind == "tick":
                    tick = message[1]
                    if isinstance(tick, PubTick):
                        timeline.add_pub(w.index, tick)
                    elif isinstance(tick, SubTick):
                        timeline.add_sub(w.index, tick)
                    reported = seen.setdefault(tick.tick, set())
                    reported.add(id(w))
                    ticking = sum(1 for x in workers if x.report is None and x.error is None)
                    if tick.tick > sampled_tick and len(reported) >= ticking:
                        sampled_tick = tick.tick
                        seen = {k: v for k, v in seen.items() if k > sampled_tick}
                        if sampler is not None:
                            sample = sampler.sample()
                            if sample is not None:
                                timeline.add_extra(tick.tick, {"broker_cpu_percent": sample["cpu_percent"],
                                                               "broker_rss_mb": sample["rss_mb"]})
                        self._emit_progress("running" if time.time_ns() < end_ns else "draining", workers,
                                            timeline, t0_ns)
                elif kind == "done":
                    w.report = message[1]
                elif kind == "error":
                    w.error = str(message[1])
            failed = [w for w in workers if w.error is not None]
            if failed:
                raise BenchError(failed[0].error or "a worker failed")
            if all(w.report is not None for w in pubs) and not finish_sent:
                # Publishers are done: wait for the deliveries still under way, then finish.
                now = time.monotonic()
                if drain_started is None:
                    drain_started = now
                expected = self._expected(pubs)
                _, latest = timeline.latest()
                unique = sum(t.unique for t in latest.values())
                if unique != last_unique:
                    last_unique, last_change = unique, now
                if (unique >= expected or now - last_change >= o.settle or now - drain_started >= o.drain
                        or self._stop_sent):
                    finish_sent = True
                    for w in subs:
                        with contextlib.suppress(OSError):
                            w.conn.send(("finish",))

    def _expected(self, pubs: list[_Worker]) -> int:
        sent = sum(sum(w.report.sent_by_phase) for w in pubs if isinstance(w.report, PublisherReport))
        return sent * (1 if self.spec.fanout == "shared" else len(self.subscribers))

    def _shutdown(self, workers: list[_Worker]) -> None:
        for w in workers:
            if w.report is None and w.alive():
                with contextlib.suppress(OSError):
                    w.conn.send(("abort",) if w.kind == "pub" else ("finish",))
        deadline = time.monotonic() + 10.0
        for w in workers:
            try:
                w.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.process.terminate()  # SIGTERM to this worker's pid
                try:
                    w.process.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    w.process.kill()
                    w.process.wait()
            with contextlib.suppress(OSError):
                w.conn.close()
            w.log.close()

    # -- progress --------------------------------------------------------------------------

    def _emit_progress(self, state: str, workers: list[_Worker], timeline: Timeline | None, t0_ns: int = 0) -> None:
        if self.progress is None:
            return
        total_s = sum(p.duration for p in self.phases)
        pubs_connected = sum(w.ready.connected for w in workers if w.kind == "pub" and w.ready)
        subs_connected = sum(w.ready.connected for w in workers if w.kind == "sub" and w.ready)
        if timeline is None:
            self.progress(Progress(state, None, 0.0, total_s, 0.0, 0.0, 0.0, 0, 0, None, None, pubs_connected,
                                   len(self.publishers), subs_connected, len(self.subscribers), 0, 0))
            return
        elapsed = (time.time_ns() - t0_ns) / 1e9
        pubs, subs = timeline.latest()
        rows = timeline.rows()[-2:]
        last = rows[-1] if rows else {}
        phase = timeline.phase_at(elapsed)
        self.progress(Progress(
            state, phase.name if phase else None, elapsed, max(0.0, total_s - elapsed) if state == "running" else None,
            timeline.offered_at(elapsed), float(last.get("sent", 0)) / self.options.tick,
            float(last.get("received", 0)) / self.options.tick, sum(t.sent for t in pubs.values()),
            sum(t.unique for t in subs.values()), last.get("p50_ms"), last.get("p99_ms"),
            sum(t.connected for t in pubs.values()), len(self.publishers), sum(t.connected for t in subs.values()),
            len(self.subscribers), sum(t.reconnects for t in pubs.values()) + sum(t.reconnects for t in subs.values()),
            sum(t.errors for t in pubs.values()) + sum(t.errors for t in subs.values())))


def run_bench(name: str, spec: ScenarioSpec, target: BenchTarget, *, slos: Sequence[Slo] = (),
              options: BenchOptions | None = None, progress: Callable[[Progress], None] | None = None) -> BenchResult:
    """Run one scenario and return its result (SLO verdicts included; nothing is raised for a
    violated SLO: see ``result.passed``)."""
    return Bench(name, spec, target, slos=slos, options=options, progress=progress).run()

