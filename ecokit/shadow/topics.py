"""The shadow topic tree (AWS's, without the ``$aws/`` prefix).

    things/{thing}/shadow/{get,update,delete}                      classic shadow requests
    things/{thing}/shadow/name/{name}/{get,update,delete}          named shadow requests
    …/{get,update,delete}/{accepted,rejected}, …/update/{delta,documents}   replies
"""

from __future__ import annotations

from dataclasses import dataclass

from ecokit.shadow.machine import OPERATIONS, Operation, ShadowKey

ROOT = "things"

# What the shadow service subscribes to: requests only, never its own replies.
REQUEST_FILTERS = (f"{ROOT}/+/shadow/+", f"{ROOT}/+/shadow/name/+/+")


def prefix(thing: str, name: str = "") -> str:
    """``things/{thing}/shadow`` or ``things/{thing}/shadow/name/{name}``."""
    base = f"{ROOT}/{thing}/shadow"
    return f"{base}/name/{name}" if name else base


def key_prefix(key: ShadowKey) -> str:
    return prefix(key.thing, key.name)


@dataclass(frozen=True)
class ShadowRequest:
    key: ShadowKey
    operation: Operation


def parse_request(topic: str) -> ShadowRequest | None:
    """The shadow and operation a request topic names, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == ROOT and parts[2] == "shadow" and parts[3] in OPERATIONS:
        return ShadowRequest(ShadowKey(parts[1]), parts[3])
    if (len(parts) == 6 and parts[0] == ROOT and parts[2] == "shadow" and parts[3] == "name"
            and parts[5] in OPERATIONS):
        return ShadowRequest(ShadowKey(parts[1], parts[4]), parts[5])
    return None


def reply_topics(thing: str, name: str = "") -> dict[str, str]:
    """Every reply topic of one shadow, by suffix (``update/accepted`` …)."""
    base = prefix(thing, name)
    suffixes = [f"{op}/{r}" for op in OPERATIONS for r in ("accepted", "rejected")]
    suffixes += ["update/delta", "update/documents"]
    return {s: f"{base}/{s}" for s in suffixes}
