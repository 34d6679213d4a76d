"""`ecokit simulate` and `ecokit command send`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ecokit.cli.common import (
    ConfigOption,
    DebugOption,
    JsonOption,
    LiveLine,
    OutputOption,
    ProfileOption,
    emit,
    err,
    load_stack,
    out,
)
from ecokit.durations import duration_seconds
from ecokit.errors import BrokerError, ConfigError, UsageError
from ecokit.report import stamped

if TYPE_CHECKING:
    from ecokit.mqtt.target import BrokerChoice

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()

command_app = typer.Typer(help="Send commands to simulated (or real) vehicles.", no_args_is_help=True)
app.add_typer(command_app, name="command")

def parse_duration(text: str, option: str) -> float:
    """'200ms', '1s', '10m', '1h' or plain seconds."""
    seconds = duration_seconds(text)
    if seconds is None:
        raise UsageError(f"{option} {text!r}: expected a duration like 500ms, 1s, 10m or 1h")
    return seconds


BrokerOption = Annotated[str | None, typer.Option(
    "--broker", envvar="ECOKIT_BROKER_URL", show_default=False,
    help="any broker URL, mqtt[s]://[user:password@]host:port (default: the running stack)")]
UsernameOption = Annotated[str | None, typer.Option("--username", envvar="ECOKIT_MQTT_USERNAME",
                                                    help="with --broker: username", show_default=False)]
PasswordOption = Annotated[str | None, typer.Option("--password", envvar="ECOKIT_MQTT_PASSWORD",
                                                    help="with --broker: password", show_default=False)]
CaOption = Annotated[Path | None, typer.Option("--ca", help="with --broker: CA file for mqtts://", dir_okay=False,
                                               show_default=False)]
CertOption = Annotated[Path | None, typer.Option("--cert", help="with --broker: client certificate (mTLS)",
                                                 dir_okay=False, show_default=False)]
KeyOption = Annotated[Path | None, typer.Option("--key", help="with --broker: client key (mTLS)", dir_okay=False,
                                                show_default=False)]
InsecureOption = Annotated[bool, typer.Option("--insecure", help="with --broker: do not verify the server "
                                                                 "certificate")]


def _broker_choice(broker: str, username: str | None, password: str | None, ca: Path | None,
                   cert: Path | None, key: Path | None, insecure: bool) -> BrokerChoice:
    from ecokit.mqtt.target import BrokerChoice

    if (cert is None) != (key is None):
        raise UsageError("--cert and --key go together")
    client_cert = (cert, key) if cert is not None and key is not None else None
    return BrokerChoice(broker, username=username, password=password, ca_file=ca, client_cert=client_cert,
                        verify=not insecure)


class _StatusLine(LiveLine):
    """The simulator's live line on stdout (kept when done); progress goes to stderr off a terminal."""

    def __init__(self, quiet: bool) -> None:
        super().__init__(out, err, quiet=quiet, transient=False)
        self._last: tuple[float, int] | None = None

    def __call__(self, snap: Any) -> None:
        now = time.monotonic()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (snap.produced - self._last[1]) / (now - self._last[0])
        self._last = (now, snap.produced)
        left = f"  {_clock(snap.remaining)} left" if snap.remaining is not None else ""
        text = (f"{snap.phase:<10} {snap.connected}/{snap.target} connected  {rate:,.0f} msg/s  "
                f"sent {snap.sent:,}  queued {snap.queued:,}" + (f" (dropped {snap.dropped:,})" if snap.dropped else "")
                + f"  reconnects {snap.reconnects}  errors {snap.errors}"
                + (f"  commands {snap.commands}" if snap.commands else "")
                + (f"  shadow deltas {snap.shadow_deltas}" if snap.shadow else "") + left)
        self.show(text)


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


