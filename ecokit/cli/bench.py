"""`ecokit bench SCENARIO`: load scenarios with SLOs against the stack or any broker."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ecokit.cli.common import ConfigOption, DebugOption, JsonOption, LiveLine, ProfileOption, emit, err, load_stack, out
from ecokit.errors import ConfigError, UsageError

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()

SLO_VIOLATED = 99  # k6's convention: the run was made, an SLO did not hold (1: the run could not be made)


def _duration(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    from ecokit.config.bench import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option} {exc}") from None


class _Status(LiveLine):
    """The bench's live line on stderr (stdout may carry the JSON result)."""

    def __init__(self, quiet: bool) -> None:
        super().__init__(err, err, quiet=quiet, transient=True)

    def __call__(self, p: Any) -> None:
        if p.state == "connecting":
            text = (f"connecting  publishers {p.publishers_connected}/{p.publishers}  "
                    f"subscribers {p.subscribers_connected}/{p.subscribers}")
        else:
            latency = f"p50 {p.p50_ms:.1f} ms  p99 {p.p99_ms:.1f} ms" if p.p99_ms is not None else "latency -"
            left = f"  {p.remaining:.0f}s left" if p.remaining is not None else ""
            text = (f"{p.state:<9} {p.phase or '-':<10} offered {p.offered:,.0f}/s  sent {p.send_rate:,.0f}/s  "
                    f"received {p.rate:,.0f}/s  {latency}  connected {p.publishers_connected}/{p.publishers}+"
                    f"{p.subscribers_connected}/{p.subscribers}  reconnects {p.reconnects}  errors {p.errors}{left}")
        self.show(text)


