"""The validated model of ``ecokit.yaml``: every other part of ecokit reads only this.

Every section forbids unknown keys, so a typo fails at load time with the key path
instead of being silently ignored.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ecokit.config.alerts import AlertRule, GeofencesConfig, Threshold, validate_alert_names
from ecokit.config.analytics import AnalyticsConfig
from ecokit.config.base import KeyedValueError, Port, Section
from ecokit.config.bench import BenchConfig
from ecokit.config.console import ConsoleConfig
from ecokit.config.regions import RegionError, parse_region
from ecokit.config.rules import (
    RETENTION,
    BridgeConfig,
    ProcessorConfig,
    RuleConfig,
    check_retention,
    merge_default_rules,
    validate_rule_names,
)
from ecokit.durations import duration_seconds

STACK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}\Z")
# [registry[:port]/]path[:tag][@sha256:digest]
IMAGE_REF = re.compile(
    r"^(?:[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]+)?/)?[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?(@sha256:[a-f0-9]{64})?\Z"
)


class BrokerPorts(Section):
    mqtt: Port = 1883
    mqtts: Port = 8883
    ws: Port = 8083
    wss: Port = 8084
    dashboard: Port = Field(18083, description="EMQX dashboard / REST API / Prometheus")
    internal: Port = Field(1884, description="ecokit's own services and operator tools (plain MQTT, on 127.0.0.1 "
                                             "only; Mosquitto accepts only ecokit's users there)")


class BrokerConfig(Section):
    kind: Literal["mosquitto", "emqx"] = "mosquitto"
    ports: BrokerPorts = BrokerPorts()
    # Mosquitto's default of 1000 silently drops QoS 1 messages to slow subscribers;
    # a large explicit bound keeps bursts and still protects memory.
    max_queued_messages: int = Field(100_000, ge=0, description="0 = unlimited")
    max_inflight_messages: int = Field(100, ge=0, le=65535)
    max_packet_size: int = Field(1_048_576, ge=128, le=268_435_455)
    max_keepalive: int = Field(600, ge=10, le=65535)
    persistence: bool = True
    websockets: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: ws/wss only where the broker build supports them"
    )
    bind_client_ids: bool = Field(True, description="on the device listeners a client's id is its username, so "
                                                    "no client can take another's id and session (off only for "
                                                    "tests of MQTT itself)")
    password_iterations: int = Field(1000, ge=1, le=1_000_000,
                                     description="PBKDF2-SHA512 rounds in the Mosquitto password file for "
                                                 "passwords written into devices.yaml / users.yaml")
    generated_password_iterations: int = Field(
        1, ge=1, le=1_000_000, description="PBKDF2-SHA512 rounds for the passwords ecokit generates (random "
        "140-bit tokens, which rounds do not make harder to guess; they cost every connect)")
    log_verbose: bool = False
    sys_interval: int = Field(10, ge=1, le=3600,
                              description="seconds between Mosquitto's $SYS updates (what broker metrics show)")


# TLS 1.2 suites offered by default: forward secrecy and AEAD only (no CBC, no SHA-1 MAC).
# TLS 1.3 suites are all AEAD, so they need no list.
AEAD_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
)
TLS13_CIPHERS = ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256")


class TlsConfig(Section):
    enabled: bool = False
    mtls: bool = Field(False, description="require a client certificate on the TLS listeners")
    min_version: Literal["1.2", "1.3"] = "1.2"
    plain_listener: bool = Field(False, description="keep a plain MQTT listener for devices next to TLS "
                                                    "(off: with TLS on, devices connect only through TLS)")
    ciphers: tuple[str, ...] = Field(AEAD_TLS12_CIPHERS, min_length=1,
                                     description="TLS 1.2 cipher suites (OpenSSL names); default: AEAD only")

    @field_validator("ciphers")
    @classmethod
    def _cipher_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
                raise ValueError(f"{name!r} is not an OpenSSL cipher suite name")
        return value

    @model_validator(mode="after")
    def _mtls_needs_tls(self) -> TlsConfig:
        if self.mtls and not self.enabled:
            raise KeyedValueError("mtls: true needs enabled: true", "mtls")
        return self


class CertsConfig(Section):
    dir: str = "certs"
    key_type: Literal["ec", "rsa"] = "ec"
    ca_days: int = Field(3650, ge=1, le=36500)
    server_days: int = Field(825, ge=1, le=3650)
    client_days: int = Field(825, ge=1, le=3650)
    renew_before_days: int = Field(30, ge=0, le=365,
                                   description="certs expiring sooner are renewed by `certs generate`")
    extra_sans: tuple[str, ...] = ()


class AuthConfig(Section):
    anonymous: bool = Field(False, description="allow clients without credentials (never implied)")
    open: bool = Field(False, description="a test sandbox (profile `open`): clients without credentials may "
                                          "publish and subscribe to any topic except $SYS writes and ecokit's "
                                          "own service topics; needs anonymous: true")

    @model_validator(mode="after")
    def _open_needs_anonymous(self) -> AuthConfig:
        if self.open and not self.anonymous:
            raise KeyedValueError("open: true needs anonymous: true (an open broker takes clients without "
                                  "credentials; say so explicitly)", "open")
        return self


class InfluxConfig(Section):
    version: Literal["auto", 1, 2] = Field(
        "auto", description="auto: 2 in docker, 1 for the local influxd"
    )
    port: Port = 8086
    rpc_port: Port = Field(8088, description="InfluxDB 1.x backup/restore RPC, bound to loopback")
    database: str = Field("fleet", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$",
                          description="1.x database / 2.x bucket")
    org: str = Field("ecokit", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_ -]{0,63}$")
    # Telemetry, status and any rule without its own `retention` (the archive keeps 24h).
    retention: str = Field("30d", pattern=RETENTION, description="the database's default retention: how long "
                                                                 "points are kept (0 = forever, else at least 1h)")

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str) -> str:
        return check_retention(value)


class GrafanaConfig(Section):
    enabled: bool = True
    port: Port = 3000
    anonymous_viewer: bool = Field(True, description="let people on this machine view dashboards")


class PrometheusConfig(Section):
    enabled: bool = True
    port: Port = 9090
    scrape_interval: str = Field("10s", pattern=r"^\d+(ms|s|m)$")


class EcokitServicePorts(Section):
    """HTTP ports of ecokit's own services (/metrics, /healthz, /readyz)."""

    bridge: Port = 9101
    processor: Port = 9102
    shadow: Port = 9103
    brokerstats: Port = Field(9104, description="Mosquitto's $SYS as Prometheus metrics")


