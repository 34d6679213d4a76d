"""EMQX rule SQL as a small expression tree that renders to SQL and evaluates with EMQX's
semantics, so the shared test vectors run through the rules EMQX would get (``ecokit.rules.emqx``
renders them). What the evaluator models, and where it was read (emqx/emqx,
apps/emqx_rule_engine and apps/emqx_utils):

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
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ecokit.acl import topic_matches
from ecokit.rules.engine import decode_json
from ecokit.rules.lineproto import format_float


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
