"""The bridge's on-disk buffer: append-only segment files of line protocol.

Every point goes through it: the intake appends what it evaluated and only then
acknowledges the MQTT messages, and the writer drains it to InfluxDB in order, moving a
committed position forward after each successful write. So a slow or stopped InfluxDB,
or a restart of the bridge, loses nothing that was acknowledged. The total size of what
is not yet written is bounded; an append beyond the bound is refused (the caller counts
its points as dropped), never silently truncated.

Files: ``<dir>/<segment>.lp`` (newline-terminated lines) and ``<dir>/committed``
(``<segment> <offset>`` of the first line not yet written).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MERGE_LINES = 1000  # appended chunks are merged up to this many lines per index entry
RECOVER_CHUNK = 256 * 1024
MIN_SEGMENT_BYTES = 64 * 1024


@dataclass
class _Chunk:
    segment: int
    start: int
    end: int
    lines: int
    created: float


@dataclass(frozen=True)
class Batch:
    """Lines taken for one write: ``data`` is newline-terminated line protocol."""

    data: bytes
    lines: int
    parts: tuple[tuple[_Chunk, int, int], ...]  # (chunk, taken end, taken lines)


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 16 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.clock = clock
        self.cond = threading.Condition()
        self.chunks: deque[_Chunk] = deque()
        self.pending_lines = 0
        self.pending_bytes = 0
        self.recovered_lines = 0
        self.refusal: str | None = None  # why the last refused append was refused
        self.refusal_detail: str | None = None
        self._read_fds: dict[int, int] = {}
        self._recover()
        self.write_segment = (max(self._segments(), default=0)) + 1
        self.write_offset = 0
        self._fd = self._open_segment(self.write_segment)
        self.segment_limit = self._segment_limit()

    # -- files ----------------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.dir / f"{segment:012d}.lp"

    def _segments(self) -> list[int]:
        out = []
        for path in self.dir.glob("*.lp"):
            try:
                out.append(int(path.stem))
            except ValueError:
                continue
        return sorted(out)

    def _open_segment(self, segment: int) -> int:
        return os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _read_committed(self) -> tuple[int, int]:
        try:
            seg, off = (self.dir / "committed").read_text().split()
            return int(seg), int(off)
        except (FileNotFoundError, ValueError):
            return 0, 0

    def _write_committed(self, segment: int, offset: int) -> None:
        tmp = self.dir / "committed.tmp"
        try:
            tmp.write_text(f"{segment} {offset}\n")
            os.replace(tmp, self.dir / "committed")
        except OSError:
            # A full disk: the previous position stays, so a restart writes some points
            # again, which InfluxDB stores once (same series, same time).
            tmp.unlink(missing_ok=True)

    def _recover(self) -> None:
        """Index what a previous run left unwritten (dropping a torn last line)."""
        seg0, off0 = self._read_committed()
        now = self.clock()
        for segment in self._segments():
            path = self._path(segment)
            if segment < seg0:
                path.unlink(missing_ok=True)
                continue
            data = path.read_bytes()
            start = off0 if segment == seg0 else 0
            last_newline = data.rfind(b"\n")
            if last_newline + 1 < len(data):
                os.truncate(path, last_newline + 1)  # a line torn by a crash is not a point
                data = data[:last_newline + 1]
            pos = start
            while pos < len(data):
                cut = data.rfind(b"\n", pos, pos + RECOVER_CHUNK) + 1
                if cut <= pos:
                    cut = data.index(b"\n", pos) + 1
                lines = data.count(b"\n", pos, cut)
                self.chunks.append(_Chunk(segment, pos, cut, lines, now))
                self.pending_lines += lines
                self.pending_bytes += cut - pos
                pos = cut
        self.recovered_lines = self.pending_lines

    # -- the intake side --------------------------------------------------------------

    def append(self, data: bytes, lines: int) -> bool:
        """Append newline-terminated lines; False (nothing written) when over the bound or
        when the disk refuses them (``refusal`` then says which: buffer_full, disk_error)."""
        if not data:
            return True
        with self.cond:
            if self.pending_bytes + len(data) > self.max_bytes:
                self.refusal, self.refusal_detail = "buffer_full", None
                return False
            try:
                if self.write_offset and self.write_offset + len(data) > self.segment_limit:
                    self._next_segment()
                try:
                    self._write(data)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC or not self._release_written_segment():
                        raise
                    self._write(data)  # in a fresh segment, the written one deleted
            except OSError as exc:
                # A full disk (ENOSPC) or an I/O error: let the caller count the drop.
                self.refusal, self.refusal_detail = "disk_error", f"{exc.strerror or exc}"
                return False
            start, end = self.write_offset, self.write_offset + len(data)
            self.write_offset = end
            last = self.chunks[-1] if self.chunks else None
            if last is not None and last.segment == self.write_segment and last.end == start \
                    and last.lines < MERGE_LINES:
                last.end = end
                last.lines += lines
            else:
                self.chunks.append(_Chunk(self.write_segment, start, end, lines, self.clock()))
            self.pending_lines += lines
            self.pending_bytes += len(data)
            self.cond.notify_all()
        return True

    def _write(self, data: bytes) -> None:
        """Append at the write offset; on an error undo a partial write, so the next append
        starts at a line boundary."""
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.write_offset)
            raise

    def _next_segment(self) -> None:
        os.close(self._fd)
        self.write_segment += 1
        self.write_offset = 0
        self._fd = self._open_segment(self.write_segment)
        self.segment_limit = self._segment_limit()

    def _segment_limit(self) -> int:
        """Segments are deleted whole once written: on a nearly full disk they stay small
        (an eighth of the free space, at least 64 KiB), so written points free their room
        soon; else ``segment_bytes``."""
        try:
            free = shutil.disk_usage(self.dir).free
        except OSError:
            return self.segment_bytes
        return max(MIN_SEGMENT_BYTES, min(self.segment_bytes, free // 8))

    def _release_written_segment(self) -> bool:
        """A full disk: start a new segment, deleting the one being written when InfluxDB
        already has all of it (else the writer deletes it once it has). Segments are only
        deleted whole, so without this a disk that fills with points already written would
        refuse every new point. False: the new segment would be empty anyway."""
        if not self.write_offset:
            return False
        old = self.write_segment
        self._next_segment()
        if not any(c.segment == old for c in self.chunks):
            fd = self._read_fds.pop(old, None)
            if fd is not None:
                os.close(fd)
            self._path(old).unlink(missing_ok=True)
            if not self.chunks:  # the committed position named the old segment's end
                self._write_committed(self.write_segment, 0)
        return True

    # -- the writer side --------------------------------------------------------------

    def take(self, max_lines: int, max_wait: float, stop: threading.Event | None = None) -> Batch | None:
        """Wait until ``max_lines`` are pending or the oldest has waited ``max_wait`` seconds.

        Returns at most ``max_lines`` lines from the front (None if nothing is due by then
        or ``stop`` is set with nothing pending). The lines stay pending until ``commit``.
        """
        with self.cond:
            while True:
                if self.chunks:
                    age = self.clock() - self.chunks[0].created
                    if self.pending_lines >= max_lines or age >= max_wait or (stop is not None and stop.is_set()):
                        break
                    self.cond.wait(max(0.0, min(max_wait - age, 0.5)))
                else:
                    if stop is not None and stop.is_set():
                        return None
                    self.cond.wait(0.5)
                    if not self.chunks:
                        return None
            plan: list[tuple[_Chunk, int, int, int]] = []  # chunk, start, end, lines
            budget = max_lines
            for chunk in self.chunks:
                if budget <= 0:
                    break
                plan.append((chunk, chunk.start, chunk.end, chunk.lines))
                budget -= chunk.lines
        parts: list[tuple[_Chunk, int, int]] = []
        pieces: list[bytes] = []
        total = 0
        for chunk, start, end, lines in plan:
            data = os.pread(self._read_fd(chunk.segment), end - start, start)
            if total + lines > max_lines:
                want = max_lines - total
                cut = _after_nth_newline(data, want)
                data, end, lines = data[:cut], start + cut, want
            pieces.append(data)
            parts.append((chunk, end, lines))
            total += lines
        return Batch(b"".join(pieces), total, tuple(parts))

    def _read_fd(self, segment: int) -> int:
        fd = self._read_fds.get(segment)
        if fd is None:
            fd = os.open(self._path(segment), os.O_RDONLY)
            self._read_fds[segment] = fd
        return fd

    def commit(self, batch: Batch) -> None:
        """The batch is in InfluxDB (or given up on): forget it, delete finished segments."""
        with self.cond:
            for chunk, end, lines in batch.parts:
                front = self.chunks[0]
                assert front is chunk, "commits must follow takes in order"
                size = end - chunk.start
                if end >= chunk.end and lines >= chunk.lines:
                    self.chunks.popleft()
                else:  # the appender extended it, or only part of it was taken
                    chunk.start = end
                    chunk.lines -= lines
                self.pending_lines -= lines
                self.pending_bytes -= size
            if self.chunks:
                segment, offset = self.chunks[0].segment, self.chunks[0].start
            else:
                segment, offset = self.write_segment, self.write_offset
            finished = [s for s in self._read_fds if s < segment]
            self._write_committed(segment, offset)
        for old in finished:
            os.close(self._read_fds.pop(old))
        for old in self._segments():
            if old < segment:
                self._path(old).unlink(missing_ok=True)

    def close(self) -> None:
        with self.cond:
            os.close(self._fd)
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            self.cond.notify_all()


def _after_nth_newline(data: bytes, n: int) -> int:
    pos = 0
    for _ in range(n):
        pos = data.index(b"\n", pos) + 1
    return pos
