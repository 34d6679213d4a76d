"""Telemetry pipeline commands: replay (archive → MQTT) and query (what landed in InfluxDB)."""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ecokit.cli.common import (
    ConfigOption,
    DebugOption,
    JsonOption,
    OutputOption,
    ProfileOption,
    emit,
    human,
    load_stack,
    out,
)
from ecokit.errors import UsageError
from ecokit.report import iso_from_ns, stamped_ns
from ecokit.stack import Stack

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()


def _iso(ns: int | None) -> str:
    return iso_from_ns(ns) or "-"


def _speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value.rstrip("x"))
    except ValueError:
        raise UsageError(f"--speed {value!r}: use a factor such as 1, 10, 0.5, or `max`") from None
    if speed <= 0:
        raise UsageError("--speed must be positive")
    return speed


@app.command()
def replay(
    since: Annotated[str, typer.Option("--since", help="start: a duration ago (1h, 15m) or an ISO time")] = "1h",
    until: Annotated[str, typer.Option("--until", help="end (exclusive): duration ago or ISO time")] = "now",
    topic: Annotated[list[str] | None, typer.Option("--topic", "-t", help="MQTT topic filter (repeatable)")] = None,
    speed: Annotated[str, typer.Option("--speed", help="1 = original spacing, 10 = ten times faster, max")] = "1",
    prefix: Annotated[str, typer.Option("--prefix", help="publish under this prefix, e.g. replay/")] = "",
    qos: Annotated[int | None, typer.Option("--qos", min=0, max=1,
                                            help="publish QoS 0 or 1 (default: as archived; QoS 2 goes as 1)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be sent, send nothing")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="send at most N messages")] = None,
    config: ConfigOption = None, profile: ProfileOption = None, as_json: JsonOption = False,
    output: OutputOption = None, debug: DebugOption = False,
) -> None:
    """Republish archived messages in time order with their original spacing (or faster)."""
    from ecokit.clients import replay_publisher
    from ecokit.replay import Archive, Replayer, parse_time
    from ecokit.store.influx import InfluxV1

    stack = load_stack(config, profile)
    # The arguments first: a usage error is reported as one, running stack or not.
    now = dt.datetime.now(dt.UTC)
    start, end = parse_time(since, now=now), parse_time(until, now=now)
    if start >= end:
        raise UsageError(f"--since {since} ({_iso(start)}) is not before --until {until} ({_iso(end)})")
    factor = _speed(speed)
    stack.require_running()
    filters = list(topic or [])
    with InfluxV1(stack.influx_endpoint("reader")) as client:
        archive = Archive(client)
        total = archive.count(start, end, filters)
        if limit is not None:
            total = min(total, limit)
        window = f"{_iso(start)} .. {_iso(end)}"
        span = {**stamped_ns("since", start), **stamped_ns("until", end), "topics_filter": filters}
        console = human(as_json)
        if dry_run:
            _dry_run(archive.read(start, end, filters), limit, window, prefix, span, as_json, output)
            return
        if total == 0:
            console.print(f"nothing archived in {window}" + (f" on {', '.join(filters)}" if filters else ""))
            emit({**span, "sent": 0, "acknowledged": 0, "bytes": 0, "topics": 0, "duration_s": 0.0, "rate": 0.0},
                 as_json=as_json, output=output)
            return
        mqtt = replay_publisher(stack)
        try:
            console.print(f"replaying {total} messages from {window} at "
                          f"{'maximum speed' if factor is None else f'{factor:g}x'}"
                          + (f" under {prefix}" if prefix else ""))
            columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                       TextColumn("ETA"), TimeRemainingColumn())
            # A bar only on a terminal: a pipe or a CI log gets the summary alone.
            with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
                task = progress.add_task("replay", total=total)
                summary = Replayer(mqtt, speed=factor, prefix=prefix, qos=qos).run(
                    archive.read(start, end, filters), limit=limit, progress=lambda n: progress.advance(task, n))
        finally:
            mqtt.disconnect()
    result: dict[str, Any] = {
        **span, "speed": factor, "prefix": prefix or None,
        "sent": summary.sent, "acknowledged": summary.acknowledged, "bytes": summary.bytes,
        "topics": len(summary.topics), "duration_s": round(summary.duration, 3), "rate": round(summary.rate, 1),
        **stamped_ns("first", summary.first_ns), **stamped_ns("last", summary.last_ns),
    }
    if summary.errors_ms:
        result.update(send_error_ms_p50=round(summary.error_percentile(50) or 0, 3),
                      send_error_ms_p99=round(summary.error_percentile(99) or 0, 3),
                      send_error_ms_max=round(summary.error_percentile(100) or 0, 3))
    emit(result, as_json=as_json, output=output)
    if as_json:
        return
    out.print(f"[green]sent {summary.sent}[/green] messages ({summary.bytes} bytes, {len(summary.topics)} topics) "
              f"in {summary.duration:.3g}s = {summary.rate:,.0f} msg/s; {summary.acknowledged} acknowledged")
    out.print(f"  archived {result['first']} .. {result['last']}")
    if summary.errors_ms:
        out.print(f"  send time vs original spacing: p50 {result['send_error_ms_p50']} ms, "
                  f"p99 {result['send_error_ms_p99']} ms, max {result['send_error_ms_max']} ms")


