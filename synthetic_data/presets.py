"""Named world presets: `tiny` (tests), `demo` (the demo), `large` (1M users, scale checks)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from synthetic_data.config import WorldConfig
from synthetic_data.config_io import ConfigError, load_config

PRESETS = ("tiny", "demo", "large")


def preset_dict(name: str) -> dict:
    """The preset's TOML as a dict (to layer a config file and overrides on top)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
    text = resources.files("synthetic_data").joinpath("presets", f"{name}.toml").read_text()
    return tomllib.loads(text)


def preset(name: str, overrides: list[str] | None = None) -> WorldConfig:
    """A preset's WorldConfig, with optional `section.field=value` overrides."""
    return load_config(WorldConfig, base=preset_dict(name), overrides=overrides)


def resolve_world_config(preset_name: str | None, config_path: Path | None,
                         overrides: list[str] | None) -> WorldConfig:
    """Preset (default `demo` when neither preset nor file is given), then file, then overrides."""
    base = preset_dict(preset_name) if preset_name else ({} if config_path else preset_dict("demo"))
    return load_config(WorldConfig, path=config_path, base=base, overrides=overrides)
