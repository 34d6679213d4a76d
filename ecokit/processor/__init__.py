"""The fleet processor: status (derived speed, last seen, online/offline) to fleet/{id}/status,
geofence transitions to fleet/{id}/events and alerts to fleet/{id}/alerts (docs/geofences.md).

Run as ``python -m ecokit.processor <processor.json>`` (the stack renders the file).
"""

from ecokit.processor.alerts import AlertEngine, AlertUpdate
from ecokit.processor.core import Outputs, ProcessorCore
from ecokit.processor.state import FleetState, StatusUpdate, haversine_km

__all__ = ["AlertEngine", "AlertUpdate", "FleetState", "Outputs", "ProcessorCore", "StatusUpdate", "haversine_km"]
