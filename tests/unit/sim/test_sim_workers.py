"""Merging what the simulator's worker processes report (pure)."""

from __future__ import annotations

from pathlib import Path

from ecokit.sim.base import SimSettings
from ecokit.sim.stats import Snapshot, Summary
from ecokit.sim.workers import merge_snapshots, merge_summaries, worker_queue


def summary(vehicles: int, produced: int, p99: float, seconds: float, errors: list[str]) -> Summary:
    return Summary(vehicles=vehicles, connected_at_end=vehicles, ever_connected=vehicles, produced=produced,
                   sent=produced, acked=produced, flushed=0, queued_left=0, dropped=0, reconnects=1,
                   disconnects=0, connect_failures=0, errors=len(errors), commands=0, publish_seconds=seconds,
                   drift_ms={"p50": 1.0, "p99": p99, "max": p99 * 2},
                   per_vehicle={f"v{vehicles}-{i}": 1 for i in range(vehicles)}, last_errors=errors)


def test_counts_add_up_and_drift_is_the_worst_workers() -> None:
    merged = merge_summaries([summary(3, 30, 12.0, 10.0, ["a"]), summary(2, 20, 40.0, 10.5, [])])
    assert (merged.vehicles, merged.produced, merged.acked, merged.reconnects, merged.errors) == (5, 50, 50, 2, 1)
    assert merged.drift_ms == {"max": 80.0, "p50": 1.0, "p99": 40.0}
    assert merged.publish_seconds == 10.5
    assert len(merged.per_vehicle) == 5
    assert merged.last_errors == ["a"]


def test_status_lines_add_up() -> None:
    def snap(connected: int, remaining: float | None) -> Snapshot:
        return Snapshot(elapsed=5.0, connected=connected, target=10, produced=100, sent=90, acked=80, queued=0,
                        dropped=0, reconnects=0, errors=0, commands=0, phase="publishing", remaining=remaining)

    merged = merge_snapshots([snap(10, 3.0), snap(9, 4.0)])
    assert (merged.connected, merged.target, merged.produced, merged.remaining) == (19, 20, 200, 4.0)


def test_each_worker_has_its_own_offline_queue() -> None:
    settings = SimSettings(queue_path=Path("/x/sim/queue.sqlite"))
    assert worker_queue(settings, 1).queue_path == Path("/x/sim/queue.w1.sqlite")
