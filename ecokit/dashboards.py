"""ecokit's Grafana dashboards, built in code with grafana-foundation-sdk (pinned 0.0.21).

    python -m ecokit.dashboards            # rewrite dashboards/*.json
    python -m ecokit.dashboards --check    # exit 1 when the committed files are out of date

The JSON under ``dashboards/`` is generated from this module and committed; Grafana loads
it through file provisioning (``templates/grafana/dashboards.yaml.j2``). Panels query
InfluxDB with InfluxQL (datasource uid ``ecokit-influxdb``, which works on InfluxDB 1.x,
2.x and 3.x) and Prometheus (uid ``ecokit-prometheus``): ecokit's services' metrics, and the
broker's (Mosquitto's $SYS through ecokit's brokerstats service, or EMQX's own endpoint).

A development tool: the SDK is a development dependency and this module is left out of the
wheel (pyproject.toml), so an installed ecokit ships the JSON and never a generator that
cannot import.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # The SDK marks its v1 dashboard builder deprecated in favour of the v2 schema, which
    # Grafana 12.4 file provisioning does not load; v1 JSON is what we want.
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.builders import dashboard as dash
    from grafana_foundation_sdk.builders import geomap, prometheus, stat, table, timeseries
    from grafana_foundation_sdk.cog import builder as cogbuilder
    from grafana_foundation_sdk.cog import variants as cogvariants
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common as common_models
    from grafana_foundation_sdk.models import dashboard as dash_models
    from grafana_foundation_sdk.models import geomap as geomap_models

from ecokit.services.observability import DATASOURCE_INFLUX_UID, DATASOURCE_PROMETHEUS_UID

SDK_VERSION = "0.0.21"
INFLUX = common_models.DataSourceRef(type_val="influxdb", uid=DATASOURCE_INFLUX_UID)
PROMETHEUS = common_models.DataSourceRef(type_val="prometheus", uid=DATASOURCE_PROMETHEUS_UID)
# A panel whose targets use different datasources (each target names its own).
MIXED = common_models.DataSourceRef(type_val="datasource", uid="-- Mixed --")
TAGS = ["ecokit"]

# Measurements and fields written by the rules (bridge or EMQX) and the metrics of the bridge.
TELEMETRY = "telemetry"
STATUS = "status"
ARCHIVE = "archive"
EVENTS = "events"
ALERTS = "alerts"
DAILY = "fleet_daily"  # ecokit.analytics, analytics.daily.measurement's default
BRIDGE_RECEIVED = "ecokit_bridge_messages_received_total"
BRIDGE_WRITTEN = "ecokit_bridge_points_written_total"
BRIDGE_REJECTED = "ecokit_bridge_messages_rejected_total"
BRIDGE_BUFFERED = "ecokit_bridge_buffered_points"
BRIDGE_DROPPED = "ecokit_bridge_dropped_points_total"
BRIDGE_LATENCY = "ecokit_bridge_write_latency_seconds"


class InfluxQL(cogvariants.Dataquery):
    """A raw InfluxQL target of Grafana's InfluxDB datasource (the SDK has no builder for it)."""

    def __init__(self, query: str, ref_id: str = "A", result_format: str = "time_series",
                 alias: str | None = None) -> None:
        self.query = query
        self.ref_id = ref_id
        self.result_format = result_format
        self.alias = alias

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"refId": self.ref_id, "query": self.query, "rawQuery": True,
                               "resultFormat": self.result_format, "datasource": INFLUX.to_json()}
        if self.alias:
            out["alias"] = self.alias
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InfluxQL:
        return cls(data.get("query", ""), data.get("refId", "A"), data.get("resultFormat", "time_series"),
                   data.get("alias"))


class InfluxQLBuilder(cogbuilder.Builder[InfluxQL]):
    def __init__(self, query: str, ref_id: str = "A", *, table_format: bool = False,
                 alias: str | None = None) -> None:
        self._internal = InfluxQL(query, ref_id, "table" if table_format else "time_series", alias)

    def build(self) -> InfluxQL:
        return self._internal


