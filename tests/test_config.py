"""The typed config: YAML + dotted overrides, one-line errors for typos, types and impossible values."""

from __future__ import annotations

from pathlib import Path

import pytest

from detect_ft.config.schema import (
    Config,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)
from detect_ft.utils.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_then_overrides_with_type_conversion(tmp_path):
    path = write(tmp_path, "model:\n  name: ssd300_vgg16\ntrain:\n  epochs: 3\n  lr: 1\n")
    cfg = load_config(
        path, ["train.epochs=5", "data.classes=[cat, dog]", "model.weights=none", "train.clip_grad_norm=10"]
    )
    assert cfg.model.name == "ssd300_vgg16"
    assert cfg.train.epochs == 5
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.data.classes == ["cat", "dog"]
    assert cfg.model.weights == "none"
    assert cfg.train.clip_grad_norm == 10.0
    assert load_config(None, ["data.classes=raccoon"]).data.classes == ["raccoon"]
    assert load_config(None, ["model.min_size=null"]).model.min_size is None


def test_typo_names_the_closest_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoch'; did you mean 'train\.epochs'\?"):
        load_config(None, ["train.epoch=5"])
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        load_config(None, ["modle.name=x"])


def test_wrong_type_names_key_value_and_allowed():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.epochs=five"])
    message = str(info.value)
    assert "train.epochs" in message and "'five'" in message and "an integer" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="true or false"):
        load_config(None, ["train.amp=maybe"])
    with pytest.raises(ConfigError, match="train.lr.*a number"):
        load_config(None, ["train.lr=[1, 2]"])


