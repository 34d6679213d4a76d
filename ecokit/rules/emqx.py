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

Expressions are a small tree that renders to SQL and evaluates with EMQX's semantics,
so the shared test vectors run through it (``simulate``). What the evaluator models, and
where it was read (emqx/emqx, apps/emqx_rule_engine and apps/emqx_utils):

- ``payload.x`` raises ``decode_json_failed`` on a non-JSON payload (emqx_rule_runtime
  ``may_decode_payload``), so ecokit never uses it; ``map_get('x', payload)`` decodes
  inside a try and gives ``undefined`` instead (emqx_rule_maps ``general_find``). EMQX
  therefore cannot tell "not JSON" from "field missing": such messages are dead-lettered
  with ``missing_field`` where the bridge says ``not_json``.
- WHERE/CASE conditions: ``AND``/``OR`` short-circuit; ``NOT`` only applies to a call or a
  comparison (``match_conditions``), so negations are pushed down (De Morgan); a
  comparison with ``undefined`` is false.
- SQL string literals are not unescaped, but leading/trailing ``'`` and ``"`` are trimmed
  (rulesql ``unquote``): a literal never starts or ends with a double quote, and the
  quote and backslash characters are made with ``base64_decode``.
- Templates render floats as ``float_to_binary(F, [{decimals, 10}, compact])``, integers as
  digits, atoms by name and missing values as ``undefined`` (emqx_template ``to_string``,
  emqx_bridge_http_connector ``render_template``).
- The archive's receive time in ns comes from the message id (emqx_guid: 64-bit µs
  timestamp, 48-bit node+pid, 16-bit per-process sequence): µs * 1000 + sequence mod 1000,
  unique per publisher even for a burst on one topic (UNVERIFIED on a live EMQX).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ecokit.acl import topic_matches
from ecokit.config.rules import DEADLETTER_PREFIX, INT64, RuleConfig
from ecokit.rules.engine import BAD_VALUE, MISSING, OUT_OF_RANGE, WRONG_TYPE, decode_json
from ecokit.rules.lineproto import format_float
from ecokit.rules.sqlfuncs import check_rule_sql

TAG_RE = r"^[^\x00-\x1f]*[^\x00-\x1f\\]\z"
STRING_RE = r"^[^\x00-\x1f]*\z"
CONNECTOR = "ecokit_influxdb"


class EmqxModelError(Exception):
    """The evaluator met something it does not model (EMQX would behave unknown here)."""


class RuleException(Exception):
    """What EMQX reports as a failed rule (`failed.exception`): no action runs."""


class _Atom(str):
    """An Erlang atom (``undefined``, ``null``): renders by name, is not a binary."""


UNDEFINED = _Atom("undefined")
NULL = _Atom("null")

# -- expressions -------------------------------------------------------------------------


