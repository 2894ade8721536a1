"""`detect-ft eval` end to end on a tiny COCO dataset and a randomly initialised checkpoint."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from detect_ft.cli.main import main
from detect_ft.config.schema import Config, config_to_dict

MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from detect_ft.models import build_model

    root = tmp_path_factory.mktemp("evalcli")
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(3):
        cv2.imwrite(str(root / f"{i}.png"), rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 80, "height": 64})
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 7 if i % 2 else 3,
                "bbox": [10, 10, 30, 20],
                "area": 600,
                "iscrowd": 0,
            }
        )
    categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    (root / "val.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    cfg = {
        "data": {"format": "coco", "root": str(root), "train": "val.json", "val": "val.json"},
        "model": {"name": MODEL, "weights": "none", "min_size": 64, "max_size": 96},
        "train": {"workers": 0},
        "output": {"dir": str(root / "run")},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))

    torch.manual_seed(0)
    model = build_model(
        MODEL, 2, weights="none", class_names=["cat", "dog"], min_size=64, max_size=96, score_thresh=0.0
    )
    full = Config()
    full.model.min_size, full.model.max_size, full.model.score_thresh = 64, 96, 0.0
    torch.save(
        {
            "model": model.state_dict(),
            "model_name": MODEL,
            "num_classes": 2,
            "class_names": ["cat", "dog"],
            "category_ids": [3, 7],
            "config": config_to_dict(full),
            "epoch": 1,
        },
        root / "best.pt",
    )
    return root


def test_eval_writes_metrics_plots_and_predictions(setup, capsys):
    root = setup
    out = root / "out" / "m.json"
    rc = main(
        [
            "eval",
            str(root / "config.yaml"),
            "eval.score_thresh=0.0",
            "--weights",
            str(root / "best.pt"),
            "--json",
            str(out),
            "--predictions",
            str(root / "out" / "preds.json"),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "AP @[.50:.95]" in printed and "dog" in printed
    metrics = json.loads(out.read_text())
    assert {"map", "map50", "map75", "per_class", "voc_map50", "images_per_s"} <= metrics.keys()
    assert set(metrics["per_class"]) == {"cat", "dog"} and metrics["num_ground_truth"] == 3
    assert 0.0 <= metrics["map"] <= 1.0
    assert metrics["map_small"] is not None and metrics["map_medium"] is None  # every box is 30x20 px
    assert (out.parent / "pr_curves.png").is_file() and (out.parent / "confusion_matrix.png").is_file()
    results = json.loads((root / "out" / "preds.json").read_text())
    assert len(results) == metrics["num_detections"] > 0
    assert {r["category_id"] for r in results} <= {3, 7}


def test_default_output_goes_to_the_run_dir(setup):
    root = setup
    assert main(["eval", str(root / "config.yaml"), "eval.plots=false", "--weights", str(root / "best.pt")]) == 0
    assert (root / "run" / "eval_val" / "metrics.json").is_file()
    assert not (root / "run" / "eval_val" / "pr_curves.png").exists()


def test_user_mistakes_are_one_line_errors(setup, capsys):
    root = setup
    assert main(["eval", str(root / "config.yaml"), "--weights", str(root / "model.onnx")]) == 2
    assert "model.onnx not found" in capsys.readouterr().err
    assert main(["eval", str(root / "config.yaml"), "--weights", str(root / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["eval", str(root / "config.yaml"), "data.val=", "--weights", str(root / "best.pt")]) == 2
    assert "data.val" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_map_tool_writes_markdown_and_json(setup):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "benchmark_map.py"
    spec = importlib.util.spec_from_file_location("benchmark_map", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    root = setup
    out = root / "bench" / "table"
    ckpt = str(root / "best.pt")
    assert tool.main([str(root / "config.yaml"), "train.workers=1", "--weights", ckpt, ckpt, "--out", str(out)]) == 0
    md = (root / "bench" / "table.md").read_text()
    assert md.count(ckpt) == 2 and "| cat |" in md and "images/s" in md
    results = json.loads((root / "bench" / "table.json").read_text())
    assert [r["weights"] for r in results] == [ckpt, ckpt] and results[0]["map"] == results[1]["map"]
    assert all(r["images_per_s"] > 0 for r in results)
    assert tool.main([str(root / "config.yaml"), "--weights", str(root / "m.onnx"), "--out", str(out)]) == 2


def test_export_checks_the_checkpoints_saved_config_in_memory(setup, capsys, monkeypatch):
    """The saved config goes through the same checks as a YAML file, naming the checkpoint, with no temp file."""
    import tempfile

    root = setup
    checkpoint = torch.load(root / "best.pt", weights_only=True)
    checkpoint["config"]["train"]["epohcs"] = 3
    torch.save(checkpoint, root / "typo.pt")

    def no_temp_files(*args, **kwargs):
        raise AssertionError("export wrote a temporary file to check the saved config")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_temp_files)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_temp_files)
    monkeypatch.setattr(tempfile, "mkstemp", no_temp_files)
    assert main(["export", str(root / "typo.pt"), "--output", str(root / "typo.onnx")]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'typo.pt'}: the saved config does not load" in err
    assert (
        "unknown config key 'train.epohcs'; did you mean 'train.epochs'?" in err and "give a config file instead" in err
    )
    # the saved config loads; overrides apply on top of it (here: a data.val that is empty, named with the fix)
    assert main(["export", str(root / "best.pt"), "data.val=", "--output", str(root / "m.onnx")]) == 2
    assert "config key 'data.val' is empty" in capsys.readouterr().err
    assert not (root / "typo.onnx").exists() and not (root / "m.onnx").exists()
