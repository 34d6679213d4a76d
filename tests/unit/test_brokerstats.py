"""Mosquitto's $SYS leaves as Prometheus metrics (ecokit.brokerstats.sys, pure)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ecokit.brokerstats.service import SysCollector
from ecokit.brokerstats.sys import parse


@pytest.mark.parametrize(("topic", "payload", "name", "kind", "value"), [
    ("$SYS/broker/clients/connected", b"12", "mosquitto_clients_connected", "gauge", 12),
    ("$SYS/broker/uptime", b"3605 seconds", "mosquitto_uptime_seconds", "gauge", 3605),
    ("$SYS/broker/load/messages/received/1min", b"41.27", "mosquitto_load_messages_received_1min", "gauge", 41.27),
    ("$SYS/broker/load/bytes/sent/15min", b"9.00", "mosquitto_load_bytes_sent_15min", "gauge", 9.0),
    ("$SYS/broker/retained messages/count", b"3", "mosquitto_retained_messages_count", "gauge", 3),
    ("$SYS/broker/publish/messages/received", b"1000", "mosquitto_publish_messages_received", "counter", 1000),
    ("$SYS/broker/publish/messages/dropped", b"0", "mosquitto_publish_messages_dropped", "counter", 0),
    ("$SYS/broker/bytes/sent", b"123456", "mosquitto_bytes_sent", "counter", 123456),
])
def test_sys_leaves_become_named_metrics(topic: str, payload: bytes, name: str, kind: str, value: float) -> None:
    sample = parse(topic, payload)
    assert sample is not None
    assert (sample.name, sample.kind, sample.value) == (name, kind, value)


def test_the_version_is_an_info_metric_and_odd_values_are_skipped() -> None:
    version = parse("$SYS/broker/version", b"mosquitto version 2.0.11")
    assert version is not None
    assert (version.kind, version.label) == ("info", "mosquitto version 2.0.11")
    assert parse("$SYS/broker/clients/connected", b"many") is None
    assert parse("fleet/v1/telemetry", b"1") is None


def test_the_collector_serves_counters_with_total_and_an_age() -> None:
    collector = SysCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert "ecokit_brokerstats_age_seconds" in text
    assert "mosquitto_" not in text
    for topic, payload in (("$SYS/broker/publish/messages/received", b"7"), ("$SYS/broker/clients/connected", b"2"),
                           ("$SYS/broker/version", b"mosquitto version 2.0.11")):
        sample = parse(topic, payload)
        assert sample is not None
        collector.put(sample)
    text = generate_latest(registry).decode()
    assert "mosquitto_publish_messages_received_total 7.0" in text
    assert "# TYPE mosquitto_publish_messages_received_total counter" in text
    assert "mosquitto_clients_connected 2.0" in text
    assert 'mosquitto_info{version="mosquitto version 2.0.11"} 1.0' in text
