"""The ``bench`` section of ecokit.yaml: load scenarios for ``ecokit bench``.

A scenario is a list of phases run back to back. Each phase says how many publishers
send, at what rate (per publisher, or in total for all of them; constant, or ramping
linearly to ``ramp_to`` over the phase), for how long, at which QoS and payload size.
Topic pattern, subscribers and fan-out hold for the whole scenario (subscriptions are
made once). SLOs can be declared for the whole run (``slo:``) or for one phase (a
phase's own ``slo:``); ``ecokit bench --slo`` adds to them or overrides them.

    bench:
      scenarios:
        rush-hour:
          publishers: 200
          qos: 1
          payload_size: 512
          slo: {p99_ms: 50, loss: 0}
          phases:
            - {name: morning, duration: 30s, total_rate: 2000}
            - {name: peak, duration: 20s, total_rate: 2000, ramp_to: 8000, slo: {p99_ms: 150}}
            - {name: evening, duration: 30s, total_rate: 1000}

This module only validates the shape; the scenario model, the built-in scenarios and
the schedule math live in ``ecokit.bench``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ecokit.config.base import KeyedValueError, Section
from ecokit.config.slo import SloError, parse_slo
from ecokit.durations import duration_seconds

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
PLACEHOLDERS = ("run", "publisher", "device")
# Size of the binary header every bench payload starts with (ecokit.bench.payload).
BINARY_HEADER = 24
JSON_MIN = 104  # the longest JSON header (all numbers at their maximum) plus its padding field
MAX_PAYLOAD = 268_435_455 - 65_536  # the MQTT maximum minus room for the topic and header


def parse_duration(text: str | float | int) -> float:
    """'500ms', '10s', '5m', '1h' or plain seconds → seconds (ValueError when malformed)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        parsed = duration_seconds(str(text))
        if parsed is None:
            raise ValueError(f"{text!r} is not a duration (expected e.g. 500ms, 10s, 5m or 1h)")
        seconds = parsed
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return seconds


def _check_slo(value: dict[str, Any]) -> dict[str, Any]:
    for key, limit in value.items():
        try:
            parse_slo(f"{key}={limit}")
        except SloError as exc:
            raise ValueError(str(exc)) from None
    return value


