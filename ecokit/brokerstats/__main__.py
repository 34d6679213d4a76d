"""``python -m ecokit.brokerstats <brokerstats.json>``: Mosquitto's $SYS as Prometheus metrics."""

from __future__ import annotations

import sys
from typing import Any

from ecokit.brokerstats.contract import BrokerStatsServiceConfig
from ecokit.brokerstats.service import BrokerStats
from ecokit.daemon import ServiceLoop, serve


def started(service: ServiceLoop, config: BrokerStatsServiceConfig) -> dict[str, Any]:
    return {"metrics": f"{config.http.url}/metrics", "broker": f"{config.mqtt.host}:{config.mqtt.port}"}


def main(argv: list[str]) -> int:
    return serve("brokerstats", argv, BrokerStatsServiceConfig, lambda config, log: BrokerStats(config, log=log),
                 started)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
