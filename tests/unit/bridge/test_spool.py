"""The bridge's on-disk buffer: order, batching by size and time, the bound, restarts."""

from __future__ import annotations

import threading
from pathlib import Path

from ecokit.bridge.spool import Spool


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(start: int, count: int) -> bytes:
    return b"".join(b"m v=%di %d\n" % (i, i) for i in range(start, start + count))


def test_batches_come_out_in_order_and_capped_at_the_batch_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(0, 30, 3):
        assert spool.append(_lines(i, 3), 3)
    taken = []
    while spool.pending_lines:
        batch = spool.take(7, 0.0)
        assert batch is not None
        assert batch.lines <= 7
        assert batch.data.count(b"\n") == batch.lines
        taken.append(batch.data)
        spool.commit(batch)
    assert b"".join(taken) == _lines(0, 30)
    assert spool.pending_bytes == 0


def test_a_small_batch_waits_for_the_flush_interval(tmp_path: Path) -> None:
    clock = Clock()
    spool = Spool(tmp_path, max_bytes=1 << 20, clock=clock)
    spool.append(_lines(0, 2), 2)
    stop = threading.Event()
    stop.set()  # take returns at once what is due; with stop set it returns what is pending
    batch = spool.take(100, 10.0, stop)
    assert batch is not None
    assert batch.lines == 2
    spool.commit(batch)
    spool.append(_lines(2, 2), 2)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(spool.take(100, 5.0)))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()  # 2 < 100 lines and not old enough yet
    clock.now += 6
    with spool.cond:
        spool.cond.notify_all()
    thread.join(2)
    assert not thread.is_alive()
    assert getattr(result[0], "lines", None) == 2


def test_appends_beyond_the_bound_are_refused_not_truncated(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    assert spool.append(_lines(0, 5), 5)
    size = spool.pending_bytes
    assert not spool.append(_lines(5, 10), 10)
    assert spool.pending_bytes == size
    assert spool.pending_lines == 5
    batch = spool.take(100, 0.0)
    assert batch is not None
    spool.commit(batch)
    assert spool.append(_lines(5, 5), 5)


def test_unwritten_lines_survive_a_restart_and_a_torn_line_is_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    for i in range(0, 20, 2):
        spool.append(_lines(i, 2), 2)
    batch = spool.take(5, 0.0)
    assert batch is not None
    spool.commit(batch)
    spool.close()
    last = sorted(tmp_path.glob("*.lp"))[-1]
    with last.open("ab") as fh:
        fh.write(b"m v=99i 9")  # a crash in the middle of a line
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert again.recovered_lines == 15
    data = b""
    while again.pending_lines:
        batch = again.take(4, 0.0)
        assert batch is not None
        data += batch.data
        again.commit(batch)
    assert data == _lines(5, 15)
    assert len(list(tmp_path.glob("*.lp"))) == 1  # written segments are deleted


def test_a_chunk_extended_after_it_was_taken_keeps_its_new_lines(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(_lines(0, 3), 3)
    batch = spool.take(100, 0.0)
    assert batch is not None
    assert batch.lines == 3
    spool.append(_lines(3, 2), 2)  # merged into the same index chunk
    spool.commit(batch)
    assert spool.pending_lines == 2
    rest = spool.take(100, 0.0)
    assert rest is not None
    assert rest.data == _lines(3, 2)
