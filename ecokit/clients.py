"""How a client on this machine reaches a running stack's broker, and as whom: each of its
registered devices with its own credentials (and, for mutual TLS, its own certificate), or
``ecokit-admin``. The simulator, the bench and ``ecokit command send`` connect through here;
any other broker is a plain :func:`ecokit.mqtt.target.url_connection`. ``ecokit shadow`` and
``ecokit replay`` connect as ecokit's own users (:func:`service_client`)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from ecokit.acl import ADMIN_USER, REPLAY_USER
from ecokit.errors import ConfigError, StackNotRunning
from ecokit.mqtt.fast import FastMqtt
from ecokit.mqtt.target import BrokerTarget, ClientAuth, Connection
from ecokit.services.shadow import SHADOW
from ecokit.shadow.client import ShadowClient
from ecokit.stack import Stack


def missing_devices(stack: Stack, vehicles: int) -> int:
    return max(0, vehicles - len(stack.devices()))


def register_devices(stack: Stack, count: int, *, prefix: str = "vehicle-") -> list[str]:
    """Append ``count`` numbered devices to the registry (passwords generated) and, when the
    stack runs, load them into the broker (a reload, not a restart)."""
    taken = {d.id for d in stack.devices()}
    width = max(4, len(str(len(taken) + count)))
    numbered = (f"{prefix}{n:0{width}d}" for n in itertools.count(1))
    wanted = list(itertools.islice((i for i in numbered if i not in taken), count))
    added = stack.add_devices(wanted)
    stack.secret_values()
    if added and stack.current_runtime() is not None:
        stack.up()
    return added


def stack_runs_shadows(stack: Stack) -> bool:
    """Whether the running stack started the shadow service (the vehicles' shadow requests get
    answers). Read from what `up` recorded: asking must not build the plan."""
    return SHADOW in stack.recorded_services()


def fleet_ids(stack: Stack, vehicles: int) -> list[str]:
    devices = stack.devices()
    if len(devices) < vehicles:
        raise ConfigError(f"{vehicles} vehicles need {vehicles} registered devices; the registry has {len(devices)}",
                          source=str(stack.devices_file),
                          hint=f"run with --register, or `ecokit devices add --count {vehicles - len(devices)}`")
    return [d.id for d in devices[:vehicles]]


def internal_target(stack: Stack) -> BrokerTarget:
    """The broker's internal listener (plain MQTT on this machine's loopback): where ecokit's
    own users connect; the device listeners bind every client id to its username."""
    return BrokerTarget("127.0.0.1", stack.config.broker.ports.internal)


def service_client(stack: Stack, username: str) -> tuple[BrokerTarget, ClientAuth]:
    """The stack's broker for one of ecokit's own users (``ecokit-admin``, ``ecokit-replay``)."""
    user, password = stack.service_credentials(username)
    return internal_target(stack), ClientAuth(user, password)


def shadow_client(stack: Stack, username: str = ADMIN_USER) -> ShadowClient:
    """A shadow client for the stack's broker as one of ecokit's users (connect it to use it)."""
    target, auth = service_client(stack, username)
    return ShadowClient(target.host, target.port, username=auth.username, password=auth.password,
                        tls=target.tls_context(auth.client_cert) if target.tls else None)


def replay_publisher(stack: Stack, *, client_id: str | None = None) -> FastMqtt:
    """A connected high-rate publisher as ``ecokit-replay`` to the running stack's broker."""
    target, auth = service_client(stack, REPLAY_USER)
    mqtt = FastMqtt(target.host, target.port, client_id=client_id or f"ecokit-replay-{os.getpid()}",
                    username=auth.username, password=auth.password,
                    tls=target.tls_context(auth.client_cert) if target.tls else None)
    mqtt.connect()
    return mqtt


def device_target(stack: Stack) -> BrokerTarget:
    """The listener devices use: TLS whenever the stack's profile has it on."""
    endpoints = stack.broker_endpoints()
    tls = stack.config.tls.enabled
    url = endpoints.get("mqtts" if tls else "mqtt") or endpoints.get("mqtt") or endpoints.get("mqtts")
    if url is None:
        raise ConfigError("the stack's broker has no MQTT endpoint for devices")
    target, _, _ = BrokerTarget.from_url(url, ca_file=stack.cert_paths.ca_cert if url.startswith("mqtts") else None)
    return target


def stack_connection(stack: Stack, *, as_admin: bool = False) -> Connection:
    """The running stack's broker; TLS (and mTLS) whenever the stack's profile has it on."""
    if stack.current_runtime() is None:
        raise StackNotRunning(f"stack {stack.config.stack!r} is not up",
                              hint="run `ecokit up`, or give --broker URL")
    if as_admin:
        # Many connections as one user (bench subscribers, a fleet --as-admin): the internal
        # listener, where client ids are not bound to the username.
        target, admin = service_client(stack, ADMIN_USER)
        return Connection(target, lambda vid: admin, f"{target.url} as {ADMIN_USER}")
    target = device_target(stack)
    mtls = target.tls and stack.config.tls.mtls
    if mtls:
        stack.generate_certs()  # idempotent: issues certificates for devices registered since
    paths = stack.cert_paths

    def cert_of(name: str) -> tuple[Path, Path] | None:
        return (paths.client_cert(name), paths.client_key(name)) if mtls else None

    def device_auth(vehicle_id: str) -> ClientAuth:
        user, password = stack.device_credentials(vehicle_id)
        return ClientAuth(user, password, cert_of(vehicle_id))

    return Connection(target, device_auth, f"{target.url} with each device's credentials"
                      + (" and certificate" if mtls else ""))
