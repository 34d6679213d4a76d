"""Message rate, the latency window and the bridge's figures from its Prometheus text."""

from __future__ import annotations

from ecokit.console.stats import LatencyWindow, RateMeter, parse_bridge_metrics


def test_rate_counts_whole_seconds_of_the_window() -> None:
    meter = RateMeter(window=5)
    for second in range(100, 110):
        meter.add(10, second + 0.5)
    assert meter.total == 100
    assert meter.rate(110.2) == 10.0  # seconds 105..109
    assert meter.rate(200.0) == 0.0


def test_latency_average_and_p95_over_the_window_only() -> None:
    window = LatencyWindow(window=10)
    window.add([1000.0] * 100, now=50.0)  # falls out of the window
    window.add([float(v) for v in range(1, 101)], now=60.0)
    summary = window.summary(now=60.5)
    assert summary == {"avg": 50.5, "p95": 95.0, "samples": 100}
    assert LatencyWindow().summary(now=0.0) == {"avg": None, "p95": None, "samples": 0}


BRIDGE_TEXT = """\
# HELP ecokit_bridge_messages_received_total MQTT messages received
# TYPE ecokit_bridge_messages_received_total counter
ecokit_bridge_messages_received_total 1500.0
ecokit_bridge_messages_received_created 1.7e9
# TYPE ecokit_bridge_points_written_total counter
ecokit_bridge_points_written_total 1400.0
# TYPE ecokit_bridge_messages_rejected_total counter
ecokit_bridge_messages_rejected_total{reason="out_of_range",rule="telemetry"} 3.0
ecokit_bridge_messages_rejected_total{reason="not_json",rule="telemetry"} 1.0
ecokit_bridge_messages_rejected_total{reason="not_json",rule="status"} 2.0
# TYPE ecokit_bridge_buffered_points gauge
ecokit_bridge_buffered_points 42.0
# TYPE ecokit_bridge_dropped_points_total counter
ecokit_bridge_dropped_points_total 0.0
# TYPE ecokit_bridge_mqtt_connected gauge
ecokit_bridge_mqtt_connected 1.0
"""


def test_bridge_metrics_give_dead_letters_by_reason() -> None:
    got = parse_bridge_metrics(BRIDGE_TEXT)
    assert got["dead_letters"] == {"out_of_range": 3, "not_json": 3}
    assert (got["received"], got["written"], got["buffered"], got["dropped"], got["connected"]) == \
        (1500.0, 1400.0, 42.0, 0.0, 1.0)
