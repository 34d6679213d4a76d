"""The HTML report of a bench run (``ecokit bench --report run.html``), and of two runs side by side
(``--compare a.json b.json``): one self-contained file that works offline.

Everything is inside the file: the result as JSON, the tables rendered here (every text from the
run is HTML-escaped), and the interactive charts drawn by uPlot, whose source is inlined from the
copy vendored from npm (``ecokit/console/static/vendor/uplot-1.6.32``, MIT licence beside it; the
console's charts use the same copy). The page loads nothing from the network and says so in its
Content-Security-Policy.

Charts come from the per-second timeline: rate offered / sent / received, latency p50 / p99 / max,
connections (publishers and subscribers connected, connects and failures per second), and the
broker process's CPU and memory when it was sampled.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

UPLOT = Path(__file__).resolve().parent.parent / "console" / "static" / "vendor" / "uplot-1.6.32"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#1d232a;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde3ea;
padding-bottom:4px}.meta{color:#5b6672}table{border-collapse:collapse;margin:6px 0;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;text-align:right;border-bottom:1px solid #eef1f4}th:first-child,td:first-child{text-align:left}
th{background:#f5f7f9;font-weight:600}.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}
.verdict{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.verdict.ok{background:#137333;color:#fff}.verdict.bad{background:#b3261e;color:#fff}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:18px}
.chart h3{font-size:14px;margin:4px 0}.warn{color:#8a5300}ul{margin:4px 0 4px 18px;padding:0}
code{background:#f2f4f6;padding:0 4px;border-radius:3px}
"""

# The page's own script: reads the embedded result(s) and draws the charts with uPlot.
SCRIPT = r"""
const runs = JSON.parse(document.getElementById("ecokit-bench-data").textContent);
const palette = ["#1a73e8", "#e8710a", "#188038", "#a142f4", "#d93025", "#12b5cb", "#9aa0a6"];
function column(rows, key) { return rows.map(r => (r[key] === undefined ? null : r[key])); }
function chart(el, title, xs, series, unit) {
  const box = document.createElement("div");
  box.className = "chart";
  const h = document.createElement("h3");
  h.textContent = title;
  box.appendChild(h);
  el.appendChild(box);
  const opts = {
    width: Math.max(300, box.clientWidth || 540), height: 240,
    scales: {x: {time: false}},
    axes: [{label: "seconds"}, {label: unit, size: 60}],
    series: [{label: "t"}].concat(series.map((s, i) => ({label: s.label, stroke: palette[i % palette.length],
                                                        width: 1.5, spanGaps: false})))
  };
  new uPlot(opts, [xs].concat(series.map(s => s.values)), box);
}
function draw() {
  const el = document.getElementById("charts");
  if (runs.length === 1) {
    const rows = runs[0].timeline || [];
    const xs = column(rows, "t");
    chart(el, "messages per second", xs, [
      {label: "offered", values: column(rows, "offered")},
      {label: "sent", values: column(rows, "sent")},
      {label: "received", values: column(rows, "received")}], "msg/s");
    chart(el, "end-to-end latency", xs, [
      {label: "p50", values: column(rows, "p50_ms")},
      {label: "p99", values: column(rows, "p99_ms")},
      {label: "max", values: column(rows, "max_ms")}], "ms");
    chart(el, "connections", xs, [
      {label: "publishers connected", values: column(rows, "publishers_connected")},
      {label: "subscribers connected", values: column(rows, "subscribers_connected")},
      {label: "connects/s", values: column(rows, "connects")},
      {label: "failed connects/s", values: column(rows, "connect_failures")}], "clients");
    if (rows.some(r => r.broker_cpu_percent !== undefined)) {
      chart(el, "broker process", xs, [
        {label: "CPU % of a core", values: column(rows, "broker_cpu_percent")},
        {label: "RSS MB", values: column(rows, "broker_rss_mb")}], "% / MB");
    }
  } else {
    const longest = runs.reduce((a, r) => Math.max(a, (r.timeline || []).length), 0);
    const xs = Array.from({length: longest}, (_, i) => i + 1);
    const pad = (rows, key) => xs.map((_, i) => (rows[i] && rows[i][key] !== undefined ? rows[i][key] : null));
    const name = (r, i) => (i === 0 ? "A " : "B ") + r.scenario + " " + r.run_id;
    chart(el, "received per second", xs, runs.map((r, i) => ({label: name(r, i), values: pad(r.timeline, "received")})),
          "msg/s");
    chart(el, "sent per second", xs, runs.map((r, i) => ({label: name(r, i), values: pad(r.timeline, "sent")})),
          "msg/s");
    chart(el, "latency p99", xs, runs.map((r, i) => ({label: name(r, i), values: pad(r.timeline, "p99_ms")})), "ms");
    chart(el, "publishers connected", xs,
          runs.map((r, i) => ({label: name(r, i), values: pad(r.timeline, "publishers_connected")})), "clients");
  }
  document.body.dataset.charts = String(el.querySelectorAll(".uplot").length);
}
draw();
"""


