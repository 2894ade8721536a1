"""The README's main job end to end at a reduced size: data, train, eval, export, predict, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detect_ft.cli.main import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_pipeline_end_to_end_and_again_into_the_same_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the demo reads configs/demo_shapes.yaml as the README's command does
    run_dir = tmp_path / "run"
    argv = [
        "demo",
        "--synthetic",
        "--data",
        str(tmp_path / "data"),
        "--train-images",
        "12",
        "--val-images",
        "6",
        "--predict-images",
        "2",
        "--image-size",
        "96",
        "model.weights=none",
        "model.min_size=96",
        "train.epochs=1",
        "train.batch_size=4",
        "train.workers=0",
        "export.max_map_drop=100",
        f"output.dir={run_dir}",
    ]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    for step in ("detect-ft train", "detect-ft eval", "detect-ft export", "detect-ft predict"):
        assert step in out
    report = (run_dir / "report.md").read_text()
    for section in ("## Validation mAP", "## PyTorch vs ONNX", "## Plots", "## Config", "circle", "PyTorch (eager)"):
        assert section in report
    assert (run_dir / "model.onnx").stat().st_size > 0
    predictions = sorted((run_dir / "predictions").glob("*.png")) + sorted((run_dir / "predictions").glob("*.jpg"))
    assert len(predictions) == 2
    for picture in predictions:
        assert picture.name in report
    assert isinstance(json.loads((run_dir / "predictions" / "predictions.json").read_text()), list)
    assert json.loads((run_dir / "eval" / "metrics.json").read_text())["num_images"] == 6

    # The demo owns its run directory (output.overwrite=true): a second demo replaces the first run
    # instead of starting run-2 while its later steps read run.
    assert main(argv) == 0, capsys.readouterr().out
    assert "replacing the run" in capsys.readouterr().out and not (tmp_path / "run-2").exists()
    assert (run_dir / "report.md").is_file()


@pytest.mark.slow
def test_real_photo_demo_fine_tunes_from_imagenet(tmp_path, monkeypatch, capsys):
    """The README's `make demo` at a reduced budget: the shipped raccoon photos, ImageNet weights offline."""
    monkeypatch.chdir(REPO)
    run_dir = tmp_path / "run"
    code = main(
        [
            "demo",
            "--predict-images",
            "2",
            "model.min_size=160",  # a quarter of the 320 px pixels: the photos' path and weights are what count here
            "train.epochs=1",
            "train.max_iters_per_epoch=2",
            "train.batch_size=4",
            "train.workers=0",
            "eval.batch_size=8",
            "export.max_map_drop=100",
            f"output.dir={run_dir}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    report = (run_dir / "report.md").read_text()
    assert "raccoon" in report and "datasets/raccoon-small" in report
    from detect_ft.models.timm_backbone import lite_package_installed

    if lite_package_installed("tf_efficientnet_lite0"):
        assert "ImageNet weights of tf_efficientnet_lite0" in report and "random initialisation" not in report
    assert len(sorted((run_dir / "predictions").glob("*.png"))) == 2
