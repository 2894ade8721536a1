"""Batched prediction: a graph exported with ``--batch N``, the edge runtime feeding it same-size groups,
``Detector.predict(batch=...)`` on ONNX and PyTorch, ``detect-ft predict --batch``; every image's
detections equal its batch-1 detections (within the export parity check's matching)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers import one_error_line

from detect_ft.api import Detector
from detect_ft.cli.main import main
from detect_ft.data.image import read_image
from detect_ft.export import compare_detections
from detect_ft.inference import EdgeDetector
from detect_ft.inference.predictions import check_metadata, size_groups
from detect_ft.utils.errors import ConfigError, DetectFTError

BATCH = 3


@pytest.fixture(scope="module")
def batch_onnx(exported_onnx, tmp_path_factory):
    """``(path, report)``: the session's exported checkpoint through ``detect-ft export --batch 3`` (with
    the parity check on its validation split)."""
    out = tmp_path_factory.mktemp("batch_onnx")
    path, report = out / "model.b3.onnx", out / "report.json"
    args = ["export", exported_onnx["checkpoint"], "--output", path, "--batch", str(BATCH), "--json", report]
    assert main([str(a) for a in args]) == 0
    return path, json.loads(report.read_text())


def mixed_images(exported_onnx) -> list[np.ndarray]:
    """The data's images (one size) and two downscaled copies (another size), interleaved: 2 size groups,
    one of them longer than a batch and ending in a short batch."""
    images = [read_image(p) for p in sorted(exported_onnx["images"].glob("*.jpg"))]
    small = [cv2.resize(img, (img.shape[1] * 3 // 4, img.shape[0] * 3 // 4)) for img in images[:2]]
    mixed = [images[0], small[0], *images[1:], small[1]]
    assert len({img.shape for img in mixed}) == 2 and len(mixed) > BATCH + 1
    return mixed


def detections_of(result) -> dict:
    return {"boxes": result.boxes, "scores": result.scores, "labels": result.labels}


def assert_same_per_image(reference: list[dict], candidate: list[dict]) -> None:
    """Per image: the same number of detections, all matched (same label, IoU >= 0.99), scores within 1e-4."""
    assert len(reference) == len(candidate)
    for ref, cand in zip(reference, candidate):
        assert len(ref["scores"]) == len(cand["scores"])
        stats = compare_detections([ref], [cand])
        assert stats["match_rate"] == 1.0, stats
        assert stats["max_score_diff"] <= 1e-4 and stats["max_box_diff"] <= 0.05, stats


def test_size_groups_keep_order_and_split_by_size_and_batch():
    a, b = np.zeros((4, 6, 3), np.uint8), np.zeros((5, 6, 3), np.uint8)
    assert size_groups([a, b, a, a, b, a], 2) == [[0, 2], [3, 5], [1, 4]]
    assert size_groups([a, b, a], 1) == [[0], [2], [1]]
    assert size_groups([], 4) == []


def test_batch_export_writes_a_fixed_batch_graph_and_its_metadata(batch_onnx):
    path, report = batch_onnx
    edge = EdgeDetector(path)
    assert edge.batch == BATCH and report["batch"] == BATCH
    assert edge.metadata["input"]["batch"] == BATCH and edge.metadata["input"]["batch_dim"] is True
    assert edge.session.get_inputs()[0].shape == [BATCH, 3, "height", "width"]
    assert [o.name for o in edge.session.get_outputs()] == ["boxes", "scores", "labels", "counts"]
    assert report["parity"]["detections"]["match_rate"] == 1.0  # export's own PyTorch check, through the batch graph


def test_detector_export_batch_writes_a_batch_graph(exported_onnx, tmp_path):
    detector = Detector.load(exported_onnx["checkpoint"])
    report = detector.export(tmp_path / "m.b2.onnx", batch=2, verify=False)
    edge = EdgeDetector(tmp_path / "m.b2.onnx")
    assert report["batch"] == 2 and edge.batch == 2 and edge.metadata["input"]["batch"] == 2
    assert edge.session.get_inputs()[0].shape == [2, 3, "height", "width"]
    with pytest.raises(DetectFTError, match="export batch 0"):
        detector.export(tmp_path / "m.b0.onnx", batch=0, verify=False)
    assert not (tmp_path / "m.b0.onnx").exists()


def test_batch_graph_equals_batch_one_graph_per_image(exported_onnx, batch_onnx):
    images = mixed_images(exported_onnx)
    one = EdgeDetector(exported_onnx["onnx"])
    assert one.batch == 1
    reference = [one.predict(image) for image in images]
    assert sum(len(r["scores"]) for r in reference) > 0
    assert_same_per_image(reference, EdgeDetector(batch_onnx[0]).predict_batch(images))


@pytest.mark.parametrize("kind", ["onnx", "torch"])
def test_detector_predict_batch_equals_batch_one(kind, exported_onnx, batch_onnx, one_thread):
    images = mixed_images(exported_onnx)
    model = batch_onnx[0] if kind == "onnx" else exported_onnx["checkpoint"]
    detector = Detector.load(model, device="cpu")
    single = Detector.load(exported_onnx["onnx"] if kind == "onnx" else model, device="cpu")
    reference = [detections_of(r) for r in single.predict(images, conf=0.0, batch=1)]
    batched = [detections_of(r) for r in detector.predict(images, conf=0.0, batch=4)]
    assert sum(len(r["scores"]) for r in reference) > 0
    assert_same_per_image(reference, batched)


def test_cli_predict_batch_writes_the_batch_one_predictions(exported_onnx, batch_onnx, run_cli, tmp_path):
    rows = {}
    for name, model, batch in (("one", exported_onnx["onnx"], "1"), ("many", batch_onnx[0], "5")):
        code, out, _ = run_cli("predict", model, exported_onnx["images"], "--output", tmp_path / name, "--batch", batch)
        assert code == 0, out
        rows[name] = json.loads((tmp_path / name / "predictions.json").read_text())
    assert [(r["file_name"], r["category_id"]) for r in rows["one"]] == [
        (r["file_name"], r["category_id"]) for r in rows["many"]
    ]
    assert rows["one"], "no detections to compare"
    np.testing.assert_allclose([r["bbox"] for r in rows["one"]], [r["bbox"] for r in rows["many"]], atol=0.05)
    np.testing.assert_allclose([r["score"] for r in rows["one"]], [r["score"] for r in rows["many"]], atol=1e-4)


def test_batch_arguments_are_checked(exported_onnx, run_cli, tmp_path):
    detector = Detector.load(exported_onnx["onnx"], device="cpu")
    with pytest.raises(ConfigError, match="batch=0"):
        detector.predict(np.zeros((32, 32, 3), np.uint8), batch=0)
    code, _, err = run_cli(
        "predict", exported_onnx["onnx"], exported_onnx["images"], "--output", tmp_path, "--batch", "0"
    )
    assert code != 0 and "--batch 0" in one_error_line(err)
    args = ("export", exported_onnx["checkpoint"], "--output", tmp_path / "m.onnx", "--int8", "--batch", "2")
    code, _, err = run_cli(*args)
    assert code != 0 and "batch 1 only" in one_error_line(err) and not (tmp_path / "m.onnx").exists()
    code, _, err = run_cli("export", exported_onnx["checkpoint"], "--output", tmp_path / "m.onnx", "--batch", "65")
    assert code != 0 and "--batch 65" in one_error_line(err) and not (tmp_path / "m.onnx").exists()


def constant_batch_onnx(path, counts) -> str:
    """A 3-image batch graph returning 3 fixed detections (scores 0.9, 0.8, 0.7) split as ``counts`` says."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    arrays = {
        "boxes": np.asarray([[1, 1, 5, 5], [2, 2, 6, 6], [3, 3, 7, 7]], np.float32),
        "scores": np.asarray([0.9, 0.8, 0.7], np.float32),
        "labels": np.asarray([1, 2, 1], np.int64),
        "counts": np.asarray(counts, np.int64),
    }
    nodes = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v, k)) for k, v in arrays.items()]
    nodes.append(helper.make_node("Shape", ["image"], ["image_shape"]))  # keeps the input used
    outputs = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), None) for k, v in arrays.items()
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [BATCH, 3, "height", "width"])
    shape = helper.make_tensor_value_info("image_shape", TensorProto.INT64, [4])
    model = helper.make_model(
        helper.make_graph(nodes, "constant_batch", [image], [*outputs, shape]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    spec = {"name": "image", "scale": 1 / 255, "layout": "CHW", "color": "RGB", "batch_dim": True, "batch": BATCH}
    meta = {"format": 1, "class_names": ["a", "b"], "category_ids": [1, 2], "input": spec}
    meta.update(outputs=["boxes", "scores", "labels"], counts_output="counts")
    helper.set_model_props(model, {"detect_ft": json.dumps(meta)})
    onnx.save(model, str(path))
    return str(path)


def test_runtime_splits_the_outputs_by_the_graphs_counts(tmp_path):
    edge = EdgeDetector(constant_batch_onnx(tmp_path / "c.onnx", [2, 0, 1]))
    images = [np.zeros((8, 8, 3), np.uint8)] * 3
    assert [[round(float(s), 3) for s in r["scores"]] for r in edge.predict_batch(images)] == [[0.9, 0.8], [], [0.7]]
    # A short batch (2 of 3 images) and one image alone take the first counts' rows.
    assert [r["names"] for r in edge.predict_batch(images[:2])] == [["a", "b"], []]
    assert edge.predict(images[0])["labels"].tolist() == [1, 2]
    broken = EdgeDetector(constant_batch_onnx(tmp_path / "bad.onnx", [2, 0, 5]))
    with pytest.raises(DetectFTError, match="do not add up"):
        broken.predict_batch(images)


def test_runtime_refuses_inconsistent_batch_metadata(batch_onnx):
    meta = EdgeDetector(batch_onnx[0]).metadata
    check_metadata(meta, "m.onnx")
    for broken in ({"input": {**meta["input"], "batch": 0}}, {"counts_output": None}):
        with pytest.raises(DetectFTError, match="metadata field 'input.batch"):
            check_metadata({**meta, **broken}, "m.onnx")