class Expr:
    def sql(self) -> str:
        raise NotImplementedError

    def eval(self, env: Env) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Env:
    """The columns of a message.publish event, plus a cache of the decoded payload."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    id: str
    decoded: dict[str, Any] = field(default_factory=dict)
    # SELECT aliases: later SELECT items and the WHERE clause see them over the columns
    # (emqx_rule_runtime: select_and_transform, then match_conditions on the merge).
    selected: dict[str, Any] = field(default_factory=dict)


def _sql_str(text: str) -> str:
    if "'" in text or text[:1] == '"' or text[-1:] == '"':
        raise EmqxModelError(f"{text!r} cannot be an EMQX SQL string literal")
    return f"'{text}'"


def _sql_num(value: float | int) -> str:
    if isinstance(value, bool):
        raise EmqxModelError("booleans are not SQL numbers")
    if isinstance(value, int) or (value == int(value) and abs(value) < 2**53):
        return str(int(value))
    text = repr(float(value))
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exp = text.split("e")
        text = f"{mantissa}.0e{exp}"  # Erlang's list_to_float needs a decimal point
    return text


@dataclass(frozen=True)
class Const(Expr):
    value: str | int | float

    def sql(self) -> str:
        return _sql_str(self.value) if isinstance(self.value, str) else _sql_num(self.value)

    def eval(self, env: Env) -> Any:
        return self.value


@dataclass(frozen=True)
class Col(Expr):
    """A column of the event: topic, qos, payload, id, or flags.retain."""

    name: str

    def sql(self) -> str:
        return self.name

    def eval(self, env: Env) -> Any:
        if self.name in env.selected:
            return env.selected[self.name]
        if self.name == "topic":
            return env.topic
        if self.name == "qos":
            return env.qos
        if self.name == "payload":
            return env.payload
        if self.name == "id":
            return env.id
        if self.name == "flags.retain":
            return env.retain
        raise EmqxModelError(f"column {self.name} is not modelled")


@dataclass(frozen=True)
class Fn(Expr):
    name: str
    args: tuple[Expr, ...]

    def sql(self) -> str:
        return f"{self.name}({', '.join(a.sql() for a in self.args)})"

    def eval(self, env: Env) -> Any:
        impl = _FUNCTIONS.get(self.name)
        if impl is None:
            raise EmqxModelError(f"function {self.name} is not modelled")
        if self.name == "map_get":
            return _map_get(self.args[0].eval(env), self.args[1].eval(env), env)
        return impl(*[a.eval(env) for a in self.args])


def fn(name: str, *args: Expr | str | int | float) -> Fn:
    return Fn(name, tuple(a if isinstance(a, Expr) else Const(a) for a in args))


@dataclass(frozen=True)
class Arith(Expr):
    op: str
    left: Expr
    right: Expr

    def sql(self) -> str:
        return f"{self.left.sql()} {self.op} {self.right.sql()}"

    def eval(self, env: Env) -> Any:
        a, b = self.left.eval(env), self.right.eval(env)
        if not (_is_number(a) and _is_number(b)):
            raise RuleException(f"badarith: {a!r} {self.op} {b!r}")
        return a * b if self.op == "*" else a + b


class Cond:
    """A search condition (WHERE / CASE WHEN): evaluated by ``match_conditions``."""

    def sql(self) -> str:
        raise NotImplementedError

    def holds(self, env: Env) -> bool:
        raise NotImplementedError

    def negate(self) -> Cond:
        raise NotImplementedError


@dataclass(frozen=True)
class Call(Cond):
    """A boolean function call used as a condition."""

    expr: Fn

    def sql(self) -> str:
        return self.expr.sql()

    def holds(self, env: Env) -> bool:
        value = self.expr.eval(env)
        if not isinstance(value, bool):
            raise RuleException(f"{self.expr.sql()} is not a boolean")
        return value

    def negate(self) -> Cond:
        return Not(self)


@dataclass(frozen=True)
class Cmp(Cond):
    op: str  # = <> < <= > >= =~
    left: Expr
    right: Expr

    def sql(self) -> str:
        return f"{self.left.sql()} {self.op} {self.right.sql()}"

    def holds(self, env: Env) -> bool:
        return _compare(self.op, self.left.eval(env), self.right.eval(env))

    def negate(self) -> Cond:
        return Not(self)


@dataclass(frozen=True)
class Not(Cond):
    inner: Call | Cmp

    def sql(self) -> str:
        return f"NOT {self.inner.sql()}"

    def holds(self, env: Env) -> bool:
        # match_conditions({'not', Var}): eval(Var) must give a boolean, else false.
        return not self.inner.holds(env)

    def negate(self) -> Cond:
        return self.inner


@dataclass(frozen=True)
class And(Cond):
    parts: tuple[Cond, ...]

    def sql(self) -> str:
        return " AND ".join(_group(p) for p in self.parts)

    def holds(self, env: Env) -> bool:
        return all(p.holds(env) for p in self.parts)

    def negate(self) -> Cond:
        return any_of(*[p.negate() for p in self.parts])


@dataclass(frozen=True)
class Or(Cond):
    parts: tuple[Cond, ...]

    def sql(self) -> str:
        return " OR ".join(_group(p) for p in self.parts)

    def holds(self, env: Env) -> bool:
        return any(p.holds(env) for p in self.parts)

    def negate(self) -> Cond:
        return all_of(*[p.negate() for p in self.parts])


def _group(cond: Cond) -> str:
    return f"({cond.sql()})" if isinstance(cond, And | Or) else cond.sql()


def all_of(*conds: Cond) -> Cond:
    flat: list[Cond] = []
    for c in conds:
        flat.extend(c.parts if isinstance(c, And) else (c,))
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def any_of(*conds: Cond) -> Cond:
    flat: list[Cond] = []
    for c in conds:
        flat.extend(c.parts if isinstance(c, Or) else (c,))
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


@dataclass(frozen=True)
class Case(Expr):
    whens: tuple[tuple[Cond, Expr], ...]
    otherwise: Expr

    def sql(self) -> str:
        body = " ".join(f"WHEN {c.sql()} THEN {e.sql()}" for c, e in self.whens)
        return f"CASE {body} ELSE {self.otherwise.sql()} END"

    def eval(self, env: Env) -> Any:
        for cond, expr in self.whens:
            if cond.holds(env):
                return expr.eval(env)
        return self.otherwise.eval(env)


# -- EMQX value semantics -----------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _compare(op: str, left: Any, right: Any) -> bool:
    """emqx_rule_runtime:compare/3 for the operand types ecokit's SQL produces."""
    if op == "=~":
        return topic_matches(right, left)
    if left is UNDEFINED or right is UNDEFINED:
        return left is right and op in ("=", "<=", ">=")
    if _is_number(left) and _is_number(right):
        pass
    elif type(left) is str and type(right) is str:
        if op not in ("=", "<>"):
            raise EmqxModelError("ordering binaries is not modelled")
    elif type(left) is bool and type(right) is bool:
        if op not in ("=", "<>"):
            raise EmqxModelError("ordering booleans is not modelled")
    else:
        raise EmqxModelError(f"comparing {left!r} with {right!r} is not modelled")
    outcome: bool = {"=": left == right, "<>": left != right, "<": left < right, "<=": left <= right,
                     ">": left > right, ">=": left >= right}[op]
    return outcome


