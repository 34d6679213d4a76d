"""Who may connect and what each principal may publish and subscribe to.

A pure model, rendered to Mosquitto's acl_file and to EMQX's acl.conf. Device rights are
patterns on the username (a device's username is its id), so the files stay small for
thousands of devices and a device can only ever reach its own topics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Access = Literal["publish", "subscribe", "all"]

# The placeholder for "this client's username" inside a pattern grant.
USERNAME = "{username}"

SHADOW = "things/{username}/shadow"
SHADOW_NAMED = "things/{username}/shadow/name/+"


@dataclass(frozen=True)
class Grant:
    access: Access
    topic: str

    @property
    def is_pattern(self) -> bool:
        return USERNAME in self.topic


def _shadow_grants() -> list[Grant]:
    grants = []
    for prefix in (SHADOW, SHADOW_NAMED):
        grants += [Grant("publish", f"{prefix}/{op}") for op in ("get", "update", "delete")]
        grants += [Grant("subscribe", f"{prefix}/{op}/{result}")
                   for op in ("get", "update", "delete") for result in ("accepted", "rejected")]
        grants += [Grant("subscribe", f"{prefix}/update/{kind}") for kind in ("delta", "documents")]
    return grants


# What every device may do, as patterns on its own username.
DEVICE_GRANTS: tuple[Grant, ...] = (
    Grant("publish", "fleet/{username}/#"),
    Grant("subscribe", "fleet/{username}/commands"),
    Grant("subscribe", "fleet/broadcast/commands"),
    *_shadow_grants(),
)


# What no device may touch under its own fleet/<id>/: the fleet processor writes these
# (geofence events, alerts) and the default rules store them; a device forging its own
# "left the restricted zone" would defeat them. Deny lines win over every grant.
DEVICE_DENIED: tuple[Grant, ...] = (
    Grant("all", "fleet/{username}/events"),
    Grant("all", "fleet/{username}/alerts"),
)


def _shadow_answers() -> tuple[str, ...]:
    found: list[str] = []
    for prefix in ("things/+/shadow", "things/+/shadow/name/+"):
        found += [f"{prefix}/+/accepted", f"{prefix}/+/rejected", f"{prefix}/update/delta",
                  f"{prefix}/update/documents"]
    return tuple(found)


# Topics only ecokit's own services publish, which other clients trust: dead letters, the
# shadow service's answers, the fleet processor's geofence events and alerts. On an open
# broker (auth.open) anonymous clients may neither publish nor subscribe to them (Mosquitto's
# `deny` covers both).
SERVICE_TOPICS: tuple[str, ...] = ("ecokit/#", *_shadow_answers(), "fleet/+/events", "fleet/+/alerts")


@dataclass(frozen=True)
class ServiceRole:
    """One of ecokit's own services, with the rights it needs and nothing more."""

    username: str
    purpose: str
    superuser: bool = False
    grants: tuple[Grant, ...] = ()


# ecokit's own MQTT users: the one place their names are spelled.
ADMIN_USER = "ecokit-admin"
HEALTH_USER = "ecokit-health"
BRIDGE_USER = "ecokit-bridge"
PROCESSOR_USER = "ecokit-processor"
SHADOW_USER = "ecokit-shadow"
REPLAY_USER = "ecokit-replay"
BROKERSTATS_USER = "ecokit-brokerstats"
CONSOLE_USER = "ecokit-console"

SERVICE_ROLES: tuple[ServiceRole, ...] = (
    ServiceRole(ADMIN_USER, "operators, the simulator as admin, command sending, tests",
                superuser=True),
    ServiceRole(HEALTH_USER, "readiness probes: may connect, may do nothing else"),
    ServiceRole(BRIDGE_USER, "bridge: reads every message into InfluxDB, writes dead letters",
                grants=(Grant("subscribe", "#"), Grant("publish", "ecokit/deadletter/#"))),
    ServiceRole(PROCESSOR_USER, "fleet processor: reads fleet traffic, publishes status, events and alerts",
                grants=(Grant("subscribe", "fleet/#"), Grant("publish", "fleet/+/status"),
                        Grant("publish", "fleet/+/events"), Grant("publish", "fleet/+/alerts"),
                        Grant("publish", "ecokit/deadletter/#"))),
    ServiceRole(SHADOW_USER, "shadow service: answers shadow requests, dead-letters what it cannot handle",
                grants=(Grant("subscribe", "things/+/shadow/#"),
                        Grant("publish", "things/+/shadow/#"), Grant("publish", "ecokit/deadletter/#"))),
    ServiceRole(CONSOLE_USER, "fleet console: reads fleet state, events and acks, sends commands, asks shadows",
                grants=(Grant("subscribe", "fleet/+/telemetry"), Grant("subscribe", "fleet/+/status"),
                        Grant("subscribe", "fleet/+/events"), Grant("subscribe", "fleet/+/alerts"),
                        Grant("subscribe", "fleet/+/commands/ack"), Grant("publish", "fleet/+/commands"),
                        *(Grant("publish", f"{prefix}/{op}") for prefix in ("things/+/shadow", "things/+/shadow/name/+")
                          for op in ("get", "update")),
                        *(Grant("subscribe", f"{prefix}/{op}/{result}")
                          for prefix in ("things/+/shadow", "things/+/shadow/name/+")
                          for op in ("get", "update") for result in ("accepted", "rejected")))),
    ServiceRole(REPLAY_USER, "replay: republishes archived messages to any topic",
                grants=(Grant("publish", "#"),)),
    ServiceRole(BROKERSTATS_USER, "broker metrics: reads Mosquitto's $SYS tree, nothing else",
                grants=(Grant("subscribe", "$SYS/#"),)),
)

