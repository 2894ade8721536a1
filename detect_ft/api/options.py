"""Config for the Python API: a YAML file, a plain dict or a Config, plus keyword overrides."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from typing import Any, Union

from detect_ft.config import Config, config_from_dict, config_to_dict, load_config
from detect_ft.errors import ConfigError

ConfigSource = Union[str, os.PathLike, dict, Config, None]


def dotted_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Config keys from ``train(epochs=5)``-style names: dotted keys as given, bare names resolved to the
    one section that has them."""
    defaults = Config()
    sections = {f.name: {g.name for g in fields(getattr(defaults, f.name))} for f in fields(Config)}
    out = {}
    for key, value in overrides.items():
        if "." in key:
            out[key] = value
            continue
        owners = [section for section, keys in sections.items() if key in keys]
        if len(owners) != 1:
            where = f"it is in {', '.join(f'{s}.{key}' for s in owners)}" if owners else "no config section has it"
            example = f"{owners[0]}.{key}" if owners else f"train.{key}"
            raise ConfigError(f"override {key}={value!r}: {where}; pass the dotted key, e.g. **{{'{example}': ...}}")
        out[f"{owners[0]}.{key}"] = value
    return out


def override_list(overrides: dict[str, Any]) -> list[str]:
    """``key=value`` texts as :func:`~detect_ft.config.load_config` takes them."""
    # JSON is YAML's flow syntax, so every plain value (lists, strings with commas) survives the parser
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def resolve_config(config: ConfigSource, overrides: dict[str, Any]) -> Config:
    """``config`` (YAML path, ``{section: {key: value}}`` dict, Config, or None for the defaults) with the
    dotted ``overrides`` applied, checked, and the model's recipe filling the keys left unset."""
    texts = override_list(overrides)
    if isinstance(config, Config):
        return config_from_dict(config_to_dict(config), texts, source="the Config object")
    if isinstance(config, dict):
        return config_from_dict(config, texts, source="the config dict")
    return load_config(config, texts)
