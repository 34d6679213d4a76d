"""A fleet simulator running beside a test or a benchmark: `ecokit simulate` in its own process
(as a user runs it), stopped by its pid at the end, its output kept in a log file."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def simulating(config: Path, vehicles: int, *, seed: int = 1, rate: str = "1s", region: str = "paris",
               duration: str = "60m", log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``ecokit simulate`` for the stack of ``config`` (its registered devices), until the block ends.

    The offline queue and the log (default ``simulate.log``) go next to ``config``.
    """
    folder = config.parent
    with (log or folder / "simulate.log").open("wb") as out:
        sim = subprocess.Popen(
            [sys.executable, "-m", "ecokit", "simulate", "-c", str(config), "--vehicles", str(vehicles),
             "--rate", rate, "--region", region, "--seed", str(seed), "--duration", duration, "--quiet",
             "--queue", str(folder / "simulate-queue.sqlite")],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=out)
        try:
            yield sim
        finally:
            sim.terminate()  # a clean end: the vehicles say goodbye (offline)
            try:
                sim.wait(60)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait(10)
