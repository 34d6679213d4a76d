"""The subscriber worker process: every subscriber of a run on one asyncio loop.

Subscribers use ``ecokit.mqtt.fast`` (MQTT 5, QoS 0/1: large reads, every complete packet
parsed in one pass, acknowledgements batched; its socket is watched with ``add_reader``)
or, for QoS 2 and MQTT 3.1.1, paho driven by ``ecokit.mqtt.loop.PahoLoop``. Either way
the receive time is taken once per socket read and :class:`~ecokit.bench.tracking.Receiver`
files each message. The process does nothing else, so what it measures is not delayed by
the publishers (they run in other processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import ssl
import time
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt

from ecokit.bench.protocol import Ready, SubscriberClient, SubscriberJob, SubscriberReport, SubTick
from ecokit.bench.tracking import Receiver, encode, process_cpu_s
from ecokit.errors import BrokerError
from ecokit.mqtt.fast import FastMqtt, Subscription
from ecokit.mqtt.loop import PahoLoop, backoff_delay, close_socket, new_paho_client, persistent_connect_args

ERRORS_KEPT = 20
READS_PER_WAKEUP = 16


def run_subscribers(conn: Connection, job: SubscriberJob) -> None:
    """Worker entry point (``python -m ecokit.bench.worker``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    try:
        asyncio.run(SubscriberWorker(conn, job).run())
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"subscriber worker: {exc.__class__.__name__}: {exc}"))
        raise


class _Sub:
    __slots__ = ("attempt", "client", "ever", "fast", "online", "reconnecting", "spec")

    def __init__(self, spec: SubscriberClient) -> None:
        self.spec = spec
        self.fast: FastMqtt | None = None
        self.client: mqtt.Client | None = None
        self.online = False
        self.ever = False
        self.reconnecting = False
        self.attempt = 0


