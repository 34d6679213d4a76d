"""``python -m ecokit.bridge <bridge.json>``: the bridge service with its health endpoint."""

from __future__ import annotations

import sys
import threading

from ecokit.bridge.service import Bridge
from ecokit.daemon import HealthServer, load_service_config, setup_logging, stop_on_signals
from ecokit.errors import EcokitError


def main(argv: list[str]) -> int:
    log = setup_logging("bridge")
    if len(argv) != 1:
        log.error("usage: python -m ecokit.bridge <bridge.json>")
        return 2
    try:
        config = load_service_config(argv[0])
        bridge = Bridge(config, log=log)
    except (EcokitError, ValueError, KeyError) as exc:
        log.error(f"cannot start: {exc}")
        return 2
    stop = threading.Event()
    stop_on_signals(stop)
    http = config["http"]
    health = HealthServer(http["host"], int(http["port"]), bridge.registry, bridge.is_ready)
    health.start()
    log.info("bridge started", extra={"rules": sorted(bridge.rules), "filters": bridge.filters,
                                      "metrics": f"http://{http['host']}:{http['port']}/metrics"})
    try:
        bridge.run(stop)
    finally:
        health.stop()
    log.info("bridge stopped", extra={"buffered": bridge.spool.pending_lines})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
