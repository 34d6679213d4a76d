"""``python -m ecokit.bridge <bridge.json>``: the bridge service with its health endpoint."""

from __future__ import annotations

import sys
from typing import Any, cast

from ecokit.bridge.service import Bridge
from ecokit.daemon import ServiceLoop, serve


def started(service: ServiceLoop, config: dict[str, Any]) -> dict[str, Any]:
    bridge = cast(Bridge, service)
    http = config["http"]
    return {"rules": sorted(bridge.rules), "filters": bridge.filters,
            "metrics": f"http://{http['host']}:{http['port']}/metrics"}


def main(argv: list[str]) -> int:
    return serve("bridge", argv, lambda config, log: Bridge(config, log=log), started,
                 lambda service: {"buffered": cast(Bridge, service).spool.pending_lines})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
