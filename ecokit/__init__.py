"""ecokit: a Python-orchestrated MQTT test ecosystem for IoT and vehicle-fleet teams.

The names below load on first use, so ``import ecokit.<module>`` (the pytest plugin, a
service) does not pay for the whole library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ecokit.config.loader import LoadedConfig, load_config
    from ecokit.config.model import StackConfig
    from ecokit.errors import (
        BrokerError,
        CertError,
        ConfigError,
        EcokitError,
        PortInUse,
        ReadinessTimeout,
        RenderError,
        RuntimeUnavailable,
        SecretsError,
        ServiceError,
        StackNotRunning,
        StoreError,
        UsageError,
    )
    from ecokit.stack import Stack
    from ecokit.status import StackStatus

_WHERE = {
    "LoadedConfig": "ecokit.config.loader", "load_config": "ecokit.config.loader",
    "StackConfig": "ecokit.config.model", "Stack": "ecokit.stack", "StackStatus": "ecokit.status",
    **{name: "ecokit.errors" for name in (
        "BrokerError", "CertError", "ConfigError", "EcokitError", "PortInUse", "ReadinessTimeout", "RenderError",
        "RuntimeUnavailable", "SecretsError", "ServiceError", "StackNotRunning", "StoreError", "UsageError")},
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ecokit' has no attribute {name!r}")


__all__ = [
    "BrokerError",
    "CertError",
    "ConfigError",
    "EcokitError",
    "LoadedConfig",
    "PortInUse",
    "ReadinessTimeout",
    "RenderError",
    "RuntimeUnavailable",
    "SecretsError",
    "ServiceError",
    "Stack",
    "StackConfig",
    "StackNotRunning",
    "StackStatus",
    "StoreError",
    "UsageError",
    "__version__",
    "load_config",
]
