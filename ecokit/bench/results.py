"""From worker reports to the result of a run (pure, no I/O): figures per phase and overall,
the timeline, warnings, and the SLO verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ecokit.bench.protocol import ConnectReport, PublisherReport, PubTick, SubscriberReport, SubTick
from ecokit.bench.scenario import PhasePlan
from ecokit.bench.slo import SloResult, evaluate
from ecokit.bench.tracking import decode, encode, merge, new_histogram, record_us, summarize
from ecokit.config.slo import Slo, format_value

LAG_WARNING_MS = 100.0


@dataclass
class Figures:
    """What one phase (or the whole run) measured."""

    name: str
    duration_s: float
    publishers: int
    qos: int
    payload_size: int
    offered: str  # the planned total rate, e.g. "1,000/s" or "100 → 10,000/s"
    planned: int
    sent: int = 0
    unsent: int = 0
    expected: int | None = None  # deliveries the subscribers should get (None: no subscribers)
    received: int = 0  # deliveries, duplicates included
    unique: int = 0
    duplicates: int = 0
    reordered: int = 0
    send_rate: float = 0.0
    rate: float | None = None  # unique deliveries/s
    deliveries_per_message: int | None = None  # subscribers (fan-out all), 1 (shared), None (no subscribers)
    latency: dict[str, Any] = field(default_factory=dict)
    send_lag: dict[str, Any] = field(default_factory=dict)
    latency_histogram: str = ""  # HdrHistogram, µs, base64 (merge runs or plot percentiles from it)
    connect: dict[str, Any] = field(default_factory=dict)  # attempts, ok, success, step percentiles (ms)
    puback: dict[str, Any] = field(default_factory=dict)  # publish → PUBACK/PUBCOMP percentiles (ms)
    broker_cpu: float | None = None  # mean CPU of the local broker process over the phase, 1 = one core

    @property
    def lost(self) -> int | None:
        return None if self.expected is None else max(0, self.expected - self.unique)

    @property
    def loss(self) -> float | None:
        if self.expected is None:
            return None
        return 0.0 if self.expected == 0 else (self.lost or 0) / self.expected

    def metrics(self) -> dict[str, float | None]:
        m: dict[str, float | None] = {k: self.latency.get(k) for k in
                                      ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")}
        measured = self.expected is not None
        m.update(loss=self.loss, lost=self.lost,
                 duplicates=self.duplicates if measured else None,
                 reordered=self.reordered if measured else None,
                 unsent=self.unsent, rate=self.rate, send_rate=self.send_rate,
                 send_lag_p99_ms=self.send_lag.get("p99_ms"), send_lag_max_ms=self.send_lag.get("max_ms"),
                 planned_send_rate=self.planned_send_rate, planned_rate=self.planned_rate,
                 connect_success=self.connect.get("success"),
                 connect_p50_ms=self.connect.get("total_ms", {}).get("p50_ms"),
                 connect_p95_ms=self.connect.get("total_ms", {}).get("p95_ms"),
                 connect_p99_ms=self.connect.get("total_ms", {}).get("p99_ms"),
                 connect_max_ms=self.connect.get("total_ms", {}).get("max_ms"),
                 tls_p95_ms=self.connect.get("tls_ms", {}).get("p95_ms"),
                 puback_p50_ms=self.puback.get("p50_ms"), puback_p95_ms=self.puback.get("p95_ms"),
                 puback_p99_ms=self.puback.get("p99_ms"), puback_max_ms=self.puback.get("max_ms"),
                 broker_cpu=self.broker_cpu)
        return m

    @property
    def planned_send_rate(self) -> float | None:
        return self.planned / self.duration_s if self.duration_s > 0 else None

    @property
    def planned_rate(self) -> float | None:
        """Deliveries/s the plan implies (what ``min_rate=100%`` asks for)."""
        if self.deliveries_per_message is None or self.planned_send_rate is None:
            return None
        return self.planned_send_rate * self.deliveries_per_message

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "duration_s": round(self.duration_s, 3), "publishers": self.publishers,
                "qos": self.qos, "payload_size": self.payload_size, "offered": self.offered, "planned": self.planned,
                "sent": self.sent, "unsent": self.unsent, "expected": self.expected, "received": self.received,
                "unique": self.unique, "duplicates": self.duplicates, "reordered": self.reordered, "lost": self.lost,
                "loss": self.loss, "planned_send_rate": _round(self.planned_send_rate),
                "planned_rate": _round(self.planned_rate), "send_rate": round(self.send_rate, 1),
                "rate": None if self.rate is None else round(self.rate, 1), "latency_ms": self.latency,
                "send_lag_ms": self.send_lag, "latency_histogram": self.latency_histogram,
                "connect": self.connect, "puback_ms": self.puback,
                "broker_cpu_percent": None if self.broker_cpu is None else round(self.broker_cpu * 100, 1)}


@dataclass
class BenchResult:
    scenario: str
    description: str
    run_id: str
    target: str
    started_at: str  # ISO 8601, UTC
    settings: dict[str, Any]
    total: Figures
    phases: list[Figures]
    connections: dict[str, Any]
    broker: dict[str, Any]
    timeline: list[dict[str, Any]]
    slo: list[SloResult]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped_early: bool = False
    started_ns: int = 0  # when the first phase began, ns since the epoch (the timeline's t = 0)
    last_send_ns: int = 0  # the last publish of the run, ns since the epoch
    # What the stack's pipeline made of the run (ecokit.bench.pipeline): {} against a bare broker.
    pipeline: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.slo)

    @property
    def violations(self) -> list[SloResult]:
        return [r for r in self.slo if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "description": self.description, "run_id": self.run_id,
            "target": self.target, "started_at": self.started_at, "started_ns": self.started_ns,
            "settings": self.settings,
            "passed": self.passed, "stopped_early": self.stopped_early,
            "total": self.total.to_dict(), "phases": [p.to_dict() for p in self.phases],
            "connections": self.connections, "broker": self.broker,
            "slo": [r.to_dict() for r in self.slo], "warnings": self.warnings, "errors": self.errors,
            "pipeline": self.pipeline, "timeline": self.timeline,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _rate(count: int, planned_s: float, start_ns: int, last_ns: int) -> float:
    """Count per second over the planned time, or longer when the last event came later."""
    span = planned_s
    if last_ns and last_ns > start_ns:
        span = max(span, (last_ns - start_ns) / 1e9)
    return count / span if span > 0 else 0.0


def _window(planned_s: float, start_ns: int, stopped_ns: int | None) -> float:
    """The time a phase (or the run) had: planned, or cut short by a stop."""
    if stopped_ns is None:
        return planned_s
    return max(0.0, min(planned_s, (stopped_ns - start_ns) / 1e9))


def build_result(*, scenario: str, description: str, run_id: str, target: str, started_at: str,
                 settings: dict[str, Any], phases: Sequence[PhasePlan], t0_ns: int, stopped_ns: int | None = None,
                 publishers: Sequence[PublisherReport], subscribers: Sequence[SubscriberReport],
                 subscriber_count: int, shared: bool, slos: Sequence[Slo], timeline: list[dict[str, Any]] | None = None,
                 broker: dict[str, Any] | None = None) -> BenchResult:
    n = len(phases)
    measured = subscriber_count > 0 and bool(subscribers)
    factor = 1 if shared else subscriber_count

    def col(reports: Sequence[Any], name: str) -> list[int]:
        out = [0] * n
        for r in reports:
            for i, v in enumerate(getattr(r, name)[:n]):
                out[i] += v
        return out

    def col_max(reports: Sequence[Any], name: str) -> list[int]:
        out = [0] * n
        for r in reports:
            for i, v in enumerate(getattr(r, name)[:n]):
                out[i] = max(out[i], v)
        return out

    sent, unsent = col(publishers, "sent_by_phase"), col(publishers, "unsent_by_phase")
    last_send = col_max(publishers, "last_send_ns")
    received, unique = col(subscribers, "received_by_phase"), col(subscribers, "unique_by_phase")
    duplicates, reordered = col(subscribers, "duplicates_by_phase"), col(subscribers, "reordered_by_phase")
    last_recv = col_max(subscribers, "last_recv_ns")
    latency = [merge([r.latency_by_phase[i] for r in subscribers if i < len(r.latency_by_phase)]) for i in range(n)]
    lag = [merge([r.lag_by_phase[i] for r in publishers if i < len(r.lag_by_phase)]) for i in range(n)]
    puback = [merge([r.puback_by_phase[i] for r in publishers if i < len(r.puback_by_phase)]) for i in range(n)]
    connects = [[r.connect_by_phase[i] for r in publishers if i < len(r.connect_by_phase)] for i in range(n)]
    setup = [r.connect_setup for r in publishers]
    cpu = _broker_cpu_by_phase(timeline or [], phases)

    figures: list[Figures] = []
    for i, plan in enumerate(phases):
        start_ns = t0_ns + int(plan.start * 1e9)
        fig = Figures(plan.name, plan.duration, plan.publishers, plan.qos, plan.payload_size, plan.describe_rate(),
                      plan.planned(), sent=sent[i], unsent=unsent[i],
                      expected=sent[i] * factor if measured else None, received=received[i], unique=unique[i],
                      duplicates=duplicates[i], reordered=reordered[i],
                      send_rate=_rate(sent[i], _window(plan.duration, start_ns, stopped_ns), start_ns, last_send[i]),
                      rate=(_rate(unique[i], _window(plan.duration, start_ns, stopped_ns), start_ns, last_recv[i])
                            if measured else None),
                      latency=summarize(latency[i]), send_lag=summarize(lag[i]),
                      latency_histogram=encode(latency[i]) if latency[i].get_total_count() else "",
                      deliveries_per_message=factor if measured else None,
                      connect=connect_summary(connects[i]), puback=summarize(puback[i]) if puback[i].get_total_count()
                      else {}, broker_cpu=cpu[i])
        figures.append(fig)

    all_latency, all_lag, all_puback = new_histogram(), new_histogram(), new_histogram()
    for h in latency:
        all_latency.add(h)
    for h in lag:
        all_lag.add(h)
    for h in puback:
        all_puback.add(h)
    cpu_all = [row["broker_cpu_percent"] for row in timeline or [] if row.get("broker_cpu_percent") is not None]
    duration = sum(p.duration for p in phases)
    qos_values = sorted({p.qos for p in phases})
    sizes = sorted({p.payload_size for p in phases})
    rates = [p.describe_rate() for p in phases]
    total = Figures(
        "total", duration, max(p.publishers for p in phases), qos_values[-1], sizes[-1],
        rates[0] if len(set(rates)) == 1 else "varies by phase", sum(f.planned for f in figures),
        sent=sum(sent), unsent=sum(unsent), expected=sum(sent) * factor if measured else None,
        received=sum(received), unique=sum(unique), duplicates=sum(duplicates), reordered=sum(reordered),
        send_rate=_rate(sum(sent), _window(duration, t0_ns, stopped_ns), t0_ns, max(last_send, default=0)),
        rate=(_rate(sum(unique), _window(duration, t0_ns, stopped_ns), t0_ns, max(last_recv, default=0))
              if measured else None),
        latency=summarize(all_latency), send_lag=summarize(all_lag),
        latency_histogram=encode(all_latency) if all_latency.get_total_count() else "",
        deliveries_per_message=factor if measured else None,
        connect=connect_summary(setup + [c for per in connects for c in per]),
        puback=summarize(all_puback) if all_puback.get_total_count() else {},
        broker_cpu=sum(cpu_all) / len(cpu_all) / 100 if cpu_all else None)

    connections: dict[str, Any] = {
        "publishers": _connections(publishers, sum(r.clients for r in publishers)),
        "subscribers": _connections(subscribers, subscriber_count),
    }
    connections["publishers"]["acked"] = sum(r.acked for r in publishers)
    grown = sum(r.rss_kb_connected - r.rss_kb_before for r in publishers if r.rss_kb_connected)
    before = sum(r.connected_before_run for r in publishers)
    if grown > 0 and before:
        # Resident memory the publisher processes grew by while their clients connected, per connection.
        connections["publishers"]["memory_kb_per_connection"] = round(grown / before, 2)
    if total.sent:
        connections["publishers"]["cpu_us_per_message"] = round(connections["publishers"]["cpu_s"] * 1e6 / total.sent,
                                                                2)
    connections["publishers"]["refused"] = sum(r.refused for r in publishers)
    connections["publishers"]["unacked"] = sum(r.unacked for r in publishers)
    connections["subscribers"]["sessions_lost"] = sum(r.sessions_lost for r in subscribers)
    subscribe = new_histogram()
    for r in subscribers:
        for us in r.subscribe_us:
            record_us(subscribe, us)
    connections["subscribers"]["subscribe_ms"] = summarize(subscribe)
    connections["publishers"]["connect_before_run"] = connect_summary(setup)
    per_sub: dict[int, int] = {}
    for r in subscribers:
        per_sub.update(r.per_subscriber)
    connections["subscribers"]["unique_per_subscriber"] = {str(k): v for k, v in sorted(per_sub.items())}

    overall = total.metrics()
    overall.update(reconnects=connections["publishers"]["reconnects"] + connections["subscribers"]["reconnects"],
                   connect_failures=(connections["publishers"]["connect_failures"]
                                     + connections["subscribers"]["connect_failures"]),
                   errors=connections["publishers"]["errors"] + connections["subscribers"]["errors"],
                   subscribe_max_ms=connections["subscribers"]["subscribe_ms"].get("max_ms"))
    by_phase = {f.name: f.metrics() for f in figures}
    details: dict[str | None, dict[str, str]] = {None: _details(total)}
    for f in figures:
        details[f.name] = _details(f) | {k: "only measured for the whole run"
                                          for k in ("reconnects", "connect_failures", "errors")}
    verdicts = evaluate(slos, overall, by_phase, details)

    sent_by_publisher: dict[int, int] = {}
    for pub in publishers:
        sent_by_publisher.update(pub.sent_by_publisher)
    if measured:
        connections["worst_publishers"] = _worst_publishers(subscribers, sent_by_publisher, subscriber_count, shared)

    errors = [e for p in publishers for e in p.last_errors] + [e for s in subscribers for e in s.last_errors]
    warnings = _warnings(figures, total, publishers, subscribers, broker or {})
    return BenchResult(scenario, description, run_id, target, started_at, settings, total, figures, connections,
                       broker or {}, timeline or [], verdicts, warnings, errors[-20:],
                       stopped_early=stopped_ns is not None or any(r.stopped_early for r in publishers),
                       started_ns=t0_ns, last_send_ns=max(last_send, default=0))


def connect_summary(reports: Sequence[ConnectReport]) -> dict[str, Any]:
    """Attempts, outcomes, success ratio and step percentiles (ms) of some connects ({} when none)."""
    attempts = sum(r.attempts for r in reports)
    if not attempts:
        return {}
    ok = sum(r.ok for r in reports)
    out: dict[str, Any] = {"attempts": attempts, "ok": ok, "failed": sum(r.failed for r in reports),
                           "refused": sum(r.refused for r in reports), "success": ok / attempts}
    for step in ("total", "tcp", "tls", "ws", "connack"):
        histogram = merge([getattr(r, step) for r in reports])
        if histogram.get_total_count():
            out[f"{step}_ms"] = summarize(histogram)
    return out


def _broker_cpu_by_phase(timeline: Sequence[Mapping[str, Any]], phases: Sequence[PhasePlan]) -> list[float | None]:
    """Mean broker CPU (1 = one core) over each phase's timeline rows that have a sample."""
    out: list[float | None] = []
    for plan in phases:
        values = [row["broker_cpu_percent"] for row in timeline
                  if row.get("broker_cpu_percent") is not None and row.get("phase") == plan.name]
        out.append(sum(values) / len(values) / 100 if values else None)
    return out


