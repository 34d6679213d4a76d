"""fastmqtt's packet parsing, fed through a socket pair (the broker side is scripted)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from ecokit.mqtt.fast import FastMqtt, Subscription, _packet, _str, _varint


def publish(topic: str, payload: bytes, qos: int = 0, pid: int = 0, retain: bool = False,
            props: bytes = b"") -> bytes:
    body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + _varint(len(props)) + props + payload
    return _packet(0x30 | (qos << 1) | (1 if retain else 0), body)


@pytest.fixture
def pair() -> Iterator[tuple[FastMqtt, socket.socket]]:
    ours, broker = socket.socketpair()
    client = FastMqtt("test", 0, client_id="t", read_size=7)  # tiny reads split packets
    client.sock = ours
    try:
        yield client, broker
    finally:
        client.close()
        broker.close()


def test_publishes_split_across_reads_are_reassembled(pair: tuple[FastMqtt, socket.socket]) -> None:
    client, broker = pair
    big = bytes(range(256)) * 600  # a remaining length of three bytes
    stream = (publish("a/b", b"one", 1, 7) + publish("c", big, 0, retain=True)
              + publish("d/é", b"", 1, 65535, props=b"\x01\x01"))
    broker.sendall(stream)
    got = []
    for _ in range(len(stream)):
        got += client.read(0.5)
        if len(got) == 3:
            break
    assert got == [("a/b", b"one", 1, False, 7), ("c", big, 0, True, 0), ("d/é", b"", 1, False, 65535)]


def test_acks_and_publishes_go_out_in_one_write(pair: tuple[FastMqtt, socket.socket]) -> None:
    client, broker = pair
    client.ack([1, 258])
    client.publish("x/y", b"p", qos=1)
    client.publish("z", b"q", qos=0, retain=True)
    client.flush()
    data = broker.recv(1000)
    assert data[:8] == b"\x40\x02\x00\x01\x40\x02\x01\x02"
    assert data[8:] == _packet(0x32, _str("x/y") + b"\x00\x01\x00p") + _packet(0x31, _str("z") + b"\x00q")
    assert client.inflight == 1
    broker.sendall(b"\x40\x02\x00\x01")  # PUBACK for packet 1
    assert client.read(0.5) == []
    assert client.inflight == 0


def test_publishes_buffered_with_an_earlier_packet_are_not_left_waiting(pair: tuple[FastMqtt, socket.socket]) -> None:
    client, broker = pair
    client.read_size = 1 << 16
    # A CONNACK and queued publishes arrive in one segment; connect() consumes only the CONNACK.
    broker.sendall(b"\x20\x03\x01\x00\x00" + publish("q/1", b"a", 1, 1) + publish("q/2", b"b", 1, 2))
    packet = client._read_control(time.monotonic() + 1)
    assert packet is not None
    assert packet[0] == 2
    got = client.read(0.1)  # nothing more arrives on the socket
    assert [m[0] for m in got] == ["q/1", "q/2"]


def test_publishes_before_the_suback_are_kept_for_read(pair: tuple[FastMqtt, socket.socket]) -> None:
    client, broker = pair
    client.read_size = 1 << 16
    # Queued publishes of a persistent session arrive before the SUBACK of a new SUBSCRIBE.
    broker.sendall(publish("q/1", b"a", 1, 1) + publish("q/2", b"b", 1, 2))
    threading.Timer(0.2, lambda: broker.sendall(b"\x90\x04\x00\x01\x00\x01" + publish("q/3", b"c", 1, 3))).start()
    codes = client.subscribe([Subscription("q/#", 1)], timeout=5)
    assert codes == [1]
    got = client.read(0.1) + client.read(0.5)
    assert [m[0] for m in got] == ["q/1", "q/2", "q/3"]
