"""The stack PKI: idempotent generation, replacement of bad certs, SANs, key modes, check."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ecokit.certs import CertAuthority, CertPaths, CertPolicy, cert_sans, load_cert
from ecokit.errors import CertError
from ecokit.stack import DOCKER_HOSTNAMES, Stack
from ecokit.testing import write_project

SERVER_NAMES = ["localhost", "127.0.0.1", "::1", "broker", "emqx"]


def authority(root: Path, **policy: object) -> CertAuthority:
    return CertAuthority(CertPaths(root), CertPolicy(**policy), "test")  # type: ignore[arg-type]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_generate_creates_ca_server_and_clients(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    report = ca.generate(server_names=SERVER_NAMES, clients=["v1", "ecokit-health"])
    assert report.created == ["ca", "server", "client v1", "client ecokit-health"]
    assert report.kept == []
    server = load_cert(ca.paths.server_cert)
    root = load_cert(ca.paths.ca_cert)
    server.verify_directly_issued_by(root)
    assert server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    client = load_cert(ca.paths.client_cert("v1"))
    client.verify_directly_issued_by(root)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "v1"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_generate_is_idempotent_and_keeps_valid_certs(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    ca.generate(server_names=SERVER_NAMES, clients=["v1"])
    before = snapshot(tmp_path)
    report = ca.generate(server_names=SERVER_NAMES, clients=["v1"])
    assert report.created == []
    assert report.kept == ["ca", "server", "client v1"]
    assert snapshot(tmp_path) == before, "not one byte changed"


def test_a_new_client_is_added_without_touching_the_others(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    ca.generate(server_names=SERVER_NAMES, clients=["v1"])
    before = snapshot(tmp_path)
    report = ca.generate(server_names=SERVER_NAMES, clients=["v1", "v2"])
    assert report.created == ["client v2"]
    after = snapshot(tmp_path)
    assert all(after[name] == data for name, data in before.items())


def test_force_replaces_everything(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    ca.generate(server_names=SERVER_NAMES, clients=["v1"])
    before = snapshot(tmp_path)
    report = ca.generate(server_names=SERVER_NAMES, clients=["v1"], force=True)
    assert report.created == ["ca", "server", "client v1"]
    after = snapshot(tmp_path)
    assert all(after[name] != before[name] for name in before)


def test_an_expiring_server_cert_is_renewed(tmp_path: Path) -> None:
    ca = authority(tmp_path, server_days=40, renew_before_days=30)
    ca.generate(server_names=SERVER_NAMES, clients=[], now=now() - dt.timedelta(days=15))
    report = ca.generate(server_names=SERVER_NAMES, clients=[])
    assert report.created == ["server"], "25 days left is inside the 30-day renewal window"
    assert report.kept == ["ca"]
    assert (load_cert(ca.paths.server_cert).not_valid_after_utc - now()).days >= 39


def test_an_expired_client_cert_is_replaced(tmp_path: Path) -> None:
    ca = authority(tmp_path, client_days=10, renew_before_days=0)
    ca.generate(server_names=SERVER_NAMES, clients=["v1"], now=now() - dt.timedelta(days=20))
    statuses = {s.name: s for s in ca.check(server_names=SERVER_NAMES, clients=["v1"])}
    assert not statuses["client v1"].ok
    assert any("expired" in p for p in statuses["client v1"].problems)
    assert ca.generate(server_names=SERVER_NAMES, clients=["v1"]).created == ["client v1"]


def test_an_expiring_ca_replaces_the_whole_chain(tmp_path: Path) -> None:
    ca = authority(tmp_path, ca_days=35, renew_before_days=30)
    ca.generate(server_names=SERVER_NAMES, clients=["v1"], now=now() - dt.timedelta(days=10))
    report = ca.generate(server_names=SERVER_NAMES, clients=["v1"])
    assert report.created == ["ca", "server", "client v1"]
    load_cert(ca.paths.client_cert("v1")).verify_directly_issued_by(load_cert(ca.paths.ca_cert))


def test_leaf_certs_never_outlive_their_ca(tmp_path: Path) -> None:
    ca = authority(tmp_path, ca_days=100, server_days=825)
    ca.generate(server_names=SERVER_NAMES, clients=["v1"])
    limit = load_cert(ca.paths.ca_cert).not_valid_after_utc
    assert load_cert(ca.paths.server_cert).not_valid_after_utc <= limit
    assert load_cert(ca.paths.client_cert("v1")).not_valid_after_utc <= limit


def test_certs_signed_by_a_foreign_ca_are_replaced(tmp_path: Path) -> None:
    ours, foreign = authority(tmp_path / "ours"), authority(tmp_path / "foreign")
    ours.generate(server_names=SERVER_NAMES, clients=["v1"])
    foreign.generate(server_names=SERVER_NAMES, clients=["v1"])
    for name in ("server.pem", "server.key", "clients/v1.pem", "clients/v1.key"):
        (tmp_path / "ours" / name).write_bytes((tmp_path / "foreign" / name).read_bytes())
    statuses = {s.name: s for s in ours.check(server_names=SERVER_NAMES, clients=["v1"])}
    assert "not signed by the stack CA" in statuses["server"].problems
    assert "not signed by the stack CA" in statuses["client v1"].problems
    report = ours.generate(server_names=SERVER_NAMES, clients=["v1"])
    assert report.created == ["server", "client v1"]
    assert report.kept == ["ca"]
    root = load_cert(ours.paths.ca_cert)
    load_cert(ours.paths.server_cert).verify_directly_issued_by(root)


def test_a_key_that_does_not_match_its_cert_is_replaced(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    ca.generate(server_names=SERVER_NAMES, clients=["v1", "v2"])
    (tmp_path / "clients" / "v1.key").write_bytes((tmp_path / "clients" / "v2.key").read_bytes())
    status = {s.name: s for s in ca.check(server_names=SERVER_NAMES, clients=["v1"])}["client v1"]
    assert status.problems == ("v1.key does not belong to this certificate",)
    assert ca.generate(server_names=SERVER_NAMES, clients=["v1", "v2"]).created == ["client v1"]


def test_a_garbage_cert_is_reported_and_replaced(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    ca.generate(server_names=SERVER_NAMES, clients=[])
    ca.paths.server_cert.write_text("not a certificate")
    status = {s.name: s for s in ca.check(server_names=SERVER_NAMES, clients=[])}["server"]
    assert not status.ok
    assert "not a PEM certificate" in status.problems[0]
    assert ca.generate(server_names=SERVER_NAMES, clients=[]).created == ["server"]


def test_a_server_cert_missing_a_required_name_is_reissued(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    ca.generate(server_names=SERVER_NAMES, clients=[])
    report = ca.generate(server_names=[*SERVER_NAMES, "new-host.example"], clients=[])
    assert report.created == ["server"]
    assert "new-host.example" in cert_sans(load_cert(ca.paths.server_cert))


def test_private_keys_are_0600_and_certs_0644(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    ca.generate(server_names=SERVER_NAMES, clients=["v1"])
    for key in (ca.paths.ca_key, ca.paths.server_key, ca.paths.client_key("v1")):
        assert key.stat().st_mode & 0o777 == 0o600, key
    for cert in (ca.paths.ca_cert, ca.paths.server_cert, ca.paths.client_cert("v1")):
        assert cert.stat().st_mode & 0o777 == 0o644, cert
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_readable_key_is_reported(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    ca.generate(server_names=SERVER_NAMES, clients=["v1"])
    os.chmod(ca.paths.client_key("v1"), 0o644)
    status = {s.name: s for s in ca.check(server_names=SERVER_NAMES, clients=["v1"])}["client v1"]
    assert not status.ok
    assert "readable by others" in status.problems[0]


@pytest.mark.parametrize(("key_type", "key_class"), [("ec", ec.EllipticCurvePrivateKey),
                                                     ("rsa", rsa.RSAPrivateKey)])
def test_key_types(tmp_path: Path, key_type: str, key_class: type) -> None:
    from ecokit.certs import load_key

    ca = authority(tmp_path, key_type=key_type)
    ca.generate(server_names=SERVER_NAMES, clients=["v1"])
    assert isinstance(load_key(ca.paths.server_key), key_class)


def test_check_reports_chain_validity_and_days_to_expiry(tmp_path: Path) -> None:
    ca = authority(tmp_path, ca_days=3650, server_days=825, client_days=400)
    ca.generate(server_names=SERVER_NAMES, clients=["v1"])
    statuses = {s.name: s for s in ca.check(server_names=SERVER_NAMES, clients=["v1", "v2"])}
    assert statuses["ca"].ok
    assert statuses["ca"].days_left in (3649, 3650)
    assert statuses["server"].ok
    assert statuses["server"].days_left in (824, 825)
    assert statuses["client v1"].ok
    assert statuses["client v1"].days_left in (399, 400)
    assert statuses["client v1"].subject == "v1"
    assert not statuses["client v2"].ok
    assert "certificate not found" in statuses["client v2"].problems[0]


def test_check_without_any_certs_says_what_is_missing(tmp_path: Path) -> None:
    statuses = authority(tmp_path).check(server_names=SERVER_NAMES, clients=[])
    assert [s.ok for s in statuses] == [False, False]
    assert "not found" in statuses[0].problems[0]


def test_issuing_a_client_needs_a_usable_ca(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="the stack CA is not usable") as info:
        authority(tmp_path).issue_client("v1")
    assert info.value.hint == "run: ecokit certs generate"


def test_stack_server_cert_covers_loopback_and_every_docker_hostname(tmp_path: Path) -> None:
    stack = Stack.load(write_project(tmp_path, devices=["v1"], extra={"certs": {"extra_sans": ["mqtt.example"]}}),
                       env={})
    stack.generate_certs()
    sans = cert_sans(load_cert(stack.cert_paths.server_cert))
    assert {"localhost", "127.0.0.1", "::1", "mqtt.example"} <= sans
    for host in DOCKER_HOSTNAMES:
        assert host in sans
        assert f"ecokit-test-{host}" in sans
    ext = load_cert(stack.cert_paths.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ipaddress.ip_address("::1") in ext.value.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in ext.value.get_values_for_type(x509.IPAddress)
    # One client cert per device and per service user, under the project's certs folder.
    assert stack.cert_paths.client_cert("v1").is_file()
    assert stack.cert_paths.client_cert("ecokit-health").is_file()
    assert stack.cert_paths.root == tmp_path.resolve() / "certs"


def handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str) -> None:
    """A complete TLS handshake in memory (no sockets); raises ssl.SSLError on failure."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1", "broker", "influxdb"])
def test_tls_clients_verify_the_server_for_every_local_and_docker_name(tmp_path: Path, hostname: str) -> None:
    stack = Stack.load(write_project(tmp_path, devices=["v1"]), env={})
    stack.generate_certs()
    paths = stack.cert_paths
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths.server_cert, paths.server_key)
    server.load_verify_locations(paths.ca_cert)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=str(paths.ca_cert))
    client.load_cert_chain(paths.client_cert("v1"), paths.client_key("v1"))
    handshake(client, server, hostname)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(client, server, "not-covered.example")
    stranger = ssl.create_default_context()  # the system CAs do not know the stack CA
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(stranger, server, hostname)
