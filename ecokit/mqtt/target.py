"""Where an MQTT client connects (:class:`BrokerTarget`) and as whom (:class:`ClientAuth`).

A :class:`Connection` pairs a target with the credentials of each client id (every vehicle
its own, or one set for all); :func:`url_connection` makes one from any broker URL.
Connections to a running stack (its registered devices, ``ecokit-admin``) come from
``ecokit.clients``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ecokit.errors import UsageError
from ecokit.mqtt.tls import tls_context


@dataclass(frozen=True)
class BrokerTarget:
    """Where clients connect: host, port and TLS settings (no credentials)."""

    host: str
    port: int
    tls: bool = False
    ca_file: Path | None = None
    verify: bool = True
    websocket_path: str | None = None  # MQTT over websockets (ws://, wss://) at this HTTP path

    @property
    def scheme(self) -> str:
        if self.websocket_path is not None:
            return "wss" if self.tls else "ws"
        return "mqtts" if self.tls else "mqtt"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.websocket_path or ''}"

    @classmethod
    def from_url(cls, url: str, *, ca_file: Path | None = None, verify: bool = True
                 ) -> tuple[BrokerTarget, str | None, str | None]:
        """Parse ``mqtt[s]://`` or ``ws[s]://[user[:password]@]host[:port][/path]``; returns
        (target, user, password). A websocket URL without a path uses ``/mqtt``."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        scheme = parts.scheme.lower()
        if scheme not in ("mqtt", "mqtts", "tcp", "ssl", "tls", "ws", "wss"):
            raise UsageError(f"--broker {url!r}: scheme must be mqtt://, mqtts://, ws:// or wss://")
        tls = scheme in ("mqtts", "ssl", "tls", "wss")
        websocket = scheme in ("ws", "wss")
        try:
            default = (443 if tls else 80) if websocket else (8883 if tls else 1883)
            port = parts.port or default
        except ValueError:
            raise UsageError(f"--broker {url!r}: the port is not a number between 1 and 65535") from None
        if not parts.hostname:
            raise UsageError(f"--broker {url!r}: no host")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        path = (parts.path or "/mqtt") if websocket else None
        return cls(parts.hostname, port, tls, ca_file, verify, path), user, password

    def tls_context(self, client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        """The client TLS context for this broker (presenting ``client_cert`` for mutual TLS)."""
        cert, key = client_cert or (None, None)
        return tls_context(self.ca_file, certfile=cert, keyfile=key, verify=self.verify)


@dataclass(frozen=True)
class ClientAuth:
    """The credentials of one client: username/password and, for mutual TLS, its certificate."""

    username: str | None = None
    password: str | None = None
    client_cert: tuple[Path, Path] | None = None  # (cert, key) for mutual TLS


@dataclass(frozen=True)
class Connection:
    """A broker and the credentials each client uses there (``auth(client_name)``)."""

    target: BrokerTarget
    auth: Callable[[str], ClientAuth]
    description: str


def url_connection(url: str, *, username: str | None = None, password: str | None = None,
                   ca_file: Path | None = None, client_cert: tuple[Path, Path] | None = None,
                   verify: bool = True) -> Connection:
    """Any broker: every client uses the same credentials (from the URL or the arguments)."""
    target, url_user, url_password = BrokerTarget.from_url(url, ca_file=ca_file, verify=verify)
    user = username if username is not None else url_user
    pw = password if password is not None else url_password
    if pw is not None and user is None:
        raise UsageError("a password needs a username (--username or user:password@ in the URL)")
    auth = ClientAuth(user, pw, client_cert)
    who = f" as {user}" if user else " anonymously"
    return Connection(target, lambda name: auth, f"{target.url}{who}")


@dataclass(frozen=True)
class BrokerChoice:
    """Any broker (instead of a running stack): its URL and the one set of credentials every client uses."""

    url: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    client_cert: tuple[Path, Path] | None = None
    verify: bool = True

    def connection(self) -> Connection:
        return url_connection(self.url, username=self.username, password=self.password, ca_file=self.ca_file,
                              client_cert=self.client_cert, verify=self.verify)
