"""The shadow service: the state machine behind MQTT, with SQLite persistence and metrics.

Run as ``python -m ecokit.shadow.service CONFIG.json`` (``ecokit up`` does this). It
subscribes to shadow requests (``things/+/shadow/{get,update,delete}`` and the named
variants) with a persistent MQTT 5 session, so requests sent while it restarts are
answered when it is back, and serves ``/metrics``, ``/healthz`` and ``/readyz`` over HTTP.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ecokit.errors import ConfigError
from ecokit.shadow import machine, topics
from ecokit.shadow.store import ShadowStore, ShadowStoreError

log = logging.getLogger("ecokit.shadow")


@dataclass(frozen=True)
class BrokerConnection:
    """How the service reaches the broker (rendered into its config file)."""

    host: str
    port: int
    username: str
    password: str
    client_id: str
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@dataclass(frozen=True)
class ShadowServiceConfig:
    stack: str
    broker: BrokerConnection
    database: str
    http_host: str
    http_port: int
    session_expiry: int = 3600

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def load(cls, path: Path) -> ShadowServiceConfig:
        try:
            data = json.loads(path.read_text())
            return cls(broker=BrokerConnection(**data.pop("broker")), **data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"cannot read the shadow service config: {exc}", source=str(path)) from exc


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("ecokit_shadow_requests", "Shadow requests answered",
                                ["operation", "result"], registry=registry)
        self.rejections = Counter("ecokit_shadow_rejections", "Rejected shadow requests by error code",
                                  ["code"], registry=registry)
        self.latency = Histogram("ecokit_shadow_request_seconds", "Time to handle one shadow request",
                                 registry=registry,
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.shadows = Gauge("ecokit_shadow_shadows", "Shadows that exist", registry=registry)
        self.connected = Gauge("ecokit_shadow_mqtt_connected", "1 while subscribed to the broker",
                               registry=registry)


Publish = tuple[str, bytes]


def no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Disable Nagle on the MQTT socket: an answer is several small packets (PUBACK, then
    accepted/delta/documents), and Nagle plus delayed ACKs would hold them ~40 ms."""
    import socket

    raw_sock = getattr(sock, "_sock", sock)  # paho's websocket wrapper keeps the socket inside
    with contextlib.suppress(OSError, AttributeError):
        raw_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ShadowService:
    """Answers shadow requests. ``handle`` is the whole logic; ``run`` adds MQTT and HTTP."""

    def __init__(self, config: ShadowServiceConfig, *, clock: Callable[[], float] = time.time,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.clock = clock
        self.store = ShadowStore(config.database)
        self.metrics = Metrics(registry or CollectorRegistry())
        self.metrics.shadows.set(self.store.count())
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self._client: mqtt.Client | None = None
        self._http: ThreadingHTTPServer | None = None

    # -- the logic ----------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> list[Publish]:
        """The replies to one message (none when the topic is not a shadow request)."""
        request = topics.parse_request(topic)
        if request is None:
            return []
        started = time.perf_counter()
        now = int(self.clock())
        key = request.key
        try:
            record = self.store.get(key)
            outcome = machine.handle(key, request.operation, record, payload, now)
            if outcome.record is not None:
                self.store.put(key, outcome.record)
                if request.operation != "get":
                    self.metrics.shadows.set(self.store.count())
            responses = outcome.responses
        except ShadowStoreError as exc:
            log.error("shadow %s: %s", key, exc)
            responses = (machine.Response(f"{request.operation}/rejected",
                                          {"code": 500, "message": "Internal service failure",
                                           "timestamp": now}),)
        rejected = next((r for r in responses if not r.accepted), None)
        result = "rejected" if rejected else "accepted"
        self.metrics.requests.labels(request.operation, result).inc()
        if rejected is not None:
            self.metrics.rejections.labels(str(rejected.document.get("code"))).inc()
            log.info("shadow %s: %s rejected: %s %s", key, request.operation,
                     rejected.document.get("code"), rejected.document.get("message"))
        self.metrics.latency.observe(time.perf_counter() - started)
        base = topics.key_prefix(key)
        return [(f"{base}/{r.suffix}", r.payload) for r in responses]

    # -- MQTT ---------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    props: Properties | None) -> None:
        if reason.is_failure:
            log.error("broker %s:%s refused the connection: %s", self.config.broker.host,
                      self.config.broker.port, reason)
            return
        log.info("connected to %s:%s (session present: %s)", self.config.broker.host,
                 self.config.broker.port, getattr(flags, "session_present", False))
        client.subscribe([(f, 1) for f in topics.REQUEST_FILTERS])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      props: Properties | None) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("subscription to shadow requests refused: %s", ", ".join(failed))
            return
        self.metrics.connected.set(1)
        self.ready.set()
        log.info("subscribed to %s", ", ".join(topics.REQUEST_FILTERS))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       props: Properties | None) -> None:
        self.ready.clear()
        self.metrics.connected.set(0)
        if not self.stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            replies = self.handle(msg.topic, bytes(msg.payload))
        except Exception:  # one bad message must never stop the service
            log.exception("failed to handle a message on %s", msg.topic)
            return
        for topic, payload in replies:
            client.publish(topic, payload, qos=1)

    def _mqtt_client(self) -> mqtt.Client:
        b = self.config.broker
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=b.client_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(b.username, b.password)
        tls = b.tls_context()
        if tls is not None:
            client.tls_set_context(tls)
        client.reconnect_delay_set(1, 5)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.on_socket_open = no_delay
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # -- HTTP ---------------------------------------------------------------------------

    def _http_server(self) -> ThreadingHTTPServer:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(service.metrics.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    ok = service.ready.is_set()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not connected to the broker\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((self.config.http_host, self.config.http_port), Handler)
        server.daemon_threads = True
        return server

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start HTTP and MQTT in background threads; returns at once."""
        self._http = self._http_server()
        threading.Thread(target=self._http.serve_forever, name="shadow-http", daemon=True).start()
        client = self._mqtt_client()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry
        b = self.config.broker
        client.connect_async(b.host, b.port, keepalive=30, clean_start=False, properties=props)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        self.stopping.set()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self.store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecokit.shadow.service",
                                     description="ecokit's device shadow service")
    parser.add_argument("config", type=Path, help="the rendered shadow.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ShadowServiceConfig.load(args.config)
    service = ShadowService(config)
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    log.info("shadow service for stack %s: database %s, http %s:%s", config.stack, config.database,
             config.http_host, config.http_port)
    done.wait()
    log.info("stopping")
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
