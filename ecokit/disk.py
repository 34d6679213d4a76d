"""Free disk space where the stack keeps its data: `ecokit status` and `ecokit doctor` warn
before a disk fills.

A full disk does not crash the pipeline (the bridge counts the points it cannot buffer as
dropped, reason ``disk_error``, and keeps acknowledging, docs/security.md), but from then
on points are lost: the warning comes while there is still room. One line per filesystem,
naming what of the stack lives on it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ecokit.paths import StackPaths

# "Nearly full": less than a tenth of the filesystem or less than 1 GiB is free.
LOW_FRACTION = 0.10
LOW_BYTES = 1 << 30
# "Full": writes are about to fail (InfluxDB's WAL, the bridge's spool, Mosquitto's database).
FULL_FRACTION = 0.01
FULL_BYTES = 64 << 20

Level = Literal["ok", "low", "full"]


@dataclass(frozen=True)
class DiskSpace:
    path: Path  # the first of ``uses``' folders on this filesystem
    uses: tuple[str, ...]  # what the stack keeps there, e.g. ("influxdb", "bridge spool")
    total: int
    free: int  # available to an unprivileged writer (statvfs f_bavail)

    @property
    def level(self) -> Level:
        return level(self.total, self.free)

    def describe(self) -> str:
        share = self.free / self.total if self.total else 0.0
        return (f"{human(self.free)} free of {human(self.total)} ({share:.0%}) on the filesystem of {self.path} "
                f"({', '.join(self.uses)})")

    def note(self) -> str | None:
        """The warning for `ecokit status`, None while there is room."""
        if self.level == "ok":
            return None
        what = "is full" if self.level == "full" else "is nearly full"
        return (f"disk {what}: {self.describe()}; once it is full the bridge drops points "
                "(ecokit_bridge_dropped_points_by_reason_total{reason=\"disk_error\"}) and InfluxDB refuses "
                "writes: free space or lower retention (docs/security.md, \"Disk\")")


def level(total: int, free: int) -> Level:
    if free < FULL_BYTES or (total and free < total * FULL_FRACTION):
        return "full"
    if free < LOW_BYTES or (total and free < total * LOW_FRACTION):
        return "low"
    return "ok"


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _existing(path: Path) -> Path:
    """The folder itself or its nearest existing parent (a stack not yet started)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_spaces(folders: Mapping[str, Path]) -> list[DiskSpace]:
    """One entry per filesystem the named folders are on (what -> folder)."""
    by_device: dict[int, tuple[Path, list[str]]] = {}
    for use, folder in folders.items():
        where = _existing(folder)
        try:
            device = os.stat(where).st_dev
        except OSError:
            continue
        entry = by_device.setdefault(device, (where, []))
        entry[1].append(use)
    out = []
    for where, uses in by_device.values():
        try:
            usage = shutil.disk_usage(where)
        except OSError:
            continue
        out.append(DiskSpace(where, tuple(uses), usage.total, usage.free))
    return out


def stack_folders(paths: StackPaths, target: str) -> dict[str, Path]:
    """What the stack writes and where, on this machine. The docker runtime keeps its data in
    the engine's volumes, which need not be on this machine: only the project's own folder
    (certificates, secrets, rendered configuration) is checked then."""
    if target != "local":
        return {"project state": paths.root}
    # the local runtime's volumes: <data>/<service>/<volume> (ecokit.render.PathMap.volume)
    return {"influxdb": paths.service_data("influxdb") / "data",
            "bridge spool": paths.service_data("bridge") / "spool",
            "broker persistence": paths.service_data("broker") / "data",
            "shadows": paths.service_data("shadow") / "data",
            "prometheus": paths.service_data("prometheus") / "data", "logs": paths.logs_dir}
