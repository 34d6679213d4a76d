"""Load ecokit.yaml + profile + environment + flags into one validated StackConfig.

Resolution order, lowest first: model defaults < ecokit.yaml < profile overlay <
``ECOKIT_*`` environment < command-line flags. Each value remembers where it came
from, so a validation error names the file (or variable, or flag) and the key at fault.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ecokit.config.base import KeyedValueError
from ecokit.config.model import StackConfig
from ecokit.errors import ConfigError
from ecokit.resources import profiles_dir

CONFIG_FILENAME = "ecokit.yaml"
ENV_PREFIX = "ECOKIT_"
# Top-level scalars that may be set with a single-word variable (ECOKIT_RUNTIME=local);
# deeper keys use a double underscore per level (ECOKIT_BROKER__PORTS__MQTT=1884).
ENV_TOP_LEVEL = ("runtime", "stack", "bind")

KeyPath = tuple[str | int, ...]


# libyaml's parser when PyYAML has it: the pure-Python one takes seconds for a registry of
# 10,000 devices (benchmarks/endpoints.py). Same documents, same errors with line and column.
try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class _StrictLoader(_SafeLoader):
    """A safe loader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode,
                       deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark,
            )
        seen[key] = key_node
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str) -> Any:
    """A YAML document with the safe loader (libyaml's when PyYAML has it); yaml.YAMLError when invalid."""
    return yaml.load(text, Loader=_SafeLoader)


def read_yaml(path: Path, *, label: str | None = None) -> Any:
    """Parse one YAML file strictly; errors name the file, line and column."""
    label = label or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("file not found", source=label) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=label) from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", source=where) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=label) from exc


@dataclass
class _Layered:
    """Merged configuration data plus the source of every key that was set."""

    data: dict[str, Any] = field(default_factory=dict)
    sources: dict[KeyPath, str] = field(default_factory=dict)

    def merge(self, overlay: Mapping[str, Any], source: str, prefix: KeyPath = ()) -> None:
        target = self.data
        for part in prefix:
            target = target.setdefault(str(part), {})
        self._merge_into(target, overlay, source, prefix)

    def _merge_into(self, target: dict[str, Any], overlay: Mapping[str, Any], source: str,
                    prefix: KeyPath) -> None:
        for key, value in overlay.items():
            path = (*prefix, key)
            if isinstance(value, Mapping) and isinstance(target.get(key), dict):
                self.sources.setdefault(path, source)
                self._merge_into(target[key], value, source, path)
            else:
                target[key] = _plain(value)
                self.sources[path] = source
                # A replaced subtree now comes entirely from this source.
                for known in [p for p in self.sources if p[: len(path)] == path and p != path]:
                    self.sources[known] = source

    def is_set(self, loc: KeyPath) -> bool:
        """Whether ``loc`` (or a section holding it) was set by some source."""
        return any(loc[:end] in self.sources for end in range(len(loc), 0, -1))

    def source_of(self, loc: KeyPath, default: str) -> str:
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.sources:
                return self.sources[loc[:end]]
        return default


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration and where it came from."""

    config: StackConfig
    project_dir: Path
    config_file: Path | None
    profile: str | None
    # Where each key that was set came from (dotted key → "ecokit.yaml", "environment
    # ECOKIT_…", "profile tls", "flag --…"); keys absent here are defaults.
    sources: Mapping[str, str] = field(default_factory=dict)

    def source_of(self, dotted: str) -> str:
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            found = self.sources.get(".".join(parts[:end]))
            if found is not None:
                return found
        return "default"

    def path(self, relative: str) -> Path:
        """Resolve a path from the configuration against the project folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.project_dir / p


