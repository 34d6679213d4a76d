"""The docker plan, checked without an engine: what cannot run here (EMQX 5.8, InfluxDB 2,
Grafana 12.4, Prometheus) is validated by parsing what ecokit renders and places."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyhocon import ConfigFactory

from ecokit.config.model import ImagesConfig
from ecokit.errors import CertError, ConfigError
from ecokit.resources import dashboards_dir
from ecokit.runtime.docker.engine import ImageRef
from ecokit.runtime.docker.service import (
    ContainerFile,
    StackNames,
    cert_references,
    container_config,
    container_files,
    fingerprint,
    tar_files,
)
from ecokit.services.context import EMQX_COOKIE
from ecokit.services.spec import ServiceSpec
from ecokit.stack import Stack

FULL = {"grafana": {"enabled": True}, "prometheus": {"enabled": True}}


@pytest.fixture
def make_stack(make_project: Callable[..., Path]) -> Callable[..., Stack]:
    def factory(*, emqx: bool = True, profile: str | None = None, **extra: Any) -> Stack:
        config = {**FULL, **extra}
        if emqx:
            config["broker"] = {"kind": "emqx", **config.get("broker", {})}
        stack = Stack.load(make_project(extra=config), profile=profile, env={})
        if stack.config.tls.enabled:
            stack.generate_certs()
        return stack

    return factory


def service(stack: Stack, name: str) -> ServiceSpec:
    return next(s for s in stack.plan("docker") if s.name == name)


def placed(stack: Stack, name: str) -> dict[str, ContainerFile]:
    spec = service(stack, name)
    return {f.path: f for f in container_files(spec, stack.cert_paths, certs_required=stack.config.tls.enabled)}


def readable_by(f: ContainerFile, uid: int) -> bool:
    return uid == 0 or (f.uid == uid and f.mode & 0o400 != 0) or f.mode & 0o004 != 0


# -- images ------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["emqx/emqx:5.8.9", "influxdb:2.7.12", "registry.local:5000/team/ecokit:0.1.0",
                                 "grafana/grafana@sha256:" + "a" * 64, "prom/prometheus:v2.55.1"])
def test_pinned_image_references_are_accepted(ref: str) -> None:
    assert str(ImageRef.parse(ref)) == ref


@pytest.mark.parametrize(("ref", "why"), [("emqx/emqx", "no tag"), ("emqx/emqx:latest", "unpinned"),
                                          ("registry.local:5000/ecokit", "no tag"), ("Bad Ref", "not an image")])
def test_unpinned_image_references_are_refused(ref: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        ImageRef.parse(ref)


def test_default_images_are_the_pinned_lines_the_design_names() -> None:
    images = ImagesConfig()
    assert re.fullmatch(r"emqx/emqx:5\.8\.\d+", images.emqx)  # last Apache-2.0 line
    assert re.fullmatch(r"influxdb:2\.7\.\d+", images.influxdb)  # `latest` is InfluxDB 3 now
    assert re.fullmatch(r"grafana/grafana:12\.4\.\d+", images.grafana)  # 13.2+ unbundles InfluxDB
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", images.prometheus)
    for ref in images.model_dump().values():
        ImageRef.parse(ref)


# -- EMQX --------------------------------------------------------------------------------


def test_emqx_config_parses_and_has_the_keys_emqx_refuses_to_boot_without(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    files = placed(stack, "broker")
    conf = ConfigFactory.parse_string(files["/opt/emqx/etc/emqx.conf"].content.decode())
    assert conf.get("node.cookie") == stack.secret_values()[EMQX_COOKIE]
    assert conf.get("node.data_dir") == "data"
    # Without a dashboard bind there is no REST API, no /status and no Prometheus endpoint.
    assert conf.get("dashboard.listeners.http.bind") == 18083
    assert conf.get("cluster.discovery_strategy") == "manual"
    assert conf.get("prometheus.enable_basic_auth") is False
    auth = conf.get("authentication")[0]
    assert (auth.get("backend"), auth.get("bootstrap_type")) == ("built_in_database", "plain")
    # Every file the config names is placed, readable by uid 1000 (EMQX skips an unreadable
    # bootstrap CSV with only a warning and then has no users).
    for key in ("bootstrap_file",):
        assert readable_by(files[auth.get(key)], 1000)
    assert readable_by(files[conf.get("authorization.sources")[0].get("path")], 1000)
    assert readable_by(files[conf.get("api_key.bootstrap_file")], 1000)
    users = files[auth.get("bootstrap_file")]
    assert (users.uid, users.mode) == (1000, 0o600)
    assert users.content.decode().splitlines()[0] == "user_id,password,is_superuser"
    assert "/ecokit/certs" not in files["/opt/emqx/etc/emqx.conf"].content.decode()


def test_emqx_container_keeps_its_data_across_restarts(make_stack: Callable[..., Stack]) -> None:
    spec = service(make_stack(), "broker")
    assert spec.container is not None
    # mnesia lives under data/mnesia/<node name>: a name from the container IP loses it.
    assert spec.container.env == {"EMQX_NODE__NAME": "emqx@127.0.0.1"}
    assert {v.container_path for v in spec.volumes} == {"/opt/emqx/data", "/opt/emqx/log"}
    assert spec.container.file_owner == (1000, 1000)


def test_emqx_acl_is_erlang_terms_ending_in_deny_all(make_stack: Callable[..., Stack]) -> None:
    files = placed(make_stack(), "broker")
    rules = [line for line in files["/opt/emqx/etc/ecokit/acl.conf"].content.decode().splitlines()
             if line.strip() and not line.startswith("%%")]
    assert all(rule.endswith(".") for rule in rules)
    assert rules[-1] == "{deny, all}."
    assert '{allow, {username, "ecokit-bridge"}, subscribe, ["#"]}.' in rules


def test_emqx_tls_listener_gets_the_certificates_it_names(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(profile="tls")
    files = placed(stack, "broker")
    conf = ConfigFactory.parse_string(files["/opt/emqx/etc/emqx.conf"].content.decode())
    ssl = conf.get("listeners.ssl.default")
    assert ssl.get("enable") is True
    for key in ("cacertfile", "certfile", "keyfile"):
        assert readable_by(files[ssl.get(f"ssl_options.{key}")], 1000)
    assert files["/ecokit/certs/server.key"].mode == 0o600
    # Only what the broker names: no CA key, no device keys.
    assert not [p for p in files if p.endswith("ca.key") or "/clients/" in p]


def test_a_missing_certificate_is_an_error_when_tls_is_on(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(profile="tls")
    stack.cert_paths.server_key.unlink()
    with pytest.raises(CertError, match=r"server\.key"):
        container_files(service(stack, "broker"), stack.cert_paths, certs_required=True)


# -- InfluxDB 2, Grafana, Prometheus --------------------------------------------------------


def test_influxdb2_sets_up_once_and_is_ready_only_after_setup(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    spec = service(stack, "influxdb")
    assert spec.container is not None
    env = spec.container.env
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert re.fullmatch(r"influxdb:2\.7\.\d+", spec.container.image)
    files = placed(stack, "influxdb")
    for key in ("DOCKER_INFLUXDB_INIT_PASSWORD_FILE", "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN_FILE"):
        assert files[env[key]].mode == 0o600
    # Setup runs only while /var/lib/influxdb2 has no influxd.bolt: it must be a volume.
    assert "/var/lib/influxdb2" in {v.container_path for v in spec.volumes}
    # /health answers 200 only once the entrypoint's setup is done.
    assert spec.probe is not None
    assert (spec.probe.kind, spec.probe.path, spec.probe.expect) == ("http", "/health", (200,))


def test_grafana_provisioning_references_only_datasources_it_provisions(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    spec = service(stack, "grafana")
    files = placed(stack, "grafana")
    datasources = yaml.safe_load(files["/etc/grafana/provisioning/datasources/ecokit.yaml"].content)
    by_uid = {d["uid"]: d for d in datasources["datasources"]}
    assert set(by_uid) == {"ecokit-influxdb", "ecokit-prometheus"}
    assert by_uid["ecokit-influxdb"]["url"] == "http://influxdb:8086"
    assert by_uid["ecokit-influxdb"]["jsonData"]["dbName"] == stack.config.influxdb.database
    assert by_uid["ecokit-influxdb"]["secureJsonData"]["httpHeaderValue1"].startswith("Token ")
    assert by_uid["ecokit-prometheus"]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/ecokit.yaml"].content)
    folder = providers["providers"][0]["options"]["path"]
    dashboards = {p: json.loads(f.content) for p, f in files.items() if p.startswith(folder + "/")}
    assert {Path(p).name for p in dashboards} == {p.name for p in dashboards_dir().glob("*.json")}
    for path, dashboard in dashboards.items():
        for uid in _datasource_uids(dashboard):
            assert uid in by_uid or uid == "-- Mixed --", f"{path} references datasource {uid}"
    assert spec.container is not None
    env = spec.container.env
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in files
    for key in ("GF_SECURITY_ADMIN_PASSWORD__FILE", "GF_SECURITY_SECRET_KEY__FILE"):
        assert readable_by(files[env[key]], 472)
    assert readable_by(files["/etc/grafana/provisioning/datasources/ecokit.yaml"], 472)
    assert env["GF_PLUGINS_PREINSTALL_DISABLED"] == "true"  # no internet needed


def _datasource_uids(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and "uid" in ds:
            found.add(ds["uid"])
        for value in node.values():
            found |= _datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            found |= _datasource_uids(value)
    return found


def test_prometheus_scrapes_emqx_on_its_dashboard_listener(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    files = placed(stack, "prometheus")
    config = yaml.safe_load(files["/etc/prometheus/prometheus.yml"].content)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["emqx-stats"]["metrics_path"] == "/api/v5/prometheus/stats"
    assert jobs["emqx-stats"]["static_configs"][0]["targets"] == ["broker:18083"]


# -- how the runtime places files and names objects ------------------------------------------


def test_files_keep_owner_and_mode_in_the_archive(make_stack: Callable[..., Stack]) -> None:
    files = placed(make_stack(), "broker")
    with tarfile.open(fileobj=io.BytesIO(tar_files(files.values()))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert all(m.isfile() for m in members.values())  # parents keep their owner in the image
    users = members["opt/emqx/etc/ecokit/users.csv"]
    assert (users.uid, users.gid, users.mode) == (1000, 1000, 0o600)
    assert members["opt/emqx/etc/ecokit/acl.conf"].mode == 0o644


def test_container_config_labels_names_and_publishes_on_the_bind_address(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    names = StackNames(stack.config.stack)
    config = container_config(service(stack, "broker"), names, bind="127.0.0.1")
    assert config.name == f"ecokit-{stack.config.stack}-broker"
    assert config.labels == {"ecokit.stack": stack.config.stack, "ecokit.service": "broker"}
    assert config.network == names.network
    assert set(config.aliases) == {"broker", "emqx"}
    assert (1883, "127.0.0.1", stack.config.broker.ports.mqtt) in config.ports
    assert (f"ecokit-{stack.config.stack}-broker-data", "/opt/emqx/data") in config.volumes


def test_fingerprint_follows_the_image_and_the_certificates(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(profile="tls")
    spec = service(stack, "broker")
    files = container_files(spec, stack.cert_paths, certs_required=True)
    base = fingerprint(spec, "sha256:one", files)
    assert fingerprint(spec, "sha256:one", files) == base
    assert fingerprint(spec, "sha256:two", files) != base
    renewed = [ContainerFile(f.path, f.content + b"\n", f.mode, f.uid, f.gid) if f.path.endswith("server.pem")
               else f for f in files]
    assert fingerprint(spec, "sha256:one", renewed) != base


def test_certificate_references_are_found_in_files_and_env() -> None:
    from ecokit.services.spec import ContainerSpec, RenderedFile

    spec = ServiceSpec(name="x", role="ecokit", description="",
                       files=(RenderedFile("a.conf", b'ca = "/ecokit/certs/ca.pem"\n'
                                                     b"key /ecokit/certs/clients/x.key\n"),),
                       container=ContainerSpec("img:1", env={"TLS_CERT": "/ecokit/certs/clients/x.pem"}))
    assert cert_references(spec) == ["ca.pem", "clients/x.key", "clients/x.pem"]
