"""From what a user asked to a simulation ready to run: the policy behind ``ecokit simulate``.

The settings come from the ``simulator`` section (flags reach it as the loader's overrides,
so a bad flag is reported like a bad key); this module decides the rest: which broker and
as whom, which vehicle ids (registering the missing devices when allowed), whether the
vehicles keep device shadows, and where the offline queue lives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ecokit.clients import fleet_ids, missing_devices, register_devices, stack_connection, stack_runs_shadows
from ecokit.config.model import SimulatorConfig
from ecokit.config.regions import Region, parse_region
from ecokit.durations import duration_seconds
from ecokit.errors import ConfigError, UsageError
from ecokit.mqtt.target import BrokerChoice, Connection
from ecokit.sim.base import SimSettings
from ecokit.sim.fleet import FleetSpec, SimVehicle, build_fleet
from ecokit.stack import Stack


@dataclass(frozen=True)
class SimRequest:
    """What ``ecokit simulate`` was asked beyond the simulator section's settings."""

    vehicles: int = 10
    seed: int = 1
    duration: float | None = None
    count: int | None = None
    broker: BrokerChoice | None = None  # None: the running stack
    as_admin: bool = False
    register: bool = False
    queue_file: Path | None = None
    keep_queue: bool = False
    shadow: bool | None = None  # None: on against a stack that runs the shadow service
    client_id_prefix: str = ""
    drain: float = 15.0


@dataclass(frozen=True)
class Simulation:
    """A simulation ready to run: ``Simulator(fleet, connection.target, connection.auth, settings)``."""

    fleet: list[SimVehicle]
    connection: Connection
    settings: SimSettings
    region: Region
    flat_out: bool
    registered: tuple[str, ...] = ()  # devices added to the registry for this run


# Asked when devices are missing: (registered, missing) -> register them?
ConfirmRegister = Callable[[int, int], bool]


def numbered_ids(known: list[str], vehicles: int) -> list[str]:
    """``known`` ids first, then ``vehicle-0001``... not among them, ``vehicles`` in all."""
    width = max(4, len(str(vehicles)))
    ids = list(known[:vehicles])
    ids += [f"vehicle-{n:0{width}d}" for n in range(1, vehicles + 1) if f"vehicle-{n:0{width}d}" not in ids]
    return ids[:vehicles]


def prepare(simulator: SimulatorConfig, request: SimRequest, *, stack: Stack | None,
            confirm_register: ConfirmRegister = lambda registered, missing: False) -> Simulation:
    """Merge, choose and register; raises ConfigError/UsageError naming what is wrong."""
    if request.duration is not None and request.count is not None:
        raise UsageError("give --duration or --count, not both")
    interval = _seconds(simulator.rate, "rate")
    jitter = _seconds(simulator.jitter, "jitter")
    flat_out = interval == 0
    region = parse_region(simulator.region)
    registered: list[str] = []
    if request.broker is not None:
        connection = request.broker.connection()
        ids = numbered_ids([d.id for d in stack.devices()] if stack is not None else [], request.vehicles)
    else:
        if stack is None:
            raise ConfigError("no stack to simulate against", hint="run `ecokit init`, or give --broker URL")
        connection = stack_connection(stack, as_admin=request.as_admin)
        missing = missing_devices(stack, request.vehicles)
        if missing and not request.as_admin:
            if not request.register and not confirm_register(len(stack.devices()), missing):
                raise ConfigError(f"{request.vehicles} vehicles need {missing} more registered devices",
                                  source=str(stack.devices_file), hint="run again with --register")
            registered = register_devices(stack, missing)
            connection = stack_connection(stack, as_admin=request.as_admin)
        if request.as_admin and missing:
            ids = numbered_ids([d.id for d in stack.devices()], request.vehicles)
        else:
            ids = fleet_ids(stack, request.vehicles)
    shadow = request.shadow
    if shadow is None:  # against a foreign broker only when asked: nothing may answer there
        shadow = request.broker is None and stack is not None and simulator.shadow and stack_runs_shadows(stack)
    queue_file = request.queue_file
    if queue_file is None:
        queue_file = (stack.paths.root if stack is not None else Path(".ecokit")) / "sim" / "queue.sqlite"
    settings = SimSettings(
        qos=simulator.qos, protocol=5 if simulator.mqtt == "5" else 4, keepalive=simulator.keepalive,
        session_expiry=simulator.session_expiry, duration=request.duration, count=request.count,
        queue_path=queue_file, queue_limit=simulator.queue_limit, keep_queue=request.keep_queue, flat_out=flat_out,
        client_id_prefix=request.client_id_prefix, drain_timeout=request.drain, shadow=shadow,
        client=simulator.client)
    fleet = build_fleet(FleetSpec(ids, region, request.seed, interval=interval if not flat_out else 1.0,
                                  jitter=jitter))
    return Simulation(fleet, connection, settings, region, flat_out, tuple(registered))


def _seconds(text: str, key: str) -> float:
    seconds = duration_seconds(text)
    if seconds is None:  # the section's pattern lets only durations through
        raise ConfigError(f"{text!r} is not a duration", key=f"simulator.{key}")
    return seconds
