"""The fast publish path: many MQTT connections on one asyncio loop, publishing pre-encoded packets.

paho-mqtt builds every PUBLISH anew (property objects, a message info, a lock, one socket
write per packet where it can) and reads one packet per loop turn: about 40 µs per publish
from Python, ~25,000 msg/s per process (benchmarks/README.md). Here a publish is a
``bytearray +=`` of a :class:`~ecokit.mqtt.packets.PublishTemplate` and two patches in place;
every connection's bytes go out in one ``send`` per loop iteration (many packets per write);
a read brings back hundreds of PUBACKs that :func:`~ecokit.mqtt.packets.scan` splits in one
pass (acknowledgements drained in bulk).

What it does: MQTT 3.1.1 and 5; QoS 0, 1 (PUBACK) and 2 (PUBREC → PUBREL → PUBCOMP) with a
window of unacknowledged publishes (the smaller of ours and the broker's Receive Maximum;
publishes beyond it wait in order); tcp, TLS, ws and wss; the time each connection step
took (TCP, TLS handshake, websocket upgrade, CONNECT → CONNACK) and publish → acknowledgement
latency; keepalive; resending unacknowledged publishes (DUP) after a reconnect; negative
acknowledgements (MQTT 5 reason codes) counted as refusals; a last will; subscribing (SUBACK
codes handed to a callback) and receiving at QoS 0/1/2 (``on_message``; a QoS 2 message is
handed over once, however often it is sent before its PUBREL), which is what a simulated
vehicle needs for its commands and shadow answers. The bench subscribers and the bridge receive
with ``ecokit.mqtt.fast``; paho stays wherever features (MQTT 5 properties, enhanced auth,
proxies) matter more than rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ecokit.errors import BrokerError
from ecokit.mqtt import packets as p
from ecokit.mqtt.packets import PublishTemplate, Will

# Reads go into one buffer per loop (recv_into): ``sock.recv(262144)`` allocates and releases
# 256 KiB for each read, ~13 µs, which a read bringing one PUBACK (a vehicle's) cannot afford.
READ_SIZE = 262_144


def reason_name(packet_type: int, reason: int) -> str:
    """An MQTT 5 reason code as paho names it (\"Not authorized\"), as the rest of ecokit reports them."""
    from paho.mqtt.reasoncodes import ReasonCode

    try:
        return str(ReasonCode(packet_type, identifier=reason))
    except Exception:  # an identifier paho does not know for this packet type
        return f"reason {reason:#x}"


class ConnectRefused(BrokerError):
    """The broker answered CONNECT with a refusal (credentials, authorization, ...): retrying will not help."""

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Transport:
    """Where connections go: host, port, TLS context, websocket path (None: plain MQTT over TCP)."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    ws_path: str | None = None

    @property
    def scheme(self) -> str:
        if self.ws_path is not None:
            return "wss" if self.tls else "ws"
        return "mqtts" if self.tls else "mqtt"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.ws_path or ''}"


@dataclass(frozen=True)
class ConnectTiming:
    """Seconds each step of one connection took (0 for a step the transport does not have)."""

    tcp: float
    tls: float
    ws: float
    connack: float

    @property
    def total(self) -> float:
        return self.tcp + self.tls + self.ws + self.connack


@dataclass
class PublishStats:
    """What the connections of one owner acknowledged (shared; the owner drains ``ack_us``)."""

    acked: int = 0  # QoS 1 PUBACKs and QoS 2 PUBCOMPs (refusals included)
    refused: int = 0  # acknowledgements with a failure reason code (MQTT 5), e.g. not authorized
    received: int = 0  # PUBLISH packets the broker sent us (nothing subscribes; a resumed session may)
    ack_us: list[int] = field(default_factory=list)  # publish → acknowledgement, µs, in arrival order
    refusals: list[str] = field(default_factory=list)  # the first few, for the report
    track_latency: bool = True  # keep publish -> acknowledgement times in ack_us (the owner drains them)

    def take_ack_latencies(self) -> list[int]:
        taken, self.ack_us = self.ack_us, []
        return taken


class PublisherLoop:
    """Drives any number of :class:`FastPublisher` s on one asyncio loop.

    Bytes published during one loop iteration are written once, at its end, for every
    connection that has some; a connection whose socket is full waits for writability. One
    timer sends keepalive pings and notices connections whose broker went silent.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, misc_interval: float = 1.0) -> None:
        self.loop = loop
        self.misc_interval = misc_interval
        self.connections: set[FastPublisher] = set()
        self._dirty: list[FastPublisher] = []
        self._flush_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._addresses: dict[tuple[str, int], Any] = {}
        self.read_buffer = memoryview(bytearray(READ_SIZE))  # every connection's reads (one thread)

    def start(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.misc_interval, self._misc)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in list(self.connections):
            conn.close()

    def _misc(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            conn.keepalive_check(now)
        self._timer = self.loop.call_later(self.misc_interval, self._misc)

    def mark_dirty(self, conn: FastPublisher) -> None:
        self._dirty.append(conn)
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    async def address(self, host: str, port: int) -> Any:
        """Resolved once per host and port (thousands of connects must not each ask the resolver)."""
        key = (host, port)
        if key not in self._addresses:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            if not infos:
                raise OSError(f"cannot resolve {host}")
            self._addresses[key] = infos[0]
        return self._addresses[key]


class FastPublisher:
    """One publishing MQTT connection (see the module docstring)."""

    def __init__(self, group: PublisherLoop, transport: Transport, *, client_id: str, username: str | None = None,
                 password: str | None = None, protocol: int = 5, keepalive: int = 30, clean_start: bool = True,
                 session_expiry: int = 0, max_inflight: int = 100, stats: PublishStats | None = None,
                 on_lost: Callable[[FastPublisher, str], None] | None = None, will: Will | None = None,
                 on_message: Callable[[FastPublisher, str, bytes, int, bool], None] | None = None) -> None:
        if protocol not in (4, 5):
            raise ValueError(f"MQTT protocol level {protocol}: expected 4 (3.1.1) or 5")
        self.group = group
        self.transport = transport
        self.client_id = client_id
        self.username, self.password = username, password
        self.protocol = protocol
        self.keepalive = keepalive
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.max_inflight = max(1, max_inflight)
        self.window = self.max_inflight
        self.stats = stats if stats is not None else PublishStats()
        self.on_lost = on_lost
        self.will = will  # sent with every CONNECT (change it before a reconnect to update it)
        self.on_message = on_message  # (connection, topic, payload, qos, retain) for each message received
        self.sock: socket.socket | None = None
        self.online = False
        self.session_present = False
        self.disconnect_reason: int | None = None
        self.out = bytearray()  # MQTT bytes of this loop iteration, not yet framed or written
        self._wire = bytearray()  # bytes ready for the socket (framed for websockets) that did not fit yet
        self._in = bytearray()
        self._ws: p.WsReader | None = None
        self._writing = False  # watching the socket for writability
        self._dirty = False
        self._next_id = 0
        # QoS 1/2 publishes awaiting acknowledgement: packet id -> [template, values, sent_ns, released]
        self.inflight: dict[int, list[Any]] = {}
        self.held: deque[tuple[PublishTemplate, tuple[Any, ...], int]] = deque()  # beyond the window
        self._connack: asyncio.Future[p.Connack] | None = None
        self._last_write = self._last_read = 0.0
        self._ping_sent = 0.0
        self._subscribing: dict[int, Callable[[list[int]], None] | None] = {}  # SUBSCRIBE packet id -> on SUBACK
        self._qos2_in: set[int] = set()  # QoS 2 messages received and handed over, awaiting their PUBREL
        self._ending = False  # DISCONNECT queued: close once the socket took it

    # -- connecting -----------------------------------------------------------------------------

    async def connect(self, timeout: float = 10.0) -> ConnectTiming:
        """Open the transport, CONNECT and wait for CONNACK. Raises ConnectRefused (the broker said
        no), TimeoutError, OSError or ssl.SSLError (the transport failed)."""
        async with asyncio.timeout(timeout):
            return await self._connect()

    async def _connect(self) -> ConnectTiming:
        self.close()
        loop = self.group.loop
        t = self.transport
        family, kind, proto, _, address = await self.group.address(t.host, t.port)
        started = time.perf_counter()
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
            tcp_done = time.perf_counter()
            tls_done = tcp_done
            if t.tls is not None:
                sock = t.tls.wrap_socket(sock, server_hostname=t.host, do_handshake_on_connect=False)
                await self._handshake(sock)
                tls_done = time.perf_counter()
            leftover = b""
            ws_done = tls_done
            if t.ws_path is not None:
                leftover = await self._ws_upgrade(sock)
                ws_done = time.perf_counter()
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise
        self.sock = sock
        self._in.clear()
        self.out.clear()
        self._wire.clear()
        self._writing = False
        self._ending = False
        self._subscribing.clear()
        self.disconnect_reason = None
        fut: asyncio.Future[p.Connack] = loop.create_future()
        self._connack = fut
        loop.add_reader(sock.fileno(), self._on_readable)
        self.group.connections.add(self)
        if leftover:
            self._take(leftover)
        self.out += p.connect_packet(self.client_id, protocol=self.protocol, clean_start=self.clean_start,
                                     keepalive=self.keepalive, username=self.username, password=self.password,
                                     session_expiry=self.session_expiry, will=self.will)
        self.flush()
        try:
            connack = await fut
        except BaseException:
            self.close()
            raise
        finally:
            self._connack = None
        done = time.perf_counter()
        if not connack.accepted:
            self.close()
            who = self.username or "anonymous"
            why = reason_name(p.CONNACK, connack.reason) if self.protocol == 5 else connack.refusal(4)
            raise ConnectRefused(f"{t.url} refused the connection of {who}: {why}",
                                 connack.reason)
        self.session_present = connack.session_present
        if not connack.session_present:
            self._qos2_in.clear()  # a new session: the broker forgot the QoS 2 exchanges it had open
        self.window = max(1, min(self.max_inflight, connack.receive_maximum))
        self.online = True
        self._last_read = self._last_write = time.monotonic()
        self._resend()
        return ConnectTiming(tcp_done - started, tls_done - tcp_done, ws_done - tls_done, done - ws_done)

    async def _wait(self, fd: int, *, write: bool) -> None:
        loop = self.group.loop
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        if write:
            loop.add_writer(fd, ready)
        else:
            loop.add_reader(fd, ready)
        try:
            await fut
        finally:
            if write:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)

    async def _handshake(self, sock: ssl.SSLSocket) -> None:
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                await self._wait(sock.fileno(), write=False)
            except ssl.SSLWantWriteError:
                await self._wait(sock.fileno(), write=True)

    async def _ws_upgrade(self, sock: socket.socket) -> bytes:
        t = self.transport
        key = p.ws_new_key()
        request = p.ws_handshake_request(t.host, t.port, t.ws_path or "/mqtt", key, tls=t.tls is not None)
        while request:
            try:
                sent = sock.send(request)
                request = request[sent:]
            except (BlockingIOError, ssl.SSLWantWriteError):
                await self._wait(sock.fileno(), write=True)
            except ssl.SSLWantReadError:
                await self._wait(sock.fileno(), write=False)
        answer = bytearray()
        while b"\r\n\r\n" not in answer:
            try:
                chunk = sock.recv(4096)
            except (BlockingIOError, ssl.SSLWantReadError):
                await self._wait(sock.fileno(), write=False)
                continue
            if not chunk:
                raise ConnectionError(f"{t.url} closed the connection during the websocket upgrade")
            answer += chunk
            if len(answer) > 65536:
                raise ConnectionError(f"{t.url}: no end to the HTTP answer of the websocket upgrade")
        head, rest = bytes(answer).split(b"\r\n\r\n", 1)
        problem = p.ws_check_response(head, key)
        if problem:
            raise ConnectionError(f"{t.url}: {problem}")
        self._ws = p.WsReader(self._ws_control)
        return rest

    def _ws_control(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9:  # ping: answer with a pong carrying the same data
            self._put_wire(p.ws_frame(payload, 0xA))
        elif opcode == 0x8:
            self._lost("the server closed the websocket")

    # -- publishing -----------------------------------------------------------------------------

    def publish(self, template: PublishTemplate, values: tuple[Any, ...] = (), sent_ns: int = 0) -> bool:
        """Queue one publish of ``template`` with ``values`` packed at its stamp offset.

        QoS 0 goes out only while connected (False otherwise: not sent). QoS 1/2 is accepted in
        any state: it goes out when the window has room and the connection is up."""
        if template.qos == 0:
            if not self.online:
                return False
            start = template.write(self.out)
            if values:
                template.stamp(self.out, start, values)
        else:
            if not sent_ns:
                sent_ns = time.time_ns()
            if not self.online or len(self.inflight) >= self.window:
                self.held.append((template, values, sent_ns))
                return True
            self._write_qos(template, values, sent_ns)
        if not self._dirty:
            self._dirty = True
            self.group.mark_dirty(self)
        return True

    def publish_payload(self, template: PublishTemplate, payload: bytes, sent_ns: int = 0) -> bool:
        """Publish another payload on ``template`` 's topic (messages that differ in length)."""
        return self.publish(template, (payload,), sent_ns) if template.qos else self._publish_raw(template, payload)

    def _publish_raw(self, template: PublishTemplate, payload: bytes) -> bool:
        if not self.online:
            return False
        template.write_payload(self.out, payload)
        if not self._dirty:
            self._dirty = True
            self.group.mark_dirty(self)
        return True

    def _packet_id(self) -> int:
        inflight, subscribing = self.inflight, self._subscribing
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in inflight and not (subscribing and self._next_id in subscribing):
                return self._next_id

    # -- subscribing ----------------------------------------------------------------------------

    def subscribe(self, filters: list[tuple[str, int]],
                  on_suback: Callable[[list[int]], None] | None = None) -> bool:
        """SUBSCRIBE to (filter, QoS) pairs; ``on_suback`` gets the broker's codes (one per filter,
        0x80 and above: refused). False when not connected (nothing was sent)."""
        if not self.online:
            return False
        pid = self._packet_id()
        self._subscribing[pid] = on_suback
        self.out += p.subscribe_packet(pid, filters, protocol=self.protocol)
        if not self._dirty:
            self._dirty = True
            self.group.mark_dirty(self)
        return True

    def _write_qos(self, template: PublishTemplate, values: tuple[Any, ...], sent_ns: int, dup: bool = False) -> None:
        pid = self._packet_id()
        out = self.out
        if template.stamp_struct is None and values:  # a payload of its own (publish_payload)
            start = template.write_payload(out, values[0], pid)
        else:
            start = template.write(out, pid)
            if values:
                template.stamp(out, start, values)
        if dup:
            out[start] |= 0x08
        self.inflight[pid] = [template, values, sent_ns, False]

    @property
    def unacknowledged(self) -> int:
        return len(self.inflight) + len(self.held)

    @property
    def backlog(self) -> int:
        """Bytes published but not yet accepted by the socket."""
        return len(self.out) + len(self._wire)

    def _resend(self) -> None:
        """After a CONNACK: publishes never acknowledged go again (DUP), then the held ones."""
        pending = sorted(self.inflight.items())
        self.inflight = {}
        for pid, (template, values, sent_ns, released) in pending:
            if released:  # QoS 2 past PUBREC: only the PUBREL is repeated
                self.inflight[pid] = [template, values, sent_ns, True]
                self.out += p.ack_packet(p.PUBREL, pid)
            else:
                self._next_id = pid - 1  # keep the packet id (the broker may have stored it)
                self._write_qos(template, values, sent_ns, dup=True)
        self._release_held()
        self.flush()

    def _release_held(self) -> None:
        held, inflight, window = self.held, self.inflight, self.window
        while held and len(inflight) < window:
            template, values, sent_ns = held.popleft()
            self._write_qos(template, values, sent_ns)

    # -- writing ---------------------------------------------------------------------------------

    def flush(self) -> None:
        self._dirty = False
        if self.out:
            if self._ws is not None:
                self._wire += p.ws_frame(self.out)
                self.out.clear()
            elif self._wire:
                self._wire += self.out
                self.out.clear()
            else:
                self._wire, self.out = self.out, self._wire
        if self._wire and not self._writing:
            self._send()

    def _put_wire(self, data: bytes) -> None:
        self.flush()
        self._wire += data
        if not self._writing:
            self._send()

    def _send(self) -> None:
        sock = self.sock
        if sock is None:
            self._wire.clear()
            return
        wire = self._wire
        try:
            while wire:
                sent = sock.send(wire)
                del wire[:sent]
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except OSError as exc:
            self._lost(f"write failed: {exc}")
            return
        self._last_write = time.monotonic()
        if not wire and self._ending:
            self.close()  # the DISCONNECT is out
            return
        if wire and not self._writing:
            self._writing = True
            self.group.loop.add_writer(sock.fileno(), self._on_writable)
        elif not wire and self._writing:
            self._writing = False
            self.group.loop.remove_writer(sock.fileno())

    def _on_writable(self) -> None:
        self._send()

    # -- reading ----------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        view = self.group.read_buffer
        data: memoryview | bytearray
        try:
            n = sock.recv_into(view)
            data = view[:n]
            if n and isinstance(sock, ssl.SSLSocket) and sock.pending():
                data = bytearray(data)  # TLS records decrypted but not yet read
                while sock.pending():
                    n = sock.recv_into(view)
                    if not n:
                        break
                    data += view[:n]
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError as exc:
            self._lost(f"read failed: {exc}")
            return
        if not data:
            reason = f" (reason {self.disconnect_reason:#x})" if self.disconnect_reason else ""
            self._lost(f"the broker closed the connection{reason}")
            return
        self._take(data)

    def _take(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the socket (``data`` is only valid during this call: the loop's read buffer)."""
        self._last_read = time.monotonic()
        buf = self._in
        if self._ws is not None:
            self._ws.feed(data, buf)
        else:
            buf += data
        found, end = p.scan(buf)
        if found:
            self._handle(buf, found)
        del buf[:end]
        if self.out and not self._dirty:
            self._dirty = True
            self.group.mark_dirty(self)

    def _handle(self, buf: bytearray, found: list[p.Found]) -> None:
        inflight = self.inflight
        stats = self.stats
        ack_us = stats.ack_us if stats.track_latency else None
        now_ns = 0
        freed = False
        for kind, flags, body, end in found:
            if kind == p.PUBACK or kind == p.PUBCOMP:
                pid = (buf[body] << 8) | buf[body + 1]
                entry = inflight.pop(pid, None)
                if entry is None:
                    continue
                if ack_us is not None:
                    if not now_ns:
                        now_ns = time.time_ns()
                    ack_us.append((now_ns - entry[2]) // 1000)
                stats.acked += 1
                freed = True
                if end - body > 2 and buf[body + 2] >= 0x80:
                    self._refused(entry[0], buf[body + 2])
            elif kind == p.PUBREC:
                pid = (buf[body] << 8) | buf[body + 1]
                entry = inflight.get(pid)
                if entry is None:
                    self.out += p.ack_packet(p.PUBREL, pid)  # the spec asks for a PUBREL all the same
                    continue
                if end - body > 2 and buf[body + 2] >= 0x80:
                    del inflight[pid]
                    if ack_us is not None:
                        if not now_ns:
                            now_ns = time.time_ns()
                        ack_us.append((now_ns - entry[2]) // 1000)
                    stats.acked += 1
                    freed = True
                    self._refused(entry[0], buf[body + 2])
                    continue
                entry[3] = True
                self.out += p.ack_packet(p.PUBREL, pid)
            elif kind == p.PUBLISH:
                stats.received += 1
                qos = (flags >> 1) & 3
                tlen = (buf[body] << 8) | buf[body + 1]
                pid = (buf[body + 2 + tlen] << 8) | buf[body + 3 + tlen] if qos else 0
                if self.on_message is not None and not (qos == 2 and pid in self._qos2_in):
                    self._deliver(buf, body, tlen, end, qos, bool(flags & 1))
                if qos == 1:
                    self.out += p.ack_packet(p.PUBACK, pid)
                elif qos == 2:
                    self._qos2_in.add(pid)
                    self.out += p.ack_packet(p.PUBREC, pid)
            elif kind == p.PUBREL:
                pid = (buf[body] << 8) | buf[body + 1]
                self._qos2_in.discard(pid)
                self.out += p.ack_packet(p.PUBCOMP, pid)
            elif kind == p.SUBACK:
                on_suback = self._subscribing.pop((buf[body] << 8) | buf[body + 1], None)
                if on_suback is not None:
                    on_suback(p.suback_codes(buf, body, end, self.protocol))
            elif kind == p.CONNACK:
                fut = self._connack
                if fut is not None and not fut.done():
                    fut.set_result(p.parse_connack(bytes(buf[body:end]), self.protocol))
            elif kind == p.PINGRESP:
                self._ping_sent = 0.0
            elif kind == p.DISCONNECT:
                self.disconnect_reason = buf[body] if end > body else 0
        if freed and self.held:
            self._release_held()

    def _deliver(self, buf: bytearray, body: int, tlen: int, end: int, qos: int, retain: bool) -> None:
        assert self.on_message is not None
        i = body + 2 + tlen + (2 if qos else 0)
        if self.protocol == 5:
            length, i = p.read_varint(buf, i)
            i += length
        topic = bytes(buf[body + 2:body + 2 + tlen]).decode("utf-8", "replace")
        self.on_message(self, topic, bytes(buf[i:end]), qos, retain)

    def _refused(self, template: PublishTemplate, reason: int) -> None:
        self.stats.refused += 1
        if len(self.stats.refusals) < 5:
            name = reason_name(p.PUBACK, reason)
            self.stats.refusals.append(f"{self.client_id}: the broker refused a publish to {template.topic!r}: {name}")

    # -- the connection's end --------------------------------------------------------------------

    def keepalive_check(self, now: float) -> None:
        if not self.online or not self.keepalive:
            return
        if self._ping_sent and now - self._ping_sent > self.keepalive:
            self._lost(f"no answer to PINGREQ within {self.keepalive}s")
        elif now - max(self._last_write, self._last_read) >= self.keepalive / 2 and not self._ping_sent:
            self._ping_sent = now
            self.out += p.PINGREQ_PACKET
            self.flush()

    def _lost(self, why: str) -> None:
        was_online = self.online
        fut = self._connack
        self.close()
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionError(f"{self.transport.url}: {why}"))
        if was_online and self.on_lost is not None:
            self.on_lost(self, why)

    def close(self) -> None:
        """Drop the socket (no DISCONNECT); unacknowledged publishes stay for the next connect."""
        self.online = False
        self._ping_sent = 0.0
        sock, self.sock = self.sock, None
        self.group.connections.discard(self)
        if sock is not None:
            loop = self.group.loop
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            if self._writing:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_writer(sock.fileno())
            with contextlib.suppress(OSError):
                sock.close()
        self._writing = False
        self._ws = None

    def end(self) -> None:
        """Queue a DISCONNECT (the broker then drops the will) and close once the socket took it.
        The connection is offline at once; ``on_lost`` is not called for an end we asked for."""
        if self.sock is None or not self.online:
            self.close()
            return
        self.online = False
        self._ending = True
        self.out += p.DISCONNECT_PACKET
        self.flush()

    async def disconnect(self, timeout: float = 2.0) -> None:
        """Send what is queued and a DISCONNECT, wait (up to ``timeout``) until written, close."""
        if self.sock is not None and self.online:
            self.out += p.DISCONNECT_PACKET
            self.flush()
            deadline = time.monotonic() + timeout
            while self._wire and self.sock is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        self.close()
