"""How a simulated vehicle speaks MQTT: one link per vehicle, on the fast path or on paho.

The Simulator decides what a vehicle says and when (``ecokit.sim.session``: what goes out on
connect, the offline queue, reconnects with backoff, the goodbye); a link carries it. Both
kinds give a vehicle the same session: stable client id, no clean start (MQTT 5: session
expiry; 3.1.1: clean session off), the last will ``offline`` on its status topic, QoS 1
publishes resent after a reconnect (DUP), a window of unacknowledged publishes, keepalive,
subscriptions with their SUBACK checked, messages received (commands, shadow answers)
acknowledged after they were handled, TLS with the vehicle's own certificate, ws/wss.

- ``fast`` (the default, ``simulator.client``): :class:`~ecokit.mqtt.publisher.FastPublisher`
  on one :class:`~ecokit.mqtt.publisher.PublisherLoop`: a publish is the topic encoded once
  plus the payload appended to the connection's buffer, every connection's bytes leave in one
  ``send`` per loop iteration, a read brings every PUBACK waiting. About half the CPU per
  message of paho (``benchmarks/sim_fleet.py --client``), which a fleet of 10,000-20,000
  vehicles on two cores needs.
- ``paho``: one paho-mqtt client per vehicle on :class:`~ecokit.mqtt.loop.PahoLoop`, the
  reference client (to tell a broker's behaviour from ecokit's, or for a broker the fast path
  does not suit).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from abc import ABC, abstractmethod
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from ecokit.mqtt.loop import PahoLoop, new_paho_client, persistent_connect_args
from ecokit.mqtt.packets import PublishTemplate, Will
from ecokit.mqtt.publisher import ConnectRefused, FastPublisher, PublisherLoop, PublishStats, Transport
from ecokit.mqtt.target import BrokerTarget, ClientAuth

CLIENTS = ("fast", "paho")
MAX_INFLIGHT = 100  # unacknowledged QoS 1 publishes per vehicle (fewer if the broker's Receive Maximum says so)
TEMPLATES_KEPT = 4  # topics a fast link keeps encoded (telemetry, status, acks, a shadow topic)


class LinkEvents(Protocol):
    """What a link reports to the simulator about the vehicle (``owner``) it carries."""

    def link_lost(self, owner: Any, why: str) -> None: ...

    def link_message(self, owner: Any, topic: str, payload: bytes) -> None: ...

    def link_problem(self, owner: Any, detail: str) -> None: ...


class VehicleLink(ABC):
    """One vehicle's connection."""

    __slots__ = ()

    @property
    @abstractmethod
    def online(self) -> bool:
        """Connected (CONNACK accepted) and not lost since."""

    @property
    @abstractmethod
    def open(self) -> bool:
        """The socket is still open (a DISCONNECT may still be on its way)."""

    @property
    @abstractmethod
    def unacknowledged(self) -> int:
        """QoS 1 publishes not yet acknowledged (sent or waiting for the window)."""

    @property
    @abstractmethod
    def write_pending(self) -> bool:
        """Bytes wait for the socket: a flat-out vehicle should not make more."""

    @abstractmethod
    async def connect(self, will: Will, timeout: float) -> bool:
        """Connect (the first time) or reconnect; returns whether the broker kept the session.
        Raises ConnectRefused (the broker said no), TimeoutError, OSError, ssl.SSLError, ValueError."""

    @abstractmethod
    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        """Hand a message over; False if it could not be taken (QoS 0 while disconnected)."""

    @abstractmethod
    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        """SUBSCRIBE; a refused filter is reported through ``LinkEvents.link_problem``."""

    @abstractmethod
    def end(self) -> None:
        """Send DISCONNECT (the broker drops the will) and close; no ``link_lost`` for this."""


