"""MQTT 3.1.1 and 5 packets for ecokit's fast paths (pure: bytes in, bytes out, no I/O).

The publish side encodes a PUBLISH once per topic, QoS and payload shape
(:class:`PublishTemplate`) and then, per message, appends those bytes to the connection's
output buffer and patches the packet id and the few payload bytes that change (a bench
message's sequence number and send time) in place: no per-message encoding, no property
objects. :func:`scan` splits a buffer of received bytes into complete packets in one pass,
so a read that brings hundreds of PUBACKs is handled in one call.

Websocket framing (RFC 6455, client side) is here too: :func:`ws_frame` masks a whole
write (any number of MQTT packets in one binary frame, which MQTT over websockets allows)
and :class:`WsReader` turns the server's frames back into the MQTT byte stream.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

# Packet types (the high nibble of the first byte).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

CONNACK_REASONS = {
    # MQTT 5 reason codes
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
    0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned", 0x8C: "bad authentication method",
    0x90: "topic name invalid", 0x95: "packet too large", 0x97: "quota exceeded",
    0x99: "payload format invalid", 0x9A: "retain not supported", 0x9B: "QoS not supported",
    0x9C: "use another server", 0x9D: "server moved", 0x9F: "connection rate exceeded",
}
# MQTT 3.1.1 CONNACK return codes
CONNACK_RETURN_CODES = {
    1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
    4: "bad user name or password", 5: "not authorized",
}
MAX_REMAINING_LENGTH = 268_435_455


def varint(value: int) -> bytes:
    """MQTT's variable byte integer (1 to 4 bytes)."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes | bytearray, i: int) -> tuple[int, int]:
    """(value, index after it); IndexError when the buffer ends inside it."""
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 21:
            raise ValueError("malformed variable byte integer (more than 4 bytes)")


def utf8(text: str | bytes) -> bytes:
    """A length-prefixed UTF-8 string (or binary data)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError(f"a string of {len(data)} bytes is longer than MQTT's 65,535")
    return struct.pack("!H", len(data)) + data


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for a client whose connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def connect_packet(client_id: str, *, protocol: int = 5, clean_start: bool = True, keepalive: int = 30,
                   username: str | None = None, password: str | None = None, session_expiry: int = 0,
                   receive_maximum: int = 65535, will: Will | None = None) -> bytes:
    """CONNECT for MQTT 5 (``protocol=5``, with session expiry and receive maximum) or 3.1.1 (4)."""
    if protocol not in (4, 5):
        raise ValueError(f"MQTT protocol level {protocol}: expected 4 (3.1.1) or 5")
    flags = 0x02 if clean_start else 0
    payload = utf8(client_id)
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise ValueError(f"will QoS {will.qos}: expected 0, 1 or 2")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += (b"\x00" if protocol == 5 else b"") + utf8(will.topic) + utf8(will.payload)
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += utf8(password)
    body = utf8("MQTT") + bytes((protocol, flags)) + struct.pack("!H", keepalive)
    if protocol == 5:
        props = b""
        if session_expiry:
            props += b"\x11" + struct.pack("!I", session_expiry)
        if receive_maximum != 65535:
            props += b"\x21" + struct.pack("!H", receive_maximum)
        body += varint(len(props)) + props
    return packet(0x10, body + payload)


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]], *, protocol: int = 5) -> bytes:
    """SUBSCRIBE of (filter, options) pairs; options = QoS (plus MQTT 5 option bits)."""
    body = struct.pack("!H", packet_id) + (b"\x00" if protocol == 5 else b"")
    body += b"".join(utf8(topic) + bytes((options,)) for topic, options in filters)
    return packet(0x82, body)


def ack_packet(kind: int, packet_id: int) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP with success (PUBREL carries the flags 0b0010)."""
    return bytes(((kind << 4) | (0x02 if kind == PUBREL else 0), 2)) + packet_id.to_bytes(2, "big")


@dataclass(frozen=True)
class Connack:
    session_present: bool
    reason: int  # 0 = accepted (a 3.1.1 return code or an MQTT 5 reason code)
    receive_maximum: int = 65535  # how many QoS 1/2 publishes the broker takes unacknowledged
    maximum_packet_size: int | None = None
    assigned_client_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.reason == 0

    def refusal(self, protocol: int) -> str:
        names = CONNACK_REASONS if protocol == 5 else CONNACK_RETURN_CODES
        return names.get(self.reason, f"reason {self.reason:#x}")