@app.command()
def simulate(
    vehicles: Annotated[int, typer.Option("--vehicles", "-n", help="fleet size", min=1, max=100_000)] = 10,
    rate: Annotated[str | None, typer.Option("--rate", help="telemetry interval per vehicle (0 = flat out) "
                                             "[default: simulator.rate, 1s]", show_default=False)] = None,
    qos: Annotated[int | None, typer.Option("--qos", help="telemetry QoS, 0 or 1 [default: simulator.qos, 1]",
                                            min=0, max=1, show_default=False)] = None,
    jitter: Annotated[str | None, typer.Option("--jitter", help="± random spread of each interval (seeded) "
                                               "[default: simulator.jitter, 0s]", show_default=False)] = None,
    region: Annotated[str | None, typer.Option("--region", help="paris, dubai or SOUTH,WEST,NORTH,EAST "
                                               "[default: simulator.region, paris]", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="same seed: same fleet, routes and messages")] = 1,
    duration: Annotated[str | None, typer.Option("--duration", help="publish for exactly this long (e.g. 10m)",
                                                 show_default=False)] = None,
    count: Annotated[int | None, typer.Option("--count", help="telemetry messages per vehicle, exactly", min=1,
                                              show_default=False)] = None,
    broker: BrokerOption = None, username: UsernameOption = None, password: PasswordOption = None,
    ca: CaOption = None, cert: CertOption = None, key: KeyOption = None, insecure: InsecureOption = False,
    as_admin: Annotated[bool, typer.Option("--as-admin", help="every vehicle connects as ecokit-admin")] = False,
    register: Annotated[bool, typer.Option("--register", help="register missing devices without asking")] = False,
    mqtt_version: Annotated[str | None, typer.Option("--mqtt", help="protocol: 5 or 3.1.1 [default: 5]",
                                                     show_default=False)] = None,
    session_expiry: Annotated[int | None, typer.Option("--session-expiry", help="MQTT 5 session expiry, seconds "
                                                       "[default: 3600]", min=0, show_default=False)] = None,
    keepalive: Annotated[int | None, typer.Option("--keepalive", help="seconds [default: 30]", min=5, max=65535,
                                                  show_default=False)] = None,
    queue_limit: Annotated[int | None, typer.Option("--queue-limit", help="offline queue bound per vehicle "
                                                    "[default: 10000]", min=1, show_default=False)] = None,
    queue_file: Annotated[Path | None, typer.Option("--queue", help="offline queue database (SQLite)",
                                                    dir_okay=False, show_default=False)] = None,
    keep_queue: Annotated[bool, typer.Option("--keep-queue", help="send what an earlier run left queued")] = False,
    shadow: Annotated[bool | None, typer.Option(
        "--shadow/--no-shadow", help="vehicles report to their device shadows (things/{id}/shadow) and apply "
        "desired.publish_interval [default: on against a stack running the shadow service (simulator.shadow), "
        "off with --broker]", show_default=False)] = None,
    client_id_prefix: Annotated[str, typer.Option("--client-id-prefix", help="prefix of every client id")] = "",
    client: Annotated[str | None, typer.Option(
        "--client", help="each vehicle's MQTT client: fast (ecokit's fast path) or paho (the reference client) "
        "[default: simulator.client, fast]", show_default=False)] = None,
    drain: Annotated[str, typer.Option("--drain", help="at the end, wait this long for acks and queues")] = "15s",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=64,
                                         help="processes sharing the fleet (one event loop each; e.g. 2 for "
                                              "20,000 vehicles on 2 cores)")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no status line")] = False,
    as_json: JsonOption = False, output: OutputOption = None,
    config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False,
) -> None:
    """Simulate a fleet of vehicles publishing telemetry and answering commands.

    Ctrl-C (or SIGTERM) stops it: vehicles drain and disconnect, the summary says it was
    interrupted, and the exit code is 130.

    Defaults come from the `simulator:` section of ecokit.yaml (flags override it)."""
    from ecokit.config.loader import load_config
    from ecokit.sim.launch import SimRequest, prepare
    from ecokit.sim.runner import Simulator

    # The flags that have a key in the simulator section reach it as overrides: they are
    # validated (and reported) like the section, and the library sees one merged config.
    overrides = {"simulator.rate": rate, "simulator.qos": qos, "simulator.jitter": jitter,
                 "simulator.region": region, "simulator.mqtt": "3.1.1" if mqtt_version == "311" else mqtt_version,
                 "simulator.session_expiry": session_expiry, "simulator.keepalive": keepalive,
                 "simulator.queue_limit": queue_limit, "simulator.client": client}
    stack = None
    try:
        stack = load_stack(config, profile, overrides)
        simulator = stack.config.simulator
    except ConfigError as exc:
        if exc.source is not None and exc.source.startswith("flag "):
            raise UsageError(str(exc)) from None  # a flag the simulator section refuses: exit 2
        if broker is None:
            raise
        try:  # any broker without a project: the section's defaults, the environment and the flags
            simulator = load_config(None, env=dict(os.environ), overrides=overrides).config.simulator
        except ConfigError as flag:
            raise UsageError(str(flag)) from None
    request = SimRequest(
        vehicles=vehicles, seed=seed, duration=parse_duration(duration, "--duration") if duration is not None else None,
        count=count, broker=_broker_choice(broker, username, password, ca, cert, key, insecure) if broker else None,
        as_admin=as_admin, register=register, queue_file=queue_file, keep_queue=keep_queue, shadow=shadow,
        client_id_prefix=client_id_prefix, drain=parse_duration(drain, "--drain"))

    def confirm(registered: int, missing: int) -> bool:
        return sys.stdin.isatty() and typer.confirm(
            f"The registry has {registered} devices; register {missing} more for this stack?")

    run = prepare(simulator, request, stack=stack, confirm_register=confirm)
    if run.registered:
        out.print(f"[green]registered {len(run.registered)}[/green] device(s) and reloaded the broker's users")
    fleet, connection, settings = run.fleet, run.connection, run.settings
    if not as_json:
        limit = (f"for {duration}" if duration else f"{count} message(s) each" if count else "until Ctrl-C")
        out.print(f"simulating [bold]{len(fleet)}[/bold] vehicle(s) in {run.region.describe()}, seed {seed}, "
                  f"{'flat out' if run.flat_out else f'every {simulator.rate}'}, QoS {settings.qos}, {limit}")
        out.print(f"[dim]broker {connection.description}; MQTT {'5' if settings.protocol == 5 else '3.1.1'} "
                  f"({settings.client} client), offline queue {settings.queue_path}; "
                  f"device shadows {'on' if settings.shadow else 'off'}[/dim]")
    _raise_nofile(len(fleet) * 2 + 256)
    status = _StatusLine(quiet or as_json)
    interrupted: list[str] = []
    if workers > 1:
        from ecokit.sim.workers import WorkerFleet

        sim: Any = WorkerFleet(fleet, connection.target, connection.auth, settings, workers, progress=status)
        with status:
            summary = _run_workers(sim, interrupted)
    else:
        sim = Simulator(fleet, connection.target, connection.auth, settings, progress=status)
        with status:
            summary = asyncio.run(_run(sim, interrupted))
    if sim.discarded and not as_json:
        out.print(f"[yellow]note:[/yellow] discarded {sim.discarded} message(s) an earlier run left queued "
                  "(--keep-queue sends them)")
    emit({**summary.to_dict(), "interrupted": bool(interrupted), "stopped_by": interrupted[0] if interrupted else None},
         as_json=as_json, output=output)
    if not as_json:
        _print_summary(summary)
    if summary.ever_connected == 0:
        last = summary.last_errors[-1] if summary.last_errors else "no answer"
        raise BrokerError(f"no vehicle could connect to {connection.target.url} ({last})")
    if interrupted:
        err.print(f"[yellow]interrupted ({interrupted[0]}): the summary covers the part that ran[/yellow]")
        raise typer.Exit(130)