class SubscriberWorker:
    def __init__(self, conn: Connection, job: SubscriberJob) -> None:
        self.conn = conn
        self.job = job
        self.receiver = Receiver(job.run_tag, job.phases, job.payload, shared=job.shared)
        self.report = SubscriberReport(worker=job.worker, clients=len(job.clients))
        self.subs = [_Sub(spec) for spec in job.clients]
        self.refused: list[str] = []
        self._finished: asyncio.Future[None] | None = None
        self._closing = False
        self._closed = False
        self._t0_ns: int | None = None
        self._cpu_at_start: float | None = None
        self._next_tick = 1
        self._jitter = random.Random()
        self._tls: dict[Any, ssl.SSLContext] = {}
        self._asked: dict[int, float] = {}  # subscriber -> when its SUBSCRIBE went out (paho)

    # -- life cycle ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        self.driver = PahoLoop(loop, connect_workers=8)
        self.driver.start()
        loop.add_reader(self.conn.fileno(), self._on_command)
        try:
            await asyncio.gather(*(self._connect(sub, first=True) for sub in self.subs))
            connected = sum(s.online for s in self.subs)
            self.conn.send(("ready", Ready(len(self.subs), connected, self.report.connect_failures,
                                           tuple(self.report.last_errors[-5:]), tuple(self.refused))))
            ticker = loop.create_task(self._ticker())
            await self._finished
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if self._t0_ns is not None:
                self._send_tick()  # what arrived since the last tick
            self._closing = True
            self._close_all()
            await asyncio.sleep(0.05)  # let paho write its DISCONNECTs
        finally:
            loop.remove_reader(self.conn.fileno())
            self._closing = True
            self._close_all()
            self.driver.stop()
        self.conn.send(("done", self._final_report()))

    def _on_command(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            message = ("finish",)  # the coordinator is gone: stop
        if message[0] == "start":
            self._cpu_at_start = process_cpu_s()
            self._t0_ns = int(message[1])
        elif message[0] in ("finish", "abort") and self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    async def _ticker(self) -> None:
        while self._t0_ns is None:
            await asyncio.sleep(0.01)
        while True:
            due_ns = self._t0_ns + int(self._next_tick * self.job.tick * 1e9)
            await asyncio.sleep(max(0.0, (due_ns - time.time_ns()) / 1e9))
            for sub in self.subs:
                if sub.online and sub.fast is not None:
                    try:
                        sub.fast.sock.settimeout(5.0)  # type: ignore[union-attr]
                        sub.fast.ping_if_due()
                    except (OSError, AttributeError):
                        self._lost(sub, "ping failed")
            self._send_tick()

    def _send_tick(self) -> None:
        received, unique, duplicates = self.receiver.totals()
        count, p50, p99, top = self.receiver.take_interval()
        self.conn.send(("tick", SubTick(self._next_tick, received, unique, duplicates,
                                        sum(s.online for s in self.subs), self.report.reconnects, self.report.errors,
                                        count, p50, p99, top)))
        self._next_tick += 1

    # -- connections ---------------------------------------------------------------------

    def _error(self, text: str) -> None:
        self.report.errors += 1
        self._remember(text)

    def _remember(self, text: str) -> None:
        self.report.last_errors.append(text)
        del self.report.last_errors[:-ERRORS_KEPT]

    def _tls_context(self, spec: SubscriberClient) -> ssl.SSLContext | None:
        target = self.job.target
        if not target.tls:
            return None
        key = spec.auth.client_cert
        if key not in self._tls:
            self._tls[key] = target.tls_context(key)
        return self._tls[key]

    async def _connect(self, sub: _Sub, *, first: bool = False) -> None:
        sub.reconnecting = True
        try:
            if self.job.library == "fast":
                ok = await self._connect_fast(sub, first)
            else:
                ok = await self._connect_paho(sub, first)
        finally:
            sub.reconnecting = False
        if not ok and not self._closing and not self.refused:
            self._retry(sub)

    def _retry(self, sub: _Sub) -> None:
        s = self.job.settings
        delay = backoff_delay(sub.attempt, s.backoff_min, s.backoff_max, self._jitter)
        sub.attempt += 1
        sub.reconnecting = True
        self.loop.call_later(delay, self._start_reconnect, sub)

    def _start_reconnect(self, sub: _Sub) -> None:
        if sub.online or self._closing:
            sub.reconnecting = False
            return
        task = self.loop.create_task(self._connect(sub))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def _session_lost(self, sub: _Sub) -> None:
        self.report.sessions_lost += 1
        self._remember(f"{sub.spec.client_id}: reconnected without its session; messages published meanwhile "
                       "were not kept for it")

    def _connected(self, sub: _Sub) -> None:
        if sub.ever:
            self.report.reconnects += 1
        else:
            self.report.ever_connected += 1
        sub.ever, sub.online, sub.attempt = True, True, 0

    def _lost(self, sub: _Sub, why: str) -> None:
        if not sub.online:
            return
        sub.online = False
        if self._closing:
            return
        self.report.disconnects += 1
        self._remember(f"{sub.spec.client_id}: connection lost ({why})")
        if sub.fast is not None:
            with contextlib.suppress(ValueError, OSError):
                if sub.fast.sock is not None:
                    self.loop.remove_reader(sub.fast.sock.fileno())
            sub.fast.close()
        if not sub.reconnecting:
            self._retry(sub)

    # fastmqtt ------------------------------------------------------------------------------

    async def _connect_fast(self, sub: _Sub, first: bool) -> bool:
        spec, s, target = sub.spec, self.job.settings, self.job.target
        if sub.fast is None:
            sub.fast = FastMqtt(target.host, target.port, client_id=spec.client_id, username=spec.auth.username,
                                password=spec.auth.password, tls=self._tls_context(spec), keepalive=s.keepalive,
                                clean_start=False, session_expiry=s.session_expiry)
        fast = sub.fast
        # Never a clean start: the client id is new to the broker (it holds the run id), and
        # Mosquitto keeps a session across its own restart only for clients that did not ask
        # for a clean start, even with a session expiry.
        fast.clean_start = False
        try:
            session = await self.loop.run_in_executor(None, fast.connect, s.connect_timeout)
            if not session and not first:
                self._session_lost(sub)
            if not session:
                asked = time.perf_counter()
                codes = await self.loop.run_in_executor(
                    None, fast.subscribe, [Subscription(spec.filter, spec.qos, retain_handling=2)], s.connect_timeout)
                self.report.subscribe_us.append(int((time.perf_counter() - asked) * 1e6))
                if any(code >= 0x80 for code in codes):
                    fast.disconnect()
                    text = (f"{spec.client_id}: {target.url} refused the subscription to {spec.filter!r} "
                            f"(reason {codes[0]:#x}{', not authorized' if codes[0] == 0x87 else ''})")
                    self.refused.append(text)
                    self._error(text)
                    return False
        except BrokerError as exc:
            fast.close()
            self.report.connect_failures += 1
            if "refused" in str(exc):
                self.refused.append(f"{spec.client_id}: {exc}")
            self._error(f"{spec.client_id}: {exc}")
            return False
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            fast.close()
            self.report.connect_failures += 1
            self._remember(f"{spec.client_id}: cannot connect to {target.url}: {exc}")
            return False
        assert fast.sock is not None
        self._connected(sub)
        self.loop.add_reader(fast.sock.fileno(), self._readable, sub)
        self._readable(sub)  # anything that came with the CONNACK or SUBACK is already buffered
        return True

    def _readable(self, sub: _Sub) -> None:
        fast = sub.fast
        if fast is None or fast.sock is None:
            return
        take = self.receiver.take
        index = sub.spec.index
        try:
            for _ in range(READS_PER_WAKEUP):
                packets = fast.read(0)
                if not packets:
                    sock = fast.sock
                    if isinstance(sock, ssl.SSLSocket) and sock.pending():
                        continue
                    break
                now = time.time_ns()
                take(index, [p[1] for p in packets], now)
                pids = [p[4] for p in packets if p[4]]
                if pids:
                    fast.ack(pids)
            fast.sock.settimeout(5.0)
            fast.flush()
        except (ConnectionError, OSError) as exc:
            self._lost(sub, str(exc) or exc.__class__.__name__)

    # paho ----------------------------------------------------------------------------------

    async def _connect_paho(self, sub: _Sub, first: bool) -> bool:
        spec, s, target = sub.spec, self.job.settings, self.job.target
        fut: asyncio.Future[bool] = self.loop.create_future()
        if sub.client is None:
            client = new_paho_client(spec.client_id, protocol=s.protocol, clean_start=s.protocol != 5,
                                     websocket_path=target.websocket_path)
            if spec.auth.username is not None:
                client.username_pw_set(spec.auth.username, spec.auth.password)
            ctx = self._tls_context(spec)
            if ctx is not None:
                client.tls_set_context(ctx)
            client.on_message = self._on_message
            client.on_disconnect = self._on_disconnect
            client.on_subscribe = self._on_subscribe
            self.driver.attach(client)
            sub.client = client
        client = sub.client
        client.user_data_set((sub, fut))
        client.on_connect = self._on_connect
        try:
            if first:
                await self.driver.connect(client, target.host, target.port,
                                          **persistent_connect_args(s.protocol, s.keepalive, s.session_expiry))
            else:
                await self.driver.reconnect(client)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.report.connect_failures += 1
            self._remember(f"{spec.client_id}: cannot connect to {target.url}: {exc}")
            close_socket(client)
            return False
        try:
            return await asyncio.wait_for(fut, timeout=s.connect_timeout)
        except TimeoutError:
            self.report.connect_failures += 1
            self._error(f"{spec.client_id}: no CONNACK/SUBACK from {target.url} within {s.connect_timeout:g}s")
            close_socket(client)
            return False

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        sub, fut = userdata
        if reason.is_failure:
            text = f"{sub.spec.client_id}: {self.job.target.url} refused the connection: {reason}"
            self.refused.append(text)
            self._error(text)
            if not fut.done():
                fut.set_result(False)
            return
        if not flags.session_present and sub.ever:
            self._session_lost(sub)
        if flags.session_present:
            self._connected(sub)
            if not fut.done():
                fut.set_result(True)
            return
        if self.job.settings.protocol == 5:
            from paho.mqtt.subscribeoptions import SubscribeOptions

            client.subscribe(sub.spec.filter, options=SubscribeOptions(qos=sub.spec.qos, retainHandling=2))
        else:
            client.subscribe(sub.spec.filter, sub.spec.qos)
        self._asked[sub.spec.index] = time.perf_counter()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        sub, fut = userdata
        failed = [rc for rc in reasons if getattr(rc, "is_failure", False) or rc == 0x80]
        if failed:
            text = (f"{sub.spec.client_id}: {self.job.target.url} refused the subscription to "
                    f"{sub.spec.filter!r}: {failed[0]}")
            self.refused.append(text)
            self._error(text)
            if not fut.done():
                fut.set_result(False)
            return
        asked = self._asked.pop(sub.spec.index, None)
        if asked is not None:
            self.report.subscribe_us.append(int((time.perf_counter() - asked) * 1e6))
        self._connected(sub)
        if not fut.done():
            fut.set_result(True)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.receiver.take(userdata[0].spec.index, [bytes(msg.payload)], time.time_ns())

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        sub, fut = userdata
        if not fut.done():
            fut.set_result(False)
        self._lost(sub, str(reason))

    # -- the end -------------------------------------------------------------------------

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self.subs:
            if sub.fast is not None:
                if sub.fast.sock is not None:
                    with contextlib.suppress(ValueError, OSError):
                        self.loop.remove_reader(sub.fast.sock.fileno())
                    with contextlib.suppress(OSError):
                        sub.fast.sock.settimeout(2.0)
                sub.fast.disconnect()
            if sub.client is not None:
                with contextlib.suppress(Exception):
                    sub.client.disconnect()
            if sub.online:
                self.report.connected_at_end += 1
            sub.online = False

    def _final_report(self) -> SubscriberReport:
        r, rec = self.report, self.receiver
        r.received_by_phase = list(rec.received)
        r.unique_by_phase = list(rec.unique)
        r.duplicates_by_phase = list(rec.duplicates)
        r.reordered_by_phase = list(rec.reordered)
        r.latency_by_phase = [encode(h) if h.get_total_count() else "" for h in rec.latency]
        r.first_recv_ns = list(rec.first_ns)
        r.last_recv_ns = list(rec.last_ns)
        r.streams = rec.streams()
        r.per_subscriber = dict(rec.per_subscriber)
        r.foreign = rec.foreign
        r.clock_anomalies = rec.clock_anomalies
        r.cpu_s = process_cpu_s() - self._cpu_at_start if self._cpu_at_start is not None else 0.0
        return r
