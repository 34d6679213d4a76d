"""EMQX's side of holes 1, 5, 6 and 7 (issue 10), checked on the rendered emqx.conf because
EMQX cannot run here: its own mechanisms, keys checked against the 5.8 schema
(tests/unit/schemacheck validates the whole file, the hidden ``zones`` root included).

- client-id binding: ``mqtt.use_username_as_clientid`` in the zone of the device listeners;
- no shared subscription groups for devices: ``mqtt.shared_subscription = false`` there (EMQX's
  authorization checks only the filter inside ``$share/<group>/``, so an ACL cannot refuse it);
- mTLS: ``mqtt.peer_cert_as_username = cn`` (the certificate's CN is the username, and the
  built-in database still checks that user's password);
- devices only through TLS under tls/mtls; ecokit's services on ``listeners.tcp.internal``
  (default zone, published on the host's loopback only);
- TLS 1.2 offers AEAD suites only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyhocon import ConfigFactory, ConfigTree

from ecokit.stack import Stack
from ecokit.testing import write_project

DEVICE_LISTENERS = ("tcp", "ssl", "ws", "wss")


def emqx(tmp_path: Path, profile: str | None = None, **extra: Any) -> tuple[ConfigTree, Stack]:
    stack = Stack.load(write_project(tmp_path, devices=2, extra={"broker": {"kind": "emqx"}, **extra}),
                       profile=profile, env={})
    broker = next(s for s in stack.plan("docker") if s.name == "broker")
    text = next(f for f in broker.files if f.relpath == "emqx.conf").content.decode()
    return ConfigFactory.parse_string(text), stack


@pytest.mark.parametrize("profile", ["default", "tls", "mtls"])
def test_device_listeners_bind_client_ids_and_refuse_shared_groups(tmp_path: Path, profile: str) -> None:
    conf, _ = emqx(tmp_path, profile)
    for name in DEVICE_LISTENERS:
        assert conf[f"listeners.{name}.default.zone"] == "devices", name
    zone = conf["zones.devices.mqtt"]
    assert zone["use_username_as_clientid"] is True
    assert zone["shared_subscription"] is False
    if profile == "mtls":
        assert zone["peer_cert_as_username"] == "cn"
    else:
        assert "peer_cert_as_username" not in zone
    # The global mqtt settings (and so the internal listener's zone) keep shared subscriptions.
    assert conf["mqtt.shared_subscription"] is True


@pytest.mark.parametrize("profile", ["default", "tls", "mtls"])
def test_ecokit_services_have_their_own_listener_on_loopback(tmp_path: Path, profile: str) -> None:
    conf, stack = emqx(tmp_path, profile)
    internal = conf["listeners.tcp.internal"]
    assert internal["bind"] == "0.0.0.0:1884"
    assert "zone" not in internal, "the default zone: many connections may share a user"
    broker = next(s for s in stack.plan("docker") if s.name == "broker")
    assert broker.port("internal").host_ip == "127.0.0.1", "published on the host's loopback only"
    for name in ("bridge", "processor", "shadow"):
        spec = next((s for s in stack.plan("docker") if s.name == name), None)
        if spec is not None:
            assert b'"port":1884' in spec.files[0].content.replace(b" ", b"")


@pytest.mark.parametrize("profile", ["tls", "mtls"])
def test_with_tls_on_devices_connect_only_through_tls(tmp_path: Path, profile: str) -> None:
    conf, _ = emqx(tmp_path, profile)
    assert conf["listeners.tcp.default.enable"] is False
    assert conf["listeners.ws.default.enable"] is False
    assert conf["listeners.ssl.default.enable"] is True
    ssl = conf["listeners.ssl.default.ssl_options"]
    assert ssl["verify"] == ("verify_peer" if profile == "mtls" else "verify_none")
    assert ssl["fail_if_no_peer_cert"] is (profile == "mtls")


def test_tls_1_2_offers_only_aead_suites(tmp_path: Path) -> None:
    conf, _ = emqx(tmp_path, "tls")
    for name in ("ssl", "wss"):
        ciphers = list(conf[f"listeners.{name}.default.ssl_options.ciphers"])
        assert ciphers[:3] == ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]
        assert all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers[3:]), ciphers
        assert not [c for c in ciphers if "CBC" in c or c.endswith("-SHA")]
    tls13, _ = emqx(tmp_path / "13", tls={"enabled": True, "min_version": "1.3"})
    assert list(tls13["listeners.ssl.default.ssl_options.ciphers"]) == [
        "TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]


def test_anonymous_stacks_do_not_bind_client_ids(tmp_path: Path) -> None:
    conf, _ = emqx(tmp_path, auth={"anonymous": True})
    assert "use_username_as_clientid" not in conf["zones.devices.mqtt"]
    assert conf["zones.devices.mqtt.shared_subscription"] is False