def _connections(reports: Sequence[Any], clients: int) -> dict[str, Any]:
    return {"clients": clients, "ever_connected": sum(r.ever_connected for r in reports),
            "connected_at_end": sum(r.connected_at_end for r in reports),
            "connect_failures": sum(r.connect_failures for r in reports),
            "reconnects": sum(r.reconnects for r in reports), "disconnects": sum(r.disconnects for r in reports),
            "errors": sum(r.errors for r in reports), "cpu_s": round(sum(r.cpu_s for r in reports), 3)}


def _details(f: Figures) -> dict[str, str]:
    out: dict[str, str] = {}
    if f.expected is not None:
        out["loss"] = f"{f.lost:,} of {f.expected:,}"
    if f.connect:
        out["connect_success"] = f"{f.connect['ok']:,} of {f.connect['attempts']:,} attempts"
    return out


def _worst_publishers(subscribers: Sequence[SubscriberReport], sent: Mapping[int, int], subscriber_count: int,
                      shared: bool, top: int = 5) -> list[dict[str, int]]:
    got: dict[int, int] = {}
    for r in subscribers:
        for (_, pub), count in r.streams.items():
            got[pub] = got.get(pub, 0) + count
    factor = 1 if shared else subscriber_count
    lost = [(sent[p] * factor - got.get(p, 0), p) for p in sent if sent[p] * factor > got.get(p, 0)]
    lost.sort(reverse=True)
    return [{"publisher": p, "sent": sent[p], "lost": n} for n, p in lost[:top]]


