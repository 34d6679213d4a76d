"""Daily fleet analytics: one declaration, rendered to InfluxDB 1.x continuous queries and
to the equivalent InfluxDB 2.x task (Flux).

Per vehicle and UTC day, into the ``fleet_daily`` measurement (tag ``vehicle``):

==============  ==========================================================================
distance_km     summed distance between consecutive fixes (equirectangular step between
                two fixes, within 0.1% of haversine at fix spacing; a gap is a straight line)
odometer_km     the odometer's spread over the day (max - min), when devices report one
avg_speed       mean reported speed over the day's fixes (km/h)
max_speed       highest reported speed (km/h)
moving_s        seconds of moving: minutes whose highest speed exceeds ``moving_speed``,
                times 60 (one-minute resolution)
fixes           number of fixes
==============  ==========================================================================

InfluxQL cannot compute everything in one statement (distance and moving time need
subqueries), so 1.x gets three continuous queries writing into the same rows; each runs
``RESAMPLE EVERY <every> FOR 2d``, so today's row grows during the day and yesterday's is
finished after midnight (a CQ's window starts on a day boundary: it never writes a partial
day over a complete one). The 2.x task computes the same fields over the same window.
:func:`refresh` runs the same statements over any past window (continuous queries only
ever look back two days): replayed or imported history, or a test that cannot wait.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from ecokit.config.analytics import DailyAnalyticsConfig
from ecokit.durations import duration_seconds
from ecokit.store.influx import InfluxV1, quote_ident

CQ_PREFIX = "ecokit_daily_"
TASK_NAME = "ecokit_fleet_daily"
# InfluxDB 1.x stores a continuous query as its re-printed text, with numbers rounded to
# three decimals: the constants are chosen to survive that (57.296 = 180/π to 4e-6).
KM_PER_DEGREE = 111.195  # mean Earth radius 6371.0088 km * pi/180
DEGREES_PER_RADIAN = 57.296
MOVING_RESOLUTION_S = 60
LOOKBACK = "2d"

Kind = Literal["mean", "max", "spread", "count"]


@dataclass(frozen=True)
class Aggregate:
    """A plain per-day aggregate of one telemetry field."""

    name: str
    kind: Kind
    field: str


@dataclass(frozen=True)
class DailyRollup:
    source: str  # the telemetry measurement
    into: str
    tag: str
    every_s: int
    moving_speed: float
    aggregates: tuple[Aggregate, ...]
    fields: tuple[str, ...]  # every field of the daily row, in display order

    # -- InfluxQL (1.x) ------------------------------------------------------------------

    def _m(self, database: str, measurement: str) -> str:
        return f"{quote_ident(database)}.\"autogen\".{quote_ident(measurement)}"

    def influxql(self, database: str, window: tuple[int, int] | None = None) -> dict[str, str]:
        """name → ``SELECT ... INTO`` statement. ``window`` (ns, [start, end)) adds explicit
        time bounds at every level (a continuous query gets them from its schedule)."""
        src, dst, tag = self._m(database, self.source), self._m(database, self.into), quote_ident(self.tag)
        where = "" if window is None else f" WHERE time >= {window[0]} AND time < {window[1]}"
        and_time = "" if window is None else f" AND time >= {window[0]} AND time < {window[1]}"
        selects = ", ".join(f"{a.kind}({quote_ident(a.field)}) AS {quote_ident(a.name)}" for a in self.aggregates)
        statements = {
            "stats": f"SELECT {selects} INTO {dst} FROM {src}{where} GROUP BY time(1d), {tag}",
            "distance": (
                f"SELECT sum(\"step_km\") AS \"distance_km\" INTO {dst} FROM ("
                f"SELECT sqrt(pow(\"dlat\", 2) + pow(\"dlng\" * cos(\"mlat\" / {DEGREES_PER_RADIAN}), 2)) "
                f"* {KM_PER_DEGREE} AS \"step_km\" FROM ("
                f"SELECT difference(\"lat\") AS \"dlat\", difference(\"lng\") AS \"dlng\", "
                f"moving_average(\"lat\", 2) AS \"mlat\" FROM {src}{where} GROUP BY {tag}"
                f"){where} GROUP BY {tag}){where} GROUP BY time(1d), {tag}"),
            "moving": (
                f"SELECT count(\"top_speed\") * {MOVING_RESOLUTION_S} AS \"moving_s\" INTO {dst} FROM ("
                f"SELECT max(\"speed\") AS \"top_speed\" FROM {src}{where} "
                f"GROUP BY time({_duration(MOVING_RESOLUTION_S)}), {tag}) "
                f"WHERE \"top_speed\" > {_number(self.moving_speed)}{and_time} GROUP BY time(1d), {tag}"),
        }
        return statements

    def continuous_queries(self, database: str) -> dict[str, str]:
        """CQ name → CREATE CONTINUOUS QUERY statement."""
        return {
            f"{CQ_PREFIX}{name}": (f"CREATE CONTINUOUS QUERY {quote_ident(CQ_PREFIX + name)} "
                                   f"ON {quote_ident(database)} "
                                   f"RESAMPLE EVERY {_duration(self.every_s)} FOR {LOOKBACK} BEGIN {select} END")
            for name, select in self.influxql(database).items()}

    # -- Flux (2.x) ----------------------------------------------------------------------

    def flux(self, bucket: str, org: str, *, start: str = "date.truncate(t: -1d, unit: 1d)",
             stop: str = "now()") -> str:
        """The Flux program computing the daily rows between ``start`` and ``stop`` (Flux
        expressions) and writing them with ``to()``."""
        b, o = _flux_string(bucket), _flux_string(org)
        lines = [
            'import "date"',
            'import "math"',
            "",
            f"telemetry = from(bucket: {b})",
            f"    |> range(start: {start}, stop: {stop})",
            f"    |> filter(fn: (r) => r._measurement == {_flux_string(self.source)})",
            "",
            "into = (tables=<-, field) => tables",
            f"    |> keep(columns: [\"_time\", \"_value\", {_flux_string(self.tag)}])",
            f"    |> set(key: \"_measurement\", value: {_flux_string(self.into)})",
            "    |> set(key: \"_field\", value: field)",
            f"    |> to(bucket: {b}, org: {o})",
            "",
            "daily = (tables=<-, fn) => tables",
            "    |> aggregateWindow(every: 1d, fn: fn, createEmpty: false, timeSrc: \"_start\")",
            "",
        ]
        fns = {"mean": "mean", "max": "max", "spread": "spread", "count": "count"}
        for agg in self.aggregates:
            lines.append(f"telemetry |> filter(fn: (r) => r._field == {_flux_string(agg.field)}) "
                         f"|> daily(fn: {fns[agg.kind]}) |> into(field: {_flux_string(agg.name)})")
        lines += [
            "",
            "telemetry",
            "    |> filter(fn: (r) => r._field == \"speed\")",
            f"    |> aggregateWindow(every: {_duration(MOVING_RESOLUTION_S)}, fn: max, createEmpty: false, "
            "timeSrc: \"_start\")",
            f"    |> filter(fn: (r) => r._value > {float(_number(self.moving_speed))!r})",
            "    |> daily(fn: count)",
            f"    |> map(fn: (r) => ({{r with _value: r._value * {MOVING_RESOLUTION_S}}}))",
            "    |> into(field: \"moving_s\")",
            "",
            "telemetry",
            "    |> filter(fn: (r) => r._field == \"lat\" or r._field == \"lng\")",
            "    |> pivot(rowKey: [\"_time\"], columnKey: [\"_field\"], valueColumn: \"_value\")",
            "    |> map(fn: (r) => ({r with lat_now: r.lat}))",
            "    |> difference(columns: [\"lat\", \"lng\"])",
            "    |> map(fn: (r) => {",
            f"        dx = r.lng * math.cos(x: (r.lat_now - r.lat / 2.0) / {DEGREES_PER_RADIAN})",
            f"        return {{r with _value: math.sqrt(x: r.lat * r.lat + dx * dx) * {KM_PER_DEGREE}}}",
            "    })",
            "    |> daily(fn: sum)",
            "    |> into(field: \"distance_km\")",
        ]
        return "\n".join(lines) + "\n"

    def task(self, bucket: str, org: str) -> str:
        """The 2.x task: the Flux program with its schedule."""
        return (f"option task = {{name: {_flux_string(TASK_NAME)}, every: {_duration(self.every_s)}}}\n\n"
                + self.flux(bucket, org))


def _duration(seconds: int) -> str:
    """A duration as InfluxQL prints it (the largest unit that divides it: 60s is 1m)."""
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _number(value: float) -> str:
    """A number as InfluxDB 1.x re-prints it inside a stored continuous query."""
    return str(int(value)) if value == int(value) else f"{value:.3f}"


def _flux_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'


def daily_rollup(config: DailyAnalyticsConfig, *, source: str = "telemetry", tag: str = "vehicle",
                 odometer: bool = True) -> DailyRollup:
    aggregates = [Aggregate("avg_speed", "mean", "speed"), Aggregate("max_speed", "max", "speed"),
                  Aggregate("fixes", "count", "speed")]
    if odometer:
        aggregates.insert(0, Aggregate("odometer_km", "spread", "odometer"))
    fields = ("distance_km", *(("odometer_km",) if odometer else ()), "avg_speed", "max_speed", "moving_s", "fixes")
    every = int(duration_seconds(config.every) or 900)
    return DailyRollup(source, config.measurement, tag, every, config.moving_speed, tuple(aggregates), fields)


# -- applying it -------------------------------------------------------------------------


def apply_continuous_queries(client: InfluxV1, rollup: DailyRollup | None, database: str) -> list[str]:
    """Make the database's ecokit CQs exactly the rollup's (CQs cannot be altered: a changed
    one is dropped and created again); returns what changed. ``None`` drops them all."""
    wanted = rollup.continuous_queries(database) if rollup else {}
    existing: dict[str, str] = {}
    for result in client.query("SHOW CONTINUOUS QUERIES", use_db=False):
        for series in result.get("series", []):
            if series.get("name") != database:
                continue
            for name, query in series.get("values", []):
                if name.startswith(CQ_PREFIX):
                    existing[name] = query
    changes = []
    for name, query in existing.items():
        if _normalise(query) != _normalise(wanted.get(name, "")):
            client.query(f"DROP CONTINUOUS QUERY {quote_ident(name)} ON {quote_ident(database)}", use_db=False)
            changes.append(f"dropped {name}")
    for name, statement in wanted.items():
        if name not in existing or _normalise(existing[name]) != _normalise(statement):
            client.query(statement, use_db=False)
            changes.append(f"created {name}")
    return changes


def _normalise(query: str) -> str:
    # SHOW CONTINUOUS QUERIES prints the statement as the server re-formats it.
    return "".join(query.split()).lower().replace('"', "")


def task_create_request(rollup: DailyRollup, *, bucket: str, org: str) -> dict[str, str]:
    """The body of POST /api/v2/tasks."""
    return {"org": org, "flux": rollup.task(bucket, org), "status": "active",
            "description": "ecokit: daily fleet analytics (ecokit.yaml analytics.daily)"}


def apply_task(client: InfluxV1, rollup: DailyRollup | None, *, bucket: str, org: str) -> str:
    """Create, update or delete the 2.x task through InfluxDB 2's /api/v2/tasks."""
    found = client.send_json("GET", "/api/v2/tasks", params={"name": TASK_NAME, "org": org}) or {}
    tasks = [t for t in found.get("tasks", []) if t.get("name") == TASK_NAME]
    if rollup is None:
        for task in tasks:
            client.send_json("DELETE", f"/api/v2/tasks/{task['id']}")
        return "deleted" if tasks else "unchanged"
    body = task_create_request(rollup, bucket=bucket, org=org)
    if not tasks:
        client.send_json("POST", "/api/v2/tasks", body)
        return "created"
    task = tasks[0]
    if task.get("flux") == body["flux"] and task.get("status") == "active":
        return "unchanged"
    client.send_json("PATCH", f"/api/v2/tasks/{task['id']}", {"flux": body["flux"], "status": "active"})
    return "updated"