@app.command()
def bench(
    scenario: Annotated[str | None, typer.Argument(
        help="steady, ramp, spike, soak, or a scenario of ecokit.yaml's bench.scenarios", show_default=False)] = None,
    list_scenarios: Annotated[bool, typer.Option("--list", help="list the scenarios and exit")] = False,
    duration: Annotated[str | None, typer.Option("--duration", "-d", help="total length; every phase scales "
                                                 "(e.g. 30s, 10m)", show_default=False)] = None,
    publishers: Annotated[int | None, typer.Option("--publishers", "-n", min=1, max=100_000, show_default=False,
                                                   help="publishers of the busiest phase; others scale")] = None,
    rate: Annotated[float | None, typer.Option("--rate", min=0.001, show_default=False,
                                               help="peak total msg/s; every phase's rate scales")] = None,
    qos: Annotated[int | None, typer.Option("--qos", min=0, max=2, envvar=["ECOKIT_BENCH_QOS", "QOS"],
                                            show_default=False, help="QoS of every phase")] = None,
    payload_size: Annotated[int | None, typer.Option("--payload-size", min=1, show_default=False,
                                                     envvar=["ECOKIT_BENCH_PAYLOAD_SIZE", "PAYLOAD_SIZE"],
                                                     help="bytes per message, every phase")] = None,
    payload: Annotated[str | None, typer.Option("--payload", help="binary or json", show_default=False)] = None,
    topic: Annotated[str | None, typer.Option("--topic", show_default=False,
                                              help="topic pattern: {run}, {publisher}, {device}")] = None,
    subscribers: Annotated[int | None, typer.Option("--subscribers", "-s", min=0, max=10_000, show_default=False,
                                                    help="subscribers (0: publish only)")] = None,
    fanout: Annotated[str | None, typer.Option("--fanout", show_default=False,
                                               help="all: every subscriber gets every message; shared: one "
                                                    "shared subscription")] = None,
    slo: Annotated[list[str] | None, typer.Option("--slo", show_default=False,
                                                  help="[phase.]KEY=LIMIT, repeatable: p99_ms=50, loss=0, "
                                                       "min_rate=5000 (docs/bench.md)")] = None,
    json_out: JsonOption = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", dir_okay=False, show_default=False,
                                                help="write the result as JSON to FILE, and its HTML report next to "
                                                     "it (FILE with .html)")] = None,
    report: Annotated[Path | None, typer.Option("--report", dir_okay=False, show_default=False,
                                                help="write a self-contained HTML report (works offline)")] = None,
    out_to: Annotated[list[str] | None, typer.Option(
        "--out", show_default=False,
        help="also write the timeline and summary to influxdb (the stack's InfluxDB) or "
             "influxdb=http://[user:password@]host:8086/DATABASE; Grafana dashboard 'ecokit / Bench'")] = None,
    compare: Annotated[tuple[Path, Path] | None, typer.Option(
        "--compare", dir_okay=False, show_default=False,
        help="no run: an HTML report of two saved results A.json B.json (to --report, default compare.html)")] = None,
    as_devices: Annotated[bool, typer.Option("--as-devices", help="publishers connect as the stack's registered "
                                             "devices (topic default fleet/{device}/bench/{run})")] = False,
    register: Annotated[bool, typer.Option("--register", help="with --as-devices: register missing devices")] = False,
    broker: Annotated[str | None, typer.Option("--broker", envvar="ECOKIT_BROKER_URL", show_default=False,
                                               help="any broker, mqtt://host:port or "
                                                    "mqtts://user:password@host:port (default: "
                                                    "BROKER_HOST/BROKER_PORT, else the running stack)")] = None,
    username: Annotated[str | None, typer.Option("--username", envvar=["ECOKIT_MQTT_USERNAME", "BROKER_USERNAME"],
                                                 help="with a broker URL: username", show_default=False)] = None,
    password: Annotated[str | None, typer.Option("--password", envvar=["ECOKIT_MQTT_PASSWORD", "BROKER_PASSWORD"],
                                                 help="with a broker URL: password", show_default=False)] = None,
    ca: Annotated[Path | None, typer.Option("--ca", envvar="ECOKIT_BROKER_CA", dir_okay=False, show_default=False,
                                            help="with a broker URL: CA file for mqtts://")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", dir_okay=False, show_default=False,
                                              help="with a broker URL: client certificate (mTLS)")] = None,
    key: Annotated[Path | None, typer.Option("--key", dir_okay=False, show_default=False,
                                             help="with a broker URL: client key (mTLS)")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="with a broker URL: do not verify the server "
                                                              "certificate")] = False,
    mqtt_version: Annotated[str, typer.Option("--mqtt", help="protocol: 5 or 3.1.1")] = "5",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=64, help="publisher processes")] = 1,
    drain: Annotated[str, typer.Option("--drain", help="after the last phase, wait at most this long for "
                                                      "acknowledgements and deliveries")] = "10s",
    pipeline: Annotated[bool, typer.Option("--pipeline", help="measure through the stack's pipeline: after the "
                                           "run, count what the archive stored of it and how late (needs the "
                                           "archive to take bench topics: rules.archive.exclude)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live status line")] = False,
    config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False,
) -> None:
    """Run a load scenario (publishers → broker → subscribers) and check its SLOs.

    Measures end-to-end latency, throughput, loss, duplicates, connects and reconnects. Exit codes: 0 every SLO
    holds, 99 an SLO was violated, 1 the run could not be made, 2 usage, 130 interrupted.
    Scenarios: `ecokit bench --list`; their format and the SLO keys: docs/bench.md."""
    if compare is not None:
        _compare(compare, report or Path("compare.html"))
        return
    from ecokit.bench import BenchOptions, Overrides, apply_overrides, find_scenario
    from ecokit.bench.runner import Bench
    from ecokit.bench.scenario import DEVICE_TOPIC, busiest, compile_phases
    from ecokit.bench.slo import scenario_slos
    from ecokit.bench.targets import broker_choice, choose_target

    if (cert is None) != (key is None):
        raise UsageError("--cert and --key go together")
    chosen = broker_choice(broker, os.environ, username=username, password=password, ca_file=ca,
                           client_cert=(cert, key) if cert and key else None, verify=not insecure)
    stack = None
    try:
        stack = load_stack(config, profile)
    except ConfigError:
        if chosen is None and not list_scenarios:
            raise
    bench_config = stack.config.bench if stack is not None else None
    if list_scenarios:
        _print_scenarios(bench_config)
        return
    if scenario is None:
        raise UsageError("give a SCENARIO (ecokit bench --list shows them)")
    if payload not in (None, "binary", "json"):
        raise UsageError(f"--payload {payload!r}: expected binary or json")
    if fanout not in (None, "all", "shared"):
        raise UsageError(f"--fanout {fanout!r}: expected all or shared")
    if mqtt_version not in ("5", "3.1.1", "311"):
        raise UsageError(f"--mqtt {mqtt_version!r}: expected 5 or 3.1.1")
    if as_devices and chosen is not None:
        raise UsageError("--as-devices uses the stack's registered devices; it does not go with a broker URL")

    if pipeline and (stack is None or chosen is not None):
        raise UsageError("--pipeline measures the running stack's pipeline; it does not go with a broker URL")

    spec = original = find_scenario(scenario, bench_config)
    if as_devices and topic is None and spec.topic == "bench/{run}/{publisher}":
        topic = DEVICE_TOPIC
    spec = apply_overrides(spec, Overrides(
        duration=_duration(duration, "--duration"), publishers=publishers, rate=rate, qos=qos,
        payload_size=payload_size, payload=payload, topic=topic, subscribers=subscribers, fanout=fanout))
    if pipeline:  # before anything is registered or started
        from ecokit.bench.pipeline import pipeline_view, require_archive
        from ecokit.bench.scenario import expand_topic

        assert stack is not None
        require_archive(pipeline_view(stack.config, expand_topic(spec.topic, run="0" * 8, publisher=0,
                                                                 device="device")))
        stack.require_running()
    phases = compile_phases(spec)
    slos = scenario_slos(spec, slo or [], [p.name for p in phases])
    sinks = [_sink(sink, stack) for sink in out_to or []]  # a bad --out is a usage error before anything runs
    target, added = choose_target(stack, chosen, devices=busiest(phases) if as_devices else None, register=register)
    if added:
        out.print(f"[green]registered {len(added)}[/green] device(s) and reloaded the broker's users")

    options = BenchOptions(workers=workers, protocol=5 if mqtt_version == "5" else 4,
                           drain=_duration(drain, "--drain") or 10.0)
    to_stdout = json_out
    status = _Status(quiet or to_stdout)
    runner = Bench(scenario, spec, target, slos=slos, options=options, progress=status)
    view = None
    if stack is not None and chosen is None:
        from ecokit.bench.pipeline import pipeline_view

        view = pipeline_view(stack.config, runner.publishers[0].topic)
    if not to_stdout:
        _print_plan(scenario, spec, runner, target.description, slos, adjusted=spec is not original)
        if view is not None:
            out.print(Text(view.header(runner.planned_total()), style="dim"), soft_wrap=True)

    def stop(signum: int, frame: Any) -> None:
        runner.request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C does not wait
        err.print("[yellow]stopping: draining and reporting what was measured (Ctrl-C again to abort)[/yellow]")

    from ecokit.bench.runner import BenchStopped

    previous = signal.signal(signal.SIGINT, stop)
    try:
        with status:
            result = runner.run()
    except BenchStopped as exc:
        err.print(f"[yellow]{exc}[/yellow]")
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGINT, previous)

    if view is not None and pipeline:
        result.pipeline = _measure_pipeline(stack, runner, result, quiet=quiet or to_stdout)
    elif view is not None:
        result.pipeline = view.summary()
    document = result.to_dict()
    document["settings"]["adjusted"] = spec is not original
    emit(document, as_json=to_stdout, output=output)
    if not to_stdout:
        _print_result(result)
    _save_reports(document, output, report, quiet=to_stdout)
    for endpoint in sinks:
        _export(document, endpoint, quiet=to_stdout)
    for verdict in result.slo:
        if verdict.ok and not to_stdout:
            out.print(Text(verdict.line, style="green"))
    for verdict in result.violations:
        err.print(Text(verdict.line, style="bold red"), soft_wrap=True)
    if result.stopped_early:
        err.print("[yellow]stopped early: the figures cover only the part that ran[/yellow]")
        raise typer.Exit(130)
    if result.violations:
        raise typer.Exit(SLO_VIOLATED)


