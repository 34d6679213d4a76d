"""The MQTT broker service: Mosquitto 2 or EMQX 5.8, from the same access policy."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

from ecokit.acl import HEALTH_USER, SERVICE_TOPICS, USERNAME, AccessPolicy, Grant, Principal
from ecokit.config.model import TLS13_CIPHERS, StackConfig
from ecokit.render import render_template
from ecokit.services.context import (
    EMQX_API_SECRET,
    EMQX_COOKIE,
    EMQX_DASHBOARD,
    HASH_SEED,
    Placement,
    PlanContext,
)
from ecokit.services.pipeline import emqx_rules_pipeline
from ecokit.services.spec import (
    ContainerSpec,
    LocalCommand,
    PortSpec,
    Probe,
    RenderedFile,
    ServiceSpec,
    Volume,
)

BROKER = "broker"
EMQX_ETC = "/opt/emqx/etc/ecokit"
MOSQUITTO_ETC = "/mosquitto/config"


def mosquitto_password_hash(password: str, salt: bytes, iterations: int) -> str:
    """Mosquitto 2's `$7$` PBKDF2-SHA512 password hash (as written by mosquitto_passwd)."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, dklen=64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def deterministic_salt(seed: str, username: str) -> bytes:
    """A per-user salt derived from the stack's secret seed: random to an attacker,
    stable across renders so the same inputs give the same password file."""
    return hmac.new(seed.encode(), b"mosquitto-salt\0" + username.encode(), hashlib.sha256).digest()[:12]


def _placed(ctx: PlanContext, relpath: str, container_dir: str) -> tuple[str, str]:
    """(path the config refers to, container path) of a rendered broker file: the host
    path for a local process, the container path (where the docker runtime puts it) in docker."""
    container = f"{container_dir}/{relpath}"
    return (ctx.paths.file(BROKER, relpath) if ctx.target == "local" else container), container


def broker_ports(ctx: Placement) -> tuple[PortSpec, ...]:
    p = ctx.config.broker.ports
    ports = []
    if ctx.plain_mqtt:
        ports.append(PortSpec("mqtt", ctx.listen_port("mqtt", p.mqtt), p.mqtt, "mqtt"))
    if ctx.tls:
        ports.append(PortSpec("mqtts", ctx.listen_port("mqtts", p.mqtts), p.mqtts, "mqtts"))
    if ctx.websockets:
        if ctx.plain_mqtt:
            ports.append(PortSpec("ws", ctx.listen_port("ws", p.ws), p.ws, "ws", "/mqtt"))
        if ctx.tls:
            ports.append(PortSpec("wss", ctx.listen_port("wss", p.wss), p.wss, "wss", "/mqtt"))
    if ctx.config.broker.kind == "emqx":
        ports.append(PortSpec("dashboard", ctx.listen_port("dashboard", p.dashboard), p.dashboard, "http"))
    # ecokit's own services and operator tools; never published beyond this machine.
    ports.append(PortSpec("internal", ctx.listen_port("internal", p.internal), p.internal, "mqtt",
                          host_ip="127.0.0.1"))
    return tuple(ports)


def _probe(ctx: PlanContext) -> Probe:
    # Readiness is a real MQTT CONNECT with the health user's credentials: it proves the
    # listener, the password file and the authentication chain together.
    port = "mqtt" if ctx.plain_mqtt else "mqtts"
    health = next(p for p in ctx.policy.principals if p.username == HEALTH_USER)
    return Probe("mqtt", port, username=health.username, password=health.password, timeout=30.0)


def _mosquitto_topic(topic: str) -> str:
    return topic.replace(USERNAME, "%u")


def _mosquitto_access(grant: Grant) -> str:
    return {"publish": "write", "subscribe": "read", "all": "readwrite"}[grant.access]


def on_device_listeners(principal: Principal) -> bool:
    """Who may log in on the device listeners: devices, extra users, and the health probe
    (which proves those listeners); ecokit's other users only on the internal listener."""
    return principal.kind != "service" or principal.username == HEALTH_USER


