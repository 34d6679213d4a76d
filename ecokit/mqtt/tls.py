"""Client TLS for every MQTT connection ecokit makes: one context builder, TLS 1.2 at least."""

from __future__ import annotations

import ssl
from pathlib import Path


def tls_context(ca_file: Path | str | None, *, certfile: Path | str | None = None,
                keyfile: Path | str | None = None, verify: bool = True) -> ssl.SSLContext:
    """A client TLS context trusting ``ca_file`` (the system store when None) and presenting a
    client certificate for mutual TLS when ``certfile`` is given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certfile:
        ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    return ctx

