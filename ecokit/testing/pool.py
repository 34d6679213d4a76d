"""Real stacks for a test session, shared while their settings match.

A :class:`StackPool` starts a throwaway project (free ports, local runtime unless told)
the first time a setting is asked for, hands the same running stack to every later test
asking for the same setting within the same owner (the session, or one module), and
stops (and purges) them when the owner ends, even when tests failed. ecokit's pytest
plugin (``ecokit.pytest_plugin``) is built on it; any harness can use it directly:

    with StackPool(Path(tmp)) as pool:
        stack = pool.get(StackSettings(profile="tls"))
"""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ecokit.acl import ADMIN_USER
from ecokit.clients import shadow_client
from ecokit.errors import ConfigError, EcokitError
from ecokit.mqtt.tls import tls_context
from ecokit.shadow.client import ShadowClient
from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1
from ecokit.testing.influx import InfluxHelper
from ecokit.testing.stack import free_ports_overlay, running_stack, write_project

SESSION = "session"


@dataclass(frozen=True)
class StackSettings:
    """What a test asks of its stack. Equal settings share one running stack."""

    profile: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    devices: int = 3
    # An ecokit.yaml of yours: copied (with its registry, profiles/ and config/) into a
    # throwaway folder, its ports replaced by free ones, so your own stack is never touched.
    config: Path | None = None
    runtime: str = "local"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, runtime: str = "local") -> StackSettings:
        known = {"profile", "overrides", "devices", "config", "runtime"}
        unknown = sorted(set(values) - known - {"scope"})
        if unknown:
            raise ConfigError(f"unknown ecokit stack setting(s) {', '.join(unknown)}",
                              hint="use profile=, overrides=, devices=, config=, runtime=, scope=")
        config = values.get("config")
        return cls(profile=values.get("profile"), overrides=dict(values.get("overrides") or {}),
                   devices=int(values.get("devices", 3)), config=Path(config) if config else None,
                   runtime=str(values.get("runtime") or runtime))

    def key(self) -> str:
        return json.dumps({"profile": self.profile, "overrides": self.overrides, "devices": self.devices,
                           "config": str(self.config) if self.config else None, "runtime": self.runtime},
                          sort_keys=True, default=str)


@dataclass(frozen=True)
class DeviceIdentity:
    """A registered device of a running stack: what a device client needs to connect."""

    id: str
    password: str
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None

    @property
    def username(self) -> str:
        return self.id


