"""Service-level objectives of a bench run, evaluated against what was measured (pure, no I/O).

Their grammar (``[phase.]key=limit``, the metrics, :func:`parse_slo`) is part of the bench
section of ecokit.yaml: ``ecokit.config.slo``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ecokit.config.bench import ScenarioSpec
from ecokit.config.slo import Slo, SloError, format_value, parse_slo


def merge_slos(*layers: Iterable[Slo]) -> list[Slo]:
    """Later layers replace earlier SLOs with the same key (e.g. --slo over the scenario's)."""
    merged: dict[str, Slo] = {}
    for layer in layers:
        for slo in layer:
            merged[slo.key] = slo
    return list(merged.values())


def scenario_slos(spec: ScenarioSpec, extra: Iterable[str] = (), phases: Sequence[str] | None = None) -> list[Slo]:
    """A run's SLOs: the scenario's, its phases' own, then ``extra`` (``--slo``) over them;
    each phase an SLO names must be one of ``phases`` (default: the scenario's)."""
    slos = merge_slos(
        [parse_slo(f"{k}={v}") for k, v in spec.slo.items()],
        [parse_slo(f"{p.name}.{k}={v}") for p in spec.phases for k, v in p.slo.items()],
        [parse_slo(text) for text in extra])
    check_phases(slos, [p.name for p in spec.phases] if phases is None else phases)
    return slos


def check_phases(slos: Iterable[Slo], phases: Sequence[str]) -> None:
    for slo in slos:
        if slo.phase is not None and slo.phase not in phases:
            raise SloError(f"SLO {slo.key!r}: the scenario has no phase {slo.phase!r} (phases: {', '.join(phases)})")


@dataclass(frozen=True)
class SloResult:
    slo: Slo
    actual: float | None  # None: the metric could not be measured
    ok: bool
    detail: str = ""  # e.g. "60 of 50,000" next to a loss ratio
    limit: float | None = None  # the limit in the metric's unit (a relative SLO's share of the plan)

    @property
    def effective_limit(self) -> float:
        return self.slo.limit if self.limit is None else self.limit

    @property
    def line(self) -> str:
        """One line for a person: what was wanted, what was measured."""
        s = self.slo
        where = f" in phase {s.phase}" if s.phase else ""
        if self.actual is None:
            return f"SLO violated: {s.key}: not measured{where} ({self.detail or 'no data'})"
        actual = format_value(self.actual, s.kind)
        limit = format_value(self.effective_limit, s.kind)
        if s.relative:
            limit += f" ({format_value(s.limit, 'ratio')} of the planned rate)"
        extra = f" ({self.detail})" if self.detail else ""
        if self.ok:
            return f"SLO met: {s.key} = {actual}{extra} {'>=' if s.bound == 'min' else '<='} {limit}"
        op = "<" if s.bound == "min" else ">"
        return f"SLO violated: {s.key} = {actual}{extra} {op} {limit}{where}"

    def to_dict(self) -> dict[str, object]:
        return {"key": self.slo.key, "metric": self.slo.metric, "phase": self.slo.phase, "bound": self.slo.bound,
                "limit": self.effective_limit, "relative": self.slo.limit if self.slo.relative else None,
                "actual": self.actual, "ok": self.ok, "line": self.line}


Metrics = Mapping[str, float | None]


def evaluate(slos: Iterable[Slo], overall: Metrics, by_phase: Mapping[str, Metrics],
             details: Mapping[str | None, Mapping[str, str]] | None = None) -> list[SloResult]:
    """Each SLO against the measured metrics (a metric that is None or missing fails: not measured)."""
    results = []
    for slo in slos:
        metrics = overall if slo.phase is None else by_phase.get(slo.phase, {})
        actual = metrics.get(slo.metric)
        detail = (details or {}).get(slo.phase, {}).get(slo.metric, "")
        if actual is None or (isinstance(actual, float) and math.isnan(actual)):
            results.append(SloResult(slo, None, False, detail or _why_missing(slo.metric)))
            continue
        limit = slo.limit
        if slo.relative:
            planned = metrics.get(f"planned_{slo.metric}")
            if planned is None:
                results.append(SloResult(slo, None, False, "no planned rate to compare with"))
                continue
            limit = slo.limit * planned
        ok = actual >= limit if slo.bound == "min" else actual <= limit
        results.append(SloResult(slo, float(actual), ok, detail, limit if slo.relative else None))
    return results


def _why_missing(metric: str) -> str:
    if metric.startswith(("connect_", "tls_")):
        return "no connection attempt (over TLS, for tls_*) in this part of the run"
    if metric.startswith("puback_"):
        return "no QoS 1/2 publish was acknowledged"
    if metric == "broker_cpu":
        return "the broker process is not on this machine (sampled for a local-runtime stack only)"
    if metric == "subscribe_max_ms":
        return "no subscription was made"
    if metric.endswith("_ms") and not metric.startswith("send_lag"):
        return "no message was received"
    if metric in ("loss", "lost", "duplicates", "reordered", "rate"):
        return "no subscriber measured deliveries"
    return "no data"
