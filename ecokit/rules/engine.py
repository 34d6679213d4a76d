"""The rule evaluator: one MQTT message in, line protocol or a rejection out. No I/O.

The bridge runs this for every message; the EMQX rendering (``ecokit.rules.emqx``)
implements the same checks in rule SQL, in the same order, and the shared test vectors
(``tests/unit/rules/rule_vectors.yaml``) pin both. Checks, first failure wins:

1. topic filter, less the rule's ``exclude`` filters (skipped: neither stored nor
   dead-lettered); rules with ``payload: json`` never see dead letters;
2. where-filter: a message that does not match is skipped, not rejected (a message
   whose payload is not JSON does not match any where-filter);
3. tags from topic levels or the whole topic (``bad_value``);
4. the payload is a JSON object (``not_json``);
5. tags from the payload, then fields in declared order, then the timestamp:
   absent → ``missing_field``, wrong JSON type (``null`` included) → ``wrong_type``,
   a string that cannot be stored or is not one of ``values`` → ``bad_value``,
   outside min/max → ``out_of_range``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import orjson

from ecokit.config.rules import (
    DEADLETTER_PREFIX,
    FLOAT_LIMIT,
    INT64,
    MAX_BASE64_SOURCE_BYTES,
    MAX_SERIES_KEY_BYTES,
    MAX_STRING_BYTES,
    TIME_RECEIVED_FIELD,
    FieldSpec,
    RuleConfig,
)
from ecokit.rules.lineproto import (
    escape_string,
    escape_tag,
    format_float,
    string_problem,
    tag_problem,
)

NOT_JSON = "not_json"
MISSING = "missing_field"
WRONG_TYPE = "wrong_type"
OUT_OF_RANGE = "out_of_range"
BAD_VALUE = "bad_value"
REASONS = (NOT_JSON, MISSING, WRONG_TYPE, OUT_OF_RANGE, BAD_VALUE)

_MISSING = object()
# A dead letter carries at most this much of the original payload (base64 ~350 KB).
DEADLETTER_MAX_PAYLOAD = 256 * 1024
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


@dataclass(frozen=True, slots=True)
class Message:
    """An MQTT message as the rules see it; ``received_ns`` is the receive time."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class Point:
    rule: str
    line: str


@dataclass(frozen=True, slots=True)
class Rejection:
    rule: str
    reason: str
    field: str
    detail: str

    @property
    def topic(self) -> str:
        return f"{DEADLETTER_PREFIX}/{self.rule}"

    def deadletter(self, msg: Message) -> bytes:
        """The dead-letter payload (the same keys the EMQX republish action writes)."""
        return deadletter_document(self.rule, self.reason, self.field, msg.topic, msg.payload, msg.qos, msg.retain)


def deadletter_document(rule: str, reason: str, field: str, topic: str, payload: bytes, qos: int = 0,
                        retain: bool = False) -> bytes:
    """A dead letter: which rule (or service) refused the message, why, and the message. A
    payload over DEADLETTER_MAX_PAYLOAD is cut there (``truncated``, ``size``), so the dead
    letter always fits a broker's packet limit."""
    doc: dict[str, Any] = {"rule": rule, "reason": reason, "field": field, "topic": topic, "qos": qos,
                           "retain": retain}
    if len(payload) > DEADLETTER_MAX_PAYLOAD:
        doc.update(payload=base64.b64encode(payload[:DEADLETTER_MAX_PAYLOAD]).decode(), truncated=True,
                   size=len(payload))
    else:
        doc["payload"] = base64.b64encode(payload).decode()
    return json.dumps(doc, separators=(",", ":")).encode()


Outcome = Point | Rejection


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


_LONG_NUMBER = re.compile(rb"[0-9]{20}")


