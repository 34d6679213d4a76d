"""Scenarios (pure, no I/O): the built-ins, overrides from flags, and the send schedule.

A scenario (``ecokit.config.bench.ScenarioSpec``) compiles into :class:`PhasePlan` s with
absolute start offsets and per-publisher rates. Within a phase the rate of each publisher
changes linearly from ``rate_start`` to ``rate_end``; message ``k`` of publisher ``i``
(``k`` = 0, 1, ...) is due when the messages the rate allows since the phase began reach
``k + i / publishers`` (the offset spreads publishers evenly instead of sending in lock
step). :func:`due_offset` is that time, :func:`messages_of` how many fit in the phase.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ecokit.config.bench import BenchConfig, PhaseSpec, ScenarioSpec
from ecokit.errors import ConfigError, UsageError

DEFAULT_TOPIC = "bench/{run}/{publisher}"
DEVICE_TOPIC = "fleet/{device}/bench/{run}"


def _builtin(data: dict[str, Any]) -> ScenarioSpec:
    return ScenarioSpec.model_validate(data)


BUILTIN: dict[str, ScenarioSpec] = {
    "steady": _builtin({
        "description": "constant load: 100 publishers, 1,000 msg/s in total, for 1 minute",
        "publishers": 100,
        "phases": [{"name": "steady", "duration": "60s", "total_rate": 1000}],
    }),
    "ramp": _builtin({
        "description": "rate rising linearly from 100 to 10,000 msg/s over 1 minute: where do latency and "
                       "loss give way?",
        "publishers": 100,
        "phases": [{"name": "ramp", "duration": "60s", "total_rate": 100, "ramp_to": 10_000}],
    }),
    "spike": _builtin({
        "description": "1,000 msg/s, a 10 s burst at 10,000 msg/s, then 1,000 msg/s again: is the burst "
                       "absorbed, and does latency recover?",
        "publishers": 100,
        "phases": [
            {"name": "baseline", "duration": "20s", "total_rate": 1000},
            {"name": "spike", "duration": "10s", "total_rate": 10_000},
            {"name": "recovery", "duration": "20s", "total_rate": 1000},
        ],
    }),
    "soak": _builtin({
        "description": "1,000 msg/s for 30 minutes, split into start / middle / end so drift in latency or "
                       "loss shows phase by phase",
        "publishers": 100,
        "phases": [
            {"name": "start", "duration": "5m", "total_rate": 1000},
            {"name": "middle", "duration": "20m", "total_rate": 1000},
            {"name": "end", "duration": "5m", "total_rate": 1000},
        ],
    }),
    "connect-ramp": _builtin({
        "description": "1,000 publishers connect at 100/s while each sends 1 msg/s: connect latency and success "
                       "under a steady stream of new connections",
        "publishers": 1000,
        "phases": [
            {"name": "connect", "duration": "10s", "connect_rate": 100, "rate": 1, "slo": {"connect_success": "99%"}},
            {"name": "hold", "duration": "10s", "rate": 1},
        ],
    }),
    "join-spike": _builtin({
        "description": "200 connected publishers at 1 msg/s, then 2,000 more join within 30 s (the fleet coming "
                       "back after an outage); connect latency of the spike",
        "publishers": 2200,
        "connected_at_start": 200,
        "phases": [
            {"name": "baseline", "duration": "10s", "rate": 1},
            {"name": "join", "duration": "30s", "join": 2000, "rate": 1,
             "slo": {"connect_success": "99%", "connect_p95_ms": 1000}},
            {"name": "after", "duration": "10s", "rate": 1},
        ],
    }),
    "churn": _builtin({
        "description": "500 publishers at 1 msg/s; 5% of them disconnect and reconnect every second",
        "publishers": 500,
        "phases": [
            {"name": "steady", "duration": "10s", "rate": 1},
            {"name": "churn", "duration": "30s", "rate": 1, "churn": 0.05},
            {"name": "settle", "duration": "10s", "rate": 1},
        ],
    }),
    "fleet-ramp": _builtin({
        "description": "a fleet coming online: 0 → 5,000 devices over 10 minutes, each publishing 1 msg/s, then "
                       "holding (scale with --publishers and --duration)",
        "publishers": 5000,
        "phases": [
            {"name": "ramp", "duration": "10m", "ramp_clients": 5000, "rate": 1},
            {"name": "hold", "duration": "2m", "rate": 1},
        ],
    }),
}


@dataclass(frozen=True)
class Overrides:
    """What flags (or the environment) change in a scenario; None leaves it alone."""

    duration: float | None = None  # seconds: every phase scaled so the whole run lasts this long
    publishers: int | None = None  # the busiest phase gets this many; the others scale with it
    rate: float | None = None  # msg/s: the peak total rate; every phase's rate scales with it
    qos: int | None = None  # every phase
    payload_size: int | None = None  # every phase
    payload: str | None = None
    topic: str | None = None
    subscribers: int | None = None
    fanout: str | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in self.__dict__.values())


def scenario_names(config: BenchConfig | None = None) -> list[str]:
    names = list(BUILTIN)
    if config is not None:
        names += [n for n in config.scenarios if n not in BUILTIN]
    return names


def find_scenario(name: str, config: BenchConfig | None = None) -> ScenarioSpec:
    """A scenario of ecokit.yaml's ``bench.scenarios`` (they win over built-ins of the same name),
    else a built-in."""
    if config is not None and name in config.scenarios:
        return config.scenarios[name]
    if name in BUILTIN:
        return BUILTIN[name]
    raise UsageError(f"no bench scenario {name!r} (known: {', '.join(scenario_names(config))})",
                     hint="declare your own under bench.scenarios in ecokit.yaml (docs/bench.md)")


def apply_overrides(spec: ScenarioSpec, o: Overrides) -> ScenarioSpec:
    """The scenario with the overrides applied, validated again (UsageError on a bad result)."""
    if o.is_empty():
        return spec
    data = spec.model_dump(exclude_defaults=False)
    phases: list[dict[str, Any]] = data["phases"]
    if o.duration is not None:
        if o.duration <= 0:
            raise UsageError("--duration must be positive")
        total = sum(p.seconds for p in spec.phases)
        factor = o.duration / total
        for phase, original in zip(phases, spec.phases, strict=True):
            phase["duration"] = round(original.seconds * factor, 6)
            if original.join_within is not None:
                phase["join_within"] = round(original.join_seconds * factor, 6)
            if original.connect_rate is not None:
                phase["connect_rate"] = original.connect_rate / factor  # the same clients connect
    if o.publishers is not None:
        busiest = max(p.publishers or spec.publishers for p in spec.phases)
        factor = o.publishers / busiest
        data["publishers"] = max(1, round(spec.publishers * factor))
        if data.get("connected_at_start") is not None:
            data["connected_at_start"] = round(data["connected_at_start"] * factor)
        for phase in phases:
            for key in ("publishers", "ramp_clients", "join", "leave"):
                if phase.get(key) is not None:
                    phase[key] = max(0 if key == "ramp_clients" else 1, round(phase[key] * factor))
    if o.rate is not None:
        if o.rate <= 0:
            raise UsageError("--rate must be positive")
        peak = max(_peak_total(ScenarioSpec.model_validate(data), i) for i in range(len(phases)))
        if peak <= 0:
            raise UsageError("--rate: the scenario sends nothing, so there is no rate to scale")
        factor = o.rate / peak
        for phase in phases:
            for key in ("rate", "total_rate", "ramp_to"):
                if phase[key] is not None:
                    phase[key] = phase[key] * factor
    if o.qos is not None:
        data["qos"] = o.qos
        for phase in phases:
            phase["qos"] = None
    if o.payload_size is not None:
        data["payload_size"] = o.payload_size
        for phase in phases:
            phase["payload_size"] = None
    for key in ("payload", "topic", "subscribers", "fanout"):
        value = getattr(o, key)
        if value is not None:
            data[key] = value
    try:
        return ScenarioSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"the scenario with these options is invalid: {where + ': ' if where else ''}"
                         f"{first['msg'].removeprefix('Value error, ')}") from None


def _peak_total(spec: ScenarioSpec, index: int) -> float:
    phase = spec.phases[index]
    publishers = phase.publishers or spec.publishers
    if phase.ramp_clients is not None:
        publishers = max(publishers if phase.publishers else 0, phase.ramp_clients)
    start = phase.total_rate if phase.total_rate is not None else (phase.rate or 0.0) * publishers
    end = start if phase.ramp_to is None else (
        phase.ramp_to if phase.total_rate is not None else phase.ramp_to * publishers)
    return max(start, end)


def validate_scenario(data: Mapping[str, Any], *, name: str = "scenario") -> ScenarioSpec:
    """A scenario from a mapping (e.g. a test's literal), ConfigError naming the key at fault."""
    try:
        return ScenarioSpec.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(first["msg"].removeprefix("Value error, "), source=name, key=where or None) from None


# -- the compiled schedule ------------------------------------------------------------------


@dataclass(frozen=True)
class PhasePlan:
    index: int
    name: str
    start: float  # seconds after the run's start
    duration: float
    publishers: int
    rate_start: float  # msg/s of each publisher at the start of the phase
    rate_end: float  # ... and at its end
    qos: int
    payload_size: int
    # When the scenario shapes connections: each publisher's (online from, online until) in run
    # time; a publisher sends only while it is planned online. Empty: every publisher always is.
    windows: tuple[tuple[float, float], ...] = ()

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def total_rate_start(self) -> float:
        return self.rate_start * self.publishers

    @property
    def total_rate_end(self) -> float:
        return self.rate_end * self.publishers

    def per_publisher(self) -> float:
        """Messages each publisher may send in the phase (before the stagger)."""
        return (self.rate_start + self.rate_end) / 2 * self.duration

    def planned(self) -> int:
        """Messages all publishers together send in the phase."""
        return sum(messages_of(self, i) for i in range(self.publishers))

    def window_of(self, publisher: int) -> tuple[float, float] | None:
        """The part of the phase (seconds from its start) ``publisher`` is planned online; None: never."""
        if not self.windows:
            return 0.0, self.duration
        if publisher >= len(self.windows):
            return None
        on, off = self.windows[publisher]
        lo, hi = max(0.0, on - self.start), min(self.duration, off - self.start)
        return (lo, hi) if hi > lo else None

    def describe_rate(self) -> str:
        a, b = self.total_rate_start, self.total_rate_end
        rate = f"{_fmt_rate(a)}/s" if math.isclose(a, b) else f"{_fmt_rate(a)} → {_fmt_rate(b)}/s"
        return f"up to {rate}" if self.windows and a + b > 0 else rate


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.3g}"


