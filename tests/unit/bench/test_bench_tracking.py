"""Bench payloads, sequence tracking and latency histograms (no I/O)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecokit.bench.payload import (
    HEADER,
    PayloadError,
    binary_encoder,
    decode_binary,
    decode_json,
    encoder,
    json_encoder,
    run_tag,
)
from ecokit.bench.tracking import (
    DUPLICATE,
    LATE,
    NEW,
    Receiver,
    SequenceTracker,
    decode,
    encode,
    merge,
    new_histogram,
    record_us,
    summarize,
)
from ecokit.config.bench import BINARY_HEADER, JSON_MIN

RUN = run_tag("ab12cd34")
NS = 1_700_000_000_000_000_000


# -- payloads ---------------------------------------------------------------------------------


def test_run_tags_come_from_the_run_id() -> None:
    assert run_tag("ab12cd34") == 0xAB12CD34
    assert run_tag("00000001") == 1


@pytest.mark.parametrize("size", [BINARY_HEADER, 25, 256, 65_536])
def test_binary_payloads_have_the_exact_size_and_round_trip(size: int) -> None:
    payload = binary_encoder(RUN, size)(3, 4_000_000, 123_456, NS)
    assert len(payload) == size
    stamp = decode_binary(payload)
    assert (stamp.run, stamp.phase, stamp.publisher, stamp.seq, stamp.sent_ns) == (RUN, 3, 4_000_000, 123_456, NS)


def test_the_binary_header_layout_is_documented() -> None:
    payload = binary_encoder(RUN, 24)(1, 2, 3, 4)
    assert payload == b"EB\x01\x01" + RUN.to_bytes(4, "big") + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") \
        + (4).to_bytes(8, "big")
    assert HEADER.size == 24


@given(phase=st.integers(0, 255), publisher=st.integers(0, 2**32 - 1), seq=st.integers(0, 2**32 - 1),
       sent=st.integers(0, 2**64 - 1), size=st.integers(JSON_MIN, 600))
def test_json_payloads_have_the_exact_size_and_round_trip(phase: int, publisher: int, seq: int, sent: int,
                                                          size: int) -> None:
    payload = json_encoder(RUN, size)(phase, publisher, seq, sent)
    assert len(payload) == size
    stamp = decode_json(payload)
    assert (stamp.run, stamp.phase, stamp.publisher, stamp.seq, stamp.sent_ns) == (RUN, phase, publisher, seq, sent)


def test_payload_sizes_below_the_header_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 24"):
        binary_encoder(RUN, 23)
    with pytest.raises(ValueError, match="at least 104"):
        json_encoder(RUN, 100)
    assert encoder("json", RUN, 200)(0, 0, 1, 1).startswith(b'{"bench":"ab12cd34"')


@pytest.mark.parametrize("payload", [b"", b"hello world, this is not a bench message", b"EB" + bytes(10),
                                     b"EB\x09" + bytes(30)])
def test_other_messages_are_not_bench_payloads(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_binary(payload)
    with pytest.raises(PayloadError):
        decode_json(payload)


# -- sequence numbers -------------------------------------------------------------------------


def test_in_order_arrivals() -> None:
    t = SequenceTracker()
    assert [t.add(s) for s in (1, 2, 3)] == [NEW, NEW, NEW]
    assert (t.unique, t.duplicates, t.reordered, t.missing, t.highest) == (3, 0, 0, 0, 3)
    assert t.lost(3) == 0
    assert t.lost(5) == 2  # the tail that never came


def test_a_gap_then_late_arrivals_fill_it() -> None:
    t = SequenceTracker()
    for s in (1, 2, 6):
        t.add(s)
    assert t.gaps == [(3, 5)]
    assert t.missing == 3
    assert t.add(4) == LATE  # splits the gap
    assert t.gaps == [(3, 3), (5, 5)]
    assert t.add(3) == LATE
    assert t.add(5) == LATE
    assert t.gaps == []
    assert (t.unique, t.reordered) == (6, 3)


def test_duplicates_are_recognised_before_and_after_gaps() -> None:
    t = SequenceTracker()
    for s in (1, 2, 5):
        t.add(s)
    assert t.add(2) == DUPLICATE
    assert t.add(5) == DUPLICATE
    assert t.add(3) == LATE
    assert t.add(3) == DUPLICATE
    assert (t.unique, t.duplicates) == (4, 3)


def test_numbers_below_one_are_invalid() -> None:
    t = SequenceTracker()
    assert t.add(0) == DUPLICATE
    assert t.add(-3) == DUPLICATE
    assert (t.invalid, t.unique) == (2, 0)


@given(st.data())
def test_tracking_matches_a_set_of_what_arrived(data: st.DataObject) -> None:
    sent = data.draw(st.integers(1, 300))
    arrived = data.draw(st.lists(st.integers(1, sent), max_size=600))
    t = SequenceTracker()
    seen: set[int] = set()
    highest = 0
    late = 0
    for seq in arrived:
        code = t.add(seq)
        if seq in seen:
            assert code == DUPLICATE
        elif seq < highest:
            assert code == LATE
            late += 1
        else:
            assert code == NEW
        seen.add(seq)
        highest = max(highest, seq)
    assert t.unique == len(seen)
    assert t.duplicates == len(arrived) - len(seen)
    assert t.reordered == late
    assert t.missing == len(set(range(1, highest + 1)) - seen)
    assert t.lost(sent) == sent - len(seen)
    assert all(seq not in seen for first, last in t.gaps for seq in range(first, last + 1))


def test_memory_follows_the_gaps_not_the_messages() -> None:
    t = SequenceTracker()
    for seq in range(1, 200_001):
        if seq % 50_000:
            t.add(seq)
    assert len(t.gaps) == 3
    assert t.missing == 3


# -- histograms -------------------------------------------------------------------------------


def test_histograms_summarise_in_milliseconds() -> None:
    h = new_histogram()
    for micros in range(1, 1001):
        record_us(h, micros * 10)  # 10 µs .. 10 ms
    s = summarize(h)
    assert s["count"] == 1000
    assert s["p50_ms"] == pytest.approx(5.0, rel=0.01)
    assert s["p99_ms"] == pytest.approx(9.9, rel=0.01)
    assert s["max_ms"] == pytest.approx(10.0, rel=0.01)
    assert summarize(new_histogram())["p99_ms"] is None


def test_histograms_clamp_and_survive_encoding_and_merging() -> None:
    a, b = new_histogram(), new_histogram()
    record_us(a, -5)
    record_us(a, 10**12)
    for _ in range(10):
        record_us(b, 2000)
    merged = merge([encode(a), encode(b), ""])
    assert merged.get_total_count() == 12
    assert decode(encode(merged)).get_total_count() == 12
    assert summarize(merged)["max_ms"] == pytest.approx(3_600_000, rel=0.001)


# -- the receiver -----------------------------------------------------------------------------


def messages(publisher: int, seqs: list[int], *, phase: int = 0, sent_ns: int = NS, size: int = 64,
             fmt: str = "binary", run: int = RUN) -> list[bytes]:
    encode_payload = encoder(fmt, run, size)
    return [encode_payload(phase, publisher, s, sent_ns) for s in seqs]


@pytest.mark.parametrize("fmt", ["binary", "json"])
def test_the_receiver_counts_streams_phases_and_latency(fmt: str) -> None:
    r = Receiver(RUN, 2, fmt)
    size = 128
    r.take(0, messages(1, [1, 2, 3], fmt=fmt, size=size), NS + 2_000_000)  # 2 ms
    r.take(0, messages(2, [1, 3], fmt=fmt, size=size), NS + 4_000_000)
    r.take(0, messages(2, [2, 3], phase=1, fmt=fmt, size=size), NS + 1_000_000)  # 2 late, 3 duplicate
    r.take(1, messages(1, [1], fmt=fmt, size=size), NS + 1_000_000)  # another subscriber: its own stream
    assert r.received == [6, 2]
    assert r.unique == [6, 1]
    assert r.duplicates == [0, 1]
    assert r.reordered == [0, 1]
    assert r.totals() == (8, 7, 1)
    assert r.streams() == {(0, 1): 3, (0, 2): 3, (1, 1): 1}
    assert r.per_subscriber == {0: 6, 1: 1}
    assert summarize(r.latency[0])["max_ms"] == pytest.approx(4.0, rel=0.01)
    assert summarize(r.latency[1])["count"] == 1
    count, p50, _, top = r.take_interval()
    assert count == 7
    assert p50 == pytest.approx(2000, rel=0.01)
    assert top == pytest.approx(4000, rel=0.01)
    assert r.take_interval() == (0, 0, 0, 0)  # a new interval begins
    assert r.first_ns[0] == NS + 2_000_000
    assert r.last_ns[0] == NS + 1_000_000


def test_a_shared_subscription_is_one_stream_per_publisher() -> None:
    r = Receiver(RUN, 1, shared=True)
    r.take(0, messages(5, [1, 2]), NS)
    r.take(1, messages(5, [3, 2]), NS)  # 2 went to both members: a duplicate for the group
    assert r.streams() == {(-1, 5): 3}
    assert r.duplicates == [1]
    assert r.per_subscriber == {0: 2, 1: 1}


def test_foreign_messages_are_counted_not_filed() -> None:
    r = Receiver(RUN, 1)
    r.take(0, [b"not ours", b"x" * 100], NS)
    r.take(0, messages(1, [1], run=RUN + 1), NS)  # another run
    r.take(0, messages(1, [1], phase=7), NS)  # a phase this run does not have
    assert r.foreign == 4
    assert r.totals() == (0, 0, 0)


def test_messages_from_the_future_are_clock_anomalies() -> None:
    r = Receiver(RUN, 1)
    r.take(0, messages(1, [1, 2]), NS - 5_000_000)
    assert r.clock_anomalies == 2
    assert r.unique == [2]


def test_a_large_shuffled_stream() -> None:
    rng = random.Random(7)
    seqs = list(range(1, 5001))
    rng.shuffle(seqs)
    dropped = set(seqs[:37])
    r = Receiver(RUN, 1)
    r.take(0, messages(9, [s for s in seqs if s not in dropped] + [1, 2, 3]), NS + 1000)
    tracker = r.trackers[9]
    assert tracker.unique == 5000 - 37
    assert tracker.lost(5000) == 37
    assert r.duplicates == [len({1, 2, 3} - dropped)]
