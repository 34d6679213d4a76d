"""The pre-encoded packets of the fast publish path, decoded by paho-mqtt's own reader and by the
conformance suite's raw client (two independent decoders)."""

from __future__ import annotations

import contextlib
import socket
import struct

import paho.mqtt.client as mqtt
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from ecokit.conformance import raw as mqtt_raw
from ecokit.mqtt import packets as p
from ecokit.mqtt.packets import PublishTemplate

topics = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1,
                 max_size=80)
# Small ones, and ones around 16 KiB (a remaining length of three bytes): patterned, so that
# hypothesis does not spend its entropy budget on random kilobytes.
payloads = st.one_of(st.binary(max_size=300),
                     st.integers(16_380, 16_400).map(lambda n: bytes(i % 251 for i in range(n))))


def paho_decode(data: bytes, protocol: int) -> tuple[list[tuple[str, bytes, int, bool, int, bool]], bytes]:
    """Feed ``data`` to a paho client as if the broker sent it; returns the messages and what paho answered."""
    ours, theirs = socket.socketpair()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="decoder",
                         protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311)
    got: list[tuple[str, bytes, int, bool, int, bool]] = []
    client.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload), m.qos, bool(m.retain), m.mid,
                                                     bool(m.dup)))
    client._sock = ours  # type: ignore[assignment]
    ours.settimeout(2.0)  # a decoder that waits for more bytes fails the test instead of hanging it
    theirs.settimeout(0.5)
    try:
        theirs.sendall(data)
        answer = b""
        for _ in range(50):
            assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
            if got:
                break
            if (data[0] >> 1) & 3 == 2 and not answer:  # QoS 2: paho delivers after our PUBREL
                answer = theirs.recv(4)
                theirs.sendall(p.ack_packet(p.PUBREL, int.from_bytes(answer[2:4], "big")))
        if not answer:
            with contextlib.suppress(TimeoutError):
                answer = theirs.recv(100)
        return got, answer
    finally:
        client._sock = None
        ours.close()
        theirs.close()


@settings(max_examples=25, deadline=None)
@given(topic=topics, payload=payloads, qos=st.sampled_from([0, 1, 2]), retain=st.booleans(),
       protocol=st.sampled_from([4, 5]), pid=st.integers(1, 65535))
def test_a_template_written_with_a_packet_id_is_what_paho_reads(topic: str, payload: bytes, qos: int, retain: bool,
                                                                 protocol: int, pid: int) -> None:
    template = PublishTemplate(topic, payload, qos=qos, retain=retain, protocol=protocol)
    out = bytearray(b"junk")
    start = template.write(out, pid)
    assert start == 4
    got, answer = paho_decode(bytes(out[start:]), protocol)
    assert got == [(topic, payload, qos, retain, pid if qos else 0, False)]
    if qos == 1:
        assert answer[:4] == p.ack_packet(p.PUBACK, pid)
    elif qos == 2:
        assert answer[:4] == p.ack_packet(p.PUBREC, pid)


@settings(max_examples=20, deadline=None)
@given(topic=topics, first=payloads, second=payloads, qos=st.sampled_from([0, 1, 2]),
       protocol=st.sampled_from([4, 5]), pid=st.integers(1, 65535))
def test_another_payload_on_a_template_decodes_in_both_decoders(topic: str, first: bytes, second: bytes, qos: int,
                                                                protocol: int, pid: int) -> None:
    template = PublishTemplate(topic, first, qos=qos, protocol=protocol)
    out = bytearray()
    template.write_payload(out, second, pid)
    got, _ = paho_decode(bytes(out), protocol)
    assert got == [(topic, second, qos, False, pid if qos else 0, False)]
    found, end = p.scan(out)
    assert end == len(out)
    kind, flags, body, stop = found[0]
    packet = mqtt_raw.Packet(kind, flags, bytes(out[body:stop]))
    assert (packet.topic(), packet.payload(protocol), packet.qos) == (topic, second, qos)
    if qos:
        assert packet.packet_id() == pid


@settings(max_examples=20, deadline=None)
@given(seq=st.integers(0, 2**32 - 1), sent_ns=st.integers(0, 2**64 - 1), qos=st.sampled_from([0, 1, 2]),
       protocol=st.sampled_from([4, 5]), size=st.integers(12, 3000))