def _run_workers(fleet: Any, interrupted: list[str]) -> Any:
    """Run the worker processes; SIGINT/SIGTERM ask them to stop and drain, and are noted."""
    def stop(signum: int, frame: Any) -> None:
        interrupted.append(signal.Signals(signum).name)
        fleet.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return fleet.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _run(sim: Any, interrupted: list[str]) -> Any:
    """Run the fleet; SIGINT/SIGTERM stop it cleanly (drained, summarised) and are noted."""
    loop = asyncio.get_running_loop()

    def stop(name: str) -> None:
        interrupted.append(name)
        sim.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        return await sim.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _raise_nofile(wanted: int) -> None:
    from ecokit.mqtt.loop import raise_nofile

    allowed = raise_nofile(wanted)
    if allowed < wanted:
        err.print(f"[yellow]warning:[/yellow] only {allowed} file descriptors allowed; "
                  f"{wanted} wanted (raise `ulimit -n`)")


def _print_summary(s: Any) -> None:
    table = Table(box=None, show_header=False, title="summary", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("vehicles", f"{s.vehicles} ({s.ever_connected} connected at least once, {s.connected_at_end} at the end)"),
        ("telemetry", f"{s.produced:,} messages in {s.publish_seconds:.1f}s ({s.rate:,.1f} msg/s)"),
        ("sent / acked", f"{s.sent:,} / {s.acked:,} (incl. status, acks and shadow requests)"),
        ("offline queue", f"{s.flushed:,} flushed, {s.queued_left:,} left, {s.dropped:,} dropped"),
        ("connections", f"{s.reconnects} reconnects, {s.disconnects} drops, {s.connect_failures} failed attempts"),
        ("commands", str(s.commands)),
        ("device shadows", f"{s.shadow_reports:,} reports, {s.shadow_deltas} desired interval(s) applied, "
                           f"{s.shadow_rejected} refused; synced {s.shadow_sync_seconds:.1f}s after connecting"
                           if s.shadow else "off"),
        ("errors", str(s.errors)),
    ]
    if s.drift_ms:
        rows.append(("schedule drift", f"p50 {s.drift_ms['p50']:.1f} ms, p99 {s.drift_ms['p99']:.1f} ms, "
                                       f"max {s.drift_ms['max']:.1f} ms"))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
    if s.queued_left:
        out.print(f"[yellow]warning:[/yellow] {s.queued_left} message(s) were never delivered; they stay in the "
                  "offline queue (--keep-queue sends them next time)")
    for line in s.last_errors[-5:]:
        err.print(f"[red]error:[/red] {line}", soft_wrap=True)


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"command argument {pair!r}: expected KEY=VALUE (e.g. seconds=5)")
        k, v = pair.split("=", 1)
        try:
            args[k] = json.loads(v)
        except ValueError:
            args[k] = v
    return args


