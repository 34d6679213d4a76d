"""The rules rendered for EMQX 5.8 (open source): rule SQL, HTTP actions, dead letters.

The open-source 5.8 build has no InfluxDB action, so every rule writes line protocol
through an HTTP action to InfluxDB's v1 ``/write`` API (one request per message; EMQX
queues and retries them). Each ecokit rule becomes:

- ``ecokit_<rule>``: stores the point (required fields) when every check passes;
- ``ecokit_<rule>__<field>``: one per optional field, storing just that field with the
  same measurement, tags and time when it is present; InfluxDB merges points with the
  same identity, so the stored point equals the bridge's single line;
- ``ecokit_<rule>_deadletter``: republishes a failing message to
  ``ecokit/deadletter/<rule>`` with the reason and field of the first failed check.

The expressions (their SQL and their EMQX semantics) are ``ecokit.rules.emqx_sql``; the
shared test vectors run through them (``simulate``).

- The archive's receive time in ns comes from the message id (emqx_guid: 64-bit µs
  timestamp, 48-bit node+pid, 16-bit per-process sequence): µs * 1000 + sequence mod 1000,
  unique per publisher even for a burst on one topic (UNVERIFIED on a live EMQX).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ecokit.acl import topic_matches
from ecokit.config.rules import (
    DEADLETTER_PREFIX,
    FLOAT_LIMIT,
    INT64,
    MAX_BASE64_SOURCE_BYTES,
    MAX_SERIES_KEY_BYTES,
    MAX_STRING_BYTES,
    TIME_RECEIVED_FIELD,
    RuleConfig,
    retention_policy,
)
from ecokit.rules.emqx_sql import (
    Arith,
    Call,
    Case,
    Cmp,
    Col,
    Cond,
    Const,
    EmqxModelError,
    Env,
    Expr,
    Fn,
    Not,
    RuleException,
    all_of,
    any_of,
    fn,
    render_template,
)
from ecokit.rules.engine import BAD_VALUE, MISSING, OUT_OF_RANGE, WRONG_TYPE
from ecokit.rules.sqlfuncs import check_rule_sql

TAG_RE = r"^[^\x00-\x1f]*[^\x00-\x1f\\]\z"
STRING_RE = r"^[^\x00-\x1f]*\z"
CONNECTOR = "ecokit_influxdb"


# -- rendering a rule ---------------------------------------------------------------------


@dataclass(frozen=True)
class Select:
    alias: str
    expr: Expr


@dataclass(frozen=True)
class HttpAction:
    name: str
    path: str  # /write?db=...&precision=...
    body: str

    @property
    def ref(self) -> str:
        return f"http:{self.name}"


@dataclass(frozen=True)
class Republish:
    topic: str
    payload: str
    qos: int = 1


@dataclass(frozen=True)
class EmqxRule:
    id: str
    description: str
    select: tuple[Select, ...]
    topic: str
    where: Cond | None
    http: HttpAction | None = None
    republish: Republish | None = None

    def sql(self) -> str:
        fields = ", ".join(f"{s.expr.sql()} AS {s.alias}" for s in self.select)
        sql = f'SELECT {fields} FROM "{self.topic}"'
        if self.where is not None:
            sql += f" WHERE {self.where.sql()}"
        return sql

    def run(self, env: Env) -> list[tuple[str, str, str]]:
        """What EMQX does with one message: [("http", precision, body) | ("republish", topic, payload)]."""
        if not topic_matches(self.topic, env.topic):  # FROM "filter"
            return []
        env.selected.clear()
        for item in self.select:
            env.selected[item.alias] = item.expr.eval(env)
        selected = dict(env.selected)
        if self.where is not None and not self.where.holds(env):
            return []
        out = []
        if self.http is not None:
            out.append(("http", self.http.path, render_template(self.http.body, selected)))
        if self.republish is not None:
            out.append(("republish", self.republish.topic, render_template(self.republish.payload, selected)))
        return out


@dataclass
class _Check:
    reason: str
    name: str
    fails: Cond  # evaluated only when every earlier check passed


def _lit(data: bytes) -> Fn:
    """A string made with base64_decode: SQL literals cannot start/end with quotes."""
    return fn("base64_decode", base64.b64encode(data).decode())


def _escape_tag_sql(value: Expr) -> Expr:
    out = value
    for char in (",", "=", " "):
        out = fn("replace", out, char, "\\" + char)
    return out


def _escape_string_sql(value: Expr) -> Expr:
    return fn("replace", fn("replace", value, _lit(b"\\"), _lit(b"\\\\")), _lit(b'"'), _lit(b'\\"'))


def _when_str(value: Expr, then: Expr) -> Expr:
    """``then`` only for a string: SELECT runs before WHERE, and replace() of a missing value raises."""
    return Case(((Call(fn("is_str", value)), then),), Const(""))


def _line_value(kind: str, alias: str) -> str:
    if kind == "int":
        return f"${{{alias}}}i"
    if kind == "string":
        return f'"${{{alias}}}"'
    return f"${{{alias}}}"


class RenderedRule:
    """One ecokit rule as EMQX rules, HTTP actions and a dead-letter republish."""

    def __init__(self, name: str, rule: RuleConfig, *, database: str) -> None:
        self.name = name
        self.rule = rule
        self.database = database
        self.checks: list[_Check] = []
        self.tag_exprs: dict[str, Expr] = {}
        self.field_exprs: dict[str, Expr] = {}
        self.guard = self._guard()
        self._build_checks()
        self.rules = self._emqx_rules()

    # checks, in the bridge's order (ecokit.rules.engine)
    def _value(self, path: str) -> Fn:
        return fn("map_get", path, Col("payload"))

    def _guard(self) -> Cond | None:
        conds: list[Cond] = []
        rule = self.rule
        if rule.payload == "json" and _may_match_deadletters(rule.topic):
            conds.append(Not(Cmp("=~", Col("topic"), Const(DEADLETTER_PREFIX + "/#"))))
        # `exclude`: `topic =~ 'filter'` is emqx_topic:match(topic, filter) (emqx_rule_runtime
        # do_compare), so the rule neither stores nor dead-letters those messages.
        conds.extend(Not(Cmp("=~", Col("topic"), Const(excluded))) for excluded in rule.exclude)
        for cond in rule.where:
            value = self._value(cond.path)
            if cond.op == "exists":
                conds.append(Call(fn("is_not_null", value)))
            elif isinstance(cond.value, bool):
                conds += [Call(fn("is_bool", value)),
                          Cmp("=" if cond.op == "eq" else "<>", fn("str", value), Const(str(cond.value).lower()))]
            elif isinstance(cond.value, str):
                conds += [Call(fn("is_str", value)), Cmp("=" if cond.op == "eq" else "<>", value, Const(cond.value))]
            else:
                assert cond.value is not None
                op = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}[cond.op]
                conds += [Call(fn("is_num", value)), Cmp(op, value, Const(cond.value))]
        return all_of(*conds) if conds else None

    def _add(self, reason: str, name: str, fails: Cond) -> None:
        self.checks.append(_Check(reason, name, fails))

    def _build_checks(self) -> None:
        rule = self.rule
        topic_tags = [k for k in sorted(rule.tags) if rule.tags[k].from_ == "topic"]
        payload_tags = [k for k in sorted(rule.tags) if rule.tags[k].from_ == "payload"]
        raw_tags: dict[str, Expr] = {}
        for key in topic_tags:
            tag = rule.tags[key]
            raw: Expr = Col("topic") if tag.segment is None else fn(
                "nth", tag.segment, fn("split", Col("topic"), "/", "notrim"))
            self._add(BAD_VALUE, key, Not(Call(fn("regex_match", raw, TAG_RE))))
            self.tag_exprs[key] = _escape_tag_sql(raw)
            raw_tags[key] = raw
        for key in payload_tags:
            path = rule.tags[key].path
            assert path is not None
            value = self._value(path)
            self._add(MISSING, key, Call(fn("is_null", value)))
            self._add(WRONG_TYPE, key, Not(Call(fn("is_str", value))))
            self._add(BAD_VALUE, key, Not(Call(fn("regex_match", value, TAG_RE))))
            self.tag_exprs[key] = _when_str(value, _escape_tag_sql(value))
            raw_tags[key] = value
        if rule.tags:
            # The escaped tag values must fit InfluxDB's series key with the measurement.
            budget = MAX_SERIES_KEY_BYTES - len(rule.measurement) - sum(len(f",{k}=") for k in rule.tags)
            sizes: list[Expr] = [fn("bytesize", _escape_tag_sql(raw_tags[key])) for key in sorted(rule.tags)]
            total = sizes[0]
            for size in sizes[1:]:
                total = Arith("+", total, size)
            self._add(BAD_VALUE, "tags", Cmp(">", total, Const(budget)))
        for name, spec in rule.fields.items():
            if spec.from_ == "payload_base64":
                self._add(BAD_VALUE, name, Cmp(">", fn("bytesize", Col("payload")), Const(MAX_BASE64_SOURCE_BYTES)))
                self.field_exprs[name] = fn("base64_encode", Col("payload"))
                continue
            if spec.from_ == "qos":
                self.field_exprs[name] = Col("qos")
                continue
            if spec.from_ == "retain":
                self.field_exprs[name] = Col("flags.retain")
                continue
            value = self._value(rule.field_path(name))
            present = Call(fn("is_not_null", value))
            if spec.required:
                self._add(MISSING, name, Call(fn("is_null", value)))

            def when_present(cond: Cond, required: bool = spec.required, present: Cond = present) -> Cond:
                return cond if required else all_of(present, cond)

            type_fn = {"float": "is_num", "int": "is_int", "bool": "is_bool", "string": "is_str"}[spec.type]
            self._add(WRONG_TYPE, name, when_present(Not(Call(fn(type_fn, value)))))
            if spec.type in ("float", "int"):
                lo, hi = spec.min, spec.max
                if spec.type == "int":
                    lo = max(lo, -INT64 - 1) if lo is not None else -INT64 - 1
                    hi = min(hi, INT64) if hi is not None else INT64
                # Floats without bounds still stop where InfluxDB's float parser does.
                low: Const = Const(_num(lo, spec.type)) if lo is not None else Const(-FLOAT_LIMIT)
                high: Const = Const(_num(hi, spec.type)) if hi is not None else Const(FLOAT_LIMIT)
                outside = [Cmp("<", value, low), Cmp(">", value, high)]
                self._add(OUT_OF_RANGE, name, when_present(any_of(*outside)))
                self.field_exprs[name] = value
            elif spec.type == "string":
                self._add(BAD_VALUE, name, when_present(Not(Call(fn("regex_match", value, STRING_RE)))))
                self._add(BAD_VALUE, name, when_present(Cmp(">", fn("bytesize", value), Const(MAX_STRING_BYTES))))
                if spec.values is not None:
                    self._add(BAD_VALUE, name, when_present(all_of(*[Cmp("<>", value, Const(v))
                                                                     for v in spec.values])))
                self.field_exprs[name] = _when_str(value, _escape_string_sql(value))
            else:
                self.field_exprs[name] = value
        guid = fn("hexstr2bin", Col("id"))
        received_ns = Arith("+", Arith("*", fn("subbits", guid, 1, 64), Const(1000)),
                            fn("mod", fn("subbits", guid, 113, 16), 1000))
        self.time_missing: Cond | None = None
        if rule.time.from_ == "payload":
            value = self._value(rule.time.path)
            lo, hi = rule.time.bounds()
            if rule.time.if_missing == "received":
                # No timestamp: the receive time (in ns, so the whole rule writes ns).
                self.time_missing = Call(fn("is_null", value))
                present = Call(fn("is_not_null", value))
                self._add(WRONG_TYPE, rule.time.path, all_of(present, Not(Call(fn("is_int", value)))))
                self._add(OUT_OF_RANGE, rule.time.path,
                          all_of(present, any_of(Cmp("<", value, Const(lo)), Cmp(">", value, Const(hi)))))
                scale = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[rule.time.unit]
                # SELECT runs before WHERE: multiply only an integer (else badarith fails the rule).
                self.time_expr: Expr = Case(((self.time_missing, received_ns),
                                             (Call(fn("is_int", value)), Arith("*", value, Const(scale)))), Const(0))
                self.precision = "ns"
            else:
                self._add(MISSING, rule.time.path, Call(fn("is_null", value)))
                self._add(WRONG_TYPE, rule.time.path, Not(Call(fn("is_int", value))))
                self._add(OUT_OF_RANGE, rule.time.path,
                          any_of(Cmp("<", value, Const(lo)), Cmp(">", value, Const(hi))))
                self.time_expr = value
                self.precision = {"s": "s", "ms": "ms", "us": "u", "ns": "ns"}[rule.time.unit]
        else:
            self.time_expr = received_ns
            self.precision = "ns"

    def valid(self) -> Cond | None:
        """Every check passes (checks evaluated in order, so a later one may assume earlier ones)."""
        passes = [c.fails.negate() for c in self.checks]
        return all_of(*passes) if passes else None

    def _where(self, *extra: Cond | None) -> Cond | None:
        conds = [c for c in (self.guard, *extra) if c is not None]
        return all_of(*conds) if conds else None

    def _head(self) -> str:
        tags = "".join(f",{k}=${{t_{k}}}" for k in sorted(self.rule.tags))
        return f"{self.rule.measurement}{tags}"

    def _common_select(self) -> list[Select]:
        return [Select(f"t_{k}", self.tag_exprs[k]) for k in sorted(self.rule.tags)]

    def _emqx_rules(self) -> list[EmqxRule]:
        rule, base = self.rule, f"ecokit_{self.name}"
        path = f"/write?db={quote(self.database)}&precision={self.precision}"
        policy = retention_policy(self.name, rule.retention)
        if policy is not None:  # the rule keeps its points for its own time
            path += f"&rp={quote(policy)}"
        required = [n for n, s in rule.fields.items() if s.required]
        optional = [n for n, s in rule.fields.items() if not s.required]
        fields = ",".join(f"{n}={_line_value(rule.fields[n].type, 'f_' + n)}" for n in required)
        out = [EmqxRule(
            base, f"ecokit rule {self.name}: {rule.description}".strip(": "),
            (*self._common_select(), *[Select(f"f_{n}", self.field_exprs[n]) for n in required],
             Select("ts", self.time_expr)),
            rule.topic, self._where(self.valid()),
            http=HttpAction(base, path, f"{self._head()} {fields} ${{ts}}"),
        )]
        for n in optional:
            value = self.field_exprs[n]
            present = Call(fn("is_not_null", self._value(rule.field_path(n))))
            out.append(EmqxRule(
                f"{base}__{n}", f"ecokit rule {self.name}: optional field {n}",
                (*self._common_select(), Select(f"f_{n}", value), Select("ts", self.time_expr)),
                rule.topic, self._where(self.valid(), present),
                http=HttpAction(f"{base}__{n}", path,
                                f"{self._head()} {n}={_line_value(rule.fields[n].type, 'f_' + n)} ${{ts}}"),
            ))
        if self.time_missing is not None:
            # The point says its time is the receive time (the bridge's time_received=true).
            out.append(EmqxRule(
                f"{base}__{TIME_RECEIVED_FIELD}", f"ecokit rule {self.name}: timed by its receive time",
                (*self._common_select(), Select("ts", self.time_expr)),
                rule.topic, self._where(self.valid(), self.time_missing),
                http=HttpAction(f"{base}__{TIME_RECEIVED_FIELD}", path,
                                f"{self._head()} {TIME_RECEIVED_FIELD}=true ${{ts}}"),
            ))
        if self.checks:
            reason = Case(tuple((c.fails, Const(c.reason)) for c in self.checks), Const("invalid"))
            fld = Case(tuple((c.fails, Const(c.name)) for c in self.checks), Const("none"))
            invalid = self.valid()
            assert invalid is not None
            payload = ('{"rule":"' + self.name + '","reason":"${reason}","field":"${field}","topic":${dl_topic},'
                       '"qos":${dl_qos},"retain":${dl_retain},"payload":"${dl_payload}"}')
            # A raw rule (the archive) also sees dead letters; one it refuses is not
            # republished again (a dead letter of a dead letter would never end).
            loop_guard = (Not(Cmp("=~", Col("topic"), Const(DEADLETTER_PREFIX + "/#")))
                          if rule.payload == "raw" and _may_match_deadletters(rule.topic) else None)
            out.append(EmqxRule(
                f"{base}_deadletter", f"ecokit rule {self.name}: dead letters",
                (Select("reason", reason), Select("field", fld),
                 Select("dl_topic", fn("json_encode", Col("topic"))), Select("dl_qos", Col("qos")),
                 Select("dl_retain", Col("flags.retain")), Select("dl_payload", fn("base64_encode", Col("payload")))),
                rule.topic, self._where(loop_guard, invalid.negate()),
                republish=Republish(f"{DEADLETTER_PREFIX}/{self.name}", payload),
            ))
        return out


def _num(value: float, kind: str) -> int | float:
    return int(value) if kind == "int" or value == int(value) else value


def _may_match_deadletters(topic_filter: str) -> bool:
    first = topic_filter.split("/")[0]
    return first in ("#", "+", DEADLETTER_PREFIX.split("/")[0])


def render_rules(rules: Mapping[str, RuleConfig], *, database: str) -> list[EmqxRule]:
    out: list[EmqxRule] = []
    for name, rule in rules.items():
        if rule.enabled:
            rendered = RenderedRule(name, rule, database=database).rules
            for emqx_rule in rendered:  # every SQL function must exist in EMQX 5.8
                check_rule_sql(name, emqx_rule.id, emqx_rule.sql())
            out.extend(rendered)
    return out


def message_id(received_ns: int, npid: int = 0x0A0B0C0D0E0F) -> str:
    """An emqx_guid hex id whose time/sequence give ``received_ns`` back (for the model)."""
    guid = ((received_ns // 1000) << 64) | (npid << 16) | (received_ns % 1000)
    return f"{guid:032X}"


def simulate(rules: Sequence[EmqxRule], topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
             received_ns: int = 0) -> list[tuple[str, str, str]]:
    """One message through the rendered rules as EMQX would run it.

    Gives ("http", path, body), ("republish", topic, payload) or, for a failed rule, ("exception", id, why).
    """
    env = Env(topic, payload, qos, retain, message_id(received_ns))
    out: list[tuple[str, str, str]] = []
    for rule in rules:
        env.decoded.clear()  # EMQX clears the payload cache per rule (clear_rule_payload)
        try:
            out.extend(rule.run(env))
        except RuleException as exc:
            out.append(("exception", rule.id, str(exc)))
    return out


def hocon_block(text: str) -> str:
    """A HOCON triple-quoted string (no escapes, so backslashes and quotes stay as they are)."""
    if '"""' in text or text.endswith('"'):
        raise EmqxModelError(f"cannot put {text[:60]!r} in a HOCON triple-quoted string")
    return f'"""{text}"""'