def influx(query: str, ref_id: str = "A", *, table_format: bool = False, alias: str | None = None) -> InfluxQLBuilder:
    return InfluxQLBuilder(query, ref_id, table_format=table_format, alias=alias)


def promql(expr: str, legend: str = "", ref_id: str = "A", *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref_id).datasource(PROMETHEUS)
    if legend:
        query = query.legend_format(legend)
    return query.instant() if instant else query.range()


def _grid(panel: Any, x: int, y: int, w: int, h: int) -> Any:
    return panel.grid_pos(dash_models.GridPos(h=h, w=w, x=x, y=y))


def _ts(title: str, unit: str, targets: Sequence[cogbuilder.Builder[Any]], ds: common_models.DataSourceRef,
        description: str = "") -> timeseries.Panel:
    panel = timeseries.Panel().title(title).datasource(ds).unit(unit).targets(list(targets))
    panel = panel.line_width(1).fill_opacity(10).span_nulls(True)
    return panel.description(description) if description else panel


def _stat(title: str, unit: str, target: cogbuilder.Builder[Any], ds: common_models.DataSourceRef,
          description: str = "") -> stat.Panel:
    panel = stat.Panel().title(title).datasource(ds).unit(unit).with_target(target)
    panel = panel.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    return panel.description(description) if description else panel


def _dashboard(uid: str, title: str, description: str, refresh: str = "10s") -> dash.Dashboard:
    return (dash.Dashboard(title).uid(uid).description(description).tags(TAGS).time("now-1h", "now")
            .refresh(refresh).timezone("browser").tooltip(dash_models.DashboardCursorSync.CROSSHAIR))


