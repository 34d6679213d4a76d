"""A bench run into InfluxDB (``ecokit bench --out influxdb[=URL]``), where the generated Grafana
dashboard "ecokit / Bench" (``ecokit.dashboards``) shows it next to the stack's own.

Three measurements, written through the v1 API every InfluxDB version serves:

- ``bench_timeline``: one point per second of the run (tags ``scenario``, ``run``, ``phase``;
  fields ``offered``, ``sent``, ``received``, ``p50_ms``, ``p99_ms``, ``max_ms``,
  ``publishers_connected``, ``subscribers_connected``, ``connects``, ``connect_failures``,
  ``broker_cpu_percent``, ``broker_rss_mb`` where measured), at the second's wall-clock time;
- ``bench_summary``: one point per phase and one with ``phase=total`` (sent, received, lost,
  loss, rates, latency and PUBACK percentiles, connect p95 and success), at the run's start;
- ``bench_slo``: one point per SLO (tags ``key``; fields ``ok``, ``actual``, ``limit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ecokit.errors import UsageError
from ecokit.rules.lineproto import escape_string, escape_tag, format_float
from ecokit.store.influx import InfluxEndpoint, InfluxV1

TIMELINE = "bench_timeline"
SUMMARY = "bench_summary"
SLO = "bench_slo"
TIMELINE_FIELDS = ("offered", "sent", "received", "p50_ms", "p99_ms", "max_ms", "publishers_connected",
                   "subscribers_connected", "connects", "connect_failures", "broker_cpu_percent", "broker_rss_mb")


def endpoint_from_url(url: str) -> InfluxEndpoint:
    """``http[s]://[user:password@]host:port/DATABASE[?rp=POLICY]`` → an endpoint of the v1 API."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--out influxdb={url}: expected http:// or https://, then user:password@ if needed, "
                         "host:port/database")
    database = parts.path.strip("/")
    if not database or "/" in database:
        raise UsageError(f"--out influxdb={url}: the path names the database, e.g. http://localhost:8086/ecokit")
    port = f":{parts.port}" if parts.port else ""
    rp = parse_qs(parts.query).get("rp", [None])[0]
    return InfluxEndpoint(f"{parts.scheme}://{parts.hostname}{port}", database,
                          unquote(parts.username) if parts.username else None,
                          unquote(parts.password) if parts.password else None, retention_policy=rp)


def _fields(values: Mapping[str, Any]) -> str:
    out = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, int):
            out.append(f"{key}={value}i")
        elif isinstance(value, float):
            out.append(f"{key}={format_float(value)}")
        else:
            out.append(f'{key}="{escape_string(str(value))}"')
    return ",".join(out)


def _tags(values: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={escape_tag(str(v))}" for k, v in values.items() if v not in (None, ""))


def _line(measurement: str, tags: Mapping[str, Any], fields: Mapping[str, Any], ns: int) -> str | None:
    body = _fields(fields)
    return f"{measurement},{_tags(tags)} {body} {ns}" if body else None


def result_lines(doc: Mapping[str, Any]) -> list[str]:
    """The line protocol of one run's JSON document (``BenchResult.to_dict()``)."""
    base = {"scenario": doc["scenario"], "run": doc["run_id"]}
    t0 = int(doc["started_ns"])
    lines = []
    for row in doc.get("timeline", []):
        line = _line(TIMELINE, base | {"phase": row.get("phase") or "-"},
                     {k: row.get(k) for k in TIMELINE_FIELDS}, t0 + int(float(row["t"]) * 1e9))
        if line:
            lines.append(line)
    figures = [*doc.get("phases", []), doc["total"]]
    for f in figures:
        latency, puback, connect = f.get("latency_ms") or {}, f.get("puback_ms") or {}, f.get("connect") or {}
        fields = {"sent": f["sent"], "received": f["unique"], "lost": f.get("lost"), "loss": f.get("loss"),
                  "send_rate": f.get("send_rate"), "rate": f.get("rate"), "planned": f.get("planned"),
                  "p50_ms": latency.get("p50_ms"), "p95_ms": latency.get("p95_ms"), "p99_ms": latency.get("p99_ms"),
                  "max_ms": latency.get("max_ms"), "puback_p95_ms": puback.get("p95_ms"),
                  "connect_p95_ms": (connect.get("total_ms") or {}).get("p95_ms"),
                  "connect_success": connect.get("success"), "passed": doc.get("passed")}
        fields = {k: float(v) if isinstance(v, float | int) and not isinstance(v, bool) and k not in (
            "sent", "received", "lost", "planned") else v for k, v in fields.items()}
        line = _line(SUMMARY, base | {"phase": f["name"]}, fields, t0)
        if line:
            lines.append(line)
    for verdict in doc.get("slo", []):
        line = _line(SLO, base | {"key": verdict["key"]},
                     {"ok": bool(verdict["ok"]), "actual": None if verdict["actual"] is None else
                      float(verdict["actual"]), "limit": float(verdict["limit"])}, t0)
        if line:
            lines.append(line)
    return lines


def write_result(doc: Mapping[str, Any], endpoint: InfluxEndpoint) -> int:
    """Write the run; returns the number of points (StoreError with InfluxDB's answer on failure)."""
    lines = result_lines(doc)
    with InfluxV1(endpoint) as client:
        for start in range(0, len(lines), 5000):
            client.write(lines[start:start + 5000])
    return len(lines)
