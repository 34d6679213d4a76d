"""The offline queue, broker URLs and CLI durations (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecokit.cli.simulate import parse_duration
from ecokit.errors import UsageError
from ecokit.mqtt.target import BrokerTarget
from ecokit.sim.base import SimSettings
from ecokit.sim.offline import OfflineQueue


def test_queue_keeps_each_vehicles_order_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    q = OfflineQueue(path, limit_per_vehicle=100)
    for i in range(10):
        q.put("a", "fleet/a/telemetry", f"a{i}".encode(), 1)
        q.put("b", "fleet/b/telemetry", f"b{i}".encode(), 0, retain=i == 9)
    assert (q.depth("a"), q.depth("b"), q.size) == (10, 10, 20)
    q.close()
    q = OfflineQueue(path, limit_per_vehicle=100)
    assert q.size == 20
    rows = q.peek("a", 4)
    assert [r.payload for r in rows] == [b"a0", b"a1", b"a2", b"a3"]
    assert q.remove_through("a", rows[-1].id) == 4
    assert [r.payload for r in q.peek("a", 100)] == [f"a{i}".encode() for i in range(4, 10)]
    last_b = q.peek("b", 100)[-1]
    assert (last_b.payload, last_b.qos, last_b.retain) == (b"b9", 0, True)
    assert q.depth("a") == 6
    q.close()


def test_a_full_queue_drops_its_oldest_and_counts_every_drop(tmp_path: Path) -> None:
    q = OfflineQueue(tmp_path / "q.sqlite", limit_per_vehicle=3)
    results = [q.put("a", "t", str(i).encode(), 1) for i in range(5)]
    q.put("b", "t", b"other", 1)
    assert results == [True, True, True, False, False]
    assert [r.payload for r in q.peek("a")] == [b"2", b"3", b"4"]
    assert q.dropped == {"a": 2}
    assert q.total_dropped == 2
    assert q.depth("b") == 1
    assert q.discard_all() == 4
    assert q.size == 0
    assert q.peek("a") == []
    q.close()


def test_queue_refuses_a_zero_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        OfflineQueue(tmp_path / "q.sqlite", limit_per_vehicle=0)


@pytest.mark.parametrize(("url", "expected"), [
    ("mqtt://127.0.0.1:1884", ("127.0.0.1", 1884, False, None, None)),
    ("mqtts://broker.local", ("broker.local", 8883, True, None, None)),
    ("tcp://u:p%40ss@h:1", ("h", 1, False, "u", "p@ss")),
    ("localhost", ("localhost", 1883, False, None, None)),
])
def test_broker_urls_parse(url: str, expected: tuple[object, ...]) -> None:
    target, user, password = BrokerTarget.from_url(url)
    assert (target.host, target.port, target.tls, user, password) == expected
    assert target.url.startswith("mqtts://" if target.tls else "mqtt://")


def test_websocket_urls_parse_with_their_path() -> None:
    target, _, _ = BrokerTarget.from_url("wss://u:p@h:8084")
    assert (target.tls, target.websocket_path, target.url) == (True, "/mqtt", "wss://h:8084/mqtt")
    assert BrokerTarget.from_url("ws://h/custom")[0].url == "ws://h:80/custom"


@pytest.mark.parametrize("url", ["http://h:8083", "mqtt://h:99999", "mqtt://:1883"])
def test_bad_broker_urls_name_the_url(url: str) -> None:
    with pytest.raises(UsageError, match="--broker"):
        BrokerTarget.from_url(url)


@pytest.mark.parametrize(("text", "seconds"), [("200ms", 0.2), ("1s", 1.0), ("10m", 600.0), ("1h", 3600.0),
                                               ("2.5", 2.5), ("0", 0.0)])
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text, "--rate") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "fast", "1d", "-1s"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(UsageError, match="--rate"):
        parse_duration(text, "--rate")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"qos": 2}, "QoS 0 or 1"), ({"protocol": 3}, "--mqtt"), ({"duration": 0}, "--duration"),
    ({"count": 0}, "--count"), ({"flat_out": True}, "flat-out"),
])
def test_settings_refuse_what_cannot_work(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SimSettings(**kwargs)  # type: ignore[arg-type]
