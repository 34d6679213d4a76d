"""From worker reports to a bench result; the timeline; the load-test environment (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from ecokit.bench.protocol import PublisherReport, PubTick, SubscriberReport, SubTick
from ecokit.bench.results import Timeline, build_result, percentiles_from
from ecokit.bench.scenario import PhasePlan
from ecokit.bench.targets import broker_from_env, overrides_from_env
from ecokit.bench.tracking import encode, new_histogram, record_us
from ecokit.config.slo import parse_slo
from ecokit.errors import ConfigError

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000

PHASES = (
    PhasePlan(0, "baseline", 0.0, 10.0, 4, 25.0, 25.0, 1, 256),  # 100/s x 10 s = 1,000
    PhasePlan(1, "spike", 10.0, 5.0, 4, 250.0, 250.0, 1, 256),  # 1,000/s x 5 s = 5,000
)


def hist(*micros: int) -> str:
    h = new_histogram()
    for m in micros:
        record_us(h, m)
    return encode(h)


def pub_report(worker: int = 0, **changes: Any) -> PublisherReport:
    report = PublisherReport(
        worker=worker, clients=4, ever_connected=4, connected_at_end=4, sent_by_phase=[1000, 5000],
        unsent_by_phase=[0, 0], first_send_ns=[T0, T0 + 10 * S], last_send_ns=[T0 + 10 * S - 1, T0 + 15 * S - 1],
        lag_by_phase=[hist(100, 200), hist(300, 400)], sent_by_publisher={0: 1500, 1: 1500, 2: 1500, 3: 1500},
        acked=6000)
    for key, value in changes.items():
        setattr(report, key, value)
    return report


def sub_report(**changes: Any) -> SubscriberReport:
    report = SubscriberReport(
        worker=0, clients=1, ever_connected=1, connected_at_end=1, received_by_phase=[1000, 5000],
        unique_by_phase=[1000, 5000], duplicates_by_phase=[0, 0], reordered_by_phase=[0, 0],
        latency_by_phase=[hist(*[1000] * 99, 50_000), hist(*[2000] * 100)],
        first_recv_ns=[T0 + 1000, T0 + 10 * S], last_recv_ns=[T0 + 10 * S, T0 + 15 * S],
        streams={(0, p): 1500 for p in range(4)}, per_subscriber={0: 6000})
    for key, value in changes.items():
        setattr(report, key, value)
    return report


def result(pubs: list[PublisherReport] | None = None, subs: list[SubscriberReport] | None = None,
           slos: list[str] = (), subscriber_count: int = 1, shared: bool = False, **kwargs: Any) -> Any:
    return build_result(scenario="spike", description="d", run_id="ab12cd34", target="mqtt://x:1", started_at="now",
                        settings={}, phases=PHASES, t0_ns=T0, publishers=pubs if pubs is not None else [pub_report()],
                        subscribers=subs if subs is not None else [sub_report()], subscriber_count=subscriber_count,
                        shared=shared, slos=[parse_slo(s) for s in slos], **kwargs)


def test_a_clean_run() -> None:
    r = result(slos=["p99_ms=60", "loss=0", "min_rate=390", "spike.p99_ms=3", "min_rate=99%",
                     "spike.min_send_rate=100%"])
    assert r.passed, [v.line for v in r.violations]
    assert [f.name for f in r.phases] == ["baseline", "spike"]
    base, spike = r.phases
    assert (base.planned, spike.planned) == (1000, 5000)
    assert (base.sent, base.expected, base.unique, base.lost, base.loss) == (1000, 1000, 1000, 0, 0.0)
    assert base.send_rate == pytest.approx(100, rel=0.001)
    assert spike.rate == pytest.approx(1000, rel=0.001)
    assert base.latency["p50_ms"] == pytest.approx(1.0, rel=0.01)
    assert base.latency["max_ms"] == pytest.approx(50.0, rel=0.01)
    assert spike.send_lag["max_ms"] == pytest.approx(0.4, rel=0.01)
    assert r.total.sent == 6000
    assert r.total.rate == pytest.approx(400, rel=0.001)
    assert r.total.offered == "varies by phase"
    assert r.warnings == []
    assert r.connections["publishers"]["acked"] == 6000
    assert r.connections["worst_publishers"] == []


def test_loss_is_what_was_sent_minus_what_arrived_once() -> None:
    sub = sub_report(unique_by_phase=[990, 5000], received_by_phase=[995, 5000], duplicates_by_phase=[5, 0],
                     streams={(0, 0): 1490, (0, 1): 1500, (0, 2): 1500, (0, 3): 1500})
    r = result(subs=[sub], slos=["loss=0", "baseline.loss=1%", "spike.loss=0", "duplicates=0"])
    base = r.phases[0]
    assert (base.lost, base.loss, base.duplicates) == (10, pytest.approx(0.01), 5)
    assert r.total.lost == 10
    assert [v.ok for v in r.slo] == [False, True, True, False]
    assert r.violations[0].line == "SLO violated: loss = 0.1667% (10 of 6,000) > 0%"
    assert r.violations[1].line == "SLO violated: duplicates = 5 > 0"
    assert r.connections["worst_publishers"] == [{"publisher": 0, "sent": 1500, "lost": 10}]


def test_fan_out_expects_every_message_at_every_subscriber() -> None:
    sub = sub_report(unique_by_phase=[3000, 15000], received_by_phase=[3000, 15000],
                     streams={(s, p): 1500 for s in range(3) for p in range(4)})
    r = result(subs=[sub], subscriber_count=3, slos=["loss=0"])
    assert r.total.expected == 18_000
    assert r.passed
    assert r.total.planned_rate == pytest.approx(1200)
    assert r.total.rate == pytest.approx(1200, rel=0.001)  # deliveries per second


def test_a_shared_subscription_expects_each_message_once() -> None:
    r = result(subscriber_count=3, shared=True, slos=["loss=0"])
    assert r.total.expected == 6000
    assert r.passed


def test_without_subscribers_only_the_send_side_is_measured() -> None:
    r = result(subs=[], subscriber_count=0, slos=["min_send_rate=300", "p99_ms=10", "loss=0"])
    assert r.total.expected is None
    assert r.total.rate is None
    assert [v.ok for v in r.slo] == [True, False, False]
    assert "not measured" in r.violations[0].line


def test_reports_of_several_publisher_workers_add_up() -> None:
    second = pub_report(1, sent_by_publisher={4: 10, 5: 10}, sent_by_phase=[10, 10], acked=20)
    r = result(pubs=[pub_report(), second])
    assert r.total.sent == 6020
    assert r.connections["publishers"]["clients"] == 8
    assert r.connections["worst_publishers"] == [{"publisher": 5, "sent": 10, "lost": 10},
                                                 {"publisher": 4, "sent": 10, "lost": 10}]


def test_rates_use_the_time_things_actually_took() -> None:
    # the subscriber got the spike's last message 5 s late: its rate is over 10 s, not 5
    sub = sub_report(last_recv_ns=[T0 + 10 * S, T0 + 20 * S])
    r = result(subs=[sub], slos=["spike.min_rate=900"])
    assert r.phases[1].rate == pytest.approx(500, rel=0.001)
    assert not r.passed


def test_an_early_stop_shortens_the_window() -> None:
    pub = pub_report(sent_by_phase=[500, 0], last_send_ns=[T0 + 5 * S, 0], stopped_early=True)
    sub = sub_report(unique_by_phase=[500, 0], received_by_phase=[500, 0], last_recv_ns=[T0 + 5 * S, 0])
    r = result(pubs=[pub], subs=[sub], stopped_ns=T0 + 5 * S)
    assert r.stopped_early
    assert r.phases[0].send_rate == pytest.approx(100, rel=0.001)
    assert r.phases[1].send_rate == 0
    assert not any("never attempted" in w for w in r.warnings)


def test_warnings_name_what_makes_figures_doubtful() -> None:
    pub = pub_report(lag_by_phase=[hist(500_000), hist(1)], unsent_by_phase=[3, 0], sent_by_phase=[997, 5000],
                     unacked=2)
    sub = sub_report(foreign=7, clock_anomalies=1)
    r = result(pubs=[pub], subs=[sub], broker={"sys": {"publish_dropped": 12.0}})
    text = "\n".join(r.warnings)
    assert "phase baseline: the publishers fell behind their schedule (send lag p99 500" in text
    assert "3 publishes were refused by the client library" in text
    assert "2 QoS 1/2 publishes were still unacknowledged" in text
    assert "7 messages on the subscription were not this run's" in text
    assert "1 messages arrived before their send time" in text
    assert "the broker reports 12 dropped publishes" in text


def test_connection_slos_are_for_the_whole_run() -> None:
    pub = pub_report(reconnects=2, connect_failures=1, errors=1, last_errors=["p1: disconnected"])
    r = result(pubs=[pub], slos=["reconnects=1", "connect_failures=1", "spike.reconnects=5"])
    assert [v.ok for v in r.slo] == [False, True, False]
    assert "only measured for the whole run" in r.slo[2].line
    assert r.errors == ["p1: disconnected"]


def test_the_result_serialises_to_the_documented_shape() -> None:
    doc = result(slos=["p99_ms=1"], timeline=[{"t": 1.0}]).to_dict()
    assert set(doc) == {"scenario", "description", "run_id", "target", "started_at", "started_ns", "settings", "passed",
                        "stopped_early", "total", "phases", "connections", "broker", "slo", "warnings", "errors",
                        "pipeline", "timeline"}
    assert doc["passed"] is False
    phase = doc["phases"][0]
    assert set(phase) >= {"name", "sent", "unique", "lost", "loss", "rate", "send_rate", "latency_ms", "send_lag_ms",
                          "latency_histogram"}
    assert percentiles_from(phase["latency_histogram"])["count"] == 100
    assert doc["slo"][0]["line"].startswith("SLO violated: p99_ms")


# -- timeline ---------------------------------------------------------------------------------


def test_the_timeline_merges_workers_tick_by_tick() -> None:
    tl = Timeline(PHASES, 1.0)
    for k in (1, 2):
        tl.add_pub(0, PubTick(k, 100 * k, 0, 100 * k, 4, 0, 0, 0))
        tl.add_pub(1, PubTick(k, 50 * k, 0, 50 * k, 2, 0, 0, 0))
        tl.add_sub(0, SubTick(k, 150 * k, 150 * k - 1, 0, 1, 0, 0, 150, 1000, 5000, 9000))
    tl.add_extra(2, {"broker_cpu_percent": 12.5})
    rows = tl.rows()
    assert [(r["t"], r["phase"], r["offered"], r["sent"], r["received"]) for r in rows] == [
        (1.0, "baseline", 100, 150, 149), (2.0, "baseline", 100, 150, 150)]
    assert rows[0]["p99_ms"] == 5.0
    assert rows[0]["publishers_connected"] == 6
    assert rows[1]["broker_cpu_percent"] == 12.5
    pubs, _ = tl.latest()
    assert sum(t.sent for t in pubs.values()) == 300


def test_the_offered_rate_follows_a_ramp() -> None:
    ramp = (PhasePlan(0, "ramp", 0.0, 10.0, 2, 0.0, 50.0, 1, 64),)
    tl = Timeline(ramp, 1.0)
    assert tl.offered_at(5.0) == pytest.approx(50)
    assert tl.offered_at(10.0) == 0  # after the last phase
    assert tl.phase_at(9.99) is ramp[0]


# -- the load-test environment ----------------------------------------------------------------


def test_no_broker_variables_mean_the_stack() -> None:
    assert broker_from_env({}) is None


def test_broker_host_and_port() -> None:
    found = broker_from_env({"BROKER_HOST": "broker.lab", "BROKER_PORT": "1884", "BROKER_USERNAME": "u",
                             "BROKER_PASSWORD": "p"})
    assert found is not None
    assert (found.url, found.username, found.password, found.source) == ("mqtt://broker.lab:1884", "u", "p",
                                                                         "BROKER_HOST/BROKER_PORT")
    assert broker_from_env({"BROKER_HOST": "h"}).url == "mqtt://h:1883"  # type: ignore[union-attr]


def test_ecokit_broker_url_wins() -> None:
    found = broker_from_env({"ECOKIT_BROKER_URL": "mqtts://a:b@h:8883", "BROKER_HOST": "other",
                             "ECOKIT_BROKER_CA": "/ca.pem"})
    assert found is not None
    assert (found.url, found.source, str(found.ca_file)) == ("mqtts://a:b@h:8883", "ECOKIT_BROKER_URL", "/ca.pem")


@pytest.mark.parametrize(("env", "message"), [
    ({"BROKER_PORT": "1883"}, "BROKER_HOST"),
    ({"BROKER_HOST": "h", "BROKER_PORT": "http"}, "BROKER_PORT: 'http' is not a whole number"),
    ({"BROKER_HOST": "h", "BROKER_PORT": "70000"}, "BROKER_PORT: 70000 is outside 1..65535"),
])
def test_bad_broker_variables_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        broker_from_env(env)


def test_qos_and_payload_size_from_the_environment() -> None:
    o = overrides_from_env({"QOS": "2", "PAYLOAD_SIZE": "1024"})
    assert (o.qos, o.payload_size) == (2, 1024)
    assert overrides_from_env({}).is_empty()
    with pytest.raises(ConfigError, match=r"environment: QOS: 3 is outside 0\.\.2"):
        overrides_from_env({"QOS": "3"})
    with pytest.raises(ConfigError, match="PAYLOAD_SIZE"):
        overrides_from_env({"PAYLOAD_SIZE": "big"})
