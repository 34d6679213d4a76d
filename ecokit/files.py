"""Files that several writers share: an exclusive lock beside them, and atomic replacement
(temporary file, fsync, rename, directory fsync) so a reader sees the old content or the
new, never half, and a crash or a full disk leaves the old file in place."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(lock: Path, *, mode: int = 0o600) -> Iterator[None]:
    """Hold an exclusive flock on ``lock`` (created when missing) for the block."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int, temporary: Path | None = None) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``), all or nothing."""
    tmp = temporary or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename itself reaches the disk only with the directory.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
