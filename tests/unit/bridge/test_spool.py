"""The bridge's on-disk buffer: order, batching by size and time, the bound, restarts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

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


def test_a_full_disk_refuses_the_append_and_leaves_no_torn_line(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    import ecokit.bridge.spool as spool_module

    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert spool.append(_lines(0, 3), 3)
    real_write = os.write
    calls = {"n": 0}

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "write", half_then_full)
    assert not spool.append(_lines(3, 4), 4)
    assert (spool.refusal, spool.refusal_detail) == ("disk_error", "No space left on device")
    monkeypatch.setattr(spool_module.os, "write", real_write)
    assert spool.append(_lines(7, 2), 2), "space again: appends go on"
    batch = spool.take(100, 0.0)
    assert batch is not None
    assert batch.data == _lines(0, 3) + _lines(7, 2)
    spool.commit(batch)
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert again.pending_lines == 0, "nothing torn left behind for the next start"
    again.close()


def test_a_full_disk_with_nothing_pending_starts_a_new_segment_instead_of_dropping(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Segments are only deleted when the next one starts: without this, a disk that fills
    # with points InfluxDB already has would drop every new point until 16 MiB were written.
    import errno
    import os

    import ecokit.bridge.spool as spool_module

    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert spool.append(_lines(0, 5), 5)
    batch = spool.take(100, 0.0)
    assert batch is not None
    spool.commit(batch)
    first = sorted(tmp_path.glob("*.lp"))
    real_write = os.write
    full = {"segment": spool.write_segment}

    def full_in_the_old_segment(fd: int, data: bytes | memoryview) -> int:
        if spool.write_segment == full["segment"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(spool_module.os, "write", full_in_the_old_segment)
    assert spool.append(_lines(5, 2), 2)
    assert not first[0].exists(), "the written segment was deleted"
    assert spool.append(_lines(7, 1), 1)

    def always_full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    # with points still pending, a full disk is a refusal (and at most one empty segment)
    monkeypatch.setattr(spool_module.os, "write", always_full)
    assert not spool.append(_lines(8, 1), 1)
    assert not spool.append(_lines(9, 1), 1)
    assert spool.refusal == "disk_error"
    assert len(list(tmp_path.glob("*.lp"))) == 2
    monkeypatch.setattr(spool_module.os, "write", real_write)
    batch = spool.take(100, 0.0)
    assert batch is not None
    assert batch.data == _lines(5, 3)
    spool.commit(batch)
    assert [p.name for p in tmp_path.glob("*.lp")] == [f"{spool.write_segment:012d}.lp"], \
        "the written segment went once InfluxDB had its points"
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert again.pending_lines == 0
    again.close()


def test_segments_stay_small_on_a_nearly_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    import ecokit.bridge.spool as spool_module

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(spool_module.shutil, "disk_usage", lambda path: usage(1 << 40, 0, 1 << 40))
    assert Spool(tmp_path / "big", max_bytes=1 << 20).segment_limit == 16 * 1024 * 1024
    monkeypatch.setattr(spool_module.shutil, "disk_usage", lambda path: usage(1 << 40, 0, 8 << 20))
    assert Spool(tmp_path / "small", max_bytes=1 << 20).segment_limit == 1 << 20
    monkeypatch.setattr(spool_module.shutil, "disk_usage", lambda path: usage(1 << 40, 0, 1000))
    assert Spool(tmp_path / "full", max_bytes=1 << 20).segment_limit == 64 * 1024