class LinkDriver(ABC):
    """The links of one simulator run, on its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: BrokerTarget, events: LinkEvents, *,
                 protocol: int, keepalive: int, session_expiry: int) -> None:
        self.loop = loop
        self.target = target
        self.events = events
        self.protocol = protocol
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self._tls_shared: ssl.SSLContext | None = None

    def tls_context(self, auth: ClientAuth) -> ssl.SSLContext | None:
        """One context for every vehicle, or the vehicle's own when it presents a certificate."""
        if not self.target.tls:
            return None
        if auth.client_cert is not None:
            return self.target.tls_context(auth.client_cert)
        if self._tls_shared is None:
            self._tls_shared = self.target.tls_context()
        return self._tls_shared

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Close every socket still open."""

    @abstractmethod
    def link(self, owner: Any, client_id: str, auth: ClientAuth) -> VehicleLink: ...

    @property
    @abstractmethod
    def acked(self) -> int:
        """QoS 1 acknowledgements received by every link."""


def link_driver(client: str, loop: asyncio.AbstractEventLoop, target: BrokerTarget, events: LinkEvents, *,
                protocol: int, keepalive: int, session_expiry: int, connect_concurrency: int) -> LinkDriver:
    if client == "paho":
        return PahoDriver(loop, target, events, protocol=protocol, keepalive=keepalive,
                          session_expiry=session_expiry, connect_workers=min(32, connect_concurrency))
    if client == "fast":
        return FastDriver(loop, target, events, protocol=protocol, keepalive=keepalive,
                          session_expiry=session_expiry)
    raise ValueError(f"unknown MQTT client {client!r}: expected one of {', '.join(CLIENTS)}")


def refused_codes(codes: list[int], filters: list[tuple[str, int]]) -> str | None:
    """What a SUBACK refused, or None when every filter was granted."""
    refused = [f"{topic} ({code:#04x})" for (topic, _), code in zip(filters, codes, strict=False) if code >= 0x80]
    return ", ".join(refused) if refused else None


# -- the fast path -------------------------------------------------------------------------------


class FastDriver(LinkDriver):
    def __init__(self, loop: asyncio.AbstractEventLoop, target: BrokerTarget, events: LinkEvents, *,
                 protocol: int, keepalive: int, session_expiry: int) -> None:
        super().__init__(loop, target, events, protocol=protocol, keepalive=keepalive,
                         session_expiry=session_expiry)
        self.group = PublisherLoop(loop)
        self.stats = PublishStats(track_latency=False)
        self._transports: dict[int, Transport] = {}

    def start(self) -> None:
        self.group.start()

    def stop(self) -> None:
        self.group.stop()

    def transport(self, auth: ClientAuth) -> Transport:
        tls = self.tls_context(auth)
        key = id(tls)
        found = self._transports.get(key) if auth.client_cert is None else None
        if found is None:
            t = self.target
            found = Transport(t.host, t.port, tls, t.websocket_path)
            if auth.client_cert is None:
                self._transports[key] = found
        return found

    def link(self, owner: Any, client_id: str, auth: ClientAuth) -> VehicleLink:
        return FastLink(self, owner, client_id, auth)

    @property
    def acked(self) -> int:
        return self.stats.acked


class FastLink(VehicleLink):
    __slots__ = ("conn", "events", "owner", "protocol", "templates")

    def __init__(self, driver: FastDriver, owner: Any, client_id: str, auth: ClientAuth) -> None:
        self.owner = owner
        self.events = driver.events
        self.protocol = driver.protocol
        self.templates: dict[tuple[str, int, bool], PublishTemplate] = {}
        self.conn = FastPublisher(
            driver.group, driver.transport(auth), client_id=client_id, username=auth.username,
            password=auth.password, protocol=driver.protocol, keepalive=driver.keepalive, clean_start=False,
            session_expiry=driver.session_expiry if driver.protocol == 5 else 0, max_inflight=MAX_INFLIGHT,
            stats=driver.stats, on_lost=self._lost, on_message=self._message)

    @property
    def online(self) -> bool:
        return self.conn.online

    @property
    def open(self) -> bool:
        return self.conn.sock is not None

    @property
    def unacknowledged(self) -> int:
        return self.conn.unacknowledged

    @property
    def write_pending(self) -> bool:
        return self.conn.backlog > 0

    async def connect(self, will: Will, timeout: float) -> bool:
        self.conn.will = will
        await self.conn.connect(timeout)
        return self.conn.session_present

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        key = (topic, qos, retain)
        template = self.templates.get(key)
        if template is None:
            template = PublishTemplate(topic, qos=qos, retain=retain, protocol=self.protocol)
            if len(self.templates) < TEMPLATES_KEPT:
                self.templates[key] = template
        return self.conn.publish_payload(template, payload)

    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        def answered(codes: list[int]) -> None:
            refused = refused_codes(codes, filters)
            if refused is not None:
                self.events.link_problem(self.owner, f"the broker refused the subscription to {refused}")

        self.conn.subscribe(filters, answered)

    def end(self) -> None:
        self.conn.end()

    def _lost(self, conn: FastPublisher, why: str) -> None:
        self.events.link_lost(self.owner, why)

    def _message(self, conn: FastPublisher, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        try:
            self.events.link_message(self.owner, topic, payload)
        except Exception as exc:  # one message must not stop the connection's other packets
            self.events.link_problem(self.owner, f"handling a message on {topic} failed: {exc!r}")


# -- paho ------------------------------------------------------------------------------------------


class PahoDriver(LinkDriver):
    def __init__(self, loop: asyncio.AbstractEventLoop, target: BrokerTarget, events: LinkEvents, *,
                 protocol: int, keepalive: int, session_expiry: int, connect_workers: int) -> None:
        super().__init__(loop, target, events, protocol=protocol, keepalive=keepalive,
                         session_expiry=session_expiry)
        self.paho = PahoLoop(loop, connect_workers=connect_workers)
        self.acks = 0

    def start(self) -> None:
        self.paho.start()

    def stop(self) -> None:
        self.paho.stop()

    def link(self, owner: Any, client_id: str, auth: ClientAuth) -> VehicleLink:
        return PahoLink(self, owner, client_id, auth)

    @property
    def acked(self) -> int:
        return self.acks


class PahoLink(VehicleLink):
    __slots__ = ("_connack", "_online", "_up", "acks", "client", "driver", "owner", "started")

    def __init__(self, driver: PahoDriver, owner: Any, client_id: str, auth: ClientAuth) -> None:
        self.driver = driver
        self.owner = owner
        target = driver.target
        client = new_paho_client(client_id, protocol=driver.protocol, clean_start=False,
                                 websocket_path=target.websocket_path, max_inflight=MAX_INFLIGHT)
        if auth.username is not None:
            client.username_pw_set(auth.username, auth.password)
        tls = driver.tls_context(auth)
        if tls is not None:
            client.tls_set_context(tls)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        driver.paho.attach(client)
        self.client = client
        self.acks: set[int] = set()  # QoS 1 message ids waiting for their PUBACK
        self.started = False  # connect() was called once; later attempts are reconnect()s
        self._connack: asyncio.Future[bool] | None = None
        self._up = False  # paho's view: CONNACK accepted, not disconnected since
        self._online = False  # ours: connect() returned and nothing was lost since

    @property
    def online(self) -> bool:
        return self._online

    @property
    def open(self) -> bool:
        return self.client.socket() is not None

    @property
    def unacknowledged(self) -> int:
        return len(self.acks)

    @property
    def write_pending(self) -> bool:
        return bool(self.client.want_write())

    async def connect(self, will: Will, timeout: float) -> bool:
        d, client = self.driver, self.client
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        fut = self._connack = d.loop.create_future()
        try:
            if not self.started:
                self.started = True
                await d.paho.connect(client, d.target.host, d.target.port,
                                     **persistent_connect_args(d.protocol, d.keepalive, d.session_expiry))
            else:
                await d.paho.reconnect(client)
            try:
                session_present = await asyncio.wait_for(asyncio.shield(fut), timeout=timeout)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    client.disconnect()
                raise
        finally:
            self._connack = None
        if not self._up:  # lost again between the CONNACK and now
            raise ConnectionError(f"{d.target.url} closed the connection right after its CONNACK")
        self._online = True
        return bool(session_present)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN):
            # A QoS 1 message paho could not write yet stays in its session and is re-sent.
            if qos > 0 and info.mid is not None:
                self.acks.add(info.mid)
            return True
        return False

    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        self.client.subscribe(filters)

    def end(self) -> None:
        self._online = False
        with contextlib.suppress(Exception):
            self.client.disconnect()

    # paho's callbacks, on the loop's thread (or the connect pool's, for a failed connect)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        fut = self._connack
        if reason.is_failure:
            if fut is not None and not fut.done():
                fut.set_exception(ConnectRefused(f"{self.driver.target.url} refused the connection: {reason}",
                                                 int(reason.value)))
            return
        self._up = True
        if fut is not None and not fut.done():
            fut.set_result(bool(flags.session_present))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._up = False
        fut = self._connack
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionError(f"{self.driver.target.url} closed the connection: {reason}"))
        if self._online:
            self._online = False
            self.driver.events.link_lost(self.owner, str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.driver.events.link_message(self.owner, msg.topic, bytes(msg.payload))
        except Exception as exc:
            self.driver.events.link_problem(self.owner, f"handling a message on {msg.topic} failed: {exc!r}")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if mid in self.acks:
            self.acks.discard(mid)
            self.driver.acks += 1

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        refused = [str(rc) for rc in reasons if getattr(rc, "is_failure", False)]
        if refused:
            self.driver.events.link_problem(self.owner, f"the broker refused the subscription: {', '.join(refused)}")
