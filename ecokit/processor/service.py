"""The fleet processor service: FleetState driven by MQTT (paho), status published back.

It subscribes to ``fleet/+/telemetry`` and ``fleet/+/status`` (the latter with MQTT 5
no-local, and it also ignores ``"source": "processor"``, so its own updates never come
back to it) and publishes StatusUpdates to ``fleet/{id}/status`` at QoS 1, not retained:
the retained status of a vehicle stays the device's own (its last will included).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry, Counter, Gauge

from ecokit.daemon import OncePerKind
from ecokit.processor.contract import ProcessorServiceConfig
from ecokit.processor.state import FleetState, StatusUpdate

TELEMETRY = "fleet/+/telemetry"
STATUS = "fleet/+/status"


class Processor:
    def __init__(self, config: ProcessorServiceConfig, *, log: logging.Logger,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.log = log
        self.settings = config.processor
        self.state = FleetState(offline_after=self.settings.offline_after,
                                status_interval=self.settings.status_interval)
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.once = OncePerKind(log)
        self.registry = registry or CollectorRegistry()
        self.received = Counter("ecokit_processor_messages_received", "fleet messages received", ["kind"],
                                registry=self.registry)
        self.published = Counter("ecokit_processor_status_published", "status updates published",
                                 ["state", "reason"], registry=self.registry)
        self.ignored = Counter("ecokit_processor_messages_ignored",
                               "messages not usable (bad payload, own status)", registry=self.registry)
        vehicles = Gauge("ecokit_processor_vehicles", "vehicles by state", ["state"], registry=self.registry)
        for name in ("online", "offline"):
            vehicles.labels(name).set_function(functools.partial(self._count, name))
        m = config.mqtt
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"ecokit-processor-{config.stack}-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(m.username, m.password)
        tls = m.tls_context()
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.host, self.port = m.host, m.port

    def _count(self, state: str) -> int:
        with self.lock:
            return self.state.counts()[state]

    def is_ready(self) -> bool:
        return self.ready.is_set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    props: Properties | None) -> None:
        if reason.is_failure:
            self.once(("connect", str(reason)), "the broker refused the processor", reason=str(reason))
            return
        client.subscribe([(TELEMETRY, SubscribeOptions(qos=1)), (STATUS, SubscribeOptions(qos=1, noLocal=True))])
        self.ready.set()
        self.log.info("subscribed", extra={"filters": [TELEMETRY, STATUS]})

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       props: Properties | None) -> None:
        self.ready.clear()
        self.once(("disconnect", str(reason)), "lost the broker; reconnecting", reason=str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        levels = msg.topic.split("/")
        if len(levels) != 3:
            return
        kind, vehicle = levels[2], levels[1]
        self.received.labels(kind).inc()
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            doc = None
        now = time.time()
        with self.lock:
            before = self.state.ignored
            updates = (self.state.on_telemetry(vehicle, doc, now) if kind == "telemetry"
                       else self.state.on_status(vehicle, doc, now))
            if self.state.ignored != before:
                self.ignored.inc()
        self._publish(updates)

    def _publish(self, updates: list[StatusUpdate]) -> None:
        for update in updates:
            self.client.publish(update.topic, update.payload(), qos=1, retain=False)
            self.published.labels(update.state, update.reason).inc()
            if update.reason != "periodic":
                self.log.info(f"{update.vehicle} is {update.state}",
                              extra={"vehicle": update.vehicle, "state": update.state, "reason": update.reason})

    def run(self, stop: threading.Event) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=True, properties=props)
        self.client.loop_start()
        try:
            while not stop.wait(1.0):
                with self.lock:
                    updates = self.state.tick(time.time())
                self._publish(updates)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
