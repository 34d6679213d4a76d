"""Bytes on disk per million archived messages (issue 10: disk is a resource a fleet exhausts).

    python benchmarks/archive_disk.py [--messages 1000000] [--vehicles 5000]

A throwaway influxd 1.x (the one on PATH) set up as ecokit sets it up (`setup_v1`: the
database's 30 d default policy, the archive's own 24 h policy `ecokit_archive`). The
messages are the simulator's telemetry (the `docs/DEVELOPING.md` schema, about 200 bytes),
``--vehicles`` vehicles at 1 msg/s each; the default rules (`ecokit.rules.RuleEngine`, the
bridge's own code) turn each into its archive point (topic tag, the payload in base64, qos,
retain) and its telemetry point, which are written in batches of 5,000 as the bridge writes
them. Reported, per million messages, for the archive policy and for telemetry:

- ``written``: right after the writes (the WAL plus the first TSM snapshots), what a disk
  holds while messages arrive;
- ``compacted``: once influxd has snapshotted the cache and fully compacted the shard (its
  cold durations are lowered to seconds here; with the defaults this happens 10 minutes
  and 4 hours after the last write), what a day of archive settles to.

Bytes are allocated blocks (``st_blocks * 512``, what `du` counts), not file lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, telemetry

from ecokit.config.model import StackConfig
from ecokit.rules import Message, Point, RuleEngine
from ecokit.store.influx import InfluxEndpoint, InfluxV1, setup_v1
from ecokit.testing import free_port

DATABASE = "fleet"
ARCHIVE_POLICY = "ecokit_archive"
BATCH = 5000


def disk_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_blocks * 512
        except FileNotFoundError:
            continue
    return total


def policy_bytes(root: Path, policy: str) -> dict[str, int]:
    data, wal = root / "data" / DATABASE / policy, root / "wal" / DATABASE / policy
    return {"tsm": disk_bytes(data), "wal": disk_bytes(wal)}


def start_influxd(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port, rpc = free_port(), free_port()
    env = {**os.environ, "INFLUXDB_META_DIR": str(root / "meta"), "INFLUXDB_DATA_DIR": str(root / "data"),
           "INFLUXDB_DATA_WAL_DIR": str(root / "wal"), "INFLUXDB_HTTP_BIND_ADDRESS": f"127.0.0.1:{port}",
           "INFLUXDB_BIND_ADDRESS": f"127.0.0.1:{rpc}", "INFLUXDB_HTTP_LOG_ENABLED": "false",
           "INFLUXDB_HTTP_AUTH_ENABLED": "true", "INFLUXDB_REPORTING_DISABLED": "true",
           "INFLUXDB_DATA_QUERY_LOG_ENABLED": "false", "INFLUXDB_HTTP_MAX_BODY_SIZE": "25000000",
           # the same settings as templates/influxdb/influxdb.conf.j2 where they matter
           "INFLUXDB_DATA_CACHE_MAX_MEMORY_SIZE": "1073741824", "INFLUXDB_DATA_MAX_VALUES_PER_TAG": "100000",
           # settle within the run instead of after 10 min / 4 h
           "INFLUXDB_DATA_CACHE_SNAPSHOT_WRITE_COLD_DURATION": "5s",
           "INFLUXDB_DATA_COMPACT_FULL_WRITE_COLD_DURATION": "15s"}
    binary = shutil.which("influxd") or "/usr/bin/influxd"
    log = (root / "influxd.log").open("wb")
    proc = subprocess.Popen([binary, "run", "-config", "/dev/null"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while InfluxV1(InfluxEndpoint(url, DATABASE)).ping() is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((root / "influxd.log").read_text()[-2000:])
        time.sleep(0.1)
    return proc, url


def influx_version() -> str:
    out = subprocess.run([shutil.which("influxd") or "influxd", "version"], capture_output=True, text=True,
                         check=False)
    return out.stdout.strip()


def settle(root: Path, seconds: float) -> dict[str, dict[str, int]]:
    """Wait until the WAL is empty and the sizes stop changing (or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    last: Any = None
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        now = {p: policy_bytes(root, p) for p in (ARCHIVE_POLICY, "autogen")}
        if now != last:
            last, stable_since = now, time.monotonic()
        elif all(v["wal"] <= 4096 * 4 for v in now.values()) and time.monotonic() - stable_since > 20:
            break
        time.sleep(2)
    return last


def run(args: argparse.Namespace) -> dict[str, Any]:
    rules = StackConfig().rules
    engine = RuleEngine(rules)
    assert rules["archive"].retention == "24h"
    root = Path(tempfile.mkdtemp(prefix="ecokit-disk-"))
    proc, url = start_influxd(root)
    try:
        admin = InfluxEndpoint(url, DATABASE, username="admin", password="bench-admin-1")
        setup_v1(admin, database=DATABASE, retention="30d", users={"w": ("bench-writer-1", "WRITE")},
                 policies={ARCHIVE_POLICY: "24h"})
        archive_writer = InfluxV1(InfluxEndpoint(url, DATABASE, username="w", password="bench-writer-1",
                                                 retention_policy=ARCHIVE_POLICY))
        telemetry_writer = InfluxV1(InfluxEndpoint(url, DATABASE, username="w", password="bench-writer-1"))
        vehicles = [f"vehicle-{i:04d}" for i in range(args.vehicles)]
        t0 = (int(time.time()) - 3600) * 10**9
        step = 10**9 // args.vehicles  # 1 msg/s per vehicle, spread over the second
        payload_bytes = 0
        archive_lines: list[str] = []
        telemetry_lines: list[str] = []
        started = time.perf_counter()
        for i in range(args.messages):
            vehicle = vehicles[i % args.vehicles]
            received = t0 + i * step
            payload = telemetry(vehicle, i // args.vehicles, received // 10**6)
            payload_bytes += len(payload)
            for out in engine.evaluate(Message(f"fleet/{vehicle}/telemetry", payload, 1, False, received)):
                assert isinstance(out, Point), out
                (archive_lines if out.rule == "archive" else telemetry_lines).append(out.line)
            if len(archive_lines) >= BATCH:
                archive_writer.write(archive_lines)
                telemetry_writer.write(telemetry_lines)
                archive_lines, telemetry_lines = [], []
        if archive_lines:
            archive_writer.write(archive_lines)
            telemetry_writer.write(telemetry_lines)
        write_s = time.perf_counter() - started
        archive_writer.close()
        telemetry_writer.close()
        written = {p: policy_bytes(root, p) for p in (ARCHIVE_POLICY, "autogen")}
        with InfluxV1(admin) as reader:
            counted = {
                "archive": next(iter(reader.rows(f'SELECT count("qos") FROM "{ARCHIVE_POLICY}"."archive"')))["count"],
                "telemetry": next(iter(reader.rows("SELECT count(lat) FROM telemetry")))["count"],
            }
        compacted = settle(root, args.settle)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)

    def per_million(value: int) -> float:
        return round(value * 1_000_000 / args.messages / 2**20, 1)

    return {
        "messages": args.messages, "vehicles": args.vehicles,
        "mean_payload_bytes": round(payload_bytes / args.messages),
        "points_stored": counted, "write_seconds": round(write_s, 1),
        "archive_mib_per_million": {"written": per_million(sum(written[ARCHIVE_POLICY].values())),
                                    "written_wal": per_million(written[ARCHIVE_POLICY]["wal"]),
                                    "compacted": per_million(sum(compacted[ARCHIVE_POLICY].values()))},
        "telemetry_mib_per_million": {"written": per_million(sum(written["autogen"].values())),
                                      "compacted": per_million(sum(compacted["autogen"].values()))},
        "archive_gib_per_day_5000_vehicles": round(
            sum(compacted[ARCHIVE_POLICY].values()) / args.messages * 432_000_000 / 2**30, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--vehicles", type=int, default=5000)
    parser.add_argument("--settle", type=float, default=300, help="seconds to wait for compaction at most")
    args = parser.parse_args()
    print(machine(), f"| {influx_version()}", file=sys.stderr)
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