SERVICE_USERNAMES = tuple(role.username for role in SERVICE_ROLES)


def service_role(username: str) -> ServiceRole:
    for role in SERVICE_ROLES:
        if role.username == username:
            return role
    raise KeyError(username)


@dataclass(frozen=True)
class Principal:
    """A username that may connect, with its password and explicit grants."""

    username: str
    password: str
    kind: Literal["service", "device", "user"]
    superuser: bool = False
    grants: tuple[Grant, ...] = field(default=())
    # ecokit generated the password (a random token from the secret store), rather than someone
    # writing it into the registry: how hard its stored hash needs to be (docs/DEVELOPING.md).
    generated: bool = False


@dataclass(frozen=True)
class AccessPolicy:
    """Everything the broker needs to authenticate and authorise clients."""

    principals: tuple[Principal, ...]
    device_grants: tuple[Grant, ...] = DEVICE_GRANTS
    device_denied: tuple[Grant, ...] = DEVICE_DENIED
    anonymous: bool = False
    # The test sandbox: anonymous clients reach every topic but $SYS writes and SERVICE_TOPICS.
    open: bool = False

    @property
    def superusers(self) -> tuple[Principal, ...]:
        return tuple(p for p in self.principals if p.superuser)

    @property
    def with_grants(self) -> tuple[Principal, ...]:
        return tuple(p for p in self.principals if p.grants and not p.superuser)

    def allows(self, username: str | None, access: Literal["publish", "subscribe"], topic: str) -> bool:
        """Whether ``username`` may publish to / subscribe to ``topic`` (a concrete topic).

        The reference semantics that both rendered ACL files implement; used by tests.
        Superusers may do anything except touch `$`-topics, which they may only read
        under `$SYS/`. The device grants are patterns on the username (Mosquitto
        ``pattern`` lines, EMQX ``all`` rules), so like in both brokers they apply to every
        username: a service or extra user reaches ``fleet/<its own name>/...``, and since
        device ids, usernames and ``ecokit-`` names never collide, nobody reaches another
        principal's topics.
        """
        if not username:
            if self.anonymous and self.open:
                if any(topic_matches(f, topic) for f in SERVICE_TOPICS):
                    return False
                if topic.startswith("$"):
                    return access == "subscribe" and topic_matches("$SYS/#", topic)
                return True
            # Anonymous clients exist only with `auth.anonymous: true`; like in both
            # brokers they get the pattern grants that do not name a username.
            return self.anonymous and any(
                g.access in (access, "all") and not g.is_pattern and topic_matches(g.topic, topic)
                for g in self.device_grants)
        principal = next((p for p in self.principals if p.username == username), None)
        if principal is None:
            return False
        if principal.superuser:
            if topic.startswith("$"):
                return access == "subscribe" and topic_matches("$SYS/#", topic)
            return True
        for denied in self.device_denied:
            if denied.access in (access, "all") and topic_matches(denied.topic.replace(USERNAME, username), topic):
                return False
        grants: Iterable[Grant] = [*principal.grants, *self.device_grants]
        for grant in grants:
            if grant.access not in (access, "all"):
                continue
            pattern = grant.topic.replace(USERNAME, username)
            if topic_matches(pattern, topic):
                return True
        return False


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT topic-filter matching (spec 4.7), including the `$`-topic rule."""
    if topic.startswith("$") and filter_[:1] in ("#", "+"):
        return False
    f_levels: Sequence[str] = filter_.split("/")
    t_levels: Sequence[str] = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)