class ImagesConfig(Section):
    """Docker images. Always pinned: `latest` moves to other products or licences."""

    emqx: str = "emqx/emqx:5.8.9"
    mosquitto: str = "eclipse-mosquitto:2.0.22"
    influxdb: str = "influxdb:2.7.12"
    grafana: str = "grafana/grafana:12.4.2"
    prometheus: str = "prom/prometheus:v2.55.1"
    ecokit: str = "ecokit/ecokit:0.1.0"

    @field_validator("*")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if not IMAGE_REF.match(value):
            raise ValueError(f"{value!r} is not an image reference")
        tail = value.rsplit("/", 1)[-1]
        if "@sha256:" not in value and ":" not in tail:
            raise ValueError(f"{value!r} has no tag; pin an exact version")
        if tail.endswith(":latest"):
            raise ValueError(f"{value!r} is unpinned; `latest` changes under you, pin an exact version")
        return value


class SimulatorConfig(Section):
    """Defaults of `ecokit simulate`; its flags override them."""

    region: str = Field("paris", description="paris, dubai, or a box SOUTH,WEST,NORTH,EAST in degrees")
    rate: str = Field("1s", description="telemetry interval per vehicle (0: flat out)")
    jitter: str = Field("0s", description="± random spread of each interval (seeded)")
    qos: Literal[0, 1] = 1
    mqtt: Literal["5", "3.1.1"] = "5"
    session_expiry: int = Field(3600, ge=0, description="seconds (MQTT 5)")
    keepalive: int = Field(30, ge=5, le=65535)
    queue_limit: int = Field(10_000, ge=1, description="offline queue bound per vehicle")
    shadow: bool = Field(True, description="against the stack (when it runs the shadow service): vehicles "
                         "report to their device shadows and apply desired.publish_interval")
    client: Literal["fast", "paho"] = Field(
        "fast", description="each vehicle's MQTT client: fast (ecokit's fast path, about half paho's CPU per "
        "message) or paho (the reference client)")

    @field_validator("rate", "jitter")
    @classmethod
    def _duration(cls, value: str) -> str:
        if duration_seconds(value) is None:
            raise ValueError(f"{value!r}: expected a duration like 500ms, 1s, 10m or 1h")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        try:
            parse_region(value)
        except RegionError as exc:
            raise ValueError(str(exc).removeprefix("region ")) from None
        return value


