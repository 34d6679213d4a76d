"""The one exception tree of ecokit.

    EcokitError                   anything ecokit expects and can explain (CLI: red line, exit 1)
    ├── ConfigError               ecokit.yaml / profile / registry / environment is wrong
    ├── SecretsError              the secret store cannot be read or written safely
    ├── CertError                 certificate generation or verification failed
    ├── RenderError               a template failed to render
    ├── RuntimeUnavailable        the chosen runtime (docker engine, binaries) is not usable
    ├── EngineError               the Docker engine refused a request (says what it answered)
    ├── ServiceError              a service failed to start, became unready or died
    │   └── ReadinessTimeout      a service did not pass its readiness probe in time
    ├── PortInUse                 a port the stack needs is held by someone else
    ├── StackNotRunning           a command needs a running stack and there is none
    ├── StoreError                InfluxDB answered with an error or could not be reached
    ├── BrokerError               the MQTT broker refused or dropped us
    └── UsageError                a command was called wrongly (CLI: exit 2)

Every error's ``str()`` is a complete sentence a user can act on: it names the file, key,
service, URL or message at fault.
"""

from __future__ import annotations


class EcokitError(Exception):
    """Root of every error ecokit raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(EcokitError):
    """A configuration file, key or value is wrong.

    ``source`` is the file (or ``environment``/``flag``), ``key`` the dotted path at fault.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None,
                 hint: str | None = None) -> None:
        self.source = source
        self.key = key
        where = ""
        if source and key:
            where = f"{source}: {key}: "
        elif source:
            where = f"{source}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}", hint=hint)


class SecretsError(EcokitError):
    """The secret store cannot be used safely."""


class CertError(EcokitError):
    """Certificate generation, loading or verification failed."""


class RenderError(EcokitError):
    """A template failed to render."""


class RuntimeUnavailable(EcokitError):
    """The runtime asked for cannot run here."""


class EngineError(EcokitError):
    """The Docker engine refused a request; carries what was asked and what the engine said."""

    def __init__(self, action: str, explanation: str, *, status: int | None = None,
                 hint: str | None = None) -> None:
        self.action = action
        self.explanation = explanation
        self.status = status
        answered = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"docker engine: {action} failed{answered}: {explanation}", hint=hint)


class ServiceError(EcokitError):
    """A service failed; carries the service name and the tail of its log."""

    def __init__(self, service: str, message: str, *, log_tail: str = "",
                 hint: str | None = None) -> None:
        self.service = service
        self.log_tail = log_tail
        super().__init__(f"{service}: {message}", hint=hint)


class ReadinessTimeout(ServiceError):
    """A service did not become ready in time."""


class PortInUse(EcokitError):
    """A port the stack needs is taken by a process that is not part of the stack.

    ``key`` is the configuration key that chose the port (``broker.ports.mqtt``), ``source``
    where its value came from, ``holder`` the process listening on it, when known.
    """

    def __init__(self, service: str, port: int, host: str, *, key: str | None = None, source: str | None = None,
                 holder: str | None = None) -> None:
        self.service = service
        self.port = port
        self.host = host
        self.key = key
        self.source = source
        self.holder = holder
        chosen = f" ({key}, from {source})" if key and source else f" ({key})" if key else ""
        who = f"by {holder}" if holder else "by another process"
        if key:
            env = "ECOKIT_" + key.upper().replace(".", "__")
            hint = (f"stop {holder or 'that process'}, or give {service} another port: set {key} in ecokit.yaml, or "
                    f"{env}=<port> for one command")
        else:
            hint = f"free the port or set another one for {service} in ecokit.yaml"
        super().__init__(f"{service}: port {host}:{port}{chosen} is already in use {who}", hint=hint)


class StackNotRunning(EcokitError):
    """The command needs a running stack."""


class StoreError(EcokitError):
    """InfluxDB refused a request or could not be reached."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None,
                 body: str | None = None) -> None:
        self.url = url
        self.status = status
        self.body = body
        parts = [message]
        if url:
            parts.append(f"({url}")
            parts[-1] += f" answered {status})" if status is not None else ")"
        if body:
            parts.append(f": {body.strip()[:300]}")
        super().__init__(" ".join(parts[:2]) + ("".join(parts[2:]) if len(parts) > 2 else ""))


class BrokerError(EcokitError):
    """The MQTT broker refused or dropped a connection or operation."""


class UsageError(EcokitError):
    """A command was called with arguments that do not fit together."""
