"""InfluxDB 2.7 in docker: the entrypoint's variables and the requests ecokit sends.

- :class:`EntrypointFacts`: what the ``influxdb:2.7`` image's ``entrypoint.sh`` reads
  (derived from the script by ``tests/data/schemas/derive.py``), and
  :func:`check_entrypoint_env` over the environment and files a container gets;
- :func:`onboarding_request`: the ``POST /api/v2/setup`` body the entrypoint's
  ``influx setup`` sends for that environment, for the OpenAPI contract;
- :func:`captured_requests`: the HTTP requests an :class:`~ecokit.store.influx.InfluxV1`
  client makes, caught before they leave the process, for the v1 contract.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.adapters import BaseAdapter

from ecokit.schemacheck import Problem

# influxd options the entrypoint does not read itself, taken by influxd from INFLUXD_<OPTION>
# (docs.influxdata.com/influxdb/v2/reference/config-options/); the image sets none of these.
INFLUXD_OPTIONS: dict[str, str] = {
    "INFLUXD_REPORTING_DISABLED": "reporting-disabled: no usage data sent to InfluxData",
    "INFLUXD_HTTP_BIND_ADDRESS": "http-bind-address",
    "INFLUXD_LOG_LEVEL": "log-level",
    "INFLUXD_BOLT_PATH": "bolt-path",
    "INFLUXD_ENGINE_PATH": "engine-path",
    "INFLUXD_TLS_CERT": "tls-cert",
    "INFLUXD_TLS_KEY": "tls-key",
}
# The influx CLI's duration units (influx-cli internal/duration, RawDurationToTimeDuration).
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400,
                   "w": 604800}
MIN_RETENTION_SECONDS = 3600  # influxd refuses shorter retention (1.x meta and 2.x buckets alike)
_DURATION = re.compile(r"(\d+)(ns|us|µs|ms|s|m|h|d|w)")


@dataclass(frozen=True)
class EntrypointFacts:
    read: tuple[str, ...]
    required: tuple[str, ...]
    file_variants: tuple[str, ...]
    modes: tuple[str, ...]
    setup_flags: Mapping[str, str]
    set_by_entrypoint: tuple[str, ...]
    influxd_env_read: tuple[str, ...]
    image_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> EntrypointFacts:
        data = json.loads(path.read_text())
        return cls(tuple(data["read"]), tuple(data["required"]), tuple(data["file_variants"]),
                   tuple(data["modes"]), dict(data["setup_flags"]), tuple(data["set_by_entrypoint"]),
                   tuple(data["influxd_env_read"]), dict(data["image_env"]))


def retention_seconds(text: str) -> int | None:
    """``--retention`` as the influx CLI reads it (``1w2d``, ``0s``); None when it cannot."""
    pos, total = 0, 0.0
    if not text:
        return None
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if match is None:
            return None
        total += int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return int(total)


def resolved_env(env: Mapping[str, str], files: Mapping[str, bytes]) -> dict[str, str]:
    """The variables after the entrypoint has read its ``*_FILE`` variants."""
    out = dict(env)
    for name, value in env.items():
        if name.endswith("_FILE") and value in files:
            out[name[:-len("_FILE")]] = files[value].decode()
    return out


def check_entrypoint_env(env: Mapping[str, str], files: Mapping[str, bytes], facts: EntrypointFacts) -> list[Problem]:
    """The container's environment against what the entrypoint reads and requires.

    ``files`` maps container paths to the content the runtime places there before start.
    """
    problems: list[Problem] = []
    for name, value in sorted(env.items()):
        if name.startswith("DOCKER_INFLUXDB_INIT_"):
            if name in facts.set_by_entrypoint:
                problems.append(Problem(name, "the entrypoint sets this itself after setup"))
            elif name not in facts.read:
                problems.append(Problem(name, "the entrypoint does not read this variable"))
            if name in facts.file_variants and value not in files:
                problems.append(Problem(name, f"{value} is not placed in the container: the entrypoint would "
                                              "skip it and set up without the value"))
        elif name.startswith("INFLUXD_") and name not in INFLUXD_OPTIONS and name not in facts.influxd_env_read:
            problems.append(Problem(name, "not an influxd option ecokit knows (INFLUXD_<OPTION>)"))
    mode = env.get("DOCKER_INFLUXDB_INIT_MODE")
    if mode not in facts.modes:
        problems.append(Problem("DOCKER_INFLUXDB_INIT_MODE", f"{mode!r} is not one of {', '.join(facts.modes)}: "
                                                             "no setup runs (or the entrypoint exits 1)"))
    resolved = resolved_env(env, files)
    for name in facts.required:
        if not resolved.get(name):
            problems.append(Problem(name, "required for setup (entrypoint ensure_init_vars_set), not set"))
    retention = resolved.get("DOCKER_INFLUXDB_INIT_RETENTION")
    seconds = retention_seconds(retention) if retention else 0
    if seconds is None:
        problems.append(Problem("DOCKER_INFLUXDB_INIT_RETENTION", f"{retention!r} is not an influx CLI duration"))
    elif 0 < seconds < MIN_RETENTION_SECONDS:
        problems.append(Problem("DOCKER_INFLUXDB_INIT_RETENTION",
                                f"{retention!r} is under 1h: InfluxDB refuses the bucket (\"retention policy "
                                "duration must be at least 1h0m0s\") and setup fails"))
    return problems


def onboarding_request(env: Mapping[str, str], files: Mapping[str, bytes]) -> dict[str, Any]:
    """The ``POST /api/v2/setup`` body ``influx setup`` sends for this environment
    (influx-cli ``setup``: flags from setup_influxd, retention in seconds)."""
    resolved = resolved_env(env, files)
    body: dict[str, Any] = {
        "username": resolved.get("DOCKER_INFLUXDB_INIT_USERNAME"),
        "password": resolved.get("DOCKER_INFLUXDB_INIT_PASSWORD"),
        "org": resolved.get("DOCKER_INFLUXDB_INIT_ORG"),
        "bucket": resolved.get("DOCKER_INFLUXDB_INIT_BUCKET"),
    }
    retention = resolved.get("DOCKER_INFLUXDB_INIT_RETENTION")
    if retention:
        body["retentionPeriodSeconds"] = retention_seconds(retention)
    if resolved.get("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"):
        body["token"] = resolved["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    return {k: v for k, v in body.items() if v is not None}


# -- Flux tasks ----------------------------------------------------------------------------------
# A task's script declares `option task = {name: "...", every: 1h}` (or cron); InfluxDB refuses
# a task without a name or with neither/both of every and cron
# (docs.influxdata.com/influxdb/v2/process-data/task-options/).
_TASK_OPTION = re.compile(r"^\s*option\s+task\s*=\s*\{(?P<body>[^}]*)\}", re.M)
_FLUX_DURATION = re.compile(r"^(\d+(y|mo|w|d|h|ms|m|s|us|µs|ns))+$")
_TASK_KEYS = {"name": "string", "every": "duration", "cron": "string", "offset": "duration",
              "concurrency": "int", "retry": "int"}


def task_options(flux: str) -> dict[str, str] | None:
    """The ``option task`` record of a Flux script, raw values by key (None when absent)."""
    matches = list(_TASK_OPTION.finditer(flux))
    if len(matches) != 1:
        return None
    options: dict[str, str] = {}
    for part in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", matches[0].group("body")):
        if part.strip():
            key, _, value = part.partition(":")
            options[key.strip()] = value.strip()
    return options


def check_flux_task(flux: str, where: str = "task") -> list[Problem]:
    """A Flux task script's ``option task`` as InfluxDB 2 takes it."""
    options = task_options(flux)
    if options is None:
        return [Problem(where, "a task script needs exactly one `option task = {name: ..., every: ...}`")]
    problems = [Problem(f"{where}.{k}", "not a task option") for k in options if k not in _TASK_KEYS]
    if not re.fullmatch(r'"[^"]+"', options.get("name", "")):
        problems.append(Problem(f"{where}.name", "a task needs a name (a non-empty string)"))
    if ("every" in options) == ("cron" in options):
        problems.append(Problem(where, "a task needs exactly one of every and cron"))
    for key, kind in _TASK_KEYS.items():
        value = options.get(key)
        if value is None:
            continue
        if kind == "duration" and not _FLUX_DURATION.match(value):
            problems.append(Problem(f"{where}.{key}", f"{value!r} is not a Flux duration (1h, 30m, 1d12h)"))
        if kind == "int" and not value.isdigit():
            problems.append(Problem(f"{where}.{key}", f"{value!r} is not an integer"))
        if key == "cron" and not re.fullmatch(r'"(\S+\s+){4,5}\S+"', value):
            problems.append(Problem(f"{where}.cron", f"{value!r} is not a cron expression"))
    return problems


