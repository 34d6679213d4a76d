"""Hand-built MQTT packets for the checks a well-behaved client library cannot make.

A second CONNECT, an unknown protocol level, a PUBLISH that is never acknowledged, a
QoS 2 duplicate: paho refuses or hides these, so the suite writes the bytes itself.
Works over tcp, tls, ws and wss (websockets through paho's own wrapper). Every read has
a deadline.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from dataclasses import dataclass

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + varint(len(body)) + body


def props(packet_type: int, **values: object) -> bytes:
    """An MQTT 5 property block (length prefix included) from paho's property names."""
    p = Properties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(p, name, value)
    return bytes(p.pack())  # type: ignore[no-untyped-call]


def connect(client_id: str, *, version: int = 4, clean: bool = True, keepalive: int = 30,
            username: str | None = None, password: str | None = None,
            protocol_name: bytes = b"MQTT", properties: bytes = b"\x00",
            will: tuple[str, bytes, int, bool] | None = None) -> bytes:
    flags = 0x02 if clean else 0
    if will is not None:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = utf8(protocol_name) + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        body += properties
    body += utf8(client_id)
    if will is not None:
        if version == 5:
            body += b"\x00"
        body += utf8(will[0]) + utf8(will[1])
    if username is not None:
        body += utf8(username)
    if password is not None:
        body += utf8(password)
    return packet(CONNECT, 0, body)


def publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0, retain: bool = False,
            dup: bool = False, version: int = 4, properties: bytes = b"\x00") -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = utf8(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if version == 5:
        body += properties
    return packet(PUBLISH, flags, body + payload)


def subscribe(packet_id: int, filters: list[tuple[str, int]], *, version: int = 4) -> bytes:
    body = struct.pack("!H", packet_id) + (b"\x00" if version == 5 else b"")
    for topic, options in filters:
        body += utf8(topic) + bytes([options])
    return packet(SUBSCRIBE, 0x02, body)


def ack(kind: int, packet_id: int) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP (PUBREL carries flags 0b0010)."""
    return packet(kind, 0x02 if kind == PUBREL else 0, struct.pack("!H", packet_id))


def disconnect() -> bytes:
    return packet(DISCONNECT, 0, b"")


@dataclass(frozen=True)
class Packet:
    kind: int
    flags: int
    body: bytes

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 0x03

    def packet_id(self) -> int:
        """Of a PUBLISH with QoS > 0, or of any ack."""
        if self.kind == PUBLISH:
            (length,) = struct.unpack("!H", self.body[:2])
            return int(struct.unpack("!H", self.body[2 + length:4 + length])[0])
        return int(struct.unpack("!H", self.body[:2])[0])

    def topic(self) -> str:
        (length,) = struct.unpack("!H", self.body[:2])
        return self.body[2:2 + length].decode()

    def payload(self, version: int = 4) -> bytes:
        (length,) = struct.unpack("!H", self.body[:2])
        pos = 2 + length + (2 if self.qos else 0)
        if version == 5:
            size, used = decode_varint(self.body, pos)
            pos += used + size
        return self.body[pos:]

    def reason(self) -> int:
        """CONNACK return/reason code; DISCONNECT reason (0 when absent)."""
        if self.kind == CONNACK:
            return self.body[1]
        if self.kind == DISCONNECT:
            return self.body[0] if self.body else 0
        raise ValueError(f"packet type {self.kind} has no single reason code here")


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift, used = 0, 0, 0
    while True:
        byte = data[pos + used]
        used += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, used


class RawConnection:
    """One socket to the broker speaking hand-built packets."""

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                 websocket_path: str | None = None, timeout: float = 5.0) -> None:
        sock: socket.socket = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self._io: object = sock
        if websocket_path is not None:
            from paho.mqtt.client import _WebsocketWrapper

            self._io = _WebsocketWrapper(sock, host, port, tls is not None, websocket_path, None)
        self._buffer = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        if isinstance(self._io, socket.socket):
            self._io.sendall(data)
        else:
            self._io.send(data)  # type: ignore[attr-defined]  # paho's websocket wrapper frames it whole

    def _read_some(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk: bytes = self._io.recv(65536)  # type: ignore[attr-defined]
        except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
            return False
        except (ConnectionError, ssl.SSLError, OSError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self._buffer += chunk
        return True

    def _take(self) -> Packet | None:
        if len(self._buffer) < 2:
            return None
        try:
            length, used = decode_varint(self._buffer, 1)
        except IndexError:
            return None
        end = 1 + used + length
        if len(self._buffer) < end:
            return None
        header = self._buffer[0]
        body = self._buffer[1 + used:end]
        self._buffer = self._buffer[end:]
        return Packet(header >> 4, header & 0x0F, body)

    def read(self, timeout: float = 5.0) -> Packet | None:
        """The next packet; None when the broker closed the connection. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._take()
            if got is not None:
                return got
            if self.eof:
                return None
            if not self._read_some(deadline) and not self.eof and time.monotonic() >= deadline:
                raise TimeoutError(f"no packet within {timeout}s")

    def expect(self, kind: int, timeout: float = 5.0) -> Packet:
        got = self.read(timeout)
        if got is None:
            raise AssertionError(f"the broker closed the connection instead of sending packet type {kind}")
        if got.kind != kind:
            raise AssertionError(f"expected packet type {kind}, got {got.kind}")
        return got

    def closed_within(self, timeout: float) -> tuple[bool, list[Packet]]:
        """Whether the broker closes the connection within ``timeout``; packets seen before."""
        seen: list[Packet] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self.read(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            if got is None:
                return True, seen
            seen.append(got)
        return False, seen

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["PacketTypes", "RawConnection"]