def refresh(client: InfluxV1, rollup: DailyRollup, database: str, start: dt.datetime, end: dt.datetime) -> int:
    """Compute the daily rows of every UTC day touching [start, end) now (1.x, or 2.x
    through its InfluxQL endpoint where SELECT INTO is supported); returns points written."""
    day = dt.timedelta(days=1)
    first = dt.datetime.combine(start.astimezone(dt.UTC).date(), dt.time(), dt.UTC)
    last = dt.datetime.combine((end.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).date(), dt.time(), dt.UTC)
    window = (int(first.timestamp() * 1e9), int((last + day).timestamp() * 1e9))
    written = 0
    for statement in rollup.influxql(database, window).values():
        for result in client.query(statement):
            for series in result.get("series", []):
                for row in series.get("values", []):
                    written += int(row[1])
    return written


def read_daily(client: InfluxV1, rollup: DailyRollup, start: dt.datetime, *, vehicle: str | None = None
               ) -> list[dict[str, Any]]:
    """The daily rows since ``start``, oldest first, one dict per vehicle and day."""
    from ecokit.store.influx import quote_string

    first = dt.datetime.combine(start.astimezone(dt.UTC).date(), dt.time(), dt.UTC)
    where = f"time >= {int(first.timestamp() * 1e9)}"
    if vehicle:
        where += f" AND {quote_ident(rollup.tag)} = {quote_string(vehicle)}"
    rows = []
    query = f"SELECT * FROM {quote_ident(rollup.into)} WHERE {where} GROUP BY {quote_ident(rollup.tag)}"
    for row in client.rows(query):
        out = {"day": dt.datetime.fromtimestamp(row["time"] / 1e9, dt.UTC).date().isoformat(),
               "vehicle": row.get(rollup.tag)}
        out.update({f: row.get(f) for f in rollup.fields})
        rows.append(out)
    rows.sort(key=lambda r: (r["day"], str(r["vehicle"])))
    return rows