def _json_value(value: Any) -> Any:
    if value is None:
        return NULL
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _map_get(key: Any, data: Any, env: Env) -> Any:
    """map_get(Key, Map): a dotted path; a binary is JSON-decoded inside a try."""
    if type(key) is not str:
        raise RuleException("map_get needs a string key")
    value = data
    for part in key.split("."):
        if isinstance(value, bytes):
            if value is env.payload and "doc" in env.decoded:
                value = env.decoded["doc"]
            else:
                try:
                    decoded = _json_value(decode_json(value))
                except (ValueError, UnicodeDecodeError, RecursionError):
                    return UNDEFINED
                if value is env.payload:
                    env.decoded["doc"] = decoded
                value = decoded
        if not isinstance(value, dict) or part not in value:
            return UNDEFINED
        value = value[part]
    return value


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.replace(r"\z", r"\Z"))


def _regex_match(value: Any, pattern: Any) -> bool:
    if type(value) is not str:
        raise RuleException(f"regex_match: badarg {value!r}")
    return _regex(pattern).search(value) is not None


def _replace(value: Any, pattern: Any, replacement: Any) -> str:
    if type(value) is not str:
        raise RuleException(f"replace: badarg {value!r}")
    return str(value).replace(pattern, replacement)


def _split(value: Any, sep: Any, mode: Any) -> list[str]:
    assert mode == "notrim"
    return str(value).split(sep)


def _nth(index: Any, items: Any) -> Any:
    if not isinstance(items, list) or not 1 <= index <= len(items):
        raise RuleException("nth: out of range")
    return items[index - 1]


def _subbits(data: Any, start: Any, length: Any) -> int:
    bits = int.from_bytes(data, "big")
    total = len(data) * 8
    value: int = (bits >> (total - (start - 1) - length)) & ((1 << length) - 1)
    return value


def _mod(a: Any, b: Any) -> int:
    if type(a) is not int or type(b) is not int:
        raise RuleException("mod: badarith")
    return int(a - b * int(a / b))  # Erlang rem


def _str(value: Any) -> str:
    if type(value) is bool:
        return "true" if value else "false"
    return to_string(value)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "map_get": lambda *a: None,  # handled in Fn.eval (needs the env's decode cache)
    "is_null": lambda v: v is UNDEFINED,
    "is_not_null": lambda v: v is not UNDEFINED,
    "is_num": _is_number,
    "is_int": lambda v: type(v) is int,
    "is_bool": lambda v: type(v) is bool,
    "is_str": lambda v: type(v) is str,
    "regex_match": _regex_match,
    "replace": _replace,
    "split": _split,
    "nth": _nth,
    "base64_encode": lambda v: base64.b64encode(v).decode(),
    "base64_decode": lambda v: base64.b64decode(v).decode(),
    "json_encode": lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":")),
    "hexstr2bin": lambda v: bytes.fromhex(v),
    "subbits": _subbits,
    "mod": _mod,
    "str": _str,
}


