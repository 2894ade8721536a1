"""The typed config: YAML + dotted overrides, one-line errors for typos, types and impossible values."""

from __future__ import annotations

from pathlib import Path

import pytest

from detect_ft.config import Config, load_config, parse_override, save_config
from detect_ft.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_then_overrides_with_type_conversion(tmp_path):
    path = write(tmp_path, "model:\n  name: ssd300_vgg16\ntrain:\n  epochs: 3\n  lr: 1\n")
    cfg = load_config(path, ["train.epochs=5", "data.classes=[cat, dog]", "model.weights=none", "train.clip_grad_norm=10"])
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
    assert Config() == load_config()


def test_shipped_configs_load():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)
