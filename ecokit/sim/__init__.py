"""The fleet simulator (docs/simulator.md).

Pure parts (no I/O): ``routes``, ``vehicle``, ``fleet``, ``commands``, ``shadow`` (a
vehicle's device shadow); where a fleet drives is ``ecokit.config.regions``.
I/O: ``offline`` (SQLite queue), ``runner`` (:class:`Simulator`), ``control`` (``ecokit
command send``). The MQTT plumbing (paho on asyncio, targets, TLS) is ``ecokit.mqtt``; a
running stack's broker and devices, ``ecokit.clients``.
"""

from ecokit.config.regions import REGIONS, Region, parse_region
from ecokit.sim.base import SimSettings
from ecokit.sim.commands import Command, CommandError, new_command
from ecokit.sim.control import Ack, send_command
from ecokit.sim.fleet import FleetSpec, SimVehicle, build_fleet, build_vehicle
from ecokit.sim.offline import OfflineQueue
from ecokit.sim.routes import Route, generate_route
from ecokit.sim.runner import Simulator
from ecokit.sim.shadow import VehicleShadow
from ecokit.sim.stats import Snapshot, Summary
from ecokit.sim.vehicle import PROFILES, Fix, VehicleModel, VehicleProfile

__all__ = [
    "PROFILES",
    "REGIONS",
    "Ack",
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
    "VehicleModel",
    "VehicleProfile",
    "VehicleShadow",
    "build_fleet",
    "build_vehicle",
    "generate_route",
    "new_command",
    "parse_region",
    "send_command",
]
