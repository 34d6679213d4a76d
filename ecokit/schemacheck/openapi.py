"""Validation against OpenAPI 3.0 documents with the ``jsonschema`` library.

An OpenAPI 3.0 schema object is JSON Schema draft 4 plus a few keywords (``nullable``,
``readOnly``, ``deprecated``, ...) that validation ignores; ``$ref`` siblings are ignored
as in draft 4. :class:`OpenApi` validates

- a value against a component (``#/components/schemas/NAME``) or any schema of the
  document, reporting every error with its path;
- an HTTP request (method, path, query, headers, body) against an operation: required
  parameters, parameter schemas, the security requirements and the request body.

Servers differ from some generated documents in known ways. A :class:`Reading` names the
changes made to the document before validating, each with its reason, so a test that
reads a document less or more strictly than it is written says so:

- ``closed``: objects with ``properties`` refuse other keys (EMQX's hocon refuses unknown
  struct fields: ``unknown_fields``; EMQX's generated document does not say so);
- ``any_of``: ``oneOf`` read as ``anyOf`` (hocon tries union members in turn and takes
  the first that fits; ``oneOf`` refuses a value two members accept, such as
  ``"infinity"`` for ``OneOf(String("infinity"), String)``);
- ``enum_types``: an ``enum`` holding non-strings under ``type: string`` checks the enum
  only (EMQX's generator prints ``enable_authn`` as ``type: string`` with members
  ``true, false, quick_deny_anonymous``, and EMQX takes the booleans).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from ecokit.schemacheck import Problem

URI = "urn:ecokit:openapi"


@dataclass(frozen=True)
class Reading:
    """How a document is read; the reasons go into test output."""

    closed: bool = False
    any_of: bool = False
    enum_types: bool = False

    def changes(self) -> list[str]:
        out = []
        if self.closed:
            out.append("objects refuse keys they do not list (the server refuses unknown fields)")
        if self.any_of:
            out.append("oneOf read as anyOf (the server takes the first union member that fits)")
        if self.enum_types:
            out.append("an enum with non-string members is not also held to type: string")
        return out


@dataclass
class _Counts:
    closed: int = 0
    any_of: int = 0
    enum_types: int = 0


def _rewrite(node: Any, reading: Reading, counts: _Counts) -> Any:
    if isinstance(node, list):
        return [_rewrite(v, reading, counts) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k == "enum" else _rewrite(v, reading, counts)) for k, v in node.items()}
    if "properties" in out and isinstance(out["properties"], dict):
        # property names are not keywords: rewrite their schemas, not the mapping itself
        out["properties"] = {k: _rewrite(v, reading, counts) for k, v in node["properties"].items()}
        if reading.closed and "additionalProperties" not in out:
            out["additionalProperties"] = False
            counts.closed += 1
    if reading.any_of and "oneOf" in out:
        out["anyOf"] = out.pop("oneOf")
        counts.any_of += 1
    if (reading.enum_types and out.get("type") == "string" and isinstance(out.get("enum"), list)
            and any(not isinstance(e, str) for e in out["enum"])):
        del out["type"]
        counts.enum_types += 1
    return out


@dataclass
class OpenApi:
    """One OpenAPI 3.0 document, ready to validate against."""

    doc: dict[str, Any]
    reading: Reading = Reading()
    counts: _Counts = field(default_factory=_Counts)

    def __post_init__(self) -> None:
        self.doc = _rewrite(copy.deepcopy(self.doc), self.reading, self.counts)
        resource = Resource.from_contents(self.doc, default_specification=DRAFT4)
        self.registry: Registry[Any] = Registry().with_resource(URI, resource)

    @classmethod
    def load(cls, path: Path, reading: Reading = Reading()) -> OpenApi:
        text = path.read_text()
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return cls(doc, reading)

    def has_component(self, name: str) -> bool:
        return name in self.doc.get("components", {}).get("schemas", {})

    def component(self, name: str) -> dict[str, Any]:
        schema: dict[str, Any] = self.doc["components"]["schemas"][name]
        return schema

    def validate(self, value: Any, schema: str | Mapping[str, Any], where: str = "") -> list[Problem]:
        """Problems of ``value`` against a component name or a schema of this document."""
        schema = {"$ref": f"{URI}#/components/schemas/{schema}"} if isinstance(schema, str) else _absolute_refs(schema)
        validator = jsonschema.Draft4Validator(schema, registry=self.registry)
        return [_problem(error, where) for error in sorted(validator.iter_errors(value), key=_error_key)]

    # operations
    def operation(self, method: str, path: str) -> tuple[dict[str, Any], str]:
        """The operation object and its path template for a request path (base path stripped)."""
        for template, item in self.doc.get("paths", {}).items():
            op = item.get(method.lower())
            if op is None:
                continue
            for base in self._bases(op):
                if self._path_values(base, template, path) is not None:
                    return op, template
        raise KeyError(f"{method.upper()} {path} is not an operation of {self.doc.get('info', {}).get('title')}")

    @staticmethod
    def _path_values(base: str, template: str, path: str) -> dict[str, str] | None:
        """The path parameters of ``path`` under ``base`` + ``template`` (``/tasks/{taskID}``),
        or None when it does not match."""
        full = template if base == "/" else base.rstrip("/") + template
        pattern = re.sub(r"\\\{([A-Za-z_][A-Za-z0-9_]*)\\\}", r"(?P<\1>[^/]+)", re.escape(full))
        match = re.fullmatch(pattern, path)
        return None if match is None else match.groupdict()

    def _bases(self, op: Mapping[str, Any]) -> list[str]:
        servers = op.get("servers") or self.doc.get("servers") or [{"url": "/"}]
        return [s["url"] or "/" for s in servers]

    def _resolve(self, node: Mapping[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            resolved = self.registry.resolver(URI).lookup(f"{URI}{node['$ref']}").contents
            node = resolved
        return dict(node)

    def check_request(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None, media_type: str | None = None,
                      body: Any = None, exceptions: Mapping[str, str] | None = None,
                      unauthenticated: str = "") -> list[Problem]:
        """A request against its operation.

        ``exceptions`` maps ``"query NAME"``/``"header NAME"`` to why the server takes a
        parameter the document does not list, or a value it does not allow (so a test says
        where the document is stricter than the server). ``unauthenticated``: why the server
        takes this request without the credentials the document asks for.
        """
        exceptions = {k.lower(): v for k, v in (exceptions or {}).items()}
        query = dict(query or {})
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        op, template = self.operation(method, path)
        in_path = next((v for base in self._bases(op) if (v := self._path_values(base, template, path)) is not None),
                       {})
        where = f"{method.upper()} {template}"
        problems: list[Problem] = []
        declared: set[tuple[str, str]] = set()
        for raw in op.get("parameters", []):
            param = self._resolve(raw)
            place, name = param["in"], param["name"]
            declared.add((place, name.lower() if place == "header" else name))
            source = query if place == "query" else headers if place == "header" else in_path if place == "path" else {}
            key = name.lower() if place == "header" else name
            if key not in source:
                if param.get("required"):
                    problems.append(Problem(f"{where} {place} {name}", "required parameter is missing"))
                continue
            if f"{place} {name}".lower() in exceptions:
                continue
            schema = param.get("schema", {})
            problems += self.validate(_typed(source[key], self._resolve(schema)), schema,
                                      f"{where} {place} {name}")
        for name in query:
            if ("query", name) not in declared and f"query {name}".lower() not in exceptions:
                problems.append(Problem(f"{where} query {name}", "the operation has no such parameter"))
        if not unauthenticated:
            problems += self._security(op, where, query, headers)
        problems += self._body(op, where, media_type, body)
        return problems

    def _security(self, op: Mapping[str, Any], where: str, query: Mapping[str, str],
                  headers: Mapping[str, str]) -> list[Problem]:
        requirements = op.get("security", self.doc.get("security"))
        if not requirements:
            return []
        schemes = self.doc.get("components", {}).get("securitySchemes", {})
        for requirement in requirements:
            if all(_satisfies(schemes.get(name, {}), query, headers) for name in requirement):
                return []
        names = " | ".join("+".join(r) or "none" for r in requirements)
        return [Problem(where, f"no security requirement is met (one of: {names})")]

    def _body(self, op: Mapping[str, Any], where: str, media_type: str | None, body: Any) -> list[Problem]:
        spec = op.get("requestBody")
        if spec is None:
            return [Problem(where, "the operation takes no body")] if media_type else []
        spec = self._resolve(spec)
        if media_type is None:
            return [Problem(where, "the request body is required")] if spec.get("required") else []
        content = spec.get("content", {})
        base = media_type.split(";")[0].strip()
        if base not in content:
            return [Problem(where, f"body media type {base} is not one of {', '.join(content)}")]
        schema = content[base].get("schema")
        return self.validate(body, schema, f"{where} body") if schema else []


def _satisfies(scheme: Mapping[str, Any], query: Mapping[str, str], headers: Mapping[str, str]) -> bool:
    kind = scheme.get("type")
    if kind == "http" and scheme.get("scheme") == "basic":
        return headers.get("authorization", "").startswith("Basic ")
    if kind == "apiKey" and scheme.get("in") == "header":
        return str(scheme.get("name", "")).lower() in headers
    if kind == "apiKey" and scheme.get("in") == "query":
        # InfluxDB's v1 document names the pair "u=&p=": both parameters
        names = [part.split("=")[0] for part in str(scheme.get("name", "")).split("&")]
        return all(n in query for n in names if n)
    return False


def _typed(text: str, schema: Mapping[str, Any]) -> Any:
    """A query/header string as the type its schema declares (OpenAPI's simple style)."""
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        return text
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    return text


def _absolute_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (f"{URI}{v}" if k == "$ref" and isinstance(v, str) and v.startswith("#") else _absolute_refs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute_refs(v) for v in node]
    return node


def _error_key(error: ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path)


def deepest(error: ValidationError) -> ValidationError:
    """Of a failed anyOf/oneOf, the branch error deepest in the value: the member the value
    meant to be (a panel, not a row) fails further down than the others."""
    while error.context:
        ranked = sorted(error.context, key=lambda e: len(e.absolute_path), reverse=True)
        if len(ranked[0].absolute_path) <= len(error.absolute_path):
            return best_match(error.context) or error
        error = ranked[0]
    return error


def _problem(error: ValidationError, where: str) -> Problem:
    detail = deepest(error)
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in detail.absolute_path)
    return Problem(f"{where}{path}".lstrip(".") or "(value)", detail.message)
