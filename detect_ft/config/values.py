"""Setting and checking config values: dotted keys, type-hint conversion, the model checks, the model recipe.

:mod:`detect_ft.config.schema` holds the dataclass sections and reads YAML; this module does the work that is
the same for every section: :func:`set_key` converts a value against its field's type hint and sets it,
:func:`fail` raises the one-line :class:`ConfigError`, and the model checks that need the registry
(names, backbones, stage counts) live here so the config module stays a list of fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal, Optional

from detect_ft.data.checks.findings import ALLOWED, policy_choices
from detect_ft.utils.errors import ConfigError
from detect_ft.utils.limits import MAX_INPUT_SIDE, short_repr


def fail(key: str, given: Any, allowed: str) -> typing.NoReturn:
    """Raise the ConfigError naming the key, what was given and what is allowed (one line)."""
    raise ConfigError(f"config key '{key}': got {short_repr(given)}; allowed: {allowed}")


def positive(key: str, value: Any) -> None:
    if value <= 0:
        fail(key, value, "an integer > 0")


# The deepest feature stride of every registered backbone: a smaller model input leaves the deepest
# level nothing but padding (the detector still "trains", on nonsense).
MIN_MODEL_SIDE = 32
MAX_SEED = 2**32 - 1  # NumPy's limit; torch and Python take more


def input_side(key: str, value: int, otherwise: str = "null", minimum: int = 1) -> None:
    """A side in pixels: at least ``minimum`` (:data:`MIN_MODEL_SIDE` for a model input) and at most what
    any detector uses (a larger one would make every image allocate gigabytes). ``otherwise`` names the
    key's other allowed value, if any."""
    if not minimum <= value <= MAX_INPUT_SIDE:
        why = f" (pixels; the deepest feature maps are 1/{MIN_MODEL_SIDE} of the input)" if minimum > 1 else " (pixels)"
        fail(key, value, f"an integer in {minimum}..{MAX_INPUT_SIDE}{why}" + (f" or {otherwise}" if otherwise else ""))


def check_train_values(train: Any) -> None:
    """The ranges of ``train.momentum``, ``weight_decay``, ``clip_grad_norm``, ``seed``, ``multi_scale`` and
    ``repeat_threshold`` (``train`` is a TrainConfig), so that a bad value stops the run at config load, not in the optimizer
    or after an epoch of nonsense."""
    what = "SGD's momentum" if train.optimizer == "sgd" else "AdamW's beta1"
    if not 0 <= train.momentum < 1:
        fail("train.momentum", train.momentum, f"a number in [0, 1) ({what}; 0.9 is usual)")
    if train.weight_decay < 0:
        fail("train.weight_decay", train.weight_decay, "a number >= 0 (0: off; 1e-4 is usual)")
    if train.clip_grad_norm is not None and train.clip_grad_norm < 0:
        fail(
            "train.clip_grad_norm", train.clip_grad_norm, "a gradient norm > 0 (e.g. 10), or null or 0 for no clipping"
        )
    if not 0 <= train.seed <= MAX_SEED:
        fail("train.seed", train.seed, f"an integer in 0..{MAX_SEED}")
    for i, size in enumerate(train.multi_scale):
        input_side(f"train.multi_scale[{i}]", size, "", minimum=MIN_MODEL_SIDE)
    if not 0 <= train.repeat_threshold <= 1:
        fail(
            "train.repeat_threshold",
            train.repeat_threshold,
            "a number in [0, 1] (the share of images below which a class is drawn more often; 0: off)",
        )


_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h)?$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def duration_seconds(key: str, text: str) -> Optional[float]:
    """``"90s"``, ``"10m"``, ``"1.5h"`` or a bare number of seconds -> seconds; ``""`` -> None (no limit)."""
    text = str(text).strip().lower()
    if not text:
        return None
    match = _DURATION.match(text)
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0.0
    if seconds <= 0:
        fail(key, text, 'a positive duration such as "90s", "10m" or "1.5h" (or "" for none)')
    return seconds


def model_names() -> list[str]:
    from detect_ft.models import list_models

    return list_models()


def check_model(model: Any) -> None:
    """The checks of a ``ModelConfig`` that need the model registry: name, sizes, backbone, stages."""
    names = model_names()
    if model.name not in names:
        fail("model.name", model.name, f"one of {', '.join(names)}")
    positive("model.detections_per_img", model.detections_per_img)
    for key in ("min_size", "max_size"):
        value = getattr(model, key)
        if value is not None:
            input_side(f"model.{key}", value, minimum=MIN_MODEL_SIDE)
    check_trainable_backbone_layers(model.name, model.trainable_backbone_layers, model.backbone)
    if model.backbone:
        check_backbone(model.name, model.backbone)
    check_anchors(model)


def check_anchors(model: Any) -> None:
    """``model.anchors`` / ``anchor_sizes`` / ``anchor_ratios``: only for anchor-based models, positive
    values; their layout (one row per feature level) is checked against the model when it is built."""
    from detect_ft.models.anchors import ANCHOR_FREE_REASON, has_anchors

    if not has_anchors(model.name):
        for key, unset in (("anchors", "default"), ("anchor_sizes", []), ("anchor_ratios", [])):
            if getattr(model, key) != unset:
                fail(f"model.{key}", getattr(model, key), f"{unset or '[]'} for {model.name} ({ANCHOR_FREE_REASON})")
    for key in ("anchor_sizes", "anchor_ratios"):
        rows = getattr(model, key)
        if not all(row and all(v > 0 for v in row) for row in rows):
            fail(f"model.{key}", rows, "[] (the model's own) or lists of numbers > 0, one list per feature level")