def decode_json(payload: bytes) -> Any:
    """Strict JSON (no NaN/Infinity, no overflowing numbers); raises ValueError.

    orjson first (about ten times faster); it turns integers beyond 64 bits into floats,
    so payloads with 20+ digit runs, and whatever orjson refuses, go to the strict standard
    parser, whose verdict is the one that counts.
    """
    if _LONG_NUMBER.search(payload) is None:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            pass
    doc = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant, parse_float=_parse_float)
    if _SURROGATE_ESCAPE.search(payload) is not None and _has_lone_surrogate(doc):
        # "\ud800" alone: no character, no UTF-8 (a line holding it could not be sent);
        # orjson and EMQX's JSON decoder (jiffy: invalid_string) refuse it too.
        raise ValueError("a string holds a lone surrogate escape (\\ud800-\\udfff), which is not a character")
    return doc


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(doc: Any) -> bool:
    todo = [doc]
    while todo:
        value = todo.pop()
        if type(value) is str:
            if _SURROGATE.search(value):
                return True
        elif type(value) is dict:
            todo.extend(value.keys())
            todo.extend(value.values())
        elif type(value) is list:
            todo.extend(value)
    return False


def lookup(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = doc
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Field:
    __slots__ = ("hi", "kind", "lo", "name", "path", "prefix", "required", "source", "values")

    def __init__(self, name: str, spec: FieldSpec, path: str) -> None:
        self.name = name
        self.kind = spec.type
        self.source = spec.from_
        self.path = tuple(path.split("."))
        self.required = spec.required
        self.lo = spec.min
        self.hi = spec.max
        if self.kind == "int":
            self.lo = max(self.lo, -INT64 - 1) if self.lo is not None else -INT64 - 1
            self.hi = min(self.hi, INT64) if self.hi is not None else INT64
        elif self.kind == "float":
            # A 400-digit JSON integer passes `float` but InfluxDB cannot parse it.
            self.lo = self.lo if self.lo is not None else -FLOAT_LIMIT
            self.hi = self.hi if self.hi is not None else FLOAT_LIMIT
        self.values = frozenset(spec.values) if spec.values is not None else None
        self.prefix = f"{name}="


class CompiledRule:
    """One rule, prepared for fast evaluation."""

    def __init__(self, name: str, rule: RuleConfig) -> None:
        self.name = name
        self.rule = rule
        self.json = rule.payload == "json"
        self.measurement = rule.measurement
        # Tags in key order: the canonical line protocol order, and the EMQX template's.
        self.topic_tags: list[tuple[str, int | None]] = []
        self.payload_tags: list[tuple[str, tuple[str, ...]]] = []
        for key in sorted(rule.tags):
            tag = rule.tags[key]
            if tag.from_ == "topic":
                self.topic_tags.append((key, tag.segment))
            else:
                assert tag.path is not None
                self.payload_tags.append((key, tuple(tag.path.split("."))))
        self.tag_order = sorted(rule.tags)
        self.fields = [_Field(n, s, rule.field_path(n)) for n, s in rule.fields.items()]
        self.field_fns = [_compile_field(name, f) for f in self.fields]
        self.time_from: Literal["payload", "received"] = rule.time.from_
        self.time_fallback = rule.time.if_missing == "received"
        self.time_path = tuple(rule.time.path.split("."))
        # Bytes of the series key left for the (escaped) tag values.
        self.tag_budget = MAX_SERIES_KEY_BYTES - len(rule.measurement) - sum(len(f",{k}=") for k in rule.tags)
        self.time_lo, self.time_hi = rule.time.bounds()
        self.time_scale = _UNIT_NS[rule.time.unit]
        self.where = [(tuple(c.path.split(".")), c.op, c.value) for c in rule.where]

    def matches(self, topic: str) -> bool:
        if self.json and topic.startswith(DEADLETTER_PREFIX + "/"):
            return False
        return self.rule.takes(topic)

    def _where_holds(self, doc: Any) -> bool:
        if not isinstance(doc, dict):
            return False
        for path, op, expected in self.where:
            value = lookup(doc, path)
            if op == "exists":
                if value is _MISSING:
                    return False
                continue
            if isinstance(expected, bool):
                ok = type(value) is bool and ((value == expected) if op == "eq" else (value != expected))
            elif isinstance(expected, str):
                ok = type(value) is str and ((value == expected) if op == "eq" else (value != expected))
            else:
                assert isinstance(expected, float | int)
                ok = _is_number(value) and _compare(op, value, expected)
            if not ok:
                return False
        return True

    def _reject(self, reason: str, name: str, detail: str) -> Rejection:
        return Rejection(self.name, reason, name, detail)

    def apply(self, msg: Message, doc: Any) -> Outcome | None:
        """Evaluate ``msg`` (``doc``: its decoded payload or ``_MISSING`` when not JSON)."""
        if self.where and not self._where_holds(doc):
            return None
        tags: dict[str, str] = {}
        levels: list[str] | None = None
        for key, segment in self.topic_tags:
            if segment is None:
                value = msg.topic
            else:
                if levels is None:
                    levels = msg.topic.split("/")
                value = levels[segment - 1]
            problem = tag_problem(value)
            if problem:
                return self._reject(BAD_VALUE, key, f"tag {key} {problem}")
            tags[key] = value
        if self.json and not isinstance(doc, dict):
            return self._reject(NOT_JSON, "", "the payload is not a JSON object")
        for key, path in self.payload_tags:
            value = lookup(doc, path)
            if value is _MISSING:
                return self._reject(MISSING, key, f"tag {key} ({'.'.join(path)}) is missing")
            if type(value) is not str:
                return self._reject(WRONG_TYPE, key, f"tag {key} must be a string, got {_describe(value)}")
            problem = tag_problem(value)
            if problem:
                return self._reject(BAD_VALUE, key, f"tag {key} {problem}")
            tags[key] = value
        if tags and sum(len(escape_tag(v).encode()) for v in tags.values()) > self.tag_budget:
            return self._reject(BAD_VALUE, "tags", f"the tags make a series key over {MAX_SERIES_KEY_BYTES} "
                                                   "bytes, more than InfluxDB stores")
        parts: list[str] = []
        for field_fn in self.field_fns:
            rendered = field_fn(msg, doc)
            if type(rendered) is str:
                parts.append(rendered)
            elif rendered is not None:
                assert isinstance(rendered, Rejection)
                return rendered
        if self.time_from == "received":
            time_ns = msg.received_ns
        else:
            stamp = lookup(doc, self.time_path)
            name = ".".join(self.time_path)
            if stamp is _MISSING and self.time_fallback:
                time_ns = msg.received_ns
                parts.append(f"{TIME_RECEIVED_FIELD}=true")
            elif stamp is _MISSING:
                return self._reject(MISSING, name, f"timestamp {name} is missing")
            elif type(stamp) is not int:
                return self._reject(WRONG_TYPE, name, f"timestamp {name} must be an integer, got {_describe(stamp)}")
            elif stamp < self.time_lo or stamp > self.time_hi:
                return self._reject(OUT_OF_RANGE, name, f"timestamp {name}={stamp} is outside "
                                                        f"[{self.time_lo}, {self.time_hi}]")
            else:
                time_ns = stamp * self.time_scale
        head = self.measurement
        for key in self.tag_order:
            head += f",{key}={escape_tag(tags[key])}"
        return Point(self.name, f"{head} {','.join(parts)} {time_ns}")


FieldFn = Callable[[Message, Any], "str | Rejection | None"]


def _compile_field(rule: str, fld: _Field) -> FieldFn:
    """One field as a closure over its constants: the rendered ``name=value``, a
    Rejection, or None (an optional field that is absent)."""
    prefix, name, required = fld.prefix, fld.name, fld.required
    if fld.source == "payload_base64":
        b64 = base64.b64encode

        def base64_field(msg: Message, doc: Any) -> str | Rejection | None:
            if len(msg.payload) > MAX_BASE64_SOURCE_BYTES:
                return Rejection(rule, BAD_VALUE, fld.name, f"{fld.name}: a payload of {len(msg.payload)} bytes is "
                                 f"over {MAX_STRING_BYTES} bytes in base64, more than InfluxDB stores")
            return f'{prefix}"{b64(msg.payload).decode()}"'
        return base64_field
    if fld.source == "qos":
        return lambda msg, doc: f"{prefix}{msg.qos}i"
    if fld.source == "retain":
        return lambda msg, doc: prefix + ("true" if msg.retain else "false")
    path = fld.path
    key, single = path[0], len(path) == 1
    span = _range(fld)
    lo = fld.lo if fld.lo is not None else -math.inf
    hi = fld.hi if fld.hi is not None else math.inf
    values = fld.values
    kind = fld.kind

    def absent() -> Rejection | None:
        return Rejection(rule, MISSING, name, f"{name} is missing") if required else None

    def wrong(expected: str, value: Any) -> Rejection:
        return Rejection(rule, WRONG_TYPE, name, f"{name} must be {expected}, got {_describe(value)}")

    def outside(value: Any) -> Rejection:
        return Rejection(rule, OUT_OF_RANGE, name, f"{name}={value} is outside {span}")

    if kind == "float":
        def float_field(msg: Message, doc: Any) -> str | Rejection | None:
            value = doc.get(key, _MISSING) if single else lookup(doc, path)
            kind_of = type(value)
            if kind_of is float:
                if value < lo or value > hi:
                    return outside(value)
                return prefix + format_float(value)
            if kind_of is int:
                if value < lo or value > hi:
                    return outside(value)
                return prefix + str(value)
            return absent() if value is _MISSING else wrong("a number", value)
        return float_field
    if kind == "int":
        def int_field(msg: Message, doc: Any) -> str | Rejection | None:
            value = doc.get(key, _MISSING) if single else lookup(doc, path)
            if type(value) is int:
                if value < lo or value > hi:
                    return outside(value)
                return f"{prefix}{value}i"
            return absent() if value is _MISSING else wrong("an integer", value)
        return int_field
    if kind == "bool":
        def bool_field(msg: Message, doc: Any) -> str | Rejection | None:
            value = doc.get(key, _MISSING) if single else lookup(doc, path)
            if type(value) is bool:
                return prefix + ("true" if value else "false")
            return absent() if value is _MISSING else wrong("true or false", value)
        return bool_field

    def string_field(msg: Message, doc: Any) -> str | Rejection | None:
        value = doc.get(key, _MISSING) if single else lookup(doc, path)
        if type(value) is not str:
            return absent() if value is _MISSING else wrong("a string", value)
        problem = string_problem(value)
        if problem:
            return Rejection(rule, BAD_VALUE, name, f"{name} {problem}")
        if len(value) > MAX_STRING_BYTES // 4 and len(value.encode()) > MAX_STRING_BYTES:
            return Rejection(rule, BAD_VALUE, name, f"{name} is over {MAX_STRING_BYTES} bytes, "
                                                    "more than InfluxDB stores")
        if values is not None and value not in values:
            return Rejection(rule, BAD_VALUE, name, f"{name}={_describe(value)} is not one of {sorted(values)}")
        return f'{prefix}"{escape_string(value)}"'
    return string_field


def _range(fld: _Field) -> str:
    lo = "-inf" if fld.lo is None else f"{fld.lo:g}"
    hi = "inf" if fld.hi is None else f"{fld.hi:g}"
    return f"[{lo}, {hi}]"


def _compare(op: str, left: float, right: float) -> bool:
    if op == "eq":
        return left == right
    if op == "ne":
        return left != right
    if op == "gt":
        return left > right
    if op == "ge":
        return left >= right
    if op == "lt":
        return left < right
    return left <= right


class RuleEngine:
    """Every enabled rule of a stack; ``evaluate`` is the bridge's hot path."""

    def __init__(self, rules: Mapping[str, RuleConfig]) -> None:
        self.rules = [CompiledRule(name, rule) for name, rule in rules.items() if rule.enabled]
        self._match = lru_cache(maxsize=65536)(self._matching)

    def _matching(self, topic: str) -> tuple[CompiledRule, ...]:
        return tuple(r for r in self.rules if r.matches(topic))

    def matching(self, topic: str) -> tuple[CompiledRule, ...]:
        return self._match(topic)

    def evaluate(self, msg: Message) -> list[Outcome]:
        """Points and rejections for ``msg``, in rule order (skipped rules give nothing)."""
        rules = self._match(msg.topic)
        if not rules:
            return []
        doc: Any = _MISSING
        decoded = False
        out: list[Outcome] = []
        for rule in rules:
            if rule.json and not decoded:
                decoded = True
                try:
                    doc = decode_json(msg.payload)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    doc = _MISSING
            result = rule.apply(msg, doc)
            if result is not None:
                out.append(result)
        return out
