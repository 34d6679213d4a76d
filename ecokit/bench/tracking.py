"""Counting what arrived (pure, no I/O): sequence numbers per stream and latency histograms.

A *stream* is what one subscriber receives from one publisher (with a shared
subscription: what the group receives from one publisher). Publishers number their
messages 1, 2, 3, ...; :class:`SequenceTracker` tells new messages from duplicates and
late (reordered) ones, with memory proportional to the number of gaps, not to the
number of messages. Loss is what the publisher sent minus what the stream saw once.
"""

from __future__ import annotations

import bisect
from typing import Any

from hdrh.histogram import HdrHistogram

# What SequenceTracker.add says about an arrival.
DUPLICATE = 0  # seen before (or not a valid sequence number)
NEW = 1  # first arrival, in order
LATE = 2  # first arrival, after a higher number of the same stream (reordered)

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
DIGITS = 3


class SequenceTracker:
    """Which sequence numbers of one stream arrived, as the next expected one plus gaps."""

    __slots__ = ("_ends", "_starts", "duplicates", "invalid", "next", "reordered", "unique")

    def __init__(self) -> None:
        self.next = 1  # every number below it arrived, except those in the gaps
        self._starts: list[int] = []  # gaps [start, end), sorted and disjoint
        self._ends: list[int] = []
        self.unique = 0
        self.duplicates = 0
        self.reordered = 0
        self.invalid = 0

    def add(self, seq: int) -> int:
        """Record one arrival: NEW, LATE (new but after a higher number) or DUPLICATE."""
        nxt = self.next
        if seq == nxt:
            self.next = nxt + 1
            self.unique += 1
            return NEW
        if seq > nxt:
            self._starts.append(nxt)
            self._ends.append(seq)
            self.next = seq + 1
            self.unique += 1
            return NEW
        if seq < 1:
            self.invalid += 1
            return DUPLICATE
        i = bisect.bisect_right(self._starts, seq) - 1
        if i >= 0 and seq < self._ends[i]:
            start, end = self._starts[i], self._ends[i]
            if end - start == 1:
                del self._starts[i], self._ends[i]
            elif seq == start:
                self._starts[i] = seq + 1
            elif seq == end - 1:
                self._ends[i] = seq
            else:
                self._ends[i] = seq
                self._starts.insert(i + 1, seq + 1)
                self._ends.insert(i + 1, end)
            self.unique += 1
            self.reordered += 1
            return LATE
        self.duplicates += 1
        return DUPLICATE

    @property
    def highest(self) -> int:
        return self.next - 1

    @property
    def missing(self) -> int:
        """Numbers below the highest one seen that never arrived (the tail is not known here)."""
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """Missing ranges as (first, last) inclusive."""
        return [(s, e - 1) for s, e in zip(self._starts, self._ends, strict=True)]

    def lost(self, sent: int) -> int:
        """Messages of ``sent`` (the publisher's count) this stream never saw."""
        return max(0, sent - self.unique)