def compile_phases(spec: ScenarioSpec) -> tuple[PhasePlan, ...]:
    connections = compile_connections(spec)
    windows = connections.windows() if connections.shaped else ()
    plans = []
    start = 0.0
    for index, phase in enumerate(spec.phases):
        publishers = phase.publishers or (connections.busiest_in[index] if connections.shaped else spec.publishers)
        duration = phase.seconds
        if phase.rate is not None:
            rate_start = phase.rate
            rate_end = phase.ramp_to if phase.ramp_to is not None else phase.rate
        else:
            assert phase.total_rate is not None
            rate_start = phase.total_rate / publishers
            rate_end = (phase.ramp_to if phase.ramp_to is not None else phase.total_rate) / publishers
        plans.append(PhasePlan(index, phase.name, start, duration, max(1, publishers), rate_start, rate_end,
                               phase.qos if phase.qos is not None else spec.qos,
                               phase.payload_size or spec.payload_size, windows))
        start += duration
    return tuple(plans)


def stagger(publisher: int, publishers: int) -> float:
    return publisher / publishers


def due_offset(rate_start: float, rate_end: float, duration: float, m: float) -> float | None:
    """Seconds into a phase at which ``m`` messages are due (None: not within the phase).

    Solves ``a*t + (b - a)*t**2 / (2*D) = m`` for the rate going linearly from a to b over D.
    """
    a, b = rate_start, rate_end
    if a <= 0 and b <= 0:
        return None  # a pause: nothing is due
    if m <= 0:
        return 0.0
    c = (b - a) / duration
    disc = a * a + 2 * c * m
    if disc < 0:
        return None
    denominator = a + math.sqrt(disc)
    if denominator <= 0:
        return None
    t = 2 * m / denominator
    return t if t < duration else None


