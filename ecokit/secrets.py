"""Per-stack secrets: generated once, stored 0600, never logged, never a default.

One JSON file per stack (``.ecokit/<stack>/secrets.json``) in a 0700 folder. Writes are
atomic (temp file + rename) and serialised with a file lock, so `ecokit up` and
`ecokit simulate` started together agree on every value.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from ecokit.errors import SecretsError
from ecokit.files import locked, write_atomic

# Alphabet without characters that need quoting in HOCON, shell, URLs, CSV, Mosquitto
# password lines or EMQX's api_keys.txt (no ':' '"' '\'' '\\' '$' ',' '#' '%' '/').
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_"


def generate_password(length: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def generate_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


class SecretStore:
    """Named secrets of one stack, created on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: dict[str, str] | None = None

    def _check_mode(self) -> None:
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise SecretsError(
                f"{self.path} is readable by other users (mode {mode:o})",
                hint=f"run: chmod 600 {self.path}",
            )

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        self._check_mode()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SecretsError(f"{self.path} cannot be read: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise SecretsError(f"{self.path} is not a JSON object of strings")
        return data

    def _write(self, data: dict[str, str]) -> None:
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        write_atomic(self.path, text.encode("utf-8"), mode=0o600,
                     temporary=self.path.with_name(self.path.name + ".tmp"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path.parent, 0o700)
        with locked(self.path.with_name(self.path.name + ".lock")):
            yield

    def all(self) -> dict[str, str]:
        if self._cache is None:
            self._cache = self._read()
        return dict(self._cache)

    def get(self, name: str, generate: Callable[[], str] = generate_password) -> str:
        """The secret called ``name``, generating and storing it on first use."""
        if self._cache is not None and name in self._cache:
            return self._cache[name]
        with self._locked():
            data = self._read()
            if name not in data:
                data[name] = generate()
                self._write(data)
            self._cache = data
            return data[name]

    def ensure(self, wanted: dict[str, Callable[[], str]]) -> dict[str, str]:
        """Create every missing secret in ``wanted`` with one write; return them all."""
        with self._locked():
            data = self._read()
            missing = {name: gen() for name, gen in wanted.items() if name not in data}
            if missing:
                data.update(missing)
                self._write(data)
            self._cache = data
            return {name: data[name] for name in wanted}

    def peek(self, name: str) -> str | None:
        """The secret if it exists, without creating it."""
        return self.all().get(name)
