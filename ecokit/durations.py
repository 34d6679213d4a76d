"""Durations as people type them: ``500ms``, ``10s``, ``5m``, ``1h``, ``2d``, ``1w``; a bare
number is seconds. Each caller says which units it accepts and words its own error."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
CLOCK_UNITS = ("ms", "s", "m", "h")


def duration_seconds(text: str, *, units: tuple[str, ...] = CLOCK_UNITS, bare: bool = True) -> float | None:
    """Seconds in ``text``, or None when it is not a duration in ``units`` (``bare``: a number
    without a unit counts as seconds)."""
    match = _DURATION.match(text)
    if not match:
        return None
    unit = match.group(2)
    if not unit:
        return float(match.group(1)) if bare else None
    if unit not in units:
        return None
    return float(match.group(1)) * UNIT_SECONDS[unit]
