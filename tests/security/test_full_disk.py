"""A full disk (issue 10, "Also"): the bridge's spool on a 1 MiB filesystem. Points that
cannot be buffered are counted as dropped (reason disk_error) and acknowledged, the bridge
stays healthy and keeps its process (no crash loop), what it did buffer is written once
InfluxDB answers again, and `ecokit status` says the disk is full.

Needs root (mount -t tmpfs); skipped otherwise."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from security_support import healthz, metrics
from test_broker_restart import Publisher, stored_seqs

from ecokit.paths import StackPaths
from ecokit.stack import Stack
from ecokit.status import stack_status
from ecokit.testing import running_stack, wait_for, write_project


def dropped(stack: Stack, reason: str) -> float:
    return metrics(stack, "bridge").get(f'ecokit_bridge_dropped_points_by_reason_total{{reason="{reason}"}}', 0.0)


@pytest.fixture(scope="module")
def small_disk_stack(tmp_path_factory: pytest.TempPathFactory, server_binaries: None) -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    folder = tmp_path_factory.mktemp("fulldisk")
    # Only the telemetry rule: every point the bridge makes is one telemetry point of a
    # message sent here, so stored + dropped must equal sent exactly.
    project = write_project(folder, devices=["v1"], extra={
        "bridge": {"flush_ms": 50, "batch_size": 500},
        "rules": {"archive": {"enabled": False}, "status": {"enabled": False}},
    })
    spool = StackPaths(folder, "test").service_data("bridge") / "spool"
    spool.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(spool)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with running_stack(project) as stack:
            yield stack
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


def pid_of(stack: Stack, service: str) -> int:
    return int(json.loads(stack.paths.state_file.read_text())["services"][service]["pid"])


def spool_bytes(stack: Stack) -> int:
    return sum(p.stat().st_size for p in (stack.paths.service_data("bridge") / "spool").rglob("*.lp"))


def test_a_full_disk_drops_counted_points_and_the_bridge_carries_on(small_disk_stack: Stack) -> None:
    stack = small_disk_stack
    bridge_pid, influxd_pid = pid_of(stack, "bridge"), pid_of(stack, "influxdb")
    base_ts = int(time.time() * 1000) - 3_600_000
    publisher = Publisher(stack, "v1")
    try:
        # 1. InfluxDB answers: 8,000 points (about 2 MiB of line protocol) pass through the
        # 1 MiB spool, whose written segments make room for new ones.
        n1 = 8000
        publisher.run(0, n1, base_ts, 4000.0)
        publisher.wait_acked(n1)
        wait_for(f"{n1} points", lambda: stored_seqs(stack, "v1", base_ts, n1) >= n1, timeout=60)
        assert stored_seqs(stack, "v1", base_ts, n1) == n1
        assert dropped(stack, "disk_error") == 0

        # 2. InfluxDB stops answering: the spool fills the disk, then points are dropped
        # (counted), and still acknowledged, so the broker's queue does not grow instead.
        os.kill(influxd_pid, signal.SIGSTOP)
        try:
            n2 = 12_000
            publisher.run(n1, n2, base_ts, 4000.0)
            acked = publisher.wait_acked(n1 + n2)
            assert len(acked) == n1 + n2
            wait_for("dropped points", lambda: dropped(stack, "disk_error") > 0)
            assert healthz(stack, "bridge") == 200
            full = [n for n in stack_status(stack).notes if n.startswith("disk is full")]
            assert full, stack_status(stack).notes
            assert "bridge spool" in full[0]
        finally:
            os.kill(influxd_pid, signal.SIGCONT)

        # 3. InfluxDB is back: what was buffered is written, exactly the rest was dropped.
        def settled() -> bool:
            return metrics(stack, "bridge").get("ecokit_bridge_buffered_points", 1.0) == 0

        wait_for("the spool to drain", settled, timeout=120)
        lost = dropped(stack, "disk_error") + dropped(stack, "buffer_full")
        stored = stored_seqs(stack, "v1", base_ts, n1 + n2)
        assert stored + lost == n1 + n2, (stored, lost)
        assert 0 < lost < n2

        # 4. Room again: new points are stored in full (the drained segment was released).
        n3 = 2000
        publisher.run(n1 + n2, n3, base_ts, 4000.0)
        publisher.wait_acked(n1 + n2 + n3)
        wait_for("the last points", lambda: stored_seqs(stack, "v1", base_ts, n1 + n2 + n3) >= stored + n3,
                 timeout=60)
        assert stored_seqs(stack, "v1", base_ts, n1 + n2 + n3) == stored + n3
        assert dropped(stack, "disk_error") + dropped(stack, "buffer_full") == lost
    finally:
        publisher.close()
    assert pid_of(stack, "bridge") == bridge_pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(bridge_pid, 0)  # still the same process: no crash, no restart
    assert healthz(stack, "bridge") == 200
    assert spool_bytes(stack) < 1 << 20
