"""What the coordinator and its worker processes tell each other (plain, picklable data).

    coordinator ──job (process argument)──▶ worker
    worker ──("ready", Ready)──▶ coordinator          clients connected (and subscribed)
    coordinator ──("start", t0_ns)──▶ worker            the run begins at this wall-clock time
    worker ──("tick", PubTick | SubTick)──▶ ...         once per tick, aligned on t0
    coordinator ──("stop",)──▶ publishers               stop early (Ctrl-C), then drain
    publishers ──("done", PublisherReport)──▶ ...       after the last phase and the drain
    coordinator ──("finish",)──▶ subscribers            every expected delivery is in (or settled)
    subscribers ──("done", SubscriberReport)──▶ ...
    worker ──("error", text)──▶ coordinator             cannot go on (refused connection, crash)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ecokit.bench.scenario import ConnEvent, PhasePlan
from ecokit.mqtt.target import BrokerTarget, ClientAuth


@dataclass(frozen=True)
class ClientSettings:
    protocol: int = 5  # 5 or 4 (MQTT 3.1.1)
    keepalive: int = 30
    session_expiry: int = 60  # MQTT 5: a reconnect within this many seconds resumes the session
    connect_timeout: float = 30.0
    connect_concurrency: int = 64
    max_inflight: int = 100  # unacknowledged QoS 1/2 publishes per publisher
    backoff_min: float = 0.2
    backoff_max: float = 5.0


@dataclass(frozen=True)
class PublisherClient:
    index: int  # global publisher number (in the payload)
    client_id: str
    topic: str
    auth: ClientAuth


@dataclass(frozen=True)
class SubscriberClient:
    index: int
    client_id: str
    filter: str  # including $share/<group>/ for a shared subscription
    qos: int
    auth: ClientAuth


@dataclass(frozen=True)
class PublisherJob:
    worker: int
    target: BrokerTarget
    clients: tuple[PublisherClient, ...]
    phases: tuple[PhasePlan, ...]
    run_tag: int
    payload: str  # binary | json
    settings: ClientSettings
    drain: float  # seconds to wait for acknowledgements after the last phase
    tick: float
    at_start: int = -1  # publishers (global index) below this connect before the run; -1: all of them
    events: tuple[ConnEvent, ...] = ()  # this worker's share of the connection plan


@dataclass(frozen=True)
class SubscriberJob:
    worker: int
    target: BrokerTarget
    clients: tuple[SubscriberClient, ...]
    phases: int
    run_tag: int
    payload: str
    shared: bool  # one stream per publisher for the whole group, not per subscriber
    library: str  # "fast" (ecokit.mqtt.fast, MQTT 5, QoS 0/1) or "paho" (QoS 2, MQTT 3.1.1)
    settings: ClientSettings
    tick: float


@dataclass(frozen=True)
class Ready:
    clients: int
    connected: int
    connect_failures: int
    errors: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # the broker said no (credentials, authorization): not worth retrying


@dataclass(frozen=True)
class PubTick:
    tick: int
    sent: int  # totals since the start
    unsent: int
    acked: int
    connected: int
    reconnects: int
    errors: int
    phase: int  # the phase being sent (-1 before, len(phases) after)
    connects: int = 0  # successful connects since the start (reconnects and planned ones included)
    connect_failed: int = 0


@dataclass(frozen=True)
class SubTick:
    tick: int
    received: int  # totals since the start (deliveries, duplicates included)
    unique: int
    duplicates: int
    connected: int
    reconnects: int
    errors: int
    # Latency of what arrived during this tick, µs (0 when nothing arrived).
    count: int = 0
    p50_us: int = 0
    p99_us: int = 0
    max_us: int = 0


@dataclass
class ClientsReport:
    """What a publisher or subscriber worker says of its clients' connections at the end."""

    worker: int
    clients: int
    ever_connected: int = 0
    connected_at_end: int = 0
    connect_failures: int = 0
    reconnects: int = 0
    disconnects: int = 0
    errors: int = 0
    last_errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0  # CPU seconds (user + system) of the worker from the run's start to its report (no setup)
    rss_kb_before: int = 0  # the worker's resident memory before its clients connected
    rss_kb_connected: int = 0  # ... once the clients planned before the run were connected
    connected_before_run: int = 0  # how many those were


@dataclass
class ConnectReport:
    """Connection attempts of one phase (or before the first: setup) and how long each step took."""

    attempts: int = 0
    ok: int = 0
    failed: int = 0  # no CONNACK: the transport failed or timed out
    refused: int = 0  # a CONNACK refusing the connection
    # Encoded HdrHistograms, µs: the whole connect, then each step (TCP, TLS, websocket, CONNECT → CONNACK).
    total: str = ""
    tcp: str = ""
    tls: str = ""
    ws: str = ""
    connack: str = ""


@dataclass
class PublisherReport(ClientsReport):
    sent_by_phase: list[int] = field(default_factory=list)
    unsent_by_phase: list[int] = field(default_factory=list)
    first_send_ns: list[int] = field(default_factory=list)  # per phase, 0 when nothing was sent
    last_send_ns: list[int] = field(default_factory=list)
    lag_by_phase: list[str] = field(default_factory=list)  # encoded histograms, µs late vs schedule
    sent_by_publisher: dict[int, int] = field(default_factory=dict)  # last sequence number = messages sent
    acked: int = 0
    refused: int = 0  # acknowledgements with a failure reason (e.g. not authorized by the ACL)
    unacked: int = 0  # QoS 1/2 messages still without acknowledgement at the end
    stopped_early: bool = False
    connect_setup: ConnectReport = field(default_factory=ConnectReport)  # before the first phase
    connect_by_phase: list[ConnectReport] = field(default_factory=list)
    puback_by_phase: list[str] = field(default_factory=list)  # encoded histograms, µs publish → ack


@dataclass
class SubscriberReport(ClientsReport):
    received_by_phase: list[int] = field(default_factory=list)  # deliveries, duplicates included
    unique_by_phase: list[int] = field(default_factory=list)
    duplicates_by_phase: list[int] = field(default_factory=list)
    reordered_by_phase: list[int] = field(default_factory=list)
    latency_by_phase: list[str] = field(default_factory=list)  # encoded histograms, µs
    first_recv_ns: list[int] = field(default_factory=list)
    last_recv_ns: list[int] = field(default_factory=list)
    # Unique deliveries per stream: key (subscriber, publisher), or (-1, publisher) when shared.
    streams: dict[tuple[int, int], int] = field(default_factory=dict)
    per_subscriber: dict[int, int] = field(default_factory=dict)  # unique deliveries each subscriber got
    sessions_lost: int = 0  # reconnections the broker answered without the session (subscription redone)
    subscribe_us: list[int] = field(default_factory=list)  # SUBSCRIBE → SUBACK of every subscription made
    foreign: int = 0  # messages on the filter that are not this run's (other runs, other publishers)
    clock_anomalies: int = 0  # received "before" they were sent: the clocks disagree