def to_string(value: Any) -> str:
    """emqx_template:to_string/1."""
    if isinstance(value, _Atom):
        return str(value)
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return format_float(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    raise EmqxModelError(f"rendering {value!r} is not modelled")


_PLACEHOLDER = re.compile(r"\$\{([a-zA-Z0-9._]*)\}")


def render_template(template: str, selected: Mapping[str, Any]) -> str:
    """A ``${var}`` template over the SELECT output; missing values render ``undefined``."""
    def sub(match: re.Match[str]) -> str:
        value: Any = selected
        for part in match.group(1).split("."):
            value = value.get(part, UNDEFINED) if isinstance(value, dict) else UNDEFINED
        return to_string(value)

    return _PLACEHOLDER.sub(sub, template)


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
        if not topic_matches(self.topic, env.topic):
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
        for key in topic_tags:
            tag = rule.tags[key]
            raw: Expr = Col("topic") if tag.segment is None else fn(
                "nth", tag.segment, fn("split", Col("topic"), "/", "notrim"))
            self._add(BAD_VALUE, key, Not(Call(fn("regex_match", raw, TAG_RE))))
            self.tag_exprs[key] = _escape_tag_sql(raw)
        for key in payload_tags:
            path = rule.tags[key].path
            assert path is not None
            value = self._value(path)
            self._add(MISSING, key, Call(fn("is_null", value)))
            self._add(WRONG_TYPE, key, Not(Call(fn("is_str", value))))
            self._add(BAD_VALUE, key, Not(Call(fn("regex_match", value, TAG_RE))))
            self.tag_exprs[key] = _when_str(value, _escape_tag_sql(value))
        for name, spec in rule.fields.items():
            if spec.from_ == "payload_base64":
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
                outside = [Cmp("<", value, Const(_num(lo, spec.type)))] if lo is not None else []
                outside += [Cmp(">", value, Const(_num(hi, spec.type)))] if hi is not None else []
                if outside:
                    self._add(OUT_OF_RANGE, name, when_present(any_of(*outside)))
                self.field_exprs[name] = value
            elif spec.type == "string":
                self._add(BAD_VALUE, name, when_present(Not(Call(fn("regex_match", value, STRING_RE)))))
                if spec.values is not None:
                    self._add(BAD_VALUE, name, when_present(all_of(*[Cmp("<>", value, Const(v))
                                                                     for v in spec.values])))
                self.field_exprs[name] = _when_str(value, _escape_string_sql(value))
            else:
                self.field_exprs[name] = value
        if rule.time.from_ == "payload":
            value = self._value(rule.time.path)
            lo, hi = rule.time.bounds()
            self._add(MISSING, rule.time.path, Call(fn("is_null", value)))
            self._add(WRONG_TYPE, rule.time.path, Not(Call(fn("is_int", value))))
            self._add(OUT_OF_RANGE, rule.time.path, any_of(Cmp("<", value, Const(lo)), Cmp(">", value, Const(hi))))
            self.time_expr: Expr = value
            self.precision = {"s": "s", "ms": "ms", "us": "u", "ns": "ns"}[rule.time.unit]
        else:
            guid = fn("hexstr2bin", Col("id"))
            self.time_expr = Arith("+", Arith("*", fn("subbits", guid, 1, 64), Const(1000)),
                                   fn("mod", fn("subbits", guid, 113, 16), 1000))
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
        if self.checks:
            reason = Case(tuple((c.fails, Const(c.reason)) for c in self.checks), Const("invalid"))
            fld = Case(tuple((c.fails, Const(c.name)) for c in self.checks), Const("none"))
            invalid = self.valid()
            assert invalid is not None
            payload = ('{"rule":"' + self.name + '","reason":"${reason}","field":"${field}","topic":${dl_topic},'
                       '"qos":${dl_qos},"retain":${dl_retain},"payload":"${dl_payload}"}')
            out.append(EmqxRule(
                f"{base}_deadletter", f"ecokit rule {self.name}: dead letters",
                (Select("reason", reason), Select("field", fld),
                 Select("dl_topic", fn("json_encode", Col("topic"))), Select("dl_qos", Col("qos")),
                 Select("dl_retain", Col("flags.retain")), Select("dl_payload", fn("base64_encode", Col("payload")))),
                rule.topic, self._where(invalid.negate()),
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