def fleet_overview() -> dash.Dashboard:
    positions = influx(
        f'SELECT last("lat") AS "lat", last("lng") AS "lng", last("speed") AS "speed", '
        f'last("fuel") AS "fuel", last("status") AS "status" FROM "{TELEMETRY}" '
        'WHERE $timeFilter GROUP BY "vehicle"', table_format=True)
    markers = {
        "showLegend": False,
        "style": {"size": {"fixed": 6, "min": 2, "max": 15}, "color": {"fixed": "green"}, "opacity": 0.8,
                  "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                  "text": {"mode": "field", "field": "vehicle", "fixed": ""},
                  "textConfig": {"fontSize": 10, "offsetY": -12, "textAlign": "center", "textBaseline": "middle"}},
    }
    geomap_panel = (
        geomap.Panel().title("Last known positions").datasource(INFLUX).with_target(positions)
        .description("Last position of every vehicle that reported in the time range")
        .view(geomap.MapViewConfig().id("fit").lat(0).lon(0).zoom(2))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(True))
        .basemap(common_builders.MapLayerOptions().type("default").name("Basemap"))
        .layers([common_builders.MapLayerOptions().type("markers").name("Vehicles").config(markers)
                 .location(common_builders.FrameGeometrySource().mode(common_models.FrameGeometrySourceMode.COORDS)
                           .latitude("lat").longitude("lng"))])
        .tooltip(geomap.TooltipOptions().mode(geomap_models.TooltipMode.DETAILS))
        .with_transformation(dash_models.DataTransformerConfig(id_val="merge", options={}))
    )
    active = _stat(
        "Active vehicles (5 min)", "none",
        influx(f'SELECT count("seq") FROM (SELECT last("seq") AS "seq" FROM "{TELEMETRY}" '
               'WHERE time > now() - 5m GROUP BY "vehicle")'),
        INFLUX, "Vehicles that sent telemetry in the last five minutes")
    moving = _stat(
        "Moving now", "none",
        influx(f'SELECT count("speed") FROM (SELECT last("speed") AS "speed" FROM "{TELEMETRY}" '
               'WHERE time > now() - 5m GROUP BY "vehicle") WHERE "speed" > 0'),
        INFLUX, "Vehicles whose last report in five minutes has a speed above zero")
    rate = _stat("Telemetry msgs/s", "reqps",
                 influx(f'SELECT count("seq") / 10 FROM "{TELEMETRY}" WHERE time > now() - 1m '
                        'GROUP BY time(10s) fill(0)'), INFLUX)
    msgs = _ts(
        "Messages per second", "reqps",
        [influx(f'SELECT count("seq") / 10 AS "telemetry" FROM "{TELEMETRY}" WHERE $timeFilter '
                'GROUP BY time(10s) fill(0)', "A", alias="telemetry points/s"),
         promql(f"sum(rate({BRIDGE_RECEIVED}[1m]))", "bridge: messages received/s", "B")],
        MIXED, "Telemetry points stored per second (InfluxDB) and MQTT messages the bridge received")
    by_status = _ts(
        "Vehicles by status", "none",
        [influx(f'SELECT count("status") FROM (SELECT last("status") AS "status" FROM "{TELEMETRY}" '
                'WHERE $timeFilter GROUP BY time($__interval), "vehicle") WHERE $timeFilter '
                'GROUP BY time($__interval), "status" fill(0)', alias="$tag_status")],
        INFLUX)
    last_seen = (
        table.Panel().title("Vehicles").datasource(INFLUX)
        .with_target(influx(f'SELECT last("speed") AS "speed", last("fuel") AS "fuel", last("odometer") AS '
                            f'"odometer", last("status") AS "status" FROM "{TELEMETRY}" WHERE $timeFilter '
                            'GROUP BY "vehicle"', table_format=True))
        .with_transformation(dash_models.DataTransformerConfig(id_val="merge", options={}))
    )
    daily = (
        table.Panel().title("Daily fleet analytics (last 7 days)").datasource(INFLUX).time_from("7d")
        .description("Per vehicle and UTC day: distance between fixes, odometer distance, average and top "
                     "speed, moving time and fixes (continuous queries / task into fleet_daily; "
                     "`ecokit query --daily`)")
        .with_target(influx(f'SELECT "distance_km", "odometer_km", "avg_speed", "max_speed", "moving_s", "fixes" '
                            f'FROM "{DAILY}" WHERE $timeFilter GROUP BY "vehicle"', table_format=True))
        .with_transformation(dash_models.DataTransformerConfig(id_val="merge", options={}))
    )
    distance = (
        _ts("Fleet distance per day", "lengthkm",
            [influx(f'SELECT sum("distance_km") FROM "{DAILY}" WHERE $timeFilter GROUP BY time(1d) fill(0)',
                    alias="km driven")], INFLUX, "All vehicles together, from the daily analytics")
        .time_from("30d").draw_style(common_models.GraphDrawStyle.BARS).fill_opacity(60)
    )
    events = (
        table.Panel().title("Geofence events").datasource(INFLUX)
        .description("Enter/exit transitions from the fleet processor (fleet/+/events); dwell time on exit")
        .with_target(influx(f'SELECT "name", "dwell_s", "lat", "lng" FROM "{EVENTS}" WHERE $timeFilter '
                            'GROUP BY "vehicle", "type", "geofence" ORDER BY time DESC LIMIT 50', table_format=True))
        .with_transformation(dash_models.DataTransformerConfig(id_val="merge", options={}))
    )
    alerts = (
        table.Panel().title("Alerts").datasource(INFLUX)
        .description("Alerts firing and resolving (ecokit.yaml alerts:, fleet/+/alerts)")
        .with_target(influx(f'SELECT "state", "severity", "condition", "value", "duration_s" FROM "{ALERTS}" '
                            'WHERE $timeFilter GROUP BY "vehicle", "alert", "subject" ORDER BY time DESC LIMIT 50',
                            table_format=True))
        .with_transformation(dash_models.DataTransformerConfig(id_val="merge", options={}))
    )
    return (
        _dashboard("ecokit-fleet-overview", "ecokit / Fleet overview",
                   "Where the fleet is, how many vehicles report and how much traffic they send")
        .with_panel(_grid(active, 0, 0, 6, 4)).with_panel(_grid(moving, 6, 0, 6, 4))
        .with_panel(_grid(rate, 12, 0, 12, 4))
        .with_panel(_grid(geomap_panel, 0, 4, 14, 14)).with_panel(_grid(last_seen, 14, 4, 10, 14))
        .with_panel(_grid(msgs, 0, 18, 12, 8)).with_panel(_grid(by_status, 12, 18, 12, 8))
        .with_panel(_grid(daily, 0, 26, 14, 10)).with_panel(_grid(distance, 14, 26, 10, 10))
        .with_panel(_grid(events, 0, 36, 12, 10)).with_panel(_grid(alerts, 12, 36, 12, 10))
    )


