"""ONNX models through the evaluator: a hand-built graph carrying detect-ft metadata, run by the edge runtime."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from detect_ft.api import Detector
from detect_ft.cli.main import main
from detect_ft.inference.runtime import METADATA_FORMAT, METADATA_KEY


def _middle_half_graph(path, class_names, category_ids):
    """A graph that "detects" the middle half of any (3, H, W) input as class 1 with score 0.8."""
    const = lambda name, array: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(array), name)
    )
    nodes = [
        helper.make_node("Shape", ["images"], ["shape"]),
        const("idx", np.array([2, 1, 2, 1], np.int64)),
        helper.make_node("Gather", ["shape", "idx"], ["whwh"], axis=0),
        helper.make_node("Cast", ["whwh"], ["whwh_f"], to=TensorProto.FLOAT),
        const("frac", np.array([0.25, 0.25, 0.75, 0.75], np.float32)),
        helper.make_node("Mul", ["whwh_f", "frac"], ["flat"]),
        const("box_shape", np.array([1, 4], np.int64)),
        helper.make_node("Reshape", ["flat", "box_shape"], ["boxes"]),
        const("scores", np.array([0.8], np.float32)),
        const("labels", np.array([1], np.int64)),
    ]
    graph = helper.make_graph(
        nodes,
        "middle_half",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [3, "H", "W"])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "format": METADATA_FORMAT,
        "model_name": "middle_half",
        "class_names": class_names,
        "category_ids": category_ids,
        "input": {"color": "RGB", "scale": 1 / 255, "layout": "CHW", "batch_dim": False},
        "outputs": ["boxes", "scores", "labels"],
    }
    helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    onnx.save(model, str(path))


@pytest.fixture()
def setup(tmp_path):
    images, annotations = [], []
    for i, (w, h) in enumerate([(64, 48), (96, 80), (80, 80)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((h, w, 3), 90, np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 3,
                "bbox": [w / 4, h / 4, w / 2, h / 2],
                "area": w * h / 4,
                "iscrowd": 0,
            }
        )
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    (tmp_path / "val.json").write_text(json.dumps(dataset))
    cfg = {
        "data": {"format": "coco", "root": str(tmp_path), "train": "val.json", "val": "val.json"},
        "train": {"workers": 0},
        "output": {"dir": str(tmp_path / "run")},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    _middle_half_graph(tmp_path / "model.onnx", ["cat", "dog"], [3, 7])
    return tmp_path


def test_detector_reads_onnx_metadata(setup):
    detector = Detector.load(setup / "model.onnx", device="cpu")
    assert (detector.model_name, detector.class_names, detector.category_ids) == ("middle_half", ["cat", "dog"], [3, 7])
    assert detector.thresholds is None and detector.model is None
    out = detector.predict_batch([np.zeros((40, 60, 3), np.uint8)])
    np.testing.assert_allclose(out[0]["boxes"], [[15, 10, 45, 30]])


def test_eval_cli_scores_an_onnx_model(setup):
    out = setup / "onnx_metrics.json"
    rc = main(
        [
            "eval",
            str(setup / "config.yaml"),
            "eval.plots=false",
            "--weights",
            str(setup / "model.onnx"),
            "--json",
            str(out),
            "--predictions",
            str(setup / "preds.json"),
        ]
    )
    assert rc == 0
    metrics = json.loads(out.read_text())
    assert metrics["map"] == pytest.approx(1.0) and metrics["model_name"] == "middle_half"
    assert metrics["per_class"] == {"cat": pytest.approx(1.0), "dog": None}
    assert {r["category_id"] for r in json.loads((setup / "preds.json").read_text())} == {3}
