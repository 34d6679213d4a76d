"""``python -m ecokit.processor <processor.json>``: the fleet processor with its health endpoint."""

from __future__ import annotations

import sys
from typing import Any, cast

from ecokit.daemon import ServiceLoop, serve
from ecokit.processor.contract import ProcessorServiceConfig
from ecokit.processor.service import Processor


def started(service: ServiceLoop, config: ProcessorServiceConfig) -> dict[str, Any]:
    processor = cast(Processor, service)
    settings = processor.settings
    return {"offline_after": settings.offline_after, "status_interval": settings.status_interval,
            "geofences": len(processor.core.tracker.index), "geofence_file": config.geofences.path,
            "alerts": sorted(config.alerts)}


def main(argv: list[str]) -> int:
    return serve("processor", argv, ProcessorServiceConfig, lambda config, log: Processor(config, log=log), started)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
