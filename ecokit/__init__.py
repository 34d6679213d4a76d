"""ecokit: a Python-orchestrated MQTT test ecosystem for IoT and vehicle-fleet teams."""

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

__version__ = "0.1.0"

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
