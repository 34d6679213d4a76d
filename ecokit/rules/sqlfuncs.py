"""The functions an EMQX rule SQL calls, checked against what EMQX 5.8's rule engine has.

EMQX runs a rule's SQL function ``f(a, b)`` as ``emqx_rule_funcs:f(A, B)``; a name or an
arity that module does not export fails every message at run time
(``sql_function_not_supported``), long after ``ecokit up`` said all was well. So every
rendered rule's SQL is read here and each call checked, by name and number of arguments,
against the exports of ``emqx_rule_funcs.erl`` at v5.8.9 (shipped beside this module).
The one dynamic entry, ``'$handle_undefined_function'/2``, gives ``sprintf`` any arity
of one or more; every other unknown name is refused in the open-source build.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ecokit.errors import ConfigError

EXPORTS_FILE = "emqx_rule_funcs_v5.8.9.txt"
EMQX_VERSION = "5.8.9"
# Names the rule SQL grammar uses before a parenthesis that are not function calls.
KEYWORDS = frozenset({"select", "from", "where", "as", "and", "or", "not", "in", "case", "when", "then",
                      "else", "end", "foreach", "do", "incase", "is", "like", "null", "true", "false"})
# Variadic through '$handle_undefined_function'/2 (emqx_rule_funcs.erl).
VARIADIC = {"sprintf": 1}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_'-]+)*)
  | (?P<open>[(\[])
  | (?P<close>[)\]])
  | (?P<comma>,)
  | (?P<op><>|<=|>=|!=|=~|[=<>+\-*/.])
""", re.VERBOSE)


@dataclass(frozen=True)
class Call:
    name: str
    arity: int
    offset: int  # where in the SQL

    def __str__(self) -> str:
        return f"{self.name}/{self.arity}"


class SqlSyntaxError(ValueError):
    pass


@cache
def exported_functions() -> frozenset[tuple[str, int]]:
    """(name, arity) of every function EMQX 5.8.9's rule SQL can call."""
    text = resources.files("ecokit.rules").joinpath(EXPORTS_FILE).read_text()
    return frozenset(parse_exports(text))


def parse_exports(text: str) -> Iterator[tuple[str, int]]:
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, arity = line.rpartition("/")
        yield name.strip("'"), int(arity)


def _tokens(sql: str) -> list[tuple[str, str, int]]:
    out = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        if match is None:
            raise SqlSyntaxError(f"cannot read the rule SQL at {pos}: {sql[pos:pos + 20]!r}")
        if match.lastgroup != "ws":
            out.append((match.lastgroup or "", match.group(0), pos))
        pos = match.end()
    return out


def function_calls(sql: str) -> list[Call]:
    """Every function call of a rule SQL statement, nested ones too, with its arity."""
    tokens = _tokens(sql)
    calls: list[Call] = []
    for i, (kind, text, offset) in enumerate(tokens):
        if kind != "name" or "." in text or text.lower() in KEYWORDS:
            continue
        if i + 1 >= len(tokens) or tokens[i + 1][1] != "(":
            continue
        depth, commas, empty = 0, 0, True
        for j in range(i + 1, len(tokens)):
            tkind = tokens[j][0]
            if tkind == "open":
                depth += 1
            elif tkind == "close":
                depth -= 1
                if depth == 0:
                    break
            elif tkind == "comma" and depth == 1:
                commas += 1
            if j > i + 1 and depth >= 1:
                empty = False
        else:
            raise SqlSyntaxError(f"{text}( at {offset} is never closed")
        calls.append(Call(text, 0 if empty else commas + 1, offset))
    return calls


def unknown_calls(sql: str, known: Iterable[tuple[str, int]] | None = None) -> list[Call]:
    """The calls of ``sql`` EMQX's rule engine cannot run."""
    table = frozenset(known) if known is not None else exported_functions()
    out = []
    for call in function_calls(sql):
        if (call.name, call.arity) in table:
            continue
        if call.name in VARIADIC and call.arity >= VARIADIC[call.name]:
            continue
        out.append(call)
    return out


def check_rule_sql(rule: str, rule_id: str, sql: str) -> None:
    """Refuse a rendered rule whose SQL calls a function EMQX 5.8 does not have.

    ``rule`` is the ecokit.yaml rule it came from (named in the error), ``rule_id`` the
    EMQX rule.
    """
    try:
        bad = unknown_calls(sql)
    except SqlSyntaxError as exc:
        raise ConfigError(f"the EMQX rule {rule_id} rendered for it is not valid rule SQL: {exc}",
                          key=f"rules.{rule}") from None
    if bad:
        table = exported_functions()
        described = []
        for call in bad:
            arities = sorted(a for n, a in table if n == call.name)
            have = (f"EMQX {EMQX_VERSION} has {call.name} with {', '.join(map(str, arities))} argument(s)"
                    if arities else f"EMQX {EMQX_VERSION}'s rule engine has no function {call.name}")
            described.append(f"{call} ({have})")
        raise ConfigError(
            f"the EMQX rule {rule_id} rendered for it calls {'; '.join(described)}",
            key=f"rules.{rule}",
            hint="remove or change this rule, or use the ecokit bridge (broker.kind: mosquitto), "
                 "which does not depend on EMQX's SQL functions")