def messages_due(rate_start: float, rate_end: float, duration: float, t: float) -> float:
    """How many messages of one publisher are due ``t`` seconds into a phase (before the stagger)."""
    return rate_start * t + (rate_end - rate_start) * t * t / (2 * duration)


def first_message(phase: PhasePlan, publisher: int, t: float) -> int:
    """The number (k = 0, 1, ...) of ``publisher`` 's first message due at or after ``t`` in ``phase``."""
    if t <= 0:
        return 0
    due = messages_due(phase.rate_start, phase.rate_end, phase.duration, t)
    return max(0, math.ceil(due - stagger(publisher, phase.publishers) - 1e-9))


def messages_of(phase: PhasePlan, publisher: int) -> int:
    """How many messages ``publisher`` sends in ``phase`` (0 when it does not take part)."""
    if publisher >= phase.publishers:
        return 0
    window = phase.window_of(publisher)
    if window is None:
        return 0
    if window != (0.0, phase.duration):
        lo, hi = window
        first = first_message(phase, publisher, lo)
        end = first_message(phase, publisher, hi) if hi < phase.duration else _all_messages(phase, publisher)
        return max(0, end - first)
    return _all_messages(phase, publisher)


def _all_messages(phase: PhasePlan, publisher: int) -> int:
    total = phase.per_publisher()
    offset = stagger(publisher, phase.publishers)
    if total <= offset:
        return 0
    count = math.ceil(total - offset)
    # Floating point at the boundary: the last candidate must fall strictly inside the phase.
    while count > 0 and due_offset(phase.rate_start, phase.rate_end, phase.duration, count - 1 + offset) is None:
        count -= 1
    return count


