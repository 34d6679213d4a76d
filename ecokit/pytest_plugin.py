"""ecokit's pytest plugin: real MQTT stacks, clients with deadlines, and MQTT conformance.

Installed with ecokit (entry point ``pytest11: ecokit``), so every pytest run in an
environment that has ecokit sees its fixtures; ``-p no:ecokit`` turns it off.
docs/pytest.md has the guide. Fixtures:

- ``ecokit_stack``: a running stack (Mosquitto, InfluxDB, ecokit's services; local
  processes) in a throwaway project with free ports. Stacks are shared by every test asking
  for the same settings, for the session (default) or one module, and stopped and purged
  when that ends, failed tests or not. Settings come from ``@pytest.mark.ecokit(profile=,
  overrides=, devices=, config=, runtime=, scope=)`` on a test, class or module, or from
  indirect parametrization (``@pytest.mark.parametrize("ecokit_stack", [{"profile": "tls"}],
  indirect=True)``).
- ``ecokit_stacks``: the session's pool, for fixtures of a wider scope (``.get(profile=...)``).
- ``broker``: the broker under test (a ``Target``): ``--broker URL`` when given, else the
  test's stack as ``ecokit-admin`` (TLS when its profile has TLS).
- ``mqtt_client``: a factory of connected ``SyncClient`` s (every wait has a deadline),
  disconnected after the test; ``device=``, ``username=``/``password=`` or ``anonymous=True``.
- ``device``: a device registered for this test alone (id, password, certificate paths).
- ``influx``: ``query()``, ``points()`` and ``wait_for()`` against the stack's InfluxDB.
- ``shadow``: a connected device-shadow client (get / update / delete) as ``ecokit-admin``.
- ``conformance_targets``: the broker the conformance checks run against
  (``pytest --pyargs ecokit.conformance``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ecokit.conformance import ConformanceReport, Outcome, Target, Targets
    from ecokit.shadow.client import ShadowClient
    from ecokit.testing.influx import InfluxHelper
    from ecokit.testing.mqtt import SyncClient
    from ecokit.testing.pool import DeviceIdentity, StackPool, StackSettings, TestStack

POOL_KEY = pytest.StashKey["StackPool"]()
BUNDLED_KEY = pytest.StashKey[bool]()
CONFORMANCE_KEY = pytest.StashKey["ConformanceReport"]()
MARKER = "ecokit"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ecokit", "ecokit: MQTT stacks and brokers under test")
    group.addoption("--broker", default=None, metavar="URL",
                    help="broker under test, mqtt://, mqtts://, ws://, wss:// (user:password@ allowed); "
                         "default $ECOKIT_BROKER_URL, else a stack ecokit starts")
    group.addoption("--broker-username", default=None, help="username at --broker (overrides the URL's)")
    group.addoption("--broker-password", default=None, help="password at --broker (overrides the URL's)")
    group.addoption("--broker-ca", default=None, metavar="FILE", help="CA bundle that signs the broker's certificate")
    group.addoption("--broker-cert", default=None, metavar="FILE", help="client certificate at --broker (mTLS)")
    group.addoption("--broker-key", default=None, metavar="FILE", help="client key at --broker (mTLS)")
    group.addoption("--broker-insecure", action="store_true", help="do not verify the broker's certificate")
    group.addoption("--restricted-username", default=None,
                    help="a user with limited rights at --broker (conformance authorization checks)")
    group.addoption("--restricted-password", default=None, help="its password")
    group.addoption("--denied-topic", default=None,
                    help="a topic the restricted user may neither publish nor subscribe to")
    group.addoption("--ecokit-runtime", default=None, choices=("local", "docker"),
                    help="where ecokit_stack runs its services (default: ini ecokit_runtime, local)")
    parser.addini("ecokit_scope", "lifetime of ecokit_stack's stacks: session (default) or module",
                  default="session")
    parser.addini("ecokit_runtime", "runtime of ecokit_stack's stacks: local (default) or docker", default="local")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ecokit(profile=None, overrides=None, devices=3, config=None, runtime=None, scope=None): "
        "the stack ecokit_stack gives this test, module or class")
    config.addinivalue_line("markers", "conformance: MQTT broker behaviour checks (ecokit.conformance)")


# -- stacks ------------------------------------------------------------------------------------


def _runtime(config: pytest.Config) -> str:
    return str(config.getoption("--ecokit-runtime", None) or config.getini("ecokit_runtime") or "local")


def _pool(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> StackPool:
    from ecokit.testing.pool import StackPool

    if POOL_KEY not in config.stash:
        config.stash[POOL_KEY] = StackPool(tmp_path_factory.mktemp("ecokit-stacks"))
    return config.stash[POOL_KEY]


def _owner(scope: str, nodeid: str) -> str:
    return "session" if scope == "session" else nodeid.split("::", 1)[0]


class StackFactory:
    """The session's stacks for fixtures of any scope: ``ecokit_stacks.get(profile="tls")``."""

    def __init__(self, pool: StackPool, runtime: str) -> None:
        self.pool = pool
        self.runtime = runtime

    def get(self, *, owner: str = "session", **settings: Any) -> TestStack:
        from ecokit.errors import EcokitError
        from ecokit.testing.pool import StackSettings

        try:
            wanted = StackSettings.from_mapping(settings, runtime=self.runtime)
        except (EcokitError, ValueError, TypeError) as exc:
            hint = f"; {exc.hint}" if isinstance(exc, EcokitError) and exc.hint else ""
            pytest.fail(f"ecokit stack settings {settings!r}: {exc}{hint}", pytrace=False)
        return _started(self.pool, wanted, owner)