# -- files -------------------------------------------------------------------------------------


def _save_reports(document: dict[str, Any], output: Path | None, report: Path | None, *, quiet: bool) -> None:
    """The HTML report next to ``--output`` (FILE with .html), and at ``--report`` where asked."""
    from ecokit.bench.report import render_report, write_report

    written = []
    if output is not None:
        beside = output.with_suffix(".html")
        if beside != output and beside != report:
            write_report(beside, render_report(document))
            written.append(beside)
    if report is not None:
        write_report(report, render_report(document))
        written.append(report)
    if written and not quiet:
        out.print("[dim]report written to " + ", ".join(str(p) for p in written) + "[/dim]")


def _sink(sink: str, stack: Any) -> Any:
    """The InfluxDB endpoint of ``--out influxdb[=URL]`` (checked before the run starts)."""
    from ecokit.bench.export import endpoint_from_url

    kind, _, url = sink.partition("=")
    if kind != "influxdb":
        raise UsageError(f"--out {sink}: the only output is influxdb, or influxdb=URL")
    if url:
        return endpoint_from_url(url)
    if stack is None:
        raise UsageError("--out influxdb without a URL writes to the stack's InfluxDB: give influxdb=URL")
    return stack.influx_endpoint("writer")


def _export(document: dict[str, Any], endpoint: Any, *, quiet: bool) -> None:
    """The run into InfluxDB; a failure is reported, the run's result stands."""
    from ecokit.bench.export import write_result
    from ecokit.errors import EcokitError

    try:
        points = write_result(document, endpoint)
    except EcokitError as exc:
        err.print(f"[red]--out influxdb: not written: {exc}[/red]")
        return
    if not quiet:
        out.print(f"[dim]{points} points written to InfluxDB {endpoint.url}, database {endpoint.database} "
                  "(Grafana: ecokit / Bench)[/dim]")


