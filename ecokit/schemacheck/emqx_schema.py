"""EMQX 5.8's configuration schema: the dump behind its configuration manual, completed with
what the dump leaves out, and a check of a parsed ``emqx.conf`` against it.

The dump (``emqx_conf:dump_schema``, emqx-docs ``hocon/hocon-ce-v5.8.1-en.json``) lists
fields of importance ``low`` and up. Fields EMQX hides from the manual but reads all the
same are added here from their sources:

- the ``rule_engine`` root, read from ``emqx_rule_engine_schema.erl`` itself
  (:mod:`ecokit.schemacheck.erlang_schema`);
- the fields in :data:`HIDDEN_KEYS`, each with where it is declared and, where EMQX's REST
  API documents the same struct, the OpenAPI component that lists it (a test checks
  those components really do).

A few places where the dump prints a type narrower than the one EMQX converts are listed
in :data:`NUMBERS_AS_STRINGS` with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecokit.schemacheck import Problem
from ecokit.schemacheck.hocon import (
    AnyValue,
    ArrayOf,
    Field,
    MapOf,
    Selector,
    String,
    Struct,
    Type,
    TypeParser,
    Union,
    Walk,
    parse_type,
)


@dataclass(frozen=True)
class HiddenKey:
    """A field EMQX reads that the dump leaves out."""

    struct: str  # regular expression over the dump's struct ids (full match)
    name: str
    type: str  # in the dump's notation
    source: str  # where EMQX declares it
    openapi: tuple[str, ...] = ()  # REST API components listing the same field (checked by tests)


HIDDEN_KEYS: tuple[HiddenKey, ...] = (
    HiddenKey(r"T-listeners-S-listeners-(tcp|ssl|ws|wss|quic)-S-mqtt_\w+_listener", "enable", "Boolean",
              "emqx_schema.erl base_listener/1: enable (default true, importance NO_DOC)",
              ("listeners.tcp_required_bind", "listeners.ssl_required_bind", "listeners.ws_required_bind",
               "listeners.wss_required_bind")),
    HiddenKey(r"T-authentication-S-\w+", "enable", "Boolean",
              "emqx_authn_schema.erl common_fields/0: enable (default true)", ("authn.builtin_db",)),
    HiddenKey(r"T-authorization-S-authorization-sources-S-\w+", "enable", "Boolean",
              "emqx_authz_schema.erl authz_common_fields/1: enable (default true, importance NO_DOC)",
              ("authz.api_file",)),
    HiddenKey(r"T-authorization-S-authorization-cache-S-authz_cache", "enable", "Boolean",
              "emqx_schema.erl fields(\"authz_cache\"): enable (default true, importance NO_DOC)",
              ("emqx.authz_cache",)),
    HiddenKey(r"T-connectors-S-connectors-\w+-S-\w+", "enable", "Boolean",
              "emqx_connector_schema.erl common_fields/0: enable (default true, importance NO_DOC)",
              ("bridge_http.post_connector",)),
    HiddenKey(r"T-actions-S-actions-\w+-S-\w+", "enable", "Boolean",
              "emqx_bridge_v2_schema.erl common_fields/0: enable (default true, importance NO_DOC)",
              ("bridge_http.post_bridge_v2",)),
    HiddenKey(r"T-dashboard-S-dashboard", "default_username", "String",
              "emqx_dashboard_schema.erl default_username(importance) -> ?IMPORTANCE_HIDDEN (hidden so that "
              "the admin password, not a new user, is what people change)"),
)

# Fields the dump prints as String whose typerefl converter also takes a number.
NUMBERS_AS_STRINGS: dict[str, str] = {
    r"V-dashboard-S-dashboard-listeners-S-listeners-https?-S-https?-bind":
        "emqx_schema:ip_port() takes a bare port; the stock etc/emqx.conf writes dashboard.listeners.http.bind = 18083",
    r"V-listeners-S-listeners-\w+-S-mqtt_\w+_listener-bind":
        "emqx_schema:ip_port() takes a bare port (listeners.tcp.default.bind = 1883)",
}


class EmqxSchema:
    """The whole configuration schema: the dump's roots plus extra (hidden) roots."""

    def __init__(self, dump: Mapping[str, Any], *, extra_roots: Mapping[str, Field] | None = None,
                 hidden: tuple[HiddenKey, ...] = HIDDEN_KEYS) -> None:
        self.root = Struct("root", "T-root")
        for node in dump["fields"]:
            self.root.fields[node["text"]] = _field(node)
        for name, extra in (extra_roots or {}).items():
            self.root.fields[name] = extra
        self.hidden = hidden
        self._hidden_types = {key: parse_type(key.type) for key in hidden}

    @classmethod
    def load(cls, path: Path, *, extra_roots: Mapping[str, Field] | None = None) -> EmqxSchema:
        return cls(json.loads(path.read_text()), extra_roots=extra_roots)

    def hidden_field(self, struct: Struct, key: str) -> Field | None:
        for hidden in self.hidden:
            if hidden.name == key and re.fullmatch(hidden.struct, struct.ident):
                return Field(key, self._hidden_types[hidden], source=hidden.source)
        return None

    def walk(self) -> Walk:
        return Walk(hidden=self.hidden_field)

    def check(self, config: Mapping[str, Any]) -> list[Problem]:
        """Every key of ``config`` (a parsed emqx.conf) exists at its path with a value of its type."""
        return self.root.check(_plain(config), "", self.walk())

    def field_at(self, path: list[str]) -> Field | None:
        """The field at a path of names: map levels take any name, array levels an index,
        union levels any member's field. None when there is no such setting."""
        return _field_at(self.root, path, self)

    def structs(self) -> list[Struct]:
        """Every struct of the tree (for tests over the hidden keys)."""
        out: list[Struct] = []
        seen: set[int] = set()

        def visit(t: Type) -> None:
            if isinstance(t, Struct):
                if id(t) in seen:
                    return
                seen.add(id(t))
                out.append(t)
                for f in t.fields.values():
                    visit(f.type)
            for inner in (getattr(t, "item", None), getattr(t, "value", None)):
                if isinstance(inner, Type):
                    visit(inner)
            for member in getattr(t, "members", ()):
                visit(member)

        visit(self.root)
        return out


