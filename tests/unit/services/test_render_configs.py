"""Rendered service configuration, parsed with real parsers and checked for content.

Mosquitto conf: a line parser that knows Mosquitto's options; passwd: verified with
PBKDF2-SHA512 like Mosquitto does; EMQX emqx.conf: pyhocon; acl.conf: Erlang-term shape;
InfluxDB: tomllib; Grafana and Prometheus: yaml.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import hmac
import io
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyhocon import ConfigFactory, ConfigTree

from ecokit.acl import SERVICE_ROLES
from ecokit.services.plan import build_plan
from ecokit.services.spec import ServiceSpec
from ecokit.stack import Stack
from ecokit.testing import write_project

USERS = [{"username": "dash", "subscribe": ["fleet/+/telemetry"]}, {"username": "ops", "superuser": True,
                                                                      "password": "ops-password-1"}]


def make_stack(folder: Path, *, profile: str | None = None, extra: dict[str, Any] | None = None,
               devices: int | list[str] = 3) -> Stack:
    config = folder / "ecokit.yaml"
    if not config.exists():
        write_project(folder, devices=devices, users=USERS, extra=extra)
    return Stack.load(config, profile=profile, env={})


def plan(stack: Stack, target: str = "local", *, websockets: bool = True,
         run_as: str | None = None) -> dict[str, ServiceSpec]:
    ctx = stack.plan_context(target)  # type: ignore[arg-type]
    ctx = dataclasses.replace(ctx, caps=dataclasses.replace(ctx.caps, websockets=websockets, run_as=run_as))
    return {spec.name: spec for spec in build_plan(ctx)}


def files(spec: ServiceSpec) -> dict[str, str]:
    return {f.relpath: f.content.decode() for f in spec.files}


# -- Mosquitto ------------------------------------------------------------------------------

MOSQUITTO_GLOBAL = {
    "per_listener_settings", "user", "persistence",
    "persistence_location", "autosave_interval", "max_queued_messages", "max_inflight_messages",
    "max_packet_size", "max_keepalive", "set_tcp_nodelay", "log_dest", "log_type", "connection_messages",
    "log_timestamp", "log_timestamp_format", "sys_interval",
}
# With per_listener_settings true, the security options belong to each listener.
MOSQUITTO_LISTENER = {"protocol", "cafile", "certfile", "keyfile", "tls_version", "require_certificate",
                      "use_identity_as_username", "ciphers", "allow_anonymous", "password_file", "acl_file",
                      "use_username_as_clientid"}
REPEATABLE = {"log_type", "log_dest"}


@dataclasses.dataclass
class MosquittoConf:
    options: dict[str, list[str]]
    listeners: list[dict[str, str]]

    def one(self, key: str) -> str:
        values = self.options[key]
        assert len(values) == 1, f"{key} set {len(values)} times"
        return values[0]

    def listener(self, port: int) -> dict[str, str]:
        found = [lst for lst in self.listeners if lst["port"] == str(port)]
        assert len(found) == 1, f"listener {port}: {self.listeners}"
        return found[0]

    def device_listeners(self) -> list[dict[str, str]]:
        """Every listener but the internal one (the first, on loopback, for ecokit's users)."""
        return [lst for lst in self.listeners if not lst["password_file"].endswith("services.passwd")]


def parse_mosquitto(text: str) -> MosquittoConf:
    """mosquitto.conf as Mosquitto reads it: `option value` lines, `#` comments, and
    `listener PORT [HOST]` starting a block of listener options."""
    options: dict[str, list[str]] = {}
    listeners: list[dict[str, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        assert value, f"line {number}: {key} without a value"
        assert value.strip() == value, f"line {number}: stray whitespace in {raw!r}"
        if key == "listener":
            port, _, host = value.partition(" ")
            listeners.append({"port": port, "host": host})
        elif key in MOSQUITTO_LISTENER:
            assert listeners, f"line {number}: {key} before any listener"
            assert key not in listeners[-1], f"line {number}: {key} twice in one listener"
            listeners[-1][key] = value
        else:
            assert key in MOSQUITTO_GLOBAL, f"line {number}: unknown mosquitto option {key!r}"
            assert not listeners, f"line {number}: global option {key} after a listener"
            assert key in REPEATABLE or key not in options, f"line {number}: {key} twice"
            options.setdefault(key, []).append(value)
    return MosquittoConf(options, listeners)


def mosquitto_verify(line: str, password: str) -> bool:
    """Check a password line the way Mosquitto 2 does for `$7$` (PBKDF2-SHA512) hashes."""
    _user, _, hashed = line.partition(":")
    empty, kind, iterations, salt_b64, digest_b64 = hashed.split("$")
    assert (empty, kind) == ("", "7")
    salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    computed = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(iterations), dklen=len(digest))
    return hmac.compare_digest(computed, digest)


def test_default_profile_has_one_plain_device_listener_and_no_tls(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, profile="default")
    spec = plan(stack, websockets=False)["broker"]
    conf = parse_mosquitto(files(spec)["mosquitto.conf"])
    broker = stack.paths.service_config("broker")
    assert conf.listeners == [
        {"port": str(stack.config.broker.ports.internal), "host": "127.0.0.1", "protocol": "mqtt",
         "allow_anonymous": "false", "password_file": str(broker / "services.passwd"),
         "acl_file": str(broker / "services.acl")},
        {"port": str(stack.config.broker.ports.mqtt), "host": "127.0.0.1", "protocol": "mqtt",
         "allow_anonymous": "false", "password_file": str(broker / "passwd"), "acl_file": str(broker / "acl"),
         "use_username_as_clientid": "true"},
    ]
    assert conf.one("per_listener_settings") == "true"
    assert spec.port("internal").host_ip == "127.0.0.1", "published on loopback only (docker)"


def test_websocket_listener_only_where_the_broker_build_has_websockets(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    ports = stack.config.broker.ports
    with_ws = parse_mosquitto(files(plan(stack, websockets=True)["broker"])["mosquitto.conf"])
    assert with_ws.listener(ports.ws)["protocol"] == "websockets"
    without = parse_mosquitto(files(plan(stack, websockets=False)["broker"])["mosquitto.conf"])
    assert [lst["port"] for lst in without.device_listeners()] == [str(ports.mqtt)]
    forced_off = make_stack(tmp_path / "off", extra={"broker": {"websockets": "off"}})
    conf = parse_mosquitto(files(plan(forced_off, websockets=True)["broker"])["mosquitto.conf"])
    assert all(lst["protocol"] == "mqtt" for lst in conf.listeners)


@pytest.mark.parametrize(("profile", "require_cert", "identity"), [("tls", "false", "false"),
                                                                 ("mtls", "true", "true")])
def test_tls_profiles_listen_for_devices_only_with_tls(tmp_path: Path, profile: str, require_cert: str,
                                                       identity: str) -> None:
    stack = make_stack(tmp_path, profile=profile)
    ports = stack.config.broker.ports
    conf = parse_mosquitto(files(plan(stack, websockets=True)["broker"])["mosquitto.conf"])
    certs = stack.cert_paths
    assert [lst["port"] for lst in conf.device_listeners()] == [str(ports.mqtts), str(ports.wss)], \
        "no plain listener for devices"
    for port in (ports.mqtts, ports.wss):
        listener = conf.listener(port)
        assert listener["cafile"] == str(certs.ca_cert)
        assert listener["certfile"] == str(certs.server_cert)
        assert listener["keyfile"] == str(certs.server_key)
        assert listener["tls_version"] == "tlsv1.2"
        assert listener["require_certificate"] == require_cert
        # mTLS: the certificate's common name is the username (A's password cannot ride on B's cert).
        assert listener["use_identity_as_username"] == identity
        assert listener["use_username_as_clientid"] == "true"
        assert listener["allow_anonymous"] == "false"
        assert set(listener["ciphers"].split(":")) == {
            "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"}
    assert conf.listener(ports.mqtts)["protocol"] == "mqtt"
    assert conf.listener(ports.wss)["protocol"] == "websockets"
    internal = conf.listener(ports.internal)
    assert (internal["host"], internal["password_file"].rsplit("/", 1)[1]) == ("127.0.0.1", "services.passwd")
    assert "cafile" not in internal
    # Readiness probes a device listener, over TLS.
    probe = plan(stack)["broker"].probe
    assert probe is not None
    assert probe.port == "mqtts"


def test_a_plain_device_listener_next_to_tls_only_when_asked_for(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, extra={"tls": {"enabled": True, "plain_listener": True}})
    conf = parse_mosquitto(files(plan(stack, websockets=False)["broker"])["mosquitto.conf"])
    ports = stack.config.broker.ports
    assert [lst["port"] for lst in conf.device_listeners()] == [str(ports.mqtt), str(ports.mqtts)]
    assert "cafile" not in conf.listener(ports.mqtt), "plain listeners stay plain"


def test_tls_1_3_minimum(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, extra={"tls": {"enabled": True, "min_version": "1.3"}})
    conf = parse_mosquitto(files(plan(stack, websockets=False)["broker"])["mosquitto.conf"])
    assert conf.listener(stack.config.broker.ports.mqtts)["tls_version"] == "tlsv1.3"


def test_anonymous_only_when_written_explicitly(tmp_path: Path) -> None:
    for profile in ("default", "tls", "mtls"):
        stack = make_stack(tmp_path / profile, profile=profile)
        conf = parse_mosquitto(files(plan(stack)["broker"])["mosquitto.conf"])
        assert {lst["allow_anonymous"] for lst in conf.listeners} == {"false"}, profile
    open_stack = make_stack(tmp_path / "open", extra={"auth": {"anonymous": True}})
    conf = parse_mosquitto(files(plan(open_stack)["broker"])["mosquitto.conf"])
    assert [lst["allow_anonymous"] for lst in conf.device_listeners()] == ["true", "true"]
    assert conf.listener(open_stack.config.broker.ports.internal)["allow_anonymous"] == "false"
    # Mosquitto refuses a client without a username when ids are bound to usernames.
    assert not any("use_username_as_clientid" in lst for lst in conf.listeners)


def test_queue_limits_avoid_mosquittos_silent_qos1_drops(tmp_path: Path) -> None:
    conf = parse_mosquitto(files(plan(make_stack(tmp_path))["broker"])["mosquitto.conf"])
    assert int(conf.one("max_queued_messages")) == 100_000
    assert int(conf.one("max_inflight_messages")) == 100
    assert int(conf.one("max_packet_size")) == 1_048_576
    custom = make_stack(tmp_path / "c", extra={"broker": {"max_queued_messages": 0, "max_inflight_messages": 20}})
    conf = parse_mosquitto(files(plan(custom)["broker"])["mosquitto.conf"])
    assert conf.one("max_queued_messages") == "0"
    assert conf.one("max_inflight_messages") == "20"


def test_persistence_and_the_user_to_run_as(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    conf = parse_mosquitto(files(plan(stack, run_as="someone")["broker"])["mosquitto.conf"])
    assert conf.one("persistence") == "true"
    assert conf.one("persistence_location") == f"{stack.paths.service_data('broker') / 'data'}/"
    assert conf.one("user") == "someone"
    assert "user" not in parse_mosquitto(files(plan(stack)["broker"])["mosquitto.conf"]).options
    off = make_stack(tmp_path / "np", extra={"broker": {"persistence": False}})
    assert parse_mosquitto(files(plan(off)["broker"])["mosquitto.conf"]).one("persistence") == "false"


def test_password_file_verifies_every_principal(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    rendered = files(plan(stack)["broker"])
    device_lines = rendered["passwd"].splitlines()
    service_lines = rendered["services.passwd"].splitlines()
    policy = stack.access_policy()
    on_devices = {line.split(":", 1)[0] for line in device_lines}
    on_internal = {line.split(":", 1)[0] for line in service_lines}
    # ecokit's users log in only on the internal listener (the health probe on both).
    assert on_internal == {r.username for r in SERVICE_ROLES}
    assert on_devices == {p.username for p in policy.principals if p.kind != "service"} | {"ecokit-health"}
    lines = device_lines + [line for line in service_lines if not line.startswith("ecokit-health:")]
    by_user = {line.split(":", 1)[0]: line for line in lines}
    assert sorted(by_user) == sorted(p.username for p in policy.principals)
    assert [line.split(":")[0] for line in device_lines] == sorted(on_devices), "sorted, so the file is stable"
    for principal in policy.principals:
        line = by_user[principal.username]
        assert mosquitto_verify(line, principal.password), principal.username
        assert not mosquitto_verify(line, principal.password + "x")
        assert principal.password not in line, "never the clear password"
        _, _, iterations, salt, digest = line.split(":", 1)[1].split("$")
        broker_cfg = stack.config.broker
        assert int(iterations) == (broker_cfg.generated_password_iterations if principal.generated
                                   else broker_cfg.password_iterations), principal.username
        assert len(base64.b64decode(salt)) == 12
        assert len(base64.b64decode(digest)) == 64
    assert mosquitto_verify(by_user["ops"], "ops-password-1")
    assert by_user["ops"].split("$")[2] == "1000"  # written by someone: stretched
    assert by_user["ecokit-admin"].split("$")[2] == "1"  # a generated 140-bit token: one round
    assert len({line.split("$")[3] for line in lines}) == len(lines), "one salt per user"


def test_password_check_agrees_with_mosquitto_passwd(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    path = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(path), "alice", "s3cret-pw"], check=True, capture_output=True)
    line = path.read_text().strip()
    assert line.startswith("alice:$7$")
    assert mosquitto_verify(line, "s3cret-pw")
    assert not mosquitto_verify(line, "wrong")


def test_password_iterations_come_from_the_config(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, extra={"broker": {"password_iterations": 5000,
                                                   "generated_password_iterations": 101}})
    rounds = {line.split(":", 1)[0]: line.split("$")[2]
              for line in files(plan(stack)["broker"])["passwd"].splitlines()}
    assert rounds.pop("ops") == "5000"
    assert set(rounds.values()) == {"101"}


def test_mosquitto_acl_has_a_block_per_user_with_rights_and_device_patterns(tmp_path: Path) -> None:
    rendered = files(plan(make_stack(tmp_path))["broker"])
    text, services = rendered["acl"], rendered["services.acl"]
    assert re.findall(r"^user (\S+)$", text, re.MULTILINE) == ["dash", "ops"], \
        "grant-less users have no block; ecokit's users are not on the device listeners"
    assert re.findall(r"^user (\S+)$", services, re.MULTILINE) == [
        "ecokit-admin", "ecokit-bridge", "ecokit-brokerstats", "ecokit-console", "ecokit-processor",
        "ecokit-replay", "ecokit-shadow"]
    for acl in (text, services):
        assert "pattern write fleet/%u/#" in acl
        assert "pattern read fleet/%u/commands" in acl
        assert "pattern read fleet/broadcast/commands" in acl
        assert "{username}" not in acl


# -- EMQX ---------------------------------------------------------------------------------


def emqx_conf(stack: Stack, target: str = "docker") -> tuple[ConfigTree, dict[str, str], ServiceSpec]:
    stack = Stack.load(stack.loaded.config_file, profile=stack.loaded.profile, env={},
                       overrides={"broker.kind": "emqx"})
    spec = plan(stack, target)["broker"]
    rendered = files(spec)
    return ConfigFactory.parse_string(rendered["emqx.conf"]), rendered, spec


def test_emqx_conf_has_the_keys_emqx_requires(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    conf, _rendered, spec = emqx_conf(stack)
    secrets = stack.secret_values()
    assert conf["node.cookie"] == secrets["emqx/cookie"]
    assert conf["node.data_dir"] == "data"
    assert conf["node.name"] == "emqx@127.0.0.1"
    assert conf["dashboard.listeners.http.bind"] == 18083, "without it there is no REST API"
    assert conf["dashboard.default_password"] == secrets["emqx/dashboard"]
    assert conf["dashboard.default_password"] != "public"
    [authn] = conf["authentication"]
    assert authn["mechanism"] == "password_based"
    assert authn["backend"] == "built_in_database"
    assert authn["bootstrap_type"] == "plain"
    assert authn["bootstrap_file"].endswith("users.csv")
    assert conf["authorization.no_match"] == "deny"
    [source] = conf["authorization.sources"]
    assert source["type"] == "file"
    assert source["path"].endswith("acl.conf")
    assert conf["api_key.bootstrap_file"].endswith("api_keys.txt")
    assert spec.container is not None
    assert spec.container.env["EMQX_NODE__NAME"] == "emqx@127.0.0.1"


def test_emqx_bootstrap_users_and_api_key(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    _, rendered, spec = emqx_conf(stack)
    rows = list(csv.DictReader(io.StringIO(rendered["users.csv"])))
    policy = stack.access_policy()
    assert {r["user_id"]: r["password"] for r in rows} == {p.username: p.password for p in policy.principals}
    assert {r["user_id"] for r in rows if r["is_superuser"] == "true"} == {"ecokit-admin", "ops"}
    assert {r["is_superuser"] for r in rows} == {"true", "false"}
    key, secret = rendered["api_keys.txt"].strip().split(":")
    assert (key, secret) == ("ecokit", stack.secret_values()["emqx/api-secret"])
    secret_files = {f.relpath for f in spec.files if f.secret}
    assert secret_files == {"emqx.conf", "users.csv", "api_keys.txt"}


def test_emqx_acl_conf_lines_are_erlang_terms(tmp_path: Path) -> None:
    _, rendered, _ = emqx_conf(make_stack(tmp_path))
    term = re.compile(r'^\{(allow|deny), (all|\{username, "[^"]+"\}), (publish|subscribe|all), \["[^"]+"\]\}\.$')
    rules = [line for line in rendered["acl.conf"].splitlines() if line and not line.startswith("%%")]
    assert rules[-1] == "{deny, all}."
    for line in rules[:-1]:
        assert term.match(line), line
    assert rendered["acl.conf"].count("{") == rendered["acl.conf"].count("}")


def test_emqx_default_profile_listens_plain_only(tmp_path: Path) -> None:
    conf, _, _ = emqx_conf(make_stack(tmp_path))
    assert conf["listeners.tcp.default.enable"] is True
    assert conf["listeners.tcp.default.bind"] == "0.0.0.0:1883"
    assert conf["listeners.ssl.default.enable"] is False
    assert conf["listeners.wss.default.enable"] is False
    assert conf["listeners.ws.default.enable"] is True
    assert conf["listeners.ws.default.websocket.mqtt_path"] == "/mqtt"


@pytest.mark.parametrize(("profile", "verify", "fail_if_no_peer_cert"),
                         [("tls", "verify_none", False), ("mtls", "verify_peer", True)])
def test_emqx_tls_listeners(tmp_path: Path, profile: str, verify: str, fail_if_no_peer_cert: bool) -> None:
    conf, _, _ = emqx_conf(make_stack(tmp_path, profile=profile))
    for name, port in (("ssl", 8883), ("wss", 8084)):
        listener = conf[f"listeners.{name}.default"]
        assert listener["enable"] is True
        assert listener["bind"] == f"0.0.0.0:{port}"
        ssl = listener["ssl_options"]
        assert ssl["verify"] == verify
        assert ssl["fail_if_no_peer_cert"] is fail_if_no_peer_cert
        assert ssl["versions"] == ["tlsv1.3", "tlsv1.2"], "TLS 1.2+ only"
        assert ssl["cacertfile"] == "/ecokit/certs/ca.pem"
        assert ssl["certfile"] == "/ecokit/certs/server.pem"
        assert ssl["keyfile"] == "/ecokit/certs/server.key"


def test_emqx_tls_1_3_only(tmp_path: Path) -> None:
    conf, _, _ = emqx_conf(make_stack(tmp_path, extra={"tls": {"enabled": True, "min_version": "1.3"}}))
    assert conf["listeners.ssl.default.ssl_options.versions"] == ["tlsv1.3"]


def test_emqx_queue_limits(tmp_path: Path) -> None:
    conf, _, _ = emqx_conf(make_stack(tmp_path))
    assert conf["mqtt.max_mqueue_len"] == 100_000
    assert conf["mqtt.max_inflight"] == 100
    assert conf["mqtt.max_packet_size"] == 1_048_576
    unlimited, _, _ = emqx_conf(make_stack(tmp_path / "u", extra={"broker": {"max_queued_messages": 0}}))
    assert unlimited["mqtt.max_mqueue_len"] >= 1_000_000


def test_emqx_anonymous_only_when_written_explicitly(tmp_path: Path) -> None:
    conf, _, _ = emqx_conf(make_stack(tmp_path, profile="tls"))
    for name in ("tcp", "ssl", "ws", "wss"):
        assert "enable_authn" not in conf[f"listeners.{name}.default"]
    open_conf, _, _ = emqx_conf(make_stack(tmp_path / "open", extra={"auth": {"anonymous": True}}))
    for name in ("tcp", "ssl", "ws", "wss"):
        assert open_conf[f"listeners.{name}.default.enable_authn"] is False


# -- InfluxDB ------------------------------------------------------------------------------


def test_influxdb_1_config_is_valid_toml_with_auth_and_loopback_rpc(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    spec = plan(stack)["influxdb"]
    conf = tomllib.loads(files(spec)["influxdb.conf"])
    assert conf["reporting-disabled"] is True
    assert conf["bind-address"] == f"127.0.0.1:{stack.config.influxdb.rpc_port}"
    assert conf["http"]["bind-address"] == f"127.0.0.1:{stack.config.influxdb.port}"
    assert conf["http"]["auth-enabled"] is True
    data = stack.paths.service_data("influxdb") / "data"
    assert conf["meta"]["dir"] == f"{data}/meta"
    assert conf["data"]["dir"] == f"{data}/data"
    assert conf["data"]["wal-dir"] == f"{data}/wal"
    assert conf["monitor"]["store-enabled"] is False
    assert spec.probe is not None
    assert (spec.probe.kind, spec.probe.path) == ("http", "/ping")
    assert spec.post_start == ("influxdb-v1-setup",)


def test_influxdb_2_in_docker_is_set_up_from_secret_files(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, extra={"influxdb": {"retention": "30d"}})
    spec = plan(stack, "docker")["influxdb"]
    assert spec.container is not None
    env = spec.container.env
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert env["DOCKER_INFLUXDB_INIT_BUCKET"] == "fleet"
    assert env["DOCKER_INFLUXDB_INIT_RETENTION"] == "30d"
    secrets = stack.secret_values()
    by_path = {f.container_path: f for f in spec.files}
    assert by_path[env["DOCKER_INFLUXDB_INIT_PASSWORD_FILE"]].content.decode() == secrets["influxdb/admin"]
    assert by_path[env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN_FILE"]].content.decode() == secrets["influxdb/token"]
    assert all(f.secret for f in spec.files)
    assert not any(secrets["influxdb/admin"] in v for v in env.values()), "no secret in the environment"


# -- Grafana and Prometheus ----------------------------------------------------------------


def test_grafana_provisioning_for_influxdb_2_in_docker(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, extra={"grafana": {"enabled": True}, "prometheus": {"enabled": True}})
    spec = plan(stack, "docker")["grafana"]
    rendered = files(spec)
    ds = yaml.safe_load(rendered["provisioning/datasources/ecokit.yaml"])
    assert ds["apiVersion"] == 1
    influx, prom = ds["datasources"]
    assert influx["type"] == "influxdb"
    assert influx["uid"] == "ecokit-influxdb"
    assert influx["url"] == "http://influxdb:8086"
    assert influx["jsonData"]["dbName"] == "fleet"
    assert influx["secureJsonData"]["httpHeaderValue1"] == f"Token {stack.secret_values()['influxdb/token']}"
    assert prom["type"] == "prometheus"
    assert prom["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(rendered["provisioning/dashboards/ecokit.yaml"])
    # Outside the /var/lib/grafana data volume, so a removed dashboard does not linger there.
    assert providers["providers"][0]["options"]["path"] == "/etc/grafana/ecokit-dashboards"
    assert {f.relpath for f in spec.files if f.secret} >= {"provisioning/datasources/ecokit.yaml",
                                                           "admin-password", "secret-key"}
    assert spec.container is not None
    assert spec.container.env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/ecokit/secrets/grafana-admin"


def test_grafana_datasource_for_influxdb_1_uses_the_reader(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, extra={"grafana": {"enabled": True}, "prometheus": {"enabled": False}})
    ds = yaml.safe_load(files(plan(stack, "local")["grafana"])["provisioning/datasources/ecokit.yaml"])
    [influx] = ds["datasources"]
    assert influx["url"] == f"http://127.0.0.1:{stack.config.influxdb.port}"
    assert influx["user"] == "ecokit-reader"
    assert influx["secureJsonData"]["password"] == stack.secret_values()["influxdb/reader"]


def test_prometheus_scrapes_itself_and_emqx(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, extra={"prometheus": {"enabled": True, "scrape_interval": "5s"},
                                        "broker": {"kind": "emqx"}})
    conf = yaml.safe_load(files(plan(stack, "docker")["prometheus"])["prometheus.yml"])
    assert conf["global"]["scrape_interval"] == "5s"
    assert conf["global"]["external_labels"]["stack"] == "test"
    jobs = {job["job_name"]: job for job in conf["scrape_configs"]}
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["127.0.0.1:9090"]
    assert jobs["emqx-stats"]["metrics_path"] == "/api/v5/prometheus/stats"
    assert jobs["emqx-stats"]["static_configs"][0]["targets"] == ["broker:18083"]


def test_disabled_services_are_not_planned(tmp_path: Path) -> None:
    names = list(plan(make_stack(tmp_path)))
    assert names[:2] == ["broker", "influxdb"]
    assert "grafana" not in names
    assert "prometheus" not in names
    both = make_stack(tmp_path / "b", extra={"grafana": {"enabled": True}, "prometheus": {"enabled": True}})
    assert list(plan(both))[-2:] == ["prometheus", "grafana"]


# -- local vs docker paths -------------------------------------------------------------------


def test_local_configs_point_at_the_rendered_files_and_the_project_certs(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, profile="tls")
    spec = plan(stack, "local", websockets=False)["broker"]
    conf = parse_mosquitto(files(spec)["mosquitto.conf"])
    folder = stack.paths.service_config("broker")
    device = conf.listener(stack.config.broker.ports.mqtts)
    assert (device["password_file"], device["acl_file"]) == (str(folder / "passwd"), str(folder / "acl"))
    internal = conf.listener(stack.config.broker.ports.internal)
    assert (internal["password_file"], internal["acl_file"]) == (str(folder / "services.passwd"),
                                                                 str(folder / "services.acl"))
    assert spec.local is not None
    assert spec.local.args == ("-c", str(folder / "mosquitto.conf"))
    listener = conf.listener(stack.config.broker.ports.mqtts)
    assert Path(listener["certfile"]).parent == tmp_path.resolve() / "certs"
    assert listener["host"] == "127.0.0.1"


def test_docker_configs_point_where_the_files_are_placed_in_the_container(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, profile="mtls")
    spec = plan(stack, "docker")["broker"]
    placed = {f.relpath: f.container_path for f in spec.files}
    conf = parse_mosquitto(files(spec)["mosquitto.conf"])
    assert conf.listener(8883)["password_file"] == placed["passwd"]
    assert conf.listener(8883)["acl_file"] == placed["acl"]
    assert conf.listener(1884)["password_file"] == placed["services.passwd"]
    assert conf.listener(1884)["acl_file"] == placed["services.acl"]
    assert conf.one("persistence_location") == "/mosquitto/data/"
    assert "/mosquitto/data" in {v.container_path for v in spec.volumes}
    assert spec.container is not None
    assert spec.container.command == ("mosquitto", "-c", placed["mosquitto.conf"])
    assert conf.listener(1884)["host"] == "0.0.0.0", "the stack network (published on the host's loopback)"
    assert [lst["port"] for lst in conf.device_listeners()] == ["8883", "8084"], "mTLS: devices only with TLS"
    assert conf.listener(8883)["host"] == "0.0.0.0"
    assert conf.listener(8883)["cafile"] == "/ecokit/certs/ca.pem"
    assert str(tmp_path) not in files(spec)["mosquitto.conf"], "no host path inside a container config"

    emqx, rendered, emqx_spec = emqx_conf(stack, "docker")
    placed = {f.relpath: f.container_path for f in emqx_spec.files}
    assert emqx["authentication"][0]["bootstrap_file"] == placed["users.csv"]
    assert emqx["authorization.sources"][0]["path"] == placed["acl.conf"]
    assert emqx["api_key.bootstrap_file"] == placed["api_keys.txt"]
    assert placed["emqx.conf"] == "/opt/emqx/etc/emqx.conf"
    assert str(tmp_path) not in rendered["emqx.conf"]


def test_ports_inside_containers_are_the_standard_ones(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, profile="tls")
    spec = plan(stack, "docker")["broker"]
    assert {p.name: (p.container, p.host) for p in spec.ports} == {
        "mqtts": (8883, stack.config.broker.ports.mqtts), "wss": (8084, stack.config.broker.ports.wss),
        "internal": (1884, stack.config.broker.ports.internal)}
    assert {p.name: p.host_ip for p in spec.ports} == {"mqtts": None, "wss": None, "internal": "127.0.0.1"}


# -- determinism and files on disk ----------------------------------------------------------


@pytest.mark.parametrize("profile", ["default", "tls", "mtls"])
@pytest.mark.parametrize(("target", "kind"), [("local", "mosquitto"), ("docker", "mosquitto"), ("docker", "emqx")])
def test_same_input_gives_the_same_bytes_for_every_file(tmp_path: Path, profile: str, target: str,
                                                        kind: str) -> None:
    extra = {"broker": {"kind": kind}, "grafana": {"enabled": True}, "prometheus": {"enabled": True}}
    first = plan(make_stack(tmp_path, profile=profile, extra=extra), target)
    again = plan(make_stack(tmp_path, profile=profile), target)
    assert first.keys() == again.keys()
    for name, spec in first.items():
        assert files(spec) == files(again[name]), name
        assert spec.fingerprint() == again[name].fingerprint()


def test_another_stack_gets_other_secrets_and_other_hashes(tmp_path: Path) -> None:
    a = files(plan(make_stack(tmp_path / "a"))["broker"])["passwd"]
    b = files(plan(make_stack(tmp_path / "b"))["broker"])["passwd"]
    assert a != b


def test_render_writes_secret_files_0600_and_removes_stale_ones(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, extra={"grafana": {"enabled": True}})
    stale = stack.paths.service_config("broker") / "old.conf"
    stale.parent.mkdir(parents=True)
    stale.write_text("x")
    written = stack.render("local")
    assert not stale.exists()
    modes = {str(p.relative_to(stack.paths.config_dir)): p.stat().st_mode & 0o777 for p in written}
    assert modes["broker/passwd"] == 0o600
    assert modes["broker/mosquitto.conf"] == 0o644
    assert modes["grafana/provisioning/datasources/ecokit.yaml"] == 0o600
    assert modes["grafana/admin-password"] == 0o600
    for path in written:
        assert path.read_bytes() == next(f.content for s in stack.plan("local") for f in s.files
                                         if stack.paths.service_config(s.name) / f.relpath == path)


def test_a_registry_change_changes_only_reloadable_broker_files(tmp_path: Path) -> None:
    before = plan(make_stack(tmp_path))["broker"]
    (tmp_path / "config" / "devices.yaml").write_text("devices: [v1, v2, v3, v4]\n")
    after = plan(Stack.load(tmp_path / "ecokit.yaml", env={}))["broker"]
    assert files(before)["passwd"] != files(after)["passwd"]
    assert files(before)["mosquitto.conf"] == files(after)["mosquitto.conf"]
    assert before.fingerprint() == after.fingerprint(), "no restart needed"
    assert before.content_fingerprint() != after.content_fingerprint(), "but a reload"
    assert after.reload_signal == "SIGHUP"


def test_every_service_user_can_be_probed(tmp_path: Path) -> None:
    spec = plan(make_stack(tmp_path))["broker"]
    assert spec.probe is not None
    assert (spec.probe.kind, spec.probe.username) == ("mqtt", "ecokit-health")
    assert spec.probe.username in {r.username for r in SERVICE_ROLES}
