"""Where the checks run: a broker URL, a running ecokit stack, or a broker ecokit starts for
the run (the "bundled" Mosquitto: local runtime, profile tls, and a second stack with
profile mtls only when the mTLS check runs), always torn down after."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ecokit.acl import ADMIN_USER
from ecokit.conformance.outcomes import CannotRun
from ecokit.conformance.target import Credentials, Target
from ecokit.errors import BrokerError, StackNotRunning
from ecokit.stack import Stack


@dataclass
class Targets:
    """The target of a run, and how to get the mTLS one (started or chosen on first use)."""

    main: Target
    _mtls: Callable[[], Target] | None = None
    no_mtls_reason: str = "no listener requiring client certificates is known for this target"
    _mtls_target: Target | None = field(default=None, repr=False)

    def mtls(self) -> Target:
        if self._mtls is None:
            raise CannotRun(self.no_mtls_reason)
        if self._mtls_target is None:
            found = self._mtls()
            found.prefix = self.main.prefix
            found.notes = self.main.notes
            self._mtls_target = found
        return self._mtls_target


def stack_target(stack: Stack, *, scheme: str = "mqtt") -> Target:
    """``ecokit-admin`` on the stack's ``scheme`` listener; its first device is the restricted user."""
    endpoints = stack.broker_endpoints()
    if scheme not in endpoints:
        raise CannotRun(f"stack {stack.config.stack!r} has no {scheme} listener")
    user, password = stack.service_credentials(ADMIN_USER)
    devices = stack.devices()
    mtls = stack.config.tls.mtls and scheme in ("mqtts", "wss")
    return Target.from_url(
        endpoints[scheme], username=user, password=password, ca_file=str(stack.cert_paths.ca_cert),
        cert_file=str(stack.cert_paths.client_cert(ADMIN_USER)) if mtls else None,
        key_file=str(stack.cert_paths.client_key(ADMIN_USER)) if mtls else None,
        restricted=Credentials(*stack.device_credentials(devices[0].id)) if devices else None)


def running_stack_targets(stack: Stack) -> Targets:
    """The broker of a stack that is up: its plain listener (or TLS one when plain is off),
    with its TLS listener known to the TLS checks and, under mtls, to the mTLS check."""
    if stack.current_runtime() is None:
        raise StackNotRunning(f"stack {stack.config.stack!r} is not up",
                              hint="run `ecokit up`, give --broker URL, or --bundled for a broker ecokit "
                                   "starts for the run")
    endpoints = stack.broker_endpoints()
    main = stack_target(stack, scheme="mqtt" if "mqtt" in endpoints else "mqtts")
    if "mqtts" in endpoints and not main.tls:
        main.tls_target = stack_target(stack, scheme="mqtts")
        main.tls_target.prefix = main.prefix
    main.description = f"stack {stack.config.stack!r} ({stack.config.broker.kind}, {stack.current_runtime()} " \
                       f"runtime) at {main.url}" + (f", TLS at {main.tls_target.url}" if main.tls_target else "")
    tls = main if main.tls else main.tls_target
    if stack.config.tls.mtls and tls is not None:
        return Targets(main, lambda: tls)
    return Targets(main, no_mtls_reason="the stack's TLS listener does not require client certificates "
                                         "(profile mtls does)")


def check_reachable(target: Target) -> None:
    """One CONNECT before the run: an unreachable broker or refused credentials is one clear
    error, not one failure per check."""
    try:
        with target.connected(timeout=10.0):
            pass
    except ssl.SSLError as exc:
        raise BrokerError(f"TLS handshake with {target.url} failed: {exc.reason or exc}",
                          hint="give the CA that signed the broker's certificate (--ca), or --insecure") from None
    except (OSError, TimeoutError) as exc:
        raise BrokerError(f"cannot reach the broker at {target.url}: {exc}",
                          hint="is it running, and is the URL's host and port right?") from None
    except AssertionError as exc:
        raise BrokerError(str(exc), hint="check the credentials (user:password@ in the URL, or --username/--password)"
                          ) from None


def url_targets(target: Target) -> Targets:
    if target.tls and target.cert_file:
        return Targets(target, lambda: target)
    return Targets(target, no_mtls_reason="the mTLS check needs an mqtts:// target with a client certificate "
                                          "(--broker-cert/--broker-key)")


def mosquitto_version() -> str:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        text = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "mosquitto"
    return text.splitlines()[0] if text else "mosquitto"


@contextlib.contextmanager
def bundled_targets(workdir: Path, *, runtime: str = "local") -> Iterator[Targets]:
    """Start the bundled broker for the run (profile tls) and stop it (purged) at the end,
    even on failure; a second stack with profile mtls starts only if the mTLS check asks."""
    from ecokit.testing.stack import running_stack, write_project

    with contextlib.ExitStack() as stacks:
        config = write_project(workdir / "conformance", devices=2, stack="conformance")
        stack = stacks.enter_context(running_stack(config, profile="tls", runtime=runtime))
        main = stack_target(stack)
        main.tls_target = stack_target(stack, scheme="mqtts")
        main.tls_target.prefix = main.prefix
        main.bundled = True
        main.description = (f"{mosquitto_version()} started by ecokit ({runtime} runtime, profile tls) at "
                            f"{main.url}, TLS at {main.tls_target.url}")

        def mtls() -> Target:
            mtls_config = write_project(workdir / "conformance-mtls", devices=1, stack="conformance-mtls")
            mtls_stack = stacks.enter_context(running_stack(mtls_config, profile="mtls", runtime=runtime))
            found = stack_target(mtls_stack, scheme="mqtts")
            found.bundled = True
            return found

        yield Targets(main, mtls)
