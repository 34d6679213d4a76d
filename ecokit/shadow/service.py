"""The shadow service: the state machine behind MQTT, with SQLite persistence and metrics.

Run as ``python -m ecokit.shadow.service CONFIG.json`` (``ecokit up`` does this). It
subscribes to shadow requests (``things/+/shadow/{get,update,delete}`` and the named
variants) with a persistent MQTT 5 session, so requests sent while it restarts are
answered when it is back, and serves ``/metrics``, ``/healthz`` and ``/readyz`` over HTTP.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ecokit.contract import load_service_config
from ecokit.daemon import HealthServer, setup_logging, stop_on_signals
from ecokit.errors import EcokitError
from ecokit.shadow import machine, topics
from ecokit.shadow.contract import ShadowServiceConfig
from ecokit.shadow.store import ShadowStore, ShadowStoreError

log = logging.getLogger("ecokit.shadow")


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
        self._http: HealthServer | None = None

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
            log.error("broker %s:%s refused the connection: %s", self.config.mqtt.host,
                      self.config.mqtt.port, reason)
            return
        log.info("connected to %s:%s (session present: %s)", self.config.mqtt.host,
                 self.config.mqtt.port, getattr(flags, "session_present", False))
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
        b = self.config.mqtt
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

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start HTTP and MQTT in background threads; returns at once."""
        self._http = HealthServer(self.config.http.host, self.config.http.port, self.metrics.registry,
                                  ready=self.ready.is_set)
        self._http.start()
        client = self._mqtt_client()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry
        b = self.config.mqtt
        client.connect_async(b.host, b.port, keepalive=30, clean_start=False, properties=props)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        self.stopping.set()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._http is not None:
            self._http.stop()
        self.store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecokit.shadow.service",
                                     description="ecokit's device shadow service")
    parser.add_argument("config", type=Path, help="the rendered shadow.json")
    args = parser.parse_args(argv)
    setup_logging("shadow")
    try:
        config = load_service_config(args.config, ShadowServiceConfig)
        service = ShadowService(config)
    except EcokitError as exc:
        log.error(f"cannot start: {exc}")
        return 2
    done = threading.Event()
    stop_on_signals(done)
    service.start()
    log.info("shadow service for stack %s: database %s, http %s:%s", config.stack, config.database,
             config.http.host, config.http.port)
    done.wait()
    log.info("stopping")
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
