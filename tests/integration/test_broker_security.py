"""TLS, authentication and ACLs against a real Mosquitto started by ecokit."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ecokit.certs import CertAuthority, CertPaths, CertPolicy
from ecokit.cli import main
from ecokit.mqtt.tls import tls_context
from ecokit.runtime.probes import ProbeResult, check_mqtt
from ecokit.stack import Stack
from ecokit.testing import SyncClient, running_stack, write_project

HOST = "127.0.0.1"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ECOKIT_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory, server_binaries: None) -> Iterator[Stack]:
    project = write_project(tmp_path_factory.mktemp("tls"), devices=["v1", "v2"])
    with running_stack(project, profile="tls") as stack:
        yield stack


@pytest.fixture(scope="module")
def mtls_stack(tmp_path_factory: pytest.TempPathFactory, server_binaries: None) -> Iterator[Stack]:
    project = write_project(tmp_path_factory.mktemp("mtls"), devices=["v1"])
    with running_stack(project, profile="mtls") as stack:
        yield stack


def mqtts_port(stack: Stack) -> int:
    return stack.config.broker.ports.mqtts


def connect(stack: Stack, port: int, username: str | None, password: str | None,
            tls: ssl.SSLContext | None = None, host: str = HOST) -> ProbeResult:
    """A real CONNECT; ok only on a CONNACK that accepts the client."""
    return check_mqtt(host, port, username=username, password=password, tls=tls, timeout=5.0)


# Mosquitto's CONNACK for credentials it does not accept (MQTT 3.1.1 return code 5, as paho names it).
NOT_AUTHORIZED = "CONNACK refused (Not authorized)"


def client(stack: Stack, username: str, *, tls: bool = False) -> SyncClient:
    if username.startswith("ecokit-"):
        user, password = stack.service_credentials(username)
    else:
        user, password = stack.device_credentials(username)
    port = mqtts_port(stack) if tls else stack.config.broker.ports.mqtt
    c = SyncClient(HOST, port, username=user, password=password,
                   tls=tls_context(stack.cert_paths.ca_cert) if tls else None)
    reason, _, _ = c.connect()
    assert not reason.is_failure, reason
    return c


# -- TLS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_connect_verifies_the_generated_ca(tls_stack: Stack, host: str) -> None:
    user, password = tls_stack.device_credentials("v1")
    ctx = tls_context(tls_stack.cert_paths.ca_cert)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    result = connect(tls_stack, mqtts_port(tls_stack), user, password, ctx, host=host)
    assert result.ok, result.detail


def test_tls_with_a_ca_that_did_not_sign_the_server_fails_verification(tls_stack: Stack, tmp_path: Path) -> None:
    foreign = CertAuthority(CertPaths(tmp_path), CertPolicy(), "other")
    foreign.generate(server_names=["localhost"], clients=[])
    user, password = tls_stack.device_credentials("v1")
    result = connect(tls_stack, mqtts_port(tls_stack), user, password, tls_context(tmp_path / "ca.pem"))
    assert not result.ok
    assert "CERTIFICATE_VERIFY_FAILED" in result.detail


def test_tls_end_to_end_message(tls_stack: Stack) -> None:
    with client(tls_stack, "ecokit-admin", tls=True) as admin, client(tls_stack, "v1", tls=True) as v1:
        admin.subscribe("fleet/v1/telemetry")
        v1.publish("fleet/v1/telemetry", b'{"v": 1}', qos=1)
        [msg] = admin.expect(1)
        assert msg.payload == b'{"v": 1}'


def tls_1_1_client() -> ssl.SSLContext:
    """A client that offers only TLS 1.1 (OpenSSL 3 needs security level 0 to offer it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def tls_handshake(port: int, ctx: ssl.SSLContext) -> str:
    with socket.create_connection((HOST, port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        return str(tls.version())


def test_this_client_really_offers_tls_1_1(tls_stack: Stack) -> None:
    # Control for the next test: a server that allows TLS 1.1 accepts this client, so a
    # refusal can only come from the server's own minimum version.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
        server.minimum_version = ssl.TLSVersion.TLSv1_1
    server.load_cert_chain(tls_stack.cert_paths.server_cert, tls_stack.cert_paths.server_key)
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert tls_handshake(port, tls_1_1_client()) == "TLSv1.1"
    finally:
        thread.join(timeout=5)
        listener.close()


def test_tls_1_1_is_refused_by_the_broker(tls_stack: Stack) -> None:
    with pytest.raises(ssl.SSLError) as info:
        tls_handshake(mqtts_port(tls_stack), tls_1_1_client())
    # An alert *received from the server*: the server refused the protocol version.
    assert info.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", info.value


@pytest.mark.parametrize(("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                               (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_tls_1_2_and_1_3_are_accepted(tls_stack: Stack, version: ssl.TLSVersion, name: str) -> None:
    ctx = tls_context(tls_stack.cert_paths.ca_cert)
    ctx.minimum_version = ctx.maximum_version = version
    assert tls_handshake(mqtts_port(tls_stack), ctx) == name


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["mqtt", "mqtts"])
def test_wrong_password_is_refused(tls_stack: Stack, listener: str) -> None:
    user, password = tls_stack.device_credentials("v1")
    tls = tls_context(tls_stack.cert_paths.ca_cert) if listener == "mqtts" else None
    port = getattr(tls_stack.config.broker.ports, listener)
    result = connect(tls_stack, port, user, password + "-wrong", tls)
    assert not result.ok
    assert result.detail.endswith(NOT_AUTHORIZED), result.detail
    assert connect(tls_stack, port, user, password, tls).ok, "control: the right password works"


@pytest.mark.parametrize("listener", ["mqtt", "mqtts"])
def test_anonymous_is_refused(tls_stack: Stack, listener: str) -> None:
    tls = tls_context(tls_stack.cert_paths.ca_cert) if listener == "mqtts" else None
    result = connect(tls_stack, getattr(tls_stack.config.broker.ports, listener), None, None, tls)
    assert not result.ok
    assert result.detail.endswith(NOT_AUTHORIZED), result.detail


def test_unknown_user_is_refused(tls_stack: Stack) -> None:
    result = connect(tls_stack, tls_stack.config.broker.ports.mqtt, "v3", "some-password")
    assert not result.ok
    assert result.detail.endswith(NOT_AUTHORIZED), result.detail


def test_mqtt_5_client_with_a_wrong_password_gets_a_failure_reason_code(tls_stack: Stack) -> None:
    # The probe above speaks MQTT 3.1.1; devices may speak 5.
    user, _ = tls_stack.device_credentials("v1")
    c = SyncClient(HOST, tls_stack.config.broker.ports.mqtt, username=user, password="wrong-password",
                   protocol=mqtt.MQTTv5)
    try:
        reason, _, _ = c.connect()
    finally:
        c.disconnect()
    assert reason.is_failure
    assert reason.getName() in ("Bad user name or password", "Not authorized")


# -- ACLs -----------------------------------------------------------------------------------


def test_a_device_publishing_to_another_devices_topic_is_not_delivered(tls_stack: Stack) -> None:
    with client(tls_stack, "ecokit-admin") as admin, client(tls_stack, "v1") as v1:
        admin.subscribe("fleet/#")
        refused = v1.publish("fleet/v2/telemetry", b"spoofed", qos=1)
        assert refused is not None
        assert refused.getName() == "Not authorized", refused  # MQTT 5 PUBACK 0x87
        v1.publish("fleet/v2/status", b"spoofed", qos=0)
        v1.publish("fleet/v1/telemetry", b"own", qos=1)
        # Same publisher, same subscriber: anything delivered would arrive before this.
        [msg] = admin.expect(1)
        assert (msg.topic, msg.payload) == ("fleet/v1/telemetry", b"own")
        assert admin.drain(0.2) == []


def test_a_device_does_not_receive_another_devices_commands(tls_stack: Stack) -> None:
    with client(tls_stack, "ecokit-admin") as admin, client(tls_stack, "v1") as v1:
        v1.subscribe("fleet/v2/commands")
        v1.subscribe("fleet/v1/commands")
        v1.subscribe("fleet/broadcast/commands")
        admin.publish("fleet/v2/commands", b"for v2", qos=1)
        admin.publish("fleet/broadcast/commands", b"for all", qos=1)
        admin.publish("fleet/v1/commands", b"for v1", qos=1)
        got = v1.expect(2)
        assert [(m.topic, m.payload) for m in got] == [("fleet/broadcast/commands", b"for all"),
                                                       ("fleet/v1/commands", b"for v1")]


def test_a_device_cannot_publish_commands_or_broadcasts(tls_stack: Stack) -> None:
    with client(tls_stack, "ecokit-admin") as admin, client(tls_stack, "v1") as v1:
        admin.subscribe("fleet/#")
        for topic in ("fleet/broadcast/commands", "things/v2/shadow/update"):
            reason = v1.publish(topic, b"x", qos=1)
            assert reason is not None
            assert reason.getName() == "Not authorized", (topic, reason)  # MQTT 5 PUBACK 0x87
        v1.publish("fleet/v1/commands/ack", b"ack", qos=1)
        [msg] = admin.expect(1)
        assert msg.topic == "fleet/v1/commands/ack"


# -- mTLS -----------------------------------------------------------------------------------


def test_mtls_without_a_client_cert_is_refused(mtls_stack: Stack) -> None:
    user, password = mtls_stack.device_credentials("v1")
    ca = mtls_stack.cert_paths.ca_cert
    # TLS 1.3: the client's side of the handshake completes before the server checks for a
    # certificate; the server then drops the connection, so no CONNACK ever comes.
    result = connect(mtls_stack, mqtts_port(mtls_stack), user, password, tls_context(ca))
    assert not result.ok
    assert result.detail.endswith("no CONNACK"), result.detail
    tls12 = tls_context(ca)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2  # the refusal shows in the handshake itself
    result = connect(mtls_stack, mqtts_port(mtls_stack), user, password, tls12)
    assert not result.ok
    assert "HANDSHAKE_FAILURE" in result.detail


def test_mtls_with_a_client_cert_is_accepted(mtls_stack: Stack) -> None:
    user, password = mtls_stack.device_credentials("v1")
    paths = mtls_stack.cert_paths
    ctx = tls_context(paths.ca_cert, certfile=paths.client_cert("v1"), keyfile=paths.client_key("v1"))
    assert connect(mtls_stack, mqtts_port(mtls_stack), user, password, ctx).ok
    # The certificate does not replace the password.
    refused = connect(mtls_stack, mqtts_port(mtls_stack), user, "wrong-password", ctx)
    assert not refused.ok
    assert refused.detail.endswith(NOT_AUTHORIZED), refused.detail


def test_a_sync_client_without_a_client_cert_gets_the_tls_error(mtls_stack: Stack) -> None:
    user, password = mtls_stack.device_credentials("v1")
    tls12 = tls_context(mtls_stack.cert_paths.ca_cert)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    c = SyncClient(HOST, mqtts_port(mtls_stack), username=user, password=password, tls=tls12)
    with pytest.raises(ssl.SSLError) as info:
        c.connect()
    c.disconnect()
    # An alert received from the server: it wanted a client certificate.
    assert info.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE", info.value


def test_mtls_with_a_cert_from_another_ca_is_refused(mtls_stack: Stack, tmp_path: Path) -> None:
    foreign = CertAuthority(CertPaths(tmp_path), CertPolicy(), "other")
    foreign.generate(server_names=["localhost"], clients=["v1"])
    user, password = mtls_stack.device_credentials("v1")
    ctx = tls_context(mtls_stack.cert_paths.ca_cert, certfile=tmp_path / "clients" / "v1.pem",
                      keyfile=tmp_path / "clients" / "v1.key")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the refusal shows in the handshake itself
    result = connect(mtls_stack, mqtts_port(mtls_stack), user, password, ctx)
    assert not result.ok
    assert "TLSV1_ALERT_UNKNOWN_CA" in result.detail, result.detail  # the server does not know its CA


# -- the profile recorded by `up`, and status ----------------------------------------------


def test_later_commands_reuse_the_profile_of_up(tls_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tls_stack.loaded.config_file
    assert config_file is not None
    again = Stack.load(config_file, env={})
    assert again.loaded.profile == "tls"
    assert again.config.tls.enabled
    assert main(["status", "--json", "--config", str(config_file)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["broker"]["tls"] is True
    assert status["broker"]["endpoints"]["mqtts"] == f"mqtts://127.0.0.1:{mqtts_port(tls_stack)}"
    assert status["broker"]["ca"] == str(tls_stack.cert_paths.ca_cert)
