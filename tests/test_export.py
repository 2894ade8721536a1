"""ONNX export: checker, metadata, parity with PyTorch (through the CLI), INT8, the parity gate, and the
zero/one-detection cases that break naive exports of torchvision detectors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from detect_ft import __version__
from detect_ft.cli.main import main
from detect_ft.data.image import read_image
from detect_ft.edge import EdgeDetector
from detect_ft.edge import runtime
from detect_ft.errors import DetectFTError
from detect_ft.evaluation.evaluator import torch_predictor
from detect_ft.export import compare_detections, export_detector, match_detections
from detect_ft.export.onnx_export import build_metadata, export_onnx
from test_export_support import CATEGORY_IDS, CLASSES, FAST_MODELS, exported_model, separated_model, synthetic_root


@pytest.fixture(scope="module", params=FAST_MODELS)
def exported(request, tmp_path_factory):
    return exported_model(tmp_path_factory.mktemp(request.param), request.param)


def test_export_writes_checked_onnx_with_metadata(exported):
    proto = onnx.load(str(exported["onnx"]))
    onnx.checker.check_model(proto)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["detect_ft"])
    assert meta["model_name"] == exported["name"] and meta["detect_ft_version"] == __version__
    assert meta["class_names"] == CLASSES and meta["category_ids"] == CATEGORY_IDS
    assert meta["input"]["color"] == "RGB" and meta["input"]["scale"] == pytest.approx(1 / 255)
    assert meta["input"]["min_size"] == 128 and meta["input"]["max_size"] in (128, 160)
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "labels"]
    assert not list(exported["onnx"].parent.glob(".*.tmp")), "temporary files left behind"


def test_onnx_matches_pytorch_on_validation_images(exported):
    """Independent of the export's own check: every PyTorch detection has an ONNX twin."""
    images = [read_image(r.image_path) for r in exported["val"].records]
    first = read_image(exported["val"].records[0].image_path)
    # Sizes where float32 size arithmetic in the graph would round differently from eager PyTorch.
    images += [np.ascontiguousarray(np.resize(first, (h, w, 3))) for h, w in ((70, 100), (100, 70), (33, 77))]
    predict = torch_predictor(exported["model"], "cpu")
    # One image per call: torchvision pads a mixed-size batch to a common size, which changes R-CNN results.
    reference = [predict([image])[0] for image in images]
    candidate = EdgeDetector(exported["onnx"]).predict_batch(images)
    stats = compare_detections(reference, candidate)
    assert stats["reference_detections"] > 50, stats
    assert stats["match_rate"] == 1.0 and stats["candidate_detections"] == stats["reference_detections"], stats
    assert stats["max_score_diff"] < 1e-3 and stats["max_box_diff"] < 0.1


