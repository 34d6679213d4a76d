"""The fleet simulator (docs/simulator.md).

Pure parts (no I/O): ``regions``, ``routes``, ``vehicle``, ``fleet``, ``commands``.
I/O: ``transport`` (paho clients on one asyncio loop), ``offline`` (SQLite queue),
``runner`` (:class:`Simulator`), ``targets`` (stack or broker URL), ``control``
(``ecokit command send``).
"""

from ecokit.sim.commands import Command, CommandError, new_command
from ecokit.sim.control import Ack, send_command
from ecokit.sim.fleet import FleetSpec, SimVehicle, build_fleet, build_vehicle
from ecokit.sim.offline import OfflineQueue
from ecokit.sim.regions import REGIONS, Region, parse_region
from ecokit.sim.routes import Route, generate_route
from ecokit.sim.runner import BrokerTarget, SimSettings, Simulator, Snapshot, Summary, VehicleAuth
from ecokit.sim.vehicle import PROFILES, Fix, VehicleModel, VehicleProfile

__all__ = [
    "PROFILES",
    "REGIONS",
    "Ack",
    "BrokerTarget",
    "Command",
    "CommandError",
    "Fix",
    "FleetSpec",
    "OfflineQueue",
    "Region",
    "Route",
    "SimSettings",
    "SimVehicle",
    "Simulator",
    "Snapshot",
    "Summary",
    "VehicleAuth",
    "VehicleModel",
    "VehicleProfile",
    "build_fleet",
    "build_vehicle",
    "generate_route",
    "new_command",
    "parse_region",
    "send_command",
]
