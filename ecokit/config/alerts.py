"""The ``alerts`` and ``geofences`` sections of ecokit.yaml.

Alerts are evaluated by the fleet processor for every vehicle; each fires once and
resolves once (``fleet/{id}/alerts``, stored by the default ``alerts`` rule)::

    alerts:
      overspeed: {when: "speed > 130 for 10s", clear: "speed < 120", severity: warning}
      low_fuel:  {when: "fuel < 10", clear: "fuel > 15"}
      silent:    {when: "offline for 5m", severity: critical}
      restricted_zone: {when: "enter tag:restricted"}
      left_depot: {when: "exit fence:depot-north", severity: info}

``when`` is one of

- ``FIELD OP VALUE [for DURATION]``: a telemetry field (``speed``, ``fuel``, a dotted
  path) compared with a number (``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``) or a
  boolean (``engine == false``); with ``for`` it must hold that long (device time)
  before the alert fires. ``clear`` (same form, same field) is when it resolves; by
  default, as soon as ``when`` no longer holds. A clear threshold apart from the firing
  one (``speed > 130`` / ``speed < 120``) is the hysteresis that keeps a value hovering
  at the limit from flapping.
- ``offline for DURATION``: no message from the vehicle for that long (processor clock);
  resolves with its next message.
- ``enter tag:TAG`` / ``exit tag:TAG`` / ``enter fence:ID`` / ``exit fence:ID``: a
  geofence transition (after the fence's min inside/outside time); resolves with the
  opposite transition of the same fence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ecokit.durations import duration_seconds

ALERT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
MAX_FOR_S = 7 * 86_400.0
Op = Literal[">", ">=", "<", "<=", "==", "!="]
_THRESHOLD = re.compile(
    r"^\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|true|false)"
    r"(?:\s+for\s+(?P<for>\S+))?\s*$")
_OFFLINE = re.compile(r"^\s*offline\s+for\s+(?P<for>\S+)\s*$")
_ZONE = re.compile(r"^\s*(?P<kind>enter|exit)\s+(?P<by>tag|fence):(?P<name>[A-Za-z0-9][A-Za-z0-9_.:-]{0,63})\s*$")
FORMS = ("FIELD OP VALUE [for DURATION] (e.g. `speed > 130 for 10s`), `offline for 5m`, "
         "`enter tag:TAG`, `exit tag:TAG`, `enter fence:ID` or `exit fence:ID`")


def _for_seconds(text: str | None) -> float:
    if text is None:
        return 0.0
    seconds = duration_seconds(text, units=("ms", "s", "m", "h", "d"), bare=False)
    if seconds is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 10s, 5m, 1h)")
    if not 0 <= seconds <= MAX_FOR_S:
        raise ValueError(f"{text!r}: at most 7 days")
    return seconds


@dataclass(frozen=True)
class Threshold:
    field: str
    op: Op
    value: float | bool
    for_s: float = 0.0

    def holds(self, actual: float | bool) -> bool:
        v = self.value
        if self.op == "==":
            return actual == v
        if self.op == "!=":
            return actual != v
        if self.op == ">":
            return actual > v
        if self.op == ">=":
            return actual >= v
        if self.op == "<":
            return actual < v
        return actual <= v

    def negated(self) -> Threshold:
        op: Op = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}[self.op]  # type: ignore[assignment]
        return Threshold(self.field, op, self.value)

    def overlaps(self, clear: Threshold) -> float | None:
        """A value for which this condition and ``clear`` both hold (None when there is
        none): such a clear would resolve an alert that should still be firing."""
        if isinstance(self.value, bool) or isinstance(clear.value, bool):
            return self.value if self.holds(self.value) and clear.holds(self.value) else None
        points = sorted({self.value, clear.value})
        candidates = [points[0] - 1, points[-1] + 1, *points, (points[0] + points[-1]) / 2]
        return next((c for c in candidates if self.holds(c) and clear.holds(c)), None)


@dataclass(frozen=True)
class Offline:
    for_s: float


@dataclass(frozen=True)
class Zone:
    kind: Literal["enter", "exit"]
    by: Literal["tag", "fence"]
    name: str

    def matches(self, fence_id: str, tags: tuple[str, ...]) -> bool:
        return fence_id == self.name if self.by == "fence" else self.name in tags


Condition = Threshold | Offline | Zone


def parse_condition(text: str) -> Condition:
    """One ``when``/``clear`` expression; ValueError says what is accepted."""
    if m := _THRESHOLD.match(text):
        raw = m["value"]
        value: float | bool = raw == "true" if raw in ("true", "false") else float(raw)
        if isinstance(value, bool) and m["op"] not in ("==", "!="):
            raise ValueError(f"{text!r}: true/false compares only with == or !=")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{text!r}: the value must be a finite number")
        return Threshold(m["field"], m["op"], value, _for_seconds(m["for"]))  # type: ignore[arg-type]
    if m := _OFFLINE.match(text):
        seconds = _for_seconds(m["for"])
        if seconds < 1:
            raise ValueError(f"{text!r}: offline needs at least 1s")
        return Offline(seconds)
    if m := _ZONE.match(text):
        return Zone(m["kind"], m["by"], m["name"])  # type: ignore[arg-type]
    raise ValueError(f"{text!r} is not an alert condition; expected {FORMS}")


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: str = Field(description="the condition that fires the alert")
    clear: str | None = Field(None, description="threshold alerts: when it resolves (default: `when` is false)")
    severity: Literal["info", "warning", "critical"] = "warning"
    description: str = ""
    enabled: bool = True

    @field_validator("when")
    @classmethod
    def _when(cls, value: str) -> str:
        parse_condition(value)
        return value

    @model_validator(mode="after")
    def _clear(self) -> AlertRule:
        when = self.condition
        if self.clear is None:
            return self
        if not isinstance(when, Threshold):
            raise ValueError("clear: only threshold alerts take a clear condition "
                             "(offline and geofence alerts resolve on their own)")
        clear = parse_condition(self.clear)
        if not isinstance(clear, Threshold) or clear.field != when.field:
            raise ValueError(f"clear: {self.clear!r} must compare the same field as when ({when.field})")
        both = when.overlaps(clear)
        if both is not None:
            raise ValueError(f"clear: {self.clear!r} and when: {self.when!r} both hold for {when.field} = {both:g}, "
                             "so the alert would resolve while it should fire; leave a gap between them "
                             "(e.g. when speed > 130, clear speed < 120)")
        return self

    @property
    def condition(self) -> Condition:
        return parse_condition(self.when)

    @property
    def clear_condition(self) -> Threshold | None:
        """Threshold alerts: when they resolve (the negation of ``when`` by default)."""
        when = self.condition
        if not isinstance(when, Threshold):
            return None
        if self.clear is None:
            return when.negated()
        clear = parse_condition(self.clear)
        assert isinstance(clear, Threshold)
        return clear


def validate_alert_names(value: dict[str, AlertRule]) -> dict[str, AlertRule]:
    for name in value:
        if not ALERT_NAME.match(name):
            raise ValueError(f"alert name {name!r} must be lowercase letters, digits and '_' (at most 41)")
    return value


class GeofencesConfig(BaseModel):
    """Where the geofences are declared and the default min inside/outside times."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field("config/geofences.geojson", description="GeoJSON FeatureCollection (docs/geofences.md)")
    min_inside_s: float = Field(0.0, ge=0, le=86_400,
                                description="seconds inside before an enter counts (fences may override)")
    min_outside_s: float = Field(0.0, ge=0, le=86_400,
                                 description="seconds outside before an exit counts (fences may override)")
    reload_interval: float = Field(1.0, ge=0.1, le=60, description="seconds between checks of the file")
