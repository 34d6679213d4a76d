"""What the schema tests share: where the vendored schemas are, how EMQX's OpenAPI
document is read, and the custom rules of the rendered matrix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecokit.schemacheck.openapi import Reading
from ecokit.stack import Stack

SCHEMAS = Path(__file__).resolve().parents[2] / "data" / "schemas"
EMQX = SCHEMAS / "emqx"
INFLUX = SCHEMAS / "influxdb"
GRAFANA = SCHEMAS / "grafana"

# How EMQX's generated OpenAPI document is read against what EMQX accepts (ecokit.schemacheck.openapi):
# closed objects are stricter than the document (EMQX refuses unknown fields), anyOf and enum
# members without the type are looser than the document (EMQX takes these values; the
# document's oneOf and type: string refuse them). The tests that rely on it say which.
EMQX_API_READING = Reading(closed=True, any_of=True, enum_types=True)

# A user's own rules, beside the defaults: every kind of tag, field, time and where-filter
# the rules section has, a raw rule, a disabled one, and edits of two default rules.
CUSTOM_RULES: dict[str, Any] = {
    "status": {"fields": {"state": {"type": "string", "values": ["online", "offline", "unknown"]}}},
    "telemetry": {"fields": {"heading": None, "odometer": {"type": "float", "min": 0, "required": False}}},
    "engine": {
        "description": "engine diagnostics",
        "topic": "plant/+/line/+/engine",
        "measurement": "engine_diag",
        "tags": {"plant": {"from": "topic", "segment": 2}, "line": {"from": "topic", "segment": 4},
                 "vendor": {"from": "payload", "path": "meta.vendor"}},
        "fields": {"rpm": {"type": "int", "min": 0, "max": 20000},
                   "temp": {"type": "float", "min": -40, "max": 150, "path": "sensors.temp"},
                   "running": {"type": "bool", "required": False},
                   "mode": {"type": "string", "required": False}},
        "time": {"from": "payload", "path": "t", "unit": "s"},
        "where": [{"path": "kind", "op": "eq", "value": "diag"}, {"path": "ok", "op": "eq", "value": True},
                  {"path": "level", "op": "ge", "value": 2.5}, {"path": "meta", "op": "exists"},
                  {"path": "skip", "op": "ne", "value": "yes"}],
    },
    "blobs": {"topic": "raw/#", "measurement": "blobs", "payload": "raw",
              "tags": {"source": {"from": "topic"}},
              "fields": {"data": {"type": "string", "from": "payload_base64"}, "qos": {"type": "int", "from": "qos"},
                         "retained": {"type": "bool", "from": "retain"}},
              "time": {"from": "received"}},
    "nanos": {"topic": "lab/+/ns", "measurement": "lab", "fields": {"v": {"type": "float"}},
              "time": {"path": "ts_ns", "unit": "ns"}},
    "micros": {"topic": "lab/+/us", "measurement": "lab", "fields": {"v": {"type": "int"}},
               "time": {"path": "ts", "unit": "us", "min": 0}},
    "off": {"topic": "off/#", "measurement": "off", "fields": {"v": {}}, "enabled": False},
}

USERS = [{"username": "dash", "subscribe": ["fleet/+/telemetry"]},
         {"username": "ops", "superuser": True, "password": "ops-password-1"}]



StackMaker = Callable[..., Stack]
