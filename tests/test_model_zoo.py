"""``detect-ft models`` and the README's table come from detect_ft.models.zoo; every row agrees with the
registry and torchvision's metadata, and listing the models imports no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detect_ft.models import MODELS
from detect_ft.models.zoo import MODEL_TABLE, ModelFigures, markdown_rows, weights_offline, zoo_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_table_lists_exactly_the_registered_models():
    assert list(MODEL_TABLE) == list(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_row_agrees_with_the_registry(name):
    figures, spec = MODEL_TABLE[name], MODELS[name]
    if spec.coco_weights is None:
        assert figures.coco_map is None and figures.weights == "imagenet" and figures.weight_package
        return
    meta = spec.coco_weights.meta
    assert figures.weights == "coco"
    assert figures.coco_map == pytest.approx(meta["_metrics"]["COCO-val2017"]["box_map"], abs=0.05)
    assert figures.params_m == pytest.approx(meta["num_params"] / 1e6, abs=0.05)
    assert figures.weight_file == spec.coco_weights.url.rsplit("/", 1)[1]


def test_readme_shows_the_same_table():
    text = README.read_text()
    for line in markdown_rows():
        assert line in text


def test_offline_check_looks_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    row = ModelFigures(coco_map=1.0, params_m=1.0, latency_ms=1, weights="coco", weight_file="w.pth")
    assert not weights_offline(row)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "w.pth").write_bytes(b"x")
    assert weights_offline(row)
    missing = ModelFigures(
        coco_map=None, params_m=1.0, latency_ms=1, weights="imagenet", weight_package="no_such_pkg_x"
    )
    assert not weights_offline(missing)


def test_models_command_prints_the_table_without_torch():
    code = (
        "import sys; from detect_ft.cli.main import main; rc = main(['models']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert zoo_table() in result.stdout
    for name in MODELS:
        assert name in result.stdout
