"""The stack's private PKI: a CA, a server certificate and per-client certificates.

Idempotent by design: `generate` keeps every certificate that is still valid, signed by
the current CA, not near expiry and (for the server) covering every required name; it
replaces only what fails one of those checks, or everything with ``force``.
Private keys are written 0600 from the first byte.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ecokit.errors import CertError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
KeyType = Literal["ec", "rsa"]

CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertPaths:
    """Where each certificate and key of a stack lives."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    def client_cert(self, name: str) -> Path:
        return self.root / "clients" / f"{name}.pem"

    def client_key(self, name: str) -> Path:
        return self.root / "clients" / f"{name}.key"


@dataclass(frozen=True)
class CertPolicy:
    key_type: KeyType = "ec"
    ca_days: int = 3650
    server_days: int = 825
    client_days: int = 825
    renew_before_days: int = 30
    organization: str = "ecokit"


@dataclass(frozen=True)
class CertStatus:
    """One certificate as `certs check` reports it."""

    name: str
    path: Path
    ok: bool
    days_left: int | None = None
    subject: str = ""
    problems: tuple[str, ...] = ()
    not_after: float | None = None  # expiry, seconds since the epoch


@dataclass
class CertReport:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, key: PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError as exc:
        raise CertError(f"{path}: certificate not found", hint="run: ecokit certs generate") from exc
    except ValueError as exc:
        raise CertError(f"{path}: not a PEM certificate ({exc})") from exc


def load_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertError(f"{path}: private key not found", hint="run: ecokit certs generate") from exc
    except (ValueError, TypeError) as exc:
        raise CertError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def _sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def make_ca(key: PrivateKey, policy: CertPolicy, stack: str, now: dt.datetime) -> x509.Certificate:
    name = _name(f"ecokit {stack} CA", policy.organization)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=policy.ca_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
    )
    return _sign(builder, key)


def make_leaf(key: PrivateKey, ca: x509.Certificate, ca_key: PrivateKey, *, common_name: str,
              days: int, usage: Literal["server", "client"], sans: Sequence[str],
              policy: CertPolicy, now: dt.datetime) -> x509.Certificate:
    eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    not_after = min(now + dt.timedelta(days=days), ca.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, policy.organization)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True,
                                     key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san_entries(sans)), critical=False)
    return _sign(builder, ca_key)


def _days_left(cert: x509.Certificate, now: dt.datetime) -> int:
    return (cert.not_valid_after_utc - now).days


def _keys_match(cert: x509.Certificate, key: PrivateKey) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return cert.public_key().public_bytes(enc, fmt) == key.public_key().public_bytes(enc, fmt)


def cert_sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


def inspect(name: str, cert_path: Path, key_path: Path | None, ca: x509.Certificate | None, *,
            now: dt.datetime | None = None, renew_before_days: int = 0,
            required_sans: Iterable[str] = ()) -> CertStatus:
    """Check one certificate: readable, key matches, issued by ``ca``, in date, SANs."""
    now = now or _now()
    problems: list[str] = []
    try:
        cert = load_cert(cert_path)
    except CertError as exc:
        return CertStatus(name, cert_path, False, problems=(str(exc),))
    if key_path is not None:
        try:
            if not _keys_match(cert, load_key(key_path)):
                problems.append(f"{key_path.name} does not belong to this certificate")
        except CertError as exc:
            problems.append(str(exc))
        else:
            mode = key_path.stat().st_mode & 0o777
            if mode & 0o077:
                problems.append(f"{key_path.name} is readable by others (mode {mode:o}); chmod 600")
    if ca is not None and cert is not ca:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            problems.append("not signed by the stack CA")
    days = _days_left(cert, now)
    if cert.not_valid_before_utc > now + CLOCK_SKEW:
        problems.append("not valid yet")
    if days < 0:
        problems.append(f"expired {-days} days ago")
    elif days < renew_before_days:
        problems.append(f"expires in {days} days")
    missing = set(required_sans) - cert_sans(cert)
    if missing:
        problems.append(f"missing subject alternative names: {', '.join(sorted(missing))}")
    subject = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertStatus(name, cert_path, not problems, days,
                      subject=str(subject[0].value) if subject else "", problems=tuple(problems),
                      not_after=cert.not_valid_after_utc.timestamp())


