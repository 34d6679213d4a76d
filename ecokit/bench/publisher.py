"""The publisher worker process: its share of the run's publishers on one asyncio loop.

Each publisher is a paho client driven by ``ecokit.mqtt.loop.PahoLoop`` (the
simulator's connection layer: thousands of clients per process, one event loop). One
scheduler sends every message at its due time (a heap of due times; the schedule comes
from ``ecokit.bench.scenario``); a publisher that falls behind sends late rather than
skipping, and how late each message left is recorded (send lag). Sequence numbers are
consumed only by messages the client accepted, so a gap at the subscriber is a message
the network lost.
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
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt

from ecokit.bench.payload import encoder
from ecokit.bench.protocol import PublisherClient, PublisherJob, PublisherReport, PubTick, Ready
from ecokit.bench.scenario import PhasePlan, due_offset, stagger
from ecokit.bench.tracking import encode, new_histogram, record_us
from ecokit.mqtt.loop import (
    PahoLoop,
    backoff_delay,
    close_socket,
    new_paho_client,
    persistent_connect_args,
    raise_nofile,
)

EARLY = 0.0005  # s: messages due this soon go out in the current batch
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


class _Pub:
    __slots__ = ("acks", "attempt", "client", "connack", "ever", "local", "online", "reconnecting", "seq", "spec",
                 "started")

    def __init__(self, local: int, spec: PublisherClient, client: mqtt.Client) -> None:
        self.local = local
        self.spec = spec
        self.client = client
        self.online = False
        self.ever = False
        self.reconnecting = False
        self.started = False
        self.attempt = 0
        self.seq = 0
        self.acks: set[int] = set()  # mids of QoS 1/2 publishes awaiting PUBACK / PUBCOMP
        self.connack: asyncio.Future[bool] | None = None


class PublisherWorker:
    def __init__(self, conn: Connection, job: PublisherJob) -> None:
        self.conn = conn
        self.job = job
        phases = len(job.phases)
        self.report = PublisherReport(worker=job.worker, clients=len(job.clients), sent_by_phase=[0] * phases,
                                      unsent_by_phase=[0] * phases, first_send_ns=[0] * phases,
                                      last_send_ns=[0] * phases)
        self.lag = [new_histogram() for _ in range(phases)]
        self.refused: list[str] = []
        self.connected = 0
        self.phase_now = -1
        self._stopping = False
        self._closing = False
        self._t0_ns: int | None = None
        self._next_tick = 1
        self._started: asyncio.Future[bool] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._jitter = random.Random()
        self._tls: dict[Any, ssl.SSLContext] = {}
        self.pubs: list[_Pub] = []

    # -- life cycle ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        s = self.job.settings
        self._started = loop.create_future()
        self.driver = PahoLoop(loop, connect_workers=min(32, s.connect_concurrency))
        self.driver.start()
        self._slots = asyncio.Semaphore(s.connect_concurrency)
        loop.add_reader(self.conn.fileno(), self._on_command)
        ticker: asyncio.Task[None] | None = None
        try:
            self._build()
            await self._connect_all()
            self.conn.send(("ready", Ready(len(self.pubs), self.connected, self.report.connect_failures,
                                           tuple(self.report.last_errors[-5:]), tuple(self.refused[:5]))))
            if await self._started:
                ticker = loop.create_task(self._ticker())
                gc.collect()
                gc.freeze()  # thousands of long-lived clients: keep full collections from pausing the schedule
                await self._schedule()
                await self._drain()
            self.phase_now = len(self.job.phases)
        finally:
            gc.unfreeze()
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                with contextlib.suppress(OSError):
                    self._send_tick()
            loop.remove_reader(self.conn.fileno())
            await self._close()
            self.driver.stop()
        self.conn.send(("done", self._final_report()))

    def _on_command(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            message = ("abort",)  # the coordinator is gone
        kind = message[0]
        if kind == "start" and self._started is not None and not self._started.done():
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
            self._send_tick()

    def _send_tick(self) -> None:
        """The totals as of tick ``_next_tick`` (also once more at the end, for what the last tick missed)."""
        r = self.report
        self.conn.send(("tick", PubTick(self._next_tick, sum(r.sent_by_phase), sum(r.unsent_by_phase), r.acked,
                                        self.connected, r.reconnects, r.errors, self.phase_now)))
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
        s = self.job.settings
        for local, spec in enumerate(self.job.clients):
            client = new_paho_client(spec.client_id, protocol=s.protocol, clean_start=True,
                                     max_inflight=s.max_inflight)
            if spec.auth.username is not None:
                client.username_pw_set(spec.auth.username, spec.auth.password)
            if self.job.target.tls:
                client.tls_set_context(self._tls_context(spec))
            pub = _Pub(local, spec, client)
            client.user_data_set(pub)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_publish = self._on_publish
            self.driver.attach(client)
            self.pubs.append(pub)

    async def _connect_all(self) -> None:
        for pub in self.pubs:
            self._spawn(self._connect(pub))
        deadline = time.monotonic() + self.job.settings.connect_timeout
        while time.monotonic() < deadline and not self._stopping and not self.refused:
            if all(p.ever or p.attempt > 0 for p in self.pubs):
                return
            await asyncio.sleep(0.02)

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _connect(self, pub: _Pub) -> None:
        s, client, target = self.job.settings, pub.client, self.job.target
        pub.reconnecting = True
        ok = False
        try:
            async with self._slots:
                if self._closing:
                    return
                fut = pub.connack = self.loop.create_future()
                try:
                    if not pub.started:
                        pub.started = True
                        await self.driver.connect(client, target.host, target.port, **persistent_connect_args(
                            s.protocol, s.keepalive, s.session_expiry))
                    else:
                        await self.driver.reconnect(client)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    self.report.connect_failures += 1
                    if isinstance(exc, ssl.SSLError | ValueError):
                        self._error(f"{pub.spec.client_id}: cannot connect to {target.url}: {exc}")
                    else:
                        self._remember(f"{pub.spec.client_id}: cannot connect to {target.url}: {exc}")
                    close_socket(client)
                    return
                try:
                    ok = await asyncio.wait_for(asyncio.shield(fut), timeout=s.connect_timeout)
                except TimeoutError:
                    self.report.connect_failures += 1
                    self._error(f"{pub.spec.client_id}: no CONNACK from {target.url}")
                    with contextlib.suppress(Exception):
                        client.disconnect()
        finally:
            pub.connack = None
            pub.reconnecting = False
            if not (ok and pub.online) and not self.refused:
                self._retry(pub)

    def _retry(self, pub: _Pub) -> None:
        if self._closing:
            return
        s = self.job.settings
        delay = backoff_delay(pub.attempt, s.backoff_min, s.backoff_max, self._jitter)
        pub.attempt += 1
        pub.reconnecting = True
        self.loop.call_later(delay, self._start_reconnect, pub)

    def _start_reconnect(self, pub: _Pub) -> None:
        if pub.online or self._closing:
            pub.reconnecting = False
            return
        self._spawn(self._connect(pub))

    def _on_connect(self, client: mqtt.Client, pub: _Pub, flags: Any, reason: Any, props: Any) -> None:
        fut = pub.connack
        if reason.is_failure:
            text = f"{pub.spec.client_id}: {self.job.target.url} refused the connection: {reason}"
            self.refused.append(text)
            self._error(text)
            if fut is not None and not fut.done():
                fut.set_result(False)
            return
        if pub.ever:
            self.report.reconnects += 1
        else:
            self.report.ever_connected += 1
        pub.ever, pub.online, pub.attempt = True, True, 0
        self.connected += 1
        if fut is not None and not fut.done():
            fut.set_result(True)

    def _on_disconnect(self, client: mqtt.Client, pub: _Pub, flags: Any, reason: Any, props: Any) -> None:
        if pub.online:
            pub.online = False
            self.connected -= 1
            if not self._closing:
                self.report.disconnects += 1
                self._remember(f"{pub.spec.client_id}: disconnected ({reason})")
        fut = pub.connack
        if fut is not None and not fut.done():
            fut.set_result(False)
        if not self._closing and not pub.reconnecting:
            self._retry(pub)

    def _on_publish(self, client: mqtt.Client, pub: _Pub, mid: int, reason: Any, props: Any) -> None:
        acks = pub.acks
        if mid in acks:
            acks.discard(mid)
            self.report.acked += 1
            if getattr(reason, "is_failure", False):
                self.report.refused += 1
                if self.report.refused <= 5:
                    self._error(f"{pub.spec.client_id}: the broker refused a publish to {pub.spec.topic!r}: "
                                f"{reason}")
                else:
                    self.report.errors += 1

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

    async def _run_phase(self, phase: PhasePlan, start: float) -> None:
        loop = self.loop
        a, b, duration, n = phase.rate_start, phase.rate_end, phase.duration, phase.publishers
        encode_payload: Callable[[int, int, int, int], bytes] = encoder(self.job.payload, self.job.run_tag,
                                                                        phase.payload_size)
        heap: list[tuple[float, int, int]] = []
        for pub in self.pubs:
            if pub.spec.index < n:
                offset = due_offset(a, b, duration, stagger(pub.spec.index, n))
                if offset is not None:
                    heap.append((start + offset, pub.local, 0))
        heapq.heapify(heap)
        while loop.time() < start - EARLY and not self._stopping:
            await self._sleep_until(start)
        self.phase_now = phase.index
        p, qos = phase.index, phase.qos
        r = self.report
        sent, unsent, lag = r.sent_by_phase, r.unsent_by_phase, self.lag[p]
        success, no_conn = mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN
        pubs = self.pubs
        emitted = 0
        while heap and not self._stopping:
            due, local, k = heap[0]
            now = loop.time()
            if due > now + EARLY:
                await self._sleep_until(due)
                continue
            heapq.heappop(heap)
            pub = pubs[local]
            seq = pub.seq + 1
            sent_ns = time.time_ns()
            info = pub.client.publish(pub.spec.topic, encode_payload(p, pub.spec.index, seq, sent_ns), qos=qos)
            if info.rc == success or (qos and info.rc == no_conn):
                pub.seq = seq
                sent[p] += 1
                if qos and info.mid is not None:
                    pub.acks.add(info.mid)
                if not r.first_send_ns[p]:
                    r.first_send_ns[p] = sent_ns
                r.last_send_ns[p] = sent_ns
            else:
                unsent[p] += 1
            record_us(lag, int((now - due) * 1e6))
            nxt = due_offset(a, b, duration, k + 1 + stagger(pub.spec.index, n))
            if nxt is not None:
                heapq.heappush(heap, (start + nxt, local, k + 1))
            emitted += 1
            if emitted % 256 == 0:
                await asyncio.sleep(0)  # let the sockets write during a burst

    # -- the end -------------------------------------------------------------------------

    def _busy(self) -> bool:
        return any(p.acks or (p.online and p.client.want_write()) for p in self.pubs)

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.job.drain
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _close(self) -> None:
        self.report.connected_at_end = self.connected
        self._closing = True
        for pub in self.pubs:
            with contextlib.suppress(Exception):
                pub.client.disconnect()
        deadline = time.monotonic() + 2.0
        while any(p.online for p in self.pubs) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def _final_report(self) -> PublisherReport:
        r = self.report
        r.lag_by_phase = [encode(h) if h.get_total_count() else "" for h in self.lag]
        r.sent_by_publisher = {p.spec.index: p.seq for p in self.pubs}
        r.unacked = sum(len(p.acks) for p in self.pubs)
        return r


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
