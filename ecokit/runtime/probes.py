"""Readiness probes: one runner for both runtimes (TCP accept, HTTP status, MQTT CONNECT)."""

from __future__ import annotations

import os
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import requests
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ecokit.errors import ReadinessTimeout, ServiceError
from ecokit.mqtt.tls import tls_context
from ecokit.services.spec import Probe, ServiceSpec


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


def check_tcp(host: str, port: int, timeout: float = 1.0, settle: float = 0.3) -> ProbeResult:
    """A connection is accepted and stays open for ``settle`` seconds (or the server speaks).

    A published docker port accepts every connection in docker-proxy, which closes it at
    once when nothing listens in the container: an accept alone proves nothing there.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(settle)
            try:
                first = sock.recv(1)
            except TimeoutError:
                return ProbeResult(True, f"{host}:{port} accepts connections")
            if not first:
                return ProbeResult(False, f"{host}:{port} accepted a connection and closed it at once")
            return ProbeResult(True, f"{host}:{port} accepts connections")
    except OSError as exc:
        return ProbeResult(False, f"{host}:{port}: {exc.strerror or exc}")


def check_http(url: str, expect: tuple[int, ...], timeout: float = 2.0) -> ProbeResult:
    try:
        resp = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        return ProbeResult(False, f"GET {url}: {exc.__class__.__name__}")
    if resp.status_code in expect:
        return ProbeResult(True, f"GET {url} -> {resp.status_code}")
    return ProbeResult(False, f"GET {url} -> {resp.status_code} (expected {', '.join(map(str, expect))})")


def check_mqtt(host: str, port: int, *, username: str | None, password: str | None,
               tls: ssl.SSLContext | None = None, timeout: float = 3.0) -> ProbeResult:
    """A real CONNECT; success only on a CONNACK that accepts the credentials."""
    if tls is not None:
        # The TLS handshake first, on a socket we close ourselves: paho leaves the socket
        # of a failed handshake open (a ResourceWarning per refused probe).
        try:
            with socket.create_connection((host, port), timeout=timeout) as raw, \
                    tls.wrap_socket(raw, server_hostname=host):
                pass
        except (OSError, ValueError) as exc:
            return ProbeResult(False, f"mqtt {host}:{port}: {exc}")
    outcome: list[str | None] = []

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode,
                   props: object) -> None:
        outcome.append(None if not reason.is_failure else str(reason))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ecokit-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv311, clean_session=True)
    client.on_connect = on_connect
    if tls is not None:
        # paho leaks its TLS socket when the handshake fails (a published docker port
        # accepts before the broker listens); check the handshake first, closing properly.
        try:
            with socket.create_connection((host, port), timeout=timeout) as raw, \
                    tls.wrap_socket(raw, server_hostname=host):
                pass
        except (OSError, ssl.SSLError, ValueError) as exc:
            return ProbeResult(False, f"mqtt {host}:{port}: TLS handshake: {exc}")
    if username:
        client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set_context(tls)
    try:
        client.connect(host, port, keepalive=10)
        deadline = time.monotonic() + timeout
        while not outcome and time.monotonic() < deadline:
            if client.loop(timeout=0.05) not in (mqtt.MQTT_ERR_SUCCESS,):
                break
    except (OSError, ssl.SSLError, ValueError) as exc:
        return ProbeResult(False, f"mqtt {host}:{port}: {exc}")
    finally:
        try:
            client.disconnect()
            client.loop(timeout=0.05)
        except (OSError, ValueError):
            pass
    if not outcome:
        return ProbeResult(False, f"mqtt {host}:{port}: no CONNACK")
    if outcome[0] is not None:
        return ProbeResult(False, f"mqtt {host}:{port}: CONNACK refused ({outcome[0]})")
    return ProbeResult(True, f"mqtt {host}:{port}: CONNACK accepted")


def run_probe(probe: Probe, host: str, port: int, *, ca_file: Path | None = None,
              client_cert: tuple[Path, Path] | None = None) -> ProbeResult:
    if probe.kind == "tcp":
        return check_tcp(host, port)
    if probe.kind == "http":
        return check_http(f"http://{host}:{port}{probe.path}", probe.expect)
    tls = None
    if probe.port in ("mqtts", "wss"):
        cert, key = client_cert if client_cert else (None, None)
        tls = tls_context(ca_file, certfile=cert, keyfile=key)
    return check_mqtt(host, port, username=probe.username, password=probe.password, tls=tls)


def wait_ready(spec: ServiceSpec, host: str, *, ca_file: Path | None = None,
               client_cert: tuple[Path, Path] | None = None,
               alive: Callable[[], str | None] = lambda: None,
               log_tail: Callable[[], str] = lambda: "", timeout: float | None = None) -> ProbeResult:
    """Poll the service's probe until it passes.

    ``alive`` returns None while the service runs, or why it stopped; a dead service
    fails at once instead of waiting out the timeout. Errors carry the log tail.
    """
    probe = spec.probe
    if probe is None:
        return ProbeResult(True, "no probe")
    port = spec.port(probe.port).host
    limit = timeout if timeout is not None else probe.timeout
    deadline = time.monotonic() + limit
    last = ProbeResult(False, "not probed yet")
    while True:
        died = alive()
        if died is not None:
            raise ServiceError(spec.name, f"stopped while starting ({died})", log_tail=log_tail())
        last = run_probe(probe, host, port, ca_file=ca_file, client_cert=client_cert)
        if last.ok:
            return last
        if time.monotonic() >= deadline:
            raise ReadinessTimeout(spec.name, f"not ready after {limit:.0f}s: {last.detail}",
                                   log_tail=log_tail())
        time.sleep(probe.interval)
