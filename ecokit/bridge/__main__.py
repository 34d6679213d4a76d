"""``python -m ecokit.bridge <bridge.json>``: the bridge service with its health endpoint."""

from __future__ import annotations

import sys
from typing import Any, cast

from ecokit.bridge.contract import BridgeServiceConfig
from ecokit.bridge.service import Bridge
from ecokit.daemon import ServiceLoop, serve


def started(service: ServiceLoop, config: BridgeServiceConfig) -> dict[str, Any]:
    bridge = cast(Bridge, service)
    return {"rules": sorted(bridge.rules), "filters": bridge.filters, "metrics": f"{config.http.url}/metrics"}


def main(argv: list[str]) -> int:
    return serve("bridge", argv, BridgeServiceConfig, lambda config, log: Bridge(config, log=log), started,
                 lambda service: {"buffered": cast(Bridge, service).spool.pending_lines})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
