"""What asking "where is the broker?" costs with a large registry: commands that only need an
endpoint (bench and simulate targets, shadow, replay) against commands that render the stack.

Each figure is one fresh process (as a command is): load the stack, then do one thing.
The project has ``--devices`` registered devices, its secrets already generated, and a
state file that says the stack runs locally (nothing is started).

    python benchmarks/endpoints.py --devices 10000
    python benchmarks/endpoints.py --devices 10000 --compare /path/to/an/older/checkout

``--compare`` runs the same measurements with another checkout's ecokit (PYTHONPATH) in the
same run, and prints the ratio: absolute times move with the machine's load, ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# One measurement in a fresh interpreter; prints {"seconds": ...}. Written against the API both
# older and newer checkouts offer (the stack connection moved from ecokit.sim.targets).
PROBE = r'''
import contextlib, io, json, sys, time
from pathlib import Path
config, what = Path(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
from ecokit.stack import Stack
stack = Stack.load(config, env={})
if what == "broker_endpoints":
    stack.broker_endpoints()
elif what == "influx_endpoint":
    stack.influx_endpoint("reader")
elif what == "admin_connection":
    try:
        from ecokit.clients import stack_connection
    except ImportError:
        from ecokit.sim.targets import stack_connection
    stack_connection(stack, as_admin=True)
elif what == "devices_list":
    from ecokit.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["devices", "list", "--json", "-c", str(config)]) == 0
elif what.startswith("render"):
    stack.render("local")
print(json.dumps({"seconds": time.perf_counter() - started}))
'''

MEASURES = {
    "broker_endpoints": "Stack.broker_endpoints() (bench/simulate/shadow/replay targets)",
    "influx_endpoint": "Stack.influx_endpoint('reader') (ecokit query, replay)",
    "admin_connection": "stack_connection(as_admin=True) (ecokit command send, bench)",
    "devices_list": "ecokit devices list --json",
    "render": "Stack.render('local'), first time (up, render: every password hashed)",
    "render_again": "Stack.render('local') again (hashes cached, where they are)",
}
HASH_CACHES = "password-hashes.json"


def make_project(folder: Path, devices: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from ecokit.stack import Stack
    from ecokit.testing import write_project

    config = write_project(folder, devices=devices)
    stack = Stack.load(config, env={})
    stack.secret_values()  # generated once, like any stack that ran before
    stack.paths.root.mkdir(parents=True, exist_ok=True)
    stack.paths.state_file.write_text(json.dumps({"runtime": "local", "services": {}}))
    return config


def measure(config: Path, what: str, pythonpath: Path, repeat: int) -> float:
    """Median seconds of ``repeat`` fresh processes."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    times = []
    for _ in range(repeat):
        if what == "render":  # cold: no hash cached from an earlier render
            for cache in config.parent.rglob(HASH_CACHES):
                cache.unlink()
        # cwd: the project, so `python -c` finds ecokit on PYTHONPATH, not in the current folder.
        done = subprocess.run([sys.executable, "-c", PROBE, str(config), what], env=env, cwd=config.parent,
                              capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"{what} with {pythonpath} failed:\n{done.stderr[-2000:]}")
        times.append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="processes per figure (the median is shown)")
    parser.add_argument("--compare", type=Path, help="another checkout of ecokit to measure side by side")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{args.devices:,} devices, median of {args.repeat} fresh processes each; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    trees = [("this checkout", ROOT)] + ([("compare", args.compare.resolve())] if args.compare else [])
    with tempfile.TemporaryDirectory(prefix="ecokit-endpoints-") as tmp:
        config = make_project(Path(tmp) / "project", args.devices)
        header = f"{'what':<72}" + "".join(f"{name:>16}" for name, _ in trees)
        print(header + (f"{'compare/this':>14}" if args.compare else ""))
        results = {}
        for what, label in MEASURES.items():
            row = [measure(config, what, tree, args.repeat) for _, tree in trees]
            results[what] = row
            ratio = f"{row[1] / row[0]:>13.1f}x" if len(row) == 2 and row[0] > 0 else ""
            print(f"{label:<72}" + "".join(f"{s * 1000:>14.0f}ms" for s in row) + ratio)
    load = os.getloadavg()
    print(f"load average after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(json.dumps({"devices": args.devices, "seconds": results, "trees": [str(t) for _, t in trees]}))


if __name__ == "__main__":
    main()
