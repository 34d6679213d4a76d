"""HOCON schema types as EMQX's hocon library checks them, and a walker over parsed config.

The types are those the EMQX configuration dump prints (``Integer(1..+inf)``,
``OneOf(Struct(a),String("x"))``, ``Map($name->Struct(b))``, ``Duration``, ...). What
each accepts follows emqx/hocon and EMQX's ``emqx_schema``:

- ``Duration``: an integer (ms) or ``<number><unit>`` repeated, units f w d h m s ms in
  either case (``hocon_postprocess:duration/1``);
- ``Bytesize``: an integer or ``<digits><kb|mb|gb>`` in either case
  (``hocon_postprocess:bytesize/1``);
- ``Enum``: the value's text, so ``true``/``false`` match enum members of that name;
- a struct refuses keys it does not declare (``unknown_fields``), a map's keys must match
  ``^[A-Za-z0-9]+[A-Za-z0-9-_]*$`` (``hocon_schema`` ``MAP_KEY_RE``);
- a union of structs is chosen by its tag fields (single-value strings and enums such as
  ``mechanism``/``backend``/``type``/``name``); a union of plain values accepts what any
  member accepts (hocon tries members in turn).

Where this walker is stricter than EMQX it says so: ``Integer``/``Boolean`` want real
numbers and booleans (hocon would also convert the strings ``"8"`` and ``"true"``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ecokit.schemacheck import Problem

MAP_KEY = re.compile(r"^[A-Za-z0-9]+[A-Za-z0-9\-_]*$")
_DURATION_PART = re.compile(r"([0-9.]+)(ms|MS|f|F|w|W|d|D|h|H|m|M|s|S)")
_BYTESIZE = re.compile(r"^[0-9]+(kb|KB|mb|MB|gb|GB)?$")


def is_duration(value: Any) -> bool:
    """Whether hocon reads ``value`` as a duration (``1m``, ``1h30m``, ``500ms``, or ms)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value >= 0
    if not isinstance(value, str) or not value:
        return False
    pos = 0
    while pos < len(value):
        match = _DURATION_PART.match(value, pos)
        if match is None or match.group(1).count(".") > 1 or match.group(1) == ".":
            return False
        pos = match.end()
    return True