@dataclass(frozen=True)
class Request:
    """An HTTP request as a contract sees it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    media_type: str | None
    body: bytes | None

    @classmethod
    def from_prepared(cls, prepared: requests.PreparedRequest) -> Request:
        url = urlsplit(prepared.url or "")
        body = prepared.body
        raw = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else None
        headers = {k: str(v) for k, v in prepared.headers.items()}
        return cls((prepared.method or "GET").upper(), url.path or "/", dict(parse_qsl(url.query)), headers,
                   headers.get("Content-Type"), raw)

    def form(self) -> dict[str, str]:
        """A urlencoded body as fields."""
        return dict(parse_qsl((self.body or b"").decode()))


class _Capture(BaseAdapter):
    """A transport that records requests and answers as InfluxDB would (no network)."""

    def __init__(self, answers: Mapping[str, tuple[int, bytes]]) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.answers = answers

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        captured = Request.from_prepared(request)
        self.requests.append(captured)
        status, body = self.answers.get(captured.path, (204, b""))
        response = requests.Response()
        response.status_code = status
        response._content = body
        response.url = request.url or ""
        response.request = request
        response.headers["Content-Type"] = "application/json"
        return response

    def close(self) -> None:
        pass


@contextmanager
def captured_requests(session: requests.Session, answers: Mapping[str, tuple[int, bytes]] | None = None,
                      ) -> Iterator[list[Request]]:
    """Requests ``session`` sends inside the block, answered from ``answers`` (path → status, body)."""
    adapter = _Capture(answers or {"/query": (200, b'{"results":[{"statement_id":0}]}')})
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    yield adapter.requests
