"""A synchronous MQTT client for tests: paho on its own network thread, with blocking calls
that wait with deadlines (a broker that does not answer fails the test, never hangs it)."""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ecokit.mqtt.loop import close_socket


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None = None
    received_at: float = field(default_factory=time.monotonic)


class SyncClient:
    """A paho client driven by its own network thread, with blocking calls that time out.

    Every wait has a deadline: a broker that does not answer fails the test, it never
    hangs it.
    """

    def __init__(self, host: str, port: int, *, username: str | None = None, password: str | None = None,
                 client_id: str | None = None, protocol: MQTTProtocolVersion = mqtt.MQTTv5, clean_start: bool = True,
                 tls: ssl.SSLContext | None = None, transport: str = "tcp", keepalive: int = 30,
                 session_expiry: int | None = None, will: tuple[str, bytes, int, bool] | None = None,
                 connect_properties: Properties | None = None, timeout: float = 5.0) -> None:
        self.host, self.port = host, port
        # The deadline of every wait that is not given its own.
        self.timeout = timeout
        self.client_id = client_id or f"ecokit-test-{uuid.uuid4().hex[:10]}"
        self.protocol = protocol
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol,
                                  transport=transport,  # type: ignore[arg-type]
                                  clean_session=None if protocol == mqtt.MQTTv5 else clean_start)
        self._clean_start = clean_start
        self._keepalive = keepalive
        self._session_expiry = session_expiry
        self._connect_properties = connect_properties
        self._tls = tls if transport == "tcp" else None
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set_context(tls)
        if will is not None:
            self.client.will_set(*will)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connack: queue.Queue[tuple[ReasonCode, dict[str, Any], Properties | None]] = queue.Queue()
        self.disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self._acks: dict[int, queue.Queue[Any]] = {}
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_unsubscribe = self._on_unsubscribe

    # callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    props: Properties | None) -> None:
        self.connack.put((reason, {"session_present": bool(getattr(flags, "session_present", False))}, props))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), props))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       props: Properties | None) -> None:
        self.disconnects.put(reason)

    def _ack_queue(self, mid: int) -> queue.Queue[Any]:
        with self._lock:
            return self._acks.setdefault(mid, queue.Queue())

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      props: Properties | None) -> None:
        self._ack_queue(mid).put(reasons)

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                        props: Properties | None) -> None:
        self._ack_queue(mid).put(reasons)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    props: Properties | None) -> None:
        self._ack_queue(mid).put(reason)

    # operations
    def connect(self, timeout: float | None = None) -> tuple[ReasonCode, dict[str, Any], Properties | None]:
        """Connect and wait for CONNACK; returns (reason, flags, properties) even on refusal.

        A TLS handshake the server refuses raises ssl.SSLError (as paho would).
        """
        timeout = self.timeout if timeout is None else timeout
        if self._tls is not None:
            # Handshake once on a socket we close: paho leaves a failed handshake's socket open.
            with socket.create_connection((self.host, self.port), timeout=timeout) as raw, \
                    self._tls.wrap_socket(raw, server_hostname=self.host):
                pass
        kwargs: dict[str, Any] = {"keepalive": self._keepalive}
        if self.protocol == mqtt.MQTTv5:
            props = self._connect_properties or Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self._session_expiry is not None:
                props.SessionExpiryInterval = self._session_expiry
            kwargs["clean_start"] = self._clean_start
            kwargs["properties"] = props
        self.client.connect(self.host, self.port, **kwargs)
        self.client.loop_start()
        try:
            return self.connack.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no CONNACK from {self.host}:{self.port} within {timeout}s") from None

    def subscribe(self, topic: str, qos: int = 1, timeout: float | None = None, **kwargs: Any) -> list[ReasonCode]:
        timeout = self.timeout if timeout is None else timeout
        result, mid = self.client.subscribe(topic, qos, **kwargs)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"subscribe failed locally: {mqtt.error_string(result)}")
        assert mid is not None
        try:
            granted: list[ReasonCode] = self._ack_queue(mid).get(timeout=timeout)
            return granted
        except queue.Empty:
            raise TimeoutError(f"no SUBACK for {topic!r} within {timeout}s") from None

    def unsubscribe(self, topic: str, timeout: float | None = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        result, mid = self.client.unsubscribe(topic)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionError(f"unsubscribe failed locally: {mqtt.error_string(result)}")
        try:
            return self._ack_queue(mid).get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no UNSUBACK for {topic!r} within {timeout}s") from None

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                properties: Properties | None = None, timeout: float | None = None) -> ReasonCode | None:
        """Publish; for QoS 1/2 wait for the PUBACK/PUBCOMP and return its reason code."""
        timeout = self.timeout if timeout is None else timeout
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS or info.mid is None:
            raise ConnectionError(f"publish failed locally: {mqtt.error_string(info.rc)}")
        if qos == 0:
            return None
        try:
            reason: ReasonCode = self._ack_queue(info.mid).get(timeout=timeout)
            return reason
        except queue.Empty:
            raise TimeoutError(f"no acknowledgement for QoS {qos} publish to {topic!r} within {timeout}s") from None

    def expect(self, count: int, timeout: float | None = None) -> list[Received]:
        """Wait for ``count`` messages; raise TimeoutError naming how many arrived."""
        timeout = self.timeout if timeout is None else timeout
        got: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"expected {count} messages within {timeout}s, got {len(got)}: "
                                   f"{[m.topic for m in got][:10]}")
            try:
                got.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                continue
        return got

    def drain(self, wait: float = 0.5) -> list[Received]:
        """Every message that arrives within ``wait`` seconds (to prove absence)."""
        got: list[Received] = []
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                break
        return got

    def disconnect(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()
        # The network thread may stop before it closed the socket (e.g. mid-reconnect).
        close_socket(self.client)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