def check_backbone(model_name: str, backbone: str) -> None:
    """``backbone`` must be a timm model name, and ``model_name`` a model built on a timm backbone."""
    from detect_ft.models import MODELS

    timm_models = [name for name, spec in MODELS.items() if spec.timm_backbone]
    if not MODELS[model_name].timm_backbone:
        fail("model.backbone", backbone, f"'' for {model_name}; a timm backbone needs one of {', '.join(timm_models)}")
    import timm

    if not timm.is_model(backbone):
        close = difflib.get_close_matches(backbone, timm.list_models(), n=3, cutoff=0.6)
        fail("model.backbone", backbone, "a timm model name" + (f", e.g. {', '.join(close)}" if close else ""))
    from detect_ft.models.timm_backbone import check_backbone_stages

    check_backbone_stages(backbone)


def check_trainable_backbone_layers(name: str, value: Optional[int], backbone: str = "") -> None:
    """``value`` must be None or 0..stages of model ``name`` (on timm ``backbone``), counted without weights."""
    if value is None:
        return
    from detect_ft.models.stages import backbone_stage_count

    stages = backbone_stage_count(name, backbone or None)
    if value < 0 or (stages is not None and value > stages):
        allowed = f"0..{stages} ({name} has {stages} backbone stages) or null" if stages else "an integer >= 0 or null"
        fail("model.trainable_backbone_layers", value, allowed)


def apply_model_recipe(cfg: Any, explicit: set[str]) -> list[str]:
    """Set each key of the model's recipe (``ModelSpec.recipe``) that is not in ``explicit``; return them
    as ``key=value`` strings, for the run to say which settings came from the recipe."""
    from detect_ft.models import MODELS

    spec = MODELS.get(cfg.model.name)
    used = []
    for key, value in spec.recipe if spec else ():
        if key not in explicit:
            set_key(cfg, key, value)
            used.append(f"{key}={value}")
    return used


def refuse_coco_for_the_default_model(name: str, source: str) -> None:
    """A config that asks for COCO weights but names no model relied on the default before 2026-12-05
    (SSDlite-MobileNetV3, which has COCO weights); the default now has none: say so, not only that."""
    from detect_ft.models import MODELS

    spec = MODELS.get(name)
    if spec is not None and spec.coco_weights is None:
        raise ConfigError(
            f"{source}: model.weights=coco but no model.name, and the default model {name} has no COCO "
            "weights; set model.name (ssdlite320_mobilenet_v3_large was the default before 2026-12-05) or "
            "model.weights=imagenet"
        )


def set_key(cfg: Any, key: str, value: Any) -> None:
    """Set the dotted ``key`` (``section.name``; a bare section takes a mapping) of the config dataclass
    ``cfg`` to ``value``, converted against the field's type hint; ConfigError for unknown keys or values."""
    parts = key.split(".")
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    if parts[0] not in sections:
        _unknown(key, list(sections), parts[0])
    section = getattr(cfg, parts[0])
    if len(parts) != 2:
        if len(parts) == 1 and isinstance(value, dict):
            for sub_key, sub_value in value.items():
                set_key(cfg, f"{key}.{sub_key}", sub_value)
            return
        fail(key, value, f"a key of the form {parts[0]}.<name>")
    hints = typing.get_type_hints(type(section))  # evaluated in the section's own module
    if parts[1] not in hints:
        _unknown(key, [f"{parts[0]}.{name}" for name in hints])
    setattr(section, parts[1], convert(key, value, hints[parts[1]]))


def _unknown(key: str, known: list[str], compare: str | None = None) -> typing.NoReturn:
    close = difflib.get_close_matches(compare or key, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
    raise ConfigError(f"unknown config key '{key}'{hint}")


def _choices(key: str, given: Any, allowed: tuple) -> str:
    """What a ``Literal`` field allows, for the message; the data.on_* policies say why a value is refused."""
    kind = key.removeprefix("data.on_")
    if key.startswith("data.on_") and kind in ALLOWED:
        return policy_choices(kind, given)
    return ", ".join(map(str, allowed))


def convert(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a field's type ``hint``; convert where it is lossless (int -> float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(key, value, inner[0])
    if origin is Literal:
        if value not in args:
            fail(key, value, _choices(key, value, args))
        return value
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # data.classes=raccoon means a one-element list
        if not isinstance(value, (list, tuple)):
            fail(key, value, f"a list of {args[0].__name__}")
        return [convert(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    return _convert_scalar(key, value, hint)


def _convert_scalar(key: str, value: Any, hint: Any) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            fail(key, value, "true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, value, "an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(key, value, "a number")
        if not math.isfinite(value):
            fail(key, value, "a finite number")
        return float(value)
    if hint is str:
        # Scalars only: str() of a list or mapping (possibly a YAML alias bomb) is never a valid value.
        if value is None or not isinstance(value, (str, int, float)):
            fail(key, value, "a string")
        return str(value)  # YAML reads `weights: none` as a string but `classes: [1]` items as ints
    raise TypeError(f"unsupported config type {hint!r} for {key}")