# -- connections ------------------------------------------------------------------------------------

CONNECT, DISCONNECT, RECONNECT = "connect", "disconnect", "reconnect"


@dataclass(frozen=True)
class ConnEvent:
    t: float  # seconds after the run's start
    publisher: int
    kind: str  # connect | disconnect | reconnect (churn: disconnect and connect again at once)
    phase: int


@dataclass(frozen=True)
class ConnectionPlan:
    """Who connects when. Publishers ``0 .. at_start - 1`` connect before the first phase; the
    events (sorted by time) bring in the others, take some away, or churn them."""

    at_start: int
    clients: int  # publishers the run needs in all
    events: tuple[ConnEvent, ...]
    busiest_in: tuple[int, ...]  # per phase: the most publishers planned online at once
    shaped: bool  # some phase changes the connections

    def windows(self) -> tuple[tuple[float, float], ...]:
        """Per publisher: (online from, online until) in run time (-1: before the run; inf: to the end)."""
        on = [-1.0 if i < self.at_start else math.inf for i in range(self.clients)]
        off = [math.inf] * self.clients
        for e in self.events:
            if e.kind == CONNECT:
                on[e.publisher] = e.t
            elif e.kind == DISCONNECT:
                off[e.publisher] = e.t
        return tuple(zip(on, off, strict=True))

    def connects_in(self, phase: int) -> int:
        return sum(1 for e in self.events if e.phase == phase and e.kind in (CONNECT, RECONNECT))


