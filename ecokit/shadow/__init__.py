"""Device shadows: AWS IoT Device Shadow semantics over ``things/{thing}/shadow/...``.

- ``machine``: the pure state machine (get / update / delete, delta, metadata, versions).
- ``topics``: the topic tree.
- ``store``: SQLite persistence.
- ``service``: the MQTT service (``python -m ecokit.shadow.service CONFIG``).
- ``client``: application side (request, wait for accepted/rejected).
- ``device``: device side (report state, apply deltas).
"""

from ecokit.shadow.client import ShadowClient, ShadowReply, ShadowTimeout
from ecokit.shadow.device import IGNORE, DeviceShadow, Message, PahoDeviceShadow
from ecokit.shadow.machine import Outcome, Response, ShadowKey, ShadowRecord, handle, shadow_delta
from ecokit.shadow.topics import parse_request, prefix

__all__ = [
    "IGNORE",
    "DeviceShadow",
    "Message",
    "Outcome",
    "PahoDeviceShadow",
    "Response",
    "ShadowClient",
    "ShadowKey",
    "ShadowRecord",
    "ShadowReply",
    "ShadowTimeout",
    "handle",
    "parse_request",
    "prefix",
    "shadow_delta",
]