class RegistryConfig(Section):
    devices: str = "config/devices.yaml"
    users: str = "config/users.yaml"


class StackConfig(Section):
    """The whole stack, as declared by ecokit.yaml plus the active profile."""

    version: Literal[1] = 1
    stack: str = "ecokit"
    runtime: Literal["auto", "local", "docker"] = "auto"
    bind: str = Field("127.0.0.1", description="host address the stack's ports listen on")
    broker: BrokerConfig = BrokerConfig()
    tls: TlsConfig = TlsConfig()
    certs: CertsConfig = CertsConfig()
    auth: AuthConfig = AuthConfig()
    influxdb: InfluxConfig = InfluxConfig()
    grafana: GrafanaConfig = GrafanaConfig()
    prometheus: PrometheusConfig = PrometheusConfig()
    service_ports: EcokitServicePorts = EcokitServicePorts()
    images: ImagesConfig = ImagesConfig()
    registry: RegistryConfig = RegistryConfig()
    rules: dict[str, RuleConfig] = Field(default_factory=dict, validate_default=True,
                                         description="topic → InfluxDB rules (ecokit/config/rules.py)")
    bridge: BridgeConfig = BridgeConfig()
    processor: ProcessorConfig = ProcessorConfig()
    geofences: GeofencesConfig = GeofencesConfig()
    alerts: dict[str, AlertRule] = Field(
        default_factory=dict, description="per-vehicle alerts the processor evaluates (ecokit/config/alerts.py)")
    analytics: AnalyticsConfig = AnalyticsConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    bench: BenchConfig = BenchConfig()
    console: ConsoleConfig = ConsoleConfig()
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="user profiles: overlays applied with --profile NAME"
    )

    @field_validator("stack")
    @classmethod
    def _stack_name(cls, value: str) -> str:
        if not STACK_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a stack name (lowercase letters, digits and '-', at most 31)"
            )
        return value

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP address") from exc
        return value

    @field_validator("rules", mode="before")
    @classmethod
    def _default_rules(cls, value: Any) -> Any:
        return merge_default_rules(value)

    @field_validator("rules")
    @classmethod
    def _rule_names(cls, value: dict[str, RuleConfig]) -> dict[str, RuleConfig]:
        return validate_rule_names(value)

    @field_validator("alerts")
    @classmethod
    def _alert_names(cls, value: dict[str, AlertRule]) -> dict[str, AlertRule]:
        return validate_alert_names(value)

    @model_validator(mode="after")
    def _alert_fields(self) -> StackConfig:
        """Threshold alerts compare telemetry fields the telemetry rule stores as numbers
        (or booleans); a typo fails here instead of never firing."""
        telemetry = self.rules.get("telemetry")
        if telemetry is None:
            return self
        typed = {spec.path or name: spec.type for name, spec in telemetry.fields.items()}
        for name, rule in self.alerts.items():
            condition = rule.condition
            if not isinstance(condition, Threshold):
                continue
            kind = typed.get(condition.field)
            wanted = ("bool",) if isinstance(condition.value, bool) else ("float", "int")
            if kind not in wanted:
                known = ", ".join(sorted(f for f, t in typed.items() if t in wanted))
                what = "a boolean" if wanted == ("bool",) else "a numeric"
                raise KeyedValueError(f"{condition.field!r} is not {what} telemetry field (known: {known})",
                                      f"alerts.{name}.when")
        return self

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not re.match(r"^[a-z0-9][a-z0-9_-]*\Z", name):
                raise ValueError(f"profile name {name!r} must be lowercase letters, digits, '-', '_'")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> StackConfig:
        seen: dict[int, str] = {}
        for name, port in self.host_ports().items():
            if port in seen:
                raise KeyedValueError(f"port {port} is used by both {seen[port]} and {name}", seen[port], name)
            seen[port] = name
        return self

    def host_ports(self) -> dict[str, int]:
        """Every host port the stack may bind, named by what uses it."""
        ports = {f"broker.ports.{k}": v for k, v in self.broker.ports.model_dump().items()}
        ports["influxdb.port"] = self.influxdb.port
        ports["influxdb.rpc_port"] = self.influxdb.rpc_port
        ports["grafana.port"] = self.grafana.port
        ports["prometheus.port"] = self.prometheus.port
        ports.update({f"service_ports.{k}": v for k, v in self.service_ports.model_dump().items()})
        if self.console.enabled:
            ports["console.port"] = self.console.port
        return ports

    @property
    def certs_dir(self) -> PurePosixPath:
        return PurePosixPath(self.certs.dir)
