"""Holes 5 and 6: who a client is, per listener.

5. A device took another's client id (vehicle-0001's credentials with client id vehicle-0007,
   clean start false): vehicle-0007 was kicked off and lost its queued commands. On the
   device listeners a client's id is now its username (Mosquitto's use_username_as_clientid;
   EMQX: the same key in the device listeners' zone).
6. The plain listener bypassed the tls and mtls profiles, and under mTLS A's password with
   B's certificate was accepted. With TLS on, devices connect only through TLS; ecokit's own
   services use an internal loopback listener that accepts only ecokit's users; under mTLS
   the certificate's common name is the username.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from security_support import DEVICES, client

from ecokit.runtime.probes import check_mqtt, tls_context
from ecokit.stack import Stack
from ecokit.status import stack_status
from ecokit.testing import SyncClient, running_stack, write_project

HOST = "127.0.0.1"


def _refused_connection(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# -- hole 5: client ids are bound to usernames ----------------------------------------------


def test_a_device_cannot_take_another_devices_client_id_and_session(stack: Stack) -> None:
    user1, password1 = stack.device_credentials("v1")
    user2, password2 = stack.device_credentials("v2")
    port = stack.config.broker.ports.mqtt
    with client(stack) as admin:
        # v2 has a persistent session with a subscription, and is offline now.
        with SyncClient(HOST, port, username=user2, password=password2, client_id="v2", clean_start=False,
                        session_expiry=600) as v2:
            assert not v2.connect()[0].is_failure
            v2.subscribe("fleet/v2/commands", qos=1)
        admin.publish("fleet/v2/commands", b"queued while v2 was away", qos=1)
        # v1 asks for v2's client id and session.
        with SyncClient(HOST, port, username=user1, password=password1, client_id="v2", clean_start=False,
                        session_expiry=600) as thief:
            reason, flags, _ = thief.connect()
            assert not reason.is_failure
            assert flags["session_present"] is False, "v1 got no session of v2's (its id is v1)"
            assert thief.drain(1.0) == []
            # While the thief is connected, v2 comes back: nobody is kicked off.
            with SyncClient(HOST, port, username=user2, password=password2, client_id="v2", clean_start=False,
                            session_expiry=600) as v2:
                reason, flags, _ = v2.connect()
                assert not reason.is_failure
                assert flags["session_present"] is True, "v2's session survived"
                [command] = v2.expect(1)
                assert command.payload == b"queued while v2 was away"
                assert thief.client.is_connected(), "and the other client was not kicked either"
                assert v2.disconnects.empty()


def test_two_connections_of_one_device_are_one_client(stack: Stack) -> None:
    # Whatever id a device asks for, it gets its username: a second connection takes the
    # first one's place (MQTT session takeover) instead of sitting beside it.
    user, password = stack.device_credentials("v3")
    port = stack.config.broker.ports.mqtt
    with SyncClient(HOST, port, username=user, password=password, client_id="v3-a") as first:
        assert not first.connect()[0].is_failure
        with SyncClient(HOST, port, username=user, password=password, client_id="v3-b") as second:
            assert not second.connect()[0].is_failure
            first.disconnects.get(timeout=5)  # taken over (the reason varies with the client library)
            assert second.client.is_connected()


# -- hole 6: the internal listener --------------------------------------------------------


def test_the_internal_listener_accepts_only_ecokit_users(stack: Stack) -> None:
    internal = stack.config.broker.ports.internal
    device, password = stack.device_credentials("v1")
    assert not check_mqtt(HOST, internal, username=device, password=password).ok
    user, secret = stack.service_credentials("ecokit-admin")
    assert check_mqtt(HOST, internal, username=user, password=secret).ok
    # ... and ecokit's users (but the health probe) are not accepted on the device listener.
    assert not check_mqtt(HOST, stack.config.broker.ports.mqtt, username=user, password=secret).ok
    bridge, bridge_secret = stack.service_credentials("ecokit-bridge")
    assert not check_mqtt(HOST, stack.config.broker.ports.mqtt, username=bridge, password=bridge_secret).ok
    status = {s.name: s.state for s in stack_status(Stack.load(stack.loaded.config_file, env={})).services}
    assert status["bridge"] == status["processor"] == status["shadow"] == "running", "they all use it"


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory, server_binaries: None) -> Iterator[Stack]:
    with running_stack(write_project(tmp_path_factory.mktemp("tls"), devices=DEVICES), profile="tls") as running:
        yield running


@pytest.fixture(scope="module")
def mtls_stack(tmp_path_factory: pytest.TempPathFactory, server_binaries: None) -> Iterator[Stack]:
    with running_stack(write_project(tmp_path_factory.mktemp("mtls"), devices=DEVICES), profile="mtls") as running:
        yield running


@pytest.mark.parametrize("profile", ["tls", "mtls"])
def test_with_tls_on_devices_get_in_only_through_tls(request: pytest.FixtureRequest, profile: str) -> None:
    stack: Stack = request.getfixturevalue(f"{profile}_stack")
    ports = stack.config.broker.ports
    assert _refused_connection(ports.mqtt), "no plain listener for devices"
    device, password = stack.device_credentials("v1")
    assert not check_mqtt(HOST, ports.internal, username=device, password=password).ok, \
        "nor a plain way in through the internal listener"
    cert = (stack.cert_paths.client_cert("v1"), stack.cert_paths.client_key("v1")) if profile == "mtls" else (None,
                                                                                                           None)
    tls = tls_context(stack.cert_paths.ca_cert, certfile=cert[0], keyfile=cert[1])
    assert check_mqtt(HOST, ports.mqtts, username=device, password=password, tls=tls).ok
    # ecokit's services run on the internal listener: the pipeline works end to end.
    status = {s.name: s.state for s in stack_status(Stack.load(stack.loaded.config_file, env={})).services}
    assert status["bridge"] == status["processor"] == status["shadow"] == "running"
    assert stack.broker_endpoints() == {"mqtts": f"mqtts://127.0.0.1:{ports.mqtts}"}


def _mtls_client(stack: Stack, cert_of: str, username: str, password: str) -> SyncClient:
    paths = stack.cert_paths
    c = SyncClient(HOST, stack.config.broker.ports.mqtts, username=username, password=password,
                   tls=tls_context(paths.ca_cert, certfile=paths.client_cert(cert_of),
                                   keyfile=paths.client_key(cert_of)))
    reason, _, _ = c.connect()
    assert not reason.is_failure, reason
    return c


def test_under_mtls_the_certificate_is_the_identity(mtls_stack: Stack) -> None:
    a_user, a_password = mtls_stack.device_credentials("v1")
    admin_user, admin_password = mtls_stack.service_credentials("ecokit-admin")
    with SyncClient(HOST, mtls_stack.config.broker.ports.internal, username=admin_user,
                    password=admin_password) as admin:
        assert not admin.connect()[0].is_failure
        admin.subscribe("fleet/#")
        # A's password with B's certificate: the client is B, not A.
        with _mtls_client(mtls_stack, "v2", a_user, a_password) as posing:
            refused = posing.publish("fleet/v1/telemetry", b'{"spoofed": true}', qos=1)
            assert refused is not None
            assert refused.is_failure, "it may not publish as A"
            posing.publish("fleet/v2/telemetry", b'{"as": "v2"}', qos=1)
            [msg] = admin.expect(1)
            assert (msg.topic, json.loads(msg.payload)) == ("fleet/v2/telemetry", {"as": "v2"})
        # An ecokit user's certificate on the device listener gets no ecokit rights there.
        with _mtls_client(mtls_stack, "ecokit-admin", admin_user, admin_password) as cert_admin:
            refused = cert_admin.publish("fleet/v1/commands", b"x", qos=1)
            assert refused is not None
            assert refused.is_failure