@cache
def _uplot() -> tuple[str, str]:
    js = (UPLOT / "uPlot.esm.js").read_text(encoding="utf-8")
    css = (UPLOT / "uPlot.min.css").read_text(encoding="utf-8")
    return js, css


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    if isinstance(value, int | float):
        return f"{value:,.0f}" if abs(value) >= 10 or digits == 0 else f"{value:.3g}"
    return _e(value)


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _figures_rows(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    phases = list(doc.get("phases", []))
    return [*phases, doc["total"]] if len(phases) > 1 else phases


def _summary(doc: Mapping[str, Any]) -> str:
    rows = _figures_rows(doc)
    flow = _table(["phase", "offered", "sent", "received", "lost", "duplicates", "sent/s", "received/s"], [
        [_e(f["name"]), _e(f["offered"]), _num(f["sent"]), _num(f["unique"]),
         "-" if f.get("lost") is None else _num(f["lost"]), "-" if f.get("expected") is None else _num(f["duplicates"]),
         _num(f["send_rate"]), _num(f.get("rate"))] for f in rows])
    latency = _table(["phase", "p50", "p90", "p95", "p99", "p99.9", "max", "send lag p99", "PUBACK p95"], [
        [_e(f["name"]), *(_ms(f["latency_ms"].get(k)) for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms",
                                                                "max_ms")),
         _ms(f["send_lag_ms"].get("p99_ms")), _ms((f.get("puback_ms") or {}).get("p95_ms"))] for f in rows])
    out = f"<h2>Throughput</h2>{flow}<h2>Latency, ms</h2>{latency}"
    connect_rows = []
    setup = doc.get("connections", {}).get("publishers", {}).get("connect_before_run") or {}
    for name, c in [("before the run", setup)] + [(f["name"], f.get("connect") or {}) for f in rows]:
        if not c:
            continue
        total = c.get("total_ms", {})
        connect_rows.append([_e(name), _num(c["attempts"]), _num(c["ok"]), _num(c["failed"] + c["refused"]),
                             f"{c['success'] * 100:.2f}%", _ms(total.get("p50_ms")), _ms(total.get("p95_ms")),
                             _ms(total.get("p99_ms")), _ms(c.get("tls_ms", {}).get("p95_ms")),
                             _ms(c.get("connack_ms", {}).get("p95_ms"))])
    if connect_rows:
        out += "<h2>Connections</h2>" + _table(
            ["phase", "attempts", "connected", "failed", "success", "p50 ms", "p95 ms", "p99 ms", "TLS p95 ms",
             "CONNACK p95 ms"], connect_rows)
    return out


def _slos(doc: Mapping[str, Any]) -> str:
    slos = doc.get("slo", [])
    if not slos:
        return "<p class='meta'>No SLO was set for this run.</p>"
    return "<ul>" + "".join(f"<li class='{'ok' if s['ok'] else 'bad'}'>{_e(s['line'])}</li>" for s in slos) + "</ul>"


def _broker(doc: Mapping[str, Any]) -> str:
    parts = []
    proc = doc.get("broker", {}).get("process") or {}
    if "cpu_percent_mean" in proc:
        parts.append(f"broker process (pid {_e(proc.get('pid'))}): CPU mean {proc['cpu_percent_mean']:.0f}%, max "
                     f"{proc['cpu_percent_max']:.0f}% of a core; RSS {proc.get('rss_mb_start', 0):.1f} → "
                     f"{proc.get('rss_mb_max', 0):.1f} MB")
    sys = doc.get("broker", {}).get("sys") or {}
    if sys.get("available"):
        parts.append("$SYS: " + ", ".join(f"{_e(k.replace('_', ' '))} {v:,.0f}" for k, v in sys.items()
                                          if isinstance(v, int | float) and not isinstance(v, bool)
                                          and k != "sample_span_s"))
    pubs = doc.get("connections", {}).get("publishers", {})
    if pubs.get("cpu_us_per_message") is not None:
        parts.append(f"publisher processes: {pubs['cpu_s']:.2f} CPU s, {pubs['cpu_us_per_message']:.2f} µs per "
                     "message")
    return "".join(f"<p>{p}</p>" for p in parts)


