"""The fleet processor's rendered config file (``processor.json``)."""

from __future__ import annotations

from ecokit.config.rules import ProcessorConfig
from ecokit.contract import ServiceConfig


class ProcessorServiceConfig(ServiceConfig):
    service: str = "processor"
    processor: ProcessorConfig = ProcessorConfig()