def test_int8_model_is_quantized_and_runs(exported):
    int8 = EdgeDetector(exported["int8"])
    assert int8.metadata["quantization"]["format"] == "QDQ" and int8.class_names == CLASSES
    ops = {node.op_type for node in onnx.load(str(exported["int8"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    result = int8.predict(read_image(exported["val"].records[0].image_path))
    assert result["boxes"].shape[1] == 4 and set(result["labels"].tolist()) <= {1, 2}


def test_parity_gate_fails_and_leaves_no_file(tmp_path, monkeypatch):
    name = FAST_MODELS[0]
    model = separated_model(name)
    from test_export_support import pseudo_labelled_split

    val = pseudo_labelled_split(model, synthetic_root(tmp_path, num_train=0, num_val=4))
    original = runtime.preprocess
    # A runtime that mirrors the image: boxes land on the wrong side, as with a wrong preprocessing step.
    monkeypatch.setattr(runtime, "preprocess", lambda image, spec: original(np.ascontiguousarray(image[:, ::-1]), spec))
    output = tmp_path / "out" / "model.onnx"
    with pytest.raises(DetectFTError, match=r"export\.max_map_drop=0\.5"):
        export_detector(model, output, model_name=name, class_names=CLASSES, val_dataset=val)
    assert not output.exists() and not list(output.parent.iterdir())


def _set_score_thresh(model, value: float) -> None:
    owner = model.roi_heads if hasattr(model, "roi_heads") else model
    owner.score_thresh = value


@pytest.mark.parametrize("name", FAST_MODELS)
def test_zero_and_exactly_one_detection_run(tmp_path, name):
    """Pick a score threshold (from the PyTorch scores, with margins) at which one image keeps exactly one
    detection and another keeps none, bake it into the graph, and run both through onnxruntime."""
    model = separated_model(name)
    _set_score_thresh(model, 0.0)
    root = synthetic_root(tmp_path, num_train=0, num_val=4)
    candidates = [read_image(p) for p in sorted((root / "images").glob("*.jpg"))]
    candidates += [np.full((96, 128, 3), v, np.uint8) for v in (0, 128, 255)]
    # Two leading zeros stand in for "no detection" (an image may have none even at threshold 0).
    scores = [np.concatenate([np.sort(out["scores"])[::-1], [0.0, 0.0]]) for out in torch_predictor(model, "cpu")(candidates)]
    margin = 0.01
    lowest = int(np.argmin([s[0] for s in scores]))
    choice = None
    for i, s in enumerate(scores):
        low, high = max(s[1], scores[lowest][0]) + margin, s[0] - margin
        if i != lowest and low < high:
            choice = (i, (low + high) / 2)
            break
    assert choice is not None, "no image/threshold pair with clear margins; change the seed"
    one, thresh = choice
    _set_score_thresh(model, float(thresh))
    path = tmp_path / "model.onnx"
    export_onnx(model, path, metadata=build_metadata(model, model_name=name, class_names=CLASSES, opset=17))
    detector = EdgeDetector(path)
    got_one, got_zero = detector.predict_batch([candidates[one], candidates[lowest]])
    assert len(got_one["scores"]) == 1 and len(got_zero["scores"]) == 0
    assert got_one["boxes"].shape == (1, 4) and got_zero["boxes"].shape == (0, 4)
    ref = torch_predictor(model, "cpu")([candidates[one]])[0]
    i, j = match_detections(ref, got_one)
    assert len(i) == 1 and abs(float(ref["scores"][0] - got_one["scores"][0])) < 1e-4


def test_match_detections_pairs_by_label_and_iou():
    ref = {"boxes": np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), "scores": np.array([0.9, 0.8]),
           "labels": np.array([1, 2])}
    cand = {"boxes": np.array([[20, 20, 40, 40.1], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32),
            "scores": np.array([0.8, 0.9, 0.1]), "labels": np.array([2, 2, 1])}
    i, j = match_detections(ref, cand)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 2), (1, 0)]
    stats = compare_detections([ref], [cand])
    assert stats["matched"] == 2 and stats["max_score_diff"] == pytest.approx(0.8)
    assert stats["max_box_diff"] == pytest.approx(0.1, abs=1e-4)
    point = {"boxes": np.array([[5, 5, 5, 5]], np.float32), "scores": np.array([0.5]), "labels": np.array([1])}
    assert compare_detections([point], [point])["matched"] == 1  # zero-area boxes have no IoU


def test_export_without_val_split_names_the_fix(tmp_path, capsys):
    from test_export_support import write_checkpoint

    model = separated_model(FAST_MODELS[0])
    checkpoint = write_checkpoint(model, FAST_MODELS[0], tmp_path / "m.pt", tmp_path)
    assert main(["export", str(checkpoint), "--output", str(tmp_path / "m.onnx"), "data.val="]) == 2
    err = capsys.readouterr().err
    assert "data.val" in err and "--no-verify" in err
    assert main(["export", str(checkpoint), "--output", str(tmp_path / "m.onnx"), "--no-verify"]) == 0
    assert EdgeDetector(tmp_path / "m.onnx").metadata["source_checkpoint"] == str(checkpoint)