def process_cpu_s() -> float:
    """CPU seconds (user + system) this process has used."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_rss_kb() -> int:
    """This process's resident memory, KiB (0 where /proc is not there)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def new_histogram() -> HdrHistogram:
    """Microseconds from 1 µs to one hour, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def record_us(histogram: HdrHistogram, micros: int) -> None:
    histogram.record_value(min(HIGHEST_US, max(LOWEST_US, micros)))


def encode(histogram: HdrHistogram) -> str:
    """A compact, portable form (HdrHistogram's base64 encoding) for reports and JSON."""
    data = histogram.encode()
    return data.decode("ascii") if isinstance(data, bytes) else str(data)


def decode(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text)


def merge(encoded: list[str]) -> HdrHistogram:
    total = new_histogram()
    for text in encoded:
        if text:
            total.add(decode(text))
    return total


def summarize(histogram: HdrHistogram) -> dict[str, Any]:
    """count, min/mean/percentiles/max in milliseconds (None when nothing was recorded)."""
    count = int(histogram.get_total_count())
    if count == 0:
        return {"count": 0, "min_ms": None, "mean_ms": None, "p50_ms": None, "p90_ms": None, "p95_ms": None,
                "p99_ms": None, "p999_ms": None, "max_ms": None}

    def at(pct: float) -> float:
        return round(float(histogram.get_value_at_percentile(pct)) / 1000, 3)

    return {"count": count, "min_ms": round(histogram.get_min_value() / 1000, 3),
            "mean_ms": round(histogram.get_mean_value() / 1000, 3), "p50_ms": at(50), "p90_ms": at(90),
            "p95_ms": at(95), "p99_ms": at(99), "p999_ms": at(99.9),
            "max_ms": round(histogram.get_max_value() / 1000, 3)}


class Receiver:
    """Everything the subscribers of one worker received: streams, phases, latency.

    ``take`` is the hot path: it decodes each payload's header, files the sequence number
    under its stream, and records the latency (receive time minus the send time in the
    payload) of every first arrival in the histogram of the phase it was sent in and in
    the histogram of the current tick.
    """

    def __init__(self, run_tag: int, phases: int, payload_format: str = "binary", *, shared: bool = False) -> None:
        from ecokit.bench.payload import decoder

        self.run_tag = run_tag
        self.phases = phases
        self.format = payload_format
        self.shared = shared
        self._decode = decoder(payload_format)
        self.trackers: dict[int, SequenceTracker] = {}
        self.received = [0] * phases
        self.unique = [0] * phases
        self.duplicates = [0] * phases
        self.reordered = [0] * phases
        self.first_ns = [0] * phases
        self.last_ns = [0] * phases
        self.latency = [new_histogram() for _ in range(phases)]
        self.interval = new_histogram()
        self.per_subscriber: dict[int, int] = {}
        self.foreign = 0
        self.clock_anomalies = 0

    def take(self, subscriber: int, payloads: list[bytes], now_ns: int) -> None:
        if self.format == "binary":
            self._take_binary(subscriber, payloads, now_ns)
            return
        from ecokit.bench.payload import PayloadError

        for payload in payloads:
            try:
                stamp = self._decode(payload)
            except PayloadError:
                self.foreign += 1
                continue
            self._file(subscriber, stamp.run, stamp.phase, stamp.publisher, stamp.seq, stamp.sent_ns, now_ns)

    def _take_binary(self, subscriber: int, payloads: list[bytes], now_ns: int) -> None:
        from ecokit.bench.payload import HEADER, MAGIC, VERSION

        unpack = HEADER.unpack_from
        size = HEADER.size
        tag, phases, shared = self.run_tag, self.phases, self.shared
        trackers = self.trackers
        received, unique, duplicates, reordered = self.received, self.unique, self.duplicates, self.reordered
        latency, interval = self.latency, self.interval
        base = subscriber << 32
        got = 0
        for payload in payloads:
            if len(payload) < size:
                self.foreign += 1
                continue
            magic, version, phase, run, publisher, seq, sent_ns = unpack(payload)
            if magic != MAGIC or run != tag or version != VERSION or phase >= phases:
                self.foreign += 1
                continue
            key = publisher if shared else base | publisher
            tracker = trackers.get(key)
            if tracker is None:
                tracker = trackers[key] = SequenceTracker()
            received[phase] += 1
            code = tracker.add(seq)
            if code == DUPLICATE:
                duplicates[phase] += 1
                continue
            got += 1
            unique[phase] += 1
            if code == LATE:
                reordered[phase] += 1
            micros = (now_ns - sent_ns) // 1000
            if micros < 1:
                if micros < 0:
                    self.clock_anomalies += 1
                micros = 1
            elif micros > HIGHEST_US:
                micros = HIGHEST_US
            latency[phase].record_value(micros)
            interval.record_value(micros)
            if not self.first_ns[phase]:
                self.first_ns[phase] = now_ns
            self.last_ns[phase] = now_ns
        if got:
            self.per_subscriber[subscriber] = self.per_subscriber.get(subscriber, 0) + got

    def _file(self, subscriber: int, run: int, phase: int, publisher: int, seq: int, sent_ns: int,
              now_ns: int) -> None:
        if run != self.run_tag or phase >= self.phases:
            self.foreign += 1
            return
        self._take_one(subscriber, phase, publisher, seq, sent_ns, now_ns)

    def _take_one(self, subscriber: int, phase: int, publisher: int, seq: int, sent_ns: int, now_ns: int) -> None:
        key = publisher if self.shared else (subscriber << 32) | publisher
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = SequenceTracker()
        self.received[phase] += 1
        code = tracker.add(seq)
        if code == DUPLICATE:
            self.duplicates[phase] += 1
            return
        self.unique[phase] += 1
        if code == LATE:
            self.reordered[phase] += 1
        micros = (now_ns - sent_ns) // 1000
        if micros < 0:
            self.clock_anomalies += 1
        record_us(self.latency[phase], micros)
        record_us(self.interval, micros)
        if not self.first_ns[phase]:
            self.first_ns[phase] = now_ns
        self.last_ns[phase] = now_ns
        self.per_subscriber[subscriber] = self.per_subscriber.get(subscriber, 0) + 1

    def totals(self) -> tuple[int, int, int]:
        """(deliveries, unique, duplicates) so far."""
        return sum(self.received), sum(self.unique), sum(self.duplicates)

    def take_interval(self) -> tuple[int, int, int, int]:
        """(count, p50 µs, p99 µs, max µs) of the latencies since the last call; starts a new interval."""
        h = self.interval
        count = int(h.get_total_count())
        if count == 0:
            return 0, 0, 0, 0
        result = (count, int(h.get_value_at_percentile(50)), int(h.get_value_at_percentile(99)),
                  int(h.get_max_value()))
        h.reset()
        return result

    def streams(self) -> dict[tuple[int, int], int]:
        """Unique deliveries per stream: (subscriber, publisher), or (-1, publisher) when shared."""
        if self.shared:
            return {(-1, key): t.unique for key, t in self.trackers.items()}
        return {(key >> 32, key & 0xFFFFFFFF): t.unique for key, t in self.trackers.items()}
