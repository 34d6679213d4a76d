"""The `rules`, `bridge` and `processor` sections of ecokit.yaml.

A rule maps MQTT messages on one topic filter to points of one InfluxDB measurement:
tags from topic levels or the payload, typed fields with ranges, a timestamp and an
optional where-filter. The same rule renders to EMQX rule SQL and drives the ecokit
bridge (``ecokit.rules``), so what can be declared here is only what both engines can do.

The default rules (telemetry, status, events, alerts, archive) are always present unless removed: an
entry in ecokit.yaml with a default rule's name is merged over the default (``null``
deletes a key, so ``telemetry: null`` removes the rule and ``fields: {heading: null}``
one field); any other name declares a new rule.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ecokit.acl import topic_matches
from ecokit.config.base import Section
from ecokit.durations import duration_seconds

IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")
RULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}\Z")
PATH = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
DEADLETTER_PREFIX = "ecokit/deadletter"
# Largest/smallest device timestamps accepted by default (ms): 2000-01-01 .. 2100-01-01.
TS_MS_MIN = 946_684_800_000
TS_MS_MAX = 4_102_444_800_000
INT64 = 2**63 - 1
# What InfluxDB stores, refused by the rules before a write rather than by InfluxDB after:
# floats up to about 1.8e308 (a larger JSON integer in a float field fails to parse), string
# field values up to 1 MiB (1.9+/2.x hard limit), series keys (measurement and tags,
# escaped) up to 65,535 bytes.
FLOAT_LIMIT = 1e308
MAX_STRING_BYTES = 1_048_576
MAX_SERIES_KEY_BYTES = 65_535
MAX_BASE64_SOURCE_BYTES = MAX_STRING_BYTES // 4 * 3  # its base64 text is at most MAX_STRING_BYTES
# The boolean field written when a missing payload timestamp was replaced by the receive time.
TIME_RECEIVED_FIELD = "time_received"
RETENTION = r"^(0|\d+[smhdw])$"


def check_retention(value: str) -> str:
    """A retention InfluxDB accepts: 0 (forever) or at least an hour. InfluxDB 1.x and 2.x
    refuse shorter ones ("retention policy duration must be at least 1h0m0s"), and setup
    would fail only once the server runs."""
    seconds = duration_seconds(value, units=("s", "m", "h", "d", "w")) or 0
    if 0 < seconds < 3600:
        raise ValueError(f"{value!r} is shorter than 1h, the shortest retention InfluxDB accepts (0 = forever)")
    return value


def retention_policy(rule_name: str, retention: str | None) -> str | None:
    """The InfluxDB 1.x retention policy (2.x: the ``<database>/<policy>`` bucket) a rule with
    its own ``retention`` writes to, named after the rule so queries need not know the
    duration; None: the database's default policy (``influxdb.retention``)."""
    return None if retention is None else f"ecokit_{rule_name}"


def retention_policies(rules: Mapping[str, RuleConfig]) -> dict[str, str]:
    """The retention policies (1.x; buckets ``<database>/<policy>`` in 2.x) of the enabled rules
    that keep their points for their own time: policy name -> retention."""
    return {f"ecokit_{name}": rule.retention for name, rule in rules.items()
            if rule.enabled and rule.retention is not None}

FieldType = Literal["float", "int", "bool", "string"]


class TagSpec(Section):
    """Where a tag's value comes from: one topic level, a payload path, or the whole topic."""

    from_: Literal["topic", "payload"] = Field("topic", alias="from")
    segment: int | None = Field(None, ge=1, le=64, description="1-based topic level (from: topic)")
    path: str | None = Field(None, description="dotted JSON path (from: payload)")

    @model_validator(mode="after")
    def _shape(self) -> TagSpec:
        if self.from_ == "payload":
            if not self.path or not PATH.match(self.path):
                raise ValueError("from: payload needs path: a dotted JSON path such as `source` or `gps.src`")
            if self.segment is not None:
                raise ValueError("segment is only for from: topic")
        elif self.path is not None:
            raise ValueError("path is only for from: payload")
        return self