def vehicle_telemetry() -> dash.Dashboard:
    vehicle = (
        dash.QueryVariable("vehicle").label("Vehicle").datasource(INFLUX)
        .query(f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "vehicle"')
        .multi(True).include_all(True).refresh(dash_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_models.VariableSort.ALPHABETICAL_ASC)
    )
    where = '"vehicle" =~ /^$vehicle$/ AND $timeFilter'

    def per_vehicle(field: str, fn: str = "mean") -> InfluxQLBuilder:
        return influx(f'SELECT {fn}("{field}") FROM "{TELEMETRY}" WHERE {where} '
                      'GROUP BY time($__interval), "vehicle" fill(null)', alias="$tag_vehicle")

    speed = _ts("Speed", "velocitykmh", [per_vehicle("speed")], INFLUX)
    fuel = _ts("Fuel", "percent", [per_vehicle("fuel")], INFLUX).min(0).max(100)
    odometer = _ts("Odometer", "lengthkm", [per_vehicle("odometer", "last")], INFLUX)
    heading = _ts("Heading", "degree", [per_vehicle("heading", "last")], INFLUX).min(0).max(360)
    reports = _ts("Reports per minute", "none",
                  [influx(f'SELECT count("seq") FROM "{TELEMETRY}" WHERE {where} '
                          'GROUP BY time(1m), "vehicle" fill(0)', alias="$tag_vehicle")], INFLUX)
    status = (
        table.Panel().title("Status changes").datasource(INFLUX)
        .with_target(influx(f'SELECT "state", "source" FROM "{STATUS}" WHERE {where} '
                            'GROUP BY "vehicle" ORDER BY time DESC LIMIT 50', table_format=True))
        .with_transformation(dash_models.DataTransformerConfig(id_val="merge", options={}))
    )
    return (
        _dashboard("ecokit-vehicle-telemetry", "ecokit / Vehicle telemetry",
                   "Speed, fuel and position data of the selected vehicles")
        .with_variable(vehicle)
        .with_panel(_grid(speed, 0, 0, 12, 8)).with_panel(_grid(fuel, 12, 0, 12, 8))
        .with_panel(_grid(odometer, 0, 8, 12, 8)).with_panel(_grid(heading, 12, 8, 12, 8))
        .with_panel(_grid(reports, 0, 16, 12, 8)).with_panel(_grid(status, 12, 16, 12, 8))
    )


def pipeline_health() -> dash.Dashboard:
    ingest = _ts("Ingest rate", "reqps", [
        promql(f"sum(rate({BRIDGE_RECEIVED}[1m]))", "messages received/s", "A"),
        promql(f"sum(rate({BRIDGE_WRITTEN}[1m]))", "points written/s", "B"),
    ], PROMETHEUS, "MQTT messages the bridge takes in and points it writes to InfluxDB")
    rejects = _ts("Rejected messages", "reqps", [
        promql(f"sum by (rule, reason) (rate({BRIDGE_REJECTED}[5m]))", "{{rule}}: {{reason}}"),
    ], PROMETHEUS, "Invalid messages per rule and reason (they go to ecokit/deadletter/<rule>)")
    buffered = _ts("Write buffer", "short", [
        promql(f"sum({BRIDGE_BUFFERED})", "buffered points", "A"),
        promql(f"sum(increase({BRIDGE_DROPPED}[5m]))", "dropped in 5 min", "B"),
    ], PROMETHEUS, "Points waiting for InfluxDB, and points dropped when the buffer was full")
    latency = _ts("Write latency", "s", [
        promql(f"histogram_quantile({q}, sum by (le) (rate({BRIDGE_LATENCY}_bucket[5m])))", f"p{int(q * 100)}",
               ref) for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ], PROMETHEUS, "Time of one batch write to InfluxDB")
    stored = _ts("Stored per second (InfluxDB)", "reqps", [
        influx(f'SELECT count("seq") / 10 FROM "{TELEMETRY}" WHERE $timeFilter GROUP BY time(10s) fill(0)',
               "A", alias="telemetry"),
        influx(f'SELECT count("qos") / 10 FROM "{ARCHIVE}" WHERE $timeFilter GROUP BY time(10s) fill(0)',
               "B", alias="archive"),
    ], INFLUX, "Points that reached InfluxDB, by measurement")
    dropped_total = _stat("Dropped points (range)", "short",
                          promql(f"sum(increase({BRIDGE_DROPPED}[$__range]))", instant=True), PROMETHEUS)
    rejected_total = _stat("Rejected messages (range)", "short",
                           promql(f"sum(increase({BRIDGE_REJECTED}[$__range]))", instant=True), PROMETHEUS)
    archive_topics = (
        table.Panel().title("Busiest archived topics").datasource(INFLUX)
        .with_target(influx(f'SELECT count("qos") AS "messages" FROM "{ARCHIVE}" WHERE $timeFilter '
                            'GROUP BY "topic"', table_format=True))
        .with_transformation(dash_models.DataTransformerConfig(id_val="merge", options={}))
    )
    return (
        _dashboard("ecokit-pipeline-health", "ecokit / Pipeline health",
                   "MQTT to InfluxDB: ingest rate, rejects, buffering and write latency")
        .with_panel(_grid(ingest, 0, 0, 12, 8)).with_panel(_grid(stored, 12, 0, 12, 8))
        .with_panel(_grid(rejects, 0, 8, 12, 8)).with_panel(_grid(latency, 12, 8, 12, 8))
        .with_panel(_grid(buffered, 0, 16, 12, 8)).with_panel(_grid(dropped_total, 12, 16, 6, 4))
        .with_panel(_grid(rejected_total, 18, 16, 6, 4)).with_panel(_grid(archive_topics, 12, 20, 12, 8))
    )


def either(mosquitto: str, emqx: str) -> str:
    """One PromQL expression for both brokers: Mosquitto's $SYS (ecokit's brokerstats service)
    or EMQX's own endpoint, whichever the stack runs (the other side has no series)."""
    return f"({mosquitto}) or ({emqx})"


def broker() -> dash.Dashboard:
    connected = either("sum(mosquitto_clients_connected)", "sum(emqx_connections_count)")
    received = either("sum(rate(mosquitto_publish_messages_received_total[1m]))",
                      "sum(rate(emqx_messages_received[1m]))")
    sent = either("sum(rate(mosquitto_publish_messages_sent_total[1m]))", "sum(rate(emqx_messages_sent[1m]))")
    dropped = either("sum(rate(mosquitto_publish_messages_dropped_total[1m]))",
                     "sum(rate(emqx_messages_dropped[1m]))")
    connections = _ts("Connections", "short", [
        promql(connected, "connected", "A"),
        promql(either("sum(mosquitto_clients_total)", "sum(emqx_sessions_count)"), "sessions", "B"),
        promql(either("sum(mosquitto_clients_maximum)", "max(emqx_connections_max)"), "maximum", "C"),
    ], PROMETHEUS, "Clients connected now, sessions kept (connected or persistent), and the most ever connected")
    messages = _ts("PUBLISH messages", "reqps", [
        promql(received, "received/s", "A"),
        promql(sent, "sent/s", "B"),
    ], PROMETHEUS, "Application messages in and out (MQTT control packets not counted)")
    drops = _ts("Drops", "reqps", [
        promql(dropped, "dropped/s", "A"),
        promql("sum(rate(emqx_messages_dropped_no_subscribers[1m]))", "no subscribers/s (EMQX)", "B"),
        promql("sum(rate(emqx_delivery_dropped[1m]))", "delivery dropped/s (EMQX)", "C"),
    ], PROMETHEUS, "Messages the broker dropped: Mosquitto counts queue overflows "
                   "(max_queued_messages) here, EMQX splits them by cause")
    traffic = _ts("Network traffic", "Bps", [
        promql(either("sum(rate(mosquitto_bytes_received_total[1m]))", "sum(rate(emqx_bytes_received[1m]))"),
               "received", "A"),
        promql(either("sum(rate(mosquitto_bytes_sent_total[1m]))", "sum(rate(emqx_bytes_sent[1m]))"), "sent", "B"),
    ], PROMETHEUS, "Bytes on the wire, all packets")
    state = _ts("Subscriptions, retained and stored", "short", [
        promql(either("sum(mosquitto_subscriptions_count)", "sum(emqx_subscriptions_count)"), "subscriptions", "A"),
        promql(either("sum(mosquitto_retained_messages_count)", "sum(emqx_retained_count)"), "retained", "B"),
        promql("sum(mosquitto_messages_stored)", "stored, queued + retained (Mosquitto)", "C"),
    ], PROMETHEUS)
    now_connections = _stat("Connections now", "short", promql(connected, instant=True), PROMETHEUS)
    now_rate = _stat("Received msgs/s", "reqps", promql(received, instant=True), PROMETHEUS)
    now_drops = _stat("Dropped msgs/s", "reqps", promql(dropped, instant=True), PROMETHEUS)
    uptime = _stat("Broker up for", "s", promql("max(mosquitto_uptime_seconds)", instant=True), PROMETHEUS,
                   "Mosquitto's $SYS/broker/uptime (EMQX shows its uptime on its own dashboard, port 18083)")
    freshness = _stat("Metrics age", "s", promql(
        either("max(ecokit_brokerstats_age_seconds)", "max(time() - timestamp(emqx_connections_count))"),
        instant=True), PROMETHEUS,
        "Seconds since the broker last reported (Mosquitto publishes $SYS every sys_interval, 10 s)")
    return (
        _dashboard("ecokit-broker", "ecokit / Broker",
                   "The broker, Mosquitto ($SYS, through ecokit's brokerstats service) or EMQX (its Prometheus "
                   "endpoint): connections, messages, drops and traffic")
        .with_panel(_grid(now_connections, 0, 0, 5, 4)).with_panel(_grid(now_rate, 5, 0, 5, 4))
        .with_panel(_grid(now_drops, 10, 0, 5, 4)).with_panel(_grid(uptime, 15, 0, 5, 4))
        .with_panel(_grid(freshness, 20, 0, 4, 4))
        .with_panel(_grid(connections, 0, 4, 12, 8)).with_panel(_grid(messages, 12, 4, 12, 8))
        .with_panel(_grid(drops, 0, 12, 12, 8)).with_panel(_grid(traffic, 12, 12, 12, 8))
        .with_panel(_grid(state, 0, 20, 12, 8))
    )


SHADOW_REQUESTS = "ecokit_shadow_requests_total"
SHADOW_REJECTIONS = "ecokit_shadow_rejections_total"
SHADOW_LATENCY = "ecokit_shadow_request_seconds"
PROCESSOR_RECEIVED = "ecokit_processor_messages_received_total"
PROCESSOR_PUBLISHED = "ecokit_processor_status_published_total"
PROCESSOR_IGNORED = "ecokit_processor_messages_ignored_total"


def services() -> dash.Dashboard:
    """ecokit's own services besides the bridge: the fleet processor and the shadow service."""
    up = _ts("Services up", "short", [
        promql('up{job=~"ecokit-.*"}', "{{job}}", "A"),
    ], PROMETHEUS, "1 while Prometheus can scrape the service")
    processor_in = _ts("Processor: messages in", "reqps", [
        promql(f"sum by (kind) (rate({PROCESSOR_RECEIVED}[1m]))", "{{kind}}/s", "A"),
        promql(f"sum(rate({PROCESSOR_IGNORED}[1m]))", "ignored/s", "B"),
    ], PROMETHEUS, "Fleet messages the processor reads, and those it could not use")
    processor_out = _ts("Processor: status published", "reqps", [
        promql(f"sum by (state, reason) (rate({PROCESSOR_PUBLISHED}[5m]))", "{{state}} ({{reason}})", "A"),
    ], PROMETHEUS, "Online/offline updates to fleet/{id}/status, by reason")
    vehicles = _ts("Processor: vehicles", "short", [
        promql("sum by (state) (ecokit_processor_vehicles)", "{{state}}", "A"),
    ], PROMETHEUS, "Vehicles the processor sees online and offline")
    shadow_rate = _ts("Shadow: requests", "reqps", [
        promql(f"sum by (operation, result) (rate({SHADOW_REQUESTS}[1m]))", "{{operation}} {{result}}", "A"),
    ], PROMETHEUS, "Shadow requests answered, by operation and outcome")
    shadow_errors = _ts("Shadow: rejections", "reqps", [
        promql(f"sum by (code) (rate({SHADOW_REJECTIONS}[5m]))", "{{code}}", "A"),
    ], PROMETHEUS, "Rejected requests by error code (400 bad request, 409 version conflict, ...)")
    shadow_latency = _ts("Shadow: handling time", "s", [
        promql(f"histogram_quantile({q}, sum by (le) (rate({SHADOW_LATENCY}_bucket[5m])))", f"p{int(q * 100)}",
               ref) for q, ref in ((0.5, "A"), (0.99, "B"))
    ], PROMETHEUS, "Time from a request's arrival to its answer")
    shadows = _stat("Shadows", "short", promql("sum(ecokit_shadow_shadows)", instant=True), PROMETHEUS)
    online = _stat("Vehicles online", "short", promql('sum(ecokit_processor_vehicles{state="online"})',
                                                      instant=True), PROMETHEUS)
    return (
        _dashboard("ecokit-services", "ecokit / Services",
                   "ecokit's fleet processor and shadow service, from their /metrics")
        .with_panel(_grid(online, 0, 0, 6, 4)).with_panel(_grid(shadows, 6, 0, 6, 4))
        .with_panel(_grid(up, 12, 0, 12, 4))
        .with_panel(_grid(processor_in, 0, 4, 12, 8)).with_panel(_grid(processor_out, 12, 4, 12, 8))
        .with_panel(_grid(vehicles, 0, 12, 12, 8)).with_panel(_grid(shadow_rate, 12, 12, 12, 8))
        .with_panel(_grid(shadow_errors, 0, 20, 12, 8)).with_panel(_grid(shadow_latency, 12, 20, 12, 8))
    )


def bench() -> dash.Dashboard:
    """Runs of `ecokit bench --out influxdb` (measurements of ecokit.bench.export)."""
    from ecokit.bench.export import SLO, SUMMARY, TIMELINE

    run = (
        dash.QueryVariable("run").label("Run").datasource(INFLUX)
        .query(f'SHOW TAG VALUES FROM "{TIMELINE}" WITH KEY = "run"')
        .multi(True).include_all(True).refresh(dash_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    where = '"run" =~ /^$run$/ AND $timeFilter'

    def per_run(fields: Sequence[tuple[str, str]], ref: str = "A") -> list[InfluxQLBuilder]:
        return [influx(f'SELECT mean("{field}") FROM "{TIMELINE}" WHERE {where} GROUP BY time($__interval), "run" '
                       f'fill(null)', chr(ord(ref) + i), alias=f"$tag_run {label}")
                for i, (field, label) in enumerate(fields)]

    rates = _ts("Messages per second", "reqps", per_run([("offered", "offered"), ("sent", "sent"),
                                                         ("received", "received")]), INFLUX,
                "Planned, sent and received (unique deliveries) per second of each run")
    latency = _ts("End-to-end latency", "ms", per_run([("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")]),
                  INFLUX, "Per second of the run: percentiles of what arrived in that second")
    clients = _ts("Connections", "short", per_run([("publishers_connected", "publishers"),
                                                   ("subscribers_connected", "subscribers"),
                                                   ("connects", "connects/s"),
                                                   ("connect_failures", "failed connects/s")]), INFLUX)
    broker_cpu = _ts("Broker process", "percent", per_run([("broker_cpu_percent", "CPU % of a core")]), INFLUX,
                     "CPU of the local broker process (local runtime only)")
    summary = (
        table.Panel().title("Runs and phases").datasource(INFLUX)
        .with_target(influx(f'SELECT "sent", "received", "lost", "send_rate", "rate", "p50_ms", "p99_ms", '
                            f'"puback_p95_ms", "connect_p95_ms", "connect_success", "passed" FROM "{SUMMARY}" '
                            f'WHERE {where} GROUP BY "run", "phase"', table_format=True))
        .with_transformation(dash_models.DataTransformerConfig(id_val="merge", options={}))
    )
    slos = (
        table.Panel().title("SLO verdicts").datasource(INFLUX)
        .with_target(influx(f'SELECT "ok", "actual", "limit" FROM "{SLO}" WHERE {where} GROUP BY "run", "key"',
                            table_format=True))
        .with_transformation(dash_models.DataTransformerConfig(id_val="merge", options={}))
    )
    return (
        _dashboard("ecokit-bench", "ecokit / Bench",
                   "ecokit bench runs written with --out influxdb: rates, latency, connections, SLOs", refresh="30s")
        .with_variable(run)
        .with_panel(_grid(rates, 0, 0, 12, 8)).with_panel(_grid(latency, 12, 0, 12, 8))
        .with_panel(_grid(clients, 0, 8, 12, 8)).with_panel(_grid(broker_cpu, 12, 8, 12, 8))
        .with_panel(_grid(summary, 0, 16, 16, 8)).with_panel(_grid(slos, 16, 16, 8, 8))
    )


DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "bench.json": bench,
    "fleet-overview.json": fleet_overview,
    "vehicle-telemetry.json": vehicle_telemetry,
    "pipeline-health.json": pipeline_health,
    "broker.json": broker,
    "services.json": services,
}


def render(name: str) -> str:
    """The JSON text of one dashboard, exactly as committed."""
    built = DASHBOARDS[name]().build()
    for number, panel in enumerate(built.panels or [], start=1):
        if isinstance(panel, dash_models.Panel):
            panel.id_val = number  # stable ids: links and panel views survive regeneration
    return JSONEncoder(sort_keys=True, indent=2).encode(built) + "\n"


def render_all() -> dict[str, str]:
    return {name: render(name) for name in DASHBOARDS}


def influxql_queries(folder: Path) -> list[str]:
    """Every InfluxQL query of the dashboards in ``folder`` (panels and variables), with
    Grafana's macros filled in as Grafana would for the last hour, so they can be run."""
    import json

    queries = []
    for path in sorted(folder.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if target.get("datasource", {}).get("type") == "influxdb":
                    queries.append(target["query"].replace("$timeFilter", "time > now() - 1h")
                                   .replace("$__interval", "10s").replace("$vehicle", ".*").replace("$run", ".*"))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("datasource", {}).get("type") == "influxdb":
                queries.append(variable["query"])
    return queries


def stale(folder: Path) -> list[str]:
    """Dashboard files in ``folder`` that differ from what this module builds (or are extra)."""
    wanted = render_all()
    out = [name for name, text in wanted.items()
           if not (folder / name).is_file() or (folder / name).read_text() != text]
    out += sorted(p.name for p in folder.glob("*.json") if p.name not in wanted)
    return out


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = folder / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    for extra in folder.glob("*.json"):
        if extra.name not in DASHBOARDS:
            extra.unlink()
            written.append(extra)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    from ecokit.resources import package_root

    args = list(sys.argv[1:] if argv is None else argv)
    folder = package_root() / "dashboards"
    if "--check" in args:
        out_of_date = stale(folder)
        if out_of_date:
            print(f"out of date: {', '.join(out_of_date)}; run `python -m ecokit.dashboards`", file=sys.stderr)
            return 1
        print(f"{len(DASHBOARDS)} dashboards up to date in {folder}")
        return 0
    changed = write(folder)
    print(f"wrote {len(changed)} of {len(DASHBOARDS)} dashboards into {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