def _started(pool: StackPool, settings: StackSettings, owner: str) -> TestStack:
    from ecokit.errors import EcokitError, ServiceError

    try:
        return pool.get(settings, owner)
    except EcokitError as exc:
        tail = f"\n--- last lines of the {exc.service} log ---\n{exc.log_tail}" \
            if isinstance(exc, ServiceError) and exc.log_tail else ""
        hint = f"\nhint: {exc.hint}" if exc.hint else ""
        pytest.fail(f"the ecokit stack ({settings.key()}) did not start: {exc}{tail}{hint}", pytrace=False)


@pytest.fixture(scope="session")
def ecokit_stacks(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> StackFactory:
    """The session's pool of running stacks (stopped and purged at the end of the session)."""
    return StackFactory(_pool(pytestconfig, tmp_path_factory), _runtime(pytestconfig))


def _settings(request: pytest.FixtureRequest) -> tuple[dict[str, Any], str]:
    values: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(MARKER))):  # the closest marker wins
        if marker.args:
            values["profile"] = marker.args[0]
        values.update(marker.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, str):
        values["profile"] = param
    elif isinstance(param, dict):
        values.update(param)
    elif param is not None:
        raise pytest.UsageError(f"ecokit_stack parameters are a profile name or a dict of settings, not {param!r}")
    scope = str(values.pop("scope", None) or request.config.getini("ecokit_scope") or "session")
    if scope not in ("session", "module"):
        raise pytest.UsageError(f"ecokit scope {scope!r}: expected session or module")
    return values, scope