def _notes(doc: Mapping[str, Any]) -> str:
    out = ""
    if doc.get("warnings"):
        out += "<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{_e(w)}</li>" for w in doc["warnings"]) + "</ul>"
    if doc.get("errors"):
        out += "<h2>Errors (last)</h2><ul>" + "".join(f"<li>{_e(e)}</li>" for e in doc["errors"][-10:]) + "</ul>"
    return out


def _page(title: str, body: str, runs: Sequence[Mapping[str, Any]]) -> str:
    js, css = _uplot()
    data = json.dumps(list(runs), separators=(",", ":")).replace("</", "<\\/")
    csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{css}{CSS}</style></head><body>{body}"
            f"<h2>Timeline</h2><div id='charts' class='charts'></div>"
            f"<script type='application/json' id='ecokit-bench-data'>{data}</script>"
            f"<script type='module'>{js}\n{SCRIPT}</script></body></html>")


def render_report(doc: Mapping[str, Any]) -> str:
    """The report of one run, from its JSON document (``BenchResult.to_dict()``)."""
    passed = doc.get("passed", True)
    settings = doc.get("settings", {})
    verdict = "<span class='verdict ok'>all SLOs hold</span>" if passed else \
        "<span class='verdict bad'>SLO violated</span>"
    if doc.get("stopped_early"):
        verdict += " <span class='verdict bad'>stopped early</span>"
    adjusted = " (the built-in or declared scenario, scaled by the run's options)" if settings.get("adjusted") else ""
    body = (f"<h1>ecokit bench {_e(doc.get('scenario'))} {verdict}</h1>"
            f"<p class='meta'>{_e(doc.get('description'))}{_e(adjusted)}</p>"
            f"<p class='meta'>run <code>{_e(doc.get('run_id'))}</code>, started {_e(doc.get('started_at'))} UTC, "
            f"target {_e(doc.get('target'))}; {_e(settings.get('publishers'))} publishers over "
            f"{_e(settings.get('transport', 'mqtt'))}, {_e(settings.get('subscribers'))} subscriber(s), fan-out "
            f"{_e(settings.get('fanout'))}, MQTT {_e(settings.get('mqtt'))}, payload {_e(settings.get('payload'))}"
            f"</p><h2>SLOs</h2>{_slos(doc)}{_summary(doc)}<h2>Broker and load generators</h2>{_broker(doc)}"
            f"{_notes(doc)}")
    return _page(f"ecokit bench {doc.get('scenario')} {doc.get('run_id')}", body, [doc])


def render_compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """Two runs side by side: their totals with B/A ratios, and their timelines overlaid."""
    def get(doc: Mapping[str, Any], path: str) -> Any:
        value: Any = doc
        for key in path.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        return value

    measures = [("sent", "total.sent"), ("received", "total.unique"), ("lost", "total.lost"),
                ("sent/s", "total.send_rate"), ("received/s", "total.rate"),
                ("latency p50 ms", "total.latency_ms.p50_ms"), ("latency p99 ms", "total.latency_ms.p99_ms"),
                ("latency max ms", "total.latency_ms.max_ms"), ("PUBACK p95 ms", "total.puback_ms.p95_ms"),
                ("connect p95 ms", "total.connect.total_ms.p95_ms"), ("connect success", "total.connect.success"),
                ("send lag p99 ms", "total.send_lag_ms.p99_ms"), ("broker CPU %", "total.broker_cpu_percent"),
                ("publisher µs/msg", "connections.publishers.cpu_us_per_message")]
    rows = []
    for label, path in measures:
        x, y = get(a, path), get(b, path)
        ratio = f"{y / x:.2f}x" if isinstance(x, int | float) and isinstance(y, int | float) and x else "-"
        rows.append([_e(label), _num(x, 2), _num(y, 2), ratio])
    head = []
    for tag, doc in (("A", a), ("B", b)):
        head.append(f"<p><b>{tag}</b>: {_e(doc.get('scenario'))} run <code>{_e(doc.get('run_id'))}</code>, "
                    f"{_e(doc.get('started_at'))}, {_e(doc.get('target'))}: "
                    + ("<span class=ok>SLOs hold</span>" if doc.get("passed", True)
                       else "<span class=bad>SLO violated</span>") + "</p>")
    body = (f"<h1>ecokit bench: A vs B</h1>{''.join(head)}<h2>Totals</h2>"
            + _table(["measure", "A", "B", "B / A"], rows)
            + "<h2>SLOs of A</h2>" + _slos(a) + "<h2>SLOs of B</h2>" + _slos(b))
    return _page(f"ecokit bench compare {a.get('run_id')} {b.get('run_id')}", body, [a, b])


def write_report(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
