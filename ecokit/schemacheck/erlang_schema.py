"""Hidden HOCON roots read from EMQX's Erlang schema sources.

EMQX's configuration dump leaves out roots marked ``importance => ?IMPORTANCE_HIDDEN``,
``rule_engine`` among them, but EMQX reads them all the same. This module parses the
schema module itself (``emqx_rule_engine_schema.erl``) far enough to know its fields:

- a tokenizer and a parser for the Erlang expressions schema modules are written in
  (lists, tuples, maps, binaries, calls, macros, ``fun``, ``case``, ``++``);
- an interpreter that evaluates ``roots()`` and ``fields(Name)`` into
  :mod:`ecokit.schemacheck.hocon` types, including a union whose member a ``fun`` picks.

Anything it does not understand raises :class:`ErlangSchemaError` naming the line, so a
change in a newer source fails loudly instead of being read wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecokit.schemacheck.hocon import (
    AnyValue,
    ArrayOf,
    Boolean,
    Duration,
    Enum,
    Field,
    Integer,
    Literal,
    MapOf,
    Number,
    Selector,
    String,
    Struct,
    Type,
    Union,
)


class ErlangSchemaError(ValueError):
    pass


# -- tokens ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+|%[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<qatom>'(?:[^'\\]|\\.)*')
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<macro>\?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<var>[A-Z_][A-Za-z0-9_]*)
  | (?P<atom>[a-z][A-Za-z0-9_@]*)
  | (?P<dot>\.(?=\s|%|$))
  | (?P<op>=:=|=/=|->|=>|:=|\+\+|--|::|<<|>>|==|/=|=<|>=|<-|\|\||[()\[\]{},;:#|=+\-*/<>.!])
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos, line = 0, 1
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise ErlangSchemaError(f"line {line}: cannot read {source[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        text = match.group(0)
        if kind != "ws":
            tokens.append(Token(kind, text, line))
        line += text.count("\n")
        pos = match.end()
    tokens.append(Token("eof", "", line))
    return tokens


# -- syntax ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    kind: str  # str atom var num tuple list map bin call macro fun funref case binop neg
    line: int
    value: Any = None  # text / number / operator / name
    items: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Clause:
    patterns: tuple[Node, ...]
    body: tuple[Node, ...]


_KEYWORDS = {"fun", "case", "of", "end", "when", "begin", "if", "try", "catch", "receive", "after"}
_BINOPS = [("=",), ("orelse",), ("andalso",), ("==", "/=", "=<", "<", ">=", ">", "=:=", "=/="),
           ("++", "--"), ("+", "-"), ("*", "/")]


class Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def _next(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def _is(self, text: str, kind: str | None = None) -> bool:
        tok = self.tok
        return tok.text == text and (kind is None or tok.kind == kind)

    def _expect(self, text: str) -> Token:
        if self.tok.text != text:
            raise ErlangSchemaError(f"line {self.tok.line}: expected {text!r}, found {self.tok.text!r}")
        return self._next()

    # forms
    def module(self) -> dict[tuple[str, int], list[Clause]]:
        functions: dict[tuple[str, int], list[Clause]] = {}
        while self.tok.kind != "eof":
            if self._is("-", "op"):
                while self.tok.kind not in ("dot", "eof"):
                    self._next()
                self._next()
                continue
            name = self._next()
            if name.kind != "atom":
                raise ErlangSchemaError(f"line {name.line}: expected a function, found {name.text!r}")
            clauses = [self._clause()]
            while self._is(";"):
                self._next()
                self._expect(name.text)
                clauses.append(self._clause())
            if self.tok.kind != "dot":
                raise ErlangSchemaError(f"line {self.tok.line}: expected the end of {name.text}, "
                                        f"found {self.tok.text!r}")
            self._next()
            functions.setdefault((name.text, len(clauses[0].patterns)), []).extend(clauses)
        return functions

    def _clause(self) -> Clause:
        self._expect("(")
        patterns = self._sequence(")")
        return Clause(tuple(patterns), self._guard_and_body())

    def _guard_and_body(self) -> tuple[Node, ...]:
        if self._is("when", "atom"):
            while not self._is("->"):
                self._next()
        self._expect("->")
        return tuple(self._body())

    def _body(self) -> list[Node]:
        body = [self.expr()]
        while self._is(","):
            self._next()
            body.append(self.expr())
        return body

    def _sequence(self, close: str) -> list[Node]:
        items: list[Node] = []
        while not self._is(close):
            items.append(self.expr())
            if not self._is(close):
                self._expect(",")
        self._next()
        return items

    # expressions
    def expr(self, level: int = 0) -> Node:
        if level == len(_BINOPS):
            return self._unary()
        left = self.expr(level + 1)
        while self.tok.text in _BINOPS[level] and self.tok.kind in ("op", "atom"):
            op = self._next()
            right = self.expr(level if op.text in ("++", "--", "=") else level + 1)
            left = Node("binop", op.line, op.text, (left, right))
        return left

    def _unary(self) -> Node:
        if self._is("-", "op"):
            tok = self._next()
            return Node("neg", tok.line, None, (self._unary(),))
        return self._primary()

    def _primary(self) -> Node:
        tok = self._next()
        line = tok.line
        if tok.kind == "string":
            text = _unquote(tok.text)
            while self.tok.kind == "string":  # adjacent strings concatenate
                text += _unquote(self._next().text)
            return Node("str", line, text)
        if tok.kind == "number":
            return Node("num", line, float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "var":
            return Node("var", line, tok.text)
        if tok.kind == "qatom":
            return self._after_name(Node("atom", line, _unquote(tok.text)))
        if tok.kind == "macro":
            name = tok.text[1:]
            if self._is("("):
                self._next()
                return Node("macro", line, name, tuple(self._sequence(")")))
            if self._is(":"):
                return self._after_name(Node("macro", line, name))
            return Node("macro", line, name)
        if tok.kind == "atom":
            if tok.text == "fun":
                return self._fun(line)
            if tok.text == "case":
                return self._case(line)
            if tok.text in _KEYWORDS:
                raise ErlangSchemaError(f"line {line}: {tok.text} is not supported here")
            return self._after_name(Node("atom", line, tok.text))
        if tok.text == "(":
            inner = self.expr()
            self._expect(")")
            return inner
        if tok.text == "[":
            items: list[Node] = []
            tail: Node | None = None
            while not self._is("]"):
                items.append(self.expr())
                if self._is("|"):
                    self._next()
                    tail = self.expr()
                    break
                if not self._is("]"):
                    self._expect(",")
            self._expect("]")
            return Node("list", line, tail, tuple(items))
        if tok.text == "{":
            return Node("tuple", line, None, tuple(self._sequence("}")))
        if tok.text == "#":
            self._expect("{")
            pairs: list[Node] = []
            while not self._is("}"):
                key = self.expr(level=1)
                op = self._next()
                if op.text not in ("=>", ":="):
                    raise ErlangSchemaError(f"line {op.line}: expected => or := in a map")
                pairs.append(Node("pair", op.line, op.text, (key, self.expr())))
                if not self._is("}"):
                    self._expect(",")
            self._next()
            return Node("map", line, None, tuple(pairs))
        if tok.text == "<<":
            elements: list[Node] = []
            while not self._is(">>"):
                element = self._primary()
                spec = ""
                if self._is("/"):
                    self._next()
                    spec = self._next().text
                    while self._is("-"):
                        self._next()
                        spec += "-" + self._next().text
                elements.append(Node("binelem", element.line, spec, (element,)))
                if not self._is(">>"):
                    self._expect(",")
            self._next()
            return Node("bin", line, None, tuple(elements))
        raise ErlangSchemaError(f"line {line}: unexpected {tok.text!r}")

    def _after_name(self, name: Node) -> Node:
        module: Node | None = None
        if self._is(":") and self.tokens[self.pos + 1].kind in ("atom", "qatom"):
            self._next()
            callee = self._next()
            text = _unquote(callee.text) if callee.kind == "qatom" else callee.text
            module, name = name, Node("atom", callee.line, text)
        if self._is("("):
            self._next()
            return Node("call", name.line, (module, name.value), tuple(self._sequence(")")))
        if module is not None:
            raise ErlangSchemaError(f"line {name.line}: expected a call after {name.value}")
        return name

    def _fun(self, line: int) -> Node:
        if not self._is("("):
            parts = []
            while not self._is("/"):
                parts.append(self._next().text)
            self._next()
            arity = int(self._next().text)
            return Node("funref", line, ("".join(parts), arity))
        clauses = [self._clause()]
        while self._is(";"):
            self._next()
            clauses.append(self._clause())
        self._expect("end")
        return Node("fun", line, None, tuple(clauses))

    def _case(self, line: int) -> Node:
        subject = self.expr()
        self._expect("of")
        clauses = []
        while True:
            pattern = self.expr()
            clauses.append(Clause((pattern,), self._guard_and_body()))
            if not self._is(";"):
                break
            self._next()
        self._expect("end")
        return Node("case", line, subject, tuple(clauses))


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


# -- evaluation into schema types -------------------------------------------------------------


@dataclass(frozen=True)
class Atom:
    name: str


@dataclass(frozen=True)
class Hocon:
    """``?HOCON(Type, Opts)`` / ``hoconsc:mk``: a type with its options."""

    type: Any
    opts: Mapping[Any, Any]


@dataclass(frozen=True)
class Lazy:
    """A type term not yet turned into a :class:`Type` (refs resolve on demand)."""

    kind: str  # builtin ref map array union enum remote
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class FunValue:
    clauses: tuple[Clause, ...]


# Types of other modules the rule engine schema uses, as emqx_schema.erl defines them.
REMOTE_TYPES: dict[tuple[str, str], Type] = {
    ("emqx_schema", "template"): String("String(template)"),  # binary() with placeholder syntax
    ("emqx_schema", "qos"): Integer(0, 2),  # range(0, 2)
    ("emqx_schema", "timeout_duration_ms"): Duration(),
}
BUILTIN_TYPES: dict[str, Type] = {
    "binary": String(), "string": String(), "boolean": Boolean(), "map": MapOf(None), "integer": Integer(),
    "pos_integer": Integer(1), "non_neg_integer": Integer(0), "float": Number(), "number": Number(),
    "term": AnyValue(), "any": AnyValue(),
}


class SchemaModule:
    """An EMQX hocon schema module: ``roots()`` and ``fields/1`` as hocon types."""

    def __init__(self, source: str, name: str) -> None:
        self.name = name
        self.functions = Parser(tokenize(source)).module()
        self._structs: dict[str, Struct] = {}

    @classmethod
    def load(cls, path: Path) -> SchemaModule:
        return cls(path.read_text(), path.stem)

    def roots(self) -> dict[str, Field]:
        return {f.name: f for f in (self._field(v) for v in self._call("roots", []))}

    def struct(self, name: str) -> Struct:
        if name not in self._structs:
            struct = Struct(name, f"erl:{self.name}:fields({name})")
            self._structs[name] = struct  # before the fields: a struct may refer to itself
            for item in self._call("fields", [name]):
                field = self._field(item)
                struct.fields[field.name] = field
        return self._structs[name]

    # evaluation
    def _call(self, name: str, args: Sequence[Any]) -> Any:
        clauses = self.functions.get((name, len(args)))
        if clauses is None:
            raise ErlangSchemaError(f"{self.name}: no function {name}/{len(args)}")
        for clause in clauses:
            if all(_match(p, a) for p, a in zip(clause.patterns, args, strict=True)):
                value = None
                for node in clause.body:
                    value = self._eval(node)
                return value
        raise ErlangSchemaError(f"{self.name}: no clause of {name}/{len(args)} matches {args!r}")

    def _eval(self, node: Node) -> Any:
        kind = node.kind
        if kind in ("str", "num"):
            return node.value
        if kind == "atom":
            return Atom(node.value)
        if kind == "tuple":
            return tuple(self._eval(i) for i in node.items)
        if kind == "list":
            items = [self._eval(i) for i in node.items]
            return items + (list(self._eval(node.value)) if node.value is not None else [])
        if kind == "map":
            return {_key(self._eval(p.items[0])): self._eval(p.items[1]) for p in node.items}
        if kind == "bin":
            return "".join(str(self._eval(e.items[0])) for e in node.items)
        if kind == "binop" and node.value == "++":
            return list(self._eval(node.items[0])) + list(self._eval(node.items[1]))
        if kind == "neg":
            return -self._eval(node.items[0])
        if kind == "fun":
            return FunValue(node.items)
        if kind == "funref":
            return Atom(f"fun {node.value[0]}/{node.value[1]}")
        if kind == "macro":
            return self._macro(node)
        if kind == "call":
            return self._eval_call(node)
        raise ErlangSchemaError(f"{self.name} line {node.line}: cannot evaluate {kind}")

    def _macro(self, node: Node) -> Any:
        name, args = node.value, node.items
        if name == "HOCON":
            return Hocon(self._eval(args[0]), self._eval(args[1]) if len(args) > 1 else {})
        if name in ("R_REF", "REF"):
            return Lazy("ref", (str(_key(self._eval(args[-1]))),))
        if name == "ARRAY":
            return Lazy("array", (self._eval(args[0]),))
        if name == "ENUM":
            return Lazy("enum", (self._eval(args[0]),))
        if name == "UNION":
            return Lazy("union", (self._eval(args[0]),))
        if name == "DESC":
            return None
        if name.startswith("IMPORTANCE_"):
            return Atom(name[len("IMPORTANCE_"):].lower())
        if name == "MODULE":
            return Atom(self.name)
        raise ErlangSchemaError(f"{self.name} line {node.line}: unknown macro ?{name}")

    def _eval_call(self, node: Node) -> Any:
        module, name = node.value
        args = [self._eval(a) for a in node.items]
        if module is None:
            if name in BUILTIN_TYPES and not args:
                return Lazy("builtin", (name,))
            return self._call(name, args)
        mod = module.value if module.kind == "atom" else self.name
        if mod == "hoconsc":
            if name == "mk":
                return Hocon(args[0], args[1] if len(args) > 1 else {})
            if name == "map":
                return Lazy("map", (args[0], args[1]))
            if name in ("array", "union", "enum"):
                return Lazy(name, (args[0],))
            if name in ("ref", "lazy"):
                return Lazy("ref", (str(_key(args[-1])),))
        if (mod, name) in REMOTE_TYPES:
            return Lazy("remote", (mod, name))
        raise ErlangSchemaError(f"{self.name} line {node.line}: unknown call {mod}:{name}/{len(args)}")

    # turning terms into hocon types
    def _field(self, item: Any) -> Field:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Hocon)):
            raise ErlangSchemaError(f"{self.name}: {item!r} is not a field {{Name, ?HOCON(Type, Opts)}}")
        name = str(_key(item[0]))
        opts = item[1].opts
        aliases = tuple(str(_key(a)) for a in opts.get("aliases", []))
        return Field(name, self.type_of(item[1].type), aliases, required=opts.get("required") is True or
                     opts.get("required") == Atom("true"), source=f"{self.name}.erl")

    def type_of(self, term: Any) -> Type:
        if isinstance(term, Atom):
            return Literal(term.name)  # an atom as a type is that one value (function = republish)
        if not isinstance(term, Lazy):
            raise ErlangSchemaError(f"{self.name}: {term!r} is not a type")
        kind, args = term.kind, term.args
        if kind == "builtin":
            return BUILTIN_TYPES[args[0]]
        if kind == "remote":
            return REMOTE_TYPES[(args[0], args[1])]
        if kind == "ref":
            return self.struct(args[0])
        if kind == "map":
            return MapOf(self.type_of(args[1]), str(args[0]))
        if kind == "array":
            return ArrayOf(self.type_of(args[0]))
        if kind == "enum":
            return Enum(tuple(a.name if isinstance(a, Atom) else str(a) for a in args[0]))
        if kind == "union":
            if isinstance(args[0], FunValue):
                return self._selector(args[0])
            return Union(tuple(self.type_of(m) for m in args[0]))
        raise ErlangSchemaError(f"{self.name}: unknown type term {term!r}")

    def _selector(self, fun: FunValue) -> Selector:
        """A ``fun (all_union_members) -> [...]; ({value, V}) -> case V of ... end end`` union."""
        members: tuple[Type, ...] | None = None
        cases: list[tuple[Node, tuple[Node, ...]]] = []
        for clause in fun.clauses:
            (pattern,) = clause.patterns
            if pattern.kind == "atom" and pattern.value == "all_union_members":
                members = tuple(self.type_of(m) for m in self._eval(clause.body[-1]))
            elif pattern.kind == "tuple" and clause.body[-1].kind == "case":
                cases = [(c.patterns[0], c.body) for c in clause.body[-1].items]
            else:
                raise ErlangSchemaError(f"{self.name} line {pattern.line}: unsupported union selector clause")
        if members is None or not cases:
            raise ErlangSchemaError(f"{self.name}: a union selector needs all_union_members and a value case")
        choices = [(pattern, self._selected(body)) for pattern, body in cases]

        def pick(value: Any) -> Type | None:
            for pattern, member in choices:
                if _value_matches(pattern, value):
                    return member
            return None

        rule = "; ".join(f"{_pattern_text(p)} -> {m.describe() if m else 'error'}" for p, m in choices)
        return Selector(members, pick, rule)

    def _selected(self, body: tuple[Node, ...]) -> Type | None:
        last = body[-1]
        if last.kind == "call" and last.value == (None, "throw"):
            return None
        chosen = self._eval(last)
        if not (isinstance(chosen, list) and len(chosen) == 1):
            raise ErlangSchemaError(f"{self.name} line {last.line}: a selector branch must give one member")
        return self.type_of(chosen[0])


def _key(value: Any) -> Any:
    return value.name if isinstance(value, Atom) else value


def _match(pattern: Node, value: Any) -> bool:
    """Function-clause patterns of schema modules: literals and variables."""
    if pattern.kind == "var":
        return True
    if pattern.kind == "str":
        return isinstance(value, str) and value == str(pattern.value)
    if pattern.kind == "atom":
        return bool(value == pattern.value or value == Atom(pattern.value))
    if pattern.kind == "tuple":
        return (isinstance(value, tuple) and len(value) == len(pattern.items)
                and all(_match(p, v) for p, v in zip(pattern.items, value, strict=True)))
    raise ErlangSchemaError(f"line {pattern.line}: unsupported pattern {pattern.kind}")


def _bin_pattern(node: Node) -> tuple[str, str | None]:
    """A binary pattern: ("literal", text) for <<"x">>, ("any", None) for <<_/binary>>."""
    (element,) = node.items
    inner = element.items[0]
    if inner.kind == "str":
        return "literal", inner.value
    if inner.kind == "var" and element.value == "binary":
        return "any", None
    raise ErlangSchemaError(f"line {node.line}: unsupported binary pattern")


def _value_matches(pattern: Node, value: Any) -> bool:
    """Case patterns of a union selector, against a parsed config value."""
    if pattern.kind == "var":
        return True
    if pattern.kind == "bin":
        kind, text = _bin_pattern(pattern)
        return isinstance(value, str) and (kind == "any" or value == text)
    if pattern.kind == "map":
        if not isinstance(value, Mapping):
            return False
        for pair in pattern.items:
            key_kind, key = _bin_pattern(pair.items[0])
            if pair.value != ":=" or key_kind != "literal":
                return _unsupported(pair)
            if key not in value or not _value_matches(pair.items[1], value[key]):
                return False
        return True
    return _unsupported(pattern)


def _unsupported(node: Node) -> bool:
    raise ErlangSchemaError(f"line {node.line}: unsupported selector pattern")


def _pattern_text(node: Node) -> str:
    if node.kind == "var":
        return "anything else"
    if node.kind == "bin":
        kind, text = _bin_pattern(node)
        return "a string" if kind == "any" else repr(text)
    if node.kind == "map":
        return "{" + ", ".join(f"{_pattern_text(p.items[0])}: {_pattern_text(p.items[1])}" for p in node.items) + "}"
    return node.kind


def rule_engine_root(path: Path) -> dict[str, Field]:
    """The ``rule_engine`` root (and any other root) of ``emqx_rule_engine_schema.erl``."""
    return SchemaModule.load(path).roots()

