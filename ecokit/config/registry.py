"""The device registry (config/devices.yaml) and extra MQTT users (config/users.yaml).

Both files are written by people; ecokit only appends to them, line by line, so their
comments and layout survive `ecokit devices add`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ecokit.config.loader import parse_yaml, read_yaml
from ecokit.errors import ConfigError

# A device id is also its MQTT username and a topic level, so it may not hold
# wildcards, separators or anything an ACL pattern would interpret. `\Z`, not `$`: `$`
# also matches before a final newline, and "evil\n" would reach the password file.
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")
# Names ecokit keeps for its own service users and topics, in any letter case: file
# systems, DNS names and people do not tell `ECOKIT-admin` from `ecokit-admin`.
RESERVED_PREFIX = "ecokit-"
RESERVED_NAMES = ("broadcast",)


def is_reserved(name: str) -> bool:
    folded = name.casefold()
    return folded.startswith(RESERVED_PREFIX) or folded in RESERVED_NAMES


def _check_filter(value: str) -> str:
    if not value or len(value) > 1024:
        raise ValueError("a topic filter must have 1-1024 characters")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"{value!r}: '#' must be a whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"{value!r}: '+' must be a whole level")
    if any(ch in value for ch in "\0"):
        raise ValueError(f"{value!r} contains a NUL character")
    return value


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    password: str | None = Field(None, min_length=8, description="generated when absent")
    cert: str | None = Field(None, description="client certificate path; default certs/devices/<id>.pem")
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not DEVICE_ID.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a device id (letters, digits, '_', '.', '-'; at most 64; "
                "no '/', '+', '#')"
            )
        if is_reserved(value):
            raise ValueError(f"{value!r} is reserved by ecokit (names starting with {RESERVED_PREFIX!r} "
                             f"or equal to {', '.join(RESERVED_NAMES)}, in any letter case)")
        return value


class User(BaseModel):
    """An extra MQTT user (an app, a person) with explicit topic rights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    password: str | None = Field(None, min_length=8, description="generated when absent")
    superuser: bool = False
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not USERNAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a username (letters, digits, '_', '.', '@', '-')")
        if is_reserved(value):
            raise ValueError(f"{value!r}: names starting with {RESERVED_PREFIX!r} (in any letter case) "
                             f"and {', '.join(RESERVED_NAMES)} are ecokit's own")
        return value

    @field_validator("publish", "subscribe")
    @classmethod
    def _filters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_filter(v) for v in value)


def _entries(path: Path, label: str, section: str) -> list[Any]:
    if not path.exists():
        return []
    data = read_yaml(path, label=label)
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) - {section}:
        raise ConfigError(f"expected a mapping with one key {section!r}", source=label)
    entries = data.get(section) or []
    if not isinstance(entries, list):
        raise ConfigError("expected a list", source=label, key=section)
    return entries


def _validate_list(model: type[BaseModel], entries: Iterable[Any], label: str, section: str,
                   key_field: str) -> list[Any]:
    out: list[Any] = []
    # Case-folded: ids that differ only in case would share certificate files on a
    # case-insensitive file system (macOS), and confuse everyone reading a dashboard.
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, str) and key_field == "id":
            entry = {"id": entry}  # `- vehicle-0001` is shorthand for `- id: vehicle-0001`
        try:
            item = model.model_validate(entry)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in (f"{section}[{i}]", *err["loc"]))
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key; expected one of: {', '.join(model.model_fields)}"
            raise ConfigError(msg, source=label, key=key) from None
        name = getattr(item, key_field)
        folded = name.casefold()
        if folded in seen:
            first = seen[folded]
            case_note = ("" if getattr(out[first], key_field) == name
                         else "; names are compared ignoring letter case")
            raise ConfigError(f"duplicate {key_field} {name!r} (first at {section}[{first}]{case_note})",
                              source=label, key=f"{section}[{i}].{key_field}")
        seen[folded] = i
        out.append(item)
    return out


def load_devices(path: Path, label: str | None = None) -> list[Device]:
    label = label or str(path)
    return _validate_list(Device, _entries(path, label, "devices"), label, "devices", "id")


def load_users(path: Path, label: str | None = None) -> list[User]:
    label = label or str(path)
    return _validate_list(User, _entries(path, label, "users"), label, "users", "username")


def _yaml_scalar(value: str) -> str:
    """``value`` as written in YAML: plain, or quoted when YAML would read it as something
    else (``0001``, ``1.5``, ``true``, ``null`` are ids too)."""
    try:
        plain_ok = parse_yaml(value) == value
    except yaml.YAMLError:
        plain_ok = False
    return value if plain_ok else json.dumps(value)


def append_devices(path: Path, ids: Iterable[str], *, registered: Iterable[Device] | None = None) -> list[str]:
    """Append devices to the registry without rewriting what is already there.

    Returns the ids actually added (ids already present are skipped). ``registered``: the devices
    the file holds, when the caller has just loaded them (the file is then not parsed again: with
    100,000 devices a parse takes seconds).
    """
    existing = {d.id.casefold(): d.id for d in (load_devices(path) if registered is None else registered)}
    new: list[str] = []
    for device_id in ids:
        try:
            Device(id=device_id)  # validates the id before anything is written
        except ValidationError as exc:
            msg = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"cannot add device: {msg}", source=str(path)) from None
        known = existing.get(device_id.casefold()) or next(
            (n for n in new if n.casefold() == device_id.casefold()), None)
        if known is None:
            new.append(device_id)
        elif known != device_id:
            raise ConfigError(f"cannot add device {device_id!r}: {known!r} is registered and names are "
                              "compared ignoring letter case", source=str(path))
    if not new:
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    # `devices: []` (what `ecokit init --devices 0` writes) becomes a block list; a comment
    # on that line stays.
    empty_inline = re.search(r"^devices:([ \t]*)\[\]([ \t]*(#.*)?)$", text, re.MULTILINE)
    if empty_inline:
        text = (text[: empty_inline.start()] + "devices:" + empty_inline.group(1) + empty_inline.group(2)
                + text[empty_inline.end():])
    if text and not text.endswith("\n"):
        text += "\n"
    section = re.search(r"^devices:[ \t]*(#.*)?$", text, re.MULTILINE)
    if section is None:
        if parse_yaml(text) is not None:
            raise ConfigError("cannot append: no top-level 'devices:' list", source=str(path))
        text += "devices:\n"  # a new file, or one with comments only: keep them
        section = re.search(r"^devices:$", text, re.MULTILINE)
        assert section is not None
    after = text[section.end():]
    item = re.search(r"^( *)- ", after, re.MULTILINE)
    indent = item.group(1) if item else "  "
    lines = "".join(f"{indent}- id: {_yaml_scalar(device_id)}\n" for device_id in new)
    # Appended lines extend the list when nothing but the list (indented lines, comments, and at
    # indent 0 its own items) follows `devices:`; the new lines themselves must read as the ids.
    # (Checked on the tail and the new lines: parsing 100,000 devices again would take seconds.)
    other = r"(?![ \t\r]|#|$" + (r"|-(?:[ \t]|$)" if indent == "" else "") + ")"
    ok = re.search("^" + other, after, re.MULTILINE) is None
    if ok:
        try:
            parsed = parse_yaml("devices:\n" + lines)
            ok = isinstance(parsed, dict) and [d["id"] for d in parsed["devices"]] == new
        except (yaml.YAMLError, KeyError, TypeError):
            ok = False
    text += lines
    if not ok:
        raise ConfigError("cannot append devices without rewriting the file; add them by hand",
                          source=str(path))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return new
