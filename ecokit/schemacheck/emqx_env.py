"""``EMQX_*`` environment variables, mapped to configuration paths as EMQX maps them.

``bin/emqx`` exports ``HOCON_ENV_OVERRIDE_PREFIX='EMQX_'``; emqx/hocon then reads every
variable with that prefix as an override (``hocon_schema.erl`` ``env_name_to_path/2``):
strip the prefix, lowercase, split at ``__``, drop empty parts, so
``EMQX_NODE__NAME`` is ``node.name`` and ``EMQX_LISTENERS__TCP__DEFAULT__BIND`` is
``listeners.tcp.default.bind``. The value is read as HOCON (``read_hocon_val/2``: the
whole text, else ``fake_key=<text>``, else the raw string). A variable whose path is no
setting is only logged (``unknown_env_vars``) and does nothing, which is the mistake
this catches.

Variables without ``__`` that the image's own scripts read (``EMQX_NODE_NAME``,
``EMQX_HOST``, ...) are not settings: they are accepted when the entrypoint or
``bin/emqx`` names them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ecokit.schemacheck import Problem
from ecokit.schemacheck.emqx_schema import EmqxSchema, read_hocon

PREFIX_RE = re.compile(r"""export HOCON_ENV_OVERRIDE_PREFIX=['"]?(\w+)['"]?""")
SCRIPT_VAR_RE = re.compile(r"\b(EMQX_[A-Z0-9_]+)")


def override_prefix(bin_emqx: str) -> str:
    """The prefix ``bin/emqx`` gives hocon (``EMQX_``)."""
    match = PREFIX_RE.search(bin_emqx)
    if match is None:
        raise ValueError("bin/emqx does not export HOCON_ENV_OVERRIDE_PREFIX")
    return match.group(1)


def script_variables(*scripts: str) -> set[str]:
    """``EMQX_*`` names the image's scripts read themselves."""
    names: set[str] = set()
    for script in scripts:
        names |= {n for n in SCRIPT_VAR_RE.findall(script) if not n.endswith("_")}
    return names


def env_path(name: str, prefix: str) -> list[str] | None:
    """hocon's env_name_to_path/2."""
    if not name.startswith(prefix):
        return None
    parts = [p for p in name[len(prefix):].lower().split("__") if p]
    return parts or None


def env_value(text: str) -> Any:
    """hocon's read_hocon_val/2: HOCON if it parses (whole, then as a value), else the text."""
    if text == "":
        return ""
    try:
        whole = read_hocon(text)
        if whole:
            return whole
    except Exception:
        pass
    try:
        return read_hocon(f"fake_key = {text}").get("fake_key", text)
    except Exception:
        return text


def check_env(env: Mapping[str, str], schema: EmqxSchema, *, prefix: str = "EMQX_",
              script_vars: Iterable[str] = ()) -> list[Problem]:
    """Every ``EMQX_*`` variable is a real setting with a value of its type, or one the
    image's scripts read themselves."""
    known_script = set(script_vars)
    problems: list[Problem] = []
    for name, text in sorted(env.items()):
        path = env_path(name, prefix)
        if path is None:
            continue
        dotted = ".".join(path)
        field = schema.field_at(path)
        if field is None:
            if name in known_script:
                continue
            problems.append(Problem(name, f"maps to {dotted}, which is no EMQX setting "
                                          "(hocon would log unknown_env_vars and ignore it)"))
            continue
        problems += [Problem(name, f"{dotted}: {p.message}") for p in field.type.check(env_value(text), dotted,
                                                                                      schema.walk())]
    return problems