def parse_connack(body: bytes | bytearray, protocol: int) -> Connack:
    session, reason = bool(body[0] & 1), body[1]
    if protocol != 5 or len(body) < 3:
        return Connack(session, reason)
    length, i = read_varint(body, 2)
    end = i + length
    receive_max, max_packet, assigned = 65535, None, None
    while i < end:
        prop = body[i]
        i += 1
        if prop == 0x21:
            receive_max = struct.unpack_from("!H", body, i)[0]
            i += 2
        elif prop == 0x27:
            max_packet = struct.unpack_from("!I", body, i)[0]
            i += 4
        elif prop == 0x12:
            (n,) = struct.unpack_from("!H", body, i)
            assigned = bytes(body[i + 2:i + 2 + n]).decode("utf-8", "replace")
            i += 2 + n
        elif prop in (0x24, 0x25, 0x28, 0x29, 0x2A):  # one byte
            i += 1
        elif prop in (0x13, 0x22):  # two bytes
            i += 2
        elif prop == 0x11:  # four bytes
            i += 4
        elif prop in (0x1A, 0x1C, 0x1F, 0x15, 0x16):  # string / binary
            (n,) = struct.unpack_from("!H", body, i)
            i += 2 + n
        elif prop == 0x26:  # user property: two strings
            for _ in range(2):
                (n,) = struct.unpack_from("!H", body, i)
                i += 2 + n
        else:
            break  # an unknown property: what we know so far stands
    return Connack(session, reason, receive_max or 65535, max_packet, assigned)


# -- PUBLISH, encoded once ------------------------------------------------------------------------


class PublishTemplate:
    """A PUBLISH for one topic, QoS and payload, encoded once and written many times.

    ``packet`` holds the whole packet with packet id 0; :meth:`write` appends it to a buffer
    and patches the packet id there (QoS 1/2); :meth:`stamp` then packs the values that change
    per message with ``stamp_struct`` at ``stamp_offset`` bytes into the payload (a bench
    message's sequence number and send time). Payloads that differ in length per message use
    :meth:`write_payload` (the topic part is still encoded only once).
    """

    __slots__ = ("_head", "_stamp_at", "_topic_length", "first", "packet", "payload_offset", "pid_offset",
                 "protocol", "qos", "retain", "stamp_offset", "stamp_struct", "topic")

    def __init__(self, topic: str, payload: bytes = b"", *, qos: int = 0, retain: bool = False,
                 protocol: int = 5, stamp_struct: struct.Struct | None = None, stamp_offset: int = 0) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS {qos}: expected 0, 1 or 2")
        self.topic = topic
        self.qos = qos
        self.retain = retain
        self.protocol = protocol
        self.first = 0x30 | (qos << 1) | (1 if retain else 0)
        # Variable header: topic, packet id (QoS > 0), properties (MQTT 5: none, one zero byte).
        self._head = utf8(topic) + (b"\x00\x00" if qos else b"") + (b"\x00" if protocol == 5 else b"")
        body_length = len(self._head) + len(payload)
        fixed = bytes((self.first,)) + varint(body_length)
        self.packet = fixed + self._head + payload
        self._topic_length = len(utf8(topic))
        self.pid_offset = len(fixed) + self._topic_length if qos else -1
        self.payload_offset = len(fixed) + len(self._head)
        self.stamp_struct = stamp_struct
        self.stamp_offset = stamp_offset
        self._stamp_at = self.payload_offset + stamp_offset
        if stamp_struct is not None and stamp_offset + stamp_struct.size > len(payload):
            raise ValueError(f"the stamp ({stamp_struct.size} bytes at {stamp_offset}) does not fit a payload of "
                             f"{len(payload)} bytes")

    def write(self, out: bytearray, packet_id: int = 0) -> int:
        """Append the packet to ``out`` (with ``packet_id`` at QoS 1/2); returns where it starts."""
        start = len(out)
        out += self.packet
        if self.qos:
            out[start + self.pid_offset] = packet_id >> 8
            out[start + self.pid_offset + 1] = packet_id & 0xFF
        return start

    def stamp(self, out: bytearray, start: int, values: tuple[object, ...]) -> None:
        """Pack ``values`` into the payload of the packet written at ``start``."""
        assert self.stamp_struct is not None, "this template has no stamp"
        self.stamp_struct.pack_into(out, start + self._stamp_at, *values)

    def write_payload(self, out: bytearray, payload: bytes, packet_id: int = 0) -> int:
        """Append a PUBLISH of this topic with another payload; returns where it starts."""
        start = len(out)
        out.append(self.first)
        out += varint(len(self._head) + len(payload))
        head_at = len(out)
        out += self._head
        if self.qos:
            at = head_at + self._topic_length
            out[at] = packet_id >> 8
            out[at + 1] = packet_id & 0xFF
        out += payload
        return start

    @staticmethod
    def mark_duplicate(data: bytearray | bytes) -> bytes:
        """The same packet with the DUP flag set (a QoS 1/2 publish sent again after a reconnect)."""
        return bytes((data[0] | 0x08,)) + bytes(data[1:])


