"""``ecokit simulate --workers N``: one fleet split over N processes.

One process holds a few thousand vehicles before its single event loop (and the GIL) makes
fixes late (benchmarks/README.md: 5,000 at 1 msg/s use ~45 % of a core). With N workers, vehicle
i goes to worker i mod N; each worker is a forked copy of this process running its own
:class:`~ecokit.sim.runner.Simulator` over its share (own event loop, own offline-queue file
``<queue>.wK``), and reports its status every half second and its summary at the end over a
pipe. The coordinator merges them: counts add up, the connection goal is the sum, and each
drift percentile is the worst worker's (an upper bound of the fleet's). Ctrl-C (SIGINT/SIGTERM
to the coordinator) asks every worker to stop; each drains as a single simulator would.

Forking (not spawning) keeps the credentials function of the connection (a closure over the
stack's secrets) without pickling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from dataclasses import fields, replace
from multiprocessing.connection import Connection, wait
from typing import Any

from ecokit.errors import EcokitError, UsageError
from ecokit.mqtt.target import BrokerTarget, ClientAuth
from ecokit.sim.base import SimSettings
from ecokit.sim.fleet import SimVehicle
from ecokit.sim.runner import Simulator
from ecokit.sim.stats import Snapshot, Summary

_ADDED = ("vehicles", "connected_at_end", "ever_connected", "produced", "sent", "acked", "flushed", "queued_left",
          "dropped", "reconnects", "disconnects", "connect_failures", "errors", "commands", "shadow_reports",
          "shadow_deltas", "shadow_rejected")


def worker_queue(settings: SimSettings, index: int) -> SimSettings:
    """The worker's own offline queue file (SQLite does not like writers from many processes)."""
    path = settings.queue_path
    return replace(settings, queue_path=path.with_name(f"{path.stem}.w{index}{path.suffix}"))


def merge_summaries(parts: list[Summary]) -> Summary:
    """One summary for the fleet: sums, the longest publishing time, the worst drift of any worker."""
    if not parts:
        raise EcokitError("no simulator worker reported a summary")
    merged: dict[str, Any] = {f.name: getattr(parts[0], f.name) for f in fields(Summary)}
    for name in _ADDED:
        merged[name] = sum(getattr(p, name) for p in parts)
    merged["publish_seconds"] = max(p.publish_seconds for p in parts)
    merged["shadow_sync_seconds"] = max(p.shadow_sync_seconds for p in parts)
    merged["shadow"] = any(p.shadow for p in parts)
    keys = {k for p in parts for k in p.drift_ms}
    merged["drift_ms"] = {k: max(p.drift_ms.get(k, 0.0) for p in parts) for k in sorted(keys)}
    merged["per_vehicle"] = {k: v for p in parts for k, v in p.per_vehicle.items()}
    merged["last_errors"] = [e for p in parts for e in p.last_errors][-20:]
    return Summary(**merged)


def merge_snapshots(parts: list[Snapshot]) -> Snapshot:
    counts = ("connected", "target", "produced", "sent", "acked", "queued", "dropped", "reconnects", "errors",
              "commands", "shadow_reports", "shadow_deltas")
    first = parts[0]
    remaining = [p.remaining for p in parts if p.remaining is not None]
    return replace(first, elapsed=max(p.elapsed for p in parts), remaining=max(remaining) if remaining else None,
                   phase=first.phase if len({p.phase for p in parts}) == 1 else "mixed",
                   **{name: sum(getattr(p, name) for p in parts) for name in counts})


def _worker(conn: Connection, fleet: list[SimVehicle], target: BrokerTarget, auth: Callable[[str], ClientAuth],
            settings: SimSettings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when to stop
    last = [0.0]

    def progress(snap: Snapshot) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0] = now
            with contextlib.suppress(OSError):
                conn.send(("status", snap))

    go = asyncio.Event()

    async def start_gate() -> None:
        with contextlib.suppress(OSError):
            conn.send(("connected",))
        await go.wait()

    sim = Simulator(fleet, target, auth, settings, progress=progress, start_gate=start_gate)

    async def main() -> Summary:
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), lambda: _on_command(conn, sim, go))

        def terminate(*_: object) -> None:
            sim.request_stop()
            go.set()

        loop.add_signal_handler(signal.SIGTERM, terminate)
        return await sim.run()

    try:
        summary = asyncio.run(main())
        conn.send(("done", summary, sim.discarded))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{exc.__class__.__name__}: {exc}"))
    finally:
        conn.close()