def _dry_run(messages: Any, limit: int | None, window: str, prefix: str, span: dict[str, Any], as_json: bool,
             output: Path | None) -> None:
    shown: list[Any] = []
    topics: set[str] = set()
    size = count = 0
    first = last = None
    for msg in messages:
        if limit is not None and count >= limit:
            break
        count += 1
        size += len(msg.payload)
        topics.add(msg.topic)
        first = msg.time_ns if first is None else first
        last = msg.time_ns
        if len(shown) < 20:
            shown.append(msg)
    emit({**span, "dry_run": True, "would_send": count, "bytes": size, "topics": sorted(topics),
          **stamped_ns("first", first), **stamped_ns("last", last)}, as_json=as_json, output=output)
    if as_json:
        return
    table = Table(title=f"dry run: {count} messages in {window} (nothing sent)", box=None, header_style="bold")
    for column in ("archived at", "topic", "qos", "retain", "bytes", "payload"):
        table.add_column(column)
    for msg in shown:
        preview = msg.payload[:60].decode("utf-8", "replace") if msg.payload.isascii() else \
            "base64:" + base64.b64encode(msg.payload[:45]).decode()
        table.add_row(_iso(msg.time_ns), prefix + msg.topic, str(msg.qos), "yes" if msg.retain else "",
                      str(len(msg.payload)), preview)
    out.print(table)
    if count > len(shown):
        out.print(f"  ... and {count - len(shown)} more")
    out.print(f"would send {count} messages, {size} bytes, {len(topics)} topics, "
              f"archived {_iso(first)} .. {_iso(last)}")


# A bare name is a measurement the user meant, not an InfluxQL statement.
BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
INFLUXQL_VERBS = ("select", "show", "explain", "create", "drop", "delete", "alter", "grant", "revoke", "kill")


@app.command()
def query(
    influxql: Annotated[str | None, typer.Argument(help="an InfluxQL statement (default: latest telemetry)")] = None,
    measurement: Annotated[str, typer.Option("--measurement", "-m", help="telemetry, status, archive, ...")]
    = "telemetry",
    since: Annotated[str | None, typer.Option("--since", help="how far back (duration or ISO time; "
                                                "default 15m, with --daily 7d)")] = None,
    vehicle: Annotated[str | None, typer.Option("--vehicle", help="only this vehicle")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="rows to show")] = 20,
    daily: Annotated[bool, typer.Option("--daily", help="daily fleet analytics per vehicle: distance, "
                                        "speeds, moving time (docs/geofences.md)")] = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="with --daily: compute the days in the window "
                                          "now (history the continuous queries never saw)")] = False,
    config: ConfigOption = None, profile: ProfileOption = None, as_json: JsonOption = False,
    output: OutputOption = None, debug: DebugOption = False,
) -> None:
    """Show what landed in InfluxDB: the latest points of a measurement, any InfluxQL query, or
    the daily fleet analytics (--daily)."""
    from ecokit.replay import parse_time
    from ecokit.store.influx import InfluxV1, quote_ident, quote_string

    if refresh and not daily:
        raise UsageError("--refresh goes with --daily")
    if daily and influxql:
        raise UsageError("--daily shows the daily analytics; give either it or an InfluxQL statement")
    if influxql is not None:
        _check_statement(influxql)
    stack = load_stack(config, profile)
    stack.require_running()
    if daily:
        _daily(stack, parse_time(since or "7d"), vehicle, refresh, as_json, output)
        return
    since = since or "15m"
    document: dict[str, Any] = {}
    with InfluxV1(stack.influx_endpoint("reader")) as client:
        if influxql:
            rows = list(client.rows(influxql))
            title = influxql
            document["query"] = influxql
        else:
            start = parse_time(since)
            where = f"time >= {start}"
            if vehicle:
                where += f" AND vehicle = {quote_string(vehicle)}"
            name = quote_ident(measurement)
            counted = list(client.rows(f"SELECT count(*) FROM {name} WHERE {where}"))
            total = max((int(v) for k, v in counted[0].items() if k.startswith("count_")), default=0) \
                if counted else 0
            rows = list(client.rows(f"SELECT * FROM {name} WHERE {where} ORDER BY time DESC LIMIT {limit}"))
            title = f"{measurement}: {total} points since {_iso(start)}, latest {min(limit, len(rows))}"
            document.update(measurement=measurement, vehicle=vehicle, **stamped_ns("since", start), total=total,
                            limit=limit)
    document["rows"] = [_json_row(row) for row in rows]
    emit(document, as_json=as_json, output=output)
    if as_json:
        return
    if not rows:
        out.print(f"{title}\n[yellow]no points[/yellow]")
        return
    columns = [c for c in rows[0] if c != "_measurement"]
    for row in rows[1:]:
        columns += [c for c in row if c not in columns and c != "_measurement"]
    cells = [[_cell(c, row.get(c)) for c in columns] for row in rows]
    width = sum(max(len(c), *(len(r[i]) for r in cells)) + 2 for i, c in enumerate(columns))
    if width <= out.width:
        table = Table(title=title, box=None, header_style="bold")
        for column in columns:
            table.add_column(column)
        for row_cells in cells:
            table.add_row(*row_cells)
        out.print(table)
        return
    # Too wide for a table here: one line per point, `column=value`.
    out.print(title)
    for row_cells in cells:
        head, rest = row_cells[0], [f"{c}={v}" for c, v in zip(columns[1:], row_cells[1:], strict=True) if v]
        out.print(f"[bold]{head}[/bold]  " + "  ".join(rest), soft_wrap=True, highlight=False, markup=True)


