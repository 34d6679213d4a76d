"""Vehicle physics on a route. Pure: state changes only through :meth:`VehicleModel.advance`
(simulated seconds) and the engine commands; randomness only from the vehicle's own
generator (``Rng``). Same route, same generator state, same ``dt`` sequence: same fixes.

The model drives the route's legs at their speed limits with bounded acceleration and
braking, slows for corners, stops at traffic lights, deliveries (engine off) and fuel
stations, brakes to a halt and switches the engine off when told to, and keeps an
odometer that only goes up and a fuel level that only goes down except at the pump.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from ecokit.sim.routes import KMH, Route

HARD_BRAKE = 6.0  # m/s²: never exceeded (an emergency stop is ~8)
MAX_STEP = 0.5  # s: physics sub-step
REFUEL_L_PER_S = 0.6  # a pump delivers ~36 l/min
REFUEL_BELOW = 0.15  # fraction of the tank
STOP_SPEED = 0.05  # m/s: below this a vehicle is standing

Status = Literal["moving", "idle", "parked"]
Mode = Literal["drive", "dwell", "hold"]
DwellKind = Literal["light", "delivery", "refuel", "start"]


class Rng(Protocol):
    """The two draws the model makes (``random.Random`` and ``SplitMix64`` both fit)."""

    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class VehicleProfile:
    kind: str
    max_speed: float  # m/s
    accel: float  # m/s², comfortable
    brake: float  # m/s², comfortable
    tank_l: float
    l_per_100km: float
    idle_l_per_h: float


PROFILES: dict[str, VehicleProfile] = {
    "car": VehicleProfile("car", 120 * KMH, 2.5, 3.0, 50.0, 7.0, 0.8),
    "van": VehicleProfile("van", 110 * KMH, 1.8, 2.6, 70.0, 9.5, 1.0),
    "truck": VehicleProfile("truck", 90 * KMH, 1.0, 2.0, 300.0, 28.0, 2.5),
}


class Fix(NamedTuple):
    """What the vehicle reports at one instant (plus the leg, for tests and tools). A named tuple:
    one is made per message, and a frozen dataclass costs three times as much to build."""

    lat: float
    lng: float
    speed_kmh: float
    heading: float
    fuel_pct: float
    odometer_km: float
    engine: bool
    status: Status
    leg: int
    refuelling: bool


class VehicleModel:
    def __init__(self, route: Route, profile: VehicleProfile, rng: Rng, *, leg: int = 0,
                 offset: float = 0.0, fuel_l: float | None = None, odometer_km: float = 0.0,
                 parked_for: float = 0.0) -> None:
        self.route = route
        self.profile = profile
        self.rng = rng
        self.leg = leg
        self.offset = offset
        self.lap = 0
        self.v = 0.0
        self.fuel_l = profile.tank_l if fuel_l is None else fuel_l
        self.odometer_m = odometer_km * 1000.0
        self.engine = True
        self.mode: Mode = "drive"
        self.dwell_kind: DwellKind | None = None
        self.dwell_left = 0.0
        self._decisions: dict[int, DwellKind | None] = {}
        self._horizon = profile.max_speed ** 2 / (2 * profile.brake) + 60.0
        if parked_for > 0:
            self.mode, self.dwell_kind, self.dwell_left, self.engine = "dwell", "start", parked_for, False

    # -- commands ----------------------------------------------------------------------

    def engine_stop(self) -> str:
        """Brake to a halt (if moving) and switch the engine off until :meth:`engine_start`."""
        if self.mode == "hold":
            return "engine already stopped" if not self.engine else "already stopping"
        self.mode, self.dwell_kind, self.dwell_left = "hold", None, 0.0
        if self.v <= STOP_SPEED:
            self.v, self.engine = 0.0, False
            return "engine stopped"
        return f"braking from {self.v / KMH:.0f} km/h, then engine off"

    def engine_start(self) -> str:
        if self.mode != "hold" and self.engine:
            return "engine already running"
        self.mode, self.engine, self.dwell_kind, self.dwell_left = "drive", True, None, 0.0
        return "engine started"

    # -- state -------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        if not self.engine:
            return "parked"
        return "moving" if self.v > STOP_SPEED else "idle"

    def fix(self) -> Fix:
        lat, lng = self.route.position(self.leg, self.offset)
        engine = self.engine
        status: Status = ("moving" if self.v > STOP_SPEED else "idle") if engine else "parked"
        return Fix(lat, lng, self.v / KMH, self.route.bearings[self.leg], 100.0 * self.fuel_l / self.profile.tank_l,
                   self.odometer_m / 1000.0, engine, status, self.leg, self.dwell_kind == "refuel")

    # -- time --------------------------------------------------------------------------

    def advance(self, dt: float) -> None:
        """Simulate ``dt`` seconds (in sub-steps of at most MAX_STEP)."""
        if dt < 0 or not math.isfinite(dt):
            raise ValueError(f"dt must be a finite non-negative number of seconds, not {dt!r}")
        steps = max(1, math.ceil(dt / MAX_STEP - 1e-9))
        h = dt / steps
        for _ in range(steps):
            if self.mode == "dwell":
                self._dwell(h)
            else:
                self._drive(h)

    def _burn(self, metres: float, h: float) -> None:
        p = self.profile
        per_km = p.l_per_100km / 100.0 * (1.0 + max(0.0, self.v / KMH - 90.0) / 120.0)
        used = metres / 1000.0 * per_km + (p.idle_l_per_h / 3600.0 * h if self.engine else 0.0)
        self.fuel_l = max(0.0, self.fuel_l - used)

    def _dwell(self, h: float) -> None:
        self._burn(0.0, h)
        self.dwell_left -= h
        if self.dwell_kind == "refuel":
            self.fuel_l = min(self.profile.tank_l, self.fuel_l + REFUEL_L_PER_S * h)
            if self.fuel_l < self.profile.tank_l:
                return
        if self.dwell_left <= 0:
            self.mode, self.dwell_kind, self.dwell_left, self.engine = "drive", None, 0.0, True

    def _waypoint_number(self, ahead: int) -> tuple[int, int]:
        """(absolute number, index) of the waypoint ``ahead`` legs after the current leg's end."""
        n = self.route.legs
        absolute = self.lap * n + self.leg + 1 + ahead
        return absolute, absolute % n

    def _decide(self, absolute: int, index: int) -> DwellKind | None:
        """Whether the vehicle stops at a waypoint; decided once, when it comes into view."""
        if absolute not in self._decisions:
            choice: DwellKind | None = None
            if self.fuel_l < REFUEL_BELOW * self.profile.tank_l:
                choice = "refuel"
            elif self.route.stops[index]:
                r = self.rng.random()
                choice = "light" if r < 0.5 else "delivery" if r < 0.6 else None
            self._decisions[absolute] = choice
        return self._decisions[absolute]

    def _drive(self, h: float) -> None:
        route, p = self.route, self.profile
        v = self.v
        target = min(route.limits[self.leg], p.max_speed)
        stop_at: float | None = None
        stop_wp = -1
        d = route.lengths[self.leg] - self.offset
        ahead = 0
        bh = p.brake * h
        while True:
            absolute, index = self._waypoint_number(ahead)
            kind = self._decide(absolute, index)
            vc = 0.0 if kind is not None else route.corner_speeds[index]
            if kind is not None:
                stop_at, stop_wp = d, absolute
            # The fastest end-of-step speed from which the vehicle can still meet vc at the
            # waypoint braking comfortably: v1² <= vc² + 2b(d - (v + v1)h/2).
            disc = bh * bh + 4.0 * (vc * vc + 2.0 * p.brake * d - bh * v)
            target = min(target, (-bh + math.sqrt(disc)) / 2.0 if disc > 0 else 0.0)
            if d > self._horizon or kind is not None or ahead >= 12:
                break
            ahead += 1
            d += route.lengths[(self.leg + ahead) % route.legs]
        if self.mode == "hold":
            target = 0.0
        a = max(-HARD_BRAKE, min(p.accel, (target - v) / h))
        if self.mode == "hold":
            a = max(a, -p.brake)
        v1 = v + a * h
        if v1 <= 0.0:
            ds = v * v / (-2.0 * a) if a < 0 else 0.0
            v1 = 0.0
        else:
            ds = (v + v1) / 2.0 * h
        arrived = False
        if stop_at is not None and (ds >= stop_at - 0.01 or (stop_at - ds <= 0.5 and v <= 0.9 * HARD_BRAKE * h)):
            ds, v1, arrived = max(0.0, stop_at), 0.0, True
        self.v = v1
        self._move(ds)
        self._burn(ds, h)
        if self.mode == "hold":
            if self.v <= STOP_SPEED:
                self.v, self.engine = 0.0, False
            return
        if arrived:
            kind = self._decisions[stop_wp]
            self._decisions[stop_wp] = None  # served: no longer a stop on this lap
            self._arrive(kind)
        passed = self.lap * route.legs + self.leg + 1
        if len(self._decisions) > 16:
            for stale in [k for k in self._decisions if k < passed]:
                del self._decisions[stale]

    def _arrive(self, kind: DwellKind | None) -> None:
        self.mode, self.dwell_kind = "dwell", kind
        if kind == "light":
            self.dwell_left = self.rng.uniform(5.0, 45.0)
        elif kind == "delivery":
            self.dwell_left, self.engine = self.rng.uniform(60.0, 300.0), False
        else:  # refuel: until the tank is full, then paying
            self.dwell_left, self.engine = self.rng.uniform(20.0, 60.0), False

    def _move(self, ds: float) -> None:
        if ds <= 0:
            return
        route = self.route
        self.odometer_m += ds
        self.offset += ds
        # Stay on a leg while exactly at its end: the heading is the one the vehicle arrived with.
        while self.offset > route.lengths[self.leg] + 1e-9:
            self.offset -= route.lengths[self.leg]
            self.leg += 1
            if self.leg == route.legs:
                self.leg, self.lap = 0, self.lap + 1