class FieldSpec(Section):
    """One field: its type, where its value comes from, and what values are valid."""

    type: FieldType = "float"
    from_: Literal["payload", "payload_base64", "qos", "retain"] = Field("payload", alias="from")
    path: str | None = Field(None, description="dotted JSON path (default: the field's name)")
    required: bool = True
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] | None = Field(None, description="allowed values of a string field")

    @model_validator(mode="after")
    def _shape(self) -> FieldSpec:
        if self.path is not None and not PATH.match(self.path):
            raise ValueError(f"path {self.path!r} is not a dotted JSON path")
        if self.path is not None and self.from_ != "payload":
            raise ValueError("path is only for from: payload")
        wanted = {"payload_base64": "string", "qos": "int", "retain": "bool"}.get(self.from_)
        if wanted and self.type != wanted:
            raise ValueError(f"from: {self.from_} gives a {wanted}, not a {self.type}")
        if self.from_ != "payload" and not self.required:
            raise ValueError(f"from: {self.from_} is always present; required: false makes no sense")
        if (self.min is not None or self.max is not None) and self.type not in ("float", "int"):
            raise ValueError(f"min/max apply to float and int fields, not {self.type}")
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError("min/max must be finite numbers")
            if bound is not None and self.type == "int" and (bound != int(bound) or abs(bound) > INT64):
                raise ValueError("min/max of an int field must be 64-bit integers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
        if self.values is not None:
            if self.type != "string":
                raise ValueError("values: applies to string fields only")
            if not self.values:
                raise ValueError("values: must list at least one value")
            for value in self.values:
                if not value or any(ord(c) < 0x20 or c in "'\"\\" for c in value):
                    raise ValueError(f"values: {value!r} must be non-empty, printable, without quotes or backslashes")
        return self


class TimeSpec(Section):
    """The point's timestamp: a payload field (device time) or the receive time."""

    from_: Literal["payload", "received"] = Field("payload", alias="from")
    path: str = "ts"
    unit: Literal["s", "ms", "us", "ns"] = "ms"
    min: int | None = Field(None, description="smallest accepted value, in `unit` (default: year 2000)")
    max: int | None = Field(None, description="largest accepted value, in `unit` (default: year 2100)")
    if_missing: Literal["reject", "received"] = Field(
        "reject", description="no timestamp in the payload: reject the message, or use the receive time "
                              f"and mark the point with {TIME_RECEIVED_FIELD}=true")

    @model_validator(mode="after")
    def _shape(self) -> TimeSpec:
        if not PATH.match(self.path):
            raise ValueError(f"path {self.path!r} is not a dotted JSON path")
        if self.if_missing == "received" and self.from_ != "payload":
            raise ValueError("if_missing applies to time: {from: payload}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    def bounds(self) -> tuple[int, int]:
        """Accepted range of the payload value, in ``unit``."""
        scale = {"s": 1000, "ms": 1, "us": 1, "ns": 1}[self.unit]
        per_ms = {"s": 1, "ms": 1, "us": 1000, "ns": 1_000_000}[self.unit]
        lo = self.min if self.min is not None else TS_MS_MIN * per_ms // scale
        hi = self.max if self.max is not None else TS_MS_MAX * per_ms // scale
        return lo, hi


WhereOp = Literal["eq", "ne", "gt", "ge", "lt", "le", "exists"]


class WhereCondition(Section):
    """One condition of a where-filter (all must hold); messages failing it are skipped."""

    path: str
    op: WhereOp = "eq"
    value: str | float | bool | None = None

    @model_validator(mode="after")
    def _shape(self) -> WhereCondition:
        if not PATH.match(self.path):
            raise ValueError(f"path {self.path!r} is not a dotted JSON path")
        if self.op == "exists":
            if self.value is not None:
                raise ValueError("op: exists takes no value")
            return self
        if self.value is None:
            raise ValueError(f"op: {self.op} needs a value")
        if isinstance(self.value, bool) and self.op not in ("eq", "ne"):
            raise ValueError("a boolean value only works with eq/ne")
        if isinstance(self.value, str) and self.op not in ("eq", "ne"):
            raise ValueError("a string value only works with eq/ne")
        if isinstance(self.value, str) and (not self.value or any(ord(c) < 0x20 or c in "'\"\\" for c in self.value)):
            raise ValueError(f"value {self.value!r} must be non-empty, printable and without quotes or backslashes")
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError("value must be a finite number")
        return self


class RuleConfig(Section):
    """One rule: topic filter → measurement."""

    topic: str = Field(description="MQTT topic filter")
    exclude: tuple[str, ...] = Field((), description="topic filters this rule skips (a message matching any is "
                                                     "not stored nor dead-lettered by it)")
    measurement: str
    payload: Literal["json", "raw"] = Field("json", description="raw: the payload is not parsed")
    tags: dict[str, TagSpec] = Field(default_factory=dict)
    fields: dict[str, FieldSpec]
    time: TimeSpec = TimeSpec()
    where: tuple[WhereCondition, ...] = ()
    enabled: bool = True
    description: str = ""
    retention: str | None = Field(None, pattern=RETENTION,
                                  description="how long its points are kept (e.g. 24h, 30d; 0 = forever); "
                                              "default: the database's (influxdb.retention)")

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str | None) -> str | None:
        return None if value is None else check_retention(value)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        problem = topic_filter_problem(value)
        if problem:
            raise ValueError(f"{value!r} is not a topic filter: {problem}")
        return value

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            problem = topic_filter_problem(item)
            if problem:
                raise ValueError(f"{item!r} is not a topic filter: {problem}")
        return value

    def takes(self, topic: str) -> bool:
        """Whether a message on ``topic`` reaches this rule: it matches ``topic`` and no ``exclude``
        filter (dead letters aside, see ``ecokit.rules.engine``)."""
        return topic_matches(self.topic, topic) and not any(topic_matches(f, topic) for f in self.exclude)

    def excluded_by(self, topic: str) -> str | None:
        """The ``exclude`` filter that keeps ``topic`` from this rule, if any."""
        return next((f for f in self.exclude if topic_matches(f, topic)), None)

    @field_validator("measurement")
    @classmethod
    def _measurement(cls, value: str) -> str:
        if not IDENT.match(value):
            raise ValueError(f"{value!r} must be a letter then letters, digits or '_' (at most 64)")
        return value

    @model_validator(mode="after")
    def _shape(self) -> RuleConfig:
        for kind, names in (("tags", self.tags), ("fields", self.fields)):
            for name in names:
                if not IDENT.match(name):
                    raise ValueError(f"{kind}.{name}: a name must be a letter then letters, digits or '_'")
        if clash := set(self.tags) & set(self.fields):
            raise ValueError(f"{', '.join(sorted(clash))}: a name cannot be both a tag and a field")
        if self.time.if_missing == "received" and TIME_RECEIVED_FIELD in {*self.tags, *self.fields}:
            raise ValueError(f"{TIME_RECEIVED_FIELD}: the name marks points timed by their receive time "
                             "(time.if_missing: received); choose another")
        if not any(f.required for f in self.fields.values()):
            raise ValueError("fields: at least one field must be required (a point needs a field)")
        levels = self.topic.split("/")
        for name, tag in self.tags.items():
            if tag.from_ == "topic" and tag.segment is not None:
                fixed = len(levels) - (1 if levels[-1] == "#" else 0)
                if tag.segment > fixed:
                    raise ValueError(f"tags.{name}: segment {tag.segment} is not a level every topic matching "
                                     f"{self.topic!r} has (it has {fixed})")
        if self.payload == "raw":
            for name, fld in self.fields.items():
                if fld.from_ == "payload":
                    raise ValueError(f"fields.{name}: payload: raw rules do not parse the payload; "
                                     "use from: payload_base64, qos or retain")
            for name, tag in self.tags.items():
                if tag.from_ == "payload":
                    raise ValueError(f"tags.{name}: payload: raw rules cannot take tags from the payload")
            if self.time.from_ == "payload":
                raise ValueError("time: payload: raw rules need time: {from: received}")
            if self.where:
                raise ValueError("where: payload: raw rules cannot filter on the payload")
        return self

    def field_path(self, name: str) -> str:
        spec = self.fields[name]
        return spec.path or name


def topic_filter_problem(value: str) -> str | None:
    """Why ``value`` is not a valid MQTT topic filter (None when it is)."""
    if not value:
        return "it is empty"
    if value.startswith("$share/") or value.startswith("$"):
        return "rules do not take $-topics"
    if any(ord(c) < 0x20 for c in value) or "'" in value or '"' in value:
        return "it has control characters or quotes"
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole last level"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "telemetry": {
        "description": "vehicle telemetry (docs/DEVELOPING.md, Wire formats)",
        "topic": "fleet/+/telemetry",
        "measurement": "telemetry",
        "tags": {"vehicle": {"from": "topic", "segment": 2}},
        # What a point needs is required (a position); the rest is typed and range-checked
        # when a device sends it, so a device with fewer sensors than ecokit's simulator
        # is stored, not dead-lettered.
        "fields": {
            "lat": {"type": "float", "min": -90, "max": 90},
            "lng": {"type": "float", "min": -180, "max": 180},
            "speed": {"type": "float", "min": 0, "required": False},
            "heading": {"type": "float", "min": 0, "max": 360, "required": False},
            "fuel": {"type": "float", "min": 0, "max": 100, "required": False},
            "odometer": {"type": "float", "min": 0, "required": False},
            "engine": {"type": "bool", "required": False},
            "seq": {"type": "int", "min": 0, "required": False},
            "status": {"type": "string", "values": ["moving", "idle", "parked"], "required": False},
        },
        # Without a device timestamp the receive time is used, and the point says so
        # (time_received=true); a QoS 1 duplicate of such a message is then a second point.
        "time": {"from": "payload", "path": "ts", "unit": "ms", "if_missing": "received"},
    },
    "status": {
        "description": "device status and last will (source: device) and the fleet processor's (source: processor)",
        "topic": "fleet/+/status",
        "measurement": "status",
        "tags": {"vehicle": {"from": "topic", "segment": 2}, "source": {"from": "payload", "path": "source"}},
        "fields": {
            "state": {"type": "string", "values": ["online", "offline"]},
            "last_seen": {"type": "int", "min": 0, "required": False},
            "derived_speed": {"type": "float", "min": 0, "required": False},
            "reason": {"type": "string", "required": False},
        },
        "time": {"from": "payload", "path": "ts", "unit": "ms"},
    },
    "events": {
        "description": "geofence enter/exit events from the fleet processor (docs/geofences.md)",
        "topic": "fleet/+/events",
        "measurement": "events",
        "tags": {"vehicle": {"from": "topic", "segment": 2}, "type": {"from": "payload", "path": "type"},
                 "geofence": {"from": "payload", "path": "geofence"}},
        "fields": {
            "name": {"type": "string"},
            "lat": {"type": "float", "min": -90, "max": 90},
            "lng": {"type": "float", "min": -180, "max": 180},
            "confirmed_ts": {"type": "int", "min": 0, "required": False},
            "dwell_s": {"type": "float", "min": 0, "required": False},
        },
        "time": {"from": "payload", "path": "ts", "unit": "ms"},
    },
    "alerts": {
        "description": "alerts firing and resolving, from the fleet processor (ecokit.yaml `alerts:`)",
        "topic": "fleet/+/alerts",
        "measurement": "alerts",
        "tags": {"vehicle": {"from": "topic", "segment": 2}, "alert": {"from": "payload", "path": "alert"},
                 "subject": {"from": "payload", "path": "subject"}},
        "fields": {
            "state": {"type": "string", "values": ["firing", "resolved"]},
            "severity": {"type": "string", "values": ["info", "warning", "critical"]},
            "condition": {"type": "string"},
            "value": {"type": "float", "required": False},
            "since": {"type": "int", "min": 0, "required": False},
            "duration_s": {"type": "float", "min": 0, "required": False},
        },
        "time": {"from": "payload", "path": "ts", "unit": "ms"},
    },
    "archive": {
        "description": "every message, byte for byte, for `ecokit replay` (bench traffic aside)",
        "topic": "#",
        # `ecokit bench` floods bench/... (fleet/{device}/bench/... with --as-devices): archiving
        # it would load the bridge and InfluxDB and fill the archive with synthetic payloads.
        # `exclude: []` archives it too; `ecokit bench --pipeline` then measures what was stored.
        "exclude": ["bench/#", "fleet/+/bench/#"],
        "payload": "raw",
        "measurement": "archive",
        "tags": {"topic": {"from": "topic"}},
        "fields": {
            "payload": {"type": "string", "from": "payload_base64"},
            "qos": {"type": "int", "from": "qos"},
            "retain": {"type": "bool", "from": "retain"},
        },
        "time": {"from": "received"},
        # Every payload of every message: 5,000 vehicles at 1 msg/s are 432 million points a
        # day (benchmarks/README.md, "disk"). A day, as in the ecosystem spec; replay reads it.
        "retention": "24h",
    },
}


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_default_rules(value: Any) -> Any:
    """User rules over the defaults (see the module docstring); non-mappings are left to validation."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        return value
    merged: dict[str, Any] = {}
    for name, default in DEFAULT_RULES.items():
        if name in value:
            override = value[name]
            if override is None:
                continue
            merged[name] = _merge(default, override) if isinstance(override, Mapping) else override
        else:
            merged[name] = copy.deepcopy(default)
    for name, rule in value.items():
        if name not in DEFAULT_RULES:
            merged[name] = rule
    return merged


def validate_rule_names(value: dict[str, RuleConfig]) -> dict[str, RuleConfig]:
    for name in value:
        if not RULE_NAME.match(name):
            raise ValueError(f"rule name {name!r} must be lowercase letters, digits and '_' (at most 41)")
    return value


class BridgeConfig(Section):
    """The ecokit bridge (MQTT → InfluxDB) used when the broker is not EMQX."""

    enabled: bool = Field(True, description="false: nothing is stored (EMQX never needs the bridge)")
    batch_size: int = Field(5000, ge=1, le=100_000, description="points per InfluxDB write, at most")
    flush_ms: int = Field(50, ge=1, le=60_000, description="a point waits at most this long before a write")
    buffer_mb: int = Field(512, ge=1, le=1_048_576,
                           description="on-disk buffer bound; points beyond it are dropped and counted")
    qos: Literal[0, 1] = Field(1, description="subscription QoS")


class ProcessorConfig(Section):
    """The fleet processor: derived speed, last_seen, online/offline → fleet/{id}/status."""

    enabled: bool = True
    offline_after: int = Field(60, ge=1, le=86_400, description="seconds without traffic before offline")
    status_interval: int = Field(30, ge=0, le=86_400,
                                 description="seconds between status updates of an active vehicle (0: only changes)")