def _daily(stack: Stack, start_ns: int, vehicle: str | None, refresh: bool, as_json: bool,
           output: Path | None) -> None:
    start = dt.datetime.fromtimestamp(start_ns / 1e9, dt.UTC)
    document: dict[str, Any] = {"since_day": start.date().isoformat(), "vehicle": vehicle}
    if refresh:
        written = stack.refresh_daily(start, dt.datetime.now(dt.UTC))
        document["refreshed_rows"] = written
        human(as_json).print(f"[green]computed[/green] the days since {start.date().isoformat()}: "
                             f"{written} row(s) written")
    rows = stack.daily_rows(start, vehicle=vehicle)
    document["rows"] = rows
    emit(document, as_json=as_json, output=output)
    if as_json:
        return
    title = f"daily fleet analytics since {start.date().isoformat()}" + (f", {vehicle}" if vehicle else "")
    if not rows:
        out.print(f"{title}\n[yellow]no rows[/yellow] (today's appear within "
                  f"{stack.config.analytics.daily.every}; older history: --refresh)")
        return
    table = Table(title=title, box=None, header_style="bold")
    columns = [("day", "day"), ("vehicle", "vehicle"), ("distance_km", "distance km"),
               ("odometer_km", "odometer km"), ("avg_speed", "avg km/h"), ("max_speed", "max km/h"),
               ("moving_s", "moving"), ("fixes", "fixes")]
    present = [(key, label) for key, label in columns if any(key in r for r in rows)]
    for key, label in present:
        table.add_column(label, justify="left" if key in ("day", "vehicle") else "right")
    for row in rows:
        table.add_row(*(_daily_cell(key, row.get(key)) for key, _ in present))
    out.print(table)


def _daily_cell(key: str, value: Any) -> str:
    if key in ("day", "vehicle"):
        return str(value)
    if key == "moving_s":
        seconds = int(value or 0)
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _check_statement(text: str) -> None:
    """A bare word (``ecokit query status``) is a measurement the user wanted to see."""
    word = text.strip()
    if BARE_NAME.fullmatch(word) and word.lower() not in INFLUXQL_VERBS:
        raise UsageError(f"{word!r} is not an InfluxQL statement",
                         hint=f"to see the latest points of the {word} measurement: ecokit query -m {word}")
    if word.split(" ", 1)[0].lower() not in INFLUXQL_VERBS:
        raise UsageError(f"{text!r} does not start like an InfluxQL statement (SELECT, SHOW, ...)",
                         hint="e.g. ecokit query \"SELECT count(seq) FROM telemetry WHERE time > now() - 1h\"; "
                              "the latest points of a measurement: ecokit query -m telemetry")


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its time as ISO 8601 UTC, and the raw nanoseconds alongside."""
    found = dict(row)
    value = found.get("time")
    if isinstance(value, int):
        found.update(stamped_ns("time", value))
    return found


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "time" and isinstance(value, int):
        return _iso(value)
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