@pytest.fixture
def ecokit_stack(request: pytest.FixtureRequest, ecokit_stacks: StackFactory) -> TestStack:
    """A running ecokit stack for this test (shared with tests asking for the same settings)."""
    values, scope = _settings(request)
    return ecokit_stacks.get(owner=_owner(scope, request.node.nodeid), **values)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Module-scoped stacks stop once the last test of their module is done."""
    pool = item.config.stash.get(POOL_KEY, None)
    if pool is None:
        return
    module = item.nodeid.split("::", 1)[0]
    if nextitem is None or nextitem.nodeid.split("::", 1)[0] != module:
        pool.close(module)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    pool = session.config.stash.get(POOL_KEY, None)
    if pool is not None:
        pool.close()


# -- clients -----------------------------------------------------------------------------------


def _url_target(config: pytest.Config) -> Target | None:
    """The ``--broker`` (or $ECOKIT_BROKER_URL) target, None when neither is given."""
    from ecokit.conformance import Credentials, Target

    url = config.getoption("--broker", None) or os.environ.get("ECOKIT_BROKER_URL")
    if not url:
        return None
    restricted = None
    if config.getoption("--restricted-username", None):
        restricted = Credentials(config.getoption("--restricted-username"),
                                 config.getoption("--restricted-password", None))
    from ecokit.errors import UsageError

    try:
        found = Target.from_url(
            url, username=config.getoption("--broker-username", None),
            password=config.getoption("--broker-password", None), ca_file=config.getoption("--broker-ca", None),
            cert_file=config.getoption("--broker-cert", None), key_file=config.getoption("--broker-key", None),
            insecure=bool(config.getoption("--broker-insecure", False)), restricted=restricted,
            denied_topic=config.getoption("--denied-topic", None))
    except UsageError as exc:
        raise pytest.UsageError(f"{exc} (--broker)") from None
    source = "--broker" if config.getoption("--broker", None) else "ECOKIT_BROKER_URL"
    found.description = f"{found.url} (given by {source})"
    return found


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Target:
    """The broker under test: ``--broker`` when given, else the test's stack as ecokit-admin."""
    from ecokit.conformance import stack_target

    found = _url_target(request.config)
    if found is None:
        test_stack: TestStack = request.getfixturevalue("ecokit_stack")
        found = stack_target(test_stack.stack, scheme="mqtts" if test_stack.stack.config.tls.enabled else "mqtt")
    found.prefix = f"ecokit-test/{uuid.uuid4().hex[:10]}"
    return found


MqttClientFactory = Callable[..., "SyncClient"]


@pytest.fixture
def mqtt_client(request: pytest.FixtureRequest, broker: Target) -> Iterator[MqttClientFactory]:
    """Make connected MQTT clients (``SyncClient``: paho with a deadline on every wait).

    ``mqtt_client()`` connects as the broker fixture's user; ``device=device`` as that device
    (with its certificate under mTLS), ``username=``/``password=`` as anyone,
    ``anonymous=True`` with no credentials. ``protocol`` 5 (default) or 4 (3.1.1);
    ``connect=False`` hands it back unconnected (to test a refusal). Every client is
    disconnected after the test.
    """
    from ecokit.conformance import Credentials

    made: list[SyncClient] = []

    def factory(*, device: DeviceIdentity | None = None, username: str | None = None, password: str | None = None,
                anonymous: bool = False, client_id: str | None = None, protocol: int = 5, clean_start: bool = True,
                keepalive: int = 30, session_expiry: int | None = None,
                will: tuple[str, bytes, int, bool] | None = None, connect: bool = True,
                timeout: float = 5.0) -> SyncClient:
        credentials: Credentials | bool = True
        tls = None
        if anonymous:
            credentials = False
        elif device is not None:
            credentials = Credentials(device.username, device.password)
            if broker.tls and device.cert_file is not None:
                test_stack: TestStack = request.getfixturevalue("ecokit_stack")
                tls = test_stack.tls_context(device)
        elif username is not None:
            credentials = Credentials(username, password)
        client = broker.client(protocol=protocol, client_id=client_id, clean=clean_start, credentials=credentials,
                               keepalive=keepalive, session_expiry=session_expiry, tls=tls, will=will,
                               timeout=timeout)
        made.append(client)
        if connect:
            reason, _, _ = client.connect()
            if reason.is_failure:
                raise AssertionError(f"{broker.url} refused the connection: {reason}")
        return client

    yield factory
    for client in made:
        client.disconnect()