# -- receiving --------------------------------------------------------------------------------------

# One packet found by scan(): (type, flags, start of its body, end of its body) within the buffer.
Found = tuple[int, int, int, int]


def scan(buf: bytes | bytearray, start: int = 0) -> tuple[list[Found], int]:
    """Every complete packet in ``buf[start:]``; returns them and where the incomplete rest begins."""
    n = len(buf)
    pos = start
    found: list[Found] = []
    append = found.append
    while n - pos >= 2:
        first = buf[pos]
        byte = buf[pos + 1]
        if byte < 0x80:  # most packets: a one-byte remaining length
            i = pos + 2
            end = i + byte
        else:
            try:
                length, i = read_varint(buf, pos + 1)
            except IndexError:
                break
            end = i + length
        if end > n:
            break
        append((first >> 4, first & 0x0F, i, end))
        pos = end
    return found, pos


def ack_reason(buf: bytes | bytearray, body: int, end: int) -> int:
    """The reason code of a PUBACK/PUBREC/PUBREL/PUBCOMP (0 when the packet has none: success)."""
    return buf[body + 2] if end - body > 2 else 0


def suback_codes(buf: bytes | bytearray, body: int, end: int, protocol: int) -> list[int]:
    i = body + 2
    if protocol == 5:
        length, i = read_varint(buf, i)
        i += length
    return list(buf[i:end])


# -- websockets (client side) -------------------------------------------------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_handshake_request(host: str, port: int, path: str, key: bytes, *, tls: bool) -> bytes:
    default = 443 if tls else 80
    host_port = host if port == default else f"{host}:{port}"
    return (f"GET {path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode('ascii')}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: mqtt\r\n\r\n").encode("ascii")


def ws_new_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def ws_check_response(head: bytes, key: bytes) -> str | None:
    """Why the server's answer to the upgrade is not acceptable, or None."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        return f"the server answered the websocket upgrade with {lines[0]!r}"
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    expected = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode("ascii")  # SHA-1: what RFC 6455 prescribes
    if headers.get("sec-websocket-accept") != expected:
        return "the server's Sec-WebSocket-Accept does not match the key sent"
    protocol = headers.get("sec-websocket-protocol")
    if protocol is not None and protocol.lower() != "mqtt":
        return f"the server chose the websocket subprotocol {protocol!r}, not mqtt"
    return None


def ws_mask(data: bytes | bytearray, key: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte key, computed on whole integers (fast for large writes)."""
    n = len(data)
    if not n:
        return b""
    pattern = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pattern, "little")).to_bytes(n, "little")


def ws_frame(data: bytes | bytearray, opcode: int = 0x2, key: bytes | None = None) -> bytes:
    """One final, masked client frame (binary by default) carrying ``data``."""
    key = key if key is not None else os.urandom(4)
    n = len(data)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + ws_mask(data, key)


class WsReader:
    """Server frames in, the MQTT byte stream out; control frames handed to ``on_control``."""

    def __init__(self, on_control: Callable[[int, bytes], None]) -> None:
        self._buf = bytearray()
        self.on_control = on_control
        self.closed = False

    def feed(self, data: bytes | bytearray | memoryview, out: bytearray) -> None:
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            i = pos + 2
            if length == 126:
                if n - i < 2:
                    break
                length = int.from_bytes(buf[i:i + 2], "big")
                i += 2
            elif length == 127:
                if n - i < 8:
                    break
                length = int.from_bytes(buf[i:i + 8], "big")
                i += 8
            key = None
            if b1 & 0x80:  # a server must not mask, but unmasking costs nothing to support
                if n - i < 4:
                    break
                key = bytes(buf[i:i + 4])
                i += 4
            if n - i < length:
                break
            payload = bytes(buf[i:i + length])
            if key is not None:
                payload = ws_mask(payload, key)
            opcode = b0 & 0x0F
            if opcode in (0x0, 0x1, 0x2):
                out += payload
            else:
                if opcode == 0x8:
                    self.closed = True
                self.on_control(opcode, payload)
            pos = i + length
        del buf[:pos]
