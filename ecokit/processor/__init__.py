"""The fleet processor: derived speed, last_seen and online/offline, published to fleet/{id}/status.

Run as ``python -m ecokit.processor <processor.json>`` (the stack renders the file).
"""

from ecokit.processor.state import FleetState, StatusUpdate, haversine_km

__all__ = ["FleetState", "StatusUpdate", "haversine_km"]
