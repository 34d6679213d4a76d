"""Jinja rendering of service configuration files.

Templates live in ``templates/<service>/`` and are rendered with StrictUndefined, so a
missing value is an error, never an empty string. Output is deterministic: the same
inputs give the same bytes (no timestamps, sorted collections, seeded salts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from ecokit.errors import RenderError
from ecokit.paths import Target
from ecokit.resources import templates_dir


def _hocon_str(value: object) -> str:
    """A HOCON quoted string (JSON string syntax is valid HOCON)."""
    return json.dumps(str(value))


def _erl_str(value: object) -> str:
    """An Erlang string literal for acl.conf."""
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _yaml_str(value: object) -> str:
    return json.dumps(str(value))


def _toml_str(value: object) -> str:
    return json.dumps(str(value))


def _mosquitto_value(value: object) -> str:
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"a mosquitto.conf value cannot contain a line break: {text!r}")
    return text


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        # Erlang terms and HOCON use `{#`; keep Jinja comments out of their way.
        comment_start_string="{##",
        comment_end_string="##}",
    )
    env.filters.update(hocon=_hocon_str, erl=_erl_str, yamlstr=_yaml_str, toml=_toml_str,
                       mosq=_mosquitto_value, tojson_sorted=lambda v: json.dumps(v, sort_keys=True))
    return env


def render_template(name: str, **context: Any) -> bytes:
    try:
        text = environment().get_template(name).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise RenderError(f"template {name} not found in {templates_dir()}") from exc
    except jinja2.UndefinedError as exc:
        raise RenderError(f"template {name}: {exc}") from exc
    except (jinja2.TemplateError, ValueError) as exc:
        raise RenderError(f"template {name}: {exc}") from exc
    return text.encode("utf-8")


@dataclass(frozen=True)
class PathMap:
    """Where files are, as seen by a service: host paths (local) or container paths (docker)."""

    target: Target
    stack_dir: Path  # host: .ecokit/<stack>
    certs_dir: Path  # host: the project's certs folder
    container_roots: tuple[tuple[str, str], ...] = ()  # (service, config folder in container)

    CONTAINER_CERTS = "/ecokit/certs"

    def config_dir(self, service: str) -> str:
        if self.target == "local":
            return str(self.stack_dir / "config" / service)
        roots = dict(self.container_roots)
        return roots.get(service, f"/ecokit/config/{service}")

    def file(self, service: str, relpath: str) -> str:
        if self.target == "local":
            return str(self.stack_dir / "config" / service / relpath)
        return str(PurePosixPath(self.config_dir(service)) / relpath)

    def cert(self, relpath: str) -> str:
        if self.target == "local":
            return str(self.certs_dir / relpath)
        return str(PurePosixPath(self.CONTAINER_CERTS) / relpath)

    def volume(self, service: str, name: str, container_path: str) -> str:
        if self.target == "local":
            return str(self.stack_dir / "data" / service / name)
        return container_path