def test_the_stamp_is_patched_into_the_payload_in_place(seq: int, sent_ns: int, qos: int, protocol: int,
                                                        size: int) -> None:
    stamp = struct.Struct("!IQ")
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    template = PublishTemplate("bench/run/p00001", payload, qos=qos, protocol=protocol, stamp_struct=stamp)
    out = bytearray()
    for n in range(3):  # several packets in one buffer, each stamped where it starts
        start = template.write(out, n + 1)
        template.stamp(out, start, (seq, sent_ns - n if sent_ns >= n else n))
    found, end = p.scan(out)
    assert end == len(out)
    assert len(found) == 3
    for n, (kind, flags, body, stop) in enumerate(found):
        packet = mqtt_raw.Packet(kind, flags, bytes(out[body:stop]))
        data = packet.payload(protocol)
        assert len(data) == len(payload)
        assert stamp.unpack_from(data) == (seq, sent_ns - n if sent_ns >= n else n)
        assert data[stamp.size:] == payload[stamp.size:]
        if qos:
            assert packet.packet_id() == n + 1


def test_connect_and_subscribe_are_byte_for_byte_the_raw_clients() -> None:
    for version in (4, 5):
        assert p.connect_packet("id-1", protocol=version, clean_start=False, keepalive=17, username="u",
                                password="pw") == mqtt_raw.connect("id-1", version=version, clean=False,
                                                                   keepalive=17, username="u", password="pw")
        assert p.subscribe_packet(9, [("a/+", 1), ("#", 0)], protocol=version) == \
            mqtt_raw.subscribe(9, [("a/+", 1), ("#", 0)], version=version)
    expiry = mqtt_raw.props(mqtt_raw.PacketTypes.CONNECT, SessionExpiryInterval=60)
    assert p.connect_packet("c", session_expiry=60) == mqtt_raw.connect("c", version=5, properties=expiry)
    for kind in (p.PUBACK, p.PUBREC, p.PUBREL, p.PUBCOMP):
        assert p.ack_packet(kind, 4660) == mqtt_raw.ack(kind, 4660)


def test_connack_properties_are_read() -> None:
    props = mqtt_raw.props(mqtt_raw.PacketTypes.CONNACK, ReceiveMaximum=20, MaximumPacketSize=4096,
                           AssignedClientIdentifier="auto-1", TopicAliasMaximum=10)
    connack = p.parse_connack(b"\x01\x00" + props, 5)
    assert connack == p.Connack(True, 0, 20, 4096, "auto-1")
    assert p.parse_connack(b"\x00\x05", 4).refusal(4) == "not authorized"
    assert p.parse_connack(b"\x00\x86\x00", 5).refusal(5) == "bad user name or password"


def test_scan_keeps_an_incomplete_packet_for_the_next_read() -> None:
    big = PublishTemplate("t", bytes(20_000), qos=1).packet
    stream = p.ack_packet(p.PUBACK, 1) + big + p.ack_packet(p.PUBCOMP, 2)
    for cut in (1, 3, 5, 6, 100, len(stream) - 1):
        found, end = p.scan(stream[:cut])
        assert end in (0, 4, 4 + len(big))
        rest = stream[end:]
        more, tail = p.scan(rest)
        assert [f[0] for f in found] + [f[0] for f in more] == [p.PUBACK, p.PUBLISH, p.PUBCOMP]
        assert tail == len(rest)


def test_websocket_frames_round_trip_through_the_reader() -> None:
    controls: list[tuple[int, bytes]] = []
    reader = p.WsReader(lambda op, data: controls.append((op, data)))
    out = bytearray()
    data = bytes(range(256)) * 300  # a 64-bit length frame
    stream = p.ws_frame(b"ab") + p.ws_frame(data) + p.ws_frame(b"", 0x9) + p.ws_frame(b"x" * 200)
    for i in range(0, len(stream), 777):  # frames split across reads
        reader.feed(stream[i:i + 777], out)
    assert bytes(out) == b"ab" + data + b"x" * 200
    assert controls == [(0x9, b"")]


def test_the_websocket_upgrade_answer_is_checked() -> None:
    key = p.ws_new_key()
    import base64
    import hashlib

    accept = base64.b64encode(hashlib.sha1(key + p.WS_GUID).digest()).decode()
    good = f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n" \
           "Sec-WebSocket-Protocol: mqtt".encode()
    assert p.ws_check_response(good, key) is None
    assert "404" in (p.ws_check_response(b"HTTP/1.1 404 Not Found", key) or "")
    assert "does not match" in (p.ws_check_response(good.replace(accept.encode(), b"x"), key) or "")
    assert "subprotocol" in (p.ws_check_response(good.replace(b": mqtt", b": chat"), key) or "")
