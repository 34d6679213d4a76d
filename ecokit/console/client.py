"""A client of the console's HTTP API, for `ecokit command send` and scripts: send commands
and follow them to a final state, with the ids the console shows."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from ecokit.console.lifecycle import FINAL
from ecokit.errors import EcokitError


class ConsoleError(EcokitError):
    """The console refused a request or could not be reached; says what it answered."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 field: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.field = field


@dataclass(frozen=True)
class ConsoleEndpoint:
    url: str  # http://host:port (no trailing slash)
    token: str

    @property
    def page(self) -> str:
        """The URL a person opens: the token goes once, in the query (like Jupyter's)."""
        return f"{self.url}/?token={self.token}"

    @classmethod
    def for_stack(cls, stack: HasConsole) -> ConsoleEndpoint | None:
        """The stack's console, or None when it has none (``Stack.console_endpoint``)."""
        return stack.console_endpoint()


class HasConsole(Protocol):
    def console_endpoint(self) -> ConsoleEndpoint | None: ...


class ConsoleClient:
    def __init__(self, endpoint: ConsoleEndpoint, *, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {endpoint.token}"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ConsoleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ready(self) -> bool:
        """Whether the console answers and is connected to the broker (never raises)."""
        try:
            return self.session.get(f"{self.endpoint.url}/readyz", timeout=min(self.timeout, 2.0)).status_code == 200
        except requests.RequestException:
            return False

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.endpoint.url}{path}"
        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ConsoleError(f"the console at {self.endpoint.url} cannot be reached: {type(exc).__name__}",
                               hint="is the stack up? (`ecokit status`)") from None
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                message, code, field = str(err["message"]), str(err["code"]), err.get("field")
            except (ValueError, KeyError, TypeError):
                message, code, field = resp.text[:200], "error", None
            raise ConsoleError(f"the console refused {method} {path.split('?')[0]}: {message}",
                               status=resp.status_code, code=code, field=field)
        return resp.json()

    def send(self, command: str, args: dict[str, Any], *, vehicles: Sequence[str] | None = None,
             timeout_s: float | None = None, expires_s: float | None = None) -> dict[str, Any]:
        """POST /api/commands: to ``vehicles`` (all of them when None); returns {batch, items}."""
        body: dict[str, Any] = {"command": command, "args": args}
        if vehicles is None:
            body["all"] = True
        elif len(vehicles) == 1:
            body["vehicle"] = vehicles[0]
        else:
            body["vehicles"] = list(vehicles)
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        if expires_s is not None:
            body["expires_s"] = expires_s
        result: dict[str, Any] = self._call("POST", "/api/commands", json=body)
        return result

    def batch(self, batch: str, limit: int = 1000) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call("GET", "/api/commands", params={"batch": batch, "limit": limit})[
            "items"]
        return items

    def follow(self, batch: str, count: int, *, deadline: float, enough: int | None = None,
               on_final: Callable[[dict[str, Any]], None] | None = None,
               interval: float = 0.1) -> list[dict[str, Any]]:
        """Poll the batch until every command is final, ``enough`` of them were acknowledged,
        or ``deadline`` (monotonic) passes; returns the commands as last seen."""
        reported: set[str] = set()
        commands: list[dict[str, Any]] = []
        while True:
            commands = self.batch(batch, limit=min(max(count, 1), 1000))
            for c in commands:
                if c["state"] in FINAL and c["id"] not in reported:
                    reported.add(c["id"])
                    if on_final is not None:
                        on_final(c)
            acked = sum(1 for c in commands if c["state"] in ("succeeded", "failed"))
            if len(reported) >= count or (enough is not None and acked >= enough):
                return commands
            if time.monotonic() >= deadline:
                return commands
            time.sleep(interval)