def test_impossible_values_and_choices():
    with pytest.raises(ConfigError, match="train.epochs.*> 0"):
        load_config(None, ["train.epochs=0"])
    with pytest.raises(ConfigError, match="data.format.*coco, voc, yolo"):
        load_config(None, ["data.format=pascal"])
    with pytest.raises(ConfigError, match="model.name.*ssdlite320_mobilenet_v3_large"):
        load_config(None, ["model.name=yolo"])
    with pytest.raises(ConfigError, match="data.on_missing_image"):
        load_config(None, ["data.on_missing_image=clip"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [epochs: 1\n"))
    with pytest.raises(ConfigError, match="unknown config key 'train.epochz'"):
        load_config(write(tmp_path, "train:\n  epochz: 1\n"))


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(None, ["train.epochs=7", "data.classes=[a, b]", "model.min_size=160", "train.milestones=[3, 5]"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_the_defaults_are_the_default_models_recipe_over_config():
    """The default model trains offline: its recipe, not the dataclass default (COCO), picks its weights."""
    cfg = load_config()
    assert cfg.model.name == Config().model.name == "ssdlite320_efficientnet_lite0"
    assert cfg.model.weights == "imagenet" and "model.weights=imagenet" in cfg.applied_recipe
    assert load_config(None, ["model.weights=none"]).model.weights == "none"
    recipe_free = load_config(None, ["model.name=ssdlite320_mobilenet_v3_large"])
    assert recipe_free.model.weights == "coco" and recipe_free.applied_recipe == ()
    # COCO weights asked for without a model: the config relied on the earlier default, which had them
    with pytest.raises(ConfigError, match=r"model.weights=coco but no model.name.*ssdlite320_mobilenet_v3_large was"):
        load_config(None, ["model.weights=coco"])


def test_config_from_dict_checks_as_load_config_does_and_names_the_source():
    cfg = load_config(None, ["train.epochs=7", "data.classes=[a, b]", "data.on_box_outside=drop"])
    saved = config_to_dict(cfg)
    assert config_from_dict(saved) == cfg
    again = config_from_dict(saved, ["train.epochs=2"], source="checkpoint best.pt")
    assert again.train.epochs == 2 and again.data.classes == ["a", "b"] and saved["train"]["epochs"] == 7
    assert config_from_dict({}) == load_config()
    # the same one-line messages as a YAML file
    for data, pattern in (
        ({"train": {"epohcs": 3}}, "unknown config key 'train.epohcs'; did you mean 'train.epochs'"),
        ({"train": {"epochs": "five"}}, "config key 'train.epochs': got 'five'; allowed: an integer"),
        ({"train": 5}, "train.*got 5; allowed: a mapping of keys"),
        ({"data": {"on_missing_image": "clip"}}, "data.on_missing_image.*only boxes outside the image can be clipped"),
    ):
        with pytest.raises(ConfigError, match=pattern):
            config_from_dict(data, source="checkpoint best.pt")
    with pytest.raises(ConfigError, match="^checkpoint best.pt must hold a mapping of sections, got list$"):
        config_from_dict([1, 2], source="checkpoint best.pt")


def test_data_policies_come_from_the_findings_tables():
    """DataConfig's on_* keys are exactly the policy keys, with their defaults and allowed values."""
    import dataclasses
    import typing

    from detect_ft.config.schema import DataConfig
    from detect_ft.data.checks.findings import ALLOWED, DEFAULT_POLICIES, POLICY_KEYS

    hints = typing.get_type_hints(DataConfig)
    fields = {f.name: f.default for f in dataclasses.fields(DataConfig) if f.name.startswith("on_")}
    assert fields == DEFAULT_POLICIES and set(fields) == set(POLICY_KEYS.values())
    for kind, key in POLICY_KEYS.items():
        assert typing.get_args(hints[key]) == ALLOWED[kind]
        for value in ALLOWED[kind]:
            assert getattr(load_config(None, [f"data.{key}={value}"]).data, key) == value
    with pytest.raises(ConfigError, match="data.on_small_box': got 'clip'; allowed: keep, drop or error .only boxes"):
        load_config(None, ["data.on_small_box=clip"])
    with pytest.raises(
        ConfigError, match="data.on_exif_orientation': got 'allow'; allowed: error, drop, apply, ignore$"
    ):
        load_config(None, ["data.on_exif_orientation=allow"])


def test_shipped_configs_load():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


def test_scientific_notation_is_a_number_in_overrides_and_yaml(tmp_path):
    path = write(tmp_path, "train:\n  lr: 1e-3\n  weight_decay: 5E-4\n  ema_decay: 9.998e-1\n")
    cfg = load_config(path, ["train.clip_grad_norm=1e1", "train.backbone_lr_mult=+2.5e-1"])
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 5e-4 and cfg.train.ema_decay == 0.9998
    assert cfg.train.clip_grad_norm == 10.0 and cfg.train.backbone_lr_mult == 0.25
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 0.001
    with pytest.raises(ConfigError, match="train.epochs.*an integer"):
        load_config(None, ["train.epochs=1e2"])
    with pytest.raises(ConfigError, match="train.lr.*a finite number"):
        load_config(None, ["train.lr=.nan"])
    # names that only look numeric stay strings where a string is wanted
    assert load_config(None, ["data.classes=[1e3, cat]"]).data.classes == ["1000.0", "cat"]


def test_trainable_backbone_layers_is_bounded_by_the_models_stage_count():
    with pytest.raises(ConfigError, match=r"model.trainable_backbone_layers.*got 6.*0\.\.5 \(fasterrcnn_resnet50_fpn"):
        load_config(None, ["model.name=fasterrcnn_resnet50_fpn", "model.trainable_backbone_layers=6"])
    assert load_config(None, ["model.name=fasterrcnn_resnet50_fpn", "model.trainable_backbone_layers=5"])
    assert load_config(None, ["model.name=ssdlite320_mobilenet_v3_large", "model.trainable_backbone_layers=6"])
    with pytest.raises(ConfigError, match="0..6"):
        load_config(None, ["model.name=ssdlite320_mobilenet_v3_large", "model.trainable_backbone_layers=7"])
    with pytest.raises(ConfigError, match="trainable_backbone_layers"):
        load_config(None, ["model.trainable_backbone_layers=-1"])


@pytest.mark.slow
def test_stage_counts_match_a_meta_device_build_of_every_model():
    from detect_ft.models import list_models
    from detect_ft.models.stages import backbone_stage_count, count_on_meta_device

    for name in list_models():
        assert backbone_stage_count(name) == count_on_meta_device(name), name


def test_model_input_sizes_are_bounded():
    with pytest.raises(ConfigError, match=r"model.min_size.*32\.\.8192"):
        load_config(None, ["model.min_size=" + "9" * 30])
    with pytest.raises(ConfigError, match="model.max_size"):
        load_config(None, ["model.max_size=0"])
    assert load_config(None, ["model.min_size=1333"]).model.min_size == 1333


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("train.momentum=5", r"train.momentum.*got 5.*\[0, 1\) \(SGD's momentum"),
        ("train.momentum=1", r"train.momentum.*\[0, 1\)"),
        ("train.momentum=-0.1", r"train.momentum.*\[0, 1\)"),
        ("train.weight_decay=-1", r"train.weight_decay.*>= 0"),
        ("train.clip_grad_norm=-1", r"train.clip_grad_norm.*> 0.*null or 0"),
        ("train.seed=-1", r"train.seed.*0\.\.4294967295"),
        (f"train.seed={2**32}", r"train.seed.*0\.\.4294967295"),
        ("train.multi_scale=[1]", r"train.multi_scale\[0\].*got 1.*32\.\.8192 \(pixels; the deepest feature maps"),
        ("train.multi_scale=[320, 16]", r"train.multi_scale\[1\].*got 16"),
        ("model.min_size=8", r"model.min_size.*32\.\.8192"),
    ],
)
def test_training_values_out_of_range_are_one_line_config_errors(override, allowed):
    with pytest.raises(ConfigError, match=allowed) as info:
        load_config(None, ["train.optimizer=sgd", override])  # SGD: the default model's recipe takes AdamW
    assert "\n" not in str(info.value)


def test_adamw_beta1_is_checked_as_momentum_and_edge_values_load():
    with pytest.raises(ConfigError, match=r"train.momentum.*AdamW's beta1"):
        load_config(None, ["train.optimizer=adamw", "train.momentum=1.5"])
    cfg = load_config(
        None,
        [
            "train.momentum=0",
            "train.weight_decay=0",
            "train.clip_grad_norm=0",
            f"train.seed={2**32 - 1}",
            "train.multi_scale=[32]",
        ],
    )
    assert cfg.train.momentum == 0 and cfg.train.clip_grad_norm == 0 and cfg.train.multi_scale == [32]


def test_a_class_named_like_the_background_is_refused():
    for name in ("background", "Background", "__background__", "bg"):
        with pytest.raises(ConfigError, match="data.classes.*label 0 is the background"):
            load_config(None, [f"data.classes=[cat, {name}]"])


def test_hostile_yaml_is_a_bounded_one_line_error(tmp_path):
    import time

    # billion laughs: 9 levels of 9 aliases; str() or repr() of it would be 9**9 items
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    for section, key in (("data", "classes"), ("model", "name"), ("data", "root")):
        path = write(tmp_path, "\n".join(lines) + f"\n{section}:\n  {key}: [*a8]\n")
        start = time.perf_counter()
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert time.perf_counter() - start < 5
        message = str(info.value)
        assert "\n" not in message and len(message) < 400, message
    path = write(tmp_path, "train:\n  epochs: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply|not valid YAML"):
        load_config(path)
    path = write(tmp_path, "train: {epochs: 5\nmodel: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid YAML" in str(info.value) and "\n" not in str(info.value)
    path.write_bytes(b"train:\n  epochs: 1\n" + b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="over detect-ft's limit"):
        load_config(path)