def _warnings(figures: list[Figures], total: Figures, publishers: Sequence[PublisherReport],
              subscribers: Sequence[SubscriberReport], broker: Mapping[str, Any]) -> list[str]:
    out = []
    for f in figures:
        p99 = f.send_lag.get("p99_ms")
        if p99 is not None and p99 > LAG_WARNING_MS:
            out.append(f"phase {f.name}: the publishers fell behind their schedule (send lag p99 "
                       f"{format_value(p99, 'ms')}), so the load offered was lower than planned; run with more "
                       "--workers or fewer publishers")
    if total.sent + total.unsent < total.planned and not any(r.stopped_early for r in publishers):
        out.append(f"{total.planned - total.sent - total.unsent:,} planned messages were never attempted")
    if total.unsent:
        out.append(f"{total.unsent:,} publishes were refused by the client library (QoS 0 while disconnected)")
    refused = sum(r.refused for r in publishers)
    if refused:
        out.append(f"the broker refused {refused:,} publishes (a negative PUBACK/PUBREC, e.g. the ACL): they count "
                   "as lost")
    unacked = sum(r.unacked for r in publishers)
    if unacked:
        out.append(f"{unacked:,} QoS 1/2 publishes were still unacknowledged when the run ended")
    lost_sessions = sum(r.sessions_lost for r in subscribers)
    if lost_sessions:
        out.append(f"subscribers reconnected {lost_sessions:,} time(s) without their session: the broker did not keep "
                   "it, so what was published meanwhile never reached them")
    foreign = sum(r.foreign for r in subscribers)
    if foreign:
        out.append(f"{foreign:,} messages on the subscription were not this run's (another bench, or other "
                   "traffic on the same topics)")
    anomalies = sum(r.clock_anomalies for r in subscribers)
    if anomalies:
        out.append(f"{anomalies:,} messages arrived before their send time: the clocks of sender and receiver "
                   "disagree, latencies are unreliable")
    process = broker.get("process", {})
    peak = process.get("cpu_percent_max") if isinstance(process, Mapping) else None
    if peak is not None and peak >= 95:
        out.append(f"the broker was the limit: its process (pid {process.get('pid')}) used {peak:.0f}% of a core at "
                   f"its busiest second (mean {process.get('cpu_percent_mean', 0):.0f}%); Mosquitto serves all "
                   "clients on one thread, so more load from the clients cannot go through")
    sys = broker.get("sys", {})
    dropped = sys.get("publish_dropped") if isinstance(sys, Mapping) else None
    if dropped:
        out.append(f"the broker reports {dropped:,.0f} dropped publishes during the run ($SYS "
                   "publish/messages/dropped; queue limits such as max_queued_messages)")
    return out


