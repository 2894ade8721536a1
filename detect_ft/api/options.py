"""The Python API's arguments: the config (a YAML file, a plain dict or a Config, plus keyword overrides),
and the checks of what :class:`~detect_ft.api.detector.Detector` is given (paths, classes, devices, model
options, confidences), each failing with one line that names the function, the argument and what it takes.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import os
import typing
from dataclasses import fields
from typing import Any, Union

from detect_ft.config.schema import Config, ModelConfig, config_from_dict, config_to_dict, load_config
from detect_ft.utils.errors import ArgumentTypeError, ConfigError
from detect_ft.utils.limits import short_repr

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
    """``key=value`` texts as :func:`~detect_ft.config.schema.load_config` takes them."""
    # JSON is YAML's flow syntax, so every plain value (lists, strings with commas) survives the parser
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def resolve_config(config: ConfigSource, overrides: dict[str, Any]) -> Config:
    """``config`` (YAML path, ``{section: {key: value}}`` dict, Config, or None for the defaults) with the
    dotted ``overrides`` applied, checked, and the model's recipe filling the keys left unset (a Config's
    keys at their defaults count as unset; an override keeps a default value against the recipe)."""
    texts = override_list(overrides)
    if isinstance(config, Config):
        # keys still at their defaults count as unset, as in a YAML file that leaves them out, so the
        # model's recipe fills them (Config() itself names a model whose recipe picks its weights)
        defaults = config_to_dict(Config())
        given = {
            section: {key: value for key, value in values.items() if value != defaults[section][key]}
            for section, values in config_to_dict(config).items()
        }
        return config_from_dict(given, texts, source="the Config object")
    if isinstance(config, dict):
        return config_from_dict(config, texts, source="the config dict")
    return load_config(config, texts)


def _given(value: Any) -> str:
    return f"{type(value).__name__} {short_repr(value)}"


def path_argument(where: str, name: str, value: Any, takes: str) -> str:
    """``value`` as a path string; ArgumentTypeError unless it is a ``str`` or ``os.PathLike``."""
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise ArgumentTypeError(f"{where}: {name} must be {takes} (a str or os.PathLike), got {_given(value)}")


def device_argument(where: str, device: Any) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, as ``train.device`` takes."""
    if not isinstance(device, str):
        raise ArgumentTypeError(f"{where}: device must be a string (auto, cpu, cuda or cuda:N), got {_given(device)}")
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ConfigError(f"{where}: device {device!r} is not one of auto, cpu, cuda or cuda:N")
    return device


def class_names_argument(where: str, classes: Any) -> list[str]:
    """The class names: a list or tuple of distinct names (numbers are read as names, as in a config), or
    one name as a string (``"raccoon"`` is ``["raccoon"]``, not seven letters)."""
    from detect_ft.data.records import BACKGROUND_NAMES, is_background_name

    if isinstance(classes, str):
        classes = [classes]
    takes = "a list of class names, e.g. ['cat', 'dog'], or one name as a string"
    if not isinstance(classes, (list, tuple)):
        raise ArgumentTypeError(f"{where}: classes must be {takes}; got {_given(classes)}")
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, (str, int))]
    if bad:
        raise ArgumentTypeError(f"{where}: classes must be {takes}; {_given(bad[0])} is not a name")
    names = [str(c) for c in classes]
    if not names or not all(name.strip() for name in names):
        raise ConfigError(f"{where}: classes {short_repr(names)} has no names or empty ones; pass e.g. ['cat']")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{where}: classes {short_repr(names)} repeat {', '.join(repeated)}; name each class once")
    background = [name for name in names if is_background_name(name)]
    if background:
        raise ConfigError(
            f"{where}: class {background[0]!r} is named like the background (label 0 in every model: "
            f"{', '.join(sorted(BACKGROUND_NAMES))}, any case); rename it"
        )
    return names


def model_options_argument(where: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for :func:`~detect_ft.models.build_model` (its keyword arguments, the ``model.*``
    config keys of the same names), type- and range-checked as the config checks them."""
    from detect_ft.config.values import convert
    from detect_ft.models import build_model

    params = inspect.signature(build_model).parameters
    allowed = [key for key, param in params.items() if param.kind is param.KEYWORD_ONLY]
    hints = typing.get_type_hints(ModelConfig)
    model = ModelConfig(name=name)
    for key, value in options.items():
        if key not in allowed:
            raise ArgumentTypeError(
                f"{where}: unknown option {key}={short_repr(value)}; the model options are {', '.join(allowed)}"
            )
        if value is None and params[key].default is None:
            continue  # the model's default, as the config's null
        try:
            setattr(model, key, convert(f"model.{key}", value, hints[key]))
        except ConfigError as exc:
            raise ArgumentTypeError(f"{where}: option {key}: {exc}") from None
    try:
        model.check()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return dict(options)


def score_argument(where: str, conf: Any) -> float:
    """A score threshold in [0, 1]."""
    if isinstance(conf, bool) or not isinstance(conf, numbers.Real):
        raise ArgumentTypeError(f"{where}: conf must be a number in [0, 1] (e.g. 0.3) or None, got {_given(conf)}")
    if not (math.isfinite(conf) and 0 <= conf <= 1):
        raise ConfigError(f"{where}: conf {conf}: pass a score threshold in [0, 1], e.g. 0.3")
    return float(conf)
