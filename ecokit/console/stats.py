"""The numbers behind ``GET /api/stats``: message rate, device → console latency over a
sliding window, and the bridge's own figures read from its /metrics.

``RateMeter`` and ``LatencyWindow`` are pure (the caller passes the clock); ``BridgeProbe``
does the HTTP.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families


class RateMeter:
    """Events per second over the last ``window`` whole seconds."""

    def __init__(self, window: int = 5) -> None:
        self.window = window
        self.buckets: deque[list[int]] = deque()  # [second, count]
        self.total = 0
        self.lock = threading.Lock()

    def add(self, n: int, now: float) -> None:
        sec = int(now)
        with self.lock:
            self.total += n
            if self.buckets and self.buckets[-1][0] == sec:
                self.buckets[-1][1] += n
            else:
                self.buckets.append([sec, n])
                while self.buckets and self.buckets[0][0] < sec - self.window:
                    self.buckets.popleft()

    def rate(self, now: float) -> float:
        sec = int(now)
        with self.lock:
            # Whole seconds only: the current one is still filling up.
            counted = sum(n for s, n in self.buckets if sec - self.window <= s < sec)
        return counted / self.window


class LatencyWindow:
    """Latency samples (ms) of the last ``window`` seconds: average and 95th percentile."""

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self.buckets: deque[tuple[int, list[float]]] = deque()
        self.lock = threading.Lock()

    def add(self, samples: Iterable[float], now: float) -> None:
        sec = int(now)
        with self.lock:
            if not self.buckets or self.buckets[-1][0] != sec:
                self.buckets.append((sec, []))
                while self.buckets and self.buckets[0][0] <= sec - self.window:
                    self.buckets.popleft()
            self.buckets[-1][1].extend(samples)

    def summary(self, now: float) -> dict[str, Any]:
        sec = int(now)
        with self.lock:
            values = [v for s, bucket in self.buckets if s > sec - self.window for v in bucket]
        if not values:
            return {"avg": None, "p95": None, "samples": 0}
        values.sort()
        p95 = values[min(len(values) - 1, max(0, math.ceil(0.95 * len(values)) - 1))]
        return {"avg": round(sum(values) / len(values), 2), "p95": round(p95, 2), "samples": len(values)}


def parse_bridge_metrics(text: str) -> dict[str, Any]:
    """The bridge's counters from its Prometheus text (names: ecokit/bridge/service.py)."""
    out: dict[str, Any] = {"received": 0.0, "written": 0.0, "buffered": 0.0, "dropped": 0.0,
                           "connected": None, "dead_letters": {}}
    names = {"ecokit_bridge_messages_received": "received", "ecokit_bridge_points_written": "written",
             "ecokit_bridge_buffered_points": "buffered", "ecokit_bridge_dropped_points": "dropped",
             "ecokit_bridge_mqtt_connected": "connected"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            base = sample.name.removesuffix("_total")
            if base == "ecokit_bridge_messages_rejected":
                reason = sample.labels.get("reason", "unknown")
                out["dead_letters"][reason] = out["dead_letters"].get(reason, 0) + int(sample.value)
            elif base in names:
                out[names[base]] = sample.value
    return out


class BridgeProbe:
    """Reads the bridge's /metrics (at most every ``interval`` seconds) and turns its
    counters into rates."""

    def __init__(self, url: str | None, *, interval: float = 2.0, timeout: float = 1.0) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.session = requests.Session()
        self.last: tuple[float, dict[str, Any]] | None = None
        self.summary: dict[str, Any] | None = None if url is None else {"up": False}
        self.lock = threading.Lock()
        self.checked = 0.0

    def refresh(self) -> dict[str, Any] | None:
        """The latest figures; fetches new ones when they are older than ``interval``."""
        if self.url is None:
            return None
        now = time.monotonic()
        with self.lock:
            if now - self.checked < self.interval:
                return self.summary
            self.checked = now
        try:
            resp = self.session.get(self.url, timeout=self.timeout)
            resp.raise_for_status()
            current = parse_bridge_metrics(resp.text)
        except (requests.RequestException, ValueError):
            with self.lock:
                self.last = None
                self.summary = {"up": False}
                return self.summary
        summary: dict[str, Any] = {
            "up": True, "connected": current["connected"] == 1.0 if current["connected"] is not None else None,
            "rate": None, "received_rate": None, "buffered": int(current["buffered"]),
            "dropped": int(current["dropped"]), "written": int(current["written"]),
            "dead_letters": current["dead_letters"],
        }
        with self.lock:
            if self.last is not None:
                then, before = self.last
                dt = now - then
                if dt > 0 and current["written"] >= before["written"]:
                    summary["rate"] = round((current["written"] - before["written"]) / dt, 1)
                    summary["received_rate"] = round((current["received"] - before["received"]) / dt, 1)
            self.last = (now, current)
            self.summary = summary
            return summary

    def close(self) -> None:
        self.session.close()
