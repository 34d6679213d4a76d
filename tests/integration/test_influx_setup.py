"""setup_v1 and the v1 client against a real influxd 1.x: retention changes (under a day,
back to forever) and queries with db in the URL and the statement in a form body."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecokit.store.influx import InfluxEndpoint, InfluxV1, setup_v1
from ecokit.testing import free_port


@pytest.fixture
def influxd(tmp_path: Path, server_binaries: None) -> Iterator[str]:
    port, rpc = free_port(), free_port()
    env = {**os.environ, "INFLUXDB_META_DIR": str(tmp_path / "meta"), "INFLUXDB_DATA_DIR": str(tmp_path / "data"),
           "INFLUXDB_DATA_WAL_DIR": str(tmp_path / "wal"), "INFLUXDB_HTTP_BIND_ADDRESS": f"127.0.0.1:{port}",
           "INFLUXDB_BIND_ADDRESS": f"127.0.0.1:{rpc}", "INFLUXDB_HTTP_LOG_ENABLED": "false",
           "INFLUXDB_HTTP_AUTH_ENABLED": "true", "INFLUXDB_REPORTING_DISABLED": "true"}
    binary = shutil.which("influxd") or "/usr/bin/influxd"
    with (tmp_path / "influxd.log").open("wb") as log:
        proc = subprocess.Popen([binary, "run", "-config", "/dev/null"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while InfluxV1(InfluxEndpoint(url, "x")).ping() is None:
            assert proc.poll() is None, (tmp_path / "influxd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "influxd did not answer /ping"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def retention_of(admin: InfluxEndpoint) -> tuple[str, str]:
    with InfluxV1(admin) as client:
        (rp,) = client.rows('SHOW RETENTION POLICIES ON "fleet"', use_db=False)
    return rp["duration"], rp["shardGroupDuration"]


def test_retention_changes_apply_and_queries_carry_db_in_the_url(influxd: str) -> None:
    admin = InfluxEndpoint(influxd, "fleet", username="admin", password="admin-pw-1")
    users = {"w": ("writer-pw-1", "WRITE"), "r": ("reader-pw-1", "READ")}
    for retention, expected in [("1h", ("1h0m0s", "1h0m0s")), ("30d", ("720h0m0s", "24h0m0s")),
                                ("0", ("0s", "168h0m0s")), ("1h", ("1h0m0s", "1h0m0s"))]:
        setup_v1(admin, database="fleet", retention=retention, users=users)
        assert retention_of(admin) == expected, retention
    now = int(time.time() * 1000)
    with InfluxV1(InfluxEndpoint(influxd, "fleet", username="w", password="writer-pw-1")) as writer:
        writer.write([f"m,t=a v=1 {now}", f"m,t=b v=2 {now + 1}"], precision="ms")
    with InfluxV1(InfluxEndpoint(influxd, "fleet", username="r", password="reader-pw-1")) as reader:
        rows = list(reader.rows("SELECT * FROM m WHERE t = $t", params={"t": "b"}))
    assert [(r["t"], r["v"]) for r in rows] == [("b", 2)]
