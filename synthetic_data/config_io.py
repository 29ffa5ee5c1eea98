"""Typed, frozen dataclass configs from TOML and `--set section.field=value` overrides.

Every package's config uses these helpers so that unknown keys and wrong types are errors that
name the field, never silently ignored (STYLE: configs are frozen dataclasses).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


def require(condition: bool, field: str, message: str) -> None:
    """Raise ConfigError naming `field` unless `condition` holds (for `__post_init__` checks)."""
    if not condition:
        raise ConfigError(f"config field '{field}': {message}")


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{path}': expected a table of fields, got {value!r}")
        return from_dict(annotation, value, prefix=path + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"config field '{path}': bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{path}': expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"config field '{path}': expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{path}': expected a table, got {value!r}")
        key_type, value_type = args
        return {
            _coerce(k, key_type, path): _coerce(v, value_type, f"{path}.{k}") for k, v in value.items()
        }
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config field '{path}': {value!r} is not one of {list(args)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config field '{path}': expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config field '{path}': expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config field '{path}': expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config field '{path}': expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {[prefix + k for k in unknown]}; "
            f"valid fields here: {sorted(prefix + k for k in known)}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    """The resolved config as plain JSON-able data (for manifests and config hashes)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _parse_override_value(text: str) -> Any:
    """A TOML value, `null` for None (TOML has no null: it unsets an optional field), else the bare string."""
    if text == "null":
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # bare strings need no quotes on the command line


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.field=value` overrides (TOML values) to a nested dict, returning a copy."""
    result = json.loads(json.dumps(data))
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r}: write it as section.field=value")
        key, text = override.split("=", 1)
        parts = key.strip().replace("-", "_").split(".")
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: '{part}' is not a table of fields")
        node[parts[-1]] = _parse_override_value(text.strip())
    return result


def load_config(cls: type[T], path: Path | None = None, base: dict | None = None,
                overrides: list[str] | None = None) -> T:
    """Resolve a config: the class defaults, a `base` dict (e.g. a preset), a TOML file, overrides.

    Starting from the defaults lets an override change one key of a mapping field
    (e.g. `behavior.daily_rates.engagement=0.5`) without restating the others.
    """
    data = _merge(to_dict(cls()), base or {})
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            file_data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
        data = _merge(data, file_data)
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
