"""InfluxDB line protocol: formatting values the way both rule engines do, and parsing.

Formatting follows what EMQX's templates produce, so the bridge and an EMQX HTTP action
write the same text for the same value:

- floats: ``float_to_binary(F, [{decimals, 10}, compact])`` (emqx_template:to_string):
  ten decimals, trailing zeros removed, at least one digit after the point;
- integers in a float field: plain digits (InfluxDB reads ``52`` as the float 52.0);
- integers: digits and ``i``; booleans ``true``/``false``; strings in double quotes with
  ``\\`` and ``"`` escaped.

Tag values escape ``,``, ``=`` and space with a backslash and keep backslashes as they
are: InfluxDB's parser only unescapes those three (checked against influxd 1.6.7). A
value that ends in a backslash, is empty or holds a control character cannot be written
and is rejected before it gets here; so is a string with a lone surrogate (JSON's
``"\\ud800"``), which has no UTF-8 form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Value = float | int | bool | str

_TAG_ESCAPE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_CONTROL = re.compile(r"[\x00-\x1f]")
# JSON's "\ud800" escape decodes to a lone surrogate, which has no UTF-8 encoding: a line
# holding one cannot be sent (and would fail the whole batch it is in).
_SURROGATE = re.compile("[\ud800-\udfff]")


def format_float(value: float) -> str:
    """``float_to_binary(Value, [{decimals, 10}, compact])``."""
    text = f"{value:.10f}"
    if "." in text:
        text = text.rstrip("0")
        if text.endswith("."):
            text += "0"
    return text


def format_number_as_float(value: int | float) -> str:
    """A float field's value: JSON integers stay digits, floats get ten decimals."""
    if isinstance(value, int):
        return str(value)
    return format_float(value)


def escape_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def escape_tag(value: str) -> str:
    return value.translate(_TAG_ESCAPE)


def tag_problem(value: str) -> str | None:
    """Why ``value`` cannot be a tag value (None when it can)."""
    if not value:
        return "is empty"
    if _CONTROL.search(value):
        return "has a control character"
    if _SURROGATE.search(value):
        return "has a lone surrogate (\\ud800-\\udfff), which is not UTF-8"
    if value.endswith("\\"):
        return "ends with a backslash"
    return None


def string_problem(value: str) -> str | None:
    """Why ``value`` cannot be a string field (None when it can)."""
    if _CONTROL.search(value):
        return "has a control character"
    if _SURROGATE.search(value):
        return "has a lone surrogate (\\ud800-\\udfff), which is not UTF-8"
    return None


# -- parsing (tests, the EMQX model, `ecokit rules test`) -------------------------------


@dataclass(frozen=True)
class ParsedPoint:
    measurement: str
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Value] = field(default_factory=dict)
    time_ns: int | None = None

    def key(self) -> tuple[Any, ...]:
        """Identity in InfluxDB: measurement, tag set, timestamp."""
        return (self.measurement, tuple(sorted(self.tags.items())), self.time_ns)


class LineProtocolError(ValueError):
    pass


def _split_unescaped(text: str, sep: str, *, quotes: bool = False) -> list[str]:
    parts, current, i, in_quotes = [], [], 0, False
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if quotes and ch == '"':
            in_quotes = not in_quotes
        if ch == sep and not in_quotes:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape_key(text: str) -> str:
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


def _parse_field_value(raw: str) -> Value:
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise LineProtocolError(f"unterminated string {raw!r}")
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if raw in ("t", "T", "true", "True", "TRUE"):
        return True
    if raw in ("f", "F", "false", "False", "FALSE"):
        return False
    if raw.endswith("i"):
        return int(raw[:-1])
    if raw.endswith("u"):
        raise LineProtocolError("unsigned integers are refused by InfluxDB 1.x")
    try:
        return float(raw)
    except ValueError:
        raise LineProtocolError(f"bad field value {raw!r}") from None


def parse_line(line: str, *, precision: str = "ns") -> ParsedPoint:
    """One line of line protocol (as InfluxDB 1.x reads it), time normalised to ns."""
    sections = _split_unescaped(line.strip(), " ", quotes=True)
    if len(sections) not in (2, 3):
        raise LineProtocolError(f"expected 2 or 3 sections, got {len(sections)}: {line!r}")
    head = _split_unescaped(sections[0], ",")
    measurement = head[0].replace("\\,", ",").replace("\\ ", " ")
    tags = {}
    for item in head[1:]:
        key, sep, value = _partition_unescaped(item)
        if not sep or not value or _partition_unescaped(value)[1]:
            raise LineProtocolError(f"invalid tag format {item!r}")  # as influxd 1.x says
        tags[_unescape_key(key)] = _unescape_key(value)
    fields: dict[str, Value] = {}
    for item in _split_unescaped(sections[1], ",", quotes=True):
        key, sep, value = _partition_unescaped(item)
        if not sep:
            raise LineProtocolError(f"bad field {item!r}")
        fields[_unescape_key(key)] = _parse_field_value(value)
    time_ns = None
    if len(sections) == 3:
        scale = {"ns": 1, "us": 1_000, "u": 1_000, "ms": 1_000_000, "s": 1_000_000_000}[precision]
        time_ns = int(sections[2]) * scale
    return ParsedPoint(measurement, tags, fields, time_ns)


def _partition_unescaped(text: str) -> tuple[str, str, str]:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "=":
            return text[:i], "=", text[i + 1:]
        i += 1
    return text, "", ""


def merge_points(points: list[ParsedPoint]) -> list[ParsedPoint]:
    """What InfluxDB keeps: points with the same identity merge, later fields win."""
    merged: dict[tuple[Any, ...], ParsedPoint] = {}
    for point in points:
        key = point.key()
        if key in merged:
            old = merged[key]
            merged[key] = ParsedPoint(old.measurement, old.tags, {**old.fields, **point.fields}, old.time_ns)
        else:
            merged[key] = point
    return list(merged.values())
