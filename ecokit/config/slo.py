"""The grammar of a bench run's service-level objectives (``ecokit.bench.slo`` evaluates them).

An SLO is ``[phase.]key=limit``. Keys starting with ``min_`` are lower bounds on the
metric after the prefix (``min_rate=5000``: at least 5,000 deliveries/s); every other key
is an upper bound on the metric of that name (``p99_ms=50``, ``loss=0``). A phase prefix
(``spike.p99_ms=200``) evaluates the metric of that phase alone. ``loss`` takes a ratio
or a percentage (``loss=0.1%``); a rate takes msg/s or a percentage of the planned rate
(``min_rate=95%``: at least 95% of what the scenario offers, whatever it is scaled to).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from ecokit.errors import UsageError

Kind = Literal["ms", "ratio", "count", "rate"]
Bound = Literal["max", "min"]


@dataclass(frozen=True)
class MetricInfo:
    kind: Kind
    bound: Bound  # which direction an SLO on it may take
    describes: str
    prefixed: bool = True  # a lower bound is written min_<metric>; False: the name says it (connect_success)


METRICS: dict[str, MetricInfo] = {
    "p50_ms": MetricInfo("ms", "max", "median end-to-end latency"),
    "p90_ms": MetricInfo("ms", "max", "90th percentile latency"),
    "p95_ms": MetricInfo("ms", "max", "95th percentile latency"),
    "p99_ms": MetricInfo("ms", "max", "99th percentile latency"),
    "p999_ms": MetricInfo("ms", "max", "99.9th percentile latency"),
    "max_ms": MetricInfo("ms", "max", "largest latency"),
    "mean_ms": MetricInfo("ms", "max", "mean latency"),
    "loss": MetricInfo("ratio", "max", "lost deliveries / expected deliveries"),
    "lost": MetricInfo("count", "max", "deliveries that never arrived"),
    "duplicates": MetricInfo("count", "max", "deliveries received more than once"),
    "reordered": MetricInfo("count", "max", "deliveries that arrived after a later one of the same publisher"),
    "unsent": MetricInfo("count", "max", "publishes the client refused (QoS 0 while disconnected)"),
    "reconnects": MetricInfo("count", "max", "reconnections of publishers and subscribers"),
    "connect_failures": MetricInfo("count", "max", "failed connection attempts"),
    "errors": MetricInfo("count", "max", "errors reported by the clients"),
    "send_lag_p99_ms": MetricInfo("ms", "max", "99th percentile of how late publishes left vs their schedule"),
    "send_lag_max_ms": MetricInfo("ms", "max", "largest send lag"),
    "rate": MetricInfo("rate", "min", "deliveries/s received by the subscribers"),
    "send_rate": MetricInfo("rate", "min", "messages/s sent by the publishers"),
    "connect_success": MetricInfo("ratio", "min", "connection attempts that got a CONNACK accepting them",
                                  prefixed=False),
    "connect_p50_ms": MetricInfo("ms", "max", "median connect time (TCP + TLS + websocket + CONNECT → CONNACK)"),
    "connect_p95_ms": MetricInfo("ms", "max", "95th percentile connect time"),
    "connect_p99_ms": MetricInfo("ms", "max", "99th percentile connect time"),
    "connect_max_ms": MetricInfo("ms", "max", "longest connect"),
    "tls_p95_ms": MetricInfo("ms", "max", "95th percentile TLS handshake time"),
    "puback_p50_ms": MetricInfo("ms", "max", "median publish → PUBACK (QoS 1) / PUBCOMP (QoS 2)"),
    "puback_p95_ms": MetricInfo("ms", "max", "95th percentile publish → acknowledgement"),
    "puback_p99_ms": MetricInfo("ms", "max", "99th percentile publish → acknowledgement"),
    "puback_max_ms": MetricInfo("ms", "max", "longest publish → acknowledgement"),
    "subscribe_max_ms": MetricInfo("ms", "max", "longest SUBSCRIBE → SUBACK of the subscribers"),
    "broker_cpu": MetricInfo("ratio", "max", "mean CPU of the local broker process (1 = 100% of one core)"),
}


class SloError(UsageError):
    """An SLO that cannot be parsed or does not fit the scenario."""


@dataclass(frozen=True)
class Slo:
    metric: str
    bound: Bound
    limit: float  # a fraction of the planned rate when ``relative``
    phase: str | None = None
    relative: bool = False

    @property
    def key(self) -> str:
        name = f"min_{self.metric}" if self.bound == "min" and METRICS[self.metric].prefixed else self.metric
        return f"{self.phase}.{name}" if self.phase else name

    @property
    def kind(self) -> Kind:
        return METRICS[self.metric].kind

    def __str__(self) -> str:
        """The form ``--slo`` takes (parse_slo(str(slo)) == slo)."""
        if self.kind == "ratio" or self.relative:
            return f"{self.key}={format_value(self.limit, 'ratio')}"
        return f"{self.key}={self.limit:g}"


_NUMBER = re.compile(r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(%?)\s*$")


def parse_slo(text: str) -> Slo:
    """``[phase.]key=limit`` → :class:`Slo` (SloError naming what is wrong)."""
    if "=" not in text:
        raise SloError(f"SLO {text!r}: expected KEY=LIMIT, e.g. p99_ms=50, loss=0 or min_rate=5000")
    key, value = (part.strip() for part in text.split("=", 1))
    phase = None
    if "." in key:
        phase, key = key.split(".", 1)
        if not phase:
            raise SloError(f"SLO {text!r}: empty phase name before '.'")
    bound: Bound = "max"
    metric = key
    if key.startswith("min_"):
        bound, metric = "min", key[4:]
    info = METRICS.get(metric)
    if info is None:
        raise SloError(f"SLO {text!r}: unknown key {key!r} (known: {', '.join(slo_keys())})")
    if not info.prefixed:
        if bound == "min":
            raise SloError(f"SLO {text!r}: write {metric}=... (it is a lower bound already)")
        bound = info.bound
    if info.bound != bound:
        wanted = f"min_{metric}" if info.bound == "min" else metric
        raise SloError(f"SLO {text!r}: {metric} only takes a {'lower' if info.bound == 'min' else 'upper'} "
                       f"bound; write {wanted}=...")
    match = _NUMBER.match(value)
    if not match:
        raise SloError(f"SLO {text!r}: {value!r} is not a number")
    limit = float(match.group(1))
    relative = False
    if match.group(2):
        if info.kind not in ("ratio", "rate"):
            raise SloError(f"SLO {text!r}: only loss and the rates take a percentage (and connect_success, "
                           "broker_cpu)")
        limit /= 100
        relative = info.kind == "rate"
        if relative and limit > 1:
            raise SloError(f"SLO {text!r}: a rate can be at most 100% of the planned rate")
    if not math.isfinite(limit) or limit < 0:
        raise SloError(f"SLO {text!r}: the limit must be a finite number >= 0")
    if info.kind == "ratio" and limit > 1 and metric != "broker_cpu":  # a broker may use more than one core
        raise SloError(f"SLO {text!r}: {metric} is a ratio between 0 and 1 (or a percentage such as 0.5%)")
    return Slo(metric, bound, limit, phase, relative)


def slo_keys() -> list[str]:
    return [f"min_{m}" if i.bound == "min" and i.prefixed else m for m, i in METRICS.items()]


def format_value(value: float, kind: Kind) -> str:
    if kind == "ratio":
        pct = value * 100
        return "0%" if value == 0 else f"{pct:.4g}%"
    if kind == "ms":
        return f"{value:.3g} ms" if value < 10 else f"{value:,.1f} ms"
    if kind == "rate":
        return f"{value:,.0f}/s" if value >= 100 else f"{value:.3g}/s"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"