def _field_at(node: Type, path: list[str], schema: EmqxSchema) -> Field | None:
    if not path:
        return None
    head, rest = path[0], path[1:]
    if isinstance(node, ArrayOf):
        return _field_at(node.item, rest, schema) if head.isdigit() else None
    if isinstance(node, Union | Selector):
        for member in node.members:
            found = _field_at(member, path, schema)
            if found is not None:
                return found
        return None
    if isinstance(node, MapOf):
        if node.value is None:
            return None if rest else Field(head, AnyValue())
        return _field_at(node.value, rest, schema) if rest else Field(head, node.value)
    if isinstance(node, Struct):
        field = node.field(head) or schema.hidden_field(node, head)
        if field is None:
            return None
        return field if not rest else _field_at(field.type, rest, schema)
    return None


def _struct(node: Mapping[str, Any]) -> Struct:
    struct = Struct(node.get("text", "?"), node["hash"])
    for child in node["fields"]:
        struct.fields[child["text"]] = _field(child)
    return struct


def _field(node: Mapping[str, Any]) -> Field:
    refs = {ref.get("text", ""): ref for ref in node.get("refs", [])}

    def resolve(name: str) -> Struct:
        if name not in refs:
            raise ValueError(f"{node['hash']}: Struct({name}) has no definition in the dump")
        return _struct(refs[name])

    field_type = TypeParser(node["type"], resolve).parse()
    for pattern, why in NUMBERS_AS_STRINGS.items():
        if isinstance(field_type, String) and re.fullmatch(pattern, node["hash"]):
            field_type = String(field_type.kind, numbers_too=why)
    return Field(node["text"], field_type, tuple(node.get("aliases", ())))


def read_hocon(text: str) -> dict[str, Any]:
    """Parse HOCON as EMQX's hocon reads it, into plain dicts and lists.

    pyhocon turns ``1m`` or ``10 minutes`` into timedelta objects (a Typesafe-config
    extension emqx/hocon does not have: there ``1m`` stays the text ``1m`` and its schema
    type decides); the period grammar is switched off for the parse so values keep their text.
    """
    import pyparsing
    from pyhocon import ConfigFactory, config_parser

    original = config_parser.get_period_expr
    config_parser.get_period_expr = pyparsing.NoMatch
    try:
        tree = ConfigFactory.parse_string(text)
    finally:
        config_parser.get_period_expr = original
    plain: dict[str, Any] = _plain(tree)
    return plain


def _plain(value: Any) -> Any:
    """pyhocon's ConfigTree/ConfigList as plain dicts and lists (keys keep their order)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
