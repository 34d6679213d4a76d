"""The process: subscribe to ``$SYS/#``, keep the latest value of each leaf, serve them."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from ecokit.brokerstats.contract import BrokerStatsServiceConfig
from ecokit.brokerstats.sys import Sample, parse
from ecokit.daemon import OncePerKind

SYS_FILTER = "$SYS/#"


class SysCollector(Collector):
    """The latest value of every ``$SYS`` leaf, as metric families at scrape time."""

    def __init__(self) -> None:
        self.samples: dict[str, Sample] = {}
        self.updated: float | None = None
        self.lock = threading.Lock()

    def put(self, sample: Sample) -> None:
        with self.lock:
            self.samples[sample.name] = sample
            self.updated = time.time()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            samples = sorted(self.samples.values(), key=lambda s: s.name)
            updated = self.updated
        for s in samples:
            if s.kind == "info":
                info = InfoMetricFamily(s.name.removesuffix("_info"), s.help)
                info.add_metric([], {"version": s.label or ""})
                yield info
            elif s.kind == "counter":
                yield CounterMetricFamily(s.name, s.help, value=s.value)
            else:
                yield GaugeMetricFamily(s.name, s.help, value=s.value)
        age = GaugeMetricFamily("ecokit_brokerstats_age_seconds",
                                "seconds since the last $SYS message (Mosquitto publishes every sys_interval)")
        if updated is not None:
            age.add_metric([], time.time() - updated)
        yield age


class BrokerStats:
    def __init__(self, config: BrokerStatsServiceConfig, *, log: logging.Logger,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.log = log
        self.once = OncePerKind(log)
        self.ready = threading.Event()
        self.registry = registry or CollectorRegistry()
        self.sys = SysCollector()
        self.registry.register(self.sys)
        self.received = Counter("ecokit_brokerstats_messages", "$SYS messages received", ["used"],
                                registry=self.registry)
        m = config.mqtt
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=m.client_id or f"ecokit-brokerstats-{config.stack}-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(m.username, m.password)
        tls = m.tls_context()
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.host, self.port = m.host, m.port

    def is_ready(self) -> bool:
        return self.ready.is_set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    props: Properties | None) -> None:
        if reason.is_failure:
            self.once(("connect", str(reason)), "the broker refused the metrics service", reason=str(reason))
            return
        client.subscribe(SYS_FILTER, qos=0)
        self.ready.set()
        self.log.info("subscribed", extra={"filters": [SYS_FILTER]})

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       props: Properties | None) -> None:
        self.ready.clear()
        self.once(("disconnect", str(reason)), "lost the broker; reconnecting", reason=str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            sample = parse(msg.topic, bytes(msg.payload))
        except Exception:  # one odd message never stops the others
            self.once(("parse", msg.topic), "a $SYS message could not be read", topic=msg.topic)
            sample = None
        self.received.labels("yes" if sample else "no").inc()
        if sample is not None:
            self.sys.put(sample)

    def run(self, stop: threading.Event) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=True, properties=props)
        self.client.loop_start()
        try:
            stop.wait()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
