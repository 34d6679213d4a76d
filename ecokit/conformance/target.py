"""The broker under test: where it is, who we are there, and how checks talk to it.

A target comes from a broker URL (mqtt://, mqtts://, ws://, wss://, credentials in the URL
or as options) or from an ecokit stack (:func:`ecokit.conformance.stacks.stack_target`).
Every topic a check uses is under ``prefix``, unique per run; retained messages a check
sets are cleared by the same check (never anything else).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecokit.conformance.raw import RawConnection
from ecokit.errors import UsageError
from ecokit.testing.mqtt import SyncClient

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}
V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5


class RawCredentials(TypedDict, total=False):
    """The credentials part of a hand-built CONNECT (``raw.connect(**target.raw_credentials())``)."""

    username: str | None
    password: str | None


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str | None


@dataclass
class Target:
    scheme: str
    host: str
    port: int
    path: str = "/mqtt"
    credentials: Credentials | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    # A principal with limited rights, and a topic it may neither publish nor subscribe to.
    restricted: Credentials | None = None
    denied_topic: str | None = None
    description: str = ""
    # The Mosquitto ecokit started for this run (its expected outcomes are pinned).
    bundled: bool = False
    prefix: str = field(default_factory=lambda: f"ecokit-conformance/{uuid.uuid4().hex[:10]}")
    # Other listeners of the same broker the suite knows of (self-started stacks).
    tls_target: Target | None = None
    notes: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_url(cls, url: str, *, username: str | None = None, password: str | None = None,
                 **options: Any) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise UsageError(f"broker URL {_masked(url)!r}: the scheme must be one of {', '.join(DEFAULT_PORTS)}",
                             hint="e.g. mqtt://localhost:1883 or mqtts://user:password@broker.example:8883")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"broker URL {_masked(url)!r}: the port is not a number from 1 to 65535") from None
        user = username or (unquote(parts.username) if parts.username else None)
        secret = password or (unquote(parts.password) if parts.password else None)
        target = cls(scheme=parts.scheme, host=parts.hostname or "localhost",
                     port=port or DEFAULT_PORTS[parts.scheme], path=parts.path or "/mqtt",
                     credentials=Credentials(user, secret) if user else None, **options)
        target.description = target.url
        return target

    @property
    def url(self) -> str:
        """The URL with the password masked."""
        user = f"{self.credentials.username}:***@" if self.credentials else ""
        path = self.path if self.websocket else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}{path}"

    @property
    def tls(self) -> bool:
        return self.scheme in ("mqtts", "wss")

    @property
    def websocket(self) -> bool:
        return self.scheme in ("ws", "wss")

    def topic(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def note(self, check: str, text: str) -> None:
        """An informational finding shown in the summary (a legal variant, a limit)."""
        self.notes.append((check, text))

    def ssl_context(self, *, client_cert: bool = True, verify: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.insecure or not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if client_cert and self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client(self, *, protocol: int = V5, client_id: str | None = None, clean: bool = True,
               credentials: Credentials | bool | None = True, keepalive: int = 30,
               session_expiry: int | None = None, properties: Properties | None = None,
               tls: ssl.SSLContext | None = None, will: tuple[str, bytes, int, bool] | None = None,
               timeout: float = 5.0) -> SyncClient:
        """An unconnected client for this target. ``credentials``: True (default) the target's,
        False or None none (anonymous), or the given ones; ``timeout`` is every wait's deadline."""
        creds = self.credentials if credentials is True else (credentials or None)
        client = SyncClient(
            self.host, self.port, username=creds.username if creds else None,
            password=creds.password if creds else None,
            client_id=client_id or f"conf-{uuid.uuid4().hex[:12]}", protocol=protocol,  # type: ignore[arg-type]
            clean_start=clean, tls=tls or (self.ssl_context() if self.tls else None),
            transport="websockets" if self.websocket else "tcp", keepalive=keepalive,
            session_expiry=session_expiry, connect_properties=properties, will=will, timeout=timeout)
        if self.websocket:
            client.client.ws_set_options(path=self.path)
        return client

    @contextlib.contextmanager
    def connected(self, **kwargs: Any) -> Iterator[SyncClient]:
        """A connected client (CONNACK success asserted), always disconnected after."""
        client = self.client(**kwargs)
        try:
            reason, _, _ = client.connect()
            assert not reason.is_failure, f"{self.url} refused the connection: {reason}"
            yield client
        finally:
            client.disconnect()

    def raw(self, *, tls: ssl.SSLContext | None = None) -> RawConnection:
        return RawConnection(self.host, self.port, tls=tls or (self.ssl_context() if self.tls else None),
                             websocket_path=self.path if self.websocket else None)

    def raw_credentials(self) -> RawCredentials:
        if self.credentials is None:
            return {}
        return {"username": self.credentials.username, "password": self.credentials.password}

    def with_scheme(self, scheme: str, port: int) -> Target:
        return replace(self, scheme=scheme, port=port)

    def clear_retained(self, *topics: str) -> None:
        """Clear retained messages this run set (topics under the prefix only)."""
        for topic in topics:
            assert topic.startswith(self.prefix + "/"), f"refusing to clear {topic!r} outside the run prefix"
        with self.connected(protocol=V311) as c:
            for topic in topics:
                c.publish(topic, b"", qos=1, retain=True)


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def properties(packet_type: int, **values: Any) -> Properties:
    p = Properties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(p, name, value)
    return p


def publish_props(**values: Any) -> Properties:
    return properties(PacketTypes.PUBLISH, **values)


def connect_props(**values: Any) -> Properties:
    return properties(PacketTypes.CONNECT, **values)


def kill(client: SyncClient) -> None:
    """Drop the connection without DISCONNECT (an abnormal close: the will fires)."""
    client.client.loop_stop()
    sock = client.client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def silence(client: SyncClient) -> None:
    """Stop the client's network loop but keep the socket open: no more PINGREQs."""
    client.client.loop_stop()


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