# -- timeline ------------------------------------------------------------------------------


class Timeline:
    """One row per tick, merged from every worker's tick reports."""

    def __init__(self, phases: Sequence[PhasePlan], tick: float) -> None:
        self.phases = phases
        self.tick = tick
        self._pub: dict[int, dict[int, PubTick]] = {}  # tick -> worker -> report
        self._sub: dict[int, dict[int, SubTick]] = {}
        self._extra: dict[int, dict[str, Any]] = {}

    def add_pub(self, worker: int, tick: PubTick) -> None:
        self._pub.setdefault(tick.tick, {})[worker] = tick

    def add_sub(self, worker: int, tick: SubTick) -> None:
        self._sub.setdefault(tick.tick, {})[worker] = tick

    def add_extra(self, tick: int, values: Mapping[str, Any]) -> None:
        self._extra.setdefault(tick, {}).update(values)

    def phase_at(self, t: float) -> PhasePlan | None:
        for p in self.phases:
            if p.start <= t < p.end:
                return p
        return None

    def offered_at(self, t: float) -> float:
        """The planned total rate at ``t`` seconds after the start (0 outside the phases)."""
        p = self.phase_at(t)
        if p is None:
            return 0.0
        fraction = (t - p.start) / p.duration
        online = p.publishers
        if p.windows:  # connection-shaped: only the publishers planned online at t send
            online = sum(1 for on, off in p.windows[:p.publishers] if on <= t < off)
        return (p.rate_start + (p.rate_end - p.rate_start) * fraction) * online

    def latest(self) -> tuple[dict[int, PubTick], dict[int, SubTick]]:
        """The most recent tick report of every worker."""
        pubs: dict[int, PubTick] = {}
        subs: dict[int, SubTick] = {}
        for k in sorted(self._pub):
            pubs.update(self._pub[k])
        for k in sorted(self._sub):
            subs.update(self._sub[k])
        return pubs, subs

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        pubs: dict[int, PubTick] = {}  # the latest report of each worker as of the current tick
        subs: dict[int, SubTick] = {}
        prev_sent = prev_unique = prev_connects = prev_failed = 0
        for k in sorted(set(self._pub) | set(self._sub)):
            pubs.update(self._pub.get(k, {}))
            now_subs = self._sub.get(k, {})
            subs.update(now_subs)
            sent = sum(t.sent for t in pubs.values())
            unique = sum(t.unique for t in subs.values())
            t = k * self.tick
            phase = self.phase_at(t - self.tick / 2)
            count = sum(s.count for s in now_subs.values())
            row: dict[str, Any] = {
                "t": round(t, 3), "phase": phase.name if phase else None,
                "offered": round(self.offered_at(t - self.tick / 2)),
                "sent": sent - prev_sent, "received": unique - prev_unique,
                "p50_ms": _ms(max(s.p50_us for s in now_subs.values())) if count else None,
                "p99_ms": _ms(max(s.p99_us for s in now_subs.values())) if count else None,
                "max_ms": _ms(max(s.max_us for s in now_subs.values())) if count else None,
                "publishers_connected": sum(p.connected for p in pubs.values()),
                "subscribers_connected": sum(s.connected for s in subs.values()),
            }
            connects = sum(p.connects for p in pubs.values())
            failed = sum(p.connect_failed for p in pubs.values())
            row["connects"] = connects - prev_connects
            row["connect_failures"] = failed - prev_failed
            row.update(self._extra.get(k, {}))
            rows.append(row)
            prev_sent, prev_unique, prev_connects, prev_failed = sent, unique, connects, failed
        return rows


def _ms(micros: int) -> float:
    return round(micros / 1000, 3)


def percentiles_from(encoded: str) -> dict[str, Any]:
    """Summary of an encoded histogram (e.g. ``latency_histogram`` of a saved result)."""
    return summarize(decode(encoded)) if encoded else summarize(new_histogram())

