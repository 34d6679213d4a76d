"""FastPublisher against a scripted broker in the test (a loopback asyncio server speaking just
enough MQTT): windows, bulk acknowledgements, QoS 2, refusals, resending after a reconnect, ws,
the will, subscriptions and messages received (what a simulated vehicle needs)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from ecokit.conformance import raw as mqtt_raw
from ecokit.mqtt import packets as p
from ecokit.mqtt.packets import PublishTemplate, Will
from ecokit.mqtt.publisher import ConnectRefused, FastPublisher, PublisherLoop, PublishStats, Transport

STAMP = struct.Struct("!IQ")


@dataclass
class Broker:
    """Records every packet; answers CONNECT and (unless ``hold_acks``) every publish."""

    receive_maximum: int = 65535
    connack_reason: int = 0
    hold_acks: bool = False
    puback_reason: int = 0
    websocket: bool = False
    publishes: list[tuple[int, int, bytes, bool]] = field(default_factory=list)  # (qos, pid, payload, dup)
    packets: list[int] = field(default_factory=list)
    connect_bodies: list[bytes] = field(default_factory=list)
    subscribed: list[bytes] = field(default_factory=list)  # SUBSCRIBE bodies
    acks_seen: list[tuple[int, int]] = field(default_factory=list)  # (type, packet id) of the client's acks
    connects: int = 0
    held: list[int] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def drop_connections(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        send: Callable[[bytes], None] = writer.write
        ws: p.WsReader | None = None
        if self.websocket:
            head = await reader.readuntil(b"\r\n\r\n")
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(key + p.WS_GUID).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            ws = p.WsReader(lambda op, data: None)

            def send(data: bytes) -> None:  # server frames are not masked
                writer.write(bytes((0x82, len(data))) + data if len(data) < 126 else
                             bytes((0x82, 126)) + len(data).to_bytes(2, "big") + data)
        buf = bytearray()
        protocol = 5
        while True:
            data = await reader.read(65536)
            if not data:
                return
            if ws is not None:
                ws.feed(data, buf)
            else:
                buf += data
            found, end = p.scan(buf)
            for kind, flags, body, stop in found:
                self.packets.append(kind)
                if kind == p.CONNECT:
                    self.connects += 1
                    self.connect_bodies.append(bytes(buf[body:stop]))
                    protocol = buf[body + 6]
                    props = b""
                    if protocol == 5:
                        props = b"\x03\x21" + struct.pack("!H", self.receive_maximum)
                    send(bytes((0x20, 2 + len(props), 0, self.connack_reason)) + props)
                elif kind == p.PUBLISH:
                    qos = (flags >> 1) & 3
                    tlen = struct.unpack_from("!H", buf, body)[0]
                    i = body + 2 + tlen
                    pid = 0
                    if qos:
                        pid = struct.unpack_from("!H", buf, i)[0]
                        i += 2
                    if protocol == 5:
                        i += 1
                    self.publishes.append((qos, pid, bytes(buf[i:stop]), bool(flags & 8)))
                    if qos and self.hold_acks:
                        self.held.append(pid)
                    elif qos == 1:
                        reason = bytes((self.puback_reason,)) if self.puback_reason else b""
                        send(bytes((0x40, 2 + len(reason))) + pid.to_bytes(2, "big") + reason)
                    elif qos == 2:
                        send(p.ack_packet(p.PUBREC, pid))
                elif kind == p.PUBREL:
                    send(p.ack_packet(p.PUBCOMP, struct.unpack_from("!H", buf, body)[0]))
                elif kind == p.PINGREQ:
                    send(b"\xd0\x00")
                elif kind == p.SUBSCRIBE:
                    self.subscribed.append(bytes(buf[body:stop]))
                    pid = struct.unpack_from("!H", buf, body)[0]
                    # Granted at QoS 1, except filters under denied/ (Not authorized).
                    i = body + 2 + (1 if protocol == 5 else 0)
                    codes = b""
                    while i < stop:
                        n = struct.unpack_from("!H", buf, i)[0]
                        topic = bytes(buf[i + 2:i + 2 + n])
                        codes += b"\x87" if topic.startswith(b"denied/") else b"\x01"
                        i += 3 + n
                    props = b"\x00" if protocol == 5 else b""
                    send(bytes((0x90, 2 + len(props) + len(codes))) + pid.to_bytes(2, "big") + props + codes)
                elif kind in (p.PUBACK, p.PUBREC, p.PUBCOMP):
                    self.acks_seen.append((kind, struct.unpack_from("!H", buf, body)[0]))
            del buf[:end]

    def push(self, data: bytes) -> None:
        """Send raw packets to every client."""
        for w in self.writers:
            w.write(data)

    def release(self) -> None:
        for w in self.writers:
            w.write(b"".join(p.ack_packet(p.PUBACK, pid) for pid in self.held))
        self.held.clear()


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def run(scenario: Callable[[Broker, PublisherLoop, int], object], broker: Broker | None = None) -> None:
    async def main() -> None:
        b = broker or Broker()
        port = await b.start()
        group = PublisherLoop(asyncio.get_running_loop(), misc_interval=0.05)
        group.start()
        try:
            await scenario(b, group, port)  # type: ignore[misc]
        finally:
            group.stop()
            await b.stop()

    asyncio.run(main())


def test_qos1_publishes_respect_the_brokers_receive_maximum_and_drain_in_bulk() -> None:
    async def scenario(broker: Broker, group: PublisherLoop, port: int) -> None:
        stats = PublishStats()
        conn = FastPublisher(group, Transport("127.0.0.1", port), client_id="c1", max_inflight=100, stats=stats)
        timing = await conn.connect()
        assert timing.tcp >= 0
        assert timing.connack > 0
        assert timing.tls == 0
        assert conn.window == 5  # the broker's Receive Maximum is smaller than ours
        template = PublishTemplate("t/1", bytes(40), qos=1, stamp_struct=STAMP)
        for seq in range(1, 21):
            assert conn.publish(template, (seq, 1000 + seq))
        await until(lambda: len(broker.publishes) == 5)
        await asyncio.sleep(0.05)
        assert len(broker.publishes) == 5
        assert len(conn.held) == 15
        for round_ in range(3):
            broker.release()
            wanted = 5 * (round_ + 2)
            await until(lambda: len(broker.publishes) >= wanted)  # noqa: B023 (awaited in this iteration)
        broker.hold_acks = False
        broker.release()
        await until(lambda: conn.unacknowledged == 0)
        assert [STAMP.unpack_from(payload)[0] for _, _, payload, _ in broker.publishes] == list(range(1, 21))
        assert stats.acked == 20
        assert len(stats.take_ack_latencies()) == 20
        assert stats.refused == 0
        await conn.disconnect()
        await until(lambda: broker.packets[-1] == p.DISCONNECT)

    run(scenario, Broker(receive_maximum=5, hold_acks=True))


def test_qos2_goes_through_pubrec_pubrel_pubcomp_and_qos0_needs_a_connection() -> None:
    async def scenario(broker: Broker, group: PublisherLoop, port: int) -> None:
        stats = PublishStats()
        conn = FastPublisher(group, Transport("127.0.0.1", port), client_id="c2", protocol=4, stats=stats)
        q0 = PublishTemplate("t/0", b"zero", qos=0, protocol=4)
        assert not conn.publish(q0)  # not connected: QoS 0 is not sent
        await conn.connect()
        q2 = PublishTemplate("t/2", b"two", qos=2, protocol=4)
        for _ in range(10):
            conn.publish(q2)
        assert conn.publish(q0)
        await until(lambda: stats.acked == 10)
        assert broker.packets.count(p.PUBREL) == 10
        assert not conn.inflight
        assert [q for q, *_ in broker.publishes].count(0) == 1
        await conn.disconnect()

    run(scenario)


def test_negative_acknowledgements_count_as_refused() -> None:
    async def scenario(broker: Broker, group: PublisherLoop, port: int) -> None:
        stats = PublishStats()
        conn = FastPublisher(group, Transport("127.0.0.1", port), client_id="c3", stats=stats)
        await conn.connect()
        conn.publish(PublishTemplate("secret/x", b"p", qos=1))
        await until(lambda: stats.acked == 1)
        assert stats.refused == 1
        assert stats.refusals == ["c3: the broker refused a publish to 'secret/x': Not authorized"]
        await conn.disconnect()

    run(scenario, Broker(puback_reason=0x87))


def test_a_refused_connect_raises_with_the_reason() -> None:
    async def scenario(broker: Broker, group: PublisherLoop, port: int) -> None:
        conn = FastPublisher(group, Transport("127.0.0.1", port), client_id="c4", username="dev")
        with pytest.raises(ConnectRefused, match="refused the connection of dev: Bad user name or password"):
            await conn.connect()
        assert not conn.online
        assert conn.sock is None

    run(scenario, Broker(connack_reason=0x86))


def test_unacknowledged_publishes_go_again_with_dup_after_a_reconnect() -> None:
    async def scenario(broker: Broker, group: PublisherLoop, port: int) -> None:
        lost: list[str] = []
        conn = FastPublisher(group, Transport("127.0.0.1", port), client_id="c5", max_inflight=3,
                             on_lost=lambda c, why: lost.append(why))
        await conn.connect()
        template = PublishTemplate("t/r", bytes(12), qos=1, stamp_struct=STAMP)
        for seq in range(1, 6):
            conn.publish(template, (seq, 0))
        await until(lambda: len(broker.publishes) == 3)
        broker.drop_connections()
        await until(lambda: bool(lost))
        assert not conn.online
        assert conn.unacknowledged == 5
        broker.hold_acks = False
        await conn.connect()
        await until(lambda: conn.unacknowledged == 0)
        resent = broker.publishes[3:]
        assert [(STAMP.unpack_from(x)[0], dup) for _, _, x, dup in resent] == \
            [(1, True), (2, True), (3, True), (4, False), (5, False)]
        assert [pid for _, pid, _, _ in resent[:3]] == [pid for _, pid, _, _ in broker.publishes[:3]]
        await conn.disconnect()

    run(scenario, Broker(hold_acks=True))


def test_publishing_over_websockets_frames_every_write() -> None:
    async def scenario(broker: Broker, group: PublisherLoop, port: int) -> None:
        stats = PublishStats()
        conn = FastPublisher(group, Transport("127.0.0.1", port, ws_path="/mqtt"), client_id="c6", stats=stats)
        timing = await conn.connect()
        assert timing.ws > 0
        template = PublishTemplate("t/ws", bytes(300), qos=1, stamp_struct=STAMP)
        for seq in range(1, 101):
            conn.publish(template, (seq, 0))
        await until(lambda: stats.acked == 100)
        assert [STAMP.unpack_from(x)[0] for _, _, x, _ in broker.publishes] == list(range(1, 101))
        await conn.disconnect()

    run(scenario, Broker(websocket=True))


def test_an_idle_connection_pings() -> None:
    async def scenario(broker: Broker, group: PublisherLoop, port: int) -> None:
        conn = FastPublisher(group, Transport("127.0.0.1", port), client_id="c7", keepalive=1)
        await conn.connect()
        await until(lambda: p.PINGREQ in broker.packets, timeout=3.0)
        await asyncio.sleep(0.1)
        assert conn.online
        await conn.disconnect()

    run(scenario)


def test_the_will_goes_with_every_connect_as_the_raw_client_encodes_it() -> None:
    for version in (4, 5):
        will = Will("fleet/v1/status", b'{"state":"offline"}', qos=1, retain=True)
        assert p.connect_packet("v1", protocol=version, clean_start=False, username="v1", password="pw",
                                will=will) == mqtt_raw.connect("v1", version=version, clean=False, username="v1",
                                                               password="pw", will=(will.topic, will.payload, 1, True))

    async def scenario(broker: Broker, group: PublisherLoop, port: int) -> None:
        conn = FastPublisher(group, Transport("127.0.0.1", port), client_id="v1", clean_start=False,
                             session_expiry=60, will=Will("s/v1", b"first", qos=1, retain=True))
        await conn.connect()
        conn.close()
        conn.will = Will("s/v1", b"second", qos=1, retain=True)  # a reconnect carries the will in force now
        await conn.connect()
        assert [body.endswith(payload) for body, payload in zip(broker.connect_bodies, (b"first", b"second"),
                                                                strict=True)] == [True, True]
        assert broker.connect_bodies[0][7] & 0x3E == 0x2C  # will, QoS 1, retain; no clean start
        conn.end()
        assert not conn.online
        await until(lambda: conn.sock is None)
        await until(lambda: broker.packets[-1] == p.DISCONNECT)

    run(scenario)


@pytest.mark.parametrize("protocol", [4, 5])
def test_subscriptions_are_answered_and_messages_received_at_every_qos(protocol: int) -> None:
    async def scenario(broker: Broker, group: PublisherLoop, port: int) -> None:
        got: list[tuple[str, bytes, int, bool]] = []
        answers: list[list[int]] = []
        conn = FastPublisher(group, Transport("127.0.0.1", port), client_id="v2", protocol=protocol,
                             on_message=lambda c, topic, payload, qos, retain: got.append((topic, payload, qos,
                                                                                           retain)))
        assert not conn.subscribe([("a/#", 1)])  # not connected: nothing sent
        await conn.connect()
        assert conn.subscribe([("cmd/v2", 1), ("denied/x", 1)], answers.append)
        await until(lambda: bool(answers))
        assert answers == [[0x01, 0x87]]
        props = b"\x00" if protocol == 5 else b""
        broker.push(mqtt_raw.publish("cmd/v2", b"zero", version=protocol, properties=props)
                    + mqtt_raw.publish("cmd/v2", b"one", qos=1, packet_id=7, version=protocol, properties=props)
                    + mqtt_raw.publish("cmd/v2", b"two", qos=2, packet_id=8, retain=True, version=protocol,
                                       properties=props))
        await until(lambda: len(got) == 3 and (p.PUBREC, 8) in broker.acks_seen)
        # A QoS 2 message sent again before its PUBREL (DUP) is acknowledged, not handed over twice.
        broker.push(mqtt_raw.publish("cmd/v2", b"two", qos=2, packet_id=8, retain=True, dup=True,
                                     version=protocol, properties=props))
        await until(lambda: broker.acks_seen.count((p.PUBREC, 8)) == 2)
        broker.push(p.ack_packet(p.PUBREL, 8))
        await until(lambda: (p.PUBCOMP, 8) in broker.acks_seen)
        assert got == [("cmd/v2", b"zero", 0, False), ("cmd/v2", b"one", 1, False), ("cmd/v2", b"two", 2, True)]
        assert (p.PUBACK, 7) in broker.acks_seen
        # After the PUBREL the packet id is free again: a new message with it is a new message.
        broker.push(mqtt_raw.publish("cmd/v2", b"again", qos=2, packet_id=8, version=protocol, properties=props))
        await until(lambda: len(got) == 4)
        await conn.disconnect()

    run(scenario)
