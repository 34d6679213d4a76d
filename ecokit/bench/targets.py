"""Where a bench run connects and as whom: the running stack (``ecokit-admin``, or each
publisher as one of the stack's registered devices), any broker URL, or the broker the
environment names (``BROKER_HOST``/``BROKER_PORT``, ``ECOKIT_BROKER_URL``).

Wraps ``ecokit.clients`` (a running stack's broker as its devices or ``ecokit-admin``) and
``ecokit.mqtt.target`` (any broker URL) instead of repeating them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ecokit.acl import ADMIN_USER
from ecokit.bench.scenario import Overrides
from ecokit.clients import fleet_ids, register_devices, stack_connection
from ecokit.errors import ConfigError, UsageError
from ecokit.mqtt.target import BrokerChoice, BrokerTarget, ClientAuth
from ecokit.runtime.local import LocalRuntime
from ecokit.services.broker import BROKER
from ecokit.stack import Stack


@dataclass(frozen=True)
class BenchTarget:
    broker: BrokerTarget
    auth: ClientAuth  # subscribers, the $SYS reader, and publishers unless ``devices`` is set
    description: str
    devices: tuple[tuple[str, ClientAuth], ...] = ()  # publishers connect as these devices, in order
    device_broker: BrokerTarget | None = None  # where those devices connect (default: ``broker``)
    broker_pid: int | None = None  # the broker's process on this machine (CPU and memory sampling)

    @property
    def as_devices(self) -> bool:
        return bool(self.devices)


def stack_target(stack: Stack, *, devices: int | None = None) -> BenchTarget:
    """The running stack's broker (TLS and mTLS when its profile has them). ``devices=N``: the
    publishers use the first N registered devices' own credentials (and certificates under
    mTLS); subscribers are always ``ecokit-admin`` (devices may not read other devices' topics)."""
    admin = stack_connection(stack, as_admin=True)
    pid = broker_pid(stack)
    if devices is None:
        return BenchTarget(admin.target, admin.auth(ADMIN_USER), admin.description, broker_pid=pid)
    per_device = stack_connection(stack)
    ids = fleet_ids(stack, devices)
    return BenchTarget(admin.target, admin.auth(ADMIN_USER),
                       f"{per_device.target.url}: publishers as {len(ids)} registered devices; "
                       f"{admin.target.url}: subscribers as {ADMIN_USER}",
                       devices=tuple((i, per_device.auth(i)) for i in ids), device_broker=per_device.target,
                       broker_pid=pid)


def broker_pid(stack: Stack) -> int | None:
    """The pid of the stack's broker when it runs as a local process (else None)."""
    if stack.current_runtime() != "local":
        return None
    return LocalRuntime(stack.paths, stack.readiness()).running_pid(BROKER)


def url_target(url: str, *, username: str | None = None, password: str | None = None,
               ca_file: Path | None = None, client_cert: tuple[Path, Path] | None = None,
               verify: bool = True) -> BenchTarget:
    """Any broker; every client uses the same credentials (from the URL or the arguments)."""
    broker = BrokerChoice(url, username=username, password=password, ca_file=ca_file, client_cert=client_cert,
                          verify=verify)
    return choose_target(None, broker)[0]


# -- the environment of load tests ---------------------------------------------------------

ENV_DOC = {
    "ECOKIT_BROKER_URL": "broker URL, mqtt[s]://[user:password@]host:port (wins over BROKER_HOST/BROKER_PORT)",
    "BROKER_HOST": "broker host (with BROKER_PORT, default 1883)",
    "BROKER_PORT": "broker port",
    "BROKER_USERNAME": "username for the broker given by the variables above",
    "BROKER_PASSWORD": "password for it",
    "ECOKIT_BROKER_CA": "CA file for an mqtts:// broker",
    "QOS": "QoS of every phase (0, 1 or 2)",
    "PAYLOAD_SIZE": "payload bytes of every phase",
}


@dataclass(frozen=True)
class EnvBroker:
    url: str
    username: str | None
    password: str | None
    ca_file: Path | None
    source: str  # which variables named it


def broker_from_env(env: Mapping[str, str]) -> EnvBroker | None:
    """The broker the environment names, or None (then: the running stack)."""
    url = env.get("ECOKIT_BROKER_URL", "").strip()
    source = "ECOKIT_BROKER_URL"
    host = env.get("BROKER_HOST", "").strip()
    port = env.get("BROKER_PORT", "").strip()
    if not url and (host or port):
        if not host:
            raise ConfigError("BROKER_PORT is set but BROKER_HOST is not", source="environment", key="BROKER_HOST")
        number = _int(port, "BROKER_PORT", 1, 65535) if port else 1883
        url = f"mqtt://{host}:{number}"
        source = "BROKER_HOST/BROKER_PORT"
    if not url:
        return None
    ca = env.get("ECOKIT_BROKER_CA", "").strip()
    return EnvBroker(url, env.get("BROKER_USERNAME") or None, env.get("BROKER_PASSWORD") or None,
                     Path(ca) if ca else None, source)


def overrides_from_env(env: Mapping[str, str]) -> Overrides:
    """``QOS`` and ``PAYLOAD_SIZE`` (the documented load-test variables)."""
    qos = env.get("QOS", "").strip()
    size = env.get("PAYLOAD_SIZE", "").strip()
    return Overrides(qos=_int(qos, "QOS", 0, 2) if qos else None,
                     payload_size=_int(size, "PAYLOAD_SIZE", 1, 268_000_000) if size else None)


def _int(text: str, name: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a whole number", source="environment", key=name) from None
    if not low <= value <= high:
        raise ConfigError(f"{value} is outside {low}..{high}", source="environment", key=name)
    return value


def broker_choice(url: str | None, env: Mapping[str, str], *, username: str | None = None,
                  password: str | None = None, ca_file: Path | None = None,
                  client_cert: tuple[Path, Path] | None = None, verify: bool = True) -> BrokerChoice | None:
    """The broker a run was pointed at: ``url`` (--broker), else the environment's
    (``ECOKIT_BROKER_URL``, ``BROKER_HOST``/``BROKER_PORT``), else None (the running stack).
    Credentials given here win over the environment's and the URL's."""
    if url is None:
        from_env = broker_from_env(env)
        if from_env is None:
            return None
        url = from_env.url
        username = username if username is not None else from_env.username
        password = password if password is not None else from_env.password
        ca_file = ca_file if ca_file is not None else from_env.ca_file
    return BrokerChoice(url, username=username, password=password, ca_file=ca_file, client_cert=client_cert,
                        verify=verify)


def choose_target(stack: Stack | None, broker: BrokerChoice | None, *, devices: int | None = None,
                  register: bool = False) -> tuple[BenchTarget, list[str]]:
    """Where the run connects: ``broker``, else the running stack (publishers as its first
    ``devices`` registered devices when given, registering the missing ones with ``register``).
    Returns the target and the devices registered for it."""
    if broker is not None:
        if devices is not None:
            raise UsageError("--as-devices uses the stack's registered devices; it does not go with a broker URL")
        conn = broker.connection()
        return BenchTarget(conn.target, conn.auth("bench"), conn.description), []
    if stack is None:
        raise ConfigError("no stack to run against", hint="run `ecokit init`, or give --broker URL")
    added: list[str] = []
    if devices is not None and devices > len(stack.devices()):
        if not register:
            require_devices(stack, devices)
        added = register_devices(stack, devices - len(stack.devices()))
    return stack_target(stack, devices=devices), added


def require_devices(stack: Stack, count: int) -> None:
    if count > len(stack.devices()):
        raise UsageError(f"publishing as devices needs {count} registered devices; the registry has "
                         f"{len(stack.devices())}", hint=f"add --register, or `ecokit devices add --count "
                                                         f"{count - len(stack.devices())}`")

