"""A bench run and the stack's pipeline (rules → bridge or EMQX rules → InfluxDB).

By default the ``archive`` rule skips bench topics (``exclude: [bench/#, fleet/+/bench/#]``),
so a bench against a running stack measures the broker alone. ``PipelineView`` says which
rules take the bench topic (the plan header names them and the load they add);
``ecokit bench --pipeline`` needs the archive to take it and, after the run, counts what the
archive stored for the run's topics (``measure_archive``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ecokit.acl import topic_matches
from ecokit.config.model import StackConfig
from ecokit.errors import UsageError
from ecokit.replay import ARCHIVE, Archive

RESTORE_HINT = ("archive bench traffic too with `rules: {archive: {exclude: []}}` in ecokit.yaml, "
                "then `ecokit restart` (docs/bench.md)")
PIPELINE_WAIT_S = 30.0  # at most this long after the run for the pipeline to store it
POLL_S = 0.1  # how often the archive is counted while the pipeline drains
SETTLE_S = 5.0  # no new point for this long: the pipeline has drained what it will store


@dataclass(frozen=True)
class PipelineView:
    """What the stack's pipeline does with a message on one bench topic."""

    topic: str
    engine: str | None  # "EMQX rules", "the ecokit bridge", or None: nothing stores anything
    storing: tuple[str, ...]  # enabled rules that take the topic
    excluded: tuple[tuple[str, str], ...]  # (rule, exclude filter): rules whose filter matches but skip it
    filters: dict[str, str]  # rule -> its topic filter

    @property
    def archived(self) -> bool:
        return self.engine is not None and ARCHIVE in self.storing

    def summary(self) -> dict[str, Any]:
        """The result's ``pipeline`` entry of a run without --pipeline."""
        return {"measured": False, "engine": self.engine, "rules": list(self.storing),
                "excluded_by": {rule: pattern for rule, pattern in self.excluded}}

    def header(self, planned: int) -> str:
        """The plan header's pipeline line."""
        if self.engine is None:
            return "pipeline: the stack stores nothing (bridge.enabled: false): the broker alone is measured"
        if not self.storing:
            skipped = "; ".join(f"rules.{rule}.exclude {pattern}" for rule, pattern in self.excluded)
            if skipped:
                return f"pipeline: bench topics are not archived ({skipped}): the broker alone is measured"
            return "pipeline: no rule takes the bench topics: the broker alone is measured"
        rules = ", ".join(f"{name} ({self.filters[name]})" for name in self.storing)
        load = ("each message also runs through the rule SQL and one HTTP write to InfluxDB"
                if self.engine == "EMQX rules" else
                "the broker also delivers each message to the ecokit bridge, which writes it to InfluxDB")
        return (f"pipeline: rules {rules} take the bench messages: {load} (up to {planned:,} points per rule), "
                "so the figures include that load; --pipeline reports what the archive stored")


def pipeline_view(config: StackConfig, topic: str) -> PipelineView:
    """Which rules of ``config`` take a message on ``topic`` when the stack's pipeline runs."""
    engine = "EMQX rules" if config.broker.kind == "emqx" else "the ecokit bridge" if config.bridge.enabled else None
    enabled = {name: rule for name, rule in config.rules.items() if rule.enabled}
    storing = tuple(name for name, rule in enabled.items() if rule.takes(topic))
    excluded = []
    for name, rule in enabled.items():
        pattern = rule.excluded_by(topic)
        if pattern is not None and topic_matches(rule.topic, topic):
            excluded.append((name, pattern))
    return PipelineView(topic, engine, storing, tuple(excluded), {n: r.topic for n, r in enabled.items()})


def require_archive(view: PipelineView) -> None:
    """``--pipeline`` counts what the archive stored: refuse a run it would store nothing of."""
    if view.engine is None:
        raise UsageError("--pipeline measures through the pipeline, but the stack stores nothing "
                         "(bridge.enabled: false)", hint="set bridge.enabled: true and `ecokit restart`")
    if view.archived:
        return
    why = next((f"rules.archive.exclude has {pattern}" for rule, pattern in view.excluded if rule == ARCHIVE),
               f"rule archive ({view.filters[ARCHIVE]}) does not match it" if ARCHIVE in view.filters
               else "the archive rule is disabled or removed")
    raise UsageError(f"--pipeline: the archive does not store the bench topic {view.topic} ({why})",
                     hint=RESTORE_HINT)


@dataclass
class ArchiveMeasurement:
    """What the archive stored of one run."""

    sent: int
    stored: int
    complete: bool  # stored >= sent before the wait ran out
    waited_s: float
    stored_lag_ms: float | None  # last publish → the archive count observed at its final value
    # The count was final at the first look (taken after the run's drain): the lag is at most that.
    stored_lag_upper_bound: bool
    receive_lag_ms: float | None  # last publish → the last point's time (when the pipeline received it)

    def to_dict(self) -> dict[str, Any]:
        return {"measured": True, "rule": ARCHIVE, "sent": self.sent, "stored": self.stored,
                "missing": max(0, self.sent - self.stored), "complete": self.complete,
                "waited_s": round(self.waited_s, 2),
                "stored_lag_ms": None if self.stored_lag_ms is None else round(self.stored_lag_ms, 1),
                "stored_lag_upper_bound": self.stored_lag_upper_bound,
                "receive_lag_ms": None if self.receive_lag_ms is None else round(self.receive_lag_ms, 1)}


def measure_archive(archive: Archive, topic_filter: str, *, sent: int, start_ns: int, last_send_ns: int,
                    wait_s: float, clock: Callable[[], int] = time.time_ns,
                    sleep: Callable[[float], None] = time.sleep) -> ArchiveMeasurement:
    """Count the archive's points on ``topic_filter`` since ``start_ns`` until all ``sent`` are
    there, the count stops growing for ``SETTLE_S``, or ``wait_s`` has passed."""
    began = clock()
    deadline = began + int(wait_s * 1e9)
    stored, changed_ns, looks, final_at = 0, began, 0, 0
    while True:
        now = clock()
        count = archive.count(start_ns, now + 1_000_000_000, [topic_filter])
        looks += 1
        if count != stored:
            stored, changed_ns, final_at = count, now, looks
        if stored >= sent or now >= deadline or (now - changed_ns) / 1e9 >= SETTLE_S:
            break
        sleep(POLL_S)
    last = archive.last_time(start_ns, clock() + 1_000_000_000, [topic_filter]) if stored else None
    anchor = last_send_ns or start_ns
    return ArchiveMeasurement(
        sent=sent, stored=stored, complete=stored >= sent, waited_s=(clock() - began) / 1e9,
        stored_lag_ms=max(0.0, (changed_ns - anchor) / 1e6) if stored else None, stored_lag_upper_bound=final_at == 1,
        receive_lag_ms=(last - anchor) / 1e6 if last is not None else None)
