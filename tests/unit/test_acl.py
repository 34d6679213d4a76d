"""The access model (AccessPolicy.allows) and the two files it renders to.

Mosquitto's acl file and EMQX's acl.conf are parsed and evaluated with each broker's own
rules (written here, independently of ecokit.acl, with paho's topic matcher), and both
must agree with AccessPolicy.allows on every principal, action and topic we try.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from paho.mqtt.client import topic_matches_sub

from ecokit.acl import DEVICE_DENIED, DEVICE_GRANTS, SERVICE_ROLES, AccessPolicy, Principal, topic_matches
from ecokit.services.context import Capabilities
from ecokit.services.plan import build_plan
from ecokit.stack import Stack
from ecokit.testing import write_project

Access = Literal["publish", "subscribe"]

USERS = [
    {"username": "dash", "subscribe": ["fleet/+/telemetry", "fleet/+/status"], "publish": ["fleet/broadcast/commands"]},
    {"username": "ops", "superuser": True},
    {"username": "reader"},
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    folder = tmp_path_factory.mktemp("acl")
    return Stack.load(write_project(folder, devices=["v1", "v2", "0042"], users=USERS), env={})


@pytest.fixture(scope="module")
def policy(stack: Stack) -> AccessPolicy:
    return stack.access_policy()


def broker_files(stack: Stack, kind: str) -> dict[str, str]:
    ctx = stack.plan_context("docker")
    ctx = dataclasses.replace(ctx, config=ctx.config.model_copy(update={
        "broker": ctx.config.broker.model_copy(update={"kind": kind})}), caps=Capabilities())
    spec = next(s for s in build_plan(ctx) if s.name == "broker")
    return {f.relpath: f.content.decode() for f in spec.files}


# -- AccessPolicy.allows -------------------------------------------------------------------


def test_a_device_publishes_only_under_its_own_fleet_topics(policy: AccessPolicy) -> None:
    assert policy.allows("v1", "publish", "fleet/v1/telemetry")
    assert policy.allows("v1", "publish", "fleet/v1/status")
    assert policy.allows("v1", "publish", "fleet/v1/commands/ack")
    assert not policy.allows("v1", "publish", "fleet/v2/telemetry")
    assert not policy.allows("v1", "publish", "fleet/broadcast/commands")
    assert not policy.allows("v1", "publish", "fleet/v10")
    assert not policy.allows("v1", "publish", "other/v1/telemetry")


def test_a_device_cannot_forge_the_processors_events_or_alerts(policy: AccessPolicy) -> None:
    # fleet/<id>/# is the device's, except what the processor derives from it.
    for topic in ("fleet/v1/events", "fleet/v1/alerts"):
        for access in ("publish", "subscribe"):
            assert not policy.allows("v1", access, topic)  # type: ignore[arg-type]
        assert policy.allows("ecokit-processor", "publish", topic)
        assert policy.allows("ecokit-bridge", "subscribe", topic)
    assert policy.allows("v1", "publish", "fleet/v1/events/extra")  # only the exact topics are the processor's


def test_a_device_id_that_prefixes_another_does_not_reach_it(policy: AccessPolicy) -> None:
    # "0042" is a device; "v" is not; levels match whole, never as prefixes.
    assert not policy.allows("v1", "publish", "fleet/v10/telemetry")
    assert policy.allows("0042", "publish", "fleet/0042/telemetry")
    assert not policy.allows("0042", "publish", "fleet/00420/telemetry")


def test_a_device_subscribes_to_its_commands_and_broadcasts_only(policy: AccessPolicy) -> None:
    assert policy.allows("v1", "subscribe", "fleet/v1/commands")
    assert policy.allows("v1", "subscribe", "fleet/broadcast/commands")
    assert not policy.allows("v1", "subscribe", "fleet/v2/commands")
    assert not policy.allows("v1", "subscribe", "fleet/v1/telemetry")
    assert not policy.allows("v1", "subscribe", "fleet/v2/telemetry")


@pytest.mark.parametrize("prefix", ["things/v1/shadow", "things/v1/shadow/name/config"])
def test_a_device_uses_its_own_classic_and_named_shadows(policy: AccessPolicy, prefix: str) -> None:
    for op in ("get", "update", "delete"):
        assert policy.allows("v1", "publish", f"{prefix}/{op}")
        assert not policy.allows("v1", "subscribe", f"{prefix}/{op}")
        for result in ("accepted", "rejected"):
            assert policy.allows("v1", "subscribe", f"{prefix}/{op}/{result}")
            assert not policy.allows("v1", "publish", f"{prefix}/{op}/{result}")
    assert policy.allows("v1", "subscribe", f"{prefix}/update/delta")
    assert policy.allows("v1", "subscribe", f"{prefix}/update/documents")
    other = prefix.replace("v1", "v2")
    assert not policy.allows("v1", "publish", f"{other}/update")
    assert not policy.allows("v1", "subscribe", f"{other}/update/accepted")


def test_service_roles_have_the_rights_they_need_and_no_more(policy: AccessPolicy) -> None:
    assert policy.allows("ecokit-bridge", "subscribe", "fleet/v1/telemetry")
    assert policy.allows("ecokit-bridge", "publish", "ecokit/deadletter/telemetry")
    assert not policy.allows("ecokit-bridge", "publish", "fleet/v1/telemetry")
    assert policy.allows("ecokit-processor", "subscribe", "fleet/v1/telemetry")
    assert policy.allows("ecokit-processor", "publish", "fleet/v1/status")
    assert not policy.allows("ecokit-processor", "publish", "fleet/v1/telemetry")
    assert not policy.allows("ecokit-processor", "subscribe", "things/v1/shadow/update")
    assert policy.allows("ecokit-shadow", "subscribe", "things/v1/shadow/update")
    assert policy.allows("ecokit-shadow", "publish", "things/v1/shadow/update/accepted")
    assert not policy.allows("ecokit-shadow", "publish", "fleet/v1/commands")
    assert policy.allows("ecokit-replay", "publish", "fleet/v1/telemetry")
    assert not policy.allows("ecokit-replay", "subscribe", "fleet/v1/telemetry")
    for topic in ("fleet/v1/telemetry", "fleet/v1/commands", "things/v1/shadow/get", "ecokit/deadletter/x"):
        for access in ("publish", "subscribe"):
            assert not policy.allows("ecokit-health", access, topic)  # type: ignore[arg-type]


def test_device_patterns_follow_every_username_but_never_reach_another_principal(policy: AccessPolicy) -> None:
    # Mosquitto `pattern` lines and EMQX `all` rules apply to every client, so a service or
    # extra user has a fleet/<its own name>/ namespace and may read broadcasts, like a
    # device; names never collide, so that reaches nobody else's topics.
    assert policy.allows("ecokit-health", "subscribe", "fleet/broadcast/commands")
    assert policy.allows("reader", "publish", "fleet/reader/telemetry")
    for name in ("ecokit-health", "reader", "dash"):
        assert not policy.allows(name, "publish", "fleet/v1/telemetry")
        assert not policy.allows(name, "subscribe", "fleet/v1/commands")
        assert not policy.allows(name, "publish", "things/v1/shadow/update")


def test_superusers_reach_everything_but_only_read_sys(policy: AccessPolicy) -> None:
    for name in ("ecokit-admin", "ops"):
        assert policy.allows(name, "publish", "fleet/v1/commands")
        assert policy.allows(name, "subscribe", "any/topic/at/all")
        assert policy.allows(name, "subscribe", "$SYS/broker/uptime")
        assert not policy.allows(name, "publish", "$SYS/broker/uptime")
        assert not policy.allows(name, "subscribe", "$other/topic")


def test_dollar_topics_are_not_matched_by_wildcards(policy: AccessPolicy) -> None:
    assert not policy.allows("ecokit-bridge", "subscribe", "$SYS/broker/uptime")
    assert not policy.allows("ecokit-replay", "publish", "$SYS/x")


def test_extra_users_get_their_listed_rights(policy: AccessPolicy) -> None:
    assert policy.allows("dash", "subscribe", "fleet/v1/telemetry")
    assert policy.allows("dash", "publish", "fleet/broadcast/commands")
    assert not policy.allows("dash", "publish", "fleet/v1/commands")
    assert not policy.allows("reader", "subscribe", "fleet/v1/telemetry")


def test_unknown_and_anonymous_clients_may_do_nothing(policy: AccessPolicy) -> None:
    assert policy.anonymous is False
    for username in (None, "", "stranger", "v3"):
        assert not policy.allows(username, "publish", f"fleet/{username}/telemetry")
        assert not policy.allows(username, "subscribe", "fleet/broadcast/commands")


def test_allowed_anonymous_clients_only_read_broadcasts(policy: AccessPolicy) -> None:
    open_policy = dataclasses.replace(policy, anonymous=True)
    assert open_policy.allows(None, "subscribe", "fleet/broadcast/commands")
    assert not open_policy.allows(None, "publish", "fleet/broadcast/commands")
    assert not open_policy.allows(None, "publish", "fleet/v1/telemetry")
    assert not open_policy.allows("stranger", "subscribe", "fleet/broadcast/commands")


def test_every_service_role_is_a_principal(policy: AccessPolicy) -> None:
    names = {p.username for p in policy.principals}
    assert {r.username for r in SERVICE_ROLES} <= names
    assert {p.username for p in policy.superusers} == {"ecokit-admin", "ops"}
    assert all(p.password for p in policy.principals)


@pytest.mark.parametrize(("filter_", "topic", "expected"), [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False), ("a/#", "a", True),
    ("a/#", "a/b/c", True), ("#", "a/b", True), ("+/+", "a/b", True), ("+", "a/b", False),
    ("a/+/c", "a//c", True), ("#", "$SYS/x", False), ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True),
    ("a/b", "a/b/", False), ("/+", "/a", True),
])
def test_topic_matching_follows_the_mqtt_spec(filter_: str, topic: str, expected: bool) -> None:
    assert topic_matches(filter_, topic) is expected
    assert topic_matches_sub(filter_, topic) is expected, "paho agrees"


# -- the rendered files encode the same policy -----------------------------------------


@dataclasses.dataclass
class MosquittoAcl:
    """Mosquitto 2's acl_file semantics: the client's own `user` block (or the lines
    before any `user` line for anonymous clients), then `pattern` lines for everyone,
    with %u/%c substituted and %u patterns skipped for clients without a username."""

    users: dict[str | None, list[tuple[str, str]]]
    patterns: list[tuple[str, str]]

    @classmethod
    def parse(cls, text: str) -> MosquittoAcl:
        users: dict[str | None, list[tuple[str, str]]] = {None: []}
        patterns: list[tuple[str, str]] = []
        current: str | None = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            word, _, rest = line.partition(" ")
            if word == "user":
                current = rest.strip()
                assert current not in users, f"user {current} listed twice"
                users[current] = []
                continue
            assert word in ("topic", "pattern"), f"unexpected acl line {raw!r}"
            parts = rest.split(" ", 1)
            access, topic = (parts[0], parts[1]) if parts[0] in ("read", "write", "readwrite", "deny") and \
                len(parts) == 2 else ("readwrite", rest)
            assert " " not in topic, f"a topic with a space needs care: {raw!r}"
            (patterns if word == "pattern" else users[current]).append((access, topic))
        return cls(users, patterns)

    def allows(self, username: str | None, access: Access, topic: str) -> bool:
        need = "write" if access == "publish" else "read"

        def ok(rule_access: str, rule_topic: str) -> bool:
            return rule_access in (need, "readwrite") and topic_matches_sub(rule_topic, topic)

        # `deny` lines (the user's or patterns) are checked first and refuse reading and writing alike.
        own = self.users.get(username, [])
        patterns = [(a, t.replace("%u", username or "").replace("%c", "client-id")) for a, t in self.patterns
                    if username is not None or "%u" not in t]
        if any(a == "deny" and topic_matches_sub(t, topic) for a, t in [*own, *patterns]):
            return False
        if any(ok(a, t) for a, t in own):
            return True
        for a, t in self.patterns:
            if username is None and "%u" in t:
                continue
            if ok(a, t.replace("%u", username or "").replace("%c", "client-id")):
                return True
        return False


ERL_RULE = re.compile(
    r'^\{(?P<perm>allow|deny),\s*(?P<who>all|\{username,\s*"(?P<user>[^"\\]+)"\}'
    r'|(?P<named>\{username,\s*\{re,\s*"\."\}\})),\s*'
    r'(?P<action>publish|subscribe|all),\s*\[(?P<topics>"[^"\\]*"(?:,\s*"[^"\\]*")*)\]\}\.$'
)


NAMED = "\0any client with a username"


@dataclasses.dataclass
class EmqxAcl:
    """EMQX 5 file authorization: rules in order, first match wins, `${username}`
    placeholders; superusers (is_superuser in the bootstrap CSV) skip authorization."""

    rules: list[tuple[str, str | None, str, list[str]]]
    superusers: set[str]
    no_match: str = "deny"

    @classmethod
    def parse(cls, acl_conf: str, users_csv: str) -> EmqxAcl:
        rules: list[tuple[str, str | None, str, list[str]]] = []
        for raw in acl_conf.splitlines():
            line = raw.strip()
            if not line or line.startswith("%"):
                continue
            if line == "{deny, all}.":
                rules.append(("deny", None, "all", ["#"]))
                continue
            m = ERL_RULE.match(line)
            assert m, f"not an acl.conf rule of the expected shape: {raw!r}"
            topics = re.findall(r'"([^"\\]*)"', m["topics"])
            # {username, {re, "."}}: any client that has a username.
            rules.append((m["perm"], NAMED if m["named"] else m["user"], m["action"], topics))
        rows = list(csv.DictReader(io.StringIO(users_csv)))
        supers = {r["user_id"] for r in rows if r["is_superuser"] == "true"}
        return cls(rules, supers)

    def allows(self, username: str | None, access: Access, topic: str) -> bool:
        if username in self.superusers:
            return True
        for perm, who, action, topics in self.rules:
            if who == NAMED:
                if not username:
                    continue
            elif who is not None and who != username:
                continue
            if action not in (access, "all"):
                continue
            for rule_topic in topics:
                if perm == "deny" and who is None and rule_topic == "#":
                    return False  # the closing {deny, all}.
                if "${username}" in rule_topic and not username:
                    continue
                if topic_matches_sub(rule_topic.replace("${username}", username or ""), topic):
                    return perm == "allow"
        return self.no_match == "allow"


def sample_topics(policy: AccessPolicy) -> Iterator[str]:
    names = sorted({p.username for p in policy.principals} | {"v3", "broadcast"})
    for name in names:
        yield from (f"fleet/{name}/telemetry", f"fleet/{name}/commands", f"fleet/{name}/status",
                    f"fleet/{name}/commands/ack", f"things/{name}/shadow/update",
                    f"things/{name}/shadow/update/accepted", f"things/{name}/shadow/update/delta",
                    f"things/{name}/shadow/name/cfg/get", f"things/{name}/shadow/name/cfg/get/rejected")
    # The processor's own topics, under every device's id (superusers differ between the
    # brokers there: Mosquitto's deny patterns apply to them too, EMQX's do not).
    for device in sorted({p.username for p in policy.principals if p.kind == "device"} | {"v3"}):
        yield from (f"fleet/{device}/events", f"fleet/{device}/alerts")
    yield from ("ecokit/deadletter/telemetry", "other/topic", "fleet", "fleet/broadcast/commands",
                "$SYS/broker/uptime", "$SYS/broker/clients/connected")


def test_mosquitto_acl_file_encodes_the_policy(stack: Stack, policy: AccessPolicy) -> None:
    acl = MosquittoAcl.parse(broker_files(stack, "mosquitto")["acl"])
    assert acl.users[None] == [], "anonymous clients get no topic lines"
    checked = 0
    # Anonymous clients reach the ACL only when `auth.anonymous: true` lets them connect.
    open_policy = dataclasses.replace(policy, anonymous=True)
    for principal in [*policy.principals, None]:
        username = principal.username if isinstance(principal, Principal) else None
        for topic in sample_topics(policy):
            for access in ("publish", "subscribe"):
                expected = open_policy.allows(username, access, topic)  # type: ignore[arg-type]
                assert acl.allows(username, access, topic) == expected, (username, access, topic)  # type: ignore[arg-type]
                checked += 1
    assert checked > 1000


def test_emqx_acl_conf_encodes_the_policy(stack: Stack, policy: AccessPolicy) -> None:
    files = broker_files(stack, "emqx")
    acl = EmqxAcl.parse(files["acl.conf"], files["users.csv"])
    assert acl.rules[-1] == ("deny", None, "all", ["#"]), "ends in an explicit deny-all"
    assert acl.superusers == {p.username for p in policy.superusers}
    open_policy = dataclasses.replace(policy, anonymous=True)
    for principal in [*policy.principals, None]:
        username = principal.username if isinstance(principal, Principal) else None
        for topic in sample_topics(policy):
            if username in acl.superusers and topic.startswith("$"):
                # EMQX superusers skip authorization altogether; the broker, not the ACL,
                # keeps clients from publishing $SYS topics.
                continue
            for access in ("publish", "subscribe"):
                expected = open_policy.allows(username, access, topic)  # type: ignore[arg-type]
                assert acl.allows(username, access, topic) == expected, (username, access, topic)  # type: ignore[arg-type]


def test_device_rights_are_patterns_so_the_files_do_not_grow_with_the_fleet(tmp_path: Path) -> None:
    small = Stack.load(write_project(tmp_path / "a", devices=2), env={})
    large = Stack.load(write_project(tmp_path / "b", devices=500), env={})
    for kind, name in (("mosquitto", "acl"), ("emqx", "acl.conf")):
        assert broker_files(small, kind)[name].count("\n") == broker_files(large, kind)[name].count("\n")
    mosq = MosquittoAcl.parse(broker_files(small, "mosquitto")["acl"])
    assert len(mosq.patterns) == len(DEVICE_GRANTS) + len(DEVICE_DENIED)
    assert all("%u" in t or t == "fleet/broadcast/commands" for _, t in mosq.patterns)


# -- the open sandbox (profile open, auth.open) ------------------------------------------------


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    folder = tmp_path_factory.mktemp("acl-open")
    return Stack.load(write_project(folder, devices=["v1", "v2"], users=USERS), profile="open", env={})


def test_an_open_broker_lets_anonymous_clients_reach_any_topic_but_service_ones(open_stack: Stack) -> None:
    policy = open_stack.access_policy()
    assert policy.anonymous
    assert policy.open
    for topic in ("TopicA", "TopicA/B", "/TopicA", "fleet/v1/telemetry", "fleet/v1/commands", "a/b/c"):
        assert policy.allows(None, "publish", topic)
        assert policy.allows(None, "subscribe", topic)
    assert policy.allows(None, "subscribe", "$SYS/broker/uptime")
    assert not policy.allows(None, "publish", "$SYS/broker/uptime")
    for topic in ("ecokit/deadletter/telemetry", "things/v1/shadow/update/accepted",
                  "things/v1/shadow/get/rejected", "things/v1/shadow/update/delta",
                  "things/v1/shadow/name/cfg/update/documents"):
        assert not policy.allows(None, "publish", topic), topic
        assert not policy.allows(None, "subscribe", topic), topic
    # Requests to the shadow service are not service topics: an anonymous client may ask.
    assert policy.allows(None, "publish", "things/v1/shadow/update")


def test_an_open_broker_changes_nothing_for_clients_with_credentials(open_stack: Stack, policy: AccessPolicy) -> None:
    opened = open_stack.access_policy()
    for name in ("v1", "dash", "reader", "ecokit-bridge", "stranger"):
        for topic in sample_topics(policy):
            for access in ("publish", "subscribe"):
                assert opened.allows(name, access, topic) == policy.allows(name, access, topic), \
                    (name, access, topic)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["mosquitto", "emqx"])
def test_both_brokers_render_the_open_sandbox_as_the_policy_says(open_stack: Stack, kind: str) -> None:
    files = broker_files(open_stack, kind)
    policy = open_stack.access_policy()
    acl: MosquittoAcl | EmqxAcl = MosquittoAcl.parse(files["acl"]) if kind == "mosquitto" \
        else EmqxAcl.parse(files["acl.conf"], files["users.csv"])
    topics = [*sample_topics(policy), "TopicA", "/TopicA", "a/b", "$SYS/broker/load/messages/received/1min",
              "ecokit/deadletter/x", "things/v1/shadow/name/cfg/delete/accepted"]
    for principal in [*policy.principals, None]:
        username = principal.username if isinstance(principal, Principal) else None
        for topic in topics:
            if kind == "emqx" and username in policy_superusers(policy) and topic.startswith("$"):
                continue  # EMQX superusers skip authorization (see test_emqx_acl_conf_encodes_the_policy)
            for access in ("publish", "subscribe"):
                expected = policy.allows(username, access, topic)  # type: ignore[arg-type]
                assert acl.allows(username, access, topic) == expected, (kind, username, access, topic)  # type: ignore[arg-type]


def policy_superusers(policy: AccessPolicy) -> set[str]:
    return {p.username for p in policy.superusers}


def test_open_without_anonymous_is_refused_at_load_time(tmp_path: Path) -> None:
    from ecokit.errors import ConfigError

    config = write_project(tmp_path, devices=1, extra={"auth": {"open": True}})
    with pytest.raises(ConfigError, match=r"auth\.open.*needs anonymous: true"):
        Stack.load(config, env={})