def _compare(paths: tuple[Path, Path], report: Path) -> None:
    from ecokit.bench.report import render_compare, write_report

    documents = []
    for path in paths:
        try:
            document = json.loads(path.read_text())
        except OSError as exc:
            raise UsageError(f"--compare {path}: cannot read it ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise UsageError(f"--compare {path}: not JSON ({exc})") from None
        if not isinstance(document, dict) or "total" not in document or "timeline" not in document:
            raise UsageError(f"--compare {path}: not the JSON result of ecokit bench (--output FILE)")
        documents.append(document)
    write_report(report, render_compare(documents[0], documents[1]))
    out.print(f"comparison of {paths[0]} (A) and {paths[1]} (B) written to {report}")


# -- printing ----------------------------------------------------------------------------------


def _print_scenarios(config: Any) -> None:
    from ecokit.bench.scenario import BUILTIN, compile_phases, scenario_names

    table = Table(box=None, header_style="bold")
    for column in ("scenario", "phases", "length", "publishers", "offered", "from"):
        table.add_column(column)
    described = []
    for name in scenario_names(config):
        custom = config is not None and name in config.scenarios
        spec = config.scenarios[name] if custom else BUILTIN[name]
        phases = compile_phases(spec)
        rates = " | ".join(p.describe_rate() for p in phases)
        table.add_row(name, " → ".join(p.name for p in phases), _clock(sum(p.duration for p in phases)),
                      str(max(p.publishers for p in phases)), rates, "ecokit.yaml" if custom else "built-in")
        if spec.description:
            described.append(f"[bold]{name}[/bold]: {spec.description}")
    out.print(table)
    for line in described:
        out.print(line)


def _clock(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g}s"
    s = round(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _print_plan(name: str, spec: Any, runner: Any, target: str, slos: list[Any], *, adjusted: bool) -> None:
    if adjusted:
        out.print(f"bench [bold]{name}[/bold], adjusted by the options:")
    else:
        out.print(f"bench [bold]{name}[/bold]" + (f": {spec.description}" if spec.description else ""))
    table = Table(box=None, header_style="bold", padding=(0, 2, 0, 0))
    for column in ("phase", "length", "publishers", "offered", "QoS", "payload", "messages"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for p in runner.phases:
        table.add_row(p.name, _clock(p.duration), str(p.publishers), p.describe_rate(), str(p.qos),
                      f"{p.payload_size} B", f"{p.planned():,}")
    out.print(table)
    subs = (f"{len(runner.subscribers)} subscriber(s), fan-out {spec.fanout}" if runner.subscribers
            else "no subscribers (publish only)")
    out.print(f"[dim]target {target}; topic {spec.topic}; {subs}; run {runner.run_id}[/dim]")
    if slos:
        out.print("[dim]SLOs: " + ", ".join(str(s) for s in slos) + "[/dim]")


def _measure_pipeline(stack: Any, runner: Any, result: Any, *, quiet: bool) -> dict[str, Any]:
    """What the archive stored of the run (waiting, bounded, for the pipeline to drain)."""
    from ecokit.bench.pipeline import PIPELINE_WAIT_S, measure_archive
    from ecokit.replay import ARCHIVE, Archive
    from ecokit.store.influx import InfluxV1

    if not quiet:
        err.print("[dim]pipeline: counting what the archive stored ...[/dim]")
    with InfluxV1(stack.influx_endpoint("reader")) as client:
        archive = Archive(client, retention_policy=stack.retention_policy_of(ARCHIVE))
        measured = measure_archive(archive, runner.filter, sent=result.total.sent,
                                   start_ns=result.started_ns - 1_000_000_000, last_send_ns=result.last_send_ns,
                                   wait_s=PIPELINE_WAIT_S)
    return measured.to_dict()


def _print_pipeline_result(pipeline: dict[str, Any]) -> None:
    if not pipeline.get("measured"):
        return
    sent, stored = pipeline["sent"], pipeline["stored"]
    share = f" ({stored / sent * 100:.3g}%)" if sent else ""
    line = f"pipeline: the archive stored {stored:,} of {sent:,} sent messages{share}"
    if pipeline["stored_lag_ms"] is not None:
        within = "at most " if pipeline["stored_lag_upper_bound"] else ""
        line += (f"; all stored {within}{pipeline['stored_lag_ms'] / 1000:.2f} s after the last publish (the last "
                 f"one received by the pipeline {_fmt_ms(pipeline['receive_lag_ms'])} ms after it)")
    if not pipeline["complete"]:
        line += f"; {pipeline['missing']:,} not stored after waiting {pipeline['waited_s']:g} s"
    out.print(Text(line, style="" if pipeline["complete"] else "yellow"), soft_wrap=True)


def _fmt_ms(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def _print_result(result: Any) -> None:
    several = len(result.phases) > 1
    figures = [*result.phases, result.total] if several else list(result.phases)
    flow = Table(box=None, header_style="bold", padding=(0, 2, 0, 0), title="throughput", title_justify="left")
    for column in ("phase", "sent", "received", "lost", "duplicates", "sent/s", "received/s"):
        flow.add_column(column, justify="left" if column == "phase" else "right")
    latency = Table(box=None, header_style="bold", padding=(0, 2, 0, 0), title="latency, ms", title_justify="left")
    for column in ("phase", "p50", "p90", "p99", "p99.9", "max", "send lag p99"):
        latency.add_column(column, justify="left" if column == "phase" else "right")
    for f in figures:
        style = "bold" if f is result.total else ""
        lost = "-" if f.lost is None else (f"{f.lost:,}" + (f" ({f.loss * 100:.3g}%)" if f.lost else ""))
        flow.add_row(f.name, f"{f.sent:,}", f"{f.unique:,}", lost, "-" if f.expected is None else f"{f.duplicates:,}",
                     f"{f.send_rate:,.0f}", "-" if f.rate is None else f"{f.rate:,.0f}", style=style)
        lat = f.latency
        latency.add_row(f.name, _fmt_ms(lat.get("p50_ms")), _fmt_ms(lat.get("p90_ms")), _fmt_ms(lat.get("p99_ms")),
                        _fmt_ms(lat.get("p999_ms")), _fmt_ms(lat.get("max_ms")), _fmt_ms(f.send_lag.get("p99_ms")),
                        style=style)
    out.print(flow)
    out.print(latency)
    _print_pipeline_result(result.pipeline)
    c = result.connections
    pubs, subs = c["publishers"], c["subscribers"]
    out.print(f"connections: publishers {pubs['ever_connected']}/{pubs['clients']} "
              f"({pubs['reconnects']} reconnects, {pubs['connect_failures']} failed attempts), subscribers "
              f"{subs['ever_connected']}/{subs['clients']} ({subs['reconnects']} reconnects); "
              f"acked {pubs['acked']:,}, unacked {pubs['unacked']:,}")
    sys = result.broker.get("sys", {})
    if sys.get("available"):
        parts = [f"{k.replace('_', ' ')} {v:,.0f}" for k, v in sys.items()
                 if k in ("publish_received", "publish_sent", "publish_dropped", "clients_connected_max",
                          "heap_bytes_max", "messages_stored_max")]
        span = sys.get("sample_span_s", 0)
        out.print((f"broker $SYS over {span:g}s: " if span else "broker $SYS: ") + ", ".join(parts)
                  + (f" [dim]({sys['note']})[/dim]" if sys.get("note") and not span else ""))
    elif sys:
        out.print(f"[dim]broker: {sys.get('note', '$SYS not available')}[/dim]")
    proc = result.broker.get("process")
    if proc and "cpu_percent_mean" in proc:
        out.print(f"broker process (pid {proc['pid']}): CPU mean {proc['cpu_percent_mean']:.0f}% max "
                  f"{proc['cpu_percent_max']:.0f}% of a core, RSS {proc.get('rss_mb_start', 0):.1f} → "
                  f"{proc.get('rss_mb_max', 0):.1f} MB max")
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
    seen: dict[str, int] = {}
    for line in result.errors:
        seen[line] = seen.get(line, 0) + 1
    for line, times in list(seen.items())[-5:]:
        err.print(Text("error: ", style="red") + Text(line + (f" (x{times})" if times > 1 else "")), soft_wrap=True)