@dataclass(frozen=True)
class EmqxPipeline:
    """What emqx.conf.j2 renders: one HTTP connector to InfluxDB, actions and rules."""

    connector: str
    url: str
    authorization: str
    rules: tuple[EmqxRule, ...]

    @property
    def actions(self) -> list[HttpAction]:
        return [r.http for r in self.rules if r.http is not None]

    def hocon_rules(self) -> list[dict[str, Any]]:
        """Rules with their SQL and templates already quoted for HOCON."""
        out = []
        for rule in self.rules:
            item: dict[str, Any] = {"id": rule.id, "description": rule.description, "sql": hocon_block(rule.sql())}
            if rule.http is not None:
                item["action"] = rule.http.ref
            if rule.republish is not None:
                item["republish"] = {"topic": rule.republish.topic, "qos": rule.republish.qos,
                                     "payload": hocon_block(rule.republish.payload)}
            out.append(item)
        return out

    def hocon_actions(self) -> list[dict[str, str]]:
        return [{"name": a.name, "path": a.path, "body": hocon_block(a.body)} for a in self.actions]


def emqx_pipeline(rules: Mapping[str, RuleConfig], *, url: str, database: str, authorization: str) -> EmqxPipeline:
    return EmqxPipeline(CONNECTOR, url, authorization, tuple(render_rules(rules, database=database)))
