"""``detect-ft models`` and the README's table come from the registrations' figures; every row agrees with
torchvision's metadata, and README.md holds exactly the table the registry generates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from detect_ft.cli.main import main
from detect_ft.models import MODELS
from detect_ft.models.zoo import (
    README_BEGIN,
    README_END,
    default_weights,
    markdown_rows,
    readme_with_table,
    weights_offline,
    zoo_table,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_table_lists_exactly_the_registered_models_in_order():
    rows = markdown_rows()[2:]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_figures_agree_with_torchvision(name):
    spec = MODELS[name]
    figures = spec.figures
    if spec.coco_weights is None:
        assert figures.coco_map is None and figures.note and default_weights(spec) == "imagenet"
        return
    meta = spec.coco_weights.meta
    assert default_weights(spec) == "coco"
    assert figures.coco_map == pytest.approx(meta["_metrics"]["COCO-val2017"]["box_map"], abs=0.05)
    assert figures.params_m == pytest.approx(meta["num_params"] / 1e6, abs=0.05)


def test_readme_holds_the_generated_table():
    text = README.read_text()
    assert readme_with_table(text) == text, "README's model table is stale: python tools/model_table.py --write-readme"
    block = text[text.index(README_BEGIN) : text.index(README_END)]
    assert block.splitlines()[1:] == markdown_rows()


def test_readme_table_is_replaced_between_its_markers_only():
    stale = f"intro\n{README_BEGIN}\n| old | row |\n{README_END}\noutro\n"
    assert (
        readme_with_table(stale) == f"intro\n{README_BEGIN}\n" + "\n".join(markdown_rows()) + f"\n{README_END}\noutro\n"
    )
    with pytest.raises(ValueError, match="model table needs the lines"):
        readme_with_table("a README without markers\n")


def test_offline_check_looks_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = MODELS["ssdlite320_mobilenet_v3_large"]
    assert not weights_offline(spec)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / Path(spec.coco_weights.url).name).write_bytes(b"x")
    assert weights_offline(spec)
    # ImageNet weights come offline only from a package; timm's resnet18 has none
    on_resnet = dataclasses.replace(MODELS["ssdlite320_efficientnet_lite0"], timm_backbone="resnet18")
    assert not weights_offline(on_resnet)


def test_models_command_prints_the_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert zoo_table() in out
    for name, spec in MODELS.items():
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert str(spec.figures.latency_ms) in line and f"{default_weights(spec)}:" in line
    assert "A config without model.name trains ssdlite320_efficientnet_lite0." in out
