"""One check per MQTT behaviour, named after the specification section it proves.

Every check takes a ``Target`` and either returns (pass), raises AssertionError (fail),
raises ``Unsupported(reason)`` when the target does not support the behaviour or behaves
in a documented, broker-specific way (an expected failure: reported, never hidden), or
``CannotRun(reason)`` when the check cannot be made against this target (skipped). Sections refer to
MQTT 3.1.1 (OASIS, 2014) and MQTT 5.0 (OASIS, 2019); normative ids like [MQTT-3.1.2-4].
Every wait has a deadline; every topic is under ``target.prefix``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ecokit.acl import topic_matches
from ecokit.conformance import raw
from ecokit.conformance.outcomes import CannotRun, Unsupported
from ecokit.conformance.target import V5, V311, Credentials, Target, connect_props, kill, publish_props, silence

CheckFn = Callable[[Target], None]


@dataclass(frozen=True)
class Check:
    fn: CheckFn
    area: str
    spec: str
    needs: str = ""  # "mtls": runs against the mTLS target

    @property
    def name(self) -> str:
        return self.fn.__name__

    def __call__(self, target: Target) -> None:
        self.fn(target)


CHECKS: list[Check] = []

AREAS = ("CONNECT/CONNACK", "sessions", "QoS", "retained", "will", "keepalive", "topics",
         "MQTT 5 expiry", "MQTT 5 properties", "subscription options", "shared subscriptions",
         "reason codes", "flow control", "authorization", "TLS")


def check(area: str, spec: str, *, needs: str = "") -> Callable[[CheckFn], CheckFn]:
    assert area in AREAS, area

    def register(fn: CheckFn) -> CheckFn:
        CHECKS.append(Check(fn, area, spec, needs))
        return fn

    return register


def cid(tag: str) -> str:
    return f"conf-{tag}-{uuid.uuid4().hex[:8]}"


def raw_connack_properties(packet: raw.Packet) -> Properties:
    props = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
    if len(packet.body) > 2:
        props.unpack(packet.body[2:])  # type: ignore[no-untyped-call]
    return props


def connack_properties(target: Target) -> Properties:
    """The properties of a fresh MQTT 5 CONNACK (the server's limits and features)."""
    with target.raw() as conn:
        conn.send(raw.connect(cid("props"), version=5, **target.raw_credentials()))
        packet = conn.expect(raw.CONNACK)
        assert packet.reason() == 0, f"CONNACK reason {packet.reason():#x}"
        conn.send(raw.disconnect())
        return raw_connack_properties(packet)


def prop(props: Properties | None, name: str, default: Any = None) -> Any:
    return getattr(props, name, default) if props is not None else default


def payloads(messages: list[Any]) -> list[bytes]:
    return [m.payload for m in messages]


# -- CONNECT / CONNACK ------------------------------------------------------------------


@check("CONNECT/CONNACK", "3.1.1 §3.1.2.2 [MQTT-3.1.2-2]")
def mqtt311_3_1_2_2_unknown_protocol_level_is_refused(t: Target) -> None:
    with t.raw() as conn:
        conn.send(raw.connect(cid("level"), version=7, **t.raw_credentials()))
        got = conn.read(5)
        # 0x01 unacceptable protocol version (3.1.1), 0x84 unsupported protocol version (5.0), or close.
        assert got is None or (got.kind == raw.CONNACK and got.reason() in (0x01, 0x84)), got
        if got is not None:
            closed, _ = conn.closed_within(3)
            assert closed, "the broker must close the connection after refusing it"


@check("CONNECT/CONNACK", "3.1.1 §3.1 [MQTT-3.1.0-2]")
def mqtt311_3_1_0_2_second_connect_is_a_protocol_violation(t: Target) -> None:
    with t.raw() as conn:
        conn.send(raw.connect(cid("twice"), **t.raw_credentials()))
        assert conn.expect(raw.CONNACK).reason() == 0
        conn.send(raw.connect(cid("twice"), **t.raw_credentials()))
        closed, seen = conn.closed_within(5)
        assert closed, f"a second CONNECT must close the connection (got {[p.kind for p in seen]})"


@check("CONNECT/CONNACK", "3.1.1 §3.2.2.3 / 5.0 §3.2.2.2")
def mqtt311_3_2_2_3_bad_credentials_are_refused(t: Target) -> None:
    wrong = Credentials(f"conf-nobody-{uuid.uuid4().hex[:6]}", "not-the-password")
    for protocol, allowed in ((V311, (0x86, 0x87)), (V5, (0x86, 0x87, 0x8C))):
        client = t.client(protocol=protocol, credentials=wrong)
        try:
            reason, _, _ = client.connect()
        finally:
            client.disconnect()
        if not reason.is_failure and t.credentials is None:
            raise Unsupported("the target accepts any credentials (anonymous access, no authentication)")
        # paho maps the 3.1.1 return codes 4 / 5 onto 0x86 / 0x87.
        assert reason.is_failure, f"wrong credentials were accepted over protocol {protocol}"
        assert reason.value in allowed, f"unexpected refusal {reason} ({reason.value:#x})"


@check("CONNECT/CONNACK", "3.1.1 §3.1.3.1 [MQTT-3.1.3-6] [MQTT-3.1.3-8]")
def mqtt311_3_1_3_8_zero_length_client_id_needs_clean_session(t: Target) -> None:
    with t.raw() as conn:
        conn.send(raw.connect("", clean=False, **t.raw_credentials()))
        got = conn.read(5)
        assert got is not None, "expected CONNACK 0x02 before the close"
        assert got.kind == raw.CONNACK
        assert got.reason() == 0x02, f"CONNACK {got.reason():#x}, expected 0x02 identifier rejected"
    with t.raw() as conn:
        conn.send(raw.connect("", clean=True, **t.raw_credentials()))
        assert conn.expect(raw.CONNACK).reason() == 0
        conn.send(raw.disconnect())


@check("CONNECT/CONNACK", "3.1.1 §3.2.2.2 [MQTT-3.2.2-1..3]")
def mqtt311_3_2_2_2_session_present_flag(t: Target) -> None:
    client_id = cid("sp")
    for clean, expected in ((True, False), (False, False), (False, True), (True, False)):
        c = t.client(protocol=V311, client_id=client_id, clean=clean)
        try:
            reason, flags, _ = c.connect()
            assert not reason.is_failure
            assert flags["session_present"] is expected, f"clean={clean}: session present {flags}"
        finally:
            c.disconnect()


@check("CONNECT/CONNACK", "5.0 §3.2.2.3.7 [MQTT-3.2.2-16]")
def mqtt5_3_2_2_3_7_assigned_client_identifier(t: Target) -> None:
    with t.raw() as conn:
        conn.send(raw.connect("", version=5, **t.raw_credentials()))
        packet = conn.expect(raw.CONNACK)
        assert packet.reason() == 0, f"CONNACK {packet.reason():#x} for an empty client id"
        assigned = prop(raw_connack_properties(packet), "AssignedClientIdentifier")
        assert assigned, "CONNACK lacks the Assigned Client Identifier"
        conn.send(raw.disconnect())


@check("CONNECT/CONNACK", "5.0 §3.2.2.3.14")
def mqtt5_3_2_2_3_14_server_keep_alive(t: Target) -> None:
    with t.raw() as conn:
        conn.send(raw.connect(cid("ska"), version=5, keepalive=65535, **t.raw_credentials()))
        packet = conn.expect(raw.CONNACK)
        assert packet.reason() == 0
        server = prop(raw_connack_properties(packet), "ServerKeepAlive")
        if server is None:
            t.note("server keep alive", "keepalive 65535 accepted as is (no Server Keep Alive)")
        else:
            assert server <= 65535
            t.note("server keep alive", f"keepalive 65535 overridden: Server Keep Alive {server}")
        conn.send(raw.disconnect())


# -- sessions ---------------------------------------------------------------------------


@check("sessions", "3.1.1 §3.1.2.4 [MQTT-3.1.2-6]")
def mqtt311_3_1_2_4_clean_session_discards_subscriptions(t: Target) -> None:
    topic, client_id = t.topic("clean"), cid("clean")
    with t.connected(protocol=V311, client_id=client_id, clean=False) as c:
        c.subscribe(topic, 1)
    with t.connected(protocol=V311, client_id=client_id, clean=True) as c, t.connected() as pub:
        pub.publish(topic, b"after", qos=1)
        assert c.drain(1.0) == [], "a clean session kept the old subscription"


@check("sessions", "3.1.1 §3.1.2.4 [MQTT-3.1.2-4] [MQTT-3.1.2-5]")
def mqtt311_3_1_2_5_persistent_session_receives_queued_messages(t: Target) -> None:
    topic, client_id = t.topic("persist"), cid("persist")
    with t.connected(protocol=V311, client_id=client_id, clean=False) as c:
        c.subscribe(topic, 2)
    with t.connected() as pub:
        for qos in (0, 1, 2):
            pub.publish(topic, f"q{qos}".encode(), qos=qos)
    c = t.client(protocol=V311, client_id=client_id, clean=False)
    try:
        _, flags, _ = c.connect()
        assert flags["session_present"], "session present must be 1 for a resumed session"
        got = sorted(payloads(c.expect(2, timeout=5) + c.drain(0.5)))
        assert b"q1" in got
        assert b"q2" in got
        t.note("QoS 0 offline queueing", "queued" if b"q0" in got else "not queued (optional)")
    finally:
        c.disconnect()
    with t.connected(protocol=V311, client_id=client_id, clean=True):
        pass


@check("sessions", "3.1.1 §4.4 [MQTT-4.4.0-1]")
def mqtt311_4_4_0_1_unacknowledged_publish_is_resent_with_dup(t: Target) -> None:
    topic, client_id = t.topic("redeliver"), cid("redeliver")
    with t.raw() as conn:
        conn.send(raw.connect(client_id, clean=False, **t.raw_credentials()))
        assert conn.expect(raw.CONNACK).reason() == 0
        conn.send(raw.subscribe(1, [(topic, 1)]))
        conn.expect(raw.SUBACK)
        with t.connected() as pub:
            pub.publish(topic, b"unacked", qos=1)
        first = conn.expect(raw.PUBLISH)
        assert first.payload() == b"unacked"
        assert not first.dup
    # Closed without PUBACK; the resumed session must resend it with DUP set.
    with t.raw() as conn:
        conn.send(raw.connect(client_id, clean=False, **t.raw_credentials()))
        connack = conn.expect(raw.CONNACK)
        assert connack.body[0] & 0x01, "session present expected"
        again = conn.expect(raw.PUBLISH)
        assert again.payload() == b"unacked"
        assert again.dup, "a resent PUBLISH must have the DUP flag set"
        assert again.packet_id() == first.packet_id()
        conn.send(raw.ack(raw.PUBACK, again.packet_id()))
        conn.send(raw.disconnect())
    with t.raw() as conn:
        conn.send(raw.connect(client_id, clean=True, **t.raw_credentials()))
        conn.expect(raw.CONNACK)
        conn.send(raw.disconnect())


@check("sessions", "5.0 §3.1.2.11.2 [MQTT-3.1.2-23]")
def mqtt5_3_1_2_11_session_expiry_interval(t: Target) -> None:
    topic = t.topic("expiry")
    # Expiry 0: the session ends with the connection.
    client_id = cid("exp0")
    with t.connected(client_id=client_id, session_expiry=0) as c:
        c.subscribe(topic, 1)
    c = t.client(client_id=client_id, clean=False, session_expiry=0)
    try:
        _, flags, _ = c.connect()
        assert not flags["session_present"], "expiry 0 must end the session at disconnect"
    finally:
        c.disconnect()
    # Expiry 1: kept briefly (queued message delivered), gone after it elapses.
    client_id = cid("exp1")
    with t.connected(client_id=client_id, session_expiry=1) as c:
        c.subscribe(topic, 1)
    with t.connected() as pub:
        pub.publish(topic, b"kept", qos=1)
    c = t.client(client_id=client_id, clean=False, session_expiry=1)
    try:
        _, flags, _ = c.connect()
        assert flags["session_present"], "the session must survive within its expiry interval"
        assert payloads(c.expect(1)) == [b"kept"]
    finally:
        c.disconnect()
    time.sleep(3.0)
    c = t.client(client_id=client_id, clean=False, session_expiry=0)
    try:
        _, flags, _ = c.connect()
        assert not flags["session_present"], "the session outlived its 1 s expiry interval"
    finally:
        c.disconnect()
    # A DISCONNECT may shorten it: 30 s at CONNECT, 0 at DISCONNECT.
    client_id = cid("expd")
    c = t.client(client_id=client_id, session_expiry=30)
    c.connect()
    c.subscribe(topic, 1)
    c.client.disconnect(properties=_props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    time.sleep(0.3)
    c.client.loop_stop()
    c = t.client(client_id=client_id, clean=False, session_expiry=0)
    try:
        _, flags, _ = c.connect()
        assert not flags["session_present"], "the expiry set on DISCONNECT was not honoured"
    finally:
        c.disconnect()


def _props(packet_type: int, **values: Any) -> Properties:
    p = Properties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(p, name, value)
    return p


# -- QoS ----------------------------------------------------------------------------------


@check("QoS", "3.1.1 §4.3 / §3.8.4 [MQTT-3.8.4-6]")
def mqtt311_4_3_qos_0_1_2_delivered_at_the_lower_qos(t: Target) -> None:
    for protocol in (V311, V5):
        topic = t.topic("qos", str(protocol))
        with t.connected(protocol=protocol) as c, t.connected(protocol=protocol) as low:
            c.subscribe(topic, 2)
            low.subscribe(topic, 0)
            for qos in (0, 1, 2):
                reason = c.publish(topic, f"m{qos}".encode(), qos=qos)
                if qos:
                    assert reason is not None
                    assert not reason.is_failure
            got = {m.payload: m.qos for m in c.expect(3)}
            assert got == {b"m0": 0, b"m1": 1, b"m2": 2}, got
            assert {m.qos for m in low.expect(3)} == {0}, "a QoS 0 subscription must get QoS 0"


@check("QoS", "3.1.1 §4.3.3 [MQTT-4.3.3-2]")
def mqtt311_4_3_3_qos2_duplicate_publish_is_delivered_once(t: Target) -> None:
    topic = t.topic("qos2dup")
    with t.connected() as sub, t.raw() as conn:
        sub.subscribe(topic, 2)
        conn.send(raw.connect(cid("q2"), **t.raw_credentials()))
        conn.expect(raw.CONNACK)
        conn.send(raw.publish(topic, b"once", qos=2, packet_id=7))
        assert conn.expect(raw.PUBREC).packet_id() == 7
        conn.send(raw.publish(topic, b"once", qos=2, packet_id=7, dup=True))
        assert conn.expect(raw.PUBREC).packet_id() == 7
        conn.send(raw.ack(raw.PUBREL, 7))
        assert conn.expect(raw.PUBCOMP).packet_id() == 7
        conn.send(raw.disconnect())
        got = sub.expect(1) + sub.drain(1.0)
        assert payloads(got) == [b"once"], f"a QoS 2 duplicate was delivered {len(got)} times"


@check("QoS", "3.1.1 §4.3.2 [MQTT-4.3.2-2]")
def mqtt311_4_3_2_qos1_resend_with_dup_is_acknowledged(t: Target) -> None:
    topic = t.topic("qos1dup")
    with t.connected() as sub, t.raw() as conn:
        sub.subscribe(topic, 1)
        conn.send(raw.connect(cid("q1"), **t.raw_credentials()))
        conn.expect(raw.CONNACK)
        conn.send(raw.publish(topic, b"atleast", qos=1, packet_id=9))
        assert conn.expect(raw.PUBACK).packet_id() == 9
        conn.send(raw.publish(topic, b"atleast", qos=1, packet_id=9, dup=True))
        assert conn.expect(raw.PUBACK).packet_id() == 9
        conn.send(raw.disconnect())
        got = sub.expect(1) + sub.drain(1.0)
        assert set(payloads(got)) == {b"atleast"}
        t.note("QoS 1 resend", f"a resent QoS 1 PUBLISH was delivered {len(got)} time(s) (at least once)")


# -- retained -----------------------------------------------------------------------------


@check("retained", "3.1.1 §3.3.1.3 [MQTT-3.3.1-5] [MQTT-3.3.1-6]")
def mqtt311_3_3_1_6_retained_messages_reach_new_subscribers(t: Target) -> None:
    topics = [t.topic("retained", f"q{qos}") for qos in (0, 1, 2)]
    try:
        with t.connected() as pub:
            for qos, topic in enumerate(topics):
                pub.publish(topic, f"r{qos}".encode(), qos=qos, retain=True)
            pub.publish(topics[0], b"r0", qos=1)  # barrier: the QoS 0 retained write is done
        with t.connected() as sub:
            sub.subscribe(t.topic("retained", "+"), 2)
            got = {m.payload: (m.qos, m.retain) for m in sub.expect(3)}
            assert got == {b"r0": (0, True), b"r1": (1, True), b"r2": (2, True)}, got
    finally:
        t.clear_retained(*topics)


@check("retained", "3.1.1 §3.3.1.3 [MQTT-3.3.1-7]")
def mqtt311_3_3_1_7_retained_message_is_replaced(t: Target) -> None:
    topic = t.topic("replace")
    try:
        with t.connected() as pub:
            pub.publish(topic, b"old", qos=1, retain=True)
            pub.publish(topic, b"new", qos=1, retain=True)
        with t.connected() as sub:
            sub.subscribe(topic, 1)
            got = sub.expect(1) + sub.drain(0.5)
            assert payloads(got) == [b"new"]
    finally:
        t.clear_retained(topic)


@check("retained", "3.1.1 §3.3.1.3 [MQTT-3.3.1-10] [MQTT-3.3.1-11]")
def mqtt311_3_3_1_10_empty_retained_payload_clears(t: Target) -> None:
    topic = t.topic("clear")
    with t.connected() as pub:
        pub.publish(topic, b"soon gone", qos=1, retain=True)
        pub.publish(topic, b"", qos=1, retain=True)
    with t.connected() as sub:
        sub.subscribe(topic, 1)
        assert sub.drain(1.0) == [], "an empty retained payload must clear the retained message"


@check("retained", "3.1.1 §3.3.1.3 [MQTT-3.3.1-9] / 4.7 wildcards")
def mqtt311_3_3_1_9_retained_through_wildcards_and_live_flag(t: Target) -> None:
    a, bc = t.topic("wild", "a"), t.topic("wild", "b", "c")
    try:
        with t.connected() as pub:
            pub.publish(a, b"A", qos=1, retain=True)
            pub.publish(bc, b"BC", qos=1, retain=True)
        with t.connected(protocol=V311) as plus, t.connected(protocol=V311) as hash_:
            plus.subscribe(t.topic("wild", "+"), 1)
            hash_.subscribe(t.topic("wild", "#"), 1)
            assert [(m.topic, m.retain) for m in plus.expect(1) + plus.drain(0.5)] == [(a, True)]
            assert sorted((m.topic, m.retain) for m in hash_.expect(2)) == [(a, True), (bc, True)]
            with t.connected() as pub:
                pub.publish(a, b"live", qos=1, retain=True)
            live = plus.expect(1)[0]
            assert live.payload == b"live"
            assert not live.retain, "3.1.1: a message to an existing subscription must have RETAIN 0"
    finally:
        t.clear_retained(a, bc)


@check("retained", "5.0 §3.3.1.3 / §3.3.2.3 (retained message keeps its properties)")
def mqtt5_3_3_1_3_retained_message_keeps_its_properties(t: Target) -> None:
    topic = t.topic("retained-props")
    try:
        with t.connected() as pub:
            pub.publish(topic, b"{}", qos=1, retain=True, properties=publish_props(
                ContentType="application/json", UserProperty=[("origin", "conformance")]))
        with t.connected() as sub:
            sub.subscribe(topic, 1)
            (got,) = sub.expect(1)
            assert got.retain
            assert prop(got.properties, "ContentType") == "application/json"
            assert ("origin", "conformance") in prop(got.properties, "UserProperty", [])
    finally:
        t.clear_retained(topic)


# -- will ---------------------------------------------------------------------------------


@check("will", "3.1.1 §3.1.2.5 [MQTT-3.1.2-8]")
def mqtt311_3_1_2_8_will_published_on_abnormal_disconnect(t: Target) -> None:
    topic = t.topic("will", "abnormal")
    with t.connected() as watcher:
        watcher.subscribe(topic, 1)
        c = t.client(protocol=V311)
        c.client.will_set(topic, b"gone", qos=1)
        c.connect()
        kill(c)
        assert payloads(watcher.expect(1, timeout=5)) == [b"gone"]


@check("will", "3.1.1 §3.1.2.5 [MQTT-3.1.2-10] / §3.14.4 [MQTT-3.14.4-3]")
def mqtt311_3_1_2_10_no_will_after_normal_disconnect(t: Target) -> None:
    topic = t.topic("will", "normal")
    with t.connected() as watcher:
        watcher.subscribe(topic, 1)
        c = t.client(protocol=V311)
        c.client.will_set(topic, b"must not appear", qos=1)
        c.connect()
        c.disconnect()
        assert watcher.drain(1.5) == [], "a normal DISCONNECT must discard the will"


@check("will", "5.0 §3.1.3.2.2 [MQTT-3.1.3-9]")
def mqtt5_3_1_3_2_will_delay_interval(t: Target) -> None:
    topic = t.topic("will", "delay")
    with t.connected() as watcher:
        watcher.subscribe(topic, 1)
        c = t.client(session_expiry=30)
        c.client.will_set(topic, b"delayed", qos=1, properties=_props(PacketTypes.WILLMESSAGE, WillDelayInterval=2))
        c.connect()
        started = time.monotonic()
        kill(c)
        early = watcher.drain(1.2)
        got = early + (watcher.expect(1, timeout=6) if not early else [])
        elapsed = time.monotonic() - started
        # Cleanup: end the session we left behind.
        with t.connected(client_id=c.client_id, clean=True, session_expiry=0):
            pass
        if early:
            raise Unsupported(f"will published after {elapsed:.1f}s despite a 2 s Will Delay Interval "
                         "(Mosquitto 2.0 will-delay bug, eclipse/mosquitto#3505)")
        assert payloads(got) == [b"delayed"]
        assert elapsed >= 1.8, f"will published after {elapsed:.1f}s, before the 2 s delay"


@check("will", "5.0 §3.1.2.5 / §3.1.3.2.2 (reconnect cancels a delayed will)")
def mqtt5_3_1_3_2_reconnect_within_will_delay_cancels_the_will(t: Target) -> None:
    topic = t.topic("will", "cancelled")
    with t.connected() as watcher:
        watcher.subscribe(topic, 1)
        c = t.client(session_expiry=30)
        c.client.will_set(topic, b"must not appear", qos=1,
                          properties=_props(PacketTypes.WILLMESSAGE, WillDelayInterval=3))
        c.connect()
        kill(c)
        time.sleep(0.5)
        with t.connected(client_id=c.client_id, clean=False, session_expiry=0):
            leaked = watcher.drain(4.0)
        if leaked:
            raise Unsupported("the will was published although the session was resumed within the Will Delay "
                         "Interval (Mosquitto 2.0 will-delay bug, eclipse/mosquitto#3505)")


@check("will", "5.0 §3.1.3.2.2 [MQTT-3.1.3-9] (session ends first)")
def mqtt5_3_1_3_2_will_sent_when_session_ends_before_delay(t: Target) -> None:
    topic = t.topic("will", "session-end")
    with t.connected() as watcher:
        watcher.subscribe(topic, 1)
        c = t.client(session_expiry=1)
        c.client.will_set(topic, b"ended", qos=1, properties=_props(PacketTypes.WILLMESSAGE, WillDelayInterval=30))
        c.connect()
        started = time.monotonic()
        kill(c)
        assert payloads(watcher.expect(1, timeout=8)) == [b"ended"], \
            "the will must be sent when the session (1 s) ends before the will delay (30 s)"
        t.note("will vs session expiry", f"will sent {time.monotonic() - started:.1f}s after the drop "
                                         "(session expiry 1 s, will delay 30 s)")


@check("will", "5.0 §3.1.2.5 / §3.14.2.1 (0x04)")
def mqtt5_3_14_2_1_disconnect_with_will_message(t: Target) -> None:
    topic = t.topic("will", "0x04")
    with t.connected() as watcher:
        watcher.subscribe(topic, 1)
        c = t.client()
        c.client.will_set(topic, b"asked for", qos=1)
        c.connect()
        from paho.mqtt.reasoncodes import ReasonCode

        c.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
        time.sleep(0.2)
        c.client.loop_stop()
        assert payloads(watcher.expect(1, timeout=5)) == [b"asked for"]


@check("will", "5.0 §3.1.3.2 will properties")
def mqtt5_3_1_3_2_will_carries_its_properties(t: Target) -> None:
    topic = t.topic("will", "props")
    with t.connected() as watcher:
        watcher.subscribe(topic, 1)
        c = t.client()
        c.client.will_set(topic, b'{"state":"offline"}', qos=1, properties=_props(
            PacketTypes.WILLMESSAGE, ContentType="application/json", UserProperty=[("source", "will")]))
        c.connect()
        kill(c)
        (got,) = watcher.expect(1, timeout=5)
        assert prop(got.properties, "ContentType") == "application/json"
        assert ("source", "will") in prop(got.properties, "UserProperty", [])


# -- keepalive ----------------------------------------------------------------------------


@check("keepalive", "3.1.1 §3.1.2.10 [MQTT-3.1.2-24] + will")
def mqtt311_3_1_2_24_silent_client_is_disconnected_and_will_sent(t: Target) -> None:
    topic = t.topic("keepalive")
    with t.connected() as watcher:
        watcher.subscribe(topic, 1)
        c = t.client(protocol=V311, keepalive=1)
        c.client.will_set(topic, b"timed out", qos=1)
        c.connect()
        started = time.monotonic()
        silence(c)
        try:
            assert payloads(watcher.expect(1, timeout=20)) == [b"timed out"], \
                "a client silent past 1.5 x keepalive must be dropped and its will sent"
            # The spec says 1.5 x keepalive; brokers check on a coarser timer (Mosquitto: seconds).
            t.note("keepalive", f"will after {time.monotonic() - started:.1f}s of silence (keepalive 1 s, "
                                "1.5 s by the spec)")
        finally:
            kill(c)


# -- topics ---------------------------------------------------------------------------------


@check("topics", "3.1.1 §4.7.1 [MQTT-4.7.1-2] [MQTT-4.7.1-3]")
def mqtt311_4_7_1_wildcards_match_as_specified(t: Target) -> None:
    p = t.prefix + "/wc"
    topics = [f"{p}/a", f"{p}/a/b", f"{p}/a/b/c", f"{p}/a//b", f"{p}/a/", f"{p}/b", f"/{p}/lead"]
    filters = [f"{p}/+", f"{p}/#", f"{p}/a/#", f"{p}/+/b", f"{p}/a/+/c", f"{p}/a/+", f"+/{p}/lead", f"{p}/a/+/b"]
    subscribers = []
    try:
        for filter_ in filters:
            c = t.client(protocol=V311)
            c.connect()
            subscribers.append(c)
            c.subscribe(filter_, 1)
        with t.connected(protocol=V311) as pub:
            for topic in topics:
                pub.publish(topic, topic.encode(), qos=1)
        for filter_, c in zip(filters, subscribers, strict=True):
            expected = sorted(x for x in topics if topic_matches(filter_, x))
            got = sorted(m.topic for m in c.expect(len(expected), timeout=5) + c.drain(0.3))
            assert got == expected, f"filter {filter_!r}: got {got}, expected {expected}"
    finally:
        for c in subscribers:
            c.disconnect()


@check("topics", "3.1.1 §4.7.2 [MQTT-4.7.2-1]")
def mqtt311_4_7_2_1_dollar_topics_not_matched_by_leading_wildcards(t: Target) -> None:
    with t.connected() as probe:
        probe.subscribe("$SYS/#", 0)
        dollar = probe.drain(2.0)
    if not dollar:
        raise CannotRun("no $-topic is readable on this target ($SYS/# gave nothing), nothing to prove it with")
    level2 = dollar[0].topic.split("/")[1] if "/" in dollar[0].topic else "#"
    with t.connected() as hash_, t.connected() as plus:
        hash_.subscribe("#", 0)
        plus.subscribe(f"+/{level2}/#", 0)
        leaked = [m.topic for m in hash_.drain(1.5) + plus.drain(0.2) if m.topic.startswith("$")]
        assert leaked == [], f"filters starting with # or + matched $-topics: {leaked[:5]}"


@check("topics", "3.1.1 §3.3.5 [MQTT-3.3.5-1]")
def mqtt311_3_3_5_overlapping_subscriptions(t: Target) -> None:
    topic = t.topic("overlap", "x")
    with t.connected(protocol=V311) as c:
        c.subscribe(t.topic("overlap", "#"), 1)
        c.subscribe(t.topic("overlap", "+"), 2)
        with t.connected() as pub:
            pub.publish(topic, b"both", qos=2)
        got = c.expect(1) + c.drain(1.0)
        qos = sorted(m.qos for m in got)
        assert qos in ([2], [1, 2]), f"overlapping subscriptions gave QoS {qos}"
        t.note("overlapping subscriptions",
               "one copy at the highest QoS" if qos == [2] else "one copy per matching subscription")


@check("topics", "3.1.1 §3.10.4 [MQTT-3.10.4-1] [MQTT-3.10.4-5]")
def mqtt311_3_10_4_unsubscribe_stops_delivery(t: Target) -> None:
    topic = t.topic("unsub")
    with t.connected(protocol=V311) as c, t.connected() as pub:
        c.subscribe(topic, 1)
        pub.publish(topic, b"before", qos=1)
        assert payloads(c.expect(1)) == [b"before"]
        c.unsubscribe(topic)
        pub.publish(topic, b"after", qos=1)
        assert c.drain(1.0) == [], "messages arrived after UNSUBACK"
        c.unsubscribe(t.topic("never-subscribed"))  # still answered with UNSUBACK


# -- MQTT 5 expiry ----------------------------------------------------------------------


@check("MQTT 5 expiry", "5.0 §3.3.2.3.3 [MQTT-3.3.2-5] [MQTT-3.3.2-6]")
def mqtt5_3_3_2_3_3_message_expiry_interval(t: Target) -> None:
    topic, client_id = t.topic("msg-expiry"), cid("mexp")
    with t.connected(client_id=client_id, session_expiry=60) as c:
        c.subscribe(topic, 1)
    with t.connected() as pub:
        pub.publish(topic, b"short", qos=1, properties=publish_props(MessageExpiryInterval=1))
        pub.publish(topic, b"long", qos=1, properties=publish_props(MessageExpiryInterval=60))
    time.sleep(2.5)
    c = t.client(client_id=client_id, clean=False, session_expiry=0)
    try:
        _, flags, _ = c.connect()
        assert flags["session_present"]
        got = c.expect(1) + c.drain(0.5)
        assert payloads(got) == [b"long"], f"expected only the unexpired message, got {payloads(got)}"
        remaining = prop(got[0].properties, "MessageExpiryInterval")
        assert remaining is not None, "the expiry interval must be forwarded"
        assert remaining <= 58, f"the remaining expiry ({remaining}) must be decremented by the time waited"
    finally:
        c.disconnect()
    retained = t.topic("msg-expiry", "retained")
    try:
        with t.connected() as pub:
            pub.publish(retained, b"stale", qos=1, retain=True, properties=publish_props(MessageExpiryInterval=1))
        time.sleep(2.2)
        with t.connected() as sub:
            sub.subscribe(retained, 1)
            assert sub.drain(1.0) == [], "an expired retained message was delivered"
    finally:
        t.clear_retained(retained)


# -- MQTT 5 properties ------------------------------------------------------------------


@check("MQTT 5 properties", "5.0 §3.3.2.3.4 [MQTT-3.3.2-12]")
def mqtt5_3_3_2_3_4_topic_alias_from_the_client(t: Target) -> None:
    maximum = prop(connack_properties(t), "TopicAliasMaximum", 0)
    if not maximum:
        raise Unsupported("the server accepts no topic aliases (Topic Alias Maximum 0 or absent)")
    topic = t.topic("alias")
    with t.connected() as sub, t.connected() as pub:
        sub.subscribe(topic, 1)
        pub.publish(topic, b"first", qos=1, properties=publish_props(TopicAlias=1))
        pub.publish("", b"second", qos=1, properties=publish_props(TopicAlias=1))
        got = sub.expect(2)
        assert [(m.topic, m.payload) for m in got] == [(topic, b"first"), (topic, b"second")]


@check("MQTT 5 properties", "5.0 §3.3.2.3.7 §3.3.2.3.9 §3.3.2.3.2")
def mqtt5_3_3_2_3_7_user_properties_content_type_and_format_forwarded(t: Target) -> None:
    topic = t.topic("props")
    user = [("a", "1"), ("b", "2"), ("a", "3")]
    with t.connected() as sub, t.connected() as pub:
        sub.subscribe(topic, 1)
        pub.publish(topic, json.dumps({"x": 1}), qos=1, properties=publish_props(
            UserProperty=user, ContentType="application/json", PayloadFormatIndicator=1))
        (got,) = sub.expect(1)
        assert prop(got.properties, "UserProperty") == user, "user properties must keep their order"
        assert prop(got.properties, "ContentType") == "application/json"
        assert prop(got.properties, "PayloadFormatIndicator") == 1


@check("MQTT 5 properties", "5.0 §4.10 / §3.3.2.3.5 §3.3.2.3.6")
def mqtt5_4_10_request_response(t: Target) -> None:
    request, response = t.topic("rr", "request"), t.topic("rr", "response")
    with t.connected() as responder, t.connected() as requester:
        responder.subscribe(request, 1)
        requester.subscribe(response, 1)
        requester.publish(request, b"ping", qos=1, properties=publish_props(
            ResponseTopic=response, CorrelationData=b"\x00corr-17"))
        (req,) = responder.expect(1)
        assert prop(req.properties, "ResponseTopic") == response
        assert prop(req.properties, "CorrelationData") == b"\x00corr-17"
        responder.publish(prop(req.properties, "ResponseTopic"), b"pong", qos=1,
                          properties=publish_props(CorrelationData=prop(req.properties, "CorrelationData")))
        (resp,) = requester.expect(1)
        assert resp.payload == b"pong"
        assert prop(resp.properties, "CorrelationData") == b"\x00corr-17"


# -- subscription options ---------------------------------------------------------------


@check("subscription options", "5.0 §3.8.3.1 No Local [MQTT-3.8.3-3]")
def mqtt5_3_8_3_1_no_local(t: Target) -> None:
    topic = t.topic("nolocal")
    with t.connected() as c, t.connected() as other:
        c.subscribe(topic, 0, options=SubscribeOptions(qos=1, noLocal=True))
        c.publish(topic, b"mine", qos=1)
        other.publish(topic, b"theirs", qos=1)
        assert payloads(c.expect(1) + c.drain(0.5)) == [b"theirs"]


@check("subscription options", "5.0 §3.8.3.1 Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13]")
def mqtt5_3_8_3_1_retain_as_published(t: Target) -> None:
    keep, clear = t.topic("rap", "keep"), t.topic("rap", "clear")
    try:
        with t.connected() as c, t.connected() as pub:
            c.subscribe(keep, 0, options=SubscribeOptions(qos=1, retainAsPublished=True))
            c.subscribe(clear, 0, options=SubscribeOptions(qos=1, retainAsPublished=False))
            pub.publish(keep, b"k", qos=1, retain=True)
            pub.publish(clear, b"c", qos=1, retain=True)
            got = {m.topic: m.retain for m in c.expect(2)}
            assert got == {keep: True, clear: False}, got
    finally:
        t.clear_retained(keep, clear)


@check("subscription options", "5.0 §3.8.3.1 Retain Handling [MQTT-3.3.1-9] [MQTT-3.3.1-10]")
def mqtt5_3_8_3_1_retain_handling(t: Target) -> None:
    topic = t.topic("rh")
    try:
        with t.connected() as pub:
            pub.publish(topic, b"kept", qos=1, retain=True)
        for handling, first, again in ((0, 1, 1), (1, 1, 0), (2, 0, 0)):
            with t.connected() as c:
                c.subscribe(topic, 0, options=SubscribeOptions(qos=1, retainHandling=handling))
                assert len(c.drain(0.7)) == first, f"retain handling {handling}: first subscribe"
                c.subscribe(topic, 0, options=SubscribeOptions(qos=1, retainHandling=handling))
                assert len(c.drain(0.7)) == again, f"retain handling {handling}: repeated subscribe"
    finally:
        t.clear_retained(topic)


@check("subscription options", "5.0 §3.8.2.1.2 / §3.3.4 [MQTT-3.3.4-3]")
def mqtt5_3_8_2_1_2_subscription_identifiers(t: Target) -> None:
    if prop(connack_properties(t), "SubscriptionIdentifierAvailable", 1) == 0:
        raise Unsupported("the server does not support subscription identifiers")
    with t.connected() as c, t.connected() as pub:
        c.subscribe(t.topic("sid", "#"), 1, properties=_props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
        c.subscribe(t.topic("sid", "+"), 1, properties=_props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=9))
        pub.publish(t.topic("sid", "x"), b"ids", qos=1)
        got = c.expect(1) + c.drain(0.7)
        ids = sorted(i for m in got for i in prop(m.properties, "SubscriptionIdentifier", []))
        assert ids == [7, 9], f"subscription identifiers delivered: {ids}"
        t.note("subscription identifiers", "one copy carrying both ids" if len(got) == 1 else "one copy per id")


# -- shared subscriptions ----------------------------------------------------------------


@check("shared subscriptions", "5.0 §4.8.2 [MQTT-4.8.2-1..6]")
def mqtt5_4_8_2_shared_subscriptions_spread_messages(t: Target) -> None:
    if prop(connack_properties(t), "SharedSubscriptionAvailable", 1) == 0:
        raise Unsupported("the server does not support shared subscriptions")
    topic = t.topic("shared")
    group = f"$share/g{uuid.uuid4().hex[:6]}/{topic}"
    with t.connected() as a, t.connected() as b, t.connected() as everyone, t.connected() as pub:
        a.subscribe(group, 1)
        b.subscribe(group, 1)
        everyone.subscribe(topic, 1)
        for i in range(20):
            pub.publish(topic, str(i).encode(), qos=1)
        assert len(everyone.expect(20)) == 20
        deadline = time.monotonic() + 5
        got_a: list[Any] = []
        got_b: list[Any] = []
        while len(got_a) + len(got_b) < 20 and time.monotonic() < deadline:
            got_a += a.drain(0.1)
            got_b += b.drain(0.1)
        got_a += a.drain(0.3)
        got_b += b.drain(0.3)
        together = sorted(int(m.payload) for m in got_a + got_b)
        assert together == list(range(20)), "each message must reach exactly one group member"
        assert got_a, "the group did not spread messages: member a got none"
        assert got_b, "the group did not spread messages: member b got none"
        t.note("shared subscriptions", f"20 messages split {len(got_a)}/{len(got_b)}")


# -- reason codes -----------------------------------------------------------------------


@check("reason codes", "5.0 §3.4.2.1 PUBACK")
def mqtt5_3_4_2_1_puback_reason_codes(t: Target) -> None:
    with t.connected() as c:
        nobody = c.publish(t.topic("puback", "nobody"), b"x", qos=1)
        assert nobody is not None
        assert nobody.value in (0x00, 0x10), f"PUBACK {nobody} for a topic without subscribers"
        t.note("PUBACK without subscribers", f"{nobody.value:#04x} {nobody}")
        c.subscribe(t.topic("puback", "someone"), 1)
        someone = c.publish(t.topic("puback", "someone"), b"x", qos=1)
        assert someone is not None
        assert someone.value == 0


@check("reason codes", "5.0 §3.9.3 SUBACK")
def mqtt5_3_9_3_suback_reason_codes(t: Target) -> None:
    with t.connected() as c:
        for qos in (0, 1, 2):
            (reason,) = c.subscribe(t.topic("suback", str(qos)), qos)
            assert reason.value == qos, f"requested QoS {qos}, granted {reason}"
    with t.raw() as conn:
        conn.send(raw.connect(cid("badfilter"), version=5, **t.raw_credentials()))
        conn.expect(raw.CONNACK)
        conn.send(raw.subscribe(1, [(t.topic("#", "bad"), 1)], version=5))
        got = conn.read(5)
        if got is None:
            t.note("invalid topic filter", "connection closed")
        elif got.kind == raw.SUBACK:
            code = got.body[-1]
            assert code in (0x8F, 0x80, 0x83), f"invalid filter answered with SUBACK {code:#x}"
            t.note("invalid topic filter", f"SUBACK {code:#04x}")
        else:
            assert got.kind == raw.DISCONNECT, got
            assert got.reason() in (0x8F, 0x81, 0x82), f"DISCONNECT {got.reason():#x}"
            t.note("invalid topic filter", f"DISCONNECT {got.reason():#04x}")


@check("reason codes", "5.0 §3.14.2.1 DISCONNECT 0x8E")
def mqtt5_3_14_2_1_session_taken_over(t: Target) -> None:
    client_id = cid("takeover")
    with t.raw() as first:
        first.send(raw.connect(client_id, version=5, **t.raw_credentials()))
        first.expect(raw.CONNACK)
        with t.connected(client_id=client_id):
            got = first.read(5)
            if got is None:
                raise Unsupported("the broker closes the taken-over connection without sending DISCONNECT 0x8E")
            assert got.kind == raw.DISCONNECT
            assert got.reason() == 0x8E, f"DISCONNECT {got.reason():#x}, expected 0x8E session taken over"
            closed, _ = first.closed_within(3)
            assert closed, "the taken-over connection must be closed"


# -- flow control / packet size ------------------------------------------------------------


@check("flow control", "5.0 §3.2.2.3.6 [MQTT-3.2.2-15] / §4.13 (0x95)")
def mqtt5_3_2_2_3_6_server_maximum_packet_size(t: Target) -> None:
    limit = prop(connack_properties(t), "MaximumPacketSize")
    if limit is None:
        raise Unsupported("the server announces no Maximum Packet Size in CONNACK")
    if limit > 16 * 1024 * 1024:
        raise CannotRun(f"the server's Maximum Packet Size ({limit}) is too large to exceed in a quick check")
    with t.raw() as conn:
        conn.send(raw.connect(cid("big"), version=5, **t.raw_credentials()))
        conn.expect(raw.CONNACK)
        with contextlib.suppress(OSError):  # closed while we were still sending: the outcome we look for
            conn.send(raw.publish(t.topic("too-big"), b"x" * (limit + 16), qos=1, packet_id=1, version=5))
        closed, seen = conn.closed_within(8)
        disconnects = [p.reason() for p in seen if p.kind == raw.DISCONNECT]
        assert closed, f"a packet over the server's {limit} bytes did not end the connection"
        assert all(r == 0x95 for r in disconnects), f"DISCONNECT reasons {disconnects}, expected 0x95"
        t.note("server maximum packet size", f"{limit} bytes; over it: "
               + ("DISCONNECT 0x95" if disconnects else "connection closed without DISCONNECT"))


@check("flow control", "5.0 §3.1.2.11.4 [MQTT-3.1.2-25]")
def mqtt5_3_1_2_25_client_maximum_packet_size(t: Target) -> None:
    topic = t.topic("client-max")
    with t.connected(properties=connect_props(MaximumPacketSize=512)) as small, t.connected() as pub:
        small.subscribe(topic, 1)
        pub.publish(topic, b"L" * 2000, qos=1)
        pub.publish(topic, b"small", qos=1)
        got = small.expect(1) + small.drain(0.5)
        assert payloads(got) == [b"small"], "a message over the client's maximum packet size was sent"


@check("flow control", "5.0 §3.1.2.11.3 [MQTT-3.3.4-7] [MQTT-3.3.4-8]")
def mqtt5_3_1_2_20_client_receive_maximum(t: Target) -> None:
    topic = t.topic("recv-max")
    with t.raw() as conn:
        conn.send(raw.connect(cid("rm"), version=5, properties=raw.props(PacketTypes.CONNECT, ReceiveMaximum=2),
                              **t.raw_credentials()))
        conn.expect(raw.CONNACK)
        conn.send(raw.subscribe(1, [(topic, 1)], version=5))
        conn.expect(raw.SUBACK)
        with t.connected() as pub:
            for i in range(5):
                pub.publish(topic, str(i).encode(), qos=1)
        _, first = conn.closed_within(1.0)
        publishes = [p for p in first if p.kind == raw.PUBLISH]
        assert len(publishes) == 2, f"{len(publishes)} unacknowledged QoS 1 messages sent with Receive Maximum 2"
        received, in_flight = list(publishes), list(publishes)
        while len(received) < 5:
            conn.send(raw.ack(raw.PUBACK, in_flight.pop(0).packet_id()))
            nxt = conn.expect(raw.PUBLISH)
            received.append(nxt)
            in_flight.append(nxt)
        assert sorted(int(p.payload(5)) for p in received) == list(range(5))


@check("flow control", "5.0 §3.3.4 [MQTT-3.3.4-9] / §4.9 (0x93)")
def mqtt5_3_2_2_3_3_server_receive_maximum(t: Target) -> None:
    maximum = prop(connack_properties(t), "ReceiveMaximum", 65535)
    if maximum > 1000:
        raise CannotRun(f"the server's Receive Maximum ({maximum}) is too large to exceed in a quick check")
    with t.raw() as conn:
        conn.send(raw.connect(cid("srm"), version=5, **t.raw_credentials()))
        conn.expect(raw.CONNACK)
        # QoS 2 without PUBREL keeps every message in flight on the server's side.
        with contextlib.suppress(OSError):  # closed while we were still sending
            for i in range(1, maximum + 2):
                conn.send(raw.publish(t.topic("srm"), b"x", qos=2, packet_id=i, version=5))
        closed, seen = conn.closed_within(5)
        disconnects = [p.reason() for p in seen if p.kind == raw.DISCONNECT]
        if not closed:
            raise Unsupported(f"the server accepted {maximum + 1} QoS 2 messages in flight with Receive Maximum "
                         f"{maximum} (does not enforce its receive maximum)")
        assert disconnects in ([], [0x93]), f"DISCONNECT reasons {disconnects}, expected 0x93"


# -- authorization ------------------------------------------------------------------------


def _restricted(t: Target) -> tuple[Credentials, str]:
    if t.restricted is None:
        raise CannotRun("no restricted user given (--restricted-username/--restricted-password)")
    return t.restricted, t.denied_topic or t.topic("denied")


def _denied_subscribe(t: Target, protocol: int, refused: tuple[int, ...]) -> None:
    creds, topic = _restricted(t)
    with t.connected(protocol=protocol, credentials=creds) as c:
        (reason,) = c.subscribe(topic, 1)
        if reason.value in refused:
            return
        assert not reason.is_failure, f"unexpected SUBACK {reason}"
        with t.connected() as admin:
            admin.publish(topic, b"secret", qos=1)
        leaked = c.drain(1.0)
        assert leaked == [], f"a denied subscription ({reason}) received messages"
        raise Unsupported(f"the broker grants a denied SUBSCRIBE ({reason.value:#04x}) and filters delivery "
                     "instead of refusing it (Mosquitto acl_file behaviour)")


@check("authorization", "3.1.1 §3.9.3 (0x80)")
def mqtt311_3_9_3_denied_subscribe_gets_0x80(t: Target) -> None:
    _denied_subscribe(t, V311, (0x80,))


@check("authorization", "5.0 §3.9.3 (0x87)")
def mqtt5_3_9_3_denied_subscribe_gets_0x87(t: Target) -> None:
    _denied_subscribe(t, V5, (0x87, 0x80))


@check("authorization", "5.0 §3.4.2.1 (0x87)")
def mqtt5_3_4_2_1_denied_publish_gets_0x87(t: Target) -> None:
    creds, topic = _restricted(t)
    with t.connected() as watcher, t.connected(credentials=creds) as c:
        watcher.subscribe(topic, 1)
        reason = c.publish(topic, b"forbidden", qos=1)
        assert watcher.drain(1.0) == [], "a denied publish was delivered"
        assert reason is not None
        if not reason.is_failure:
            raise Unsupported("the broker drops a denied QoS 1 publish but acknowledges it with PUBACK 0x00")
        assert reason.value == 0x87, f"PUBACK {reason}, expected 0x87 not authorized"


@check("authorization", "3.1.1 §5.4.2 (denied publish)")
def mqtt311_5_4_2_denied_publish_is_not_delivered(t: Target) -> None:
    creds, topic = _restricted(t)
    with t.connected() as watcher, t.connected(protocol=V311, credentials=creds) as c:
        watcher.subscribe(topic, 1)
        try:
            c.publish(topic, b"forbidden", qos=1)
        except TimeoutError:
            t.note("denied publish (3.1.1)", "connection closed")
        assert watcher.drain(1.0) == [], "a denied publish was delivered"


# -- TLS ------------------------------------------------------------------------------------


def _tls(t: Target) -> Target:
    tls = t if t.tls else t.tls_target
    if tls is None:
        raise CannotRun("the target has no TLS listener the suite knows of (give an mqtts:// or wss:// URL)")
    return tls


@check("TLS", "5.0 §5.4.5 / 3.1.1 §5.4.5 (server certificate)")
def tls_server_certificate_verified(t: Target) -> None:
    tls = _tls(t)
    with tls.connected() as c:
        sock = c.client.socket()
        version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        t.note("TLS", f"{tls.url}: {version or 'TLS'} with the server certificate verified")
    if tls.insecure:
        raise CannotRun("--broker-insecure: the server certificate is not verified")
    trusts_nothing = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert _tls_refused(tls, trusts_nothing), "a client trusting no CA completed the TLS handshake"


def _tls_refused(t: Target, ctx: ssl.SSLContext) -> bool:
    """Whether a TLS connection with ``ctx`` fails before an accepted MQTT CONNACK."""
    sock = socket.create_connection((t.host, t.port), timeout=5)
    try:
        try:
            tls_sock = ctx.wrap_socket(sock, server_hostname=t.host)
        except (ssl.SSLError, OSError):
            return True
        try:
            tls_sock.sendall(raw.connect(cid("tls"), **t.raw_credentials()))
            data = tls_sock.recv(4)
            return len(data) < 4 or data[0] >> 4 != raw.CONNACK or data[3] != 0
        except (ssl.SSLError, OSError):
            return True
        finally:
            tls_sock.close()
    finally:
        sock.close()


@check("TLS", "mTLS: client certificate required", needs="mtls")
def mtls_client_certificate_required(t: Target) -> None:
    if t.websocket:
        raise CannotRun("the mTLS check speaks raw MQTT over TLS; give an mqtts:// target")
    with t.connected() as c:
        assert c.client.is_connected()
    assert not _tls_refused(t, t.ssl_context()), "the client certificate was not accepted"
    assert _tls_refused(t, t.ssl_context(client_cert=False)), "a TLS client without a certificate was accepted"
