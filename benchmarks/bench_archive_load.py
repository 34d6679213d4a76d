"""What archiving bench traffic costs: one local stack (mosquitto + bridge + influxd), the same
`ecokit bench` run twice, side by side:

- default: the archive skips bench topics (`rules.archive.exclude: [bench/#, ...]`); the bridge,
  subscribed to `#`, still receives each bench message and drops it on its topic;
- archived: `rules.archive.exclude: []` and `--pipeline` (every message becomes an archive point).

    python benchmarks/bench_archive_load.py [--rate 5000] [--seconds 8] [--qos 0]

Prints, per mode: CPU of the broker, the bridge and influxd (% of one core over the run, from
/proc), bench p99 latency, and (archived) what the archive stored.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, stack

from ecokit.runtime.local import LocalRuntime
from ecokit.stack import Stack

SERVICES = ("broker", "bridge", "influxdb")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, USER_HZ = 100


def run(st: Stack, args: argparse.Namespace, *extra: str) -> tuple[dict[str, Any], dict[str, float]]:
    runtime = LocalRuntime(st.paths, st.readiness())
    pids = {name: runtime.running_pid(name) for name in SERVICES}
    before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
    cmd = [sys.executable, "-m", "ecokit", "bench", "steady", "-c", str(st.project_dir / "ecokit.yaml"),
           "--duration", f"{args.seconds}s", "--rate", str(args.rate), "--publishers", "4", "--subscribers", "1",
           "--qos", str(args.qos), "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 99):
        raise SystemExit(f"bench failed ({done.returncode}): {done.stderr[-2000:]}")
    doc = json.loads(done.stdout)
    # Over the run and the pipeline's drain: the time the bench took end to end.
    span = args.seconds + 1.0
    cpu = {name: (cpu_seconds(pid) - before[name]) / span * 100 for name, pid in pids.items() if pid}
    return doc, cpu


def report(mode: str, doc: dict[str, Any], cpu: dict[str, float]) -> None:
    total = doc["total"]
    line = (f"{mode:<9} sent {total['sent']:>7,}  p99 {total['latency_ms'].get('p99_ms', 0):6.2f} ms  "
            + "  ".join(f"{name} {cpu[name]:5.1f}%" for name in SERVICES if name in cpu))
    pipeline = doc.get("pipeline", {})
    if pipeline.get("measured"):
        line += (f"  archive stored {pipeline['stored']:,}/{pipeline['sent']:,}, "
                 f"receive lag {pipeline['receive_lag_ms']} ms")
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--qos", type=int, default=0)
    args = parser.parse_args()
    print(machine())
    print(f"ecokit bench steady: {args.rate} msg/s, QoS {args.qos}, {args.seconds} s, 4 publishers, 1 subscriber; "
          "CPU in % of one core")
    with stack({"processor": {"enabled": False}}) as st:
        doc, cpu = run(st, args)
        report("default", doc, cpu)
        config_file = st.project_dir / "ecokit.yaml"
        document = yaml.safe_load(config_file.read_text())
        document.setdefault("rules", {})["archive"] = {"exclude": []}
        config_file.write_text(yaml.safe_dump(document))
        archived = Stack.load(config_file, env={})
        archived.restart(["bridge"])
        doc, cpu = run(archived, args, "--pipeline")
        report("archived", doc, cpu)


if __name__ == "__main__":
    main()
