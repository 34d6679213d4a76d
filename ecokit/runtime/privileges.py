"""Local services that switch from root to an unprivileged user (Mosquitto's ``user``).

Mosquitto 2 drops privileges before it reads its password file, ACL file and TLS key, and
re-reads the first two as that user on every reload; so the user needs a path to them.
The stack folder holds ``secrets.json`` (0600): it is opened to the service's *group* for
traversal only (0710), never for listing or to other users.
"""

from __future__ import annotations

import getpass
import os
import pwd
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BROKER_USER = "mosquitto"


@dataclass(frozen=True)
class RunAs:
    """Who a local service runs as."""

    user: str
    drops: bool  # started as root, switching to ``user``
    reason: str | None = None  # why a root start keeps root


def closed_directory(path: Path) -> Path | None:
    """The first existing directory on the way to ``path`` that other users cannot traverse."""
    path = path.absolute()
    for folder in [*reversed(path.parents), path]:
        try:
            mode = folder.stat().st_mode
        except FileNotFoundError:
            return None  # created later by ecokit, with modes it chooses
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return folder
    return None


def broker_user(project_dir: Path, extra: Iterable[Path] = ()) -> RunAs:
    """The user Mosquitto should run as for a stack in ``project_dir``."""
    if os.geteuid() != 0:
        return RunAs(getpass.getuser(), drops=False)
    try:
        pwd.getpwnam(BROKER_USER)
    except KeyError:
        return RunAs("root", drops=False, reason=f"there is no `{BROKER_USER}` user on this machine")
    for path in (project_dir, *extra):
        closed = closed_directory(path)
        if closed is not None:
            return RunAs("root", drops=False,
                         reason=f"user {BROKER_USER} cannot reach the stack's files: {closed} is closed to "
                                "other users (chmod o+x it, or keep the project in a folder they can enter)")
    return RunAs(BROKER_USER, drops=True)


def hand_over(user: str, *, stack_root: Path, trees: Iterable[Path], readable: Iterable[Path]) -> None:
    """Give ``user`` its service's files (``trees``, recursively), group-read access to
    ``readable`` and group traversal of ``stack_root``. Only root can do this."""
    entry = pwd.getpwnam(user)
    uid, gid = entry.pw_uid, entry.pw_gid
    os.chown(stack_root, -1, gid)
    os.chmod(stack_root, 0o710)
    for tree in trees:
        if not tree.exists():
            continue
        os.chown(tree, uid, gid)
        for folder, dirs, files in os.walk(tree):
            for name in [*dirs, *files]:
                os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
    for path in readable:
        if path.exists():
            os.chown(path, -1, gid)
            os.chmod(path, 0o640)