class PhaseSpec(Section):
    """One phase: who publishes how much for how long."""

    name: str
    duration: str | float = Field(description="e.g. 30s, 5m, 1h")
    publishers: int | None = Field(None, ge=1, le=100_000, description="default: the scenario's publishers")
    rate: float | None = Field(None, ge=0, le=1_000_000, description="messages/s of each publisher")
    total_rate: float | None = Field(None, ge=0, le=10_000_000, description="messages/s of all publishers together")
    ramp_to: float | None = Field(None, ge=0, le=10_000_000,
                                  description="rate at the end of the phase (same unit as rate/total_rate); "
                                              "the rate changes linearly")
    qos: Literal[0, 1, 2] | None = Field(None, description="default: the scenario's qos")
    payload_size: int | None = Field(None, ge=1, le=MAX_PAYLOAD, description="default: the scenario's payload_size")
    slo: dict[str, float | str] = Field(default_factory=dict, description="SLOs of this phase only")
    # What the phase does to the connections (at most one of these per phase; docs/bench.md):
    ramp_clients: int | None = Field(None, ge=0, le=100_000,
                                     description="connected publishers at the end of the phase, reached linearly "
                                                 "(new ones connect, or the last ones disconnect)")
    connect_rate: float | None = Field(None, gt=0, le=100_000,
                                       description="new connections per second until the phase's publishers are "
                                                   "connected")
    join: int | None = Field(None, ge=1, le=100_000, description="this many new publishers connect within join_within")
    join_within: str | float | None = Field(None, description="how long the join takes (default: the whole phase)")
    leave: int | None = Field(None, ge=1, le=100_000,
                              description="this many connected publishers disconnect during the phase (for good)")
    churn: float | None = Field(None, gt=0, le=10,
                                description="fraction of the connected publishers per second that disconnect and "
                                            "reconnect at once, e.g. 0.05")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(f"phase name {value!r} must be lowercase letters, digits, '-' or '_' (at most 40)")
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration(value)
        return value

    @field_validator("slo")
    @classmethod
    def _slo(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if "." in key:
                raise ValueError(f"{key!r}: a phase's own SLOs take no phase prefix")
        return _check_slo(value)

    @field_validator("join_within")
    @classmethod
    def _join_within(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _one_rate(self) -> PhaseSpec:
        shapes = self.connection_keys()
        if len(shapes) > 1:
            raise KeyedValueError(f"a phase changes the connections in one way: {' and '.join(shapes)} are given",
                                  *shapes)
        if self.join_within is not None and self.join is None:
            raise KeyedValueError("join_within goes with join", "join_within")
        if self.rate is not None and self.total_rate is not None:
            raise KeyedValueError("give exactly one of rate (per publisher) or total_rate (all publishers), not both",
                                  "rate", "total_rate")
        if self.rate is None and self.total_rate is None:
            if not shapes:
                raise KeyedValueError("give exactly one of rate (per publisher) or total_rate (all publishers)",
                                      "rate", "total_rate")
            self.__dict__["rate"] = 0.0  # a phase that only connects or disconnects publishes nothing
        if self.join_within is not None and self.join_seconds > self.seconds:
            raise KeyedValueError(f"join_within {self.join_within} is longer than the phase ({self.duration})",
                                  "join_within")
        return self

    def connection_keys(self) -> list[str]:
        return [k for k in ("ramp_clients", "connect_rate", "join", "leave", "churn") if getattr(self, k) is not None]

    @property
    def join_seconds(self) -> float:
        return parse_duration(self.join_within) if self.join_within is not None else self.seconds

    @property
    def seconds(self) -> float:
        return parse_duration(self.duration)


class ScenarioSpec(Section):
    """A load scenario: phases run back to back, with shared topic, subscribers and SLOs."""

    description: str = ""
    publishers: int = Field(10, ge=1, le=100_000, description="publishers of a phase that does not say")
    qos: Literal[0, 1, 2] = 1
    payload_size: int = Field(256, ge=1, le=MAX_PAYLOAD, description="bytes per message")
    payload: Literal["binary", "json"] = Field(
        "binary", description="binary: a 24-byte header + padding; json: a JSON object padded to the size")
    topic: str = Field("bench/{run}/{publisher}",
                       description="topic pattern; placeholders {run}, {publisher}, {device}")
    subscribers: int = Field(1, ge=0, le=10_000, description="0: publish only (no latency or loss figures)")
    fanout: Literal["all", "shared"] = Field(
        "all", description="all: every subscriber gets every message; shared: one MQTT 5 shared subscription")
    slo: dict[str, float | str] = Field(default_factory=dict, description="SLOs: key → limit (docs/bench.md)")
    connected_at_start: int | None = Field(
        None, ge=0, le=100_000, description="publishers connected before the first phase (default: all of them, or "
                                            "none when a phase ramps, joins or connects at a rate)")
    phases: tuple[PhaseSpec, ...] = Field(min_length=1, max_length=250)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        problem = topic_pattern_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("slo")
    @classmethod
    def _slo(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_slo(value)

    @model_validator(mode="after")
    def _consistent(self) -> ScenarioSpec:
        names = [p.name for p in self.phases]
        for name in names:
            if names.count(name) > 1:
                raise KeyedValueError(f"phase name {name!r} is used twice", "phases")
        for key in self.slo:
            if "." in key and key.split(".", 1)[0] not in names:
                raise KeyedValueError(f"SLO {key!r} names no phase of this scenario (phases: {', '.join(names)})",
                                      "slo")
        smallest = BINARY_HEADER if self.payload == "binary" else JSON_MIN
        for index, phase in enumerate(self.phases):
            size = phase.payload_size or self.payload_size
            if size < smallest:
                key = f"phases.{index}.payload_size" if phase.payload_size else "payload_size"
                raise KeyedValueError(f"payload_size {size} is below the {smallest} bytes a {self.payload} "
                                      "bench payload needs (sequence number and timestamp)", key)
        if self.fanout == "shared" and self.subscribers < 1:
            raise KeyedValueError("fanout: shared needs at least one subscriber", "subscribers")
        return self


class BenchConfig(Section):
    """Custom scenarios for `ecokit bench` (the built-ins: steady, ramp, spike, soak)."""

    scenarios: dict[str, ScenarioSpec] = Field(default_factory=dict)

    @field_validator("scenarios")
    @classmethod
    def _names(cls, value: dict[str, ScenarioSpec]) -> dict[str, ScenarioSpec]:
        for name in value:
            if not NAME.match(name):
                raise ValueError(f"scenario name {name!r} must be lowercase letters, digits, '-' or '_' "
                                 "(at most 40)")
        return value


def topic_pattern_problem(pattern: str) -> str | None:
    """Why a topic pattern cannot be published to, or None."""
    if not pattern:
        return "the topic pattern is empty"
    if "+" in pattern or "#" in pattern:
        return f"topic {pattern!r}: a publish topic cannot contain the wildcards + or #"
    if pattern.startswith("$"):
        return f"topic {pattern!r}: topics starting with $ are reserved for the broker"
    for name in re.findall(r"\{([^{}]*)\}", pattern):
        if name not in PLACEHOLDERS:
            return f"topic {pattern!r}: unknown placeholder {{{name}}} (known: " + \
                ", ".join(f"{{{p}}}" for p in PLACEHOLDERS) + ")"
    stripped = re.sub(r"\{[a-z]+\}", "", pattern)
    if "{" in stripped or "}" in stripped:
        return f"topic {pattern!r}: unbalanced braces"
    if "\x00" in pattern:
        return f"topic {pattern!r}: contains a NUL character"
    return None
