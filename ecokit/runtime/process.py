"""Detached local processes, identified by pid *and* start time so a recycled pid is
never mistaken for ours, and stopped by pid only."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRef:
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: start time since boot in clock ticks


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces; split after it.
    return raw[raw.rindex(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


# Services started by this process, kept until they exit: a Popen dropped while its
# child runs warns (ResourceWarning), and polling it is how a child is reaped.
_spawned: dict[int, subprocess.Popen[bytes]] = {}
# How our children ended (pid -> returncode; negative: killed by that signal).
_exit_codes: dict[int, int] = {}


def _reap(pid: int) -> None:
    # Our own children become zombies until waited for; reap without blocking.
    proc = _spawned.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            _exit_codes[pid] = proc.returncode
            del _spawned[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(ref: ProcessRef) -> bool:
    _reap(ref.pid)
    fields = _stat_fields(ref.pid)
    if fields is None:
        return False
    state, ticks = fields[0], int(fields[19])
    # A multi-threaded server (influxd) whose main thread has returned shows a zombie
    # leader while its other threads still shut down and hold ports and files.
    alive = ticks == ref.start_ticks and (state not in ("Z", "X") or _threads_running(ref.pid))
    if not alive:
        _reap(ref.pid)  # it may have exited since the first look: reap it now
    return alive


def _threads_running(pid: int) -> bool:
    """Whether any thread of ``pid`` is still running (not a zombie)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        if raw[raw.rindex(")") + 2:].split()[0] not in ("Z", "X"):
            return True
    return False


def exit_reason(ref: ProcessRef) -> str:
    fields = _stat_fields(ref.pid)
    if fields is None or int(fields[19]) != ref.start_ticks:
        code = _exit_codes.get(ref.pid)
        if code is None:
            return "process exited"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"
    return f"process state {fields[0]}"


def spawn(argv: Sequence[str], *, log_path: Path, cwd: Path, env: Mapping[str, str]) -> ProcessRef:
    """Start ``argv`` in its own session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== ecokit start {time.strftime('%Y-%m-%dT%H:%M:%S')} {argv[0]} ===\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=cwd, env=dict(env), start_new_session=True, close_fds=True,
        )
    _spawned[proc.pid] = proc
    ticks = None
    for _ in range(50):
        ticks = start_ticks(proc.pid)
        if ticks is not None:
            break
        time.sleep(0.01)
    return ProcessRef(proc.pid, ticks if ticks is not None else -1)


def stop(ref: ProcessRef, *, timeout: float = 15.0) -> bool:
    """SIGTERM, wait, then SIGKILL. Signals only this exact process. True if it was running."""
    if not is_alive(ref):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(ref.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(ref):
            return True
        time.sleep(0.05)
    if is_alive(ref):
        with contextlib.suppress(ProcessLookupError):
            os.kill(ref.pid, signal.SIGKILL)
        for _ in range(100):
            if not is_alive(ref):
                break
            time.sleep(0.02)
    return True


def signal_process(ref: ProcessRef, name: str) -> bool:
    """Send signal ``name`` (e.g. SIGHUP) to exactly this process; False if it is gone."""
    if not is_alive(ref):
        return False
    try:
        os.kill(ref.pid, getattr(signal, name))
    except ProcessLookupError:
        return False
    return True


def port_holder(port: int) -> str | None:
    """``pid 1234 (mosquitto)`` of the process listening on TCP ``port``, when this user may see
    it (/proc/net/tcp{,6} give the socket's inode, /proc/<pid>/fd the process holding it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    name = (proc / "comm").read_text().strip()
                    return f"pid {proc.name} ({name})"
        except OSError:
            continue
    return None


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def follow(path: Path, *, tail_lines: int, poll: float = 0.25) -> Iterator[str]:
    """Yield the last lines of a log, then new lines as they are written (like tail -f)."""
    yield from tail(path, tail_lines).splitlines()
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        buffer = b""
        while True:
            chunk = fh.read()
            if chunk:
                buffer += chunk
                *complete, rest = buffer.split(b"\n")
                buffer = rest
                for raw in complete:
                    yield raw.decode("utf-8", errors="replace")
            else:
                time.sleep(poll)
