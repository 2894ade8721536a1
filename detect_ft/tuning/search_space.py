"""What a tuning study searches: one :class:`Param` per config key, from :func:`default_space` or a YAML file.

The file (``detect-ft tune my.yaml --space space.yaml``) maps dotted config keys to a distribution::

    train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}
    train.backbone_lr_mult: {type: float, low: 0.1, high: 1.0}
    train.batch_size: {type: int, low: 4, high: 16, step: 4}
    augment.preset: {type: categorical, choices: [light, strong]}

``float`` and ``int`` take ``low`` and ``high`` (both included) and optionally ``log`` (sample the logarithm
uniformly; ``low`` > 0) or ``step``; ``categorical`` takes ``choices`` (numbers, strings, true/false).
:func:`check_space` loads the config with every bound and choice before any trial starts, so a key the
schema does not know, or a value it refuses, is one :class:`~detect_ft.config.schema.ConfigError` line.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from detect_ft.config.schema import AugmentConfig, Config, load_config, safe_yaml
from detect_ft.utils.errors import ConfigError
from detect_ft.utils.limits import MAX_CONFIG_BYTES, read_text

KINDS = ("float", "int", "categorical")
FIELDS = {"type", "low", "high", "log", "step", "choices"}
# Keys the tune command sets itself for every trial: a space may not search them.
RESERVED = ("train.time_budget", "train.resume", "output.dir", "output.overwrite")


@dataclass(frozen=True)
class Param:
    """One searched config key: ``kind`` float/int with ``low``..``high`` (``log``: log-uniform; ``step``:
    a grid), or categorical with ``choices``."""

    key: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna ``trial`` samples for this key (its TPE sampler learns from earlier trials)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this parameter can take (a choice, or a number within the bounds)."""
        if self.kind == "categorical":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high and (self.kind == "float" or float(value).is_integer())

    def extremes(self) -> list[Any]:
        """The values :func:`check_space` tries: both bounds, or every choice."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.key} in {list(self.choices)}"
        scale = " (log)" if self.log else ""
        return f"{self.key} in [{self.low:g}, {self.high:g}]{scale}"


def as_overrides(params: dict[str, Any]) -> list[str]:
    """``{"train.lr": 0.003}`` -> ``["train.lr=0.003"]``; values written as JSON, which the config's YAML
    reader reads back to the same number, string or boolean."""
    return [f"{key}={json.dumps(value)}" for key, value in params.items()]


def baseline(space: Sequence[Param], cfg: Config) -> dict[str, Any]:
    """The values ``cfg`` itself gives the searched keys (``{"train.lr": 0.002, ...}``), those the space can
    take: the study's first trial, so that the search always measures the setting it is meant to improve
    on. A step grid's value off the grid is left to the sampler."""
    values = {}
    for param in space:
        section, _, name = param.key.partition(".")
        value = getattr(getattr(cfg, section), name)
        on_grid = param.step is None or param.kind == "categorical" or ((value - param.low) / param.step).is_integer()
        if param.contains(value) and on_grid:
            values[param.key] = value
    return values


def default_space(cfg: Config) -> list[Param]:
    """The keys that matter most when fine-tuning, around ``cfg`` (the model's recipe applied): the learning
    rate from a fifth to five times ``train.lr`` (log-uniform), the backbone's LR multiplier, the share of the
    run with a frozen backbone, the input size (0.75x, 1x, 1.25x of ``model.min_size`` to the nearest multiple of 32,
    when the config sets one), the augmentation preset, and EMA weights on or off."""
    lr = cfg.train.lr
    space = [
        Param("train.lr", "float", low=lr / 5, high=lr * 5, log=True),
        Param("train.backbone_lr_mult", "float", low=0.1, high=1.0, log=True),
        Param("train.freeze_backbone_fraction", "float", low=0.0, high=0.5),
    ]
    if cfg.model.min_size and cfg.model.max_size is None:  # a max_size set with it may not fit every min_size
        sizes = sorted({max(32, math.floor(cfg.model.min_size * f / 32 + 0.5) * 32) for f in (0.75, 1.0, 1.25)})
        space.append(Param("model.min_size", "categorical", choices=tuple(sizes)))
    presets = typing.get_args(typing.get_type_hints(AugmentConfig)["preset"])
    space.append(Param("augment.preset", "categorical", choices=tuple(presets)))
    space.append(Param("train.ema", "categorical", choices=(False, True)))
    return space


def load_space(path: str | Path) -> list[Param]:
    """The search space in the YAML file at ``path`` (format: module docstring); ConfigError naming the file
    and key for a malformed entry."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file {path} not found; see docs/training.md, 'Search', for its format")
    text = read_text(path, MAX_CONFIG_BYTES, "search space file", ConfigError)
    try:
        data = safe_yaml(text)
    except (yaml.YAMLError, RecursionError) as exc:  # one line, not a traceback
        raise ConfigError(f"search space file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"search space file {path} must map config keys to {{type: ..., ...}}")
    return [_param(path, str(key), spec) for key, spec in data.items()]


def _param(path: Path, key: str, spec: Any) -> Param:
    """One entry of a space file, its form checked (the values are checked against the schema later)."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"search space file {path}, key {key}: {why}")

    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise bad(f"give a mapping with type: {' | '.join(KINDS)} (e.g. {{type: float, low: 1e-4, high: 1e-2}})")
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        raise bad(f"unknown field(s) {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(FIELDS))}")
    if key in RESERVED:
        raise bad("detect-ft tune sets this key for every trial; leave it out of the space")
    kind = spec["type"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or any(isinstance(c, (list, dict)) for c in choices):
            raise bad("categorical needs choices: a non-empty list of numbers, strings or true/false")
        return Param(key, kind, choices=tuple(choices))
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if low is None or high is None or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
        raise bad(f"{kind} needs numbers low and high (and optionally step)")
    if kind == "int" and any(not isinstance(v, int) for v in numbers):
        raise bad("int needs whole numbers low, high and step")
    if not all(math.isfinite(v) for v in numbers) or low > high or (step is not None and step <= 0):
        raise bad(f"needs finite low <= high and step > 0, got low={low}, high={high}, step={step}")
    if not isinstance(log, bool) or (log and (low <= 0 or step is not None)):
        raise bad("log is true or false; log: true needs low > 0 and no step")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def check_space(space: Sequence[Param], config: str | Path, overrides: Sequence[str]) -> None:
    """Load the config with each bound and choice of every key in turn: ConfigError (one line, naming the
    key) for a key the schema does not know or a value it refuses, before any trial trains."""
    for param in space:
        if param.key in RESERVED:
            raise ConfigError(f"search space key {param.key}: detect-ft tune sets it for every trial; leave it out")
        for value in param.extremes():
            try:
                load_config(config, [*overrides, *as_overrides({param.key: value})])
            except ConfigError as exc:
                raise ConfigError(f"search space key {param.key}={value!r}: {exc}") from None