@command_app.command("send")
def send(
    words: Annotated[list[str], typer.Argument(help="VEHICLE NAME [KEY=VALUE...], or NAME [KEY=VALUE...] with "
                                                    "--all; NAME: set_interval, engine_start, engine_stop, ping")],
    all_vehicles: Annotated[bool, typer.Option("--all", help="every vehicle")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for acks", min=0.1)] = 5.0,
    expect: Annotated[int | None, typer.Option("--expect", help="with --all: stop after N acks", min=1,
                                               show_default=False)] = None,
    broker: BrokerOption = None, username: UsernameOption = None, password: PasswordOption = None,
    ca: CaOption = None, cert: CertOption = None, key: KeyOption = None, insecure: InsecureOption = False,
    as_json: JsonOption = False, output: OutputOption = None,
    config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False,
) -> None:
    """Send a command and show the acks: through the stack's console when it runs one (the
    command gets the id, lifecycle and history the console shows), else as ecokit-admin on the
    stack's broker or to --broker."""
    from ecokit.clients import stack_connection
    from ecokit.sim.commands import CommandError, new_command
    from ecokit.sim.control import check_vehicle_id

    if all_vehicles:
        vehicle, rest = None, words
    else:
        if len(words) < 2:
            raise UsageError("give VEHICLE NAME (or --all NAME)")
        vehicle, rest = words[0], words[1:]
        check_vehicle_id(vehicle)
    if not rest:
        raise UsageError("give the command NAME")
    try:
        command = new_command(rest[0], _parse_args(rest[1:]), ts_ms=time.time_ns() // 1_000_000)
    except CommandError as exc:
        raise UsageError(str(exc)) from None
    if broker is not None:
        connection = _broker_choice(broker, username, password, ca, cert, key, insecure).connection()
    else:
        stack = load_stack(config, profile)
        if _send_via_console(stack, command.name, dict(command.args), vehicle, timeout=timeout, expect=expect,
                             as_json=as_json, output=output):
            return
        connection = stack_connection(stack, as_admin=True)
    _send_direct(connection, command, vehicle, timeout=timeout, expect=expect, as_json=as_json, output=output)


def _ack_line(vehicle: str, result: str, detail: str, handled_ms: float | None, round_trip_ms: float | None) -> None:
    style = "green" if result == "ok" else "red"
    timing = []
    if handled_ms is not None:
        timing.append(f"handled in {handled_ms:.2f} ms")
    if round_trip_ms is not None:
        timing.append(f"round trip {round_trip_ms:.1f} ms")
    out.print(f"  {vehicle:<16} [{style}]{result:<5}[/{style}] {detail}"
              + (f"  [dim]({', '.join(timing)})[/dim]" if timing else ""), soft_wrap=True)


def _send_via_console(stack: Any, name: str, args: dict[str, Any], vehicle: str | None, *, timeout: float,
                      expect: int | None, as_json: bool, output: Path | None) -> bool:
    """Send through the stack's console; False when the stack has no console answering."""
    from ecokit.console.client import ConsoleClient, ConsoleEndpoint

    endpoint = ConsoleEndpoint.for_stack(stack)
    if endpoint is None or stack.current_runtime() is None:
        return False
    with ConsoleClient(endpoint) as client:
        if not client.ready():
            if not as_json:
                err.print(f"[dim]the console at {endpoint.url} does not answer; sending on the broker[/dim]")
            return False
        sent = client.send(name, args, vehicles=[vehicle] if vehicle else None, timeout_s=timeout)
        items = sent["items"]
        if not as_json:
            ident = f"id {items[0]['id']}" if vehicle else f"batch {sent['batch']}, {len(items)} commands"
            out.print(f"{name} {json.dumps(args) if args else ''} -> {vehicle or 'all vehicles'} "
                      f"[dim]({ident}, via the console)[/dim]")

        def shown(c: dict[str, Any]) -> None:
            if as_json:
                return
            if c["state"] in ("succeeded", "failed") and c["result"] is not None:
                _ack_line(c["vehicle"], c["result"], c["detail"] or "", c["latency_ms"], c["round_trip_ms"])
            else:
                out.print(f"  {c['vehicle']:<16} [red]{c['state']:<5}[/red] {c['detail'] or ''}", soft_wrap=True)

        # The console's own timeout ends each command; a little grace covers the last poll.
        final = client.follow(sent["batch"], len(items), deadline=time.monotonic() + timeout + 1.0,
                              enough=expect, on_final=shown)
    acked = [c for c in final if c["state"] in ("succeeded", "failed") and c["result"] is not None]
    waiting = [c for c in final if c["state"] in ("queued", "sent", "delivered")]
    emit({"id": items[0]["id"] if vehicle else sent["batch"], "batch": sent["batch"], "name": name, "args": args,
          "vehicle": vehicle, "broadcast": vehicle is None, **stamped("sent_at", items[0]["created"] / 1000),
          "timeout_s": timeout, "via": "console",
          "acks": [{"vehicle": c["vehicle"], "result": c["result"], "ok": c["result"] == "ok", "detail": c["detail"],
                    "latency_ms": c["latency_ms"], "round_trip_ms": c["round_trip_ms"], "id": c["id"]}
                   for c in acked],
          "commands": final}, as_json=as_json, output=output)
    if vehicle is None and not as_json:
        out.print(f"{len(acked)} ack(s) within {timeout:g}s"
                  + (f"; {len(waiting)} still waiting in the console (offline vehicles get theirs when they "
                     "connect)" if waiting else ""))
    if vehicle is not None and not acked:
        state = final[0] if final else items[0]
        raise BrokerError(f"no ack from {vehicle} within {timeout:g}s (command {state['id']} is "
                          f"{state['state']}: {state['detail'] or 'no answer'})",
                          hint="is the simulator running (`ecokit simulate`) and the vehicle connected?")
    if any(c["result"] != "ok" for c in acked):
        raise typer.Exit(1)
    return True


def _send_direct(connection: Any, command: Any, vehicle: str | None, *, timeout: float, expect: int | None,
                 as_json: bool, output: Path | None) -> None:
    from ecokit.sim.control import Ack, send_command

    auth = connection.auth("ecokit-admin")

    def shown(ack: Ack) -> None:
        if not as_json:
            _ack_line(ack.vehicle, ack.result, ack.detail, ack.latency_ms, ack.round_trip_ms)

    if not as_json:
        out.print(f"{command.name} {json.dumps(dict(command.args)) if command.args else ''} -> "
                  f"{vehicle or 'all vehicles'} [dim](id {command.id})[/dim]")
    acks = send_command(connection.target, auth, command, vehicle, timeout=timeout, expect=expect, on_ack=shown)
    sent_at = command.ts / 1000 if command.ts is not None else None
    emit({"id": command.id, "name": command.name, "args": dict(command.args), "vehicle": vehicle,
          "broadcast": vehicle is None, **stamped("sent_at", sent_at), "timeout_s": timeout, "via": "broker",
          "acks": [{**a.__dict__, "ok": a.result == "ok"} for a in acks]}, as_json=as_json, output=output)
    if vehicle is None and not as_json:
        out.print(f"{len(acks)} ack(s) within {timeout:g}s")
    if vehicle is not None and not acks:
        raise BrokerError(f"no ack from {vehicle} within {timeout:g}s",
                          hint="is the simulator running (`ecokit simulate`) and the vehicle connected?")
    if any(a.result != "ok" for a in acks):
        raise typer.Exit(1)