def compile_connections(spec: ScenarioSpec) -> ConnectionPlan:
    shaped = any(p.connection_keys() for p in spec.phases)
    busiest = max(p.publishers or spec.publishers for p in spec.phases)
    if not shaped:
        return ConnectionPlan(busiest, busiest, (), tuple(p.publishers or spec.publishers for p in spec.phases),
                              False)
    growing = any(p.ramp_clients is not None or p.join or p.connect_rate for p in spec.phases)
    at_start = spec.connected_at_start if spec.connected_at_start is not None else (0 if growing else busiest)
    online = list(range(at_start))  # in the order they connected
    next_index = at_start
    events: list[ConnEvent] = []
    busiest_in = []
    start = 0.0
    for index, phase in enumerate(spec.phases):
        d = phase.seconds
        most = len(online)
        if phase.ramp_clients is not None and phase.ramp_clients != len(online):
            change = phase.ramp_clients - len(online)
            n = abs(change)
            for j in range(n):
                t = start + d * j / n
                if change > 0:
                    events.append(ConnEvent(t, next_index, CONNECT, index))
                    online.append(next_index)
                    next_index += 1
                else:
                    events.append(ConnEvent(start + d * (j + 1) / (n + 1), online.pop(), DISCONNECT, index))
        elif phase.join:
            within = phase.join_seconds
            for j in range(phase.join):
                events.append(ConnEvent(start + within * j / phase.join, next_index, CONNECT, index))
                online.append(next_index)
                next_index += 1
        elif phase.connect_rate:
            target = phase.publishers or spec.publishers
            j = 0
            while len(online) < target and j / phase.connect_rate < d:
                events.append(ConnEvent(start + j / phase.connect_rate, next_index, CONNECT, index))
                online.append(next_index)
                next_index += 1
                j += 1
        elif phase.leave:
            n = min(phase.leave, len(online))
            for j in range(n):
                events.append(ConnEvent(start + d * (j + 1) / (n + 1), online.pop(), DISCONNECT, index))
        elif phase.churn and online:
            per_second = phase.churn * len(online)
            count = int(per_second * d)
            for j in range(count):
                events.append(ConnEvent(start + j / per_second, online[j % len(online)], RECONNECT, index))
        busiest_in.append(max(most, len(online)))
        start += d
    events.sort(key=lambda e: e.t)
    clients = max(next_index, busiest if spec.connected_at_start is None and not growing else next_index, 1)
    return ConnectionPlan(at_start, clients, tuple(events), tuple(busiest_in), True)


def planned_total(phases: tuple[PhasePlan, ...]) -> int:
    return sum(p.planned() for p in phases)


def busiest(phases: tuple[PhasePlan, ...]) -> int:
    """Publishers the run needs (with shaped connections: every one that ever connects)."""
    return max(max(p.publishers for p in phases), len(phases[0].windows))


def max_qos(phases: tuple[PhasePlan, ...]) -> int:
    return max(p.qos for p in phases)


# -- topics -----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(run|publisher|device)\}")


def expand_topic(pattern: str, *, run: str, publisher: int, device: str) -> str:
    values = {"run": run, "publisher": f"p{publisher:05d}", "device": device}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], pattern)


def subscription_filter(pattern: str, *, run: str) -> str:
    """The filter that matches every publisher's topic: a level with a per-publisher
    placeholder becomes ``+``; ``{run}`` is this run's id."""
    levels = []
    for level in pattern.split("/"):
        if "{publisher}" in level or "{device}" in level:
            levels.append("+")
        else:
            levels.append(level.replace("{run}", run))
    return "/".join(levels)


def phase_of(spec: ScenarioSpec, name: str) -> PhaseSpec:
    for phase in spec.phases:
        if phase.name == name:
            return phase
    raise KeyError(name)