def find_config_file(start: Path) -> Path | None:
    """The nearest ecokit.yaml in ``start`` or one of its parents."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    return None


def builtin_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(profiles_dir().glob("*.yaml"))}


def env_overrides(env: Mapping[str, str]) -> list[tuple[str, KeyPath, Any]]:
    """``ECOKIT_*`` variables that set configuration keys, as (variable, key path, value)."""
    found = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if "__" in rest:
            path: KeyPath = tuple(part for part in rest.split("__"))
            if any(not part for part in path):
                raise ConfigError("empty key segment", source=f"environment {name}")
        elif rest in ENV_TOP_LEVEL:
            path = (rest,)
        else:
            continue  # ECOKIT_PROFILE, ECOKIT_CONFIG and friends belong to the CLI
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        found.append((name, path, value))
    return found


def _nest(path: KeyPath, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out  # type: ignore[no-any-return]


def load_config(
    config_file: Path | None = None,
    *,
    project_dir: Path | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Load and validate the stack configuration.

    ``config_file`` may be None when there is no ecokit.yaml (then defaults apply and the
    project folder is ``project_dir`` or the current folder). ``overrides`` are flag
    values keyed by dotted path (``{"runtime": "local"}``).
    """
    layered = _Layered()
    file_label = CONFIG_FILENAME
    if config_file is not None:
        config_file = config_file.resolve()
        file_label = str(config_file.name if config_file.parent == Path.cwd() else config_file)
        data = read_yaml(config_file, label=file_label)
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"the top level must be a mapping of sections, not {type(data).__name__}",
                              source=file_label)
        layered.merge(data, file_label)
        project = config_file.parent
    else:
        project = (project_dir or Path.cwd()).resolve()

    if profile:
        overlay, overlay_label = _profile_overlay(profile, layered.data.get("profiles"), project)
        if overlay:
            layered.merge(overlay, overlay_label)

    for name, path, value in env_overrides(env or {}):
        layered.merge(_nest(path, value), f"environment {name}")

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        layered.merge(_nest(tuple(dotted.split(".")), value), f"flag --{dotted.split('.')[-1].replace('_', '-')}")

    try:
        config = StackConfig.model_validate(layered.data)
    except ValidationError as exc:
        raise _config_error(exc, layered, file_label) from None
    return LoadedConfig(config=config, project_dir=project, config_file=config_file, profile=profile,
                        sources={".".join(str(p) for p in k): v for k, v in layered.sources.items()})


def _profile_overlay(name: str, user_profiles: Any, project: Path) -> tuple[dict[str, Any], str]:
    if isinstance(user_profiles, Mapping) and name in user_profiles:
        overlay = user_profiles[name]
        label = f"{CONFIG_FILENAME} (profiles.{name})"
    elif (project / "profiles" / f"{name}.yaml").is_file():
        path = project / "profiles" / f"{name}.yaml"
        overlay, label = read_yaml(path, label=f"profiles/{name}.yaml"), f"profiles/{name}.yaml"
    elif name in builtin_profiles():
        overlay = read_yaml(builtin_profiles()[name], label=f"profile {name}")
        label = f"profile {name}"
    else:
        project_profiles = [p.stem for p in (project / "profiles").glob("*.yaml")]
        in_file = user_profiles if isinstance(user_profiles, Mapping) else {}
        known = sorted({*builtin_profiles(), *in_file, *project_profiles})
        raise ConfigError(f"unknown profile {name!r}", source="flag --profile",
                          hint=f"known profiles: {', '.join(known)}")
    overlay = overlay or {}
    if not isinstance(overlay, Mapping):
        raise ConfigError("a profile must be a mapping of sections", source=label)
    if "profiles" in overlay:
        raise ConfigError("a profile cannot define profiles", source=label, key="profiles")
    return dict(overlay), label


def _allowed_keys(loc: KeyPath) -> list[str]:
    model: type[BaseModel] | None = StackConfig
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return list(model.model_fields) if model else []


def _describe(error: Any, loc: KeyPath) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        msg = "unknown key"
        if guess:
            msg += f"; did you mean {guess[0]!r}?"
        elif allowed:
            msg += f"; expected one of: {', '.join(allowed)}"
        return msg
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    # Only a scalar is worth repeating; a section's whole content is noise.
    if "input" in error and kind not in ("model_type", "dict_type") and \
            not isinstance(error["input"], Mapping | list | tuple):
        message += f" (got {error['input']!r})"
    return message


def _error_loc(error: Any, layered: _Layered) -> KeyPath:
    """Where an error belongs: a section-level check names its keys (KeyedValueError)."""
    loc: KeyPath = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, KeyedValueError) and cause.keys:
        candidates = [(*loc, *key.split(".")) for key in cause.keys]
        # Prefer a key somebody set (the last one named, usually the newer edit) over a default.
        return next((c for c in reversed(candidates) if layered.is_set(c)), candidates[-1])
    return loc


def _config_error(exc: ValidationError, layered: _Layered, default_source: str) -> ConfigError:
    lines = []
    first_source = first_key = None
    for error in exc.errors():
        loc = _error_loc(error, layered)
        key = ".".join(str(p) for p in loc) or "(top level)"
        source = layered.source_of(loc, default_source)
        lines.append(f"{source}: {key}: {_describe(error, loc)}")
        if first_source is None:
            first_source, first_key = source, key
    err = ConfigError("; ".join(lines))
    err.source, err.key = first_source, first_key
    return err