def mosquitto_acl_lines(policy: AccessPolicy, who: Callable[[Principal], bool] = lambda p: True, *,
                        anonymous: bool = True) -> list[tuple[str | None, list[str]]]:
    """(username, or None for anonymous clients, or '' for patterns; lines) blocks of a
    Mosquitto acl_file for the principals ``who`` selects (the device patterns apply to
    everyone). Anonymous clients' lines come first: before any `user` line; ``anonymous``
    False leaves them out (the internal listener takes no anonymous clients)."""
    blocks: list[tuple[str | None, list[str]]] = []
    if anonymous and policy.anonymous and policy.open:
        # `deny` is checked before anything else and covers reading as well as writing.
        blocks.append((None, [*(f"topic deny {t}" for t in SERVICE_TOPICS), "topic read $SYS/#",
                              "topic readwrite #"]))
    for principal in sorted(filter(who, policy.principals), key=lambda p: p.username):
        if principal.superuser:
            blocks.append((principal.username, ["topic readwrite #", "topic read $SYS/#"]))
        elif principal.grants:
            blocks.append((principal.username,
                           [f"topic {_mosquitto_access(g)} {_mosquitto_topic(g.topic)}"
                            for g in principal.grants]))
    # Mosquitto checks `deny` lines before any grant, wherever they stand.
    patterns = [f"pattern deny {_mosquitto_topic(g.topic)}" for g in policy.device_denied]
    patterns += [f"pattern {_mosquitto_access(g)} {_mosquitto_topic(g.topic)}" for g in policy.device_grants]
    blocks.append(("", patterns))
    return blocks


def password_iterations(cfg: StackConfig, principal: Principal) -> int:
    """PBKDF2 rounds for a principal's Mosquitto hash: few for the random tokens ecokit generates
    (rounds only slow down guessing a weak password), the configured count for the ones people wrote."""
    b = cfg.broker
    return b.generated_password_iterations if principal.generated else b.password_iterations


def mosquitto(ctx: PlanContext) -> ServiceSpec:
    cfg = ctx.config
    seed = ctx.secret(HASH_SEED)

    def compute(username: str, password: str, iterations: int) -> str:
        return mosquitto_password_hash(password, deterministic_salt(seed, username), iterations)

    principals = sorted(ctx.policy.principals, key=lambda p: p.username)
    hashes = dict(zip((p.username for p in principals),
                      ctx.hashes.hash_all(seed, [(p.username, p.password, password_iterations(cfg, p))
                                                 for p in principals], compute), strict=True))

    def passwd(who: Callable[[Principal], bool]) -> bytes:
        return "".join(f"{p.username}:{hashes[p.username]}\n" for p in filter(who, principals)).encode()

    def is_service(p: Principal) -> bool:
        return p.kind == "service"

    acl = render_template("mosquitto/acl.j2", stack=cfg.stack,
                          blocks=mosquitto_acl_lines(ctx.policy, on_device_listeners))
    services_acl = render_template("mosquitto/acl.j2", stack=cfg.stack,
                                   blocks=mosquitto_acl_lines(ctx.policy, is_service, anonymous=False))
    data_dir = ctx.paths.volume(BROKER, "data", "/mosquitto/data")
    passwd_path, passwd_container = _placed(ctx, "passwd", MOSQUITTO_ETC)
    acl_path, acl_container = _placed(ctx, "acl", MOSQUITTO_ETC)
    services_passwd_path, services_passwd_container = _placed(ctx, "services.passwd", MOSQUITTO_ETC)
    services_acl_path, services_acl_container = _placed(ctx, "services.acl", MOSQUITTO_ETC)
    conf = render_template(
        "mosquitto/mosquitto.conf.j2",
        stack=cfg.stack, broker=cfg.broker, tls=cfg.tls, ctx=ctx, anonymous=ctx.policy.anonymous,
        ports={p.name: p for p in broker_ports(ctx)}, listen_host=ctx.listen_host(),
        internal_host=ctx.internal_host(), password_file=passwd_path, acl_file=acl_path,
        services_password_file=services_passwd_path, services_acl_file=services_acl_path,
        data_dir=data_dir, cafile=ctx.paths.cert("ca.pem"), certfile=ctx.paths.cert("server.pem"),
        keyfile=ctx.paths.cert("server.key"),
    )
    files = (
        RenderedFile("mosquitto.conf", conf, f"{MOSQUITTO_ETC}/mosquitto.conf"),
        RenderedFile("passwd", passwd(on_device_listeners), passwd_container, secret=True),
        RenderedFile("acl", acl, acl_container),
        RenderedFile("services.passwd", passwd(is_service), services_passwd_container, secret=True),
        RenderedFile("services.acl", services_acl, services_acl_container),
    )
    return ServiceSpec(
        name=BROKER, role="broker", description=f"Mosquitto MQTT broker ({cfg.images.mosquitto})",
        files=files, ports=broker_ports(ctx), probe=_probe(ctx),
        volumes=(Volume("data", "/mosquitto/data"),),
        local=LocalCommand("mosquitto", ("-c", ctx.paths.file(BROKER, "mosquitto.conf")),
                           install_hint="apt-get install mosquitto",
                           owner=ctx.caps.run_as if ctx.caps.drops_privileges else None,
                           readable=(ctx.paths.cert("server.key"),) if ctx.tls and ctx.caps.drops_privileges else ()),
        container=ContainerSpec(cfg.images.mosquitto,
                                command=("mosquitto", "-c", f"{MOSQUITTO_ETC}/mosquitto.conf"),
                                file_owner=(1883, 1883), aliases=("mosquitto",)),
        reload_signal="SIGHUP", reloadable=("passwd", "acl", "services.passwd", "services.acl"),
    )


