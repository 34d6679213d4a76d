"""A minimal MQTT 5 client for ecokit's high-rate paths: the intake of the bridge and of the
fleet processor, replay and the bench subscribers.

paho-mqtt handles one packet per loop turn (a ``select``, several small ``recv`` calls and
one ``send`` per QoS 1 acknowledgement, plus MQTT 5 property objects). Measured here it
drains about 19,000 QoS 1 messages/s with an empty callback, below what the bridge and
replay must sustain (benchmarks/README.md, "paho receive rate"). This client reads the
socket in large chunks, parses every complete packet in one pass, and sends
acknowledgements and publishes in batches. Everything else in ecokit uses paho.

What it does: CONNECT (username/password, TLS, session expiry), SUBSCRIBE with MQTT 5
options (retain-as-published, retain handling, no-local), receiving PUBLISH at QoS 0/1,
batched PUBACK, publishing at QoS 0/1 with a window of unacknowledged messages, PINGREQ.
It does not do QoS 2, topic aliases, AUTH or will messages. One thread uses a connection.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ecokit.errors import BrokerError
from ecokit.mqtt.packets import CONNACK_REASONS, packet, read_varint, utf8, varint

# The encoding primitives are shared with the publish path (ecokit.mqtt.packets).
_varint, _str, _packet = varint, utf8, packet


@dataclass(frozen=True, slots=True)
class Subscription:
    topic: str
    qos: int = 1
    no_local: bool = False
    retain_as_published: bool = True
    retain_handling: int = 0  # 0: send retained on subscribe, 1: only for a new subscription, 2: never

    def options(self) -> int:
        return (self.qos | (4 if self.no_local else 0) | (8 if self.retain_as_published else 0)
                | (self.retain_handling << 4))


# A received PUBLISH: (topic, payload, qos, retain, packet id or 0).
Received = tuple[str, bytes, int, bool, int]


class FastMqtt:
    """One MQTT 5 connection, driven by one thread."""

    def __init__(self, host: str, port: int, *, client_id: str, username: str | None = None,
                 password: str | None = None, tls: ssl.SSLContext | None = None, keepalive: int = 30,
                 clean_start: bool = True, session_expiry: int = 0, receive_maximum: int = 65535,
                 read_size: int = 262_144) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.username, self.password = username, password
        self.tls = tls
        self.keepalive = keepalive
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        self.read_size = read_size
        self.sock: socket.socket | None = None
        self._buf = bytearray()
        self._view: memoryview | None = None  # the read buffer
        self._out = bytearray()
        self._last_sent = 0.0
        self._next_id = 0
        self._inflight: OrderedDict[int, bytes] = OrderedDict()  # our QoS 1 publishes awaiting PUBACK
        self._acks: dict[int, list[int]] = {}  # SUBACK results by packet id
        self.send_quota = 65535  # the broker's Receive Maximum
        self.session_present = False
        self.disconnect_reason: int | None = None
        self._pending_publishes: list[Received] = []  # publishes read while waiting for a SUBACK

    # -- connection -----------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> bool:
        """Connect and wait for CONNACK; returns session_present. Raises BrokerError on refusal."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock
        self._buf.clear()
        self._out.clear()
        flags = 0x02 if self.clean_start else 0
        payload = _str(self.client_id)
        if self.username is not None:
            flags |= 0x80
            payload += _str(self.username)
        if self.password is not None:
            flags |= 0x40
            payload += _str(self.password)
        props = b"\x11" + struct.pack("!I", self.session_expiry) + b"\x21" + struct.pack("!H", self.receive_maximum)
        body = _str("MQTT") + bytes((5, flags)) + struct.pack("!H", self.keepalive) + _varint(len(props)) + props
        self._send_now(_packet(0x10, body + payload))
        deadline = time.monotonic() + timeout
        while True:
            packet = self._read_control(deadline)
            if packet is None:
                raise BrokerError(f"no CONNACK from {self.host}:{self.port} within {timeout:g}s")
            ptype, reply = packet
            if ptype != 2:
                raise BrokerError(f"{self.host}:{self.port} answered CONNECT with packet type {ptype}")
            reason = reply[1]
            if reason >= 0x80:
                self.close()
                raise BrokerError(f"{self.host}:{self.port} refused the connection of {self.username or 'anonymous'}: "
                                  f"{CONNACK_REASONS.get(reason, hex(reason))}")
            self.session_present = bool(reply[0] & 1)
            self._parse_connack_props(bytes(reply[2:]))
            # Publishes of the previous connection that were never acknowledged go again.
            for packet_bytes in self._inflight.values():
                self._out += bytes((packet_bytes[0] | 0x08,)) + packet_bytes[1:]
            self.flush()
            return self.session_present

    def _parse_connack_props(self, data: bytes) -> None:
        length, i = read_varint(data, 0)
        end = i + length
        while i < end:
            prop = data[i]
            i += 1
            if prop == 0x21:
                self.send_quota = struct.unpack_from("!H", data, i)[0]
                i += 2
            elif prop in (0x24, 0x25, 0x28, 0x29, 0x2A):  # one byte
                i += 1
            elif prop in (0x13, 0x22):  # two bytes
                i += 2
            elif prop in (0x11, 0x27):  # four bytes
                i += 4
            elif prop in (0x12, 0x1A, 0x1C, 0x1F, 0x15, 0x16):  # strings / binary
                (n,) = struct.unpack_from("!H", data, i)
                i += 2 + n
            elif prop == 0x26:  # user property: two strings
                for _ in range(2):
                    (n,) = struct.unpack_from("!H", data, i)
                    i += 2 + n
            else:
                return

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def disconnect(self) -> None:
        if self.sock is not None:
            try:
                self.flush()
                self._send_now(b"\xe0\x00")
            except OSError:
                pass
        self.close()

    # -- sending --------------------------------------------------------------------

    def _send_now(self, data: bytes) -> None:
        assert self.sock is not None, "not connected"
        self.sock.sendall(data)
        self._last_sent = time.monotonic()

    def flush(self) -> None:
        """Send everything queued (acknowledgements, publishes) in one write."""
        if self._out:
            data = bytes(self._out)
            self._out.clear()
            self._send_now(data)

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight and self._next_id not in self._acks:
                return self._next_id
        raise BrokerError("no free packet id: 65535 publishes await acknowledgement")

    def subscribe(self, subscriptions: Sequence[Subscription], timeout: float = 10.0) -> list[int]:
        """Subscribe and wait for SUBACK; returns the reason codes (>= 0x80 is a refusal)."""
        pid = self._packet_id()
        self._acks[pid] = []
        body = struct.pack("!H", pid) + b"\x00" + b"".join(_str(s.topic) + bytes((s.options(),))
                                                            for s in subscriptions)
        self.flush()
        self._send_now(_packet(0x82, body))
        return self._await_ack(pid, timeout, "SUBACK")

    def _await_ack(self, pid: int, timeout: float, what: str) -> list[int]:
        """Wait for the SUBACK/UNSUBACK of ``pid``; publishes arriving meanwhile are kept for ``read``."""
        deadline = time.monotonic() + timeout
        while True:
            self._pending_publishes.extend(self._parse())
            if self._acks.get(pid):
                return self._acks.pop(pid)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._acks.pop(pid, None)
                raise BrokerError(f"no {what} from {self.host}:{self.port} within {timeout:g}s")
            self._recv(min(remaining, 0.1))

    def unsubscribe(self, topics: Sequence[str], timeout: float = 10.0) -> list[int]:
        pid = self._packet_id()
        self._acks[pid] = []
        body = struct.pack("!H", pid) + b"\x00" + b"".join(_str(t) for t in topics)
        self.flush()
        self._send_now(_packet(0xA2, body))
        return self._await_ack(pid, timeout, "UNSUBACK")

    def ack(self, packet_ids: Iterable[int]) -> None:
        """Queue PUBACKs (sent by the next flush)."""
        out = self._out
        for pid in packet_ids:
            out += b"\x40\x02" + pid.to_bytes(2, "big")

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue a publish; QoS 1 ones count against the window until their PUBACK."""
        first = 0x30 | (qos << 1) | (1 if retain else 0)
        topic_bytes = topic.encode("utf-8")
        if qos:
            pid = self._packet_id()
            body = (len(topic_bytes).to_bytes(2, "big") + topic_bytes + pid.to_bytes(2, "big") + b"\x00" + payload)
            packet = _packet(first, body)
            self._inflight[pid] = packet
        else:
            packet = _packet(first, len(topic_bytes).to_bytes(2, "big") + topic_bytes + b"\x00" + payload)
        self._out += packet

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def ping_if_due(self) -> None:
        if self.sock is not None and time.monotonic() - self._last_sent > self.keepalive / 2:
            self.flush()
            self._send_now(b"\xc0\x00")

    # -- receiving ------------------------------------------------------------------

    def _recv(self, timeout: float) -> bool:
        assert self.sock is not None, "not connected"
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            timeout = 0.0
        self.sock.settimeout(timeout if timeout > 0 else 0.0)
        if self._view is None:  # recv_into one buffer: recv(256 KiB) allocates that much per read
            self._view = memoryview(bytearray(self.read_size))
        try:
            n = self.sock.recv_into(self._view)
        except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
            return False
        if not n:
            raise ConnectionError(f"{self.host}:{self.port} closed the connection"
                                  + (f" (reason {self.disconnect_reason:#x})" if self.disconnect_reason else ""))
        self._buf += self._view[:n]
        return True

    def _read_control(self, deadline: float) -> tuple[int, bytearray] | None:
        """The next packet while connecting (before any publish flows)."""
        while True:
            packet = self._take_packet()
            if packet is not None:
                return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._recv(remaining)

    def _take_packet(self) -> tuple[int, bytearray] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        try:
            length, i = read_varint(buf, 1)
        except IndexError:
            return None
        if len(buf) < i + length:
            return None
        packet = (buf[0] >> 4, buf[i:i + length])
        del buf[:i + length]
        return packet

    def read(self, timeout: float) -> list[Received]:
        """Wait up to ``timeout`` for data; return every complete PUBLISH received.

        Control packets (PUBACK for our publishes, SUBACK, PINGRESP, DISCONNECT) are handled here.
        """
        if self._pending_publishes:
            stashed, self._pending_publishes = self._pending_publishes, []
            return stashed
        # What is already buffered first (e.g. publishes that came with the CONNACK).
        if self._buf:
            out = self._parse()
            if out:
                return out
        if not self._recv(timeout):
            return []
        return self._parse()

    def _parse(self) -> list[Received]:
        """Every complete packet in the buffer: publishes returned, control packets handled."""
        buf = self._buf
        n = len(buf)
        pos = 0
        out: list[Received] = []
        inflight = self._inflight
        while n - pos >= 2:
            first = buf[pos]
            # remaining length: a variable byte integer of 1 to 4 bytes
            i = pos + 1
            length = shift = 0
            complete = False
            while i < n:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if byte < 0x80:
                    complete = True
                    break
                shift += 7
            if not complete:
                break
            end = i + length
            if end > n:
                break
            ptype = first >> 4
            if ptype == 3:
                tlen = (buf[i] << 8) | buf[i + 1]
                j = i + 2 + tlen
                topic = buf[i + 2:j].decode("utf-8", "replace")
                qos = (first >> 1) & 3
                pid = 0
                if qos:
                    pid = (buf[j] << 8) | buf[j + 1]
                    j += 2
                plen = buf[j]
                if plen < 0x80:
                    j += 1 + plen
                else:
                    plen, j = read_varint(buf, j)
                    j += plen
                out.append((topic, bytes(buf[j:end]), qos, bool(first & 1), pid))
            elif ptype == 4:  # PUBACK for one of ours
                inflight.pop((buf[i] << 8) | buf[i + 1], None)
            elif ptype in (9, 11):  # SUBACK / UNSUBACK: pid, properties, reason codes
                pid = (buf[i] << 8) | buf[i + 1]
                plen, k = read_varint(buf, i + 2)
                self._acks[pid] = list(buf[k + plen:end])
            elif ptype == 14:  # DISCONNECT from the server
                self.disconnect_reason = buf[i] if length else 0
            pos = end
        del buf[:pos]
        return out


def subscribe_or_fail(mqtt: FastMqtt, subscriptions: Sequence[Subscription], username: str) -> None:
    """Subscribe; BrokerError naming the refused filters (and whose ACL to check)."""
    codes = mqtt.subscribe(subscriptions)
    refused = [s.topic for s, c in zip(subscriptions, codes, strict=False) if c >= 0x80]
    if refused:
        raise BrokerError(f"the broker refused the subscription to {', '.join(refused)} "
                          f"(reason {codes[0]:#x}); check the ACL of {username}")


def keep_connected(mqtt: FastMqtt, stop: threading.Event, *, connect: Callable[[], None],
                   consume: Callable[[threading.Event], None], lost: Callable[[Exception], None]) -> None:
    """``connect`` (connect and subscribe), then ``consume`` until ``stop``; after a lost or
    refused connection ``lost(error)``, then again, waiting 0.5 s doubling to 10 s. The
    connection is closed when this returns."""
    backoff = 0.5
    try:
        while not stop.is_set():
            try:
                connect()
                backoff = 0.5
                consume(stop)
            except (OSError, ConnectionError, BrokerError) as exc:
                mqtt.close()
                if stop.is_set():
                    break
                lost(exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
    finally:
        mqtt.disconnect()