def _on_command(conn: Connection, sim: Simulator, go: asyncio.Event) -> None:
    try:
        message = conn.recv()
    except (EOFError, OSError):
        message = ("stop",)  # the coordinator is gone
    if message[0] == "stop":
        sim.request_stop()
    go.set()  # "go", or a stop: either way no longer wait for the other workers


class WorkerFleet:
    """The fleet over ``workers`` processes; :meth:`run` returns the merged summary."""

    def __init__(self, fleet: list[SimVehicle], target: BrokerTarget, auth: Callable[[str], ClientAuth],
                 settings: SimSettings, workers: int, *, progress: Callable[[Snapshot], None] | None = None) -> None:
        if workers < 1:
            raise UsageError("--workers must be at least 1")
        if workers > len(fleet):
            raise UsageError(f"--workers {workers} is more than the {len(fleet)} vehicles")
        self.shares = [fleet[i::workers] for i in range(workers)]
        self.target, self.auth, self.settings = target, auth, settings
        self.progress = progress
        self.discarded = 0
        self.pids: list[int] = []  # the worker processes, once started (for tools that watch them)
        self._stop = False

    def request_stop(self) -> None:
        self._stop = True

    def run(self) -> Summary:
        ctx = mp.get_context("fork")
        procs, conns = [], []
        for index, share in enumerate(self.shares):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(theirs, share, self.target, self.auth,
                                                     worker_queue(self.settings, index)),
                               name=f"ecokit-sim-{index}", daemon=True)
            proc.start()
            if proc.pid is not None:
                self.pids.append(proc.pid)
            theirs.close()
            procs.append(proc)
            conns.append(ours)
        statuses: dict[int, Snapshot] = {}
        summaries: dict[int, Summary] = {}
        errors: list[str] = []
        stop_sent = False
        # Every worker publishes once all have connected their share (or failed): see start_gate.
        connected: set[int] = set()
        go_sent = False
        try:
            while len(summaries) + len(errors) < len(procs):
                if self._stop and not stop_sent:
                    stop_sent = True
                    for c in conns:
                        with contextlib.suppress(OSError):
                            c.send(("stop",))
                live = [c for i, c in enumerate(conns) if i not in summaries]
                for ready in wait(live, timeout=0.25):
                    index = next(i for i, c in enumerate(conns) if c is ready)
                    try:
                        message = conns[index].recv()
                    except (EOFError, OSError):
                        if index not in summaries:
                            errors.append(f"simulator worker {index} exited (code {procs[index].exitcode})")
                            summaries[index] = None  # type: ignore[assignment]
                        continue
                    if message[0] == "connected":
                        connected.add(index)
                    elif message[0] == "status":
                        statuses[index] = message[1]
                        if self.progress is not None and len(statuses) == len(procs):
                            self.progress(merge_snapshots(list(statuses.values())))
                    elif message[0] == "done":
                        summaries[index] = message[1]
                        self.discarded += message[2]
                    elif message[0] == "error":
                        errors.append(f"simulator worker {index}: {message[1]}")
                        summaries[index] = None  # type: ignore[assignment]
                if not go_sent and len(connected | set(summaries)) == len(procs):
                    go_sent = True
                    for i in connected - set(summaries):
                        with contextlib.suppress(OSError):
                            conns[i].send(("go",))
        finally:
            for c in conns:
                with contextlib.suppress(OSError):
                    c.send(("stop",))
            for proc in procs:
                proc.join(timeout=30)
                if proc.is_alive() and proc.pid is not None:
                    os.kill(proc.pid, signal.SIGTERM)  # our own child, by pid
                    proc.join(timeout=10)
            for c in conns:
                c.close()
        reported = [s for s in summaries.values() if s is not None]
        if errors and not reported:
            raise EcokitError(errors[0])
        merged = merge_summaries(reported)
        if errors:
            merged = replace(merged, errors=merged.errors + len(errors), last_errors=[*merged.last_errors, *errors])
        return merged