def _emqx_superuser(principal: Principal) -> str:
    return "true" if principal.superuser else "false"


def emqx_acl_rules(policy: AccessPolicy) -> list[str]:
    """acl.conf rules in evaluation order (first match wins), ending in deny-all."""
    def rule(who: str, grant: Grant) -> str:
        topic = grant.topic.replace(USERNAME, "${username}")
        return f'{{allow, {who}, {grant.access}, ["{topic}"]}}.'

    # First match wins: the denials come before every grant (superusers skip the file).
    rules = [f'{{deny, all, {g.access}, ["{g.topic.replace(USERNAME, "${username}")}"]}}.'
             for g in policy.device_denied]
    for principal in sorted(policy.with_grants, key=lambda p: p.username):
        who = f'{{username, "{principal.username}"}}'
        rules += [rule(who, g) for g in principal.grants]
    # Device rights follow the username, like Mosquitto's `pattern` lines.
    rules += [rule("all", g) for g in policy.device_grants]
    if policy.anonymous and policy.open:
        # The sandbox is for clients without a username: whoever has one stops here. EMQX
        # checks a subscription when it is made, so an anonymous `#` also receives the
        # service topics denied below (Mosquitto filters each message).
        rules.append('{deny, {username, {re, "."}}, all, ["#", "$SYS/#"]}.')
        rules.append("{deny, all, all, [" + ", ".join(f'"{t}"' for t in SERVICE_TOPICS) + "]}.")
        rules.append('{allow, all, subscribe, ["$SYS/#"]}.')
        rules.append('{allow, all, all, ["#"]}.')
    rules.append("{deny, all}.")
    return rules


def emqx(ctx: PlanContext) -> ServiceSpec:
    cfg = ctx.config
    users_csv = "user_id,password,is_superuser\n" + "".join(
        f"{p.username},{p.password},{_emqx_superuser(p)}\n"
        for p in sorted(ctx.policy.principals, key=lambda p: p.username)
    )
    acl = render_template("emqx/acl.conf.j2", stack=cfg.stack, rules=emqx_acl_rules(ctx.policy))
    api_keys = f"ecokit:{ctx.secret(EMQX_API_SECRET)}\n"
    users_path, users_container = _placed(ctx, "users.csv", EMQX_ETC)
    acl_path, acl_container = _placed(ctx, "acl.conf", EMQX_ETC)
    keys_path, keys_container = _placed(ctx, "api_keys.txt", EMQX_ETC)
    conf = render_template(
        "emqx/emqx.conf.j2",
        stack=cfg.stack, broker=cfg.broker, tls=cfg.tls, ctx=ctx, anonymous=ctx.policy.anonymous,
        ports={p.name: p for p in broker_ports(ctx)}, listen_host=ctx.listen_host(), internal_host=ctx.internal_host(),
        cookie=ctx.secret(EMQX_COOKIE), dashboard_password=ctx.secret(EMQX_DASHBOARD),
        users_file=users_path, acl_file=acl_path, api_keys_file=keys_path,
        cafile=ctx.paths.cert("ca.pem"), certfile=ctx.paths.cert("server.pem"),
        keyfile=ctx.paths.cert("server.key"), pipeline=emqx_rules_pipeline(ctx), tls13_ciphers=TLS13_CIPHERS,
    )
    files = (
        RenderedFile("emqx.conf", conf, "/opt/emqx/etc/emqx.conf", secret=True),
        RenderedFile("users.csv", users_csv.encode(), users_container, secret=True),
        RenderedFile("acl.conf", acl, acl_container),
        RenderedFile("api_keys.txt", api_keys.encode(), keys_container, secret=True),
    )
    return ServiceSpec(
        name=BROKER, role="broker", description=f"EMQX MQTT broker ({cfg.images.emqx})",
        files=files, ports=broker_ports(ctx), probe=_probe(ctx),
        volumes=(Volume("data", "/opt/emqx/data"), Volume("log", "/opt/emqx/log")),
        local=LocalCommand("emqx", ("foreground",), install_hint="EMQX runs in docker: use --runtime docker"),
        container=ContainerSpec(
            cfg.images.emqx,
            # A fixed node name keeps the mnesia data (users, API keys) across restarts.
            env={"EMQX_NODE__NAME": "emqx@127.0.0.1"},
            file_owner=(1000, 1000), aliases=("emqx",),
        ),
    )


def broker(ctx: PlanContext) -> ServiceSpec:
    return emqx(ctx) if ctx.config.broker.kind == "emqx" else mosquitto(ctx)
