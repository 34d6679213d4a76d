"""``python -m ecokit.processor <processor.json>``: the fleet processor with its health endpoint."""

from __future__ import annotations

import sys
import threading

from ecokit.daemon import HealthServer, load_service_config, setup_logging, stop_on_signals
from ecokit.errors import EcokitError
from ecokit.processor.service import Processor


def main(argv: list[str]) -> int:
    log = setup_logging("processor")
    if len(argv) != 1:
        log.error("usage: python -m ecokit.processor <processor.json>")
        return 2
    try:
        config = load_service_config(argv[0])
        processor = Processor(config, log=log)
    except (EcokitError, ValueError, KeyError) as exc:
        log.error(f"cannot start: {exc}")
        return 2
    stop = threading.Event()
    stop_on_signals(stop)
    http = config["http"]
    health = HealthServer(http["host"], int(http["port"]), processor.registry, processor.is_ready)
    health.start()
    log.info("processor started", extra={"offline_after": processor.settings.offline_after,
                                         "status_interval": processor.settings.status_interval})
    try:
        processor.run(stop)
    finally:
        health.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
