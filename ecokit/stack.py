"""A stack: one ecokit.yaml (+ profile), its registry, secrets, certs, plan and runtime.

This is the library's front door; the CLI and the tests drive everything through it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ecokit.acl import HEALTH_USER, SERVICE_ROLES, AccessPolicy, Principal
from ecokit.analytics import DailyRollup, apply_continuous_queries, apply_task, daily_rollup, read_daily
from ecokit.analytics import refresh as refresh_daily
from ecokit.certs import CertAuthority, CertPaths, CertPolicy, CertReport, CertStatus
from ecokit.config.loader import LoadedConfig, find_config_file, load_config
from ecokit.config.model import StackConfig
from ecokit.config.regions import parse_region
from ecokit.config.registry import Device, User, append_devices, load_devices, load_users
from ecokit.config.rules import retention_policies, retention_policy
from ecokit.console.client import ConsoleEndpoint
from ecokit.errors import ConfigError, PortInUse, RuntimeUnavailable, StackNotRunning
from ecokit.geofence.model import GeofenceError, GeofenceSet
from ecokit.geofence.store import GeofenceStore
from ecokit.machine import StackIndex, new_entry, state_dir
from ecokit.paths import StackPaths, Target
from ecokit.render import PathMap
from ecokit.runtime import RuntimeName, docker_engine_answers, docker_runtime_installed
from ecokit.runtime.base import Action, Progress, ReadinessContext, Runtime, no_progress
from ecokit.runtime.local import find_binary
from ecokit.secrets import SecretStore, generate_password, generate_token
from ecokit.services import context as names
from ecokit.services.broker import broker_ports
from ecokit.services.context import Capabilities, PasswordHashes, Placement, PlanContext
from ecokit.services.influxdb import INFLUXDB, POST_START, PostStart, influx_version
from ecokit.services.pipeline import GEOFENCES_FILE, PROCESSOR
from ecokit.services.plan import build_plan
from ecokit.services.spec import LocalCommand, ServiceSpec
from ecokit.store.influx import InfluxEndpoint, InfluxV1

if TYPE_CHECKING:
    from ecokit.runtime.docker import DockerSettings

InfluxRole = Literal["admin", "writer", "reader"]

# Names every service of the stack answers to on the docker network; the server
# certificate covers all of them.
# The stack's own secrets (the registry adds device/<id> and user/<name>), with their generators.
STACK_SECRETS: dict[str, Callable[[], str]] = {
    names.HASH_SEED: generate_token,
    names.INFLUX_ADMIN: generate_password, names.INFLUX_WRITER: generate_password,
    names.INFLUX_READER: generate_password, names.INFLUX_TOKEN: generate_token,
    names.GRAFANA_ADMIN: generate_password, names.GRAFANA_SECRET_KEY: generate_token,
    names.EMQX_COOKIE: generate_password, names.EMQX_DASHBOARD: generate_password,
    names.EMQX_API_SECRET: generate_password,
    names.CONSOLE_TOKEN: generate_token,
    **{f"service/{role.username}": generate_password for role in SERVICE_ROLES},
}

DOCKER_HOSTNAMES = ("broker", "emqx", "mosquitto", "influxdb", "grafana", "prometheus",
                    "bridge", "processor", "shadow", "brokerstats")


class Stack:
    """Everything about one stack, loaded once and passed down explicitly."""

    def __init__(self, loaded: LoadedConfig, *, index: StackIndex | None = None) -> None:
        self.loaded = loaded
        # The machine-wide list of stacks (`ecokit ps`); `up` records this stack there.
        self.index = index or StackIndex(state_dir({}))
        self.config: StackConfig = loaded.config
        self.project_dir = loaded.project_dir
        self.paths = StackPaths(self.project_dir, self.config.stack)
        self.secrets = SecretStore(self.paths.secrets_file)
        self.cert_paths = CertPaths(loaded.path(self.config.certs.dir))
        self._devices: list[Device] | None = None
        self._users: list[User] | None = None
        self._secret_values: dict[str, str] | None = None
        self._plans: dict[str, list[ServiceSpec]] = {}
        self._hashes = PasswordHashes(self.paths.root / "password-hashes.json")
        self.notes: list[str] = []

    @classmethod
    def load(cls, config_file: Path | None = None, *, project_dir: Path | None = None,
             profile: str | None = None, env: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> Stack:
        """Load the stack of ``config_file``, or of the nearest ecokit.yaml from ``project_dir``."""
        if config_file is None:
            config_file = find_config_file(project_dir or Path.cwd())
            if config_file is None:
                where = project_dir or Path.cwd()
                raise ConfigError(f"no ecokit.yaml in {where} or its parents",
                                  hint="run `ecokit init` to create one")
        loaded = load_config(config_file, project_dir=project_dir, profile=profile, env=env,
                             overrides=overrides)
        if profile is None:
            # Commands after `up --profile tls` keep talking to the stack that is running.
            stack_name = loaded.config.stack
            recorded = StackPaths(loaded.project_dir, stack_name).active_profile_file
            if recorded.is_file() and (name := recorded.read_text().strip()):
                loaded = load_config(config_file, project_dir=project_dir, profile=name, env=env,
                                     overrides=overrides)
                if loaded.config.stack != stack_name:
                    raise ConfigError(f"profile {name!r} changes the stack name; profiles cannot",
                                      key="stack")
        return cls(loaded, index=StackIndex(state_dir(env or {})))

    # -- registry and credentials -------------------------------------------------------

    def _label(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.project_dir))
        except ValueError:
            return str(path)

    @property
    def devices_file(self) -> Path:
        return self.loaded.path(self.config.registry.devices)

    @property
    def users_file(self) -> Path:
        return self.loaded.path(self.config.registry.users)

    @property
    def geofences_file(self) -> Path:
        return self.loaded.path(self.config.geofences.file)

    def geofence_store(self) -> GeofenceStore:
        """The stack's geofence file; fences far outside the simulated region whose
        swapped twin lies inside it are reported as probably [lat, lng]."""
        region = parse_region(self.config.simulator.region)
        return GeofenceStore(self.geofences_file, label=self._label(self.geofences_file),
                             region=(region.west, region.south, region.east, region.north))

    def geofences(self) -> GeofenceSet:
        """The declared geofences (GeofenceError, naming each bad feature, when invalid)."""
        return self.geofence_store().load()

    def devices(self) -> list[Device]:
        if self._devices is None:
            self._devices = load_devices(self.devices_file, self._label(self.devices_file))
        return self._devices

    def users(self) -> list[User]:
        if self._users is None:
            users = load_users(self.users_file, self._label(self.users_file))
            device_ids = {d.id.casefold() for d in self.devices()}
            for i, user in enumerate(users):
                if user.username.casefold() in device_ids:
                    raise ConfigError(f"{user.username!r} is also a device id; usernames must be distinct",
                                      source=self._label(self.users_file), key=f"users[{i}].username")
            self._users = users
        return self._users

    def add_devices(self, ids: Iterable[str]) -> list[str]:
        """Append devices to the registry (comments and layout kept); returns the ids added. The
        registry is parsed once (it may hold 100,000 devices); their passwords are generated on
        the next ``secret_values()``."""
        registered = self.devices()
        added = append_devices(self.devices_file, ids, registered=registered)
        if added:
            self._devices = [*registered, *(Device(id=i) for i in added)]
            self._users = None  # a username may now clash with a device id
            self._secret_values = None
            self._plans.clear()
        return added

    def reload_registry(self) -> None:
        self._devices = self._users = None
        self._secret_values = None
        self._plans.clear()

    def _wanted_secrets(self) -> dict[str, Callable[[], str]]:
        wanted = dict(STACK_SECRETS)
        for device in self.devices():
            if device.password is None:
                wanted[f"device/{device.id}"] = generate_password
        for user in self.users():
            if user.password is None:
                wanted[f"user/{user.username}"] = generate_password
        return wanted

    def secret_values(self) -> dict[str, str]:
        """Every secret the stack needs, generated (once) and stored 0600 when missing."""
        if self._secret_values is None:
            self._secret_values = self.secrets.ensure(self._wanted_secrets())
        return self._secret_values

    def _stack_secrets(self, *wanted: str) -> dict[str, str]:
        """Some of the stack's own secrets (not the registry's): an endpoint or a service user's
        credentials do not need the registry loaded, which takes seconds with 10,000 devices."""
        if self._secret_values is not None:
            return {name: self._secret_values[name] for name in wanted}
        return self.secrets.ensure({name: STACK_SECRETS[name] for name in wanted})

    def device_password(self, device: Device) -> str:
        return device.password or self.secret_values()[f"device/{device.id}"]

    def service_credentials(self, username: str) -> tuple[str, str]:
        """(username, password) of one of ecokit's own MQTT users, e.g. ``ecokit-admin``."""
        key = f"service/{username}"
        if key not in STACK_SECRETS:
            raise ConfigError(f"{username!r} is not one of ecokit's service users")
        return username, self._stack_secrets(key)[key]

    def device_credentials(self, device_id: str) -> tuple[str, str]:
        for device in self.devices():
            if device.id == device_id:
                return device.id, self.device_password(device)
        raise ConfigError(f"device {device_id!r} is not registered", source=self._label(self.devices_file),
                          hint=f"run: ecokit devices add {device_id}")

    def access_policy(self) -> AccessPolicy:
        values = self.secret_values()
        principals = [Principal(r.username, values[f"service/{r.username}"], "service",
                                superuser=r.superuser, grants=r.grants, generated=True) for r in SERVICE_ROLES]
        principals += [Principal(d.id, self.device_password(d), "device", generated=d.password is None)
                       for d in self.devices()]
        for user in self.users():
            from ecokit.acl import Grant

            grants = tuple([Grant("publish", t) for t in user.publish] +
                           [Grant("subscribe", t) for t in user.subscribe])
            principals.append(Principal(user.username, user.password or values[f"user/{user.username}"],
                                        "user", superuser=user.superuser, grants=grants,
                                        generated=user.password is None))
        return AccessPolicy(tuple(principals), anonymous=self.config.auth.anonymous, open=self.config.auth.open)

    # -- certificates ------------------------------------------------------------------

    def server_names(self) -> list[str]:
        hosts = ["localhost", "127.0.0.1", "::1"]
        if self.config.bind not in ("0.0.0.0", "::", *hosts):
            hosts.append(self.config.bind)
        hosts += list(DOCKER_HOSTNAMES)
        hosts += [f"ecokit-{self.config.stack}-{name}" for name in DOCKER_HOSTNAMES]
        hosts += list(self.config.certs.extra_sans)
        return list(dict.fromkeys(hosts))

    def cert_authority(self) -> CertAuthority:
        c = self.config.certs
        policy = CertPolicy(key_type=c.key_type, ca_days=c.ca_days, server_days=c.server_days,
                            client_days=c.client_days, renew_before_days=c.renew_before_days)
        return CertAuthority(self.cert_paths, policy, self.config.stack)

    def cert_clients(self) -> list[str]:
        return [r.username for r in SERVICE_ROLES] + [d.id for d in self.devices()]

    def generate_certs(self, *, force: bool = False) -> CertReport:
        return self.cert_authority().generate(server_names=self.server_names(),
                                              clients=self.cert_clients(), force=force)

    def check_certs(self) -> list[CertStatus]:
        return self.cert_authority().check(server_names=self.server_names(), clients=self.cert_clients())

    # -- plan --------------------------------------------------------------------------

    def current_runtime(self) -> RuntimeName | None:
        """The runtime recorded by the last `up`, if the stack has one."""
        import json

        try:
            runtime = json.loads(self.paths.state_file.read_text()).get("runtime")
        except (FileNotFoundError, ValueError):
            return None
        return runtime if runtime in ("local", "docker") else None

    def recorded_services(self) -> set[str]:
        """The services the last `up` recorded as started (state.json); no plan, no runtime call."""
        import json

        try:
            services = json.loads(self.paths.state_file.read_text()).get("services")
        except (FileNotFoundError, ValueError):
            return set()
        return set(services) if isinstance(services, dict) else set()

    def resolve_runtime(self, requested: str | None = None) -> RuntimeName:
        choice = requested or self.current_runtime() or self.config.runtime
        if choice == "local":
            return "local"
        if choice == "docker":
            if not docker_runtime_installed():
                raise RuntimeUnavailable("the docker runtime is not part of this ecokit build")
            if not docker_engine_answers():
                raise RuntimeUnavailable("no Docker engine answers (DOCKER_HOST or /var/run/docker.sock)",
                                         hint="start dockerd, or use --runtime local")
            return "docker"
        if docker_runtime_installed() and docker_engine_answers():
            return "docker"
        return "local"

    def _effective_config(self, target: Target) -> StackConfig:
        cfg = self.config
        if target == "local" and cfg.broker.kind == "emqx" and find_binary(LocalCommand("emqx")) is None:
            note = "EMQX needs docker here; the local runtime runs Mosquitto with the same users and ACLs"
            if note not in self.notes:
                self.notes.append(note)
            cfg = cfg.model_copy(update={"broker": cfg.broker.model_copy(update={"kind": "mosquitto"})})
        return cfg

    def capabilities(self, target: Target) -> Capabilities:
        if target != "local":
            return Capabilities(websockets=True, influx_version=2)
        from ecokit.runtime.privileges import broker_user

        run_as = broker_user(self.project_dir, [self.cert_paths.root])
        if run_as.reason:
            note = f"the broker runs as root: {run_as.reason}"
            if note not in self.notes:
                self.notes.append(note)
        return Capabilities(websockets=_mosquitto_has_websockets(), influx_version=1,
                            run_as=run_as.user, drops_privileges=run_as.drops, drop_reason=run_as.reason)

    def placement(self, target: Target) -> Placement:
        """Where the services listen on ``target``: from the configuration alone (no plan)."""
        return Placement(config=self._effective_config(target), target=target, caps=self.capabilities(target))

    def plan_context(self, target: Target) -> PlanContext:
        paths = PathMap(target, self.paths.root, self.cert_paths.root)
        return PlanContext(config=self._effective_config(target), target=target,
                           policy=self.access_policy(), secrets=self.secret_values(), paths=paths,
                           caps=self.capabilities(target), hashes=self._hashes,
                           geofences=self._deployable_geofences(), geofences_file=str(self.geofences_file.resolve()))

    def _deployable_geofences(self) -> bytes:
        """The geofence file for the plan. `up`/`render` refuse an invalid one (naming its
        problems); every other command goes on with the copy last rendered (what the processor
        runs with) and says so in the notes."""
        try:
            return self.geofences().dumps()
        except GeofenceError as exc:
            label = self._label(self.geofences_file)
            note = (f"{label} is invalid ({len(exc.problems)} problem(s)); the processor keeps its last valid "
                    "geofences: `ecokit geofences list` names the problems")
            if note not in self.notes:
                self.notes.append(note)
            last = self.paths.service_config(PROCESSOR) / GEOFENCES_FILE
            return last.read_bytes() if last.is_file() else GeofenceSet().dumps()

    def plan(self, target: Target) -> list[ServiceSpec]:
        if target not in self._plans:
            self._plans[target] = build_plan(self.plan_context(target))
        return self._plans[target]

    def render(self, target: Target) -> list[Path]:
        """Write every service's rendered files under .ecokit/<stack>/config/; return them."""
        self.geofences()  # an invalid geofence file stops here, every problem named
        written = []
        for spec in self.plan(target):
            folder = self.paths.service_config(spec.name)
            keep = set()
            for rendered in spec.files:
                path = folder / rendered.relpath
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_file(path, rendered.content, rendered.mode)
                keep.add(path)
                written.append(path)
            for stale in folder.rglob("*") if folder.exists() else []:
                if stale.is_file() and stale not in keep:
                    stale.unlink()
        self._hashes.save()
        return written

    # -- runtime -----------------------------------------------------------------------

    def readiness(self) -> ReadinessContext:
        client_cert = None
        if self.config.tls.mtls:
            client_cert = (self.cert_paths.client_cert(HEALTH_USER),
                           self.cert_paths.client_key(HEALTH_USER))
        host = "127.0.0.1" if self.config.bind in ("0.0.0.0", "::") else self.config.bind
        return ReadinessContext(host=host, ca_file=self.cert_paths.ca_cert, client_cert=client_cert)

    def runtime(self, name: RuntimeName) -> Runtime:
        if name == "local":
            from ecokit.runtime.local import LocalRuntime

            return LocalRuntime(self.paths, self.readiness())
        from ecokit.runtime.docker import DockerRuntime  # type: ignore[import-not-found,import-untyped,unused-ignore]

        runtime: Runtime = DockerRuntime(self.docker_settings(), self.readiness())
        return runtime

    def docker_settings(self) -> DockerSettings:
        """What the docker runtime needs of this stack."""
        from ecokit.runtime.docker import DockerSettings  # type: ignore[import-not-found,import-untyped,unused-ignore]

        return DockerSettings(paths=self.paths, stack=self.config.stack, project_dir=self.project_dir,
                              cert_paths=self.cert_paths, tls=self.config.tls.enabled, bind=self.config.bind,
                              ecokit_image=self.config.images.ecokit)

    def _on_ready(self, spec: ServiceSpec) -> None:
        if not spec.post_start:
            return
        target: Target = self.current_runtime() or "local"
        context = PostStart(admin=self.influx_endpoint("admin", target=target), config=self.config,
                            secrets=self.secret_values())
        for step in spec.post_start:
            POST_START[step](context)

    def up(self, runtime: str | None = None, *, progress: Progress = no_progress) -> dict[str, Action]:
        """Bring the stack up (idempotent): certs when TLS is on, render, start, provision."""
        current = self.current_runtime()
        name = self.resolve_runtime(runtime)
        if current and current != name and self.runtime(current).is_up():
            raise RuntimeUnavailable(f"the stack is running on the {current} runtime",
                                     hint="run `ecokit down` first to switch runtimes")
        if self.config.tls.enabled:
            self.generate_certs()
        self.render(name)
        # The profile stays active (for every later command, across down and up) until
        # another --profile is given; --profile default goes back to none.
        if self.loaded.profile:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            self.paths.active_profile_file.write_text(self.loaded.profile + "\n")
        recorded = self.index.get(self.project_dir, self.config.stack)
        self.index.record(new_entry(
            stack=self.config.stack, project_dir=self.project_dir,
            config_file=self.loaded.config_file or self.project_dir / "ecokit.yaml", runtime=name,
            profile=self.active_profile, started=recorded.started if recorded and current else None))
        try:
            actions = self.runtime(name).up(self.plan(name), on_ready=self._on_ready, progress=progress)
        except PortInUse as exc:
            raise self._port_error(exc) from None
        if actions.get(INFLUXDB) not in (None, "skipped"):
            self._apply_analytics(name)
        return actions

    def _port_error(self, exc: PortInUse) -> PortInUse:
        """The same error, naming the key that chose the port and where its value came from."""
        if exc.key is not None:
            return exc
        # Ports are distinct across the configuration (checked at load), so one key chose it.
        key = next((k for k, v in self.config.host_ports().items() if v == exc.port), None)
        if key is None:
            return exc
        return PortInUse(exc.service, exc.port, exc.host, key=key, source=self.loaded.source_of(key),
                         holder=exc.holder)

    @property
    def active_profile(self) -> str | None:
        """The profile this stack was loaded with (given, or recorded by an earlier `up`)."""
        return self.loaded.profile

    def down(self, *, purge: bool = False, progress: Progress = no_progress) -> list[str]:
        name = self.current_runtime()
        stopped: list[str] = []
        if name is not None:
            stopped = self.runtime(name).down(purge=purge, progress=progress)
        else:
            if docker_runtime_installed() and docker_engine_answers():
                # No state file (lost, or a stack started by `docker compose`): its
                # containers, network and volumes are still found by their label.
                stopped = self.runtime("docker").down(purge=purge, progress=progress)
            if purge:
                shutil.rmtree(self.paths.data_dir, ignore_errors=True)
                shutil.rmtree(self.paths.logs_dir, ignore_errors=True)
        if purge and name == "docker":
            shutil.rmtree(self.paths.logs_dir, ignore_errors=True)
        self.index.forget(self.project_dir, self.config.stack)
        return stopped

    def require_running(self) -> None:
        """Raise StackNotRunning (with the way out) unless the last `up` left services running."""
        if self.current_runtime() is None:
            raise StackNotRunning(f"stack {self.config.stack!r} is not up",
                                  hint="run `ecokit up` (`ecokit ps` lists the stacks running on this machine)")

    def restart(self, services: Sequence[str] = (), *, progress: Progress = no_progress) -> None:
        name = self.current_runtime()
        if name is None:
            raise StackNotRunning(f"stack {self.config.stack!r} is not up", hint="run `ecokit up`")
        self.render(name)
        self.runtime(name).restart(self.plan(name), services, on_ready=self._on_ready, progress=progress)

    def service_names(self) -> list[str]:
        """The services of this stack's plan, in start order."""
        from ecokit.services.spec import ordered

        target: Target = self.current_runtime() or self.resolve_runtime(None)
        return [s.name for s in ordered(self.plan(target))]

    def logs(self, service: str, *, follow: bool = False, tail: int = 50) -> Any:
        from ecokit.errors import UsageError

        known = self.service_names()
        if service not in known:
            raise UsageError(f"stack {self.config.stack!r} has no service {service!r}",
                             hint=f"its services: {', '.join(known)} (or no name for all of them)")
        name = self.current_runtime() or self.resolve_runtime(None)
        return self.runtime(name).logs(service, follow=follow, tail=tail)

    # -- endpoints ---------------------------------------------------------------------

    def influx_endpoint(self, role: InfluxRole = "reader", *, target: Target | None = None) -> InfluxEndpoint:
        """How a client on this machine reaches InfluxDB with ``role``'s rights."""
        target = target or self.current_runtime() or "local"
        ctx = self.placement(target)
        version = influx_version(ctx)
        host = ctx.client_host
        url = f"http://{host}:{self.config.influxdb.port}"
        if version == 2:
            token = self._stack_secrets(names.INFLUX_TOKEN)[names.INFLUX_TOKEN]
            return InfluxEndpoint(url, self.config.influxdb.database, token=token, version=2)
        user = {"admin": "admin", "writer": "ecokit-writer", "reader": "ecokit-reader"}[role]
        secret = {"admin": names.INFLUX_ADMIN, "writer": names.INFLUX_WRITER,
                  "reader": names.INFLUX_READER}[role]
        return InfluxEndpoint(url, self.config.influxdb.database, username=user,
                              password=self._stack_secrets(secret)[secret])

    def retention_policies(self) -> dict[str, str]:
        """The InfluxDB retention policies of the rules that keep their points for their own
        time: policy name -> retention (``ecokit.config.rules.retention_policies``)."""
        return retention_policies(self.config.rules)

    def retention_policy_of(self, measurement: str) -> str | None:
        """Where a measurement's points are (the first enabled rule writing it); None: the default."""
        for name, rule in self.config.rules.items():
            if rule.enabled and rule.measurement == measurement:
                return retention_policy(name, rule.retention)
        return None
    # -- fleet analytics ----------------------------------------------------------------

    def daily_rollup(self) -> DailyRollup | None:
        """The daily analytics declaration, or None when off (or with no telemetry to roll up)."""
        daily = self.config.analytics.daily
        telemetry = self.config.rules.get("telemetry")
        if not daily.enabled or telemetry is None:
            return None
        if not {"speed", "lat", "lng"} <= set(telemetry.fields):
            return None
        return daily_rollup(daily, source=telemetry.measurement, odometer="odometer" in telemetry.fields)

    def _rollup_or_fail(self) -> DailyRollup:
        rollup = self.daily_rollup()
        if rollup is None:
            raise ConfigError("daily analytics are off (or the telemetry rule has no speed, lat and lng)",
                              key="analytics.daily.enabled")
        return rollup

    def _apply_analytics(self, target: Target) -> None:
        """Make InfluxDB's continuous queries (1.x) or task (2.x) match `analytics:` on every
        `up` (idempotent: unchanged ones are left alone), not only when InfluxDB starts."""
        rollup = self.daily_rollup()
        with InfluxV1(self.influx_endpoint("admin", target=target)) as client:
            if influx_version(self.placement(target)) == 2:
                apply_task(client, rollup, bucket=self.config.influxdb.database, org=self.config.influxdb.org)
            else:
                apply_continuous_queries(client, rollup, self.config.influxdb.database)

    def refresh_daily(self, start: dt.datetime, end: dt.datetime) -> int:
        """Compute the daily rows of the days in [start, end) now; returns rows written."""
        rollup = self._rollup_or_fail()
        endpoint = self.influx_endpoint("admin")
        with InfluxV1(endpoint, timeout=120.0) as client:
            if endpoint.version == 2:
                # 2.x has no SELECT INTO on its InfluxQL endpoint: the task's Flux over the window.
                first = dt.datetime.combine(start.astimezone(dt.UTC).date(), dt.time(), dt.UTC)
                flux = rollup.flux(self.config.influxdb.database, self.config.influxdb.org,
                                   start=f"time(v: \"{_rfc3339(first)}\")", stop=f"time(v: \"{_rfc3339(end)}\")")
                return client.flux(flux, org=self.config.influxdb.org)
            return refresh_daily(client, rollup, self.config.influxdb.database, start, end)

    def daily_rows(self, start: dt.datetime, *, vehicle: str | None = None) -> list[dict[str, Any]]:
        rollup = self._rollup_or_fail()
        with InfluxV1(self.influx_endpoint("reader")) as client:
            return read_daily(client, rollup, start, vehicle=vehicle)

    def broker_endpoints(self, target: Target | None = None) -> dict[str, str]:
        """The broker's MQTT URLs for devices on this machine, from the configuration alone
        (ecokit's own users connect to the internal listener: ``ecokit.clients``)."""
        target = target or self.current_runtime() or "local"
        ctx = self.placement(target)
        schemes = ("mqtt", "mqtts", "ws", "wss")
        return {p.name: p.url(ctx.client_host) for p in broker_ports(ctx)
                if p.scheme in schemes and p.name != "internal"}

    def console_endpoint(self) -> ConsoleEndpoint | None:
        """Where the stack's console is and its token, or None when the stack has none."""
        cfg = self.config.console
        if not cfg.enabled:
            return None
        host = cfg.bind or self.config.bind
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        token = self._stack_secrets(names.CONSOLE_TOKEN)[names.CONSOLE_TOKEN]
        return ConsoleEndpoint(f"http://{shown}:{cfg.port}", token)

    def console_status(self, *, show_secrets: bool = False) -> dict[str, Any] | None:
        """The console's URL (and, when asked, its token and the URL that carries it)."""
        endpoint = self.console_endpoint()
        if endpoint is None:
            return None
        out: dict[str, Any] = {"url": f"{endpoint.url}/", "docs": f"{endpoint.url}/docs"}
        if show_secrets:
            out.update(token=endpoint.token, page=endpoint.page)
        return out


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _write_file(path: Path, content: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@cache
def _mosquitto_has_websockets() -> bool:
    """Whether the local mosquitto binary was built with websockets (it links libwebsockets)."""
    binary = find_binary(LocalCommand("mosquitto"))
    if binary is None:
        return False
    try:
        return b"libwebsockets.so" in Path(binary).read_bytes()
    except OSError:
        return False
