"""A fleet of simulated devices, generated from a seed. Pure (no I/O, no clock).

Each vehicle's route, profile, starting state and every random choice it later makes
come from generators seeded by ``(seed, vehicle id)``: the same id gets the same
vehicle whatever the size of the fleet, and the same seed replays the same messages.
Wall-clock timestamps are the only thing that differs between two runs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ecokit.config.regions import Region
from ecokit.sim.routes import generate_route
from ecokit.sim.seeds import SplitMix64, seed_of
from ecokit.sim.vehicle import PROFILES, Fix, Rng, VehicleModel

SCHEMA_VERSION = 1
FIRMWARE_VERSIONS = ("1.4.2", "1.5.0", "1.5.1", "2.0.0-rc1")
MIN_INTERVAL = 0.05
MAX_INTERVAL = 3600.0


def telemetry_topic(vehicle_id: str) -> str:
    return f"fleet/{vehicle_id}/telemetry"


def status_topic(vehicle_id: str) -> str:
    return f"fleet/{vehicle_id}/status"


def commands_topic(vehicle_id: str) -> str:
    return f"fleet/{vehicle_id}/commands"


BROADCAST_COMMANDS = "fleet/broadcast/commands"


def ack_topic(vehicle_id: str) -> str:
    return f"fleet/{vehicle_id}/commands/ack"


def status_payload(vehicle_id: str, state: str, ts_ms: int) -> bytes:
    """``fleet/{id}/status`` body (also the last will, with state ``offline``)."""
    return json.dumps({"v": SCHEMA_VERSION, "vehicle": vehicle_id, "state": state, "ts": ts_ms,
                       "source": "device"}, separators=(",", ":")).encode()


def clamp_interval(seconds: float) -> float:
    """``seconds`` brought into MIN_INTERVAL..MAX_INTERVAL (a shadow's desired value is clamped;
    a ``set_interval`` command out of range is refused instead)."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, float(seconds)))


def check_interval(seconds: float) -> float:
    if not (MIN_INTERVAL <= seconds <= MAX_INTERVAL):
        raise ValueError(f"publish interval must be between {MIN_INTERVAL} and {MAX_INTERVAL:g} seconds, "
                         f"not {seconds:g}")
    return float(seconds)


class SimVehicle:
    """One simulated device: the physics, its publish schedule and what it reports.

    The publish interval is runtime state (``set_interval`` commands change it, and a
    device shadow's ``desired.publish_interval`` can too, through :meth:`set_publish_interval`).
    """

    def __init__(self, vehicle_id: str, model: VehicleModel, *, firmware: str, interval: float,
                 jitter: float, jitter_rng: Rng, region: str = "") -> None:
        self.id = vehicle_id
        self.model = model
        self.firmware = firmware
        self.region = region
        self.interval = check_interval(interval)
        self.jitter = max(0.0, jitter)
        self._jitter_rng = jitter_rng
        self.seq = 0
        self.topic = telemetry_topic(vehicle_id)
        self._head = f'{{"v":{SCHEMA_VERSION},"vehicle":{json.dumps(vehicle_id)},"seq":'  # the same in every message

    # -- schedule ----------------------------------------------------------------------

    def set_publish_interval(self, seconds: float) -> float:
        """Change the telemetry interval from now on; returns the previous one."""
        previous, self.interval = self.interval, check_interval(seconds)
        return previous

    def next_delay(self) -> float:
        """Seconds until the next fix: the interval plus seeded jitter (never below MIN_INTERVAL)."""
        if self.jitter <= 0:
            return self.interval
        return max(MIN_INTERVAL, self.interval + self._jitter_rng.uniform(-self.jitter, self.jitter))

    # -- telemetry ---------------------------------------------------------------------

    def step(self, dt: float) -> Fix:
        """Advance the physics by ``dt`` simulated seconds and take the next sequence number."""
        if dt > 0:
            self.model.advance(dt)
        self.seq += 1
        return self.model.fix()

    def telemetry(self, fix: Fix, ts_ms: int) -> bytes:
        """The documented telemetry JSON for ``fix`` with the current sequence number."""
        lat, lng, speed, heading, fuel, odometer, engine, status = fix[:8]
        return (
            f'{self._head}{self.seq},"ts":{ts_ms},"lat":{lat:.6f},"lng":{lng:.6f},"speed":{speed:.1f},'
            f'"heading":{heading:.1f},"fuel":{fuel:.2f},"odometer":{odometer:.3f},'
            f'"engine":{"true" if engine else "false"},"status":"{status}"}}'
        ).encode()

    # -- state for commands and shadows ------------------------------------------------

    def reported_state(self) -> dict[str, object]:
        """The vehicle's state as ``ping`` answers it (``ecokit.sim.shadow`` reports to the shadow)."""
        fix = self.model.fix()
        return {"engine": "on" if fix.engine else "off", "status": fix.status,
                "publish_interval": self.interval, "firmware": self.firmware, "seq": self.seq}


@dataclass(frozen=True)
class FleetSpec:
    ids: Sequence[str]
    region: Region
    seed: int
    interval: float = 1.0
    jitter: float = 0.0


def build_vehicle(vehicle_id: str, spec: FleetSpec) -> SimVehicle:
    # Generation uses a full random.Random (str seeds are hashed with SHA-512: stable across
    # processes, unaffected by PYTHONHASHSEED); the run-time streams are small SplitMix64s.
    rng = random.Random(f"ecokit-sim/{spec.seed}/{vehicle_id}/vehicle")
    route = generate_route(rng, spec.region)
    kind = rng.choices(("car", "van", "truck"), weights=(6, 3, 1))[0]
    profile = PROFILES[kind]
    leg = rng.randrange(route.legs)
    offset = rng.uniform(0, route.lengths[leg] * 0.9)
    fuel = profile.tank_l * rng.uniform(0.2, 1.0)
    odometer = round(rng.uniform(2_000, 180_000), 1)
    parked = rng.uniform(5, 120) if rng.random() < 0.25 else 0.0
    firmware = rng.choice(FIRMWARE_VERSIONS)
    drive = SplitMix64(seed_of("ecokit-sim", spec.seed, vehicle_id, "drive"))
    model = VehicleModel(route, profile, drive, leg=leg, offset=offset, fuel_l=fuel, odometer_km=odometer,
                         parked_for=parked)
    return SimVehicle(vehicle_id, model, firmware=firmware, interval=spec.interval, jitter=spec.jitter,
                      jitter_rng=SplitMix64(seed_of("ecokit-sim", spec.seed, vehicle_id, "jitter")),
                      region=spec.region.name)


def build_fleet(spec: FleetSpec) -> list[SimVehicle]:
    if len(set(spec.ids)) != len(spec.ids):
        raise ValueError("vehicle ids must be distinct")
    return [build_vehicle(vid, spec) for vid in spec.ids]
