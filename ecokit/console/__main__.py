"""``python -m ecokit.console <console.json>``: run the fleet console on uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from ecokit.console.app import create_app
from ecokit.console.contract import load_console_config
from ecokit.console.service import ConsoleService
from ecokit.daemon import setup_logging
from ecokit.errors import EcokitError


def _plain_text(record: logging.LogRecord) -> bool:
    """uvicorn adds a terminal-coloured copy of some messages; JSON logs want the plain one."""
    record.__dict__.pop("color_message", None)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m ecokit.console <console.json>``."""
    args = sys.argv[1:] if argv is None else argv
    log = setup_logging("console")
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).addFilter(_plain_text)
    if len(args) != 1:
        log.error("usage: python -m ecokit.console <console.json>")
        return 2
    try:
        config = load_console_config(args[0])
        service = ConsoleService(config, log)
    except EcokitError as exc:
        log.error(f"cannot start: {exc}")
        return 2
    app = create_app(service)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.http.host, port=config.http.port, log_config=None, access_log=False, ws="websockets-sansio",
        lifespan="on", server_header=False, date_header=True, proxy_headers=False, ws_max_size=65_536,
        ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_graceful_shutdown=5, h11_max_incomplete_event_size=65_536))
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