@pytest.fixture
def device(ecokit_stack: TestStack) -> DeviceIdentity:
    """A device registered for this test alone (loaded into the running broker)."""
    return ecokit_stack.new_device()


@pytest.fixture
def influx(ecokit_stack: TestStack) -> Iterator[InfluxHelper]:
    """The stack's InfluxDB as its reader: ``query()``, ``points()``, ``wait_for()``."""
    with ecokit_stack.influx() as helper:
        yield helper


@pytest.fixture
def shadow(ecokit_stack: TestStack) -> Iterator[ShadowClient]:
    """A connected device-shadow client as ecokit-admin (get / update / delete)."""
    client = ecokit_stack.shadow_client()
    try:
        yield client
    finally:
        client.close()


# -- conformance -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def conformance_targets(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    """What the conformance checks run against: ``--broker`` when given, else a Mosquitto
    ecokit starts for the run (profile tls; a second one with profile mtls on demand)."""
    from ecokit.conformance import bundled_targets, check_reachable, url_targets
    from ecokit.errors import EcokitError

    found = _url_target(pytestconfig)
    if found is not None:
        try:
            check_reachable(found)
        except EcokitError as exc:
            pytest.fail(f"{exc}" + (f"\nhint: {exc.hint}" if exc.hint else ""), pytrace=False)
        yield url_targets(found)
        return
    try:
        with bundled_targets(tmp_path_factory.mktemp("conformance"), runtime=_runtime(pytestconfig)) as targets:
            pytestconfig.stash[BUNDLED_KEY] = True
            _conformance_report(pytestconfig).target = targets.main.description
            yield targets
    except EcokitError as exc:
        pytest.fail(f"the broker for the conformance checks did not start: {exc}", pytrace=False)


def _conformance_report(config: pytest.Config) -> ConformanceReport:
    from ecokit.conformance import ConformanceReport

    if CONFORMANCE_KEY not in config.stash:
        config.stash[CONFORMANCE_KEY] = ConformanceReport(target="", bundled=False)
    return config.stash[CONFORMANCE_KEY]


def _check_of(item: pytest.Item) -> Any:
    callspec = getattr(item, "callspec", None)
    if callspec is None or item.get_closest_marker("conformance") is None:
        return None
    found = callspec.params.get("check")
    from ecokit.conformance import Check

    return found if isinstance(found, Check) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    check = _check_of(item)
    if check is None or not (report.when == "call" or (report.when == "setup" and not report.passed)):
        return report
    from ecokit.conformance import CheckResult
    from ecokit.conformance.runner import hold_to_pins

    outcome: Outcome
    reason: str | None
    if hasattr(report, "wasxfail"):
        outcome, reason = "xfail", str(report.wasxfail)
    elif report.skipped:
        longrepr = report.longrepr
        reason = str(longrepr[2]).removeprefix("Skipped: ") if isinstance(longrepr, tuple) else str(longrepr)
        outcome = "skipped"
    else:
        outcome, reason = ("passed", None) if report.passed else ("failed", str(report.longrepr))
    if item.config.stash.get(BUNDLED_KEY, False):
        held, held_reason = hold_to_pins(check.name, outcome, reason)
        if held != outcome:
            report.outcome = "failed"
            report.longrepr = f"{check.name}: {held_reason}"
            if hasattr(report, "wasxfail"):
                del report.wasxfail
            outcome, reason = held, held_reason
    conformance = _conformance_report(item.config)
    conformance.results.append(CheckResult(check.name, check.area, check.spec, outcome, reason, report.duration))
    targets = item.funcargs.get("conformance_targets") if hasattr(item, "funcargs") else None
    if targets is not None:
        conformance.target = targets.main.description or targets.main.url
        conformance.notes = list(targets.main.notes)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    report = config.stash.get(CONFORMANCE_KEY, None)
    if report is None or not report.results:
        return
    terminalreporter.section("MQTT conformance")
    for line in report.summary_lines():
        terminalreporter.write_line(line)