class TestStack:
    """A running stack handed to tests, with the helpers they use most."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, stack: Stack, settings: StackSettings) -> None:
        self.stack = stack
        self.settings = settings
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.stack.config.stack

    @property
    def project_dir(self) -> Path:
        return self.stack.project_dir

    def broker_url(self, scheme: str | None = None) -> str:
        """The broker URL for ``scheme`` (default: mqtts when the profile has TLS, else mqtt)."""
        endpoints = self.stack.broker_endpoints()
        scheme = scheme or ("mqtts" if self.stack.config.tls.enabled else "mqtt")
        if scheme not in endpoints:
            raise ConfigError(f"stack {self.name!r} has no {scheme} listener (it has {', '.join(endpoints)})")
        return endpoints[scheme]

    def admin_credentials(self) -> tuple[str, str]:
        return self.stack.service_credentials(ADMIN_USER)

    def device(self, device_id: str) -> DeviceIdentity:
        """The credentials (and, under TLS, certificate paths) of a registered device."""
        username, password = self.stack.device_credentials(device_id)
        tls = self.stack.config.tls.enabled
        paths = self.stack.cert_paths
        return DeviceIdentity(username, password, paths.ca_cert if tls else None,
                              paths.client_cert(device_id) if tls else None,
                              paths.client_key(device_id) if tls else None)

    def new_device(self, prefix: str = "t") -> DeviceIdentity:
        """Register a fresh device and load it into the running broker (a reload, no restart)."""
        device_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
        with self._lock:
            self.stack.add_devices([device_id])
            self.stack.secret_values()
            if self.stack.config.tls.enabled:
                self.stack.generate_certs()
            self.stack.up(self.settings.runtime)
        return self.device(device_id)

    def influx(self) -> InfluxHelper:
        return InfluxHelper(InfluxV1(self.stack.influx_endpoint("reader")))

    def shadow_client(self) -> ShadowClient:
        """A connected shadow client as ecokit-admin (close it when done)."""
        return shadow_client(self.stack).connect()

    def tls_context(self, device: DeviceIdentity | None = None) -> ssl.SSLContext:
        """A client TLS context trusting the stack CA (presenting ``device``'s certificate under mTLS)."""
        mtls = device is not None and self.stack.config.tls.mtls
        return tls_context(self.stack.cert_paths.ca_cert, certfile=device.cert_file if mtls and device else None,
                           keyfile=device.key_file if mtls and device else None)


class StackPool:
    """Stacks by (owner, settings); every one is stopped and purged by :meth:`close`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._stacks: dict[tuple[str, str], TestStack] = {}
        self._exits: dict[tuple[str, str], contextlib.ExitStack] = {}
        self._failed: dict[tuple[str, str], EcokitError] = {}
        self._lock = threading.Lock()

    def get(self, settings: StackSettings, owner: str = SESSION) -> TestStack:
        key = (owner, settings.key())
        with self._lock:
            if key in self._failed:
                # One failed start is reported to every test that asks, not retried each time.
                raise self._failed[key]
            if key not in self._stacks:
                exits = contextlib.ExitStack()
                try:
                    stack = exits.enter_context(self._start(settings))
                except EcokitError as exc:
                    exits.close()
                    self._failed[key] = exc
                    raise
                except BaseException:
                    exits.close()
                    raise
                self._exits[key] = exits
                self._stacks[key] = TestStack(stack, settings)
            return self._stacks[key]

    @contextlib.contextmanager
    def _start(self, settings: StackSettings) -> Iterator[Stack]:
        name = f"pt-{uuid.uuid4().hex[:8]}"
        folder = self.workdir / name
        if settings.config is not None:
            config = copy_project(settings.config, folder, stack=name,
                                  overrides={**settings.overrides, "runtime": settings.runtime})
        else:
            config = write_project(folder, devices=settings.devices, stack=name,
                                   extra={**settings.overrides, "runtime": settings.runtime})
        with running_stack(config, profile=settings.profile, runtime=settings.runtime) as stack:
            yield stack

    def close(self, owner: str | None = None) -> None:
        """Stop the stacks of ``owner`` (all with None); a stop that fails does not keep the others up."""
        with self._lock:
            keys = [k for k in self._exits if owner is None or k[0] == owner]
            exits = [self._exits.pop(k) for k in keys]
            for k in keys:
                self._stacks.pop(k, None)
            if owner is None:
                self._failed.clear()
            else:
                for k in [k for k in self._failed if k[0] == owner]:
                    del self._failed[k]
        problems = []
        for exit_stack in exits:
            try:
                exit_stack.close()
            except Exception as exc:  # keep stopping the others; report after
                problems.append(exc)
        if problems:
            raise problems[0]

    def running(self) -> list[TestStack]:
        with self._lock:
            return list(self._stacks.values())

    def __enter__(self) -> StackPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def copy_project(config: Path, folder: Path, *, stack: str, overrides: Mapping[str, Any]) -> Path:
    """Copy a project (ecokit.yaml, its registry files, profiles/ and config/) into ``folder``
    with every port replaced by a free one and the stack renamed; returns the new ecokit.yaml."""
    if not config.is_file():
        raise ConfigError(f"{config} does not exist", hint="config= takes the path of an ecokit.yaml")
    source = config.parent
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config", "profiles"):
        if (source / name).is_dir():
            shutil.copytree(source / name, folder / name, dirs_exist_ok=True)
    body = yaml.safe_load(config.read_text()) or {}
    if not isinstance(body, dict):
        raise ConfigError("the top level must be a mapping", source=str(config))
    registry = body.get("registry")
    for relpath in registry.values() if isinstance(registry, dict) else ():
        if isinstance(relpath, str) and (source / relpath).is_file() and not Path(relpath).is_absolute():
            (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / relpath, folder / relpath)
    body["stack"] = stack
    body.pop("certs", None)  # certificates are made for the copy, in the copy
    for section, values in (*free_ports_overlay().items(), *overrides.items()):
        if isinstance(values, Mapping) and isinstance(body.get(section), dict):
            body[section] = _merged(body[section], values)
        else:
            body[section] = values
    path = folder / "ecokit.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _merged(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = _merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) \
            else value
    return out