def is_bytesize(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return value >= 0
    return isinstance(value, str) and bool(_BYTESIZE.match(value))


def scalar_text(value: Any) -> str | None:
    """How hocon spells a scalar when it compares it with enum members and literals."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


class Type:
    """A schema type; ``check`` gives the problems of one value at ``path``."""

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        raise NotImplementedError


@dataclass
class Walk:
    """What a walk needs besides the value: hidden keys the dump does not list."""

    hidden: Callable[[Struct, str], Field | None] = lambda struct, key: None


def _is_map(value: Any) -> bool:
    return isinstance(value, Mapping)


@dataclass(frozen=True)
class Field:
    name: str
    type: Type
    aliases: tuple[str, ...] = ()
    required: bool = False
    # Where a field the dump does not carry was read (hidden fields only).
    source: str = ""


@dataclass(repr=False)
class Struct(Type):
    name: str
    ident: str  # the dump's hash (T-root-S-name...), unique per place in the tree
    fields: dict[str, Field] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Struct({self.name!r}, {self.ident!r})"

    def describe(self) -> str:
        return f"Struct({self.name})"

    def field(self, key: str) -> Field | None:
        found = self.fields.get(key)
        if found is not None:
            return found
        return next((f for f in self.fields.values() if key in f.aliases), None)

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        if not _is_map(value):
            return [Problem(path, f"expected an object ({self.describe()}), got {value!r}")]
        problems: list[Problem] = []
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            spec = self.field(key) or ctx.hidden(self, key)
            if spec is None:
                close = difflib.get_close_matches(key, list(self.fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(Problem(sub, f"unknown key: {self.describe()} has no field {key!r}{hint}"))
                continue
            problems += spec.type.check(item, sub, ctx)
        for spec in self.fields.values():
            if spec.required and spec.name not in value and not any(a in value for a in spec.aliases):
                problems.append(Problem(f"{path}.{spec.name}" if path else spec.name, "required field is missing"))
        return problems


@dataclass(frozen=True)
class MapOf(Type):
    """``Map($name->T)``: any key (EMQX's map-key rule), every value a T. ``Map`` alone: anything."""

    value: Type | None
    key_name: str = "name"

    def describe(self) -> str:
        return f"Map(${self.key_name}->{self.value.describe()})" if self.value else "Map"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        if not _is_map(value):
            return [Problem(path, f"expected an object ({self.describe()}), got {value!r}")]
        if self.value is None:
            return []
        problems: list[Problem] = []
        for key, item in value.items():
            sub = f"{path}.{key}"
            if not MAP_KEY.match(str(key)):
                problems.append(Problem(sub, f"{key!r} is not a valid name for ${self.key_name} "
                                             f"(^[A-Za-z0-9]+[A-Za-z0-9-_]*$)"))
            problems += self.value.check(item, sub, ctx)
        return problems


@dataclass(frozen=True)
class ArrayOf(Type):
    item: Type

    def describe(self) -> str:
        return f"Array({self.item.describe()})"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        if not isinstance(value, Sequence) or isinstance(value, str):
            return [Problem(path, f"expected an array ({self.describe()}), got {value!r}")]
        problems: list[Problem] = []
        for i, item in enumerate(value):
            problems += self.item.check(item, f"{path}[{i}]", ctx)
        return problems


def _literal_tags(struct: Struct) -> list[Field]:
    return [f for f in struct.fields.values() if isinstance(f.type, Literal)]


def _enum_tags(struct: Struct) -> list[Field]:
    return [f for f in struct.fields.values() if isinstance(f.type, Enum)]


def _matches(value: Mapping[str, Any], tags: list[Field], *, must_have: bool) -> bool:
    for tag in tags:
        if tag.name not in value:
            if must_have:
                return False
        elif tag.type.check(value[tag.name], tag.name, Walk()):
            return False
    return True


def _union_candidates(structs: list[Struct], value: Mapping[str, Any]) -> list[Struct]:
    """The members a struct value can be, by their tags: fixed-text fields first (mechanism,
    backend, type: a member's fixed tag must be given), then enum fields to narrow down."""
    if len(structs) == 1:
        return structs
    by_literal = [s for s in structs if _matches(value, _literal_tags(s), must_have=True)]
    by_enum = [s for s in by_literal if _matches(value, _enum_tags(s), must_have=False)]
    return by_enum or by_literal


def _tag_text(struct: Struct) -> str:
    tags = _literal_tags(struct)
    if not tags:
        return struct.name
    return struct.name + "(" + ", ".join(f"{t.name}={t.type.value}" for t in tags  # type: ignore[attr-defined]
                                         ) + ")"


@dataclass(frozen=True)
class Union(Type):
    members: tuple[Type, ...]

    def describe(self) -> str:
        return f"OneOf({','.join(m.describe() for m in self.members)})"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        structs = [m for m in self.members if isinstance(m, Struct)]
        if _is_map(value) and structs:
            candidates = _union_candidates(structs, value)
            if not candidates:
                known = "; ".join(_tag_text(s) for s in structs)
                return [Problem(path, f"matches no member of the union by its tags; members: {known}")]
            first: list[Problem] | None = None
            for candidate in candidates:
                problems = candidate.check(value, path, ctx)
                if not problems:
                    return []
                first = problems if first is None else first
            assert first is not None
            return first
        for member in self.members:
            if not member.check(value, path, ctx):
                return []
        return [Problem(path, f"{value!r} is not a {self.describe()}")]


@dataclass(frozen=True)
class Selector(Type):
    """A union whose member a function of the value picks (hoconsc:union(fun ...))."""

    members: tuple[Type, ...]
    pick: Callable[[Any], Type | None]
    rule: str  # the selector, in words (for messages)

    def describe(self) -> str:
        return f"OneOf({','.join(m.describe() for m in self.members)})"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        member = self.pick(value)
        if member is None:
            return [Problem(path, f"{value!r} is no member of {self.describe()} ({self.rule})")]
        return member.check(value, path, ctx)


@dataclass(frozen=True)
class Literal(Type):
    """``String("x")`` or a single atom: exactly that text."""

    value: str

    def describe(self) -> str:
        return f'String("{self.value}")'

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        if isinstance(value, str) and value == self.value:
            return []
        return [Problem(path, f"expected {self.value!r}, got {value!r}")]


@dataclass(frozen=True)
class Enum(Type):
    values: tuple[str, ...]

    def describe(self) -> str:
        return f"Enum({','.join(self.values)})"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        if isinstance(value, str | bool) and scalar_text(value) in self.values:
            return []
        return [Problem(path, f"{value!r} is not one of {', '.join(self.values)}")]


@dataclass(frozen=True)
class Integer(Type):
    low: int | None = None
    high: int | None = None

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return "Integer"
        return f"Integer({'-inf' if self.low is None else self.low}..{'+inf' if self.high is None else self.high})"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        if not isinstance(value, int) or isinstance(value, bool):
            return [Problem(path, f"expected an integer ({self.describe()}), got {value!r}")]
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            return [Problem(path, f"{value} is outside {self.describe()}")]
        return []


@dataclass(frozen=True)
class Number(Type):
    def describe(self) -> str:
        return "Number"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return []
        return [Problem(path, f"expected a number, got {value!r}")]


@dataclass(frozen=True)
class Boolean(Type):
    def describe(self) -> str:
        return "Boolean"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        return [] if isinstance(value, bool) else [Problem(path, f"expected true or false, got {value!r}")]


@dataclass(frozen=True)
class String(Type):
    """A string. ``numbers_too``: a typerefl alias the dump prints as String but whose
    converter also takes a number (``ip_port``: ``bind = 18083``)."""

    kind: str = "String"
    numbers_too: str = ""  # why numbers are accepted here ("" = they are not)

    def describe(self) -> str:
        return self.kind

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        if isinstance(value, str):
            return []
        if self.numbers_too and isinstance(value, int) and not isinstance(value, bool):
            return []
        return [Problem(path, f"expected a string ({self.kind}), got {value!r}")]


@dataclass(frozen=True)
class Duration(Type):
    unit: str = "ms"

    def describe(self) -> str:
        return "Duration" if self.unit == "ms" else f"Duration({self.unit})"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        return [] if is_duration(value) else [Problem(path, f"{value!r} is not a duration (e.g. 15s, 1h30m, 500ms)")]


@dataclass(frozen=True)
class Bytesize(Type):
    def describe(self) -> str:
        return "Bytesize"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        return [] if is_bytesize(value) else [Problem(path, f"{value!r} is not a byte size (e.g. 1024, 64KB, 1MB)")]


@dataclass(frozen=True)
class AnyValue(Type):
    def describe(self) -> str:
        return "Any"

    def check(self, value: Any, path: str, ctx: Walk) -> list[Problem]:
        return []


# -- the dump's type notation ------------------------------------------------------------------


class TypeSyntaxError(ValueError):
    pass


class TypeParser:
    """Reads the dump's type strings; ``Struct(name)`` resolves through ``structs``."""

    SIMPLE: ClassVar[dict[str, Type]] = {
        "Integer": Integer(), "Number": Number(), "Boolean": Boolean(), "String": String(),
        "Secret": String("Secret"), "Duration": Duration(), "Bytesize": Bytesize(), "Map": MapOf(None),
    }

    def __init__(self, text: str, structs: Callable[[str], Struct]) -> None:
        self.text = text
        self.pos = 0
        self.structs = structs

    def parse(self) -> Type:
        result = self._type()
        if self.pos != len(self.text):
            raise self._error("trailing text")
        return result

    def _error(self, why: str) -> TypeSyntaxError:
        return TypeSyntaxError(f"{why} at {self.pos} in {self.text!r}")

    def _expect(self, token: str) -> None:
        if not self.text.startswith(token, self.pos):
            raise self._error(f"expected {token!r}")
        self.pos += len(token)

    def _name(self) -> str:
        match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(self.text, self.pos)
        if match is None:
            raise self._error("expected a name")
        self.pos = match.end()
        return match.group(0)

    def _until_close(self) -> str:
        end = self.text.index(")", self.pos)
        inner = self.text[self.pos:end]
        self.pos = end + 1
        return inner

    def _type(self) -> Type:
        name = self._name()
        if not self.text.startswith("(", self.pos):
            if name not in self.SIMPLE:
                raise self._error(f"unknown type {name}")
            return self.SIMPLE[name]
        self.pos += 1
        if name == "Struct":
            return self.structs(self._until_close())
        if name == "String":
            match = re.compile(r'"([^"]*)"\)').match(self.text, self.pos)
            if match is None:
                raise self._error("expected a quoted literal")
            self.pos = match.end()
            return Literal(match.group(1))
        if name == "Integer":
            low, _, high = self._until_close().partition("..")
            return Integer(None if "inf" in low else int(low), None if "inf" in high else int(high))
        if name == "Enum":
            return Enum(tuple(self._until_close().split(",")))
        if name == "Duration":
            return Duration(self._until_close())
        if name == "Map":
            self._expect("$")
            key = self._name()
            self._expect("->")
            value = self._type()
            self._expect(")")
            return MapOf(value, key)
        if name == "Array":
            item = self._type()
            self._expect(")")
            return ArrayOf(item)
        if name == "OneOf":
            members = [self._type()]
            while self.text.startswith(",", self.pos):
                self.pos += 1
                members.append(self._type())
            self._expect(")")
            return Union(tuple(members))
        raise self._error(f"unknown type {name}(...)")


def parse_type(text: str, structs: Callable[[str], Struct] | None = None) -> Type:
    def no_structs(name: str) -> Struct:
        raise TypeSyntaxError(f"Struct({name}) cannot be resolved here")

    return TypeParser(text, structs or no_structs).parse()