class CertAuthority:
    """Generates and checks a stack's certificates under ``paths.root``."""

    def __init__(self, paths: CertPaths, policy: CertPolicy, stack: str) -> None:
        self.paths = paths
        self.policy = policy
        self.stack = stack

    def _ensure_ca(self, report: CertReport, force: bool, now: dt.datetime) -> tuple[x509.Certificate,
                                                                                      PrivateKey, bool]:
        status = inspect("ca", self.paths.ca_cert, self.paths.ca_key, None, now=now,
                         renew_before_days=self.policy.renew_before_days)
        if status.ok and not force:
            report.kept.append("ca")
            return load_cert(self.paths.ca_cert), load_key(self.paths.ca_key), False
        key = _new_key(self.policy.key_type)
        cert = make_ca(key, self.policy, self.stack, now)
        _write_private(self.paths.ca_key, key)
        _write_cert(self.paths.ca_cert, cert)
        report.created.append("ca")
        return cert, key, True

    def _ensure_leaf(self, report: CertReport, label: str, cert_path: Path, key_path: Path, *,
                     common_name: str, usage: Literal["server", "client"], days: int,
                     sans: Sequence[str], ca: x509.Certificate, ca_key: PrivateKey, force: bool,
                     now: dt.datetime) -> None:
        status = inspect(label, cert_path, key_path, ca, now=now,
                         renew_before_days=self.policy.renew_before_days, required_sans=sans)
        if status.ok and not force and status.subject == common_name:
            report.kept.append(label)
            return
        key = _new_key(self.policy.key_type)
        cert = make_leaf(key, ca, ca_key, common_name=common_name, days=days, usage=usage,
                         sans=sans, policy=self.policy, now=now)
        _write_private(key_path, key)
        _write_cert(cert_path, cert)
        report.created.append(label)

    def generate(self, *, server_names: Sequence[str], clients: Sequence[str], force: bool = False,
                 now: dt.datetime | None = None) -> CertReport:
        """Make sure the CA, the server cert and one client cert per name exist and are valid."""
        now = now or _now()
        report = CertReport()
        ca, ca_key, new_ca = self._ensure_ca(report, force, now)
        force = force or new_ca  # a new CA invalidates everything it did not sign
        self._ensure_leaf(report, "server", self.paths.server_cert, self.paths.server_key,
                          common_name=server_names[0] if server_names else "localhost",
                          usage="server", days=self.policy.server_days, sans=server_names,
                          ca=ca, ca_key=ca_key, force=force, now=now)
        for client in clients:
            self.issue_client(client, ca=ca, ca_key=ca_key, force=force, now=now, report=report)
        return report

    def issue_client(self, name: str, *, ca: x509.Certificate | None = None,
                     ca_key: PrivateKey | None = None, force: bool = False,
                     now: dt.datetime | None = None, report: CertReport | None = None) -> CertReport:
        """Issue (or keep) the client certificate for ``name`` (a device id or service user)."""
        now = now or _now()
        report = report if report is not None else CertReport()
        if ca is None or ca_key is None:
            ca_status = inspect("ca", self.paths.ca_cert, self.paths.ca_key, None, now=now)
            if not ca_status.ok:
                raise CertError(f"the stack CA is not usable: {'; '.join(ca_status.problems)}",
                                hint="run: ecokit certs generate")
            ca, ca_key = load_cert(self.paths.ca_cert), load_key(self.paths.ca_key)
        self._ensure_leaf(report, f"client {name}", self.paths.client_cert(name),
                          self.paths.client_key(name), common_name=name, usage="client",
                          days=self.policy.client_days, sans=(), ca=ca, ca_key=ca_key,
                          force=force, now=now)
        return report

    def check(self, *, server_names: Sequence[str], clients: Sequence[str],
              now: dt.datetime | None = None) -> list[CertStatus]:
        """Status of the CA, server and client certificates (nothing is changed)."""
        now = now or _now()
        renew = self.policy.renew_before_days
        ca_status = inspect("ca", self.paths.ca_cert, self.paths.ca_key, None, now=now,
                            renew_before_days=renew)
        ca = load_cert(self.paths.ca_cert) if self.paths.ca_cert.exists() and ca_status.days_left is not None \
            else None
        out = [ca_status,
               inspect("server", self.paths.server_cert, self.paths.server_key, ca, now=now,
                       renew_before_days=renew, required_sans=server_names)]
        for client in clients:
            out.append(inspect(f"client {client}", self.paths.client_cert(client),
                               self.paths.client_key(client), ca, now=now, renew_before_days=renew))
        return out
