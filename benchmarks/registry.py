"""The control plane at fleet scale: `ecokit up`, `ecokit devices add` (one device, while the stack
is up) and `ecokit devices list --json` with 1,000 / 10,000 / 100,000 registered devices.

Each figure is the wall time of the real command in a fresh process (``python -m ecokit``), as a
user runs it, against a throwaway local stack (Mosquitto + influxd, bridge and processor off)
on free loopback ports. ``up`` is measured twice: the first start (every device's password
hashed for Mosquitto's password file) and ``up`` again while it runs (hashes cached). Goal
(issue 13): each < 2 s at 10,000 devices and < 15 s at 100,000, growing linearly at worst; the
last column is the time per 1,000 devices, which stays flat when growth is linear.

    python benchmarks/registry.py                          # 1,000 and 10,000 devices
    python benchmarks/registry.py --devices 1000,10000,100000
    python benchmarks/registry.py --profile                # cProfile of each command (top 12)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine  # noqa: E402
from ecokit.testing import write_project  # noqa: E402

QUIET = {"bridge": {"enabled": False}, "processor": {"enabled": False}}
COMMANDS = [
    ("up (first start)", ["up"]),
    ("up (again, while up)", ["up"]),
    ("devices add (1, while up)", ["devices", "add", "bench-extra-device"]),
    ("devices list --json", ["devices", "list", "--json"]),
]


def ecokit(args: list[str], config: Path, profile: bool) -> tuple[float, float]:
    """Wall seconds and CPU seconds of the command in a fresh process (it must succeed)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name in list(env):
        if name.startswith("ECOKIT_"):
            del env[name]
    prefix = [sys.executable, "-m"]
    if profile:
        prefix += ["cProfile", "-s", "cumtime", "-m"]
    cpu_before = children_cpu()
    started = time.perf_counter()
    done = subprocess.run([*prefix, "ecokit", *args, "-c", str(config)], env=env, cwd=config.parent,
                          capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - started
    cpu = children_cpu() - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"ecokit {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if profile:
        lines = done.stdout.splitlines()
        start = next((i for i, line in enumerate(lines) if "cumtime" in line), 0)
        print("\n".join(lines[start:start + 14]))
    return seconds, cpu


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(devices: int, profile: bool) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="ecokit-registry-") as tmp:
        config = write_project(Path(tmp) / "project", devices=devices, extra=QUIET)
        out: dict[str, tuple[float, float]] = {}
        try:
            for label, args in COMMANDS:
                out[label] = ecokit(args, config, profile)
                wall, cpu = out[label]
                print(f"  {devices:>7,} devices  {label:<28}{wall:>8.2f} s wall{cpu:>8.2f} s CPU", flush=True)
        finally:
            subprocess.run([sys.executable, "-m", "ecokit", "down", "--purge", "-c", str(config)],
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=300,
                           check=False)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1000,10000", help="registry sizes, comma-separated")
    parser.add_argument("--profile", action="store_true", help="print each command's cProfile top lines")
    args = parser.parse_args()
    print(machine())
    sizes = [int(n) for n in args.devices.split(",")]
    results = {n: measure(n, args.profile) for n in sizes}
    print("wall seconds (CPU seconds of the command's process in brackets: what a busy machine does not inflate)")
    print(f"{'command':<30}" + "".join(f"{n:>20,}" for n in sizes) + f"{'CPU s per 1,000 (largest)':>28}")
    for label, _ in COMMANDS:
        row = [results[n][label] for n in sizes]
        print(f"{label:<30}" + "".join(f"{w:>10.2f}s ({c:>5.2f}s)" for w, c in row)
              + f"{row[-1][1] / sizes[-1] * 1000:>28.3f}")
    goals = {10_000: 2.0, 100_000: 15.0}
    for n, limit in goals.items():
        if n in results:
            worst = max(w for w, _ in results[n].values())
            worst_cpu = max(c for _, c in results[n].values())
            print(f"{n:,} devices: slowest command {worst:.2f} s wall, {worst_cpu:.2f} s CPU (goal < {limit:g} s)")
    load = os.getloadavg()
    print(f"load average after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(json.dumps({"seconds": {str(n): r for n, r in results.items()}}))


if __name__ == "__main__":
    main()
