"""What ecokit's own long-running services share: their rendered config file, structured
JSON logs, the /metrics /healthz /readyz endpoint and stop signals.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ecokit.contract import Config, load_service_config
from ecokit.errors import EcokitError


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, service, msg and any ``extra`` fields."""

    RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "service": self.service, "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self.RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(service: str, level: int = logging.INFO) -> logging.Logger:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return logging.getLogger(f"ecokit.{service}")


class OncePerKind:
    """Logs the first occurrence of each kind of problem, counts the rest silently."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.seen: set[tuple[str, ...]] = set()
        self.lock = threading.Lock()

    def __call__(self, kind: tuple[str, ...], message: str, **extra: Any) -> None:
        with self.lock:
            if kind in self.seen:
                return
            self.seen.add(kind)
        self.log.warning(message + " (logged once per kind; see the metrics for counts)", extra=extra)

    def reset(self, kind: tuple[str, ...]) -> None:
        with self.lock:
            self.seen.discard(kind)


class HealthServer:
    """/metrics (Prometheus text), /healthz (the process answers), /readyz (``ready()`` is True)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
        registry_, ready_ = registry, ready

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(registry_), CONTENT_TYPE_LATEST, 200
                elif path == "/healthz":
                    body, ctype, code = b"ok\n", "text/plain", 200
                elif path == "/readyz":
                    ok = ready_()
                    body, ctype, code = (b"ready\n", "text/plain", 200) if ok else (b"not ready\n", "text/plain", 503)
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class ServiceLoop(Protocol):
    """What :func:`serve` runs: a service with Prometheus metrics, a readiness check and a
    blocking loop that returns once ``stop`` is set."""

    registry: CollectorRegistry

    def is_ready(self) -> bool: ...

    def run(self, stop: threading.Event) -> None: ...


def serve(name: str, argv: list[str], model: type[Config], build: Callable[[Config, logging.Logger], ServiceLoop],
          started: Callable[[ServiceLoop, Config], Mapping[str, Any]],
          stopped: Callable[[ServiceLoop], Mapping[str, Any]] = lambda service: {}) -> int:
    """``python -m ecokit.<name> <name>.json``: load and validate the rendered config
    (``model``), build the service, serve /metrics /healthz /readyz beside it and run it until
    SIGTERM/SIGINT. ``started``/``stopped`` give the fields logged with the start and stop lines."""
    log = setup_logging(name)
    if len(argv) != 1:
        log.error(f"usage: python -m ecokit.{name} <{name}.json>")
        return 2
    try:
        config = load_service_config(argv[0], model)
        service = build(config, log)
    except (EcokitError, ValueError) as exc:
        log.error(f"cannot start: {exc}")
        return 2
    stop = threading.Event()
    stop_on_signals(stop)
    health = HealthServer(config.http.host, config.http.port, service.registry, service.is_ready)
    health.start()
    log.info(f"{name} started", extra=dict(started(service, config)))
    try:
        service.run(stop)
    finally:
        health.stop()
    log.info(f"{name} stopped", extra=dict(stopped(service)))
    return 0
