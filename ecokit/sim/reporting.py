"""The Simulator's reporting: the status line every ``status_interval`` and the summary at the end."""

from __future__ import annotations

import asyncio
import time

from ecokit.sim.base import SimulatorBase
from ecokit.sim.stats import Snapshot, Summary


class ReportingMixin(SimulatorBase):
    """The status line (every ``status_interval``) and the summary at the end."""

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.settings.status_interval)
            if self.queue is not None and self.queue.total_queued:
                self.queue.commit()
            self.stats.acked = self._links.acked
            self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        st, q = self.stats, self.queue
        remaining = None
        if self._publish_end is not None and self._phase == "publishing":
            remaining = max(0.0, self._publish_end - self._loop.time())
        self.progress(Snapshot(
            elapsed=time.monotonic() - st.started, connected=st.connected, target=st.target, produced=st.produced,
            sent=st.sent, acked=st.acked, queued=q.size if q else 0, dropped=q.total_dropped if q else 0,
            reconnects=st.reconnects, errors=st.errors, commands=st.commands, phase=self._phase,
            remaining=remaining, shadow=self.settings.shadow, shadow_reports=st.shadow_reports,
            shadow_deltas=st.shadow_deltas))

    def _summary(self) -> Summary:
        st, q = self.stats, self.queue
        assert q is not None
        st.acked = self._links.acked
        connected = st.connected if self._connected_at_end is None else self._connected_at_end
        h = st.drift_us
        drift = {"p50": h.get_value_at_percentile(50) / 1000, "p99": h.get_value_at_percentile(99) / 1000,
                 "max": h.get_max_value() / 1000} if h.get_total_count() else {}
        started = st.publishing_since or time.monotonic()
        stopped = self._publish_stopped or time.monotonic()
        seconds = stopped - started
        return Summary(
            vehicles=len(self._devices), connected_at_end=connected, ever_connected=st.ever_connected,
            produced=st.produced, sent=st.sent, acked=st.acked, flushed=st.flushed, queued_left=q.size,
            dropped=q.total_dropped, reconnects=st.reconnects, disconnects=st.disconnects,
            connect_failures=st.connect_failures, errors=st.errors, commands=st.commands,
            publish_seconds=seconds, drift_ms=drift, per_vehicle={d.vehicle.id: d.vehicle.seq for d in self._devices},
            last_errors=list(st.last_errors), shadow=self.settings.shadow, shadow_reports=st.shadow_reports,
            shadow_deltas=st.shadow_deltas, shadow_rejected=st.shadow_rejected,
            shadow_sync_seconds=round(st.shadow_sync_seconds, 3))
