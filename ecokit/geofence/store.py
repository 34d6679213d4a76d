"""``config/geofences.geojson``: the one source of truth for geofences.

Every writer (``ecokit geofences import``, the console's /api/geofences, a person with an
editor) ends in the same file. ecokit's writers validate the whole new set first, then
write a temporary file, fsync it and rename it over the old one under a file lock: a
reader sees the old file or the new one, never half of one, and an invalid set is never
written. The processor watches the file (:class:`GeofenceWatcher`) and keeps its last
valid set when a hand edit breaks it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecokit.files import locked, write_atomic
from ecokit.geofence.model import (
    Geofence,
    GeofenceError,
    GeofenceSet,
    load_json,
    parse_feature,
    parse_geofences,
)

Region = tuple[float, float, float, float]


@dataclass(frozen=True)
class ImportResult:
    added: tuple[str, ...]
    updated: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]
    total: int
    warnings: tuple[str, ...] = ()


class GeofenceStore:
    """Reads and atomically rewrites one geofence file. ``label`` names it in errors."""

    def __init__(self, path: Path, *, label: str | None = None, region: Region | None = None) -> None:
        self.path = path
        self.label = label or str(path)
        self.region = region

    # -- reading ------------------------------------------------------------------------

    def load(self) -> GeofenceSet:
        """The current set (empty when the file does not exist); GeofenceError when invalid."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return GeofenceSet()
        except OSError as exc:
            raise GeofenceError([f"cannot be read: {exc.strerror}"], source=self.label) from None
        return parse_geofences(load_json(data, source=self.label), source=self.label, region=self.region)

    def get(self, fence_id: str) -> Geofence | None:
        return self.load().by_id().get(fence_id)

    # -- writing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path.with_name(f".{self.path.name}.lock"), mode=0o644):
            yield

    def _write(self, fences: GeofenceSet) -> None:
        mode = (self.path.stat().st_mode & 0o777) if self.path.exists() else 0o644
        write_atomic(self.path, fences.dumps(), mode=mode)

    def update(self, change: Callable[[list[Mapping[str, Any]]], list[Mapping[str, Any]]], *,
               over_invalid: bool = False, dry_run: bool = False) -> GeofenceSet:
        """Read-modify-write under the lock: ``change`` gets the current features and returns
        the new ones; the result is validated as a whole before anything is written.
        ``over_invalid``: the new set does not build on the current one, so a broken file
        may be replaced (otherwise its problems are raised). ``dry_run``: write nothing."""
        with self._locked():
            broken = False
            try:
                current = self.load()
            except GeofenceError as exc:
                if not over_invalid:
                    exc.hint = "fix the file first, or replace it: ecokit geofences import FILE --replace"
                    raise
                current, broken = GeofenceSet(), True
            features = change([f.feature for f in current.fences])
            new = parse_geofences({"type": "FeatureCollection", "features": features}, source=self.label,
                                  region=self.region)
            if not dry_run and (broken or new.dumps() != current.dumps() or not self.path.exists()):
                self._write(new)
            return new

    def save(self, fences: GeofenceSet) -> GeofenceSet:
        return self.update(lambda _current: [f.feature for f in fences.fences])

    def upsert(self, feature: Mapping[str, Any]) -> Geofence:
        """Create or replace one fence (by id); GeofenceError names what is wrong with it."""
        problems: list[str] = []
        fence = parse_feature(0, feature, problems)
        if fence is None:
            raise GeofenceError([p.replace("feature #1", "the geofence", 1) for p in problems], source=self.label)

        def change(features: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
            out = [f for f in features if f.get("id") != fence.id]
            position = next((i for i, f in enumerate(features) if f.get("id") == fence.id), len(out))
            out.insert(position, fence.feature)
            return out

        return self.update(change).by_id()[fence.id]

    def delete(self, fence_id: str) -> bool:
        """Remove one fence; False when there was none with that id."""
        found = False

        def change(features: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
            nonlocal found
            out = [f for f in features if f.get("id") != fence_id]
            found = len(out) != len(features)
            return out

        self.update(change)
        return found

    def import_features(self, doc: Any, *, source: str, replace: bool = False,
                        dry_run: bool = False) -> ImportResult:
        """Merge (or with ``replace`` swap in) the fences of a FeatureCollection or a single
        Feature; the incoming document is validated on its own first, naming its features."""
        if isinstance(doc, Mapping) and doc.get("type") == "Feature":
            doc = {"type": "FeatureCollection", "features": [doc]}
        incoming = parse_geofences(doc, source=source, region=self.region)
        result: ImportResult | None = None

        def change(features: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
            nonlocal result
            current = {str(f.get("id")): f for f in features}
            new_ids = [f.id for f in incoming.fences]
            added = tuple(i for i in new_ids if i not in current)
            updated = tuple(i for i in new_ids if i in current and current[i] != incoming.by_id()[i].feature)
            unchanged = tuple(i for i in new_ids if i in current and current[i] == incoming.by_id()[i].feature)
            if replace:
                removed = tuple(i for i in current if i not in incoming.by_id())
                out = [f.feature for f in incoming.fences]
            else:
                removed = ()
                merged = dict(current)
                merged.update({f.id: f.feature for f in incoming.fences})
                out = list(merged.values())
            result = ImportResult(added, updated, unchanged, removed, len(out), incoming.warnings)
            return out

        self.update(change, over_invalid=replace, dry_run=dry_run)
        assert result is not None
        return result

    def import_file(self, path: Path, *, replace: bool = False, dry_run: bool = False,
                    label: str | None = None) -> ImportResult:
        source = label or str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise GeofenceError([f"cannot be read: {exc.strerror}"], source=source) from None
        return self.import_features(load_json(data, source=source), source=source, replace=replace,
                                    dry_run=dry_run)


class GeofenceWatcher:
    """Notices when the file changes (mtime, size or inode: an atomic rename changes the
    inode even within one mtime tick). ``poll()`` returns the new set, None when nothing
    changed, and raises GeofenceError when the new content is invalid (the caller keeps
    its last valid set); the same broken content is not reported twice."""

    def __init__(self, store: GeofenceStore) -> None:
        self.store = store
        self._signature: tuple[int, int, int] | None = None
        self._seen = False

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.store.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self, *, force: bool = False) -> GeofenceSet | None:
        signature = self._stat()
        if self._seen and signature == self._signature and not force:
            return None
        self._signature, self._seen = signature, True
        return self.store.load()
