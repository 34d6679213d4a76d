"""The publisher worker process: its share of the run's publishers on one asyncio loop.

Each publisher is one connection of the fast publish path (``ecokit.mqtt.publisher``:
pre-encoded PUBLISH packets patched in place, every connection's bytes written once per
loop iteration, acknowledgements drained in bulk). One scheduler sends every message at its
due time (a heap of due times; the schedule comes from ``ecokit.bench.scenario``); messages
that fall due together go out in one batch stamped with one send time, and a publisher that
falls behind sends late rather than skipping. How late each batch left is recorded (send
lag: the oldest message of the batch, counted for each message in it, an upper bound).
Sequence numbers are consumed only by messages the client accepted, so a gap at the
subscriber is a message the network lost.

Connections follow the scenario's connection plan: publishers below ``at_start`` connect
before the run, the others when their event comes (ramps, joins), some leave or churn; every
attempt is timed step by step (TCP, TLS, websocket, CONNECT → CONNACK) and filed under the
phase it happened in, as is each publish → acknowledgement time at QoS 1/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import random
import signal
import ssl
import time
from multiprocessing.connection import Connection
from typing import Any

from ecokit.bench.payload import payload_template
from ecokit.bench.protocol import ConnectReport, PublisherClient, PublisherJob, PublisherReport, PubTick, Ready
from ecokit.bench.scenario import CONNECT, DISCONNECT, PhasePlan, due_offset, first_message, stagger
from ecokit.bench.tracking import encode, new_histogram, process_cpu_s, process_rss_kb, record_us
from ecokit.mqtt.loop import backoff_delay, raise_nofile
from ecokit.mqtt.packets import PublishTemplate
from ecokit.mqtt.publisher import ConnectRefused, FastPublisher, PublisherLoop, PublishStats, Transport

EARLY = 0.0005  # s: messages due this soon go out in the current batch
BATCH = 4096  # messages per batch before the loop gets to write and read
ERRORS_KEPT = 20


def run_publishers(conn: Connection, job: PublisherJob) -> None:
    """Worker entry point (``python -m ecokit.bench.worker``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    raise_nofile(len(job.clients) + 256)
    try:
        asyncio.run(PublisherWorker(conn, job).run())
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"publisher worker {job.worker}: {exc.__class__.__name__}: {exc}"))
        raise


class ConnectStats:
    """Attempts and step timings of one phase's connects."""

    def __init__(self) -> None:
        self.attempts = self.ok = self.failed = self.refused = 0
        self.total, self.tcp, self.tls, self.ws, self.connack = (new_histogram() for _ in range(5))

    def report(self) -> ConnectReport:
        def enc(h: Any) -> str:
            return encode(h) if h.get_total_count() else ""

        return ConnectReport(self.attempts, self.ok, self.failed, self.refused, enc(self.total), enc(self.tcp),
                             enc(self.tls), enc(self.ws), enc(self.connack))


class _Pub:
    __slots__ = ("attempt", "conn", "connecting", "ever", "leaving", "local", "online", "seq", "spec")

    def __init__(self, local: int, spec: PublisherClient, conn: FastPublisher) -> None:
        self.local = local
        self.spec = spec
        self.conn = conn
        self.online = False
        self.ever = False
        self.connecting = False
        self.leaving = False  # disconnected on purpose (a planned leave): no reconnect
        self.attempt = 0
        self.seq = 0


