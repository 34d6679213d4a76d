"""The stacks on this machine: a small index that `up` writes and `down` clears, so
`ecokit ps` can list every stack wherever its project lives (compose's ``ls``).

One JSON file per stack under ``<state dir>/stacks/`` (``$ECOKIT_STATE_DIR``, else
``$XDG_STATE_HOME/ecokit``, else ``~/.local/state/ecokit``). An entry whose project is gone
(a deleted temporary folder) is dropped when the index is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class StackEntry:
    stack: str
    project_dir: str
    config_file: str
    runtime: str | None
    profile: str | None
    started: float

    @property
    def key(self) -> str:
        return entry_key(Path(self.project_dir), self.stack)


def entry_key(project_dir: Path, stack: str) -> str:
    return hashlib.sha256(f"{project_dir}\0{stack}".encode()).hexdigest()[:16]


def state_dir(env: Mapping[str, str]) -> Path:
    if env.get("ECOKIT_STATE_DIR"):
        return Path(env["ECOKIT_STATE_DIR"])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "ecokit"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "state" / "ecokit"


class StackIndex:
    """Where the stacks of this machine are recorded."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "stacks"

    def record(self, entry: StackEntry) -> None:
        """Write (or refresh) a stack's entry; an index that cannot be written never stops `up`."""
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{entry.key}.json"
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(entry), indent=2) + "\n")
            os.replace(tmp, path)

    def forget(self, project_dir: Path, stack: str) -> None:
        with contextlib.suppress(OSError):
            (self.folder / f"{entry_key(project_dir, stack)}.json").unlink(missing_ok=True)

    def get(self, project_dir: Path, stack: str) -> StackEntry | None:
        return self._read(self.folder / f"{entry_key(project_dir, stack)}.json")

    def entries(self) -> list[StackEntry]:
        """Every recorded stack whose project still exists, oldest first."""
        found = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            entry = self._read(path)
            if entry is None:
                continue
            if not Path(entry.config_file).is_file():
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            found.append(entry)
        return sorted(found, key=lambda e: e.started)

    @staticmethod
    def _read(path: Path) -> StackEntry | None:
        try:
            data = json.loads(path.read_text())
            return StackEntry(**{k: data.get(k) for k in StackEntry.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return None


def new_entry(*, stack: str, project_dir: Path, config_file: Path, runtime: str | None, profile: str | None,
              started: float | None = None) -> StackEntry:
    return StackEntry(stack=stack, project_dir=str(project_dir), config_file=str(config_file), runtime=runtime,
                      profile=profile, started=started if started is not None else time.time())
