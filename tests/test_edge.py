"""The torch-free edge runtime: works with torch unimportable, preprocesses as training did, and the
deployment example in docs/deploy.md runs with only onnxruntime, numpy and OpenCV."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import BLOCK_TORCH, CATEGORY_IDS, CLASSES, run_python

from detect_ft.evaluation.evaluator import torch_predictor
from detect_ft.export import compare_detections
from detect_ft.inference import EdgeDetector, preprocess, read_image
from detect_ft.utils.errors import DetectFTError

REPO = Path(__file__).resolve().parents[1]


def test_edge_runs_with_torch_unimportable(exported_onnx):
    image = next(exported_onnx["images"].glob("*.jpg"))
    code = BLOCK_TORCH + (
        "import json\n"
        "from detect_ft.inference import EdgeDetector, read_image\n"
        "d = EdgeDetector(sys.argv[1], threads=1)\n"
        "r = d.predict(read_image(sys.argv[2]))\n"
        "assert sys.modules['torch'] is None\n"
        "print(json.dumps({'boxes': r['boxes'].tolist(), 'scores': r['scores'].tolist(), "
        "'labels': r['labels'].tolist(), 'names': r['names'], 'ids': d.category_ids}))\n"
    )
    proc = run_python(code, str(exported_onnx["onnx"]), str(image))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["ids"] == CATEGORY_IDS and set(got["names"]) <= set(CLASSES) and len(got["scores"]) > 0
    ref = torch_predictor(exported_onnx["model"], "cpu")([read_image(image)])[0]
    stats = compare_detections([ref], [{k: np.asarray(got[k]) for k in ("boxes", "scores", "labels")}])
    assert stats["match_rate"] == 1.0 and stats["max_score_diff"] < 1e-3


def test_predictions_module_works_with_torch_unimportable(exported_onnx):
    """detect_ft.inference.predictions (session, metadata, score filter, COCO rows) is what #13's public API builds on;
    it must import and run where torch cannot."""
    image = sorted(exported_onnx["images"].glob("*.jpg"))[0]
    code = BLOCK_TORCH + (
        "import json\n"
        "from detect_ft.inference import predictions as p\n"
        "from detect_ft.inference import EdgeDetector, read_image\n"
        "session = p.open_onnx_session(sys.argv[1], threads=1)\n"
        "meta = p.session_metadata(session, sys.argv[1])\n"
        "assert meta == p.read_onnx_metadata(sys.argv[1])\n"
        "raw = EdgeDetector(sys.argv[1], threads=1).predict(read_image(sys.argv[2]))\n"
        "kept = p.filter_detections(p.as_detections(raw), 0.3)\n"
        "rows = p.coco_results(7, kept, meta['category_ids'], file_name='x.jpg')\n"
        "assert sys.modules['torch'] is None\n"
        "print(json.dumps({'rows': rows, 'all': len(raw['scores']), 'ids': meta['category_ids']}))\n"
    )
    proc = run_python(code, str(exported_onnx["onnx"]), str(image))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    expected = EdgeDetector(exported_onnx["onnx"], conf=0.3).predict(read_image(image))
    assert got["ids"] == CATEGORY_IDS and got["all"] >= len(got["rows"]) == len(expected["scores"]) > 0
    for row, box, score in zip(got["rows"], expected["boxes"], expected["scores"]):
        assert list(row) == ["image_id", "file_name", "category_id", "bbox", "score"] and row["image_id"] == 7
        x, y, w, h = row["bbox"]
        np.testing.assert_allclose([x, y, x + w, y + h], box, atol=1e-4)
        assert row["score"] == pytest.approx(float(score)) and row["category_id"] in CATEGORY_IDS


def test_predict_cli_with_onnx_never_imports_torch(exported_onnx, tmp_path):
    code = BLOCK_TORCH + "from detect_ft.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = run_python(
        code, "predict", str(exported_onnx["onnx"]), str(exported_onnx["images"]), "--output", str(tmp_path / "out")
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "predictions.json").is_file()


def test_deploy_doc_example_runs_with_onnxruntime_numpy_opencv_only(exported_onnx):
    text = (REPO / "docs" / "deploy.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    assert len(example.strip().splitlines()) <= 25
    blocked = BLOCK_TORCH + "sys.modules['detect_ft'] = None\n"  # the device has no detect-ft either
    edge = EdgeDetector(exported_onnx["onnx"], conf=0.0)
    thresholds = np.asarray(edge.metadata["thresholds"])  # the example keeps each class above its own
    for image in sorted(exported_onnx["images"].glob("*.jpg")):  # an image with detections above them
        found = edge.predict(read_image(image))
        expected = found["scores"][found["scores"] >= thresholds[found["labels"] - 1]]
        if len(expected):
            break
    proc = run_python(blocked + example, str(exported_onnx["onnx"]), str(image))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(expected) > 0
    assert all(re.match(r"(circle|square) \(id (5|9)\) \d\.\d\d at \[", line) for line in lines)


def test_preprocess_reproduces_the_training_tensor(exported_onnx):
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    spec = EdgeDetector(exported_onnx["onnx"]).metadata["input"]
    expected = torch.from_numpy(image).permute(2, 0, 1).float().div(255).numpy()  # torch_predictor's conversion
    np.testing.assert_allclose(preprocess(image, spec), expected, rtol=1e-6, atol=1e-7)
    assert preprocess(image, {**spec, "batch_dim": True}).shape == (1, 3, 37, 53)
    flipped = image[:, ::-1]  # a view with a negative stride, as a mirrored camera frame is
    chw = flipped.astype(np.float32).transpose(2, 0, 1) * np.float32(spec["scale"])
    assert np.array_equal(preprocess(flipped, spec), chw)
    assert np.array_equal(preprocess(flipped, {**spec, "color": "BGR"}), chw[::-1])
    hwc = preprocess(flipped, {**spec, "layout": "HWC", "color": "BGR"})
    assert hwc.flags.c_contiguous and np.array_equal(hwc, chw[::-1].transpose(1, 2, 0))
    with pytest.raises(DetectFTError, match="RGB uint8"):
        preprocess(image.astype(np.float32), spec)


def test_models_without_metadata_or_files_are_reported(tmp_path):
    node = onnx.helper.make_node("Identity", ["image"], ["out"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [value("image", onnx.TensorProto.FLOAT, [3, 4, 4])],
        [value("out", onnx.TensorProto.FLOAT, [3, 4, 4])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "plain.onnx")
    with pytest.raises(DetectFTError, match="no 'detect_ft' metadata"):
        EdgeDetector(tmp_path / "plain.onnx")
    with pytest.raises(DetectFTError, match="not found"):
        EdgeDetector(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DetectFTError, match="not a loadable ONNX model"):
        EdgeDetector(tmp_path / "junk.onnx")