class PublisherWorker:
    def __init__(self, conn: Connection, job: PublisherJob) -> None:
        self.conn = conn
        self.job = job
        phases = len(job.phases)
        self.report = PublisherReport(worker=job.worker, clients=len(job.clients), sent_by_phase=[0] * phases,
                                      unsent_by_phase=[0] * phases, first_send_ns=[0] * phases,
                                      last_send_ns=[0] * phases)
        self.lag = [new_histogram() for _ in range(phases)]
        self.puback = [new_histogram() for _ in range(phases)]
        self.connect_setup = ConnectStats()
        self.connect_stats = [ConnectStats() for _ in range(phases)]
        self.stats = PublishStats()
        self.refused: list[str] = []
        self.connected = 0
        self.connects = 0
        self.connect_failed = 0
        self.phase_now = -1
        self._stopping = False
        self._closing = False
        self._t0_ns: int | None = None
        self._cpu_at_start: float | None = None
        self._next_tick = 1
        self._started: asyncio.Future[bool] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._jitter = random.Random()
        self._tls: dict[Any, ssl.SSLContext] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pubs: list[_Pub] = []
        self._by_conn: dict[FastPublisher, _Pub] = {}

    # -- life cycle ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        s = self.job.settings
        self._started = loop.create_future()
        self.group = PublisherLoop(loop)
        self.group.start()
        self._slots = asyncio.Semaphore(s.connect_concurrency)
        loop.add_reader(self.conn.fileno(), self._on_command)
        ticker: asyncio.Task[None] | None = None
        plan: asyncio.Task[None] | None = None
        try:
            gc.collect()
            self.report.rss_kb_before = process_rss_kb()
            self._build()
            expected = await self._connect_at_start()
            gc.collect()
            self.report.rss_kb_connected = process_rss_kb()
            self.report.connected_before_run = self.connected
            self.conn.send(("ready", Ready(expected, self.connected, self.report.connect_failures,
                                           tuple(self.report.last_errors[-5:]), tuple(self.refused[:5]))))
            if await self._started:
                ticker = loop.create_task(self._ticker())
                if self.job.events:
                    plan = loop.create_task(self._follow_plan())
                gc.collect()
                gc.freeze()  # thousands of long-lived clients: keep full collections from pausing the schedule
                await self._schedule()
                await self._drain()
            self.phase_now = len(self.job.phases)
        finally:
            gc.unfreeze()
            for task in (ticker, plan):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if ticker is not None:
                self._take_acks()
                with contextlib.suppress(OSError):
                    self._send_tick()
            loop.remove_reader(self.conn.fileno())
            await self._close()
            self.group.stop()
        self.conn.send(("done", self._final_report()))

    def _on_command(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            message = ("abort",)  # the coordinator is gone
        kind = message[0]
        if kind == "start" and self._started is not None and not self._started.done():
            self._cpu_at_start = process_cpu_s()
            self._t0_ns = int(message[1])
            self._started.set_result(True)
        elif kind in ("stop", "abort"):
            self._stopping = True
            self.report.stopped_early = True
            if self._started is not None and not self._started.done():
                self._started.set_result(False)
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    async def _ticker(self) -> None:
        assert self._t0_ns is not None
        while True:
            due_ns = self._t0_ns + int(self._next_tick * self.job.tick * 1e9)
            await asyncio.sleep(max(0.0, (due_ns - time.time_ns()) / 1e9))
            self._take_acks()
            self._send_tick()

    def _take_acks(self) -> None:
        """Acknowledgement times gathered since the last tick, filed under the phase being sent."""
        latencies = self.stats.take_ack_latencies()
        if latencies:
            histogram = self.puback[min(max(self.phase_now, 0), len(self.puback) - 1)]
            for us in latencies:
                record_us(histogram, us)

    def _send_tick(self) -> None:
        """The totals as of tick ``_next_tick`` (also once more at the end, for what the last tick missed)."""
        r = self.report
        self.conn.send(("tick", PubTick(self._next_tick, sum(r.sent_by_phase), sum(r.unsent_by_phase),
                                        self.stats.acked, self.connected, r.reconnects, r.errors, self.phase_now,
                                        self.connects, self.connect_failed)))
        self._next_tick += 1

    # -- connections ---------------------------------------------------------------------

    def _remember(self, text: str) -> None:
        self.report.last_errors.append(text)
        del self.report.last_errors[:-ERRORS_KEPT]

    def _error(self, text: str) -> None:
        self.report.errors += 1
        self._remember(text)

    def _tls_context(self, spec: PublisherClient) -> ssl.SSLContext:
        key = spec.auth.client_cert
        if key not in self._tls:
            self._tls[key] = self.job.target.tls_context(key)
        return self._tls[key]

    def _build(self) -> None:
        s, target = self.job.settings, self.job.target
        for local, spec in enumerate(self.job.clients):
            transport = Transport(target.host, target.port, self._tls_context(spec) if target.tls else None,
                                  target.websocket_path)
            # Never a clean start (see subscriber.py): the client id is new, and a reconnect resumes.
            fast = FastPublisher(self.group, transport, client_id=spec.client_id, username=spec.auth.username,
                                 password=spec.auth.password, protocol=s.protocol, keepalive=s.keepalive,
                                 clean_start=s.protocol != 5, session_expiry=s.session_expiry,
                                 max_inflight=s.max_inflight, stats=self.stats, on_lost=self._on_lost)
            pub = _Pub(local, spec, fast)
            self.pubs.append(pub)
            self._by_conn[fast] = pub

    async def _connect_at_start(self) -> int:
        """Connect the publishers planned online before the run; returns how many those are."""
        at_start = self.job.at_start
        first = [p for p in self.pubs if at_start < 0 or p.spec.index < at_start]
        for pub in first:
            self._spawn(self._connect(pub, -1))
        deadline = time.monotonic() + self.job.settings.connect_timeout
        while time.monotonic() < deadline and not self._stopping and not self.refused:
            if all(p.ever or p.attempt > 0 for p in first):
                break
            await asyncio.sleep(0.02)
        return len(first)

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stats_for(self, phase: int) -> ConnectStats:
        return self.connect_setup if phase < 0 else self.connect_stats[min(phase, len(self.connect_stats) - 1)]

    async def _connect(self, pub: _Pub, phase: int) -> None:
        if pub.connecting or pub.online:
            return
        s, target = self.job.settings, self.job.target
        pub.connecting = True
        stats = self._stats_for(phase)
        ok = False
        try:
            async with self._slots:
                if self._closing or pub.leaving:
                    return
                stats.attempts += 1
                try:
                    timing = await pub.conn.connect(s.connect_timeout)
                except ConnectRefused as exc:
                    stats.refused += 1
                    self.report.connect_failures += 1
                    self.connect_failed += 1
                    text = f"{pub.spec.client_id}: {exc}"
                    self.refused.append(text)
                    self._error(text)
                    return
                except (OSError, ssl.SSLError, TimeoutError, ConnectionError, ValueError) as exc:
                    stats.failed += 1
                    self.report.connect_failures += 1
                    self.connect_failed += 1
                    why = str(exc) or exc.__class__.__name__
                    text = f"{pub.spec.client_id}: cannot connect to {target.url}: {why}"
                    if isinstance(exc, ssl.SSLError | ValueError):
                        self._error(text)
                    else:
                        self._remember(text)
                    return
                ok = True
                stats.ok += 1
                for histogram, seconds in ((stats.total, timing.total), (stats.tcp, timing.tcp),
                                           (stats.tls, timing.tls), (stats.ws, timing.ws),
                                           (stats.connack, timing.connack)):
                    if seconds > 0:
                        record_us(histogram, int(seconds * 1e6))
                if pub.ever:
                    self.report.reconnects += 1
                else:
                    self.report.ever_connected += 1
                pub.ever, pub.online, pub.attempt = True, True, 0
                self.connected += 1
                self.connects += 1
        finally:
            pub.connecting = False
            if not ok and not self.refused:
                self._retry(pub)

    def _retry(self, pub: _Pub) -> None:
        if self._closing or pub.leaving:
            return
        s = self.job.settings
        delay = backoff_delay(pub.attempt, s.backoff_min, s.backoff_max, self._jitter)
        pub.attempt += 1
        self.loop.call_later(delay, self._reconnect_now, pub)

    def _reconnect_now(self, pub: _Pub) -> None:
        if not (pub.online or pub.connecting or self._closing or pub.leaving):
            self._spawn(self._connect(pub, self.phase_now))

    def _on_lost(self, conn: FastPublisher, why: str) -> None:
        pub = self._by_conn[conn]
        if not pub.online:
            return
        pub.online = False
        self.connected -= 1
        if self._closing or pub.leaving:
            return
        self.report.disconnects += 1
        self._remember(f"{pub.spec.client_id}: disconnected ({why})")
        self._retry(pub)

    async def _follow_plan(self) -> None:
        """Connect, disconnect and churn publishers at the times the connection plan says."""
        assert self._t0_ns is not None
        by_index = {p.spec.index: p for p in self.pubs}
        for event in self.job.events:
            pub = by_index.get(event.publisher)
            if pub is None:
                continue
            delay = (self._t0_ns + int(event.t * 1e9) - time.time_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            if self._stopping:
                return
            if event.kind == CONNECT:
                pub.leaving = False
                self._spawn(self._connect(pub, event.phase))
            elif event.kind == DISCONNECT:
                pub.leaving = True
                self._spawn(self._leave(pub))
            else:
                self._spawn(self._churn(pub, event.phase))

    async def _leave(self, pub: _Pub) -> None:
        if pub.online:
            pub.online = False
            self.connected -= 1
        await pub.conn.disconnect()

    async def _churn(self, pub: _Pub, phase: int) -> None:
        if not pub.online:
            return  # already away (lost, or still connecting): nothing to churn
        pub.leaving = True
        await self._leave(pub)
        pub.leaving = False
        await self._connect(pub, phase)

    # -- the schedule --------------------------------------------------------------------

    async def _sleep_until(self, when: float) -> None:
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_at(when, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _schedule(self) -> None:
        assert self._t0_ns is not None
        loop = self.loop
        t0 = loop.time() + (self._t0_ns - time.time_ns()) / 1e9
        for phase in self.job.phases:
            if self._stopping:
                break
            await self._run_phase(phase, t0 + phase.start)
            if self._stopping:
                break
            end = t0 + phase.end
            while loop.time() < end and not self._stopping:
                await self._sleep_until(end)

    def _templates(self, phase: PhasePlan) -> dict[int, tuple[PublishTemplate, Any]]:
        protocol = self.job.settings.protocol
        out = {}
        for pub in self.pubs:
            if pub.spec.index < phase.publishers:
                body = payload_template(self.job.payload, self.job.run_tag, phase.payload_size, phase.index,
                                        pub.spec.index)
                template = PublishTemplate(pub.spec.topic, body.payload, qos=phase.qos, protocol=protocol,
                                           stamp_struct=body.stamp, stamp_offset=body.offset)
                out[pub.local] = (template, None if body.binary else body.values)
        return out

    async def _run_phase(self, phase: PhasePlan, start: float) -> None:
        loop = self.loop
        a, b, duration, n = phase.rate_start, phase.rate_end, phase.duration, phase.publishers
        templates = self._templates(phase)
        # heap entries: (due, local publisher, k = its message number in the phase, first k past its window)
        heap: list[tuple[float, int, int, int]] = []
        shifts: dict[int, float] = {}
        for pub in self.pubs:
            i = pub.spec.index
            window = phase.window_of(i) if i < n else None
            if window is None:
                continue
            shift = stagger(i, n)
            shifts[pub.local] = shift
            k = first_message(phase, i, window[0])
            stop = first_message(phase, i, window[1]) if window[1] < duration else 1 << 62
            offset = due_offset(a, b, duration, k + shift)
            if offset is not None and k < stop:
                heap.append((start + offset, pub.local, k, stop))
        heapq.heapify(heap)
        while loop.time() < start - EARLY and not self._stopping:
            await self._sleep_until(start)
        self.phase_now = p = phase.index
        r = self.report
        sent, unsent, lag = r.sent_by_phase, r.unsent_by_phase, self.lag[p]
        pubs = self.pubs
        pop, push = heapq.heappop, heapq.heappush
        while heap and not self._stopping:
            now = loop.time()
            if heap[0][0] > now + EARLY:
                await self._sleep_until(heap[0][0])
                continue
            sent_ns = time.time_ns()
            late = now - heap[0][0]
            horizon = now + EARLY
            batch = ok = 0
            while heap and heap[0][0] <= horizon and batch < BATCH:
                _, local, k, stop = pop(heap)
                pub = pubs[local]
                template, values = templates[local]
                seq = pub.seq + 1
                if pub.conn.publish(template, (seq, sent_ns) if values is None else values(seq, sent_ns), sent_ns):
                    pub.seq = seq
                    ok += 1
                batch += 1
                k += 1
                if k < stop:
                    nxt = due_offset(a, b, duration, k + shifts[local])
                    if nxt is not None:
                        push(heap, (start + nxt, local, k, stop))
            sent[p] += ok
            unsent[p] += batch - ok
            if ok:
                if not r.first_send_ns[p]:
                    r.first_send_ns[p] = sent_ns
                r.last_send_ns[p] = sent_ns
            lag.record_value(max(1, min(3_600_000_000, int(late * 1e6))), batch)
            if batch >= BATCH:
                await asyncio.sleep(0)  # let the sockets write and the acknowledgements in

    # -- the end -------------------------------------------------------------------------

    def _busy(self) -> bool:
        return any(p.conn.unacknowledged or (p.online and p.conn.backlog) for p in self.pubs)

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.job.drain
        while self._busy() and time.monotonic() < deadline and not self._stopping:
            await asyncio.sleep(0.01)

    async def _close(self) -> None:
        self.report.connected_at_end = self.connected
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(p.conn.disconnect() for p in self.pubs if p.online), return_exceptions=True)
        for pub in self.pubs:
            pub.online = False
            pub.conn.close()

    def _final_report(self) -> PublisherReport:
        r = self.report
        r.lag_by_phase = [encode(h) if h.get_total_count() else "" for h in self.lag]
        r.puback_by_phase = [encode(h) if h.get_total_count() else "" for h in self.puback]
        r.connect_setup = self.connect_setup.report()
        r.connect_by_phase = [c.report() for c in self.connect_stats]
        r.sent_by_publisher = {p.spec.index: p.seq for p in self.pubs}
        r.acked = self.stats.acked
        r.refused = self.stats.refused
        r.errors += self.stats.refused - len(self.stats.refusals)  # each refusal is an error; five are named
        for text in self.stats.refusals:
            self._error(text)
        r.unacked = sum(p.conn.unacknowledged for p in self.pubs)
        r.cpu_s = process_cpu_s() - self._cpu_at_start if self._cpu_at_start is not None else 0.0
        return r


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
