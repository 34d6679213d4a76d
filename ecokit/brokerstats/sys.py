"""``$SYS/broker/...`` topics and their values, as Prometheus metric families (pure: no I/O).

Each leaf becomes ``mosquitto_<path>`` (levels joined with ``_``, spaces too): a gauge,
or a counter (``_total``) for the running totals the broker keeps since it started.
``version`` becomes ``mosquitto_info{version="..."} 1``, ``uptime`` ``mosquitto_uptime_seconds``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

PREFIX = "$SYS/broker/"

# Totals since the broker started (Prometheus sees a restart as a counter reset).
COUNTERS = frozenset({
    "bytes/received", "bytes/sent", "messages/received", "messages/sent",
    "publish/messages/received", "publish/messages/sent", "publish/messages/dropped",
    "publish/bytes/received", "publish/bytes/sent", "clients/expired",
})
NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)(?:\s+seconds)?\s*$")
NAME_PART = re.compile(r"[^a-zA-Z0-9_]+")

Kind = Literal["gauge", "counter", "info"]


@dataclass(frozen=True)
class Sample:
    name: str
    kind: Kind
    value: float
    help: str
    label: str | None = None  # the info metric's version


def metric_name(path: str) -> str:
    name = "mosquitto_" + NAME_PART.sub("_", path.strip("/")).strip("_").lower()
    return re.sub(r"__+", "_", name)


def parse(topic: str, payload: bytes) -> Sample | None:
    """The metric a ``$SYS`` message carries, or None for a topic or value that is not one."""
    if not topic.startswith(PREFIX):
        return None
    path = topic[len(PREFIX):]
    text = payload.decode("utf-8", "replace")
    if path == "version":
        return Sample("mosquitto_info", "info", 1.0, "the broker's version", label=text.strip())
    found = NUMBER.match(text)
    if found is None:
        return None
    value = float(found.group(1))
    if path == "uptime":
        return Sample("mosquitto_uptime_seconds", "gauge", value, "seconds since the broker started")
    if path in COUNTERS:
        return Sample(metric_name(path), "counter", value, f"{topic} (total since the broker started)")
    return Sample(metric_name(path), "gauge", value, topic)
